//! Fuzz `IdMap` parsing: never a panic; whatever is accepted is what the kernel takes (at most 340 ranges, at most
//! 4095 bytes when written, no id 4294967295, no overlap), formats back to itself and maps each range both ways.
//! The bytes are also read as raw `(container, host, size)` triples for `IdMap::from_triples`, which must agree with
//! parsing their text.
//!
//! Shared by the fuzz target `fuzz_targets/idmap.rs` and by `tests/fuzz_corpora.rs`, which runs every committed seed
//! and regression input through it as an ordinary test.

use layermount::IdMap;

fn check(m: &IdMap) {
    let ranges = m.ranges();
    assert!(!ranges.is_empty() && ranges.len() <= layermount::MAX_EXTENTS);
    assert!(m.to_proc_format().len() <= 4095, "{m}: {} bytes", m.to_proc_format().len());
    for (i, r) in ranges.iter().enumerate() {
        assert!(r.size > 0);
        assert!(u64::from(r.container) + u64::from(r.size) <= u64::from(u32::MAX), "{r}");
        assert!(u64::from(r.host) + u64::from(r.size) <= u64::from(u32::MAX), "{r}");
        for o in &ranges[i + 1..] {
            let apart = |a: u32, b: u32| {
                u64::from(a) + u64::from(r.size) <= u64::from(b) || u64::from(b) + u64::from(o.size) <= u64::from(a)
            };
            assert!(apart(r.container, o.container) && apart(r.host, o.host), "{r} and {o} overlap");
        }
        assert_eq!(m.to_host(r.container), Some(r.host));
        assert_eq!(m.to_container(r.host + (r.size - 1)), Some(r.container + (r.size - 1)));
    }
    assert_eq!(&IdMap::parse(&m.to_string()).expect("formatted map parses"), m);
}

/// One input: panics on any broken invariant.
pub fn run(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(m) = IdMap::parse(text) {
            check(&m);
        }
    }
    let triples: Vec<(u32, u32, u32)> = data
        .chunks_exact(12)
        .map(|c| {
            let n = |i: usize| u32::from_le_bytes(c[i..i + 4].try_into().unwrap());
            (n(0), n(4), n(8))
        })
        .collect();
    let built = IdMap::from_triples(&triples);
    let text: Vec<String> = triples.iter().map(|(c, h, s)| format!("{c}:{h}:{s}")).collect();
    let parsed = IdMap::parse(&text.join(","));
    assert_eq!(built.is_ok(), parsed.is_ok(), "{triples:?}");
    if let (Ok(a), Ok(b)) = (built, parsed) {
        assert_eq!(a, b);
        check(&a);
    }
}
