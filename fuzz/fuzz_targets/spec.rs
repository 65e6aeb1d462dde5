//! Fuzz `MountSpec` option parsing: never a panic in `parse_options`, `with_options` or `validate`; parsed items are
//! never empty; `set_idmap` leaves every other option where it was and leaves exactly one `uidmap=` and one
//! `gidmap=`.
//!
//! The first byte picks the type; the rest is the `-o` text.
#![no_main]

use layermount::{IdMap, MountSpec};
use libfuzzer_sys::fuzz_target;

const KINDS: [&str; 6] = ["overlay", "bind", "tmpfs", "mkdir/overlay", "mkdir/bind", "x/y"];

fuzz_target!(|data: &[u8]| {
    let Some((&k, rest)) = data.split_first() else { return };
    let text = String::from_utf8_lossy(rest);
    let kind = KINDS[usize::from(k) % KINDS.len()];
    let options = MountSpec::parse_options(&text);
    assert!(options.iter().all(|o| !o.is_empty()), "{options:?}");
    let mut spec = MountSpec::new(kind, "none", "/target").with_options(&text);
    assert_eq!(spec.options, options);
    let _ = spec.validate();

    let others = |s: &MountSpec| -> Vec<String> {
        s.options.iter().filter(|o| !o.starts_with("uidmap=") && !o.starts_with("gidmap=")).cloned().collect()
    };
    let before = others(&spec);
    let map: IdMap = "0:100000:65536".parse().unwrap();
    spec.set_idmap(&map, &map);
    assert_eq!(others(&spec), before, "set_idmap moved or dropped an option");
    for key in ["uidmap=", "gidmap="] {
        let found: Vec<&String> = spec.options.iter().filter(|o| o.starts_with(key)).collect();
        assert_eq!(found, [&format!("{key}0:100000:65536")], "{:?}", spec.options);
    }
    let _ = spec.validate();
});
