//! User namespaces: a new one per call (what containerd does per mount) against a cache hit.
//!
//! Run as root: `cargo bench --bench userns`.

#[path = "../tests/common/mod.rs"]
mod common;

use std::os::fd::AsFd;
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
    // Hits in turn on every namespace of a full cache, so each is the least recently used when asked for: the
    // longest scan of the recently used list. One iteration is `capacity` hits.
    let capacity = UserNamespace::cache_stats().capacity;
    let maps: Vec<IdMap> =
        (0..capacity as u32).map(|i| format!("0:{}:65536", 200_000 + 65_536 * i).parse().unwrap()).collect();
    let held: Vec<UserNamespace> = maps.iter().map(|m| UserNamespace::cached(m, m).unwrap()).collect();
    g.bench_function(format!("cached ({capacity} hits in turn over a full cache)"), |b| {
        b.iter(|| {
            for m in &maps {
                UserNamespace::cached(m, m).unwrap();
            }
        })
    });
    drop(held);
    let ns = UserNamespace::cached(&map, &map).unwrap();
    g.bench_function("from_fd (one joining child)", |b| {
        b.iter(|| UserNamespace::from_fd(ns.as_fd().try_clone_to_owned().unwrap()).unwrap())
    });
    g.finish();
    c.final_summary();
}
