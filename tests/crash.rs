//! Crash safety: `layermount apply` SIGKILLed at random points, 60 times. A layer with a marker must verify; no
//! layer is committed unless complete; `recover` leaves no staging directory or temporary marker behind.
#![cfg(feature = "cli")]

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use layermount::{LayerProblem, marker_path, recover, verify};

fn big_layer(path: &Path) {
    let mut b = tar::Builder::new(fs::File::create(path).unwrap());
    let mut add = |name: String, size: usize, seed: u8| {
        let data: Vec<u8> = (0..size).map(|i| (i as u8).wrapping_mul(31) ^ seed).collect();
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, name, &data[..]).unwrap();
    };
    for i in 0..400 {
        add(format!("dir{}/file{i}", i % 20), 16 * 1024, i as u8);
    }
    for i in 0..2 {
        add(format!("big/blob{i}"), 3 << 20, i);
    }
    b.finish().unwrap();
}

#[test]
fn killed_apply_never_commits_an_incomplete_layer() {
    common::privileged("killed_apply_never_commits_an_incomplete_layer", |scratch| {
        let blob = scratch.join("layer.tar");
        big_layer(&blob);
        let store = scratch.join("store");
        fs::create_dir(&store).unwrap();
        let bin = env!("CARGO_BIN_EXE_layermount");
        let run = |dest: &Path| {
            Command::new(bin).arg("apply").arg(&blob).arg(dest).stdout(std::process::Stdio::null()).spawn().unwrap()
        };

        let start = Instant::now();
        assert!(run(&store.join("reference")).wait().unwrap().success());
        let full = start.elapsed();
        verify(store.join("reference")).unwrap();

        let mut seed = start.elapsed().as_nanos() as u64 | 1;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let (mut committed, mut not_committed, mut removed) = (0, 0, 0);
        for i in 0..60 {
            let dest = store.join(format!("l{i}"));
            let mut child = run(&dest);
            // Anywhere from before the first entry to just after the commit.
            let delay = full.mul_f64((next() % 1200) as f64 / 1000.0);
            std::thread::sleep(delay.max(Duration::from_micros(50)));
            let _ = child.kill();
            child.wait().unwrap();
            if marker_path(&dest).exists() {
                verify(&dest).unwrap_or_else(|e| panic!("kill {i} after {delay:?}: committed but {e}"));
                committed += 1;
                // Keep the tmpfs from filling up: a checked layer is not needed any more.
                if committed > 2 {
                    layermount::remove_all(&dest).unwrap();
                    fs::remove_file(marker_path(&dest)).unwrap();
                    removed += 1;
                }
            } else {
                not_committed += 1;
            }
            if i % 10 == 9 {
                let report = recover(&store).unwrap();
                assert!(report.incomplete.iter().all(|(_, p)| *p == LayerProblem::MissingMarker));
                for (dir, _) in report.incomplete {
                    layermount::remove_all(dir).unwrap();
                }
            }
        }
        let report = recover(&store).unwrap();
        for (dir, problem) in &report.incomplete {
            assert_eq!(*problem, LayerProblem::MissingMarker, "{}", dir.display());
            assert!(!marker_path(dir).exists());
        }
        assert_eq!(report.committed.len(), committed - removed + 1, "{report:?}");
        for dir in &report.committed {
            verify(dir).unwrap();
        }
        let left: Vec<String> =
            fs::read_dir(&store).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        assert!(left.iter().all(|n| !n.contains(".partial-") && !n.ends_with(".tmp")), "{left:?}");
        assert!(not_committed > 0, "no kill landed before the commit ({committed} committed)");
        eprintln!("crash test: {committed} committed, {not_committed} not, one full apply {full:?}");
    });
}
