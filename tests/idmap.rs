//! IdMap: every error case, the text and OCI forms, and parse(format(m)) == m as a property.

mod common;

use layermount::{ErrorKind, IdMap, IdMapProblem, IdRange, MAX_EXTENTS};
use proptest::prelude::*;

fn problem(text: &str) -> IdMapProblem {
    match IdMap::parse(text) {
        Ok(m) => panic!("{text:?} parsed as {m}"),
        Err(e) => match e.kind() {
            ErrorKind::InvalidIdMap(p) => p,
            k => panic!("{text:?}: unexpected kind {k:?}"),
        },
    }
}

#[test]
fn every_error_case_has_its_kind() {
    let cases: &[(&str, IdMapProblem)] = &[
        ("", IdMapProblem::Empty),
        ("0:1000", IdMapProblem::Malformed),
        ("0:1000:1:2", IdMapProblem::Malformed),
        ("0:1000:1,", IdMapProblem::Malformed),
        ("0:0:0", IdMapProblem::ZeroSize),
        ("-1:0:1", IdMapProblem::NotANumber),
        ("0:-5:1", IdMapProblem::NotANumber),
        ("0:x:1", IdMapProblem::NotANumber),
        ("0: 1:1", IdMapProblem::NotANumber),
        ("+0:1:1", IdMapProblem::NotANumber),
        ("0:4294967296:1", IdMapProblem::NotANumber),
        ("4294967295:0:2", IdMapProblem::Overflow),
        ("0:4294967295:2", IdMapProblem::Overflow),
        ("0:1000:10,5:2000:10", IdMapProblem::OverlappingContainer),
        ("0:1000:10,10:1005:10", IdMapProblem::OverlappingHost),
    ];
    for (text, want) in cases {
        assert_eq!(problem(text), *want, "{text:?}");
    }
}

#[test]
fn edges_that_are_valid() {
    // The last valid id is 4294967294 (the kernel reserves (u32)-1); adjacent ranges do not overlap.
    assert!(IdMap::parse("4294967294:0:1").is_ok());
    assert!(IdMap::parse("0:4294967294:1").is_ok());
    assert!(IdMap::parse("0:0:4294967295").is_ok());
    let m = IdMap::parse("0:1000:10,10:1010:10").unwrap();
    assert_eq!(m.to_host(19), Some(1019));
    assert_eq!(m.to_host(20), None);
    assert_eq!(m.to_container(1009), Some(9));
    assert_eq!(m.to_container(999), None);
}

/// Issue 10, defect 13: maps the kernel refuses were accepted. An extent may not reach id 4294967295 (the
/// kernel's `(u32)-1`), and the whole map must fit in the one page `/proc/<pid>/uid_map` takes in one write.
#[test]
fn maps_the_kernel_refuses_are_refused() {
    for text in ["1:0:4294967295", "0:1:4294967295", "4294967295:0:1", "0:4294967295:1", "4294967294:5:2"] {
        assert_eq!(problem(text), IdMapProblem::Overflow, "{text}");
    }
    // 340 one-id extents with seven-digit host ids: 4,650 bytes written, over the 4,095 the kernel takes.
    let ranges: Vec<IdRange> = (0..340).map(|i| IdRange { container: i, host: 1_000_000 + i, size: 1 }).collect();
    assert!(ranges.iter().map(|r| format!("{} {} {}\n", r.container, r.host, r.size).len()).sum::<usize>() > 4095);
    let e = IdMap::new(ranges).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidIdMap(IdMapProblem::TooManyExtents), "{e}");
    assert!(e.to_string().contains("4650 bytes"), "{e}");
}

/// Whether the kernel takes `ranges` as a new user namespace's `uid_map` (written raw, one write).
fn kernel_takes(ranges: &[(u32, u32, u32)]) -> bool {
    use std::io::Write;
    let text: String = ranges.iter().map(|(c, h, s)| format!("{c} {h} {s}\n")).collect();
    let mut child = std::process::Command::new("unshare").args(["--user", "sleep", "30"]).spawn().expect("unshare");
    let path = format!("/proc/{}/uid_map", child.id());
    // The child may not have entered its namespace yet: wait until its user namespace differs from ours.
    let ours = std::fs::read_link("/proc/self/ns/user").unwrap();
    while std::fs::read_link(format!("/proc/{}/ns/user", child.id())).is_ok_and(|ns| ns == ours) {
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    let ok = std::fs::OpenOptions::new().write(true).open(&path).and_then(|mut f| f.write(text.as_bytes())).is_ok();
    child.kill().unwrap();
    child.wait().unwrap();
    ok
}

/// Our verdict on the edge cases of defect 13 is the kernel's: ids at the top of the range, and maps just under
/// and just over a page when written.
#[test]
fn idmap_validation_agrees_with_the_kernel() {
    if !common::have_privilege("idmap_validation_agrees_with_the_kernel") {
        return;
    }
    let one_id_ranges = |n: u32| (0..n).map(|i| (i, 1_000_000 + i, 1)).collect::<Vec<_>>();
    let len = |r: &[(u32, u32, u32)]| r.iter().map(|(c, h, s)| format!("{c} {h} {s}\n").len()).sum::<usize>();
    // The most one-id ranges that fit in 4095 bytes, and one more.
    let fits = (1..=340).take_while(|&n| len(&one_id_ranges(n)) <= 4095).last().unwrap();
    let mut cases: Vec<Vec<(u32, u32, u32)>> = vec![one_id_ranges(fits), one_id_ranges(fits + 1), one_id_ranges(340)];
    for edge in [
        (0, 0, u32::MAX),
        (1, 0, u32::MAX),
        (0, 1, u32::MAX),
        (u32::MAX - 1, 0, 1),
        (u32::MAX, 0, 1),
        (0, u32::MAX - 1, 1),
        (0, u32::MAX, 1),
        (u32::MAX - 1, 5, 2),
    ] {
        cases.push(vec![edge]);
    }
    for ranges in cases {
        let ours = IdMap::from_triples(&ranges).is_ok();
        let theirs = kernel_takes(&ranges);
        let shown = if ranges.len() > 2 {
            format!("{} ranges, {} bytes", ranges.len(), len(&ranges))
        } else {
            format!("{ranges:?}")
        };
        assert_eq!(ours, theirs, "{shown}: we say {ours}, the kernel says {theirs}");
    }
}

#[test]
fn extent_limit() {
    let text = |n: u32| (0..n).map(|i| format!("{i}:{}:1", 1000 + i)).collect::<Vec<_>>().join(",");
    assert_eq!(IdMap::parse(&text(MAX_EXTENTS as u32)).unwrap().ranges().len(), 340);
    assert_eq!(problem(&text(341)), IdMapProblem::TooManyExtents);
    let ranges = (0..341).map(|i| IdRange { container: i, host: 5000 + i, size: 1 }).collect();
    assert_eq!(IdMap::new(ranges).unwrap_err().kind(), ErrorKind::InvalidIdMap(IdMapProblem::TooManyExtents));
}

#[test]
fn errors_name_the_offending_text() {
    let e = IdMap::parse("0:1000:1,5:abc:1").unwrap_err();
    assert_eq!(e.operation(), "parse id map");
    assert!(e.to_string().contains("\"5:abc:1\""), "{e}");
    let e = IdMap::from_triples(&[(0, 1000, 10), (5, 9000, 1)]).unwrap_err();
    assert!(e.to_string().contains("0:1000:10,5:9000:1"), "{e}");
}

#[test]
fn oci_triples_match_text() {
    let a = IdMap::from_triples(&[(0, 100000, 65536), (65536, 1000, 1)]).unwrap();
    let b: IdMap = "0:100000:65536,65536:1000:1".parse().unwrap();
    assert_eq!(a, b);
    assert_eq!(a.to_proc_format(), "0 100000 65536\n65536 1000 1\n");
    assert_eq!(IdMap::from_triples(&[]).unwrap_err().kind(), ErrorKind::InvalidIdMap(IdMapProblem::Empty));
}

/// Valid maps: up to 8 ranges laid out without overlap on either side.
fn valid_map() -> impl Strategy<Value = IdMap> {
    prop::collection::vec((1u32..5000, 0u32..100, 0u32..100), 1..8).prop_map(|parts| {
        let (mut c, mut h) = (0u32, 0u32);
        let mut ranges = Vec::new();
        for (size, gap_c, gap_h) in parts {
            c += gap_c;
            h += gap_h;
            ranges.push(IdRange { container: c, host: h, size });
            c += size;
            h += size;
        }
        // Reverse some host order so ranges are not always sorted the same on both sides.
        let n = ranges.len();
        for i in 0..n / 2 {
            let (a, b) = (ranges[i].host, ranges[n - 1 - i].host);
            let (sa, sb) = (ranges[i].size, ranges[n - 1 - i].size);
            if sa == sb {
                ranges[i].host = b;
                ranges[n - 1 - i].host = a;
            }
        }
        IdMap::new(ranges).expect("generated map is valid")
    })
}

proptest! {
    #[test]
    fn parse_format_round_trip(m in valid_map()) {
        let text = m.to_string();
        prop_assert_eq!(IdMap::parse(&text).unwrap(), m.clone());
        let triples: Vec<_> = m.ranges().iter().map(|r| (r.container, r.host, r.size)).collect();
        prop_assert_eq!(IdMap::from_triples(&triples).unwrap(), m);
    }

    #[test]
    fn to_host_and_back(m in valid_map(), pick in 0usize..8, off in 0u32..5000) {
        let r = m.ranges()[pick % m.ranges().len()];
        let id = r.container + off % r.size;
        let host = m.to_host(id).unwrap();
        prop_assert_eq!(m.to_container(host), Some(id));
    }

    #[test]
    fn arbitrary_text_never_panics(s in "[0-9:,+ -]{0,40}") {
        if let Ok(m) = IdMap::parse(&s) {
            prop_assert_eq!(IdMap::parse(&m.to_string()).unwrap(), m);
        }
    }
}
