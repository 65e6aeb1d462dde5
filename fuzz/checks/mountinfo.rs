//! Fuzz mountinfo parsing (bytes): `MountTable::parse` and `MountInfo::parse_line` never panic; a table parses
//! exactly when each of its lines does, into the same mounts; every mount is found by its id; a table has no changes
//! against itself.
//!
//! Shared by the fuzz target `fuzz_targets/mountinfo.rs` and by `tests/fuzz_corpora.rs`, which runs every committed seed
//! and regression input through it as an ordinary test.

use layermount::{MountInfo, MountTable};

/// One input: panics on any broken invariant.
pub fn run(data: &[u8]) {
    // Mount tables are bytes (a mount's source or path need not be UTF-8). Lines are split at `\n` only.
    let lines: Vec<&[u8]> = data.split(|&b| b == b'\n').filter(|l| !l.is_empty()).collect();
    let alone: Vec<_> = lines.iter().map(MountInfo::parse_line).collect();
    let Ok(table) = MountTable::parse(data) else {
        assert!(alone.iter().any(Result::is_err), "the table fails though every line parses alone");
        return;
    };
    assert_eq!(table.mounts().len(), lines.len());
    for (m, one) in table.mounts().iter().zip(alone) {
        assert_eq!(&one.expect("a line of a parsed table parses alone"), m);
        assert!(table.by_id(m.mount_id).is_some());
    }
    let _ = table.mount_of("/");
    let _ = table.beneath(std::path::Path::new("/")).count();
    assert!(table.changes_since(&table).is_empty());
}
