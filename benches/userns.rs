//! User namespaces: a new one per call (what containerd does per mount) against a cache hit.
//!
//! Run as root: `cargo bench --bench userns`.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::Duration;

use criterion::Criterion;
use layermount::{IdMap, UserNamespace};

fn main() {
    if !common::have_privilege("bench userns") {
        return;
    }
    let mut c = Criterion::default().configure_from_args();
    let map: IdMap = "0:100000:65536".parse().unwrap();
    let mut g = c.benchmark_group("user_namespace");
    g.measurement_time(Duration::from_secs(5));
    g.bench_function("new (one child per call)", |b| b.iter(|| UserNamespace::new(&map, &map).unwrap()));
    UserNamespace::cached(&map, &map).unwrap();
    g.bench_function("cached (hit)", |b| b.iter(|| UserNamespace::cached(&map, &map).unwrap()));
    g.finish();
    c.final_summary();
}
