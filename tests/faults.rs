//! Fault injection: a composer (the `layermount mount` command) SIGKILLed at random points, inside the unmount
//! window of the fallback strategies included, and `layermount rm` killed mid-way. Afterwards the host holds
//! nothing of a killed compose but its read-only staging mounts, which `cleanup_stale` removes; a user's `rm -rf` of
//! the staging directory before that deletes nothing in any layer or beside them; a rerun of `rm` finishes and
//! touches nothing beyond its path.
//!
//! Kills are made two ways: `strace -e inject=SYSCALL:signal=SIGKILL:when=N` (a kill exactly at the Nth call of a
//! syscall, the way the incident was reproduced) and a plain `SIGKILL` after a random delay. Each strategy gets
//! `LAYERMOUNT_KILLS` kills (default 50); `LAYERMOUNT_FAULT_SEED` replays a run (the seed is printed).
#![cfg(feature = "cli")]

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use layermount::{MountTable, STAGING_DIR_ENV, cleanup_stale};
use rustix::process::{Pid, WaitOptions};

/// Tests here reap orphans reparented to this process; one at a time so none reaps another's child.
static SERIAL: Mutex<()> = Mutex::new(());

const STRATEGIES: [&str; 4] = ["fd", "fd-attached", "string", "legacy"];
/// Syscalls a compose makes (the feature probe's included), where a kill is injected, each with about how often
/// one run makes it (a `when` past that lets the run finish).
const KILL_AT: [(&str, u64); 10] = [
    ("open_tree", 3),
    ("mount_setattr", 6),
    ("move_mount", 3),
    ("fsopen", 10),
    ("fsconfig", 24),
    ("fsmount", 7),
    ("umount2", 2),
    ("mkdirat", 4),
    ("unlinkat", 4),
    ("mount", 2),
];

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_layermount")
}

/// A small deterministic generator (xorshift64*), seeded from the clock unless `LAYERMOUNT_FAULT_SEED` is set.
struct Rng(u64);

impl Rng {
    fn new(name: &str) -> Self {
        let seed = std::env::var("LAYERMOUNT_FAULT_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1
        });
        common::say(format!("{name}: LAYERMOUNT_FAULT_SEED={seed}"));
        Rng(seed)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn kills_per_strategy() -> usize {
    std::env::var("LAYERMOUNT_KILLS").ok().and_then(|s| s.parse().ok()).unwrap_or(50)
}

fn have_strace() -> bool {
    let ok = Command::new("strace").arg("-V").stdout(Stdio::null()).status().is_ok_and(|s| s.success());
    if !ok && std::env::var("LAYERMOUNT_REQUIRE_ROOT").as_deref() == Ok("1") {
        panic!("strace is needed for fault injection (.ci/run installs it)");
    }
    ok
}

/// Everything about a tree a write through it could change: type, mode, owner, mtime, content, link target.
fn snapshot(root: &Path) -> BTreeMap<PathBuf, String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, String>) {
        let mut entries: Vec<_> = fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
        entries.sort();
        for p in entries {
            let m = fs::symlink_metadata(&p).unwrap();
            let what = if m.is_dir() {
                walk(root, &p, out);
                String::new()
            } else if m.file_type().is_symlink() {
                fs::read_link(&p).unwrap().display().to_string()
            } else {
                String::from_utf8_lossy(&fs::read(&p).unwrap()).into_owned()
            };
            let info = format!("{:o} {}:{} {}.{} {what}", m.mode(), m.uid(), m.gid(), m.mtime(), m.mtime_nsec());
            out.insert(p.strip_prefix(root).unwrap().to_path_buf(), info);
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

/// Two layers in unrelated directories and an unrelated sibling directory: their common ancestor is `scratch`.
fn layers(scratch: &Path) -> (PathBuf, PathBuf) {
    let l1 = scratch.join("A/l1");
    let l2 = scratch.join("B/l2");
    fs::create_dir_all(l1.join("d/e")).unwrap();
    fs::create_dir_all(&l2).unwrap();
    fs::create_dir_all(scratch.join("C/unrelated")).unwrap();
    fs::write(l1.join("f1"), "one").unwrap();
    fs::write(l1.join("d/e/deep"), "deep").unwrap();
    fs::write(l2.join("f2"), "two").unwrap();
    std::os::unix::fs::symlink("f2", l2.join("link")).unwrap();
    fs::write(scratch.join("C/unrelated/keep"), "sibling").unwrap();
    fs::set_permissions(l1.join("f1"), fs::Permissions::from_mode(0o640)).unwrap();
    common::chown(&l2.join("f2"), 7, 8);
    (l1, l2)
}

/// How a run is killed.
#[derive(Debug, Clone)]
enum Kill {
    /// `strace` injects SIGKILL at the `when`th call of `syscall`.
    Inject(&'static str, u64),
    /// SIGKILL after this long.
    After(Duration),
}

/// Run `layermount ARGS` with the staging directory `stage`, killed as `kill` says; the exit status.
fn run_killed(args: &[&str], stage: &Path, kill: &Kill) -> ExitStatus {
    let mut cmd = match kill {
        Kill::Inject(syscall, when) => {
            let mut c = Command::new("strace");
            c.args(["-f", "-qq", "-o", "/dev/null", "-e", &format!("inject={syscall}:signal=SIGKILL:when={when}")]);
            c.arg(bin());
            c
        }
        Kill::After(_) => Command::new(bin()),
    };
    // TMPDIR too, so that a composer that staged under the temporary directory would be caught as well.
    cmd.args(args).env(STAGING_DIR_ENV, stage).env("TMPDIR", stage).stdout(Stdio::null()).stderr(Stdio::null());
    let mut child = cmd.spawn().expect("spawn layermount");
    if let Kill::After(d) = kill {
        std::thread::sleep(*d);
        let _ = child.kill();
    }
    child.wait().unwrap()
}

fn killed(status: ExitStatus) -> bool {
    std::os::unix::process::ExitStatusExt::signal(&status) == Some(9)
}

/// Reap what the killed process left behind (reparented here, a child subreaper), waiting a little for the user
/// namespace holder to die of its parent-death signal; panic if anything is still alive after that.
fn reap_orphans() {
    let me = std::process::id();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut alive = Vec::new();
        for pid in common::children() {
            let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let state = stat.rsplit_once(") ").map(|(_, rest)| rest.chars().next().unwrap_or('?')).unwrap_or('?');
            if state == 'Z' {
                let _ = rustix::process::waitpid(Pid::from_raw(pid as i32), WaitOptions::NOHANG);
            } else if stat.contains("(layermount)") || stat.contains("(strace)") {
                alive.push(pid);
            }
        }
        if alive.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "processes of a killed composer left (parent {me}): {alive:?}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The user's `rm -rf` of the staging directory: whatever it reports, it must delete nothing in the layers.
fn user_rm_rf(stage: &Path) {
    let _ = Command::new("rm").arg("-rf").arg(stage).stderr(Stdio::null()).status().unwrap();
}

/// After a killed (or finished) compose at `target`: unmount a finished one, let a user `rm -rf` the staging
/// directory, check nothing of the layers changed, sweep with `cleanup_stale`, check the mount table is back.
/// Returns how many stale mounts `cleanup_stale` removed.
fn after_kill(
    scratch: &Path,
    stage: &Path,
    target: &Path,
    before: &MountTable,
    intact: &BTreeMap<PathBuf, String>,
) -> usize {
    reap_orphans();
    let table = MountTable::current().unwrap();
    if table.mounts().iter().any(|m| m.mount_point == target) {
        common::umount(target);
    }
    user_rm_rf(stage);
    let mut now = snapshot(scratch);
    now.retain(|p, _| !p.starts_with("stage") && !p.starts_with("mnt"));
    assert_eq!(&now, intact, "the layers or their siblings changed after a kill and `rm -rf` of the staging dir");
    let report = cleanup_stale(stage).unwrap();
    assert!(report.kept.is_empty() && report.in_use.is_empty(), "cleanup_stale left {report:?}");
    if stage.exists() {
        assert_eq!(fs::read_dir(stage).unwrap().count(), 0, "staging directory not empty after cleanup_stale");
    }
    let changes = MountTable::current().unwrap().changes_since(before);
    assert!(changes.is_empty(), "mounts left after a kill and cleanup_stale: {changes}");
    report.unmounted.len()
}

/// Run `body(scratch)` as a privileged test that spawns and kills children: one at a time, with this process their
/// subreaper (so orphans can be checked); skipped (or failed under `LAYERMOUNT_REQUIRE_ROOT=1`) without root or
/// strace.
fn kill_test(name: &'static str, body: impl FnOnce(&Path) + Send + 'static) {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    if !common::have_privilege(name) || !have_strace() {
        return;
    }
    common::privileged(name, move |scratch| {
        rustix::process::set_child_subreaper(Some(rustix::process::getpid())).unwrap();
        body(scratch)
    });
}

fn mount_args<'a>(strategy: &'a str, l1: &'a str, l2: &'a str, target: &'a str) -> Vec<&'a str> {
    vec!["mount", "--strategy", strategy, "--uidmap", "0:100000:65536", "--lower", l1, "--lower", l2, target]
}

/// Defect 1 of issue 10, the seed incident on the attached fallbacks: a kill inside the unmount window left a
/// writable idmapped clone of the layers' common ancestor in the staging directory, and `rm -rf` of it deleted the
/// layers and an unrelated sibling. Now the clone is read-only, `rm -rf` fails on it, and `cleanup_stale` removes
/// it.
#[test]
fn kill_in_the_umount_window_leaves_only_read_only_clones() {
    kill_test("kill_in_the_umount_window_leaves_only_read_only_clones", |scratch| {
        let (l1, l2) = layers(scratch);
        let intact = snapshot(scratch);
        let stage = scratch.join("stage");
        let target = scratch.join("mnt");
        fs::create_dir(&target).unwrap();
        let before = MountTable::current().unwrap();
        let (l1s, l2s, ts) = (l1.to_str().unwrap(), l2.to_str().unwrap(), target.to_str().unwrap());
        for strategy in ["fd-attached", "string", "legacy"] {
            if !common::has_strategy(
                "kill_in_the_umount_window_leaves_only_read_only_clones",
                strategy.parse().unwrap(),
            ) {
                continue;
            }
            let status = run_killed(&mount_args(strategy, l1s, l2s, ts), &stage, &Kill::Inject("umount2", 1));
            assert!(killed(status), "{strategy}: not killed in the umount window: {status}");
            reap_orphans();
            let left: Vec<_> = MountTable::current().unwrap().changes_since(&before).added;
            assert!(!left.is_empty(), "{strategy}: the kill left no staging mount (the test would show nothing)");
            for m in &left {
                assert!(m.mount_point.starts_with(&stage), "{strategy}: a mount outside the staging dir: {m:?}");
                assert!(m.mount_options.split(',').any(|o| o == "ro"), "{strategy}: a writable staging mount: {m:?}");
            }
            assert!(after_kill(scratch, &stage, &target, &before, &intact) > 0, "{strategy}: nothing swept");
        }
    });
}

/// Item 3 of issue 10: every strategy's composer killed at random syscalls and after random delays.
#[test]
fn composers_killed_at_random_points_leave_nothing_cleanup_stale_cannot_remove() {
    let name = "composers_killed_at_random_points_leave_nothing_cleanup_stale_cannot_remove";
    kill_test(name, move |scratch| {
        let mut rng = Rng::new(name);
        let (l1, l2) = layers(scratch);
        let intact = snapshot(scratch);
        let stage = scratch.join("stage");
        let target = scratch.join("mnt");
        fs::create_dir(&target).unwrap();
        let before = MountTable::current().unwrap();
        let (l1s, l2s, ts) = (l1.to_str().unwrap(), l2.to_str().unwrap(), target.to_str().unwrap());
        let features = layermount::Features::get();
        let mut summary = Vec::new();
        for strategy in STRATEGIES {
            if strategy.parse::<layermount::Strategy>().unwrap() > features.strategy() {
                common::say(format!("{name}: skipping {strategy}: the kernel lacks it"));
                continue;
            }
            let args = mount_args(strategy, l1s, l2s, ts);
            let (mut kills, mut runs, mut swept) = (0, 0, 0);
            let mut slowest = Duration::ZERO;
            while kills < kills_per_strategy() {
                runs += 1;
                assert!(runs < 20 * kills_per_strategy(), "{strategy}: too few runs were killed ({kills} of {runs})");
                let kill = if rng.below(3) > 0 {
                    let (syscall, calls) = KILL_AT[rng.below(KILL_AT.len() as u64) as usize];
                    Kill::Inject(syscall, 1 + rng.below(calls))
                } else {
                    // Up to a little over what a whole run takes here.
                    Kill::After(Duration::from_micros(rng.below(slowest.as_micros().max(3000) as u64 + 1)))
                };
                let started = Instant::now();
                let status = run_killed(&args, &stage, &kill);
                if matches!(kill, Kill::Inject(..)) {
                    slowest = slowest.max(started.elapsed() / 4);
                }
                if killed(status) {
                    kills += 1;
                } else {
                    assert!(status.success(), "{strategy}: {kill:?}: the compose failed: {status}");
                }
                swept += after_kill(scratch, &stage, &target, &before, &intact);
            }
            summary.push(format!("{strategy}: {kills} kills in {runs} runs, {swept} stale mounts swept"));
        }
        common::say(format!("{name}: {}", summary.join("; ")));
    });
}

/// `layermount rm` killed at random points: a rerun finishes, and nothing beside the path was touched (a sibling
/// that symlinks in the tree point to stays).
#[test]
fn rm_killed_at_random_points_finishes_on_rerun() {
    let name = "rm_killed_at_random_points_finishes_on_rerun";
    kill_test(name, move |scratch| {
        let mut rng = Rng::new(name);
        let sibling = scratch.join("sibling");
        fs::create_dir(&sibling).unwrap();
        fs::write(sibling.join("keep"), "keep").unwrap();
        let intact = snapshot(scratch);
        let victim = scratch.join("victim");
        let mut kills = 0;
        let mut runs = 0;
        while kills < kills_per_strategy() {
            runs += 1;
            assert!(runs < 20 * kills_per_strategy(), "too few rm runs were killed ({kills} of {runs})");
            for i in 0..20 {
                let d = victim.join(format!("d{i}/e/f"));
                fs::create_dir_all(&d).unwrap();
                fs::write(d.join("x"), "x").unwrap();
                std::os::unix::fs::symlink(&sibling, victim.join(format!("d{i}/to-sibling"))).unwrap();
            }
            let syscall = ["unlinkat", "openat", "getdents64", "newfstatat", "statx"][rng.below(5) as usize];
            let kill = Kill::Inject(syscall, 1 + rng.below(60));
            let status = run_killed(&["rm", victim.to_str().unwrap()], scratch, &kill);
            kills += usize::from(killed(status));
            reap_orphans();
            let rerun = Command::new(bin()).arg("rm").arg(&victim).output().unwrap();
            let msg = String::from_utf8_lossy(&rerun.stderr);
            assert!(rerun.status.success() || msg.contains("No such file"), "rerun after {kill:?}: {msg}");
            assert!(!victim.exists(), "rerun after {kill:?} left {}", victim.display());
            assert_eq!(snapshot(scratch), intact, "rm touched something beside its path after {kill:?}");
        }
        common::say(format!("{name}: {kills} kills in {runs} runs"));
    });
}

/// `cleanup_stale` (and `layermount cleanup`) only detach-unmounts and `rmdir`s, only in directories of dead
/// processes: a live process's directory, a directory holding files and a stray file are kept and reported.
#[test]
fn cleanup_stale_only_detaches_and_rmdirs_what_dead_composers_left() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    common::privileged("cleanup_stale_only_detaches_and_rmdirs_what_dead_composers_left", |scratch| {
        let data = scratch.join("data");
        fs::create_dir(&data).unwrap();
        fs::write(data.join("precious"), "p").unwrap();
        let stage = scratch.join("stage");
        fs::create_dir(&stage).unwrap();
        // i32::MAX is above any pid_max, so that process is surely gone.
        let dead = stage.join(format!("{}-0", i32::MAX));
        let live = stage.join(format!("{}-3", std::process::id()));
        for d in [dead.join("0"), dead.join("1"), live.join("0")] {
            fs::create_dir_all(d).unwrap();
        }
        fs::write(dead.join("1/file"), "f").unwrap();
        fs::write(stage.join("stray"), "s").unwrap();
        common::bind(&data, &dead.join("0"));
        common::bind(&data, &live.join("0"));

        let o = Command::new(bin()).arg("cleanup").arg(&stage).output().unwrap();
        let (out, err) = (String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
        assert_eq!(o.status.code(), Some(1), "kept entries exit 1: {out}{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(out.contains(&format!("unmounted {}\n", dead.join("0").display())), "{out}");
        assert!(out.contains(&format!("in-use {}\n", live.display())), "{out}");
        assert!(!dead.join("0").exists(), "the stale mount point is removed");
        assert_eq!(fs::read_to_string(dead.join("1/file")).unwrap(), "f", "a file is never deleted");
        assert_eq!(fs::read_to_string(stage.join("stray")).unwrap(), "s");
        assert_eq!(fs::read_to_string(live.join("0/precious")).unwrap(), "p", "a live process's mount stays");
        assert_eq!(fs::read_to_string(data.join("precious")).unwrap(), "p");

        // The library call agrees, and a second sweep has nothing more to unmount.
        let report = cleanup_stale(&stage).unwrap();
        assert!(report.unmounted.is_empty(), "{report:?}");
        assert_eq!(report.in_use, std::slice::from_ref(&live));
        let kept: Vec<&Path> = report.kept.iter().map(|(p, _)| p.as_path()).collect();
        assert_eq!(kept, [dead.join("1").as_path(), dead.as_path(), stage.join("stray").as_path()]);

        common::umount(&live.join("0"));
        assert!(cleanup_stale(scratch.join("missing")).unwrap() == layermount::StaleCleanup::default());
    });
}

/// A staging directory others can enter, or a symlink, is refused before anything is mounted.
#[test]
fn a_staging_directory_others_can_enter_is_refused() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    common::privileged("a_staging_directory_others_can_enter_is_refused", |scratch| {
        let (l1, l2) = layers(scratch);
        let open = scratch.join("open");
        fs::create_dir(&open).unwrap();
        fs::set_permissions(&open, fs::Permissions::from_mode(0o755)).unwrap();
        let private = scratch.join("private");
        fs::create_dir(&private).unwrap();
        fs::set_permissions(&private, fs::Permissions::from_mode(0o700)).unwrap();
        let link = scratch.join("link");
        std::os::unix::fs::symlink(&private, &link).unwrap();
        let map: layermount::IdMap = "0:100000:65536".parse().unwrap();
        let ns = layermount::UserNamespace::cached(&map, &map).unwrap();
        for bad in [&open, &link] {
            let before = MountTable::current().unwrap();
            let err = layermount::Overlay::new()
                .lower(&l1)
                .lower(&l2)
                .idmap(ns.clone())
                .strategy(layermount::Strategy::Legacy)
                .staging_dir(bad)
                .mount()
                .unwrap_err();
            assert_eq!(err.kind(), layermount::ErrorKind::InvalidInput, "{}: {err}", bad.display());
            assert_eq!(err.path(), Some(bad.as_path()), "{err}");
            assert!(MountTable::current().unwrap().changes_since(&before).is_empty());
            assert_eq!(fs::read_dir(&private).unwrap().count(), 0);
            assert_eq!(fs::read_dir(&open).unwrap().count(), 0);
        }
    });
}
