//! Fuzz mountinfo parsing: `MountTable::parse` never panics; in a table that parses, every mount is found by its id,
//! each line parses alone to the same mount, and the table has no changes against itself.
#![no_main]

use layermount::{MountInfo, MountTable};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Mount tables are bytes; the parser takes text today (lossy here keeps every input useful).
    let text = String::from_utf8_lossy(data);
    let Ok(table) = MountTable::parse(&*text) else { return };
    for m in table.mounts() {
        assert!(table.by_id(m.mount_id).is_some());
    }
    for line in text.lines().filter(|l| !l.is_empty()) {
        let alone = MountInfo::parse_line(line).expect("a line of a parsed table parses");
        assert!(table.mounts().contains(&alone), "{line:?}");
    }
    let _ = table.mount_of("/");
    let _ = table.beneath(std::path::Path::new("/")).count();
    assert!(table.changes_since(&table).is_empty());
});
