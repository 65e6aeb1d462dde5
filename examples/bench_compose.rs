//! Flat vs stacked composition on this machine, measured interleaved so that a busy machine slows every way alike:
//! each round runs every way once, in an order shuffled per round, and ratios are taken within a round. (A rotating
//! order would always run each way right after the same other way, and a way that follows a heavy one pays for the
//! kernel's deferred work of that one: at 500 layers that biased one way by 15%.)
//!
//! Run as root: `cargo run --release --example bench_compose -- [LAYERS...] [--rounds N]` (default: 16 64 256 500,
//! 60 rounds). Prints, per layer count, the median and 10th-90th percentile of each way in µs, and the median
//! per-round ratios that the targets are about. The `-nocheck` ways compose with `Overlay::check_in_use(false)`
//! (no look for live overlays); `raw-on-stack` is the syscall floor of a container compose on a stack; a
//! `stack-miss` leaves its stack cached for the image's next containers, and `stack-evict` is that stack's own
//! teardown, timed apart. Everything happens on a tmpfs in a private mount namespace.

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "../benches/support/ways.rs"]
mod ways;

use std::time::Instant;

use layermount::{StackCache, Strategy};

const WAYS: [&str; 10] = [
    "flat-fd",
    "raw-floor",
    "stacked-hit",
    "stack-miss",
    "containerd-2.2",
    "containerd-2.0",
    "flat-fd-nocheck",
    "stacked-nocheck",
    "raw-on-stack",
    "stack-evict",
];

/// The ways in an order of their own for round `seed` (Fisher-Yates with xorshift64*).
fn shuffled(seed: u64) -> [usize; WAYS.len()] {
    let mut order: [usize; WAYS.len()] = std::array::from_fn(|i| i);
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    for i in (1..order.len()).rev() {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        let j = (x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as usize % (i + 1);
        order.swap(i, j);
    }
    order
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    let mut counts = Vec::new();
    let mut rounds = 60usize;
    let mut only: Option<usize> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--rounds" => rounds = args.next().and_then(|v| v.parse().ok()).expect("--rounds N"),
            // One way only, for a profiler or strace: `--only flat-fd`.
            "--only" => only = args.next().and_then(|w| WAYS.iter().position(|x| *x == w)),
            n => counts.push(n.parse::<usize>().expect("LAYERS must be numbers")),
        }
    }
    if counts.is_empty() {
        counts = vec![16, 64, 256, 500];
    }
    common::privileged("bench_compose", move |scratch| {
        let map = ways::map();
        println!(
            "kernel {}, strategy {}, {rounds} rounds, µs: median [p10-p90]",
            layermount::Features::get().kernel_release,
            layermount::Features::get().strategy()
        );
        for n in counts {
            let s = ways::setup(scratch, n);
            let cache = StackCache::default();
            let after = std::cell::Cell::new(None);
            let evict_time = std::cell::Cell::new(0f64);
            let ns = layermount::UserNamespace::cached(&map, &map).unwrap();
            let stack = layermount::ImageStack::build(&s.layers, Some(&ns)).unwrap();
            let run = |way: usize| match way {
                0 => ways::flat(&s, &map, Strategy::DetachedFds),
                1 => ways::raw(&s, &map),
                2 => ways::stacked(&cache, &s, &map),
                // The cache a miss leaves (holding the stack) is dropped outside the timing; way 9 times that.
                3 => after.set(Some(ways::miss(&s, &map))),
                4 => ways::containerd(&s, &map, false),
                5 => ways::containerd(&s, &map, true),
                6 => ways::flat_checked(&s, &map, Strategy::DetachedFds, false),
                7 => ways::stacked_checked(&cache, &s, &map, (&s.upper, &s.work, &s.target), false),
                8 => ways::raw_on(&stack, &s),
                _ => {
                    let cache = ways::miss(&s, &map);
                    let t = Instant::now();
                    ways::evict(cache);
                    evict_time.set(t.elapsed().as_secs_f64() * 1e6);
                }
            };
            for w in (0..WAYS.len()).filter(|w| only.is_none_or(|o| o == *w)) {
                run(w); // warm: caches, the stack, the user namespace
                drop(after.take());
            }
            let mut times: Vec<Vec<f64>> = vec![Vec::new(); WAYS.len()];
            for r in 0..rounds {
                let mut round = [0f64; WAYS.len()];
                for w in shuffled(r as u64) {
                    if only.is_some_and(|o| o != w) {
                        continue;
                    }
                    let t = Instant::now();
                    run(w);
                    round[w] = if w == 9 { evict_time.get() } else { t.elapsed().as_secs_f64() * 1e6 };
                    drop(after.take());
                }
                for (w, t) in round.iter().enumerate() {
                    times[w].push(*t);
                }
            }
            let ratio = |a: usize, b: usize| {
                let mut v: Vec<f64> = times[a].iter().zip(&times[b]).map(|(x, y)| x / y).collect();
                (pct(&mut v, 0.5), pct(&mut v, 0.1), pct(&mut v, 0.9))
            };
            if only.is_some() {
                let mut v = times[only.unwrap_or(0)].clone();
                println!("{n} layers: {} {:.0} µs", WAYS[only.unwrap_or(0)], pct(&mut v, 0.5));
                continue;
            }
            println!("{n} layers:");
            for (w, name) in WAYS.iter().enumerate() {
                let mut v = times[w].clone();
                println!("  {name:<15} {:>8.0} [{:.0}-{:.0}]", pct(&mut v, 0.5), pct(&mut v, 0.1), pct(&mut v, 0.9));
            }
            for (label, a, b) in [
                ("flat-fd / raw-floor", 0, 1),
                ("flat-fd-nocheck / raw-floor", 6, 1),
                ("containerd-2.2 / stacked-hit", 4, 2),
                ("containerd-2.0 / stacked-hit", 5, 2),
                ("containerd-2.2 / stacked-nocheck", 4, 7),
                ("stack-miss / flat-fd", 3, 0),
                ("stacked-hit / raw-on-stack", 2, 8),
            ] {
                let (m, lo, hi) = ratio(a, b);
                println!("  {label:<29} {m:.2}x [{lo:.2}-{hi:.2}]");
            }
        }
    });
}
