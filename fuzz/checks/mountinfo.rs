//! Fuzz mountinfo parsing: `MountTable::parse` and `MountInfo::parse_line` never panic; in a table that parses,
//! every mount is found by its id and the table has no changes against itself.
//!
//! Shared by the fuzz target `fuzz_targets/mountinfo.rs` and by `tests/fuzz_corpora.rs`, which runs every committed seed
//! and regression input through it as an ordinary test.

use layermount::{MountInfo, MountTable};

/// One input: panics on any broken invariant.
pub fn run(data: &[u8]) {
    // Mount tables are bytes; the parser takes text today (lossy here keeps every input useful).
    let text = String::from_utf8_lossy(data);
    // Each line alone: never a panic (whether it agrees with the table is not compared: how lines are split, a
    // `\r` included, is the parser's business).
    for line in text.split('\n') {
        let _ = MountInfo::parse_line(line);
    }
    let Ok(table) = MountTable::parse(&*text) else { return };
    for m in table.mounts() {
        assert!(table.by_id(m.mount_id).is_some());
    }
    let _ = table.mount_of("/");
    let _ = table.beneath(std::path::Path::new("/")).count();
    assert!(table.changes_since(&table).is_empty());
}
