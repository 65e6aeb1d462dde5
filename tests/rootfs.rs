//! Rootfs fixups on real directories and a real overlay, each test in its own private mount namespace.

mod common;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};

use common::{owner, privileged};
use layermount::rootfs::{Change, Entry, MTAB_TARGET};
use layermount::{Fixup, Fixups, IdMap, Overlay};

/// Every entry under `dir` with its type, size, owner, mode and link target: what "nothing changed" compares.
fn snapshot(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(p) = stack.pop() {
        let m = fs::symlink_metadata(&p).unwrap();
        let link =
            if m.file_type().is_symlink() { fs::read_link(&p).unwrap().display().to_string() } else { String::new() };
        out.push(format!("{} {:o} {}:{} {} {link}", p.display(), m.mode(), m.uid(), m.gid(), m.len()));
        if m.is_dir() {
            for e in fs::read_dir(&p).unwrap() {
                stack.push(e.unwrap().path());
            }
        }
    }
    out.sort();
    out
}

fn mtab_only() -> Fixups {
    Fixups::new().only(&[Fixup::Mtab])
}

fn link(p: &Path) -> PathBuf {
    fs::read_link(p).unwrap()
}

#[test]
fn mtab_regular_file_becomes_the_symlink() {
    privileged("mtab_regular_file_becomes_the_symlink", |scratch| {
        let root = scratch.join("root");
        fs::create_dir_all(root.join("etc")).unwrap();
        fs::write(root.join("etc/mtab"), "/dev/sda1 / ext4 rw 0 0\n").unwrap();
        // What a run of ours killed between making its temporary symlink and renaming it would leave.
        symlink("stale", root.join(format!("etc/.mtab.layermount-{}", std::process::id()))).unwrap();
        let report = mtab_only().apply(&root).unwrap();
        assert_eq!(
            report.changes,
            vec![Change {
                fixup: Fixup::Mtab,
                path: "/etc/mtab".into(),
                before: Entry::File { size: 24 },
                after: Entry::Symlink(MTAB_TARGET.into()),
            }]
        );
        assert!(report.problems.is_empty());
        assert_eq!(link(&root.join("etc/mtab")), Path::new("../proc/self/mounts"));
        assert_eq!(
            report.changes[0].to_string(),
            "mtab /etc/mtab: regular file (24 bytes) -> symlink to ../proc/self/mounts"
        );
        // No temporary name left beside it.
        assert_eq!(fs::read_dir(root.join("etc")).unwrap().count(), 1);
    });
}

#[test]
fn mtab_correct_symlinks_are_left_alone() {
    privileged("mtab_correct_symlinks_are_left_alone", |scratch| {
        for (i, target) in
            ["/proc/mounts", "/proc/self/mounts", "../proc/self/mounts", "../proc/./mounts"].iter().enumerate()
        {
            let root = scratch.join(format!("root{i}"));
            fs::create_dir_all(root.join("etc")).unwrap();
            symlink(target, root.join("etc/mtab")).unwrap();
            let before = snapshot(&root);
            let report = mtab_only().apply(&root).unwrap();
            assert!(report.is_clean(), "{target}: {report:?}");
            assert_eq!(snapshot(&root), before);
        }
    });
}

#[test]
fn mtab_symlink_elsewhere_is_reported_and_kept_unless_forced() {
    privileged("mtab_symlink_elsewhere_is_reported_and_kept_unless_forced", |scratch| {
        let root = scratch.join("root");
        fs::create_dir_all(root.join("etc")).unwrap();
        symlink("/etc/mtab.real", root.join("etc/mtab")).unwrap();
        let report = mtab_only().apply(&root).unwrap();
        assert!(report.changes.is_empty());
        assert_eq!(report.problems.len(), 1);
        assert_eq!(report.problems[0].found, Entry::Symlink("/etc/mtab.real".into()));
        assert_eq!(link(&root.join("etc/mtab")), Path::new("/etc/mtab.real"));

        let report = mtab_only().force_mtab(true).apply(&root).unwrap();
        assert_eq!(report.changes.len(), 1);
        assert_eq!(report.changes[0].before, Entry::Symlink("/etc/mtab.real".into()));
        assert_eq!(link(&root.join("etc/mtab")), Path::new(MTAB_TARGET));
    });
}

#[test]
fn mtab_missing_is_created_only_when_etc_exists() {
    privileged("mtab_missing_is_created_only_when_etc_exists", |scratch| {
        let root = scratch.join("root");
        fs::create_dir_all(&root).unwrap();
        let report = mtab_only().apply(&root).unwrap();
        assert!(report.is_clean(), "{report:?}");
        assert!(!root.join("etc").exists());

        fs::create_dir(root.join("etc")).unwrap();
        let report = mtab_only().owner(100000, 100001).apply(&root).unwrap();
        assert_eq!(report.changes.len(), 1);
        assert_eq!(report.changes[0].before, Entry::Missing);
        assert_eq!(link(&root.join("etc/mtab")), Path::new(MTAB_TARGET));
        assert_eq!(owner(&root.join("etc/mtab")), (100000, 100001));
    });
}

/// `/etc` is a symlink out of the root, absolute and relative: the change lands inside the root or nowhere, and the
/// host-side directory it names is untouched.
#[test]
fn etc_symlink_out_of_root_changes_nothing_outside() {
    privileged("etc_symlink_out_of_root_changes_nothing_outside", |scratch| {
        let outside = scratch.join("host/etc");
        fs::create_dir_all(&outside).unwrap();
        fs::write(outside.join("mtab"), "host mounts\n").unwrap();
        let before_outside = snapshot(&scratch.join("host"));
        let abs_target = outside.clone();
        let rel_target = PathBuf::from("../../../../../../../..").join(outside.strip_prefix("/").unwrap());
        for (i, target) in [abs_target, rel_target].iter().enumerate() {
            let root = scratch.join(format!("root{i}"));
            fs::create_dir_all(&root).unwrap();
            symlink(target, root.join("etc")).unwrap();
            // Nothing at the target inside the root: the fixups find no /etc and must not fall through to the host.
            let report = Fixups::new().owner(100000, 100000).apply(&root).unwrap();
            assert!(!report.changes.iter().any(|c| c.path.starts_with("/etc")), "{report:?}");
            assert!(!report.problems.is_empty(), "the dangling /etc is reported: {report:?}");
            assert_eq!(snapshot(&scratch.join("host")), before_outside);

            // The same path made inside the root: the changes land there.
            let inside = root.join(outside.strip_prefix("/").unwrap());
            fs::create_dir_all(&inside).unwrap();
            fs::write(inside.join("mtab"), "image mtab\n").unwrap();
            let report = Fixups::new().apply(&root).unwrap();
            assert!(report.changes.iter().any(|c| c.path == Path::new("/etc/mtab")), "{report:?}");
            assert_eq!(link(&inside.join("mtab")), Path::new(MTAB_TARGET));
            assert!(inside.join("hosts").is_file());
            assert_eq!(snapshot(&scratch.join("host")), before_outside);
        }
    });
}

#[test]
fn mount_targets_are_made_with_type_mode_and_owner() {
    privileged("mount_targets_are_made_with_type_mode_and_owner", |scratch| {
        let root = scratch.join("root");
        fs::create_dir_all(root.join("etc")).unwrap();
        fs::write(root.join("etc/hosts"), "127.0.0.1 localhost\n").unwrap();
        fs::write(root.join("proc"), "not a dir").unwrap();
        symlink("../run/resolv.conf", root.join("etc/resolv.conf")).unwrap();
        let map: IdMap = "0:100000:65536".parse().unwrap();
        let report = Fixups::new().mtab(false).idmap(&map, &map).apply(&root).unwrap();
        let made: Vec<String> = report.changes.iter().map(|c| c.path.display().to_string()).collect();
        assert_eq!(made, ["/sys", "/dev", "/dev/pts", "/dev/shm", "/tmp", "/etc/hostname"]);
        assert_eq!(report.problems.len(), 1, "{report:?}");
        assert_eq!(report.problems[0].path, Path::new("/proc"));
        assert_eq!(fs::read_to_string(root.join("proc")).unwrap(), "not a dir");
        for d in ["sys", "dev", "dev/pts", "dev/shm", "tmp"] {
            let p = root.join(d);
            assert!(fs::symlink_metadata(&p).unwrap().is_dir(), "{d}");
            assert_eq!(owner(&p), (100000, 100000), "{d}");
        }
        assert_eq!(fs::metadata(root.join("tmp")).unwrap().permissions().mode() & 0o7777, 0o1777);
        assert_eq!(fs::metadata(root.join("sys")).unwrap().permissions().mode() & 0o7777, 0o555);
        assert_eq!(fs::metadata(root.join("etc/hostname")).unwrap().len(), 0);
        assert_eq!(owner(&root.join("etc/hostname")), (100000, 100000));
        // What was there is untouched, owner included.
        assert_eq!(fs::read_to_string(root.join("etc/hosts")).unwrap(), "127.0.0.1 localhost\n");
        assert_eq!(owner(&root.join("etc/hosts")), (0, 0));
        assert_eq!(link(&root.join("etc/resolv.conf")), Path::new("../run/resolv.conf"));
    });
}

#[test]
fn fixups_twice_change_nothing_the_second_time() {
    privileged("fixups_twice_change_nothing_the_second_time", |scratch| {
        let root = scratch.join("root");
        fs::create_dir_all(root.join("etc")).unwrap();
        fs::write(root.join("etc/mtab"), "old\n").unwrap();
        let first = Fixups::new().owner(100000, 100000).apply(&root).unwrap();
        assert_eq!(first.changes.len(), 10, "{first:?}");
        let after_first = snapshot(&root);
        let second = Fixups::new().owner(100000, 100000).apply(&root).unwrap();
        assert!(second.is_clean(), "{second:?}");
        assert_eq!(snapshot(&root), after_first);
    });
}

#[test]
fn dry_run_changes_nothing_and_reports_the_same_changes() {
    privileged("dry_run_changes_nothing_and_reports_the_same_changes", |scratch| {
        for with_etc in [true, false] {
            let root = scratch.join(format!("root-{with_etc}"));
            fs::create_dir_all(&root).unwrap();
            if with_etc {
                fs::create_dir(root.join("etc")).unwrap();
                fs::write(root.join("etc/mtab"), "old\n").unwrap();
            }
            let before = snapshot(&root);
            let dry = Fixups::new().dry_run(true).apply(&root).unwrap();
            assert!(dry.dry_run);
            assert_eq!(snapshot(&root), before, "a dry run changed the tree");
            let real = Fixups::new().apply(&root).unwrap();
            assert_eq!(dry.changes, real.changes);
            assert_ne!(snapshot(&root), before);
        }
    });
}

/// Through a merged overlay root the change lands in the upper layer; the lower layer keeps its regular file.
#[test]
fn through_the_merged_root_changes_land_in_the_upper() {
    privileged("through_the_merged_root_changes_land_in_the_upper", |scratch| {
        let lower = scratch.join("lower");
        fs::create_dir_all(lower.join("etc")).unwrap();
        fs::write(lower.join("etc/mtab"), "/dev/sda1 / ext4 rw 0 0\n").unwrap();
        let lower_before = snapshot(&lower);
        let (upper, work, merged) = (scratch.join("upper"), scratch.join("work"), scratch.join("merged"));
        fs::create_dir_all(&upper).unwrap();
        fs::create_dir_all(&work).unwrap();
        let guard = Overlay::new().lower(&lower).upper(&upper, &work).mount_at(&merged).unwrap();
        let report = Fixups::new().apply(&merged).unwrap();
        assert!(report.changes.iter().any(|c| c.path == Path::new("/etc/mtab")));
        assert_eq!(link(&merged.join("etc/mtab")), Path::new(MTAB_TARGET));
        guard.unmount().unwrap();
        assert_eq!(link(&upper.join("etc/mtab")), Path::new(MTAB_TARGET));
        assert!(upper.join("proc").is_dir());
        assert_eq!(snapshot(&lower), lower_before);
    });
}

#[test]
fn a_map_without_root_is_refused() {
    let map: IdMap = "1:100000:10".parse().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let err = Fixups::new().idmap(&map, &map).dry_run(true).apply(dir.path()).unwrap_err();
    assert_eq!(err.kind(), layermount::ErrorKind::InvalidInput);
    assert!(err.to_string().contains("does not map container root"), "{err}");
}
