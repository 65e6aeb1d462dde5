//! remove_all: never crosses a mount (same-filesystem bind mounts included), never follows a symlink.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::privileged;
use layermount::{ErrorKind, remove_all};

/// Every path under `root` with its contents (files) or link target (symlinks), sorted.
fn snapshot(root: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        let m = fs::symlink_metadata(&p).unwrap();
        let data = if m.file_type().is_symlink() {
            fs::read_link(&p).unwrap().into_os_string().into_encoded_bytes()
        } else if m.is_file() {
            fs::read(&p).unwrap()
        } else if m.is_dir() {
            for e in fs::read_dir(&p).unwrap() {
                stack.push(e.unwrap().path());
            }
            b"<dir>".to_vec()
        } else {
            b"<special>".to_vec()
        };
        out.push((p, data));
    }
    out.sort();
    out
}

fn make_tree(root: &Path) {
    fs::create_dir_all(root.join("a/b/c")).unwrap();
    fs::write(root.join("top"), b"1").unwrap();
    fs::write(root.join("a/b/c/deep"), b"2").unwrap();
    std::os::unix::fs::symlink("a/b", root.join("rel-link")).unwrap();
    rustix::fs::mkfifoat(rustix::fs::CWD, root.join("a/fifo"), rustix::fs::Mode::from_raw_mode(0o600)).unwrap();
    fs::create_dir(root.join("a/locked")).unwrap();
    fs::write(root.join("a/locked/f"), b"3").unwrap();
    fs::set_permissions(root.join("a/locked"), std::os::unix::fs::PermissionsExt::from_mode(0o000)).unwrap();
}

#[test]
fn removes_a_plain_tree() {
    privileged("removes_a_plain_tree", |scratch| {
        let tree = scratch.join("tree");
        make_tree(&tree);
        let stats = remove_all(&tree).unwrap();
        assert!(!tree.exists());
        assert_eq!(stats.dirs, 5, "tree, a, a/b, a/b/c, a/locked");
        assert_eq!(stats.others, 5, "top, deep, rel-link, fifo, locked/f");
        // A single file and a dangling symlink are removed as themselves.
        fs::write(scratch.join("f"), b"x").unwrap();
        assert_eq!(remove_all(scratch.join("f")).unwrap().others, 1);
        std::os::unix::fs::symlink("/nonexistent", scratch.join("dangling")).unwrap();
        remove_all(scratch.join("dangling")).unwrap();
        assert!(fs::symlink_metadata(scratch.join("dangling")).is_err());
    });
}

#[test]
fn same_filesystem_bind_mount_stops_removal_before_anything_is_deleted() {
    privileged("same_filesystem_bind_mount_stops_removal_before_anything_is_deleted", |scratch| {
        let tree = scratch.join("tree");
        make_tree(&tree);
        let other = scratch.join("layer-store");
        fs::create_dir_all(other.join("sha256-x")).unwrap();
        fs::write(other.join("sha256-x/precious"), b"image data").unwrap();
        let mnt = tree.join("a/b/c/mnt");
        fs::create_dir(&mnt).unwrap();
        common::bind(&other, &mnt); // same tmpfs: st_dev is equal, only the mount id differs
        let before_tree = snapshot(&tree);
        let before_other = snapshot(&other);

        let err = remove_all(&tree).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::MountBoundary, "{err}");
        assert_eq!(err.path(), Some(mnt.as_path()));
        assert!(err.to_string().contains(&mnt.display().to_string()), "{err}");
        assert_eq!(snapshot(&tree), before_tree, "nothing in the tree was deleted");
        assert_eq!(snapshot(&other), before_other, "nothing behind the mount was deleted");

        common::umount(&mnt);
        remove_all(&tree).unwrap();
        assert_eq!(snapshot(&other), before_other);
    });
}

#[test]
fn a_mount_point_as_the_path_or_a_file_bind_mount_is_refused() {
    privileged("a_mount_point_as_the_path_or_a_file_bind_mount_is_refused", |scratch| {
        let m = scratch.join("m");
        fs::create_dir(&m).unwrap();
        common::mount_tmpfs(&m);
        fs::write(m.join("inside"), b"i").unwrap();
        let err = remove_all(&m).unwrap_err();
        assert_eq!((err.kind(), err.path()), (ErrorKind::MountBoundary, Some(m.as_path())));
        assert_eq!(fs::read(m.join("inside")).unwrap(), b"i");
        common::umount(&m);

        let tree = scratch.join("tree");
        fs::create_dir(&tree).unwrap();
        fs::write(tree.join("target"), b"t").unwrap();
        fs::write(scratch.join("host-file"), b"host").unwrap();
        common::bind(&scratch.join("host-file"), &tree.join("target"));
        let err = remove_all(&tree).unwrap_err();
        assert_eq!((err.kind(), err.path()), (ErrorKind::MountBoundary, Some(tree.join("target").as_path())));
        let err = remove_all(tree.join("target")).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::MountBoundary);
        common::umount(&tree.join("target"));
        assert_eq!(fs::read(scratch.join("host-file")).unwrap(), b"host");
        remove_all(&tree).unwrap();
        remove_all(&m).unwrap();
    });
}

#[test]
fn symlinks_are_never_followed() {
    privileged("symlinks_are_never_followed", |scratch| {
        let outside = scratch.join("outside");
        fs::create_dir_all(outside.join("sub")).unwrap();
        fs::write(outside.join("sub/keep"), b"k").unwrap();
        let before = snapshot(&outside);
        let tree = scratch.join("tree");
        fs::create_dir(&tree).unwrap();
        std::os::unix::fs::symlink(&outside, tree.join("abs")).unwrap();
        std::os::unix::fs::symlink("../outside/sub", tree.join("rel")).unwrap();
        std::os::unix::fs::symlink(outside.join("sub/keep"), tree.join("file-link")).unwrap();
        remove_all(&tree).unwrap();
        assert!(!tree.exists());
        assert_eq!(snapshot(&outside), before);
        // The path itself a symlink to a directory: the link goes, the directory stays.
        std::os::unix::fs::symlink(&outside, scratch.join("link-to-dir")).unwrap();
        remove_all(scratch.join("link-to-dir")).unwrap();
        assert_eq!(snapshot(&outside), before);
    });
}

#[test]
fn deep_tree_and_bad_paths() {
    privileged("deep_tree_and_bad_paths", |scratch| {
        let mut p = scratch.join("deep");
        let top = p.clone();
        for _ in 0..400 {
            p.push("d");
        }
        fs::create_dir_all(&p).unwrap();
        fs::write(p.join("leaf"), b"l").unwrap();
        assert_eq!(remove_all(&top).unwrap().dirs, 401);
        assert!(!top.exists());

        let err = remove_all(scratch.join("missing")).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(2));
        assert_eq!(err.path(), Some(scratch.join("missing").as_path()));
        for bad in ["/", "..", "x/..", "."] {
            assert_eq!(remove_all(bad).unwrap_err().kind(), ErrorKind::InvalidInput, "{bad}");
        }
    });
}

/// A tree deeper than PATH_MAX allows to name, made one level at a time through fds.
pub fn deep_tree(top: &Path, depth: usize) {
    use rustix::fs::{Mode, OFlags};
    fs::create_dir(top).unwrap();
    let mut fd = rustix::fs::open(top, OFlags::PATH | OFlags::DIRECTORY, Mode::empty()).unwrap();
    for i in 0..depth {
        rustix::fs::mkdirat(&fd, "d", Mode::from_raw_mode(0o755)).unwrap();
        if i % 100 == 0 {
            let f =
                rustix::fs::openat(&fd, "file", OFlags::CREATE | OFlags::WRONLY, Mode::from_raw_mode(0o644)).unwrap();
            drop(f);
        }
        fd = rustix::fs::openat(&fd, "d", OFlags::PATH | OFlags::DIRECTORY, Mode::empty()).unwrap();
    }
}

#[test]
fn trees_deeper_than_the_open_fd_window_and_path_max() {
    privileged("trees_deeper_than_the_open_fd_window_and_path_max", |scratch| {
        let top = scratch.join("deep");
        deep_tree(&top, 3000);
        let fds = common::fd_count();
        let stats = remove_all(&top).unwrap();
        assert_eq!(stats.dirs, 3001);
        assert_eq!(stats.others, 30);
        assert!(!top.exists());
        assert!(common::fd_count() <= fds + 1, "no fd left open");
    });
}

/// Defect 9: `x/.` and `x/./` name `.`, which is refused as GNU rm refuses it; nothing is deleted.
#[test]
fn a_path_ending_in_dot_is_refused() {
    privileged("a_path_ending_in_dot_is_refused", |scratch| {
        let x = scratch.join("x");
        fs::create_dir_all(x.join("sub")).unwrap();
        fs::write(x.join("sub/f"), b"f").unwrap();
        let before = snapshot(&x);
        for suffix in ["/.", "/./", "/.//", "/sub/..", "/sub/../"] {
            let bad = PathBuf::from(format!("{}{suffix}", x.display()));
            let err = remove_all(&bad).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidInput, "{}: {err}", bad.display());
            assert_eq!(err.path(), Some(bad.as_path()));
            assert_eq!(snapshot(&x), before, "{}", bad.display());
        }
        // A trailing slash alone names the directory.
        remove_all(format!("{}/", x.display())).unwrap();
        assert!(!x.exists());
    });
}

/// Defect 10: through an alias of the tree (a bind mount of an ancestor, which does not carry the mount inside),
/// the up-front check still finds the mount on the same filesystem and deletes nothing.
#[test]
fn a_mount_seen_through_an_alias_path_stops_removal_before_anything_is_deleted() {
    privileged("a_mount_seen_through_an_alias_path_stops_removal_before_anything_is_deleted", |scratch| {
        let real = scratch.join("real");
        let tree = real.join("tree");
        make_tree(&tree);
        fs::create_dir(tree.join("a/m")).unwrap();
        fs::write(tree.join("zzz-sibling"), b"s").unwrap();
        common::mount_tmpfs(&tree.join("a/m"));
        fs::write(tree.join("a/m/precious"), b"p").unwrap();
        let alias = scratch.join("alias");
        fs::create_dir(&alias).unwrap();
        common::bind(&real, &alias); // not recursive: the tmpfs at tree/a/m is not visible under alias/
        assert!(!alias.join("tree/a/m/precious").exists());
        let before = snapshot(&tree);

        let err = remove_all(alias.join("tree")).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::MountBoundary, "{err}");
        assert_eq!(err.path(), Some(alias.join("tree/a/m").as_path()));
        assert_eq!(snapshot(&tree), before, "nothing deleted through the alias");

        common::umount(&alias);
        common::umount(&tree.join("a/m"));
        remove_all(&real).unwrap();
    });
}
