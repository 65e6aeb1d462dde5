//! What the fallback strategies need and the fast path never uses: temporary idmapped clones attached under a
//! private directory, and a thread with its own working directory for relative paths.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use rustix::fs::{AtFlags, CWD, FileType, Mode, OFlags, ResolveFlags, StatxAttributes, StatxFlags};
use rustix::io::Errno;
use rustix::mount::UnmountFlags;

use crate::error::{Context, Error, ErrorKind, Result};
use crate::guard::MountGuard;
use crate::tree::{DetachedTree, MountAttrs};
use crate::userns::UserNamespace;
use crate::{fd, sys};

/// The staging directory of the fallback strategies when none is given ([`Overlay::staging_dir`] or
/// [`STAGING_DIR_ENV`]): on a tmpfs that a reboot empties, readable by root only.
///
/// [`Overlay::staging_dir`]: crate::Overlay::staging_dir
///
/// ```no_run
/// // At a daemon's start, before its first compose: sweep what a killed run left.
/// let report = layermount::cleanup_stale(layermount::DEFAULT_STAGING_DIR)?;
/// # Ok::<(), layermount::Error>(())
/// ```
pub const DEFAULT_STAGING_DIR: &str = "/run/layermount";

/// Environment variable naming the staging directory when the caller gives none (the CLI reads it too).
///
/// ```no_run
/// let dir = std::env::var_os(layermount::STAGING_DIR_ENV).unwrap_or_else(|| layermount::DEFAULT_STAGING_DIR.into());
/// layermount::cleanup_stale(&dir)?;
/// # Ok::<(), layermount::Error>(())
/// ```
pub const STAGING_DIR_ENV: &str = "LAYERMOUNT_STAGING_DIR";

/// The staging directory to use when the caller named none: `$LAYERMOUNT_STAGING_DIR`, else
/// [`DEFAULT_STAGING_DIR`].
pub(crate) fn default_staging_dir() -> PathBuf {
    std::env::var_os(STAGING_DIR_ENV)
        .filter(|v| !v.is_empty())
        .map_or_else(|| DEFAULT_STAGING_DIR.into(), PathBuf::from)
}

/// Make `dir` if missing (mode 0700) and check it is a real directory of ours that nobody else can enter: the
/// temporary mounts under it are idmapped views of the layers.
fn private_dir(dir: &Path) -> Result<()> {
    const OP: &str = "compose overlay: staging directory";
    match rustix::fs::mkdir(dir, Mode::RWXU) {
        Ok(()) | Err(Errno::EXIST) => {}
        Err(e) => return Err(Error::os(OP, e).with_path(dir)),
    }
    let st =
        rustix::fs::statx(CWD, dir, AtFlags::SYMLINK_NOFOLLOW, StatxFlags::TYPE | StatxFlags::MODE | StatxFlags::UID)
            .op_path(OP, dir)?;
    let euid = rustix::process::geteuid().as_raw();
    let mode = u32::from(st.stx_mode);
    if FileType::from_raw_mode(mode) != FileType::Directory || st.stx_uid != euid || mode & 0o077 != 0 {
        return Err(Error::new(ErrorKind::InvalidInput, OP).with_path(dir).with_detail(format!(
            "must be a directory owned by uid {euid} with no access for group or others (mode 0700); found uid {} \
             mode {:o}",
            st.stx_uid, mode
        )));
    }
    Ok(())
}

/// One compose's directory inside a private staging directory (`<staging>/<pid>-<n>`, 0700), with temporary
/// mounts under it. Dropping it detach-unmounts every mount (each guard removes the mount point it created, with
/// `rmdir`) and then removes the directory itself with `rmdir`: nothing is ever removed recursively, so a mount
/// that would not go away leaves its directory behind, never a deletion through it. What a killed process leaves
/// here, [`cleanup_stale`] sweeps.
#[derive(Debug)]
pub(crate) struct Staging {
    dir: PathBuf,
    guards: Vec<MountGuard>,
}

impl Staging {
    /// Make a fresh directory for one compose in the private staging directory `staging` (made if missing).
    pub fn new(staging: &Path) -> Result<Self> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        private_dir(staging)?;
        let pid = rustix::process::getpid().as_raw_nonzero();
        for _ in 0..100 {
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let dir = staging.join(format!("{pid}-{n}"));
            match rustix::fs::mkdir(&dir, Mode::RWXU) {
                Ok(()) => return Ok(Self { dir, guards: Vec::new() }),
                Err(Errno::EXIST) => continue,
                Err(e) => return Err(Error::os("compose overlay: make staging directory", e).with_path(&dir)),
            }
        }
        Err(Error::new(ErrorKind::Os, "compose overlay: make staging directory").with_path(staging))
    }

    /// The next free mount point path in the directory (not created yet).
    pub fn next_path(&self) -> PathBuf {
        self.dir.join(self.guards.len().to_string())
    }

    /// Clone `base`, idmap the clone, make it read-only unless `writable`, attach it under the staging directory,
    /// and return where. The clone is never attached writable unless asked.
    pub fn attach_idmapped(&mut self, base: &Path, ns: &UserNamespace, writable: bool) -> Result<PathBuf> {
        let tree = DetachedTree::clone_path(base, false)?;
        self.attach_view(tree, ns, writable)
    }

    /// Idmap the detached `tree`, make it read-only unless `writable`, attach it under the staging directory, and
    /// return where.
    pub fn attach_view(&mut self, mut tree: DetachedTree, ns: &UserNamespace, writable: bool) -> Result<PathBuf> {
        tree.idmap(ns)?;
        if !writable {
            tree.set_attrs(MountAttrs::RDONLY, MountAttrs::empty())?;
        }
        self.attach(tree)
    }

    /// Attach `tree` as it is under the staging directory and return where.
    pub fn attach(&mut self, tree: DetachedTree) -> Result<PathBuf> {
        let at = self.next_path();
        let guard = tree.attach(&at)?;
        self.guards.push(guard);
        Ok(at)
    }

    /// Take responsibility for a mount made at `at` by other means (`mount(2)`), and make it read-only at once
    /// (clones of it may clear that again).
    pub fn adopt_read_only(&mut self, at: &Path) -> Result<()> {
        let guard = MountGuard::adopt(at)?;
        self.guards.push(guard);
        let flags = rustix::mount::OpenTreeFlags::OPEN_TREE_CLOEXEC | rustix::mount::OpenTreeFlags::AT_SYMLINK_NOFOLLOW;
        let fd = rustix::mount::open_tree(CWD, at, flags).op_path("open mount", at)?;
        let attr = sys::MountAttr { attr_set: MountAttrs::RDONLY.bits(), ..Default::default() };
        sys::mount_setattr(fd.as_fd(), c"", sys::AT_EMPTY_PATH, &attr).op_path("set mount attributes", at)
    }

    /// Unmount everything and remove the directories; report the first error.
    pub fn cleanup(mut self) -> Result<()> {
        self.cleanup_inner()
    }

    fn cleanup_inner(&mut self) -> Result<()> {
        let mut first = Ok(());
        for guard in self.guards.drain(..).rev() {
            let at = guard.path().to_path_buf();
            let r = guard.unmount();
            // A mount point this guard did not create (adopted) is still ours to rmdir.
            let _ = rustix::fs::rmdir(&at);
            if first.is_ok() {
                first = r;
            }
        }
        if !self.dir.as_os_str().is_empty() {
            let r = rustix::fs::rmdir(&self.dir).op_path("remove staging directory", &self.dir);
            self.dir = PathBuf::new();
            if first.is_ok() {
                first = r;
            }
        }
        first
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        let _ = self.cleanup_inner();
    }
}

/// What [`cleanup_stale`] did.
///
/// ```no_run
/// let report = layermount::cleanup_stale("/run/layermount")?;
/// println!("{} unmounted, {} removed, {} in use", report.unmounted.len(), report.removed.len(), report.in_use.len());
/// for (path, why) in &report.kept {
///     eprintln!("left {}: {why}", path.display());
/// }
/// # Ok::<(), layermount::Error>(())
/// ```
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct StaleCleanup {
    /// Mounts detach-unmounted.
    pub unmounted: Vec<PathBuf>,
    /// Directories removed (mount points, then each compose's directory).
    pub removed: Vec<PathBuf>,
    /// Directories of processes still running, left alone.
    pub in_use: Vec<PathBuf>,
    /// What could not be removed, with why: a directory holding anything but mount points, a mount that would not
    /// go, a file. Nothing is ever deleted recursively.
    pub kept: Vec<(PathBuf, String)>,
}

/// Sweep what killed composers left in the staging directory `dir` of the fallback strategies (default
/// [`DEFAULT_STAGING_DIR`]): for each `<pid>-<n>` directory whose process is gone, detach-unmount the read-only
/// idmapped clones (and, for the legacy strategy, the overlay) attached under it, `rmdir` their mount points and
/// then the directory. Only `umount2(MNT_DETACH | UMOUNT_NOFOLLOW)` and `rmdir` are used: a directory that is not
/// empty once its mounts are gone is reported in [`StaleCleanup::kept`], never deleted recursively.
///
/// A daemon that composes overlays with a fallback strategy (kernels before 6.15) should call this once at
/// startup, before its first compose, with the staging directory it uses. A missing `dir` is nothing to clean.
/// The fast path ([`Strategy::DetachedFds`](crate::Strategy::DetachedFds)) never attaches anything, so it leaves
/// nothing to sweep.
///
/// # Errors
/// [`ErrorKind::Os`] when `dir` cannot be read; problems with single entries go into the report instead.
///
/// # Kernel
/// Any; unmounting needs `CAP_SYS_ADMIN`.
///
/// ```no_run
/// let report = layermount::cleanup_stale(layermount::DEFAULT_STAGING_DIR)?;
/// for m in &report.unmounted {
///     eprintln!("unmounted stale staging mount {}", m.display());
/// }
/// # Ok::<(), layermount::Error>(())
/// ```
pub fn cleanup_stale(dir: impl AsRef<Path>) -> Result<StaleCleanup> {
    const OP: &str = "clean up staging directory";
    let dir = dir.as_ref();
    let mut report = StaleCleanup::default();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(report),
        Err(e) => return Err(Error::io(OP, &e).with_path(dir)),
    };
    let me = rustix::process::getpid().as_raw_nonzero().get();
    let mut names: Vec<_> = entries.filter_map(|e| e.ok().map(|e| e.file_name())).collect();
    names.sort();
    for name in names {
        let path = dir.join(&name);
        let Some(pid) = name.to_str().and_then(staging_pid) else {
            report.kept.push((path, "not a staging directory name (<pid>-<n>)".into()));
            continue;
        };
        if pid == me || Path::new(&format!("/proc/{pid}")).exists() {
            report.in_use.push(path);
            continue;
        }
        sweep(&path, &mut report);
    }
    Ok(report)
}

/// The pid in a `<pid>-<n>` name.
fn staging_pid(name: &str) -> Option<i32> {
    let (pid, n) = name.split_once('-')?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    (digits(pid) && digits(n)).then(|| pid.parse().ok()).flatten()
}

/// True when `path` (not followed) is the root of a mount.
fn is_mount_root(path: &Path) -> rustix::io::Result<bool> {
    let st = rustix::fs::statx(CWD, path, AtFlags::SYMLINK_NOFOLLOW, StatxFlags::empty())?;
    let root = StatxAttributes::MOUNT_ROOT;
    Ok(st.stx_attributes_mask.contains(root) && st.stx_attributes.contains(root))
}

/// Unmount and `rmdir` each mount point in one stale compose directory, then the directory.
fn sweep(dir: &Path, report: &mut StaleCleanup) {
    let children: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(e) => e.filter_map(|e| e.ok().map(|e| e.path())).collect(),
        Err(e) => {
            report.kept.push((dir.to_path_buf(), e.to_string()));
            return;
        }
    };
    for child in children {
        // A mount may be stacked on another (never by us, but a bound keeps a loop finite).
        for _ in 0..16 {
            match is_mount_root(&child) {
                Ok(true) => match rustix::mount::unmount(&child, UnmountFlags::DETACH | UnmountFlags::NOFOLLOW) {
                    Ok(()) => report.unmounted.push(child.clone()),
                    Err(e) => {
                        report.kept.push((child.clone(), format!("unmount: {e}")));
                        break;
                    }
                },
                _ => break,
            }
        }
        match rustix::fs::rmdir(&child) {
            Ok(()) => report.removed.push(child),
            Err(e) => report.kept.push((child, format!("rmdir: {e}"))),
        }
    }
    match rustix::fs::rmdir(dir) {
        Ok(()) => report.removed.push(dir.to_path_buf()),
        Err(e) => report.kept.push((dir.to_path_buf(), format!("rmdir: {e}"))),
    }
}

/// Open `rel` beneath the directory `at` (never leaving it, never crossing a mount) with `oflags`.
pub(crate) fn open_beneath(at: &Path, rel: &Path, oflags: OFlags) -> Result<OwnedFd> {
    let dir = fd::open_dir_path(at).op_path("compose overlay: open", at)?;
    // Symlinks inside a layer store may be followed, but never out of `at` and never onto another mount.
    fd::open_beneath(&dir, rel, oflags, ResolveFlags::NO_XDEV | ResolveFlags::NO_MAGICLINKS)
        .map_err(|e| Error::os("compose overlay: open", e).with_path(at.join(rel)))
}

/// Run `f` in a new thread whose working directory is changed by `f` through the [`Cwd`] it gets, without touching
/// the working directory of any other thread.
pub(crate) fn with_own_cwd<T: Send>(f: impl FnOnce(&Cwd) -> Result<T> + Send) -> Result<T> {
    sys::with_own_fs(|| f(&Cwd(()))).op("compose overlay: unshare CLONE_FS")?
}

/// Proof that the current thread has its own working directory (see [`with_own_cwd`]).
#[derive(Debug)]
pub(crate) struct Cwd(());

impl Cwd {
    /// `fchdir(dir)`.
    pub fn enter(&self, dir: BorrowedFd<'_>, what: &Path) -> Result<()> {
        rustix::process::fchdir(dir).op_path("compose overlay: fchdir", what)
    }

    /// `chdir(path)`.
    pub fn enter_path(&self, path: &Path) -> Result<()> {
        let fd = fd::open_dir_path(path).op_path("compose overlay: chdir", path)?;
        self.enter(fd.as_fd(), path)
    }
}
