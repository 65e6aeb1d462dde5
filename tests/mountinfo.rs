//! MountTable against the real kernel: escapes, the mount a path is on, and the leak check seeing a leak.

mod common;

use std::fs;

use common::privileged;
use layermount::MountTable;

#[test]
fn escaped_mount_points_and_mount_of() {
    privileged("escaped_mount_points_and_mount_of", |scratch| {
        let odd = scratch.join("with space\tand\\slash\nnewline");
        fs::create_dir(&odd).unwrap();
        common::mount_tmpfs(&odd);
        let table = MountTable::current().unwrap();
        let m = table.mount_of(&odd).unwrap();
        assert_eq!(m.mount_point, odd, "octal escapes decoded");
        assert_eq!(m.fs_type, "tmpfs");
        assert_eq!(table.mount_of(odd.join(".")).unwrap().mount_id, m.mount_id);
        assert_ne!(table.mount_of(scratch).unwrap().mount_id, m.mount_id);
        assert_eq!(table.beneath(scratch).count(), 2, "the scratch tmpfs and the odd one");
        common::umount(&odd);
    });
}

#[test]
fn leak_check_sees_a_leak_and_its_cleanup() {
    privileged("leak_check_sees_a_leak_and_its_cleanup", |scratch| {
        let before = MountTable::current().unwrap();
        let m = scratch.join("m");
        fs::create_dir(&m).unwrap();
        common::mount_tmpfs(&m);
        let changes = MountTable::current().unwrap().changes_since(&before);
        assert_eq!(changes.added.len(), 1);
        assert_eq!(changes.added[0].mount_point, m);
        assert!(changes.removed.is_empty());
        assert!(changes.to_string().starts_with('+'), "{changes}");
        common::umount(&m);
        assert!(MountTable::current().unwrap().changes_since(&before).is_empty());
    });
}

/// Defect 5: mount tables are bytes. A mount whose source is not UTF-8 does not stop the table from being read, so
/// removals and applies that check it keep working.
#[test]
fn a_non_utf8_mount_source_is_read() {
    privileged("a_non_utf8_mount_source_is_read", |scratch| {
        use std::os::unix::ffi::OsStrExt;
        let m = scratch.join("m\u{e9}");
        fs::create_dir(&m).unwrap();
        let source = std::ffi::OsStr::from_bytes(b"src\xff");
        rustix::mount::mount(source, &m, "tmpfs", rustix::mount::MountFlags::empty(), c"").unwrap();
        let table = MountTable::current().unwrap();
        assert_eq!(table.mount_of(&m).unwrap().fs_type, "tmpfs");
        assert!(table.mount_of(&m).unwrap().source.starts_with("src"));
        let odd = scratch.join(std::ffi::OsStr::from_bytes(b"tree\xfe"));
        fs::create_dir_all(odd.join("d")).unwrap();
        layermount::remove_all(&odd).unwrap();
        assert!(!odd.exists());
        common::umount(&m);
    });
}
