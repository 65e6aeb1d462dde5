//! Fuzz `layermount::apply` with arbitrary bytes (plain, gzip or zstd by their magic): it must never panic, never
//! write outside the destination's parent, and either commit a layer that verifies or leave nothing.
//!
//! `fuzz/run 60 apply` on the stable toolchain (as root, so that owners and devices are exercised; it runs on a
//! private tmpfs with a 1 GiB malloc limit), or `cargo +nightly fuzz run apply`.
//!
//! Shared by the fuzz target `fuzz_targets/apply.rs` and by `tests/fuzz_corpora.rs`, which runs every committed seed
//! and regression input through it as an ordinary test.

use layermount::{ApplyOptions, DeviceMode, SyncMode, apply, marker_path, remove_all, verify};

/// One input: panics on any broken invariant.
pub fn run(data: &[u8]) {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("store");
    let sentinel = dir.path().join("sentinel");
    std::fs::create_dir(&root).unwrap();
    std::fs::write(&sentinel, b"untouched").unwrap();
    let dest = root.join("layer");
    let opts = ApplyOptions::new().sync(SyncMode::None).devices(DeviceMode::Skip);
    match apply(data, &dest, &opts) {
        Ok(_) => {
            verify(&dest).expect("a committed layer verifies");
            remove_all(&dest).unwrap();
            std::fs::remove_file(marker_path(&dest)).unwrap();
        }
        Err(_) => assert!(!dest.exists(), "a failed apply leaves no layer"),
    }
    assert_eq!(std::fs::read_dir(&root).unwrap().count(), 0, "nothing left in the store");
    assert_eq!(std::fs::read(&sentinel).unwrap(), b"untouched");
    let entries = std::fs::read_dir(dir.path()).unwrap().count();
    assert_eq!(entries, 2, "nothing written beside the store");
}
