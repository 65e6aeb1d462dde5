//! Hostile archives: no entry, symlink, hardlink or whiteout writes or links outside the layer. A sentinel directory
//! beside the store must be byte-for-byte unchanged after every case, and a refused archive commits nothing.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use common::archive::{E, tar_of, tree};
use common::privileged;
use layermount::{ApplyOptions, ErrorKind, LayerProblem, SyncMode, apply};
use proptest::prelude::*;

fn sentinel(scratch: &Path) -> std::path::PathBuf {
    let s = scratch.join("sentinel");
    fs::create_dir_all(s.join("etc")).unwrap();
    fs::write(s.join("etc/passwd"), "root:x:0:0").unwrap();
    fs::write(s.join("file"), "do not touch").unwrap();
    s
}

/// The entries of the layer must all be inside it (checked by real path).
fn all_inside(layer: &Path) {
    for path in tree(layer).keys() {
        let p = layer.join(path);
        let real = fs::canonicalize(p.parent().unwrap()).unwrap();
        assert!(real.starts_with(fs::canonicalize(layer).unwrap()), "{} resolves outside", p.display());
    }
}

/// Put the sentinel's absolute path where an entry says "{S}".
fn with_sentinel(entries: &[E], abs: &str) -> Vec<E> {
    let fill = |t: &str| -> &'static str { Box::leak(t.replace("{S}", abs).into_boxed_str()) };
    entries
        .iter()
        .map(|e| match e {
            E::Symlink(n, t) => E::Symlink(n, fill(t)),
            E::Hardlink(n, t) => E::Hardlink(n, fill(t)),
            E::File(n, d) => E::File(fill(n), d),
            other => other.clone(),
        })
        .collect()
}

enum Want {
    /// Applies; these paths (in the layer) must hold these contents.
    Contained(&'static [(&'static str, &'static str)]),
    Refused(ErrorKind),
}

fn case(name: &str, base: &[E], top: &[E], want: Want) {
    let name = name.to_string();
    let (base, top) = (base.to_vec(), top.to_vec());
    privileged(&format!("breakout/{name}"), move |scratch| {
        let sentinel = sentinel(scratch);
        let abs = sentinel.display().to_string();
        let fix = |es: &[E]| tar_of(&with_sentinel(es, &abs));
        let before: BTreeMap<String, String> = tree(&sentinel);
        let store = scratch.join("store");
        fs::create_dir(&store).unwrap();
        let opts = ApplyOptions::new().sync(SyncMode::None);
        apply(&fix(&base)[..], store.join("base"), &opts).unwrap();
        let result = apply(&fix(&top)[..], store.join("top"), &opts.clone().parent(store.join("base")));
        assert_eq!(tree(&sentinel), before, "{name}: the sentinel changed");
        match want {
            Want::Contained(files) => {
                result.unwrap_or_else(|e| panic!("{name}: {e}"));
                for (p, content) in files {
                    assert_eq!(fs::read_to_string(store.join("top").join(p)).unwrap(), *content, "{name}: {p}");
                }
                all_inside(&store.join("top"));
            }
            Want::Refused(kind) => {
                let err = result.unwrap_err();
                assert_eq!(err.kind(), kind, "{name}: {err}");
                assert!(!store.join("top").exists(), "{name}: nothing committed");
            }
        }
        let left: Vec<_> = fs::read_dir(&store).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert!(left.iter().all(|n| !n.to_string_lossy().contains("partial")), "{name}: {left:?}");
        all_inside(&store.join("base"));
    });
}

use E::*;

#[test]
fn absolute_names_are_contained() {
    case(
        "absolute",
        &[],
        &[File("/etc/passwd", "mine"), File("{S}/file", "mine too")],
        Want::Contained(&[("etc/passwd", "mine")]),
    );
}

#[test]
fn dotdot_names_are_refused() {
    case("dotdot", &[], &[File("../escape", "x")], Want::Refused(ErrorKind::Breakout));
    case("dotdot-deep", &[], &[Dir("a"), File("a/../../escape", "x")], Want::Refused(ErrorKind::Breakout));
    case("dotdot-dir", &[], &[Dir("../../sentinel-sibling")], Want::Refused(ErrorKind::Breakout));
}

#[test]
fn writing_through_a_symlink_stays_inside() {
    case(
        "relative-symlink",
        &[],
        &[Symlink("evil", "../../../../sentinel"), File("evil/file", "p")],
        Want::Contained(&[("sentinel/file", "p")]),
    );
    case("absolute-symlink", &[], &[Symlink("evil", "{S}"), File("evil/file", "p")], Want::Contained(&[]));
    case(
        "symlink-then-file-of-same-name",
        &[],
        &[Symlink("x", "{S}/file"), File("x", "replaced")],
        Want::Contained(&[("x", "replaced")]),
    );
}

#[test]
fn two_hop_symlink_chains_stay_inside() {
    case(
        "two-hop",
        &[],
        &[Symlink("a", "b"), Symlink("b", "../../../{S}"), File("a/file", "p"), File("a/etc/passwd", "q")],
        Want::Contained(&[]),
    );
    case("loop", &[], &[Symlink("a", "b"), Symlink("b", "a"), File("a/file", "p")], Want::Refused(ErrorKind::Os));
}

#[test]
fn hardlinks_cannot_reach_outside() {
    case("hardlink-dotdot", &[], &[Hardlink("h", "../../sentinel/file")], Want::Refused(ErrorKind::Breakout));
    case(
        "hardlink-through-symlinked-dir",
        &[],
        &[Symlink("d", "{S}"), Hardlink("h", "d/file")],
        Want::Refused(ErrorKind::InvalidLayer(LayerProblem::HardlinkTarget)),
    );
    case(
        "hardlink-absolute",
        &[],
        &[Hardlink("h", "{S}/file")],
        Want::Refused(ErrorKind::InvalidLayer(LayerProblem::HardlinkTarget)),
    );
}

#[test]
fn lower_layer_symlinks_out_of_the_root_stay_inside() {
    case(
        "lower-symlink-out",
        &[Symlink("out", "../../../../../{S}")],
        &[File("out/etc/passwd", "p")],
        Want::Contained(&[]),
    );
    case("lower-symlink-abs", &[Symlink("out", "{S}")], &[File("out/new", "p")], Want::Contained(&[]));
}

#[test]
fn bad_whiteouts_are_refused() {
    case("wh-empty", &[], &[File(".wh.", "")], Want::Refused(ErrorKind::InvalidLayer(LayerProblem::BadWhiteout)));
    case("wh-dot", &[], &[File("d/.wh..", "")], Want::Refused(ErrorKind::InvalidLayer(LayerProblem::BadWhiteout)));
    case("wh-dotdot", &[], &[File(".wh...", "")], Want::Refused(ErrorKind::InvalidLayer(LayerProblem::BadWhiteout)));
    case(
        "wh-overlay-device",
        &[],
        &[E::Char("fake-whiteout", 0, 0)],
        Want::Refused(ErrorKind::InvalidLayer(LayerProblem::UnsupportedEntry)),
    );
}

/// Random archives made of hostile pieces never write outside and never panic.
fn hostile_entry() -> impl Strategy<Value = E> {
    let names = prop::sample::select(vec![
        "a",
        "b",
        "a/b",
        "/abs",
        "../x",
        "a/../../x",
        ".wh.a",
        ".wh..",
        "l",
        "l/x",
        "d/.wh..wh..opq",
        "./c",
    ]);
    let targets = prop::sample::select(vec!["/", "..", "../..", "a", "/tmp", "l", "b/../../..", "{S}", "{S}/file"]);
    prop_oneof![
        names.clone().prop_map(Dir),
        names.clone().prop_map(|n| File(n, "data")),
        (names.clone(), targets.clone()).prop_map(|(n, t)| Symlink(n, t)),
        (names, targets).prop_map(|(n, t)| Hardlink(n, t)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]
    #[test]
    fn random_hostile_archives_stay_inside(entries in prop::collection::vec(hostile_entry(), 1..10)) {
        if !common::have_privilege("random_hostile_archives_stay_inside") {
            return Ok(());
        }
        privileged("random_hostile_archives_stay_inside", move |scratch| {
            let sentinel = sentinel(scratch);
            let abs = sentinel.display().to_string();
            let fixed = with_sentinel(&entries, &abs);
            let before = tree(&sentinel);
            let dest = scratch.join("layer");
            if apply(&tar_of(&fixed)[..], &dest, &ApplyOptions::new().sync(SyncMode::None)).is_ok() {
                all_inside(&dest);
                layermount::verify(&dest).unwrap();
            } else {
                assert!(!dest.exists());
            }
            assert_eq!(tree(&sentinel), before);
        });
    }
}
