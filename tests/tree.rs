//! DetachedTree: idmapping through a real mount, refusal on attached trees, attributes, O_PATH subdirectories.

mod common;

use std::fs;
use std::os::fd::AsFd;
use std::path::Path;

use common::{chown, owner, privileged};
use layermount::{DetachedTree, ErrorKind, IdMap, MountAttrs, MountTable, Propagation, UserNamespace};
use rustix::fs::CWD;
use rustix::mount::{MoveMountFlags, OpenTreeFlags};

/// Container uid 1000 is host root; container uids 0..1000 are host 100000..101000.
fn test_ns() -> UserNamespace {
    let map: IdMap = "1000:0:1,0:100000:1000".parse().unwrap();
    UserNamespace::cached(&map, &map).unwrap()
}

fn make_src(scratch: &Path) -> std::path::PathBuf {
    let src = scratch.join("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("root-file"), b"r").unwrap();
    fs::write(src.join("user-file"), b"u").unwrap();
    chown(&src.join("user-file"), 1000, 1000);
    fs::create_dir(src.join("sub")).unwrap();
    src
}

#[test]
fn idmapped_tree_shows_mapped_owners_and_writes_unmapped_ids() {
    privileged("idmapped_tree_shows_mapped_owners_and_writes_unmapped_ids", |scratch| {
        let src = make_src(scratch);
        let mut tree = DetachedTree::clone_path(&src, false).unwrap();
        tree.idmap(&test_ns()).unwrap();
        assert!(tree.is_idmapped());
        let mnt = scratch.join("mnt");
        let guard = tree.attach(&mnt).unwrap();
        // On disk 0 -> host 100000; on disk 1000 -> host 0.
        assert_eq!(owner(&mnt.join("root-file")), (100000, 100000));
        assert_eq!(owner(&mnt.join("user-file")), (0, 0));
        // Created by host root through the mount: stored as container id 1000.
        fs::write(mnt.join("new-file"), b"n").unwrap();
        assert_eq!(owner(&mnt.join("new-file")), (0, 0));
        assert_eq!(owner(&src.join("new-file")), (1000, 1000));
        assert_eq!(fs::read(src.join("new-file")).unwrap(), b"n");
        guard.unmount().unwrap();
        assert!(!mnt.exists(), "attach created the mount point, so unmount removes it");
    });
}

#[test]
fn second_idmap_is_refused() {
    privileged("second_idmap_is_refused", |scratch| {
        let src = make_src(scratch);
        let mut tree = DetachedTree::clone_path(&src, false).unwrap();
        tree.idmap(&test_ns()).unwrap();
        let err = tree.idmap(&test_ns()).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::AlreadyIdmapped, "{err}");
        // A foreign fd of an idmapped clone (made by the kernel, not by us) is refused the same way. Cloning a
        // detached mount came with detached overlay layers (6.15), and is probed with them.
        if !common::has_feature("second_idmap_is_refused/foreign clone", "overlay_detached_layers") {
            return;
        }
        let mut foreign = DetachedTree::from_fd(
            rustix::mount::open_tree(
                tree.as_fd(),
                "",
                OpenTreeFlags::OPEN_TREE_CLONE | OpenTreeFlags::OPEN_TREE_CLOEXEC | OpenTreeFlags::AT_EMPTY_PATH,
            )
            .unwrap(),
        );
        let err = foreign.idmap(&test_ns()).unwrap_err();
        assert!(matches!(err.kind(), ErrorKind::AlreadyIdmapped), "{err}");
    });
}

#[test]
fn attached_tree_cannot_be_idmapped() {
    privileged("attached_tree_cannot_be_idmapped", |scratch| {
        let src = make_src(scratch);
        // An fd of the attached mount itself (open_tree without CLONE).
        let fd = rustix::mount::open_tree(CWD, &src, OpenTreeFlags::OPEN_TREE_CLOEXEC).unwrap();
        let mut attached = DetachedTree::from_fd(fd);
        let err = attached.idmap(&test_ns()).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::AlreadyAttached, "{err}");
        assert!(err.to_string().contains("only a detached clone can be idmapped"), "{err}");
        assert_eq!(owner(&src.join("root-file")), (0, 0));

        // A clone attached behind our back, then the same clone after it was unmounted again.
        let mut tree = DetachedTree::clone_path(&src, false).unwrap();
        let mnt = scratch.join("mnt");
        fs::create_dir(&mnt).unwrap();
        rustix::mount::move_mount(tree.as_fd(), "", CWD, &mnt, MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH).unwrap();
        let err = tree.idmap(&test_ns()).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::AlreadyAttached, "{err}");
        common::umount(&mnt);
        let err = tree.idmap(&test_ns()).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::AlreadyAttached, "{err}");
        assert!(!tree.is_idmapped());
    });
}

#[test]
fn attributes_apply_to_the_mount() {
    privileged("attributes_apply_to_the_mount", |scratch| {
        let src = make_src(scratch);
        let mut tree = DetachedTree::clone_path(&src, false).unwrap();
        tree.set_attrs(MountAttrs::RDONLY | MountAttrs::NOSUID | MountAttrs::NODEV, MountAttrs::empty()).unwrap();
        tree.set_atime(layermount::Atime::None).unwrap();
        tree.set_propagation(Propagation::Private).unwrap();
        let mnt = scratch.join("ro");
        let guard = tree.attach(&mnt).unwrap();
        let err = fs::write(mnt.join("x"), b"x").unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc_erofs()));
        let table = MountTable::current().unwrap();
        let m = table.mount_of(&mnt).unwrap();
        for opt in ["ro", "nosuid", "nodev", "noatime"] {
            assert!(m.mount_options.split(',').any(|o| o == opt), "{opt} missing in {}", m.mount_options);
        }
        assert!(!m.optional_fields.iter().any(|f| f.starts_with("shared:")), "{:?}", m.optional_fields);
        drop(guard);
        // Clearing RDONLY on a fresh clone makes it writable again.
        let mut tree = DetachedTree::clone_path(&src, false).unwrap();
        tree.set_attrs(MountAttrs::RDONLY, MountAttrs::RDONLY).unwrap();
        let guard = tree.attach(&mnt).unwrap();
        fs::write(mnt.join("x"), b"x").unwrap();
        guard.unmount().unwrap();
        assert_eq!(fs::read(src.join("x")).unwrap(), b"x");
    });
}

fn libc_erofs() -> i32 {
    rustix::io::Errno::ROFS.raw_os_error()
}

#[test]
fn open_dir_stays_inside_the_tree() {
    privileged("open_dir_stays_inside_the_tree", |scratch| {
        let src = make_src(scratch);
        std::os::unix::fs::symlink("/etc", src.join("escape")).unwrap();
        let tree = DetachedTree::clone_path(&src, false).unwrap();
        let sub = tree.open_dir("sub").unwrap();
        let st = rustix::fs::fstat(&sub).unwrap();
        assert_eq!(st.st_ino, fs::metadata(src.join("sub")).map(|m| std::os::unix::fs::MetadataExt::ino(&m)).unwrap());
        for bad in ["../", "escape", "/etc", "root-file", "missing"] {
            let err = tree.open_dir(bad).unwrap_err();
            assert_eq!(err.path(), Some(Path::new(bad)), "{err}");
        }
        assert_eq!(tree.open_dir("/etc").unwrap_err().kind(), ErrorKind::InvalidInput);
        assert_eq!(tree.open_dir("root-file").unwrap_err().raw_os_error(), Some(20)); // ENOTDIR
        assert!(tree.open_dir_readable("sub").is_ok());
    });
}

#[test]
fn dropping_a_detached_tree_leaves_no_mount() {
    privileged("dropping_a_detached_tree_leaves_no_mount", |scratch| {
        let src = make_src(scratch);
        let before = MountTable::current().unwrap();
        for _ in 0..50 {
            let mut t = DetachedTree::clone_path(&src, true).unwrap();
            t.idmap(&test_ns()).unwrap();
            let _ = t.open_dir("sub").unwrap();
        }
        assert!(MountTable::current().unwrap().changes_since(&before).is_empty());
    });
}

#[test]
fn filesystem_without_idmap_support_is_not_supported() {
    privileged("filesystem_without_idmap_support_is_not_supported", |scratch| {
        assert!(layermount::idmap_supported(scratch).unwrap(), "tmpfs supports idmapped mounts since 6.3");
        assert!(!layermount::idmap_supported("/proc").unwrap(), "procfs does not");
        let mut proc_tree = DetachedTree::clone_path("/proc", false).unwrap();
        let err = proc_tree.idmap(&test_ns()).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotSupported, "{err}");
    });
}
