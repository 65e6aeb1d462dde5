//! Every committed fuzz seed (`fuzz/corpus/<target>/`) and every input that once crashed a target
//! (`fuzz/regressions/<target>/`) run through the fuzz targets' checks as ordinary tests, on the stable toolchain
//! without libFuzzer. This also keeps the checks compiling against the crate's API.

#[path = "../fuzz/checks/apply.rs"]
mod apply;
#[path = "../fuzz/checks/idmap.rs"]
mod idmap;
#[path = "../fuzz/checks/mountinfo.rs"]
mod mountinfo;
#[path = "../fuzz/checks/spec.rs"]
mod spec;

use std::path::Path;

/// Run `check` on every file of the target's corpus and regressions; how many there were.
fn each_input(target: &str, check: fn(&[u8])) -> usize {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut n = 0;
    for dir in [root.join("corpus").join(target), root.join("regressions").join(target)] {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        let mut files: Vec<_> = entries.map(|e| e.unwrap().path()).collect();
        files.sort();
        for f in files {
            let data = std::fs::read(&f).unwrap();
            let outcome = std::panic::catch_unwind(|| check(&data));
            assert!(outcome.is_ok(), "fuzz target {target} fails on {}", f.display());
            n += 1;
        }
    }
    n
}

#[test]
fn idmap_corpus() {
    assert!(each_input("idmap", idmap::run) > 0);
}

#[test]
fn spec_corpus() {
    assert!(each_input("spec", spec::run) > 0);
}

#[test]
fn mountinfo_corpus() {
    assert!(each_input("mountinfo", mountinfo::run) > 0);
}

#[test]
fn apply_corpus() {
    assert!(each_input("apply", apply::run) > 0);
}
