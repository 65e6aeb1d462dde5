//! Crash safety of `layermount apply`.
//!
//! * SIGKILLed at random points, 60 times (tmpfs): a layer with a marker must verify; no layer is committed unless
//!   complete; `recover` leaves no staging directory or temporary marker behind. A kill loses nothing a sync would
//!   have saved (the page cache survives it), so this part cannot show durability.
//! * Durability: a power cut is simulated on a loop-device ext4 mounted with `commit=300` (nothing is written back on
//!   its own for minutes) by copying its backing file, which holds exactly what reached the "disk", and mounting the
//!   copy. A layer `apply` reported committed must be there and verify; the same apply with no sync is not there,
//!   which shows the check can fail (a no-op sync fails it).
//! * The window between publishing the directory and putting its marker in place, hit exactly with `strace`
//!   (SIGKILL at the second `renameat2`): the layer is not committed and `recover` reports it.
#![cfg(feature = "cli")]

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::loopfs::Ext4;
use layermount::{ApplyOptions, LayerProblem, SyncMode, apply, marker_path, recover, verify};

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
        // Fewer where every apply is slow (an emulated VM: `.ci/qemu/run-kernel` sets it).
        let kills: usize = std::env::var("LAYERMOUNT_CRASH_KILLS").ok().and_then(|v| v.parse().ok()).unwrap_or(60);
        for i in 0..kills {
            let dest = store.join(format!("l{i}"));
            let mut child = run(&dest);
            // Anywhere from before the first entry to just after the commit.
            // The first kill lands at once (before any entry), so even a short run has one before the commit.
            let delay = if i == 0 { Duration::ZERO } else { full.mul_f64((next() % 1200) as f64 / 1000.0) };
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

fn small_layer(path: &Path) {
    let mut b = tar::Builder::new(fs::File::create(path).unwrap());
    for i in 0..200u32 {
        let data: Vec<u8> = (0..4096u32).map(|j| (i * 7 + j) as u8).collect();
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, format!("d{}/f{i}", i % 10), &data[..]).unwrap();
    }
    b.finish().unwrap();
}

/// What a power cut now would leave of the layer `name` in `store` on `disk`: copied, mounted, recovered; the
/// verified layer, or why it is not there.
fn after_power_cut(disk: &Ext4, scratch: &Path, store_rel: &str, name: &str) -> Result<(), String> {
    let copy = scratch.join("cut.img");
    disk.power_cut_copy(&copy);
    let seen = Ext4::mount(&copy, &scratch.join("cut"), "");
    let store = seen.at.join(store_rel);
    let result = (|| {
        if !store.join(name).exists() {
            return Err("the layer directory is not there".to_string());
        }
        let report = recover(&store).map_err(|e| e.to_string())?;
        if !report.committed.contains(&store.join(name)) {
            return Err(format!("not committed: {report:?}"));
        }
        verify(store.join(name)).map(drop).map_err(|e| e.to_string())
    })();
    drop(seen);
    fs::remove_file(&copy).unwrap();
    result
}

#[test]
fn applied_layers_survive_a_power_cut_and_unsynced_ones_do_not() {
    common::privileged("applied_layers_survive_a_power_cut_and_unsynced_ones_do_not", |scratch| {
        let blob = scratch.join("layer.tar");
        small_layer(&blob);
        let disk = Ext4::create(&scratch.join("disk.img"), &scratch.join("disk"), 64, "commit=300");
        let store = disk.at.join("store");
        fs::create_dir(&store).unwrap();
        // Make the empty store itself durable, as a daemon's store would be long before.
        rustix::fs::syncfs(fs::File::open(&store).unwrap()).unwrap();

        for (name, mode) in [("syncfs", SyncMode::Syncfs), ("fsync", SyncMode::Fsync)] {
            apply(fs::File::open(&blob).unwrap(), store.join(name), &ApplyOptions::new().sync(mode)).unwrap();
            after_power_cut(&disk, scratch, "store", name).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        // Without a sync the layer is complete in the page cache, and lost to the power cut.
        apply(fs::File::open(&blob).unwrap(), store.join("none"), &ApplyOptions::new().sync(SyncMode::None)).unwrap();
        verify(store.join("none")).unwrap();
        let lost = after_power_cut(&disk, scratch, "store", "none");
        assert!(lost.is_err(), "an unsynced layer survived the power cut: the check cannot tell");

        // Killed at random points, then the power cut: whatever has a marker on the disk verifies.
        let bin = env!("CARGO_BIN_EXE_layermount");
        let mut seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64;
        let (mut committed, mut not) = (0, 0);
        for i in 0..8 {
            let dest = store.join(format!("k{i}"));
            let mut child = Command::new(bin)
                .arg("apply")
                .arg(&blob)
                .arg(&dest)
                .stdout(std::process::Stdio::null())
                .spawn()
                .unwrap();
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            std::thread::sleep(Duration::from_micros(seed % 150_000));
            let _ = child.kill();
            child.wait().unwrap();
            let copy = scratch.join("cut.img");
            disk.power_cut_copy(&copy);
            let seen = Ext4::mount(&copy, &scratch.join("cut"), "");
            let report = recover(seen.at.join("store")).unwrap();
            for dir in &report.committed {
                verify(dir).unwrap_or_else(|e| panic!("kill {i}: {} committed on disk but {e}", dir.display()));
            }
            if report.committed.contains(&seen.at.join(format!("store/k{i}"))) {
                committed += 1;
            } else {
                not += 1;
            }
            drop(seen);
            fs::remove_file(&copy).unwrap();
        }
        eprintln!("power cuts after kills: {committed} committed and verified, {not} not committed");
        drop(disk);
    });
}

fn have_strace() -> bool {
    let ok = Command::new("strace").arg("-V").stdout(std::process::Stdio::null()).status().is_ok_and(|s| s.success());
    if !ok && std::env::var("LAYERMOUNT_REQUIRE_ROOT").as_deref() == Ok("1") {
        panic!("strace is needed for fault injection (.ci/run installs it)");
    }
    ok
}

/// Killed exactly between publishing the directory (the first `renameat2`) and putting its marker in place (the
/// second), or just before publishing: never committed, and `recover` says so and cleans up.
#[test]
fn a_kill_between_publishing_and_the_marker_leaves_an_uncommitted_layer() {
    if !common::have_privilege("a_kill_between_publishing_and_the_marker_leaves_an_uncommitted_layer") || !have_strace()
    {
        return;
    }
    common::privileged("a_kill_between_publishing_and_the_marker_leaves_an_uncommitted_layer", |scratch| {
        let blob = scratch.join("layer.tar");
        small_layer(&blob);
        let store = scratch.join("store");
        fs::create_dir(&store).unwrap();
        for (when, published) in [(1, false), (2, true)] {
            let dest = store.join(format!("l{when}"));
            let status = Command::new("strace")
                .args(["-f", "-qq", "-o", "/dev/null", "-e", &format!("inject=renameat2:signal=SIGKILL:when={when}")])
                .arg(env!("CARGO_BIN_EXE_layermount"))
                .args(["apply", "--sync", "none"])
                .arg(&blob)
                .arg(&dest)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status()
                .unwrap();
            assert!(!status.success(), "when={when}: killed");
            assert_eq!(dest.exists(), published, "when={when}");
            assert!(!marker_path(&dest).exists(), "when={when}: no marker");
            let names: Vec<String> =
                fs::read_dir(&store).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
            assert!(names.iter().any(|n| n.ends_with(".commit.tmp")), "when={when}: the marker was ready: {names:?}");
            let report = recover(&store).unwrap();
            if published {
                assert_eq!(report.incomplete, vec![(dest.clone(), LayerProblem::MissingMarker)]);
                assert_eq!(
                    verify(&dest).unwrap_err().kind(),
                    layermount::ErrorKind::InvalidLayer(LayerProblem::MissingMarker)
                );
                layermount::remove_all(&dest).unwrap();
            } else {
                assert!(report.incomplete.is_empty(), "{report:?}");
            }
            assert!(report.committed.is_empty(), "{report:?}");
            assert_eq!(fs::read_dir(&store).unwrap().count(), 0, "when={when}: recover cleaned everything");
        }
    });
}
