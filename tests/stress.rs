//! The seed incident as a bounded stress test: threads compose idmapped overlays over shared layers with every
//! strategy, processes hold a file, a directory (their working directory) and a fifo open inside each mount, and
//! everything is torn down while they are busy (detach-unmount, then the upper removed with `remove_all` while the
//! holder still runs). Afterwards every layer verifies against its recorded content digest and is byte-for-byte as
//! before, the mount table is as before, the staging directory is empty, and no process or fd is left.
//!
//! `LAYERMOUNT_STRESS_CYCLES` (default 200) is the number of cycles per strategy, spread over 4 threads.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use common::archive::{E, tar_of, tree};
use layermount::{ApplyOptions, Features, IdMap, MountTable, Overlay, Strategy, SyncMode, UserNamespace};

const THREADS: usize = 4;
const STRATEGIES: [Strategy; 4] = [Strategy::DetachedFds, Strategy::AttachedFds, Strategy::Strings, Strategy::Legacy];

fn cycles_per_strategy() -> usize {
    std::env::var("LAYERMOUNT_STRESS_CYCLES").ok().and_then(|s| s.parse().ok()).unwrap_or(200)
}

/// A process holding, inside the mounted overlay `mnt`: its working directory, a file (fd 3) and the fifo
/// (fd 4, opened read-write so it does not block). It prints `ready` once all are open.
fn holder(mnt: &Path) -> Child {
    let mut child = Command::new("sh")
        .args(["-c", r#"cd "$1/shared/dir" && exec 3<"$1/shared/file" 4<>"$1/fifo" && echo ready && exec sleep 60"#])
        .arg("sh")
        .arg(mnt)
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn holder");
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.as_mut().unwrap()), &mut line).unwrap();
    assert_eq!(line, "ready\n", "holder could not open its files in {}", mnt.display());
    child
}

/// One cycle: compose, use, start a holder, tear down under it, remove the upper, stop the holder.
fn cycle(layers: &[PathBuf], base: &Path, strategy: Strategy, ns: &UserNamespace, stage: &Path) {
    let (upper, work, mnt) = (base.join("upper"), base.join("work"), base.join("mnt"));
    fs::create_dir(&upper).unwrap();
    fs::create_dir(&work).unwrap();
    let guard = Overlay::new()
        .lowers(layers)
        .upper(&upper, &work)
        .idmap(ns.clone())
        .strategy(strategy)
        .staging_dir(stage)
        .mount_at(&mnt)
        .unwrap_or_else(|e| panic!("{strategy}: {e}"));
    // Layer files owned by 0 are seen as the mapped host root; writes land in the upper.
    assert_eq!(fs::metadata(mnt.join("shared/file")).unwrap().uid(), 100_000, "{strategy}: not idmapped");
    fs::write(mnt.join("shared/dir/written"), "w").unwrap();
    fs::write(mnt.join("shared/file"), "copied up").unwrap();
    let mut busy = holder(&mnt);
    guard.unmount().unwrap_or_else(|e| panic!("{strategy}: teardown while busy: {e}"));
    // The incident: the upper removed while the (now detached) overlay is still in use.
    layermount::remove_all(&upper).unwrap();
    layermount::remove_all(&work).unwrap();
    busy.kill().unwrap();
    busy.wait().unwrap();
}

#[test]
fn the_incident_under_load_every_strategy() {
    let name = "the_incident_under_load_every_strategy";
    common::privileged(name, move |scratch| {
        let store = scratch.join("store");
        fs::create_dir(&store).unwrap();
        let opts = ApplyOptions::new().sync(SyncMode::None);
        let mut layers = Vec::new();
        for i in 0..4 {
            let dir = store.join(format!("layer{i}"));
            let mut entries = vec![E::Dir("shared"), E::Dir("shared/dir"), E::File("shared/file", "base")];
            entries.push(if i == 0 { E::Fifo("fifo") } else { E::File("own", "own") });
            layermount::apply(&tar_of(&entries)[..], &dir, &opts).unwrap();
            layers.push(dir);
        }
        let before_layers: Vec<BTreeMap<String, String>> = layers.iter().map(|l| tree(l)).collect();
        let stage = scratch.join("stage");
        let map: IdMap = "0:100000:65536".parse().unwrap();
        let ns = UserNamespace::cached(&map, &map).unwrap();
        let table_before = MountTable::current().unwrap();
        let fds_before = common::fd_count();
        let best = Features::get().strategy();
        let cycles = cycles_per_strategy();
        let mut figures = Vec::new();
        for strategy in STRATEGIES {
            if strategy > best {
                common::say(format!("{name}: skipping {strategy}: the kernel lacks it"));
                continue;
            }
            let started = Instant::now();
            std::thread::scope(|s| {
                for t in 0..THREADS {
                    let (layers, ns, stage) = (&layers, &ns, &stage);
                    let base = scratch.join(format!("{strategy}-{t}"));
                    fs::create_dir(&base).unwrap();
                    // Threads take turns in the order of the layers, so compositions overlap differently.
                    let mut mine: Vec<PathBuf> = layers.clone();
                    mine.rotate_left(t % layers.len());
                    s.spawn(move || {
                        for _ in 0..cycles.div_ceil(THREADS) {
                            cycle(&mine, &base, strategy, ns, stage);
                        }
                    });
                }
            });
            figures.push(format!(
                "{strategy}: {} cycles in {:.1?}",
                cycles.div_ceil(THREADS) * THREADS,
                started.elapsed()
            ));
        }
        common::say(format!("{name}: {}", figures.join("; ")));
        for (layer, before) in layers.iter().zip(&before_layers) {
            layermount::verify(layer).unwrap_or_else(|e| panic!("{}: {e}", layer.display()));
            assert_eq!(&tree(layer), before, "{} changed", layer.display());
        }
        let changes = MountTable::current().unwrap().changes_since(&table_before);
        assert!(changes.is_empty(), "mounts left: {changes}");
        if stage.exists() {
            assert_eq!(fs::read_dir(&stage).unwrap().count(), 0, "staging directory not empty");
        }
        assert_eq!(common::children(), Vec::<u32>::new(), "processes left");
        assert_eq!(common::fd_count(), fds_before, "fds left open");
    });
}
