//! Fuzz `MountSpec` option parsing: never a panic in `parse_options`, `with_options` or `validate`; parsed items are
//! never empty; `set_idmap` leaves every other option where it was and leaves exactly one `uidmap=` and one
//! `gidmap=`.
//!
//! The first byte picks the type; the rest is the `-o` text.
//!
//! Shared by the fuzz target `fuzz_targets/spec.rs` and by `tests/fuzz_corpora.rs`, which runs every committed seed
//! and regression input through it as an ordinary test.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;

use layermount::{IdMap, MountSpec};

const KINDS: [&str; 6] = ["overlay", "bind", "tmpfs", "mkdir/overlay", "mkdir/bind", "x/y"];

/// One input: panics on any broken invariant.
pub fn run(data: &[u8]) {
    let Some((&k, rest)) = data.split_first() else { return };
    // Options are bytes: a path in them need not be UTF-8.
    let text = OsStr::from_bytes(rest);
    let kind = KINDS[usize::from(k) % KINDS.len()];
    let options = MountSpec::parse_options(text);
    assert!(options.iter().all(|o| !o.is_empty()), "{options:?}");
    let mut spec = MountSpec::new(kind, "none", "/target").with_options(text);
    assert_eq!(spec.options, options);
    let _ = spec.validate();

    let is = |o: &OsString, key: &str| o.as_bytes().starts_with(key.as_bytes());
    let others = |s: &MountSpec| -> Vec<OsString> {
        s.options.iter().filter(|o| !is(o, "uidmap=") && !is(o, "gidmap=")).cloned().collect()
    };
    let before = others(&spec);
    let map: IdMap = "0:100000:65536".parse().unwrap();
    spec.set_idmap(&map, &map);
    assert_eq!(others(&spec), before, "set_idmap moved or dropped an option");
    for key in ["uidmap=", "gidmap="] {
        let found: Vec<&OsString> = spec.options.iter().filter(|o| is(o, key)).collect();
        assert_eq!(found, [&OsString::from(format!("{key}0:100000:65536"))], "{:?}", spec.options);
    }
    let _ = spec.validate();
}
