//! `layermount demo`: the whole job as a container host does it, and as the container sees it.
//!
//! Three processes, so that no `unsafe` is needed and nothing outlives the demo:
//! 1. `demo` (outer): checks privilege, becomes a child subreaper, records the host's mount table and runs (2) under
//!    util-linux's `unshare --mount --propagation private`; afterwards proves the host's mount table is as before
//!    and that no process of the demo is left.
//! 2. `demo-host` (hidden; in a private mount namespace): builds and applies the image, composes the idmapped
//!    overlay, runs the fixups, starts (3), shows where its writes landed, tears down and checks its own mount table.
//! 3. `demo-container` (hidden): started through `nsenter --user=<our user namespace> --setuid 0 --setgid 0` and
//!    `unshare --mount --pid --fork`, so it is the container's root inside a user namespace with the demo's map,
//!    pid 1 of its own pid namespace; it mounts `/proc`, enters the root and works there as a container would.

use std::fs;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use layermount::{
    ApplyOptions, Error, Features, Fixups, IdMap, MountTable, Overlay, SyncMode, UserNamespace, apply, remove_all,
};

type Res<T> = Result<T, Box<dyn std::error::Error>>;

const MAP: &str = "0:100000:65536";

/// Prints each step with the time it took.
struct Steps {
    start: Instant,
    last: Instant,
}

impl Steps {
    fn new() -> Self {
        let now = Instant::now();
        Self { start: now, last: now }
    }
    fn step(&mut self, what: impl std::fmt::Display) {
        let now = Instant::now();
        println!("[{:>8.1} ms] {what}", (now - self.last).as_secs_f64() * 1e3);
        let _ = std::io::stdout().flush();
        self.last = now;
    }
    fn total(&self) -> f64 {
        self.start.elapsed().as_secs_f64() * 1e3
    }
}

fn fail(what: &str, e: impl std::fmt::Display) -> Box<dyn std::error::Error> {
    format!("{what}: {e}").into()
}

/// A failure a child process already reported in its own one line.
#[derive(Debug)]
struct Reported;

impl std::fmt::Display for Reported {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("failed (reported above)")
    }
}

impl std::error::Error for Reported {}

/// Run a child that prints its own one-line error when it fails.
fn run_status(cmd: &mut Command, what: &str) -> Res<()> {
    let status = cmd.status().map_err(|e| {
        let program = cmd.get_program().to_string_lossy().into_owned();
        if e.kind() == std::io::ErrorKind::NotFound {
            fail(what, format!("{program} not found (the demo needs util-linux's unshare and nsenter)"))
        } else {
            fail(what, format!("{program}: {e}"))
        }
    })?;
    match status.code() {
        Some(0) => {}
        Some(1) => return Err(Box::new(Reported)),
        _ => return Err(fail(what, format!("exited with {status}"))),
    }
    Ok(())
}

/// Children of this process (every thread's).
fn children() -> Vec<String> {
    let mut out = Vec::new();
    for task in fs::read_dir("/proc/self/task").into_iter().flatten().flatten() {
        if let Ok(text) = fs::read_to_string(task.path().join("children")) {
            out.extend(text.split_whitespace().map(str::to_string));
        }
    }
    out
}

/// The exit code for a demo step: 1 with one line on stderr when it failed.
pub fn exit(done: Res<()>) -> std::process::ExitCode {
    match done {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            if !e.is::<Reported>() {
                eprintln!("layermount: {e}");
            }
            std::process::ExitCode::from(1)
        }
    }
}

/// `layermount demo`.
pub fn outer() -> Res<()> {
    if !caps::has_cap(None, caps::CapSet::Effective, caps::Capability::CAP_SYS_ADMIN).unwrap_or(false) {
        return Err("demo: needs root (CAP_SYS_ADMIN) to make mounts and user namespaces; run it with sudo".into());
    }
    // Every process the demo starts, however deep, is reparented to us if its parent dies: so "no child left" below
    // covers them all.
    rustix::process::set_child_subreaper(Some(rustix::process::getpid())).map_err(|e| fail("demo: subreaper", e))?;
    let before = MountTable::current()?;
    let exe = std::env::current_exe().map_err(|e| fail("demo: own executable", e))?;
    run_status(
        Command::new("unshare").args(["--mount", "--propagation", "private", "--"]).arg(&exe).arg("demo-host"),
        "demo: private mount namespace",
    )?;
    let changes = MountTable::current()?.changes_since(&before);
    if !changes.is_empty() {
        return Err(fail("demo: host mount table changed", changes));
    }
    let left = children();
    if !left.is_empty() {
        return Err(fail("demo: processes left behind", left.join(" ")));
    }
    println!("host: mount table as before ({} mounts); no process of the demo left", before.mounts().len());
    Ok(())
}

/// The 3-layer image, bottom first: tar streams built in memory.
fn image() -> Res<Vec<(&'static str, Vec<u8>)>> {
    fn tar(entries: &[(&str, Option<&str>, u32, u32)]) -> Res<Vec<u8>> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, data, mode, uid) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_uid((*uid).into());
            h.set_gid((*uid).into());
            h.set_mode(*mode);
            h.set_mtime(1_700_000_000);
            match data {
                None => {
                    h.set_entry_type(tar::EntryType::Directory);
                    h.set_size(0);
                    b.append_data(&mut h, name, std::io::empty())?;
                }
                Some(d) => {
                    h.set_entry_type(tar::EntryType::Regular);
                    h.set_size(d.len() as u64);
                    b.append_data(&mut h, name, d.as_bytes())?;
                }
            }
        }
        Ok(b.into_inner()?)
    }
    Ok(vec![
        (
            "1-base (an old-style regular /etc/mtab)",
            tar(&[
                ("etc/", None, 0o755, 0),
                ("etc/passwd", Some("root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000::/home/user:/bin/sh\n"), 0o644, 0),
                ("etc/group", Some("root:x:0:\nuser:x:1000:\n"), 0o644, 0),
                ("etc/mtab", Some("/dev/sda1 / ext4 rw,relatime 0 0\nproc /proc proc rw 0 0\n"), 0o644, 0),
                ("etc/legacy.conf", Some("old=1\n"), 0o644, 0),
                ("root/", None, 0o700, 0),
                ("home/", None, 0o755, 0),
                ("home/user/", None, 0o755, 1000),
                ("home/user/notes.txt", Some("from the base layer\n"), 0o644, 1000),
                ("opt/", None, 0o755, 0),
                ("opt/app/", None, 0o755, 0),
                ("opt/app/v1.bin", Some("old build\n"), 0o644, 0),
            ])?,
        ),
        (
            "2-app (an opaque /opt/app)",
            tar(&[
                ("opt/app/", None, 0o755, 0),
                ("opt/app/.wh..wh..opq", Some(""), 0o644, 0),
                ("opt/app/v2.bin", Some("new build\n"), 0o755, 0),
            ])?,
        ),
        (
            "3-config (a whiteout of /etc/legacy.conf)",
            tar(&[("etc/.wh.legacy.conf", Some(""), 0o644, 0), ("etc/hostname", Some("demo\n"), 0o644, 0)])?,
        ),
    ])
}

fn owner(p: &Path) -> String {
    match fs::symlink_metadata(p) {
        Ok(m) => format!("{}:{}", m.uid(), m.gid()),
        Err(e) => format!("({e})"),
    }
}

/// `layermount demo-host`: runs in the private mount namespace `unshare` made.
pub fn host() -> Res<()> {
    let mut steps = Steps::new();
    let before = MountTable::current()?;
    let base = std::env::temp_dir().join(format!("layermount-demo-{}", std::process::id()));
    fs::create_dir(&base).map_err(|e| Error::from_io("demo: make work directory", &base, &e))?;
    // The container's root (host uid 100000) must reach the demo's own copy of this program below.
    fs::set_permissions(&base, fs::Permissions::from_mode(0o755))?;
    steps.step(format!(
        "private mount namespace; kernel {} (overlay strategy {}); working in {}",
        Features::get().kernel_release,
        Features::get().strategy(),
        base.display()
    ));
    let result = job(&base, &mut steps);
    let removed = remove_all(&base);
    result?;
    let removed = removed?;
    steps.step(format!(
        "removed {} ({} directories, {} files) with remove_all, which never crosses a mount",
        base.display(),
        removed.dirs,
        removed.others
    ));
    let changes = MountTable::current()?.changes_since(&before);
    if !changes.is_empty() {
        return Err(fail("demo: mounts left in the demo's namespace", changes));
    }
    let left = children();
    if !left.is_empty() {
        return Err(fail("demo: processes left behind", left.join(" ")));
    }
    steps.step(format!("mount table as before ({} mounts), no helper process left", before.mounts().len()));
    println!("done in {:.1} ms", steps.total());
    Ok(())
}

fn job(base: &Path, steps: &mut Steps) -> Res<()> {
    let store = base.join("layers");
    fs::create_dir(&store)?;
    if !layermount::idmap_supported(&store)? {
        return Err(fail(
            "demo",
            format!(
                "the filesystem of {} cannot be idmapped on this kernel; set TMPDIR to a directory on ext4, xfs or \
                 btrfs (tmpfs needs Linux 6.3)",
                base.display()
            ),
        ));
    }
    let layers = image()?;
    let sizes: Vec<String> = layers.iter().map(|(_, t)| format!("{} B", t.len())).collect();
    steps.step(format!("built a 3-layer image in memory ({})", sizes.join(", ")));

    let mut applied: Vec<PathBuf> = Vec::new();
    for (i, (what, tar)) in layers.iter().enumerate() {
        let dir = store.join((i + 1).to_string());
        let mut opts = ApplyOptions::new().sync(SyncMode::None);
        for p in applied.iter().rev() {
            opts = opts.parent(p);
        }
        let layer = apply(&tar[..], &dir, &opts)?;
        steps.step(format!("applied layer {what}: {}", &layer.diff_id[..19]));
        applied.push(dir);
    }
    let findings = layermount::audit(&applied)?;
    steps.step(format!("audited the layers: {} findings", findings.len()));
    for f in &findings {
        println!("    {f}");
    }

    let map: IdMap = MAP.parse()?;
    let ns = UserNamespace::cached(&map, &map)?;
    let (upper, work, rootfs) = (base.join("upper"), base.join("work"), base.join("rootfs"));
    fs::create_dir(&upper)?;
    fs::create_dir(&work)?;
    let guard = Overlay::new().lowers(applied.iter().rev()).upper(&upper, &work).idmap(ns.clone()).mount_at(&rootfs)?;
    steps.step(format!(
        "composed the idmapped overlay at {} (container root = host {}); upper prepared: owned {}",
        rootfs.display(),
        map.to_host(0).unwrap_or(0),
        owner(&upper)
    ));

    let report = Fixups::new().idmap(&map, &map).apply(&rootfs)?;
    steps.step(format!("fixups: {} changes, {} problems", report.changes.len(), report.problems.len()));
    for c in &report.changes {
        println!("    {c}");
    }
    for p in &report.problems {
        println!("    left alone: {p}");
    }

    // The container process: this program, copied where the container's root can read it.
    let bin = base.join("bin");
    fs::create_dir(&bin)?;
    fs::set_permissions(&bin, fs::Permissions::from_mode(0o755))?;
    let exe = bin.join("layermount");
    fs::copy(std::env::current_exe()?, &exe)?;
    fs::set_permissions(&exe, fs::Permissions::from_mode(0o755))?;
    let userns = format!("--user=/proc/{}/fd/{}", std::process::id(), ns.as_fd().as_raw_fd());
    steps.step(format!(
        "copied this program where the container's root can run it; running it as the container's root in a user \
         namespace with map {map}:"
    ));
    run_status(
        Command::new("nsenter")
            .args([&userns, "--setuid", "0", "--setgid", "0", "--", "unshare", "--mount", "--pid", "--fork"])
            .args(["--kill-child", "--"])
            .arg(&exe)
            .arg("demo-container")
            .arg(&rootfs),
        "demo: container process",
    )?;
    steps.step("the container process exited; its mount and pid namespaces are gone");

    println!("    as the host stores them (on disk):");
    for (path, what) in [
        (upper.join("root/hello.txt"), "written by the container"),
        (upper.join("etc/hostname"), "copied up when the container changed it"),
        (upper.join("etc/mtab"), "made by the fixups"),
        (applied[0].join("etc/passwd"), "in layer 1, untouched"),
        (applied[0].join("home/user/notes.txt"), "in layer 1, untouched"),
    ] {
        println!("      {:<12} {:<58} {what}", owner(&path), path.strip_prefix(base).unwrap_or(&path).display());
    }
    println!(
        "      layer 1's /etc/mtab is still {}",
        if applied[0].join("etc/mtab").is_symlink() { "a symlink" } else { "a regular file" }
    );

    guard.unmount()?;
    steps.step("unmounted the overlay");
    Ok(())
}

/// `layermount demo-container ROOTFS`: pid 1 of a new pid namespace, uid 0 of the demo's user namespace.
pub fn container(rootfs: &Path) -> Res<()> {
    use rustix::mount::MountFlags;
    rustix::mount::mount(
        "proc",
        rootfs.join("proc"),
        "proc",
        MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC,
        None,
    )
    .map_err(|e| Error::from_io("mount proc", rootfs.join("proc"), &e.into()))?;
    rustix::process::chroot(rootfs).map_err(|e| Error::from_io("chroot", rootfs, &e.into()))?;
    std::env::set_current_dir("/")?;
    let say = |s: String| println!("    container| {s}");
    say(format!(
        "uid {} gid {} pid {} (host root is not mapped here)",
        rustix::process::getuid().as_raw(),
        rustix::process::getgid().as_raw(),
        std::process::id()
    ));
    fs::write("/root/hello.txt", "hello from the container\n")?;
    fs::write("/etc/hostname", "changed-by-the-container\n")?;
    say(format!("wrote /root/hello.txt, read back {:?}", fs::read_to_string("/root/hello.txt")?.trim_end()));
    say(format!("/etc/hostname now reads {:?}", fs::read_to_string("/etc/hostname")?.trim_end()));
    say("owners as the container sees them:".to_string());
    for p in ["/", "/etc/passwd", "/home/user/notes.txt", "/root/hello.txt", "/tmp", "/etc/mtab"] {
        say(format!("  {:<10} {p}", owner(Path::new(p))));
    }
    let opt: Vec<String> = fs::read_dir("/opt/app")?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    say(format!("/opt/app holds {opt:?} (opaque in layer 2: layer 1's v1.bin is hidden)"));
    say(format!("/etc/legacy.conf exists: {} (whited out by layer 3)", Path::new("/etc/legacy.conf").exists()));
    say(format!("/etc/mtab -> {}:", fs::read_link("/etc/mtab")?.display()));
    for line in fs::read_to_string("/etc/mtab")?.lines() {
        say(format!("  {line}"));
    }
    Ok(())
}
