//! `remove_all` against std's `remove_dir_all` on the same trees (tmpfs, private mount namespace).
//!
//! Run as root: `cargo bench --bench remove`.

#[path = "../tests/common/mod.rs"]
mod common;

use std::fs;
use std::path::Path;
use std::time::Duration;

use criterion::{BatchSize, BenchmarkId, Criterion};

/// `dirs` directories of `files` small files each, plus a symlink per directory.
fn make_tree(root: &Path, dirs: usize, files: usize) {
    for d in 0..dirs {
        let dir = root.join(format!("d{d}"));
        fs::create_dir_all(&dir).unwrap();
        for f in 0..files {
            fs::write(dir.join(format!("f{f}")), b"x").unwrap();
        }
        std::os::unix::fs::symlink("..", dir.join("up")).unwrap();
    }
}

fn bench(c: &mut Criterion, scratch: &Path) {
    let mut g = c.benchmark_group("remove_tree");
    g.sample_size(20).measurement_time(Duration::from_secs(5));
    for (dirs, files) in [(10, 100), (100, 100)] {
        let n = dirs * (files + 1);
        let tree = scratch.join("tree");
        g.bench_with_input(BenchmarkId::new("layermount::remove_all", n), &n, |b, _| {
            b.iter_batched(
                || make_tree(&tree, dirs, files),
                |()| layermount::remove_all(&tree).unwrap(),
                BatchSize::PerIteration,
            )
        });
        g.bench_with_input(BenchmarkId::new("std::fs::remove_dir_all", n), &n, |b, _| {
            b.iter_batched(
                || make_tree(&tree, dirs, files),
                |()| fs::remove_dir_all(&tree).unwrap(),
                BatchSize::PerIteration,
            )
        });
    }
    g.finish();
}

fn main() {
    common::privileged("bench remove", |scratch| {
        let mut c = Criterion::default().configure_from_args();
        bench(&mut c, scratch);
        c.final_summary();
    });
}
