//! Helpers for the snapshotter's tests: the main crate's private-mount-namespace helper, a containerd + snapshotter
//! pair started in a scratch directory (own config, root, state, sockets), an image built offline, tree digests.
#![allow(dead_code)]

#[path = "../../../tests/common/mod.rs"]
mod lm;

pub mod client;
pub mod image;

use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

#[allow(unused_imports)]
pub use lm::{bind, owner, privileged, umount};
use sha2::{Digest, Sha256};

/// The snapshotter's name in containerd's config.
pub const SNAPSHOTTER: &str = "layermount";
/// The containerd namespace the tests use.
pub const NAMESPACE: &str = "lmtest";

/// True when containerd, ctr, runc and the shim are installed. Without them: with `LAYERMOUNT_REQUIRE_ROOT=1` this
/// panics (CI installs them); otherwise one line and the caller skips.
pub fn have_containerd(name: &str) -> bool {
    let missing: Vec<&str> = ["containerd", "ctr", "runc", "containerd-shim-runc-v2"]
        .into_iter()
        .filter(|t| {
            Command::new("sh").args(["-c", &format!("command -v {t}")]).output().map_or(true, |o| !o.status.success())
        })
        .collect();
    if missing.is_empty() {
        return true;
    }
    if std::env::var("LAYERMOUNT_REQUIRE_ROOT").as_deref() == Ok("1") {
        panic!("{name}: {} not installed and LAYERMOUNT_REQUIRE_ROOT=1 forbids skipping", missing.join(", "));
    }
    let _ = writeln!(std::io::stderr(), "skipping {name}: needs {}", missing.join(", "));
    false
}

fn wait_socket(path: &Path, child: &mut Child, what: &str, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return;
        }
        if let Ok(Some(st)) = child.try_wait() {
            panic!("{what} exited ({st}) before serving: {}", std::fs::read_to_string(log).unwrap_or_default());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{what} did not serve {} in 30 s: {}", path.display(), std::fs::read_to_string(log).unwrap_or_default());
}

/// SIGTERM `child`, wait up to `grace`, then SIGKILL; returns how it ended and how long it took.
pub fn stop(child: &mut Child, grace: Duration) -> (ExitStatus, Duration) {
    let t = Instant::now();
    if let Ok(Some(st)) = child.try_wait() {
        return (st, Duration::ZERO);
    }
    let pid = rustix::process::Pid::from_raw(child.id() as i32).expect("pid");
    let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
    while t.elapsed() < grace {
        if let Ok(Some(st)) = child.try_wait() {
            return (st, t.elapsed());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    (child.wait().expect("wait"), t.elapsed())
}

/// The snapshotter process alone, serving `root` on `socket`.
#[derive(Debug)]
pub struct Snapshotter {
    pub child: Child,
    pub socket: PathBuf,
    pub root: PathBuf,
    pub log: PathBuf,
}

impl Snapshotter {
    /// Start it with extra arguments and environment; wait until it serves.
    pub fn start(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Self {
        let (socket, root, log) = (dir.join("snapshotter.sock"), dir.join("snapshotter"), dir.join("snapshotter.log"));
        let logf = std::fs::OpenOptions::new().create(true).append(true).open(&log).expect("log");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_layermount-snapshotter"));
        cmd.arg("--address").arg(&socket).arg("--root").arg(&root).args(args);
        cmd.envs(env.iter().copied()).stdin(Stdio::null()).stdout(logf.try_clone().unwrap()).stderr(logf);
        let mut child = cmd.spawn().expect("start layermount-snapshotter");
        wait_socket(&socket, &mut child, "layermount-snapshotter", &log);
        Self { child, socket, root, log }
    }

    /// SIGTERM it and assert it exits 0 within 5 s.
    pub fn stop_ok(&mut self) {
        let (st, took) = stop(&mut self.child, Duration::from_secs(10));
        assert!(
            st.success(),
            "snapshotter exited with {st}: {}",
            std::fs::read_to_string(&self.log).unwrap_or_default()
        );
        assert!(took < Duration::from_secs(5), "snapshotter took {took:?} to stop");
    }

    /// The snapshot directories of the store, by id.
    pub fn snapshot_dirs(&self) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(self.root.join("snapshots"))
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        v.sort();
        v
    }
}

impl Drop for Snapshotter {
    fn drop(&mut self) {
        stop(&mut self.child, Duration::from_secs(5));
    }
}

/// A containerd started for one test, with the snapshotter as the proxy plugin `layermount`.
#[derive(Debug)]
pub struct Containerd {
    pub dir: PathBuf,
    pub address: PathBuf,
    pub snapshotter: Snapshotter,
    child: Child,
    log: PathBuf,
}

impl Containerd {
    /// Start the snapshotter (with `snap_args`) and a containerd in `dir` (made here, mode 0711: the mapped root
    /// of a container must be able to search every directory above its root).
    pub fn start(dir: &Path, snap_args: &[&str]) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o711)).unwrap();
        let snapshotter = Snapshotter::start(dir, snap_args, &[]);
        let address = dir.join("containerd.sock");
        let config = dir.join("containerd.toml");
        let d = dir.display();
        std::fs::write(
            &config,
            format!(
                r#"version = 2
root = "{d}/root"
state = "{d}/state"
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.internal.v1.tracing", "io.containerd.tracing.processor.v1.otlp"]

[grpc]
  address = "{d}/containerd.sock"

[ttrpc]
  address = "{d}/containerd.sock.ttrpc"

[debug]
  address = ""

[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/opt"

[plugins."io.containerd.gc.v1.scheduler"]
  deletion_threshold = 1
  schedule_delay = "0ms"
  startup_delay = "0ms"

[proxy_plugins]
  [proxy_plugins.{SNAPSHOTTER}]
    type = "snapshot"
    address = "{}"
"#,
                snapshotter.socket.display()
            ),
        )
        .unwrap();
        let log = dir.join("containerd.log");
        let logf = std::fs::File::create(&log).unwrap();
        let mut child = Command::new("containerd")
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(logf.try_clone().unwrap())
            .stderr(logf)
            .spawn()
            .expect("start containerd");
        wait_socket(&address, &mut child, "containerd", &log);
        Self { dir: dir.to_path_buf(), address, snapshotter, child, log }
    }

    /// Start the snapshotter and containerd in `scratch/ctd` and import the test image (built offline) into the
    /// snapshotter.
    pub fn with_test_image(scratch: &Path) -> Self {
        let image = scratch.join("image.tar");
        image::write_test_image(&image);
        let c = Self::start(&scratch.join("ctd"), &[]);
        c.ctr_ok(&["images", "import", "--snapshotter", SNAPSHOTTER, image.to_str().unwrap()]);
        c
    }

    /// Arguments of `ctr run` on the test image with this snapshotter and this containerd's runc root and fifo
    /// directory: `mode` (`--rm` or `-d`), user-namespaced (`--uidmap`/`--gidmap 0:100000:65536 --remap-labels`) or
    /// not, the container `id` and its command.
    pub fn run_args(&self, mode: &str, userns: bool, id: &str, cmd: &[&str]) -> Vec<String> {
        let mut a: Vec<String> = vec!["run".into(), mode.into(), "--snapshotter".into(), SNAPSHOTTER.into()];
        a.extend(["--runc-root".into(), self.runc_root(), "--fifo-dir".into(), self.fifo_dir()]);
        if userns {
            a.extend(["--uidmap", "0:100000:65536", "--gidmap", "0:100000:65536", "--remap-labels"].map(String::from));
        }
        a.extend([image::IMAGE, id].map(String::from));
        a.extend(cmd.iter().map(|s| s.to_string()));
        a
    }

    /// The first snapshot directory whose `fs` holds `path`.
    pub fn snapshot_with(&self, path: &str) -> Option<PathBuf> {
        self.snapshotter.snapshot_dirs().into_iter().find(|d| d.join("fs").join(path).exists())
    }

    /// A `ctr` command against this containerd, in the test namespace.
    pub fn ctr_cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new("ctr");
        c.arg("--address").arg(&self.address).arg("--namespace").arg(NAMESPACE).args(args);
        c.stdin(Stdio::null());
        c
    }

    /// Run `ctr ARGS`; its output.
    pub fn ctr(&self, args: &[&str]) -> Output {
        self.ctr_cmd(args).output().expect("run ctr")
    }

    /// Run `ctr ARGS`, panic unless it succeeds; its stdout.
    pub fn ctr_ok(&self, args: &[&str]) -> String {
        let out = self.ctr(args);
        assert!(
            out.status.success(),
            "ctr {args:?} failed ({}): {}{}\n--- snapshotter log:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(&self.snapshotter.log).unwrap_or_default()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Make containerd collect the snapshotter's snapshots again: it does so after a removal of one of them, so
    /// prepare and remove a throwaway snapshot.
    pub fn gc_kick(&self) {
        self.ctr_ok(&["snapshots", "--snapshotter", SNAPSHOTTER, "prepare", "gc-kick"]);
        self.ctr_ok(&["snapshots", "--snapshotter", SNAPSHOTTER, "rm", "gc-kick"]);
    }

    /// The runc root used for this containerd's containers (never the system's).
    pub fn runc_root(&self) -> String {
        self.dir.join("runc").display().to_string()
    }

    /// The fifo directory for `ctr run` (never the system's).
    pub fn fifo_dir(&self) -> String {
        self.dir.join("fifo").display().to_string()
    }

    /// Wait until `done()` holds, up to `secs` seconds; panic with `what` otherwise.
    pub fn wait_for(&self, secs: u64, what: &str, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while !done() {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}\n--- containerd log:\n{}",
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        text.lines().rev().take(40).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n")
    }

    /// Pids of processes that belong to this containerd: its shims (their command line names its address) and
    /// their descendants.
    pub fn shim_pids(&self) -> Vec<i32> {
        let addr = self.address.display().to_string();
        let mut shims = Vec::new();
        let mut parents: Vec<(i32, i32)> = Vec::new();
        for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else { continue };
            let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if cmdline.contains("containerd-shim") && cmdline.contains(&addr) {
                shims.push(pid);
            }
            let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
            if let Some(ppid) =
                stat.rsplit(')').next().and_then(|r| r.split_whitespace().nth(1)).and_then(|p| p.parse().ok())
            {
                parents.push((pid, ppid));
            }
        }
        let mut all = shims.clone();
        let mut i = 0;
        while i < all.len() {
            let p = all[i];
            all.extend(parents.iter().filter(|(_, pp)| *pp == p).map(|(c, _)| *c));
            i += 1;
        }
        all
    }

    /// Stop containerd (SIGTERM) and the snapshotter (SIGTERM, must exit 0 within seconds).
    pub fn stop(mut self) {
        self.teardown();
        self.snapshotter.stop_ok();
    }

    fn teardown(&mut self) {
        // Tasks left by a failed test: kill and delete them, so no shim or container process stays behind.
        if let Ok(out) = self.ctr_cmd(&["tasks", "ls", "-q"]).output() {
            for id in String::from_utf8_lossy(&out.stdout).lines().filter(|l| !l.is_empty()) {
                let _ = self.ctr_cmd(&["tasks", "kill", "-s", "SIGKILL", id]).output();
                let _ = self.ctr_cmd(&["tasks", "delete", "-f", id]).output();
            }
        }
        stop(&mut self.child, Duration::from_secs(10));
        for pid in self.shim_pids() {
            if let Some(p) = rustix::process::Pid::from_raw(pid) {
                let _ = rustix::process::kill_process(p, rustix::process::Signal::KILL);
            }
        }
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- containerd log (tail):\n{}", self.log_tail());
            eprintln!("--- snapshotter log:\n{}", std::fs::read_to_string(&self.snapshotter.log).unwrap_or_default());
        }
        self.teardown();
    }
}

/// A digest of a directory tree: every entry's path, type, mode, owner, size, content, symlink target, device
/// number and xattrs (overlay's whiteouts and opaque markers included).
pub fn tree_digest(root: &Path) -> String {
    let mut lines = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        let m = std::fs::symlink_metadata(&p).unwrap_or_else(|e| panic!("stat {}: {e}", p.display()));
        let rel = p.strip_prefix(root).unwrap().display().to_string();
        let ft = m.file_type();
        let mut line = format!("{rel} {:o} {}:{} {}", m.mode(), m.uid(), m.gid(), m.len());
        if ft.is_dir() {
            for e in std::fs::read_dir(&p).unwrap() {
                stack.push(e.unwrap().path());
            }
        } else if ft.is_symlink() {
            line += &format!(" -> {}", std::fs::read_link(&p).unwrap().display());
        } else if ft.is_file() {
            line += &format!(" {}", hex(std::fs::read(&p).unwrap()));
        } else if ft.is_char_device() || ft.is_block_device() {
            line += &format!(" dev {}", m.rdev());
        }
        let mut names = vec![0u8; 65536];
        let n = rustix::fs::llistxattr(&p, &mut names).unwrap_or(0);
        let mut names: Vec<&[u8]> = names[..n].split(|b| *b == 0).filter(|s| !s.is_empty()).collect();
        names.sort();
        for name in names {
            let mut v = vec![0u8; 65536];
            let name = std::ffi::CString::new(name).unwrap();
            let len = rustix::fs::lgetxattr(&p, name.as_c_str(), &mut v).unwrap_or(0);
            line += &format!(" {}={:?}", name.to_string_lossy(), &v[..len]);
        }
        lines.push(line);
    }
    lines.sort();
    hex(lines.join("\n"))
}

/// Mounts (mount points) at or beneath `dir` in this thread's mount namespace.
pub fn mounts_beneath(dir: &Path) -> Vec<PathBuf> {
    let table = layermount::MountTable::current().expect("mount table");
    table.mounts().iter().filter(|m| m.mount_point.starts_with(dir)).map(|m| m.mount_point.clone()).collect()
}

/// Hex sha256 of `data`.
pub fn hex(data: impl AsRef<[u8]>) -> String {
    Sha256::digest(data.as_ref()).iter().map(|b| format!("{b:02x}")).collect()
}

/// Spawn `cmd` with stdout and stderr piped (read them with [`ChildOutput::wait_with_output_ref`]).
pub fn spawn_piped(cmd: &mut Command) -> Child {
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn")
}

/// Reading what a finished child wrote, without taking it by value.
pub trait ChildOutput {
    /// Its stdout and stderr (piped), as text.
    fn wait_with_output_ref(&mut self) -> String;
}

impl ChildOutput for Child {
    fn wait_with_output_ref(&mut self) -> String {
        use std::io::Read;
        let mut text = String::new();
        if let Some(mut o) = self.stdout.take() {
            let _ = o.read_to_string(&mut text);
        }
        if let Some(mut e) = self.stderr.take() {
            let _ = e.read_to_string(&mut text);
        }
        let status = self.wait().map(|s| s.to_string()).unwrap_or_default();
        format!("{status}: {text}")
    }
}
