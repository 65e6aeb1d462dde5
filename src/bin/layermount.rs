//! `layermount`: the command-line face of the library.
//!
//! Exit codes: 0 success, 1 the operation failed (one line on stderr: operation, path, cause), 2 usage error.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

#[path = "layermount/demo.rs"]
mod demo;

use clap::{CommandFactory, Parser, Subcommand};
use layermount::{
    ApplyOptions, Composition, DEFAULT_STAGING_DIR, Features, Fixup, Fixups, IdMap, MountGuard, MountSpec, Overlay,
    Progress, STAGING_DIR_ENV, StackCache, StackLimits, StackOptions, Strategy, SyncMode, UserNamespace, WhiteoutMode,
    apply, audit, cleanup_stale, recover, remove_all, verify,
};

#[derive(Parser, Debug)]
#[command(name = "layermount", version, about = "Turn container image layers into mounted root filesystems, safely")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Print what the running kernel supports (each feature yes/no) and the kernel version.
    Probe {
        /// Print one JSON object instead of lines.
        #[arg(long)]
        json: bool,
    },
    /// Mount SOURCE on TARGET like mount(8), with containerd's options (uidmap=/gidmap= included). The mount
    /// stays after this command exits; remove it with `layermount umount TARGET`.
    Mount {
        /// Filesystem type (overlay, bind, tmpfs, ...); overlay when --lower is given.
        #[arg(short = 't', long = "type")]
        kind: Option<String>,
        /// Comma-separated options (repeatable), e.g. -o lowerdir=/l2:/l1,upperdir=/u,workdir=/w,nodev.
        #[arg(short = 'o', long = "options")]
        options: Vec<OsString>,
        /// An overlay lower layer (repeatable, top-most first).
        #[arg(long = "lower", value_name = "DIR")]
        lowers: Vec<PathBuf>,
        /// The overlay upper directory (needs --work).
        #[arg(long, value_name = "DIR", requires = "work")]
        upper: Option<PathBuf>,
        /// The overlay work directory (needs --upper).
        #[arg(long, value_name = "DIR", requires = "upper")]
        work: Option<PathBuf>,
        /// Idmap with this uid map, container:host:size[,...] (the layers, for overlay).
        #[arg(long, value_name = "MAP", value_parser = parse_map)]
        uidmap: Option<IdMap>,
        /// The gid map (default: the same as --uidmap).
        #[arg(long, value_name = "MAP", value_parser = parse_map, requires = "uidmap")]
        gidmap: Option<IdMap>,
        /// How overlay layers reach the kernel: auto (the best this kernel has), fd, fd-attached, string, legacy.
        #[arg(long, default_value = "auto", value_parser = parse_strategy)]
        strategy: StrategyArg,
        /// Make TARGET (and its missing parents) if it does not exist, with MODE (octal, default 0755), as
        /// mount(8)'s --mkdir; the same as -o X-mount.mkdir[=MODE]. Without it a missing TARGET is an error.
        #[arg(short = 'm', long = "mkdir", value_name = "MODE", num_args = 0..=1, require_equals = true)]
        mkdir: Option<Option<String>>,
        /// Compose via an image stack: the --lower layers become one read-only (idmapped) overlay, the single
        /// lower of the container's overlay; the stack lives as long as the mount. Needs --lower and --upper; -o is
        /// not taken. Layers on an overlay cannot be stacked: then it composes flat and says so on stderr.
        #[arg(long, requires_all = ["lowers", "upper"], conflicts_with = "options")]
        stack: bool,
        /// [SOURCE] TARGET (SOURCE defaults to the type's name).
        #[arg(num_args = 1..=2, required = true, value_name = "SOURCE TARGET")]
        paths: Vec<OsString>,
    },
    /// Detach-unmount the mount at TARGET (exits 1 if TARGET is not a mount point).
    Umount {
        /// The mount point (or give --record).
        #[arg(required_unless_present = "record", conflicts_with = "record")]
        target: Option<PathBuf>,
        /// Unmount the mount a record file describes (written by a program with `MountRecord::encode`), after
        /// checking it is still that very mount; the mount point is removed too if the crate made it.
        #[arg(long, value_name = "FILE")]
        record: Option<PathBuf>,
    },
    /// Apply an OCI layer (tar, tar+gzip or tar+zstd, from FILE or - for stdin) into the new directory DIR and
    /// commit it; prints the diff_id. DIR must not exist; it appears only when complete. When stderr is a terminal,
    /// progress (bytes read, entries) is shown on one line there while it runs, and erased at the end.
    Apply {
        /// Expected diff_id (sha256 of the uncompressed tar); a mismatch commits nothing.
        #[arg(long, value_name = "sha256:HEX")]
        digest: Option<String>,
        /// Whiteout format: overlay (trusted.overlay.*), userxattr (user.overlay.*), oci (keep .wh. files).
        #[arg(long, default_value = "overlay", value_parser = ["overlay", "userxattr", "oci"])]
        whiteouts: String,
        /// Durability before publishing.
        #[arg(long, default_value = "syncfs", value_parser = ["syncfs", "fsync", "none"])]
        sync: String,
        /// A lower layer this one goes on (repeatable, top-most first).
        #[arg(long = "parent", value_name = "DIR")]
        parents: Vec<PathBuf>,
        /// The layer blob, or - for standard input.
        file: String,
        /// The layer directory to create.
        dir: PathBuf,
    },
    /// Check a committed layer against the content digest recorded when it was committed.
    Verify {
        /// The layer directory.
        dir: PathBuf,
    },
    /// Remove what a crash left in a layer store (staging directories, temporary markers) and list layers that are
    /// not committed. Exits 1 if any layer is incomplete.
    Recover {
        /// The directory holding layer directories.
        store: PathBuf,
    },
    /// Fix up a container root: /etc/mtab -> ../proc/self/mounts, and the mount targets a runtime needs (/proc,
    /// /sys, /dev, /dev/pts, /dev/shm, /tmp, /etc/resolv.conf, /etc/hosts, /etc/hostname), every path resolved
    /// inside ROOTFS. Prints each change with what was there before, and each problem left alone (then exits 1).
    Fixup {
        /// Only report what would change.
        #[arg(long)]
        dry_run: bool,
        /// Replace an /etc/mtab symlink that points somewhere other than the mount table.
        #[arg(long)]
        force: bool,
        /// Run only this fixup (repeatable): mtab, mount-targets.
        #[arg(long = "only", value_name = "NAME", value_parser = parse_fixup)]
        only: Vec<Fixup>,
        /// The container's uid map, container:host:size[,...]: what is created is owned by its root.
        #[arg(long, value_name = "MAP", value_parser = parse_map)]
        uidmap: Option<IdMap>,
        /// The gid map (default: the same as --uidmap).
        #[arg(long, value_name = "MAP", value_parser = parse_map, requires = "uidmap")]
        gidmap: Option<IdMap>,
        /// The container's root directory (best: the mounted overlay, so changes land in its upper layer).
        rootfs: PathBuf,
    },
    /// Check layer directories, read-only, for stray opaque directories, overlay xattrs of the wrong namespace and
    /// whiteouts overlay ignores; one finding a line. Exits 1 when something is found.
    Audit {
        /// Layer directories.
        #[arg(required = true)]
        layers: Vec<PathBuf>,
    },
    /// The whole job, as root, in a private mount namespace and a temp directory: build a 3-layer image in memory,
    /// apply it, compose an idmapped overlay, fix it up, run a process as the container's root in a user namespace,
    /// show owners inside and on the host, tear down and prove nothing is left. Needs util-linux (unshare, nsenter).
    Demo,
    /// The demo's part in its private mount namespace (internal).
    #[command(hide = true)]
    DemoHost,
    /// The demo's container process (internal).
    #[command(hide = true)]
    DemoContainer {
        /// The container's root.
        rootfs: PathBuf,
    },
    /// Sweep what killed `mount` commands (or other composers) left in the staging directory of the fallback
    /// strategies: detach-unmount the temporary mounts of dead processes and rmdir their directories, nothing else.
    /// Prints `unmounted P`, `removed P`, `in-use P` (a live process's) and `kept P: why` lines; exits 1 if anything
    /// was kept. Run it at boot or before a daemon starts composing.
    Cleanup {
        /// The staging directory (default: $LAYERMOUNT_STAGING_DIR, else /run/layermount).
        dir: Option<PathBuf>,
    },
    /// Remove PATH recursively without crossing a mount or following a symlink; exits 1 naming the mount point
    /// if one is in the way (and then deletes nothing beneath it).
    Rm {
        /// The file or directory to remove.
        path: PathBuf,
    },
}

#[derive(Debug, Clone, Copy)]
struct StrategyArg(Option<Strategy>);

fn parse_strategy(s: &str) -> Result<StrategyArg, String> {
    if s == "auto" {
        return Ok(StrategyArg(None));
    }
    s.parse()
        .map(|l| StrategyArg(Some(l)))
        .map_err(|_| format!("\"{s}\" is not one of auto, fd, fd-attached, string, legacy"))
}

fn parse_fixup(s: &str) -> Result<Fixup, String> {
    s.parse().map_err(|e: layermount::Error| e.to_string())
}

fn parse_map(s: &str) -> Result<IdMap, String> {
    s.parse().map_err(|e: layermount::Error| e.to_string())
}

fn usage_error(msg: String) -> ! {
    Cli::command().error(clap::error::ErrorKind::ArgumentConflict, msg).exit()
}

struct MountArgs {
    kind: Option<String>,
    options: Vec<OsString>,
    lowers: Vec<PathBuf>,
    upper: Option<PathBuf>,
    work: Option<PathBuf>,
    uidmap: Option<IdMap>,
    gidmap: Option<IdMap>,
    strategy: StrategyArg,
    mkdir: Option<Option<String>>,
    stack: bool,
    paths: Vec<OsString>,
}

fn mount(a: MountArgs) -> layermount::Result<()> {
    let overlay_flags = !a.lowers.is_empty() || a.upper.is_some();
    let kind = match (a.kind.clone(), overlay_flags) {
        (Some(k), true) if k != "overlay" => usage_error(format!("--lower/--upper/--work need -t overlay, not -t {k}")),
        (Some(k), _) => k,
        (None, true) => "overlay".to_string(),
        (None, false) => usage_error("-t TYPE is required (or --lower for an overlay)".to_string()),
    };
    let (source, target) = match &a.paths[..] {
        [target] => (OsString::from(&kind), target.clone()),
        [source, target] => (source.clone(), target.clone()),
        _ => usage_error("expected [SOURCE] TARGET".to_string()),
    };
    if a.stack {
        return mount_stacked(&a, target.into());
    }
    let mut spec = MountSpec::new(kind, source, target);
    for o in &a.options {
        spec = spec.with_options(o);
    }
    if overlay_flags {
        // The layers' own options, written by the library's one encoder (paths are bytes, escaped).
        let mut overlay = Overlay::new().lowers(&a.lowers);
        if let (Some(u), Some(w)) = (&a.upper, &a.work) {
            overlay = overlay.upper(u, w);
        }
        spec.options.extend(overlay.to_spec()?.options);
    }
    match &a.mkdir {
        None => {}
        Some(None) => spec.options.push("X-mount.mkdir".into()),
        Some(Some(mode)) => spec.options.push(format!("X-mount.mkdir={mode}").into()),
    }
    if let Some(uid) = &a.uidmap {
        spec.set_idmap(uid, a.gidmap.as_ref().unwrap_or(uid));
    }
    let guard = spec.mount_with_strategy(a.strategy.0)?;
    guard.leak();
    Ok(())
}

/// `mount --stack`: the layers as one image stack under the container's overlay. The stack is dropped when this
/// returns; the overlay keeps its own reference to it in the kernel, so it lives as long as the mount.
fn mount_stacked(a: &MountArgs, target: PathBuf) -> layermount::Result<()> {
    if a.kind.as_deref().is_some_and(|k| k != "overlay") {
        usage_error("--stack makes an overlay".to_string());
    }
    if !target.is_dir() {
        match &a.mkdir {
            None => {
                return Err(layermount::Error::from_io("mount", &target, &std::io::Error::from_raw_os_error(2)));
            }
            Some(mode) => {
                let mode = u32::from_str_radix(mode.as_deref().unwrap_or("755"), 8)
                    .unwrap_or_else(|_| usage_error(format!("--mkdir: {mode:?} is not an octal mode")));
                std::os::unix::fs::DirBuilderExt::mode(std::fs::DirBuilder::new().recursive(true), mode)
                    .create(&target)
                    .map_err(|e| layermount::Error::from_io("mount: mkdir", &target, &e))?;
            }
        }
    }
    let ns = match &a.uidmap {
        Some(uid) => Some(UserNamespace::cached(uid, a.gidmap.as_ref().unwrap_or(uid))?),
        None => None,
    };
    let cache = StackCache::new(StackLimits::default(), StackOptions { strategy: a.strategy.0, ..Default::default() });
    let (overlay, how) = cache.compose(&a.lowers, ns.as_ref())?;
    if let Composition::Flat(why) = &how {
        eprintln!("layermount: composed flat, not stacked: {why}");
    }
    let (Some(upper), Some(work)) = (&a.upper, &a.work) else { usage_error("--stack needs --upper".to_string()) };
    let mut overlay = overlay.upper(upper, work);
    if let Some(s) = a.strategy.0 {
        overlay = overlay.strategy(s);
    }
    overlay.mount_at(&target)?.leak();
    Ok(())
}

fn apply_layer(
    digest: Option<String>,
    whiteouts: &str,
    sync: &str,
    parents: Vec<PathBuf>,
    file: &str,
    dir: &std::path::Path,
) -> layermount::Result<()> {
    let mut opts = ApplyOptions::new()
        .whiteouts(match whiteouts {
            "userxattr" => WhiteoutMode::OverlayUserXattr,
            "oci" => WhiteoutMode::Oci,
            _ => WhiteoutMode::Overlay,
        })
        .sync(match sync {
            "fsync" => SyncMode::Fsync,
            "none" => SyncMode::None,
            _ => SyncMode::Syncfs,
        });
    for p in parents {
        opts = opts.parent(p);
    }
    if let Some(d) = digest {
        opts = opts.expect_diff_id(d);
    }
    // On a terminal, one line on stderr that keeps being rewritten, erased at the end; nothing otherwise.
    let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
    if tty {
        opts = opts.progress(std::sync::Arc::new(|p: Progress| {
            let mib = p.bytes_read as f64 / (1024.0 * 1024.0);
            eprint!("\r\x1b[2Klayermount: applying: {mib:.1} MiB read, {} entries", p.entries);
        }));
    }
    let result = if file == "-" {
        apply(std::io::stdin(), dir, &opts)
    } else {
        match std::fs::File::open(file) {
            Ok(f) => apply(f, dir, &opts),
            Err(e) => Err(layermount::Error::from_io("apply layer", file, &e)),
        }
    };
    if tty {
        eprint!("\r\x1b[2K");
    }
    let layer = result?;
    println!("{}", layer.diff_id);
    if layer.stats.skipped_xattrs > 0 {
        // Said once per layer, as umoci does; containerd logs each one.
        eprintln!(
            "layermount: warning: skipped {} xattr(s) the filesystem of {} does not support",
            layer.stats.skipped_xattrs,
            dir.display()
        );
    }
    Ok(())
}

fn recover_store(store: &std::path::Path) -> layermount::Result<bool> {
    let report = recover(store)?;
    for p in &report.removed {
        println!("removed {}", p.display());
    }
    for (p, why) in &report.incomplete {
        println!("incomplete {}: {why}", p.display());
    }
    Ok(report.incomplete.is_empty())
}

struct FixupArgs {
    dry_run: bool,
    force: bool,
    only: Vec<Fixup>,
    uidmap: Option<IdMap>,
    gidmap: Option<IdMap>,
    rootfs: PathBuf,
}

/// Ok(false) when a problem was left alone.
fn fixup(a: FixupArgs) -> layermount::Result<bool> {
    let mut fixups = Fixups::new().dry_run(a.dry_run).force_mtab(a.force);
    if !a.only.is_empty() {
        fixups = fixups.only(&a.only);
    }
    if let Some(uid) = &a.uidmap {
        fixups = fixups.idmap(uid, a.gidmap.as_ref().unwrap_or(uid));
    }
    let report = fixups.apply(&a.rootfs)?;
    let verb = if report.dry_run { "would change" } else { "changed" };
    for c in &report.changes {
        println!("{verb} {c}");
    }
    for p in &report.problems {
        println!("left alone {p}");
    }
    Ok(report.problems.is_empty())
}

/// Ok(false) when something was found.
fn audit_layers(layers: &[PathBuf]) -> layermount::Result<bool> {
    let findings = audit(layers)?;
    for f in &findings {
        println!("{f}");
    }
    Ok(findings.is_empty())
}

/// Sweep the staging directory; false when something was kept (said on stderr, one line).
fn cleanup(dir: Option<PathBuf>) -> layermount::Result<bool> {
    let dir = dir
        .or_else(|| std::env::var_os(STAGING_DIR_ENV).filter(|v| !v.is_empty()).map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_STAGING_DIR));
    let report = cleanup_stale(&dir)?;
    for p in &report.unmounted {
        println!("unmounted {}", p.display());
    }
    for p in &report.removed {
        println!("removed {}", p.display());
    }
    for p in &report.in_use {
        println!("in-use {}", p.display());
    }
    for (p, why) in &report.kept {
        println!("kept {}: {why}", p.display());
    }
    if !report.kept.is_empty() {
        eprintln!("layermount: clean up staging directory {}: {} entries kept", dir.display(), report.kept.len());
    }
    Ok(report.kept.is_empty())
}

fn umount(target: Option<&std::path::Path>, record: Option<&std::path::Path>) -> layermount::Result<()> {
    match (target, record) {
        (Some(target), _) => MountGuard::adopt(target)?.unmount(),
        (None, Some(file)) => {
            let bytes = std::fs::read(file).map_err(|e| layermount::Error::from_io("read mount record", file, &e))?;
            MountGuard::adopt_record(&layermount::MountRecord::decode(&bytes)?)?.unmount()
        }
        (None, None) => usage_error("expected TARGET or --record FILE".to_string()),
    }
}

fn json_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn probe(json: bool) {
    let f = Features::get();
    if json {
        let fields: Vec<String> = f.list().iter().map(|(name, yes)| format!("\"{name}\":{yes}")).collect();
        println!(
            "{{\"kernel\":{},\"features\":{{{}}},\"strategy\":\"{}\"}}",
            json_string(&f.kernel_release),
            fields.join(","),
            f.strategy()
        );
    } else {
        println!("kernel: {}", f.kernel_release);
        for (name, yes) in f.list() {
            println!("{name}: {}", if yes { "yes" } else { "no" });
        }
        println!("strategy: {}", f.strategy());
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Probe { json } => {
            probe(json);
            Ok(())
        }
        Command::Rm { path } => remove_all(&path).map(drop),
        Command::Cleanup { dir } => match cleanup(dir) {
            Ok(true) => Ok(()),
            Ok(false) => return ExitCode::from(1),
            Err(e) => Err(e),
        },
        Command::Mount { kind, options, lowers, upper, work, uidmap, gidmap, strategy, mkdir, stack, paths } => {
            mount(MountArgs { kind, options, lowers, upper, work, uidmap, gidmap, strategy, mkdir, stack, paths })
        }
        Command::Umount { target, record } => umount(target.as_deref(), record.as_deref()),
        Command::Apply { digest, whiteouts, sync, parents, file, dir } => {
            apply_layer(digest, &whiteouts, &sync, parents, &file, &dir)
        }
        Command::Verify { dir } => verify(&dir).map(|l| println!("ok {}", l.diff_id)),
        Command::Fixup { dry_run, force, only, uidmap, gidmap, rootfs } => {
            match fixup(FixupArgs { dry_run, force, only, uidmap, gidmap, rootfs }) {
                Ok(true) => Ok(()),
                Ok(false) => return ExitCode::from(1),
                Err(e) => Err(e),
            }
        }
        Command::Audit { layers } => match audit_layers(&layers) {
            Ok(true) => Ok(()),
            Ok(false) => return ExitCode::from(1),
            Err(e) => Err(e),
        },
        Command::Demo => return demo::exit(demo::outer()),
        Command::DemoHost => return demo::exit(demo::host()),
        Command::DemoContainer { rootfs } => return demo::exit(demo::container(&rootfs)),
        Command::Recover { store } => match recover_store(&store) {
            Ok(true) => Ok(()),
            Ok(false) => return ExitCode::from(1),
            Err(e) => Err(e),
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("layermount: {e}");
            ExitCode::from(1)
        }
    }
}
