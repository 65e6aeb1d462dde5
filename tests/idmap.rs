//! IdMap: every error case, the text and OCI forms, and parse(format(m)) == m as a property.

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
    // The last id fits exactly; adjacent ranges do not overlap.
    assert!(IdMap::parse("4294967295:0:1").is_ok());
    assert!(IdMap::parse("0:0:4294967295").is_ok());
    let m = IdMap::parse("0:1000:10,10:1010:10").unwrap();
    assert_eq!(m.to_host(19), Some(1019));
    assert_eq!(m.to_host(20), None);
    assert_eq!(m.to_container(1009), Some(9));
    assert_eq!(m.to_container(999), None);
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
