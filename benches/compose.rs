//! Compose + teardown of one container's idmapped overlay with an upper, on a tmpfs in a private mount namespace:
//! flat (every layer a lower, `fd` strategy), on a cached image stack (a hit), building the stack (a miss; the stack
//! stays cached, and its eviction is `stack-evict`), the raw syscall floors of a flat compose and of a compose on a
//! stack, and containerd's 2.2 and 2.0 ways (see `benches/support/ways.rs`); then eight containers of one image
//! composed at once on two threads, stacked and flat.
//!
//! Run as root: `cargo bench --bench compose` (about two minutes). `LAYERMOUNT_BENCH_STRATEGIES=1` adds the flat
//! compose forced to each fallback strategy. Filter as usual: `cargo bench --bench compose -- '/64$'`.

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "support/ways.rs"]
mod ways;

use std::path::PathBuf;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion};
use layermount::{ImageStack, StackCache, Strategy, UserNamespace};

const COUNTS: [usize; 5] = [1, 16, 64, 256, 500];

fn bench(c: &mut Criterion, scratch: &std::path::Path) {
    let map = ways::map();
    let all_strategies = std::env::var("LAYERMOUNT_BENCH_STRATEGIES").as_deref() == Ok("1");
    let mut g = c.benchmark_group("compose");
    g.sample_size(10).warm_up_time(Duration::from_millis(200)).measurement_time(Duration::from_secs(1));
    for n in COUNTS {
        let s = ways::setup(scratch, n);
        let cache = StackCache::default();
        let stack = ImageStack::build(&s.layers, Some(&UserNamespace::cached(&map, &map).unwrap())).unwrap();
        g.bench_with_input(BenchmarkId::new("flat-fd", n), &n, |b, _| {
            b.iter(|| ways::flat(&s, &map, Strategy::DetachedFds))
        });
        g.bench_with_input(BenchmarkId::new("raw-floor", n), &n, |b, _| b.iter(|| ways::raw(&s, &map)));
        g.bench_with_input(BenchmarkId::new("stacked-hit", n), &n, |b, _| b.iter(|| ways::stacked(&cache, &s, &map)));
        // The cache a miss leaves holds the stack for the image's next containers: its eviction is measured apart.
        g.bench_with_input(BenchmarkId::new("stack-miss", n), &n, |b, _| {
            b.iter_with_large_drop(|| ways::miss(&s, &map))
        });
        g.bench_with_input(BenchmarkId::new("stack-evict", n), &n, |b, _| {
            b.iter_batched(|| ways::miss(&s, &map), ways::evict, criterion::BatchSize::PerIteration)
        });
        g.bench_with_input(BenchmarkId::new("raw-on-stack", n), &n, |b, _| b.iter(|| ways::raw_on(&stack, &s)));
        g.bench_with_input(BenchmarkId::new("containerd-2.2", n), &n, |b, _| {
            b.iter(|| ways::containerd(&s, &map, false))
        });
        g.bench_with_input(BenchmarkId::new("containerd-2.0", n), &n, |b, _| {
            b.iter(|| ways::containerd(&s, &map, true))
        });
        if all_strategies {
            for st in
                [Strategy::AttachedFds, Strategy::Strings, Strategy::Legacy].into_iter().filter(|s| ways::supported(*s))
            {
                g.bench_with_input(BenchmarkId::new(format!("flat-{st}"), n), &n, |b, _| {
                    b.iter(|| ways::flat(&s, &map, st))
                });
            }
        }
    }
    g.finish();

    // Eight containers of one image at once on two threads: per batch of eight.
    let mut g = c.benchmark_group("eight_containers_two_threads");
    g.sample_size(10).warm_up_time(Duration::from_millis(200)).measurement_time(Duration::from_secs(1));
    for n in [64, 256] {
        let s = ways::setup(scratch, n);
        let ctrs: Vec<(PathBuf, PathBuf, PathBuf)> =
            (0..8).map(|i| ways::container(scratch, &format!("c{n}-{i}"))).collect();
        let cache = StackCache::default();
        g.bench_with_input(BenchmarkId::new("stacked-hit", n), &n, |b, _| {
            b.iter(|| ways::concurrent_stacked(&cache, &s, &map, &ctrs, 2))
        });
        g.bench_with_input(BenchmarkId::new("flat-fd", n), &n, |b, _| {
            b.iter(|| ways::concurrent_flat(&s, &map, &ctrs, 2))
        });
    }
    g.finish();
}

fn main() {
    common::privileged("bench compose", |scratch| {
        let mut c = Criterion::default().configure_from_args();
        bench(&mut c, scratch);
        c.final_summary();
    });
}
