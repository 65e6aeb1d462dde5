//! MountGuard: detach on drop even when busy, explicit unmount errors, never unmounting a mount it did not make.

mod common;

use std::fs;
use std::io::Read;

use common::privileged;
use layermount::{DetachedTree, ErrorKind, MountGuard, MountTable};

fn src_with_file(scratch: &std::path::Path) -> std::path::PathBuf {
    let src = scratch.join("src");
    fs::create_dir_all(src.join("d")).unwrap();
    fs::write(src.join("d/file"), b"layer data").unwrap();
    src
}

#[test]
fn dropped_guard_detaches_a_busy_mount_and_keeps_files() {
    privileged("dropped_guard_detaches_a_busy_mount_and_keeps_files", |scratch| {
        let src = src_with_file(scratch);
        let mnt = scratch.join("mnt");
        let guard = DetachedTree::clone_path(&src, false).unwrap().attach(&mnt).unwrap();
        let id = guard.mount_id().unwrap();
        let mut busy = fs::File::open(mnt.join("d/file")).unwrap();
        // A plain umount would fail with EBUSY now.
        assert_eq!(rustix::mount::unmount(&mnt, rustix::mount::UnmountFlags::empty()), Err(rustix::io::Errno::BUSY));
        drop(guard);
        assert!(MountTable::current().unwrap().by_id(id).is_none(), "mount is detached");
        assert!(!mnt.exists(), "the mount point the guard created is removed");
        let mut s = String::new();
        busy.read_to_string(&mut s).unwrap();
        assert_eq!(s, "layer data", "the open file still works");
        assert_eq!(fs::read(src.join("d/file")).unwrap(), b"layer data", "files below are intact");
    });
}

#[test]
fn existing_mount_point_is_kept() {
    privileged("existing_mount_point_is_kept", |scratch| {
        let src = src_with_file(scratch);
        let mnt = scratch.join("mnt");
        fs::create_dir(&mnt).unwrap();
        DetachedTree::clone_path(&src, false).unwrap().attach(&mnt).unwrap().unmount().unwrap();
        assert!(mnt.is_dir(), "the guard did not create it, so it stays");
        assert_eq!(fs::read_dir(&mnt).unwrap().count(), 0);
    });
}

#[test]
fn unmount_refuses_a_mount_stacked_on_top() {
    privileged("unmount_refuses_a_mount_stacked_on_top", |scratch| {
        let src = src_with_file(scratch);
        let mnt = scratch.join("mnt");
        let guard = DetachedTree::clone_path(&src, false).unwrap().attach(&mnt).unwrap();
        common::mount_tmpfs(&mnt); // someone else's mount on top of ours
        fs::write(mnt.join("theirs"), b"t").unwrap();
        let err = guard.unmount().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
        assert!(err.to_string().contains("not the one this guard attached"), "{err}");
        assert_eq!(fs::read(mnt.join("theirs")).unwrap(), b"t", "their mount is untouched");
        common::umount(&mnt);
        common::umount(&mnt);
        fs::remove_dir(&mnt).unwrap();
    });
}

#[test]
fn leak_keeps_the_mount_and_adopt_takes_it_back() {
    privileged("leak_keeps_the_mount_and_adopt_takes_it_back", |scratch| {
        let src = src_with_file(scratch);
        let mnt = scratch.join("mnt");
        let path = DetachedTree::clone_path(&src, false).unwrap().attach(&mnt).unwrap().leak();
        assert_eq!(path, mnt);
        assert_eq!(fs::read(mnt.join("d/file")).unwrap(), b"layer data");
        let table = MountTable::current().unwrap();
        assert_ne!(table.mount_of(&mnt).unwrap().mount_id, table.mount_of(scratch).unwrap().mount_id);
        let adopted = MountGuard::adopt(&mnt).unwrap();
        drop(adopted);
        assert!(mnt.is_dir(), "adopt never removes the mount point");
        let table = MountTable::current().unwrap();
        assert_eq!(table.mount_of(&mnt).unwrap().mount_id, table.mount_of(scratch).unwrap().mount_id);
        fs::remove_dir(&mnt).unwrap();
    });
}

#[test]
fn attach_failure_leaves_nothing() {
    privileged("attach_failure_leaves_nothing", |scratch| {
        let src = src_with_file(scratch);
        let tree = DetachedTree::clone_path(&src, false).unwrap();
        let err = tree.attach(scratch.join("missing/parent/mnt")).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(2), "{err}");
        // A file as the target: move_mount refuses a directory onto a file.
        fs::write(scratch.join("file"), b"").unwrap();
        let tree = DetachedTree::clone_path(&src, false).unwrap();
        let err = tree.attach(scratch.join("file")).unwrap_err();
        assert_eq!(err.operation(), "attach", "{err}");
        assert!(scratch.join("file").is_file());
    });
}
