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
        assert_eq!(err.kind(), ErrorKind::Race, "{err}");
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

/// A symlink as the target is not followed, whether it leads to a directory or nowhere: the attach fails, nothing is
/// mounted or made (at the symlink or where it leads), and the symlink stays.
#[test]
fn attach_onto_a_symlink_is_refused_and_makes_nothing() {
    privileged("attach_onto_a_symlink_is_refused_and_makes_nothing", |scratch| {
        let src = src_with_file(scratch);
        fs::create_dir(scratch.join("dir")).unwrap();
        std::os::unix::fs::symlink(scratch.join("dir"), scratch.join("to-dir")).unwrap();
        std::os::unix::fs::symlink(scratch.join("nowhere"), scratch.join("dangling")).unwrap();
        for link in ["to-dir", "dangling"] {
            let tree = DetachedTree::clone_path(&src, false).unwrap();
            let err = match tree.attach(scratch.join(link)) {
                Ok(g) => {
                    let at = g.leak();
                    rustix::mount::unmount(&at, rustix::mount::UnmountFlags::DETACH).unwrap();
                    panic!("{link}: attached")
                }
                Err(e) => e,
            };
            assert_eq!(err.operation(), "attach", "{link}: {err}");
            assert!(fs::symlink_metadata(scratch.join(link)).unwrap().file_type().is_symlink(), "{link}");
        }
        assert!(!scratch.join("nowhere").exists());
        assert_eq!(fs::read_dir(scratch.join("dir")).unwrap().count(), 0);
    });
}

/// A mount handed over as a record is torn down by another process (the CLI here): it checks the mount is still
/// the recorded one, detaches it and removes the mount point the crate made. A record whose mount was replaced is
/// refused and the new mount is left alone.
#[cfg(feature = "cli")]
#[test]
fn a_record_is_torn_down_by_another_process_and_a_replaced_mount_is_refused() {
    privileged("a_record_is_torn_down_by_another_process_and_a_replaced_mount_is_refused", |scratch| {
        let cli = |args: &[&std::ffi::OsStr]| {
            std::process::Command::new(env!("CARGO_BIN_EXE_layermount")).args(args).output().unwrap()
        };
        let src = src_with_file(scratch);
        let mnt = scratch.join("made-by-attach");
        let guard = DetachedTree::clone_path(&src, false).unwrap().attach(&mnt).unwrap();
        let record = guard.record().expect("statx gives mount ids here");
        assert!(record.created_dir());
        let decoded = layermount::MountRecord::decode(&record.encode()).unwrap();
        assert_eq!(decoded, record);
        let file = scratch.join("rootfs.record");
        fs::write(&file, record.encode()).unwrap();
        assert!(record.is_attached().unwrap());
        guard.leak();
        let o = cli(&["umount".as_ref(), "--record".as_ref(), file.as_os_str()]);
        assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
        assert!(!mnt.exists(), "unmounted, and the mount point the crate made is gone");
        assert!(!record.is_attached().unwrap(), "nothing there");

        // The recorded mount is gone and another is in its place: refused, the other mount kept.
        let guard = DetachedTree::clone_path(&src, false).unwrap().attach(&mnt).unwrap();
        fs::write(&file, guard.record().unwrap().encode()).unwrap();
        guard.unmount().unwrap();
        fs::create_dir(&mnt).unwrap();
        common::mount_tmpfs(&mnt);
        fs::write(mnt.join("theirs"), "t").unwrap();
        let err =
            MountGuard::adopt_record(&layermount::MountRecord::decode(&fs::read(&file).unwrap()).unwrap()).unwrap_err();
        assert_eq!(err.kind(), layermount::ErrorKind::Race, "{err}");
        let o = cli(&["umount".as_ref(), "--record".as_ref(), file.as_os_str()]);
        assert_eq!(o.status.code(), Some(1));
        assert!(String::from_utf8_lossy(&o.stderr).contains("is not the recorded one"), "{o:?}");
        assert_eq!(fs::read(mnt.join("theirs")).unwrap(), b"t", "their mount is untouched");
        common::umount(&mnt);
        fs::remove_dir(&mnt).unwrap();
    });
}

/// `other_mounts` finds every other mount of a composed root: a bind in this namespace, and the root of a process
/// in a mount namespace of its own (as a container's is), named by a path that reaches it.
#[test]
fn other_mounts_of_a_composed_root_are_found_in_every_namespace() {
    privileged("other_mounts_of_a_composed_root_are_found_in_every_namespace", |scratch| {
        let src = src_with_file(scratch);
        let l2 = scratch.join("l2");
        fs::create_dir(&l2).unwrap();
        let root = scratch.join("rootfs");
        let guard = layermount::Overlay::new().lower(&l2).lower(&src).mount_at(&root).unwrap();
        let record = guard.record().unwrap();
        assert_eq!(record.other_mounts().unwrap(), Vec::<std::path::PathBuf>::new(), "only the recorded mount");
        let bind = scratch.join("bind");
        fs::create_dir(&bind).unwrap();
        common::bind(&root, &bind);
        assert_eq!(record.other_mounts().unwrap(), std::slice::from_ref(&bind));
        common::umount(&bind);
        // A process in a new mount namespace holds a copy of the mount, as a container holds its root.
        let mut child = std::process::Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sleep", "60"])
            .spawn()
            .expect("unshare (util-linux)");
        let pid = child.id();
        let expect =
            std::path::Path::new("/proc").join(pid.to_string()).join("root").join(root.strip_prefix("/").unwrap());
        let mut found = Vec::new();
        for _ in 0..200 {
            found = record.other_mounts().unwrap();
            if !found.is_empty() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(found, [expect], "the other namespace's copy is named through its process");
        assert_eq!(record.other_mounts().unwrap(), Vec::<std::path::PathBuf>::new(), "gone with its namespace");
        guard.unmount().unwrap();
        fs::remove_dir(&bind).unwrap();

        // A bind of one directory: the filesystem it lives on (the scratch tmpfs, mounted at `scratch`) is no user
        // of it, another bind of the same directory is.
        let b1 = DetachedTree::clone_path(&src, false).unwrap().attach(scratch.join("b1")).unwrap();
        let record = b1.record().unwrap();
        assert_eq!(record.other_mounts().unwrap(), Vec::<std::path::PathBuf>::new());
        let b2 = DetachedTree::clone_path(src.join("d"), false).unwrap().attach(scratch.join("b2")).unwrap();
        assert_eq!(record.other_mounts().unwrap(), [scratch.join("b2")], "a part of it counts");
        b2.unmount().unwrap();
        b1.unmount().unwrap();
    });
}
