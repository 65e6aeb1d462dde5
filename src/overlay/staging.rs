//! What the fallback strategies need and the fast path never uses: temporary idmapped clones attached under a
//! private directory, and a thread with its own working directory for relative paths.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use rustix::fs::{Mode, OFlags, ResolveFlags};

use crate::error::{Context, Error, Result};
use crate::guard::MountGuard;
use crate::sys;
use crate::tree::DetachedTree;
use crate::userns::UserNamespace;

/// A private (0700) directory with temporary mounts under it. Dropping it detach-unmounts every mount (each guard
/// removes the mount point it created, with `rmdir`) and then removes the directory itself with `rmdir`: nothing is
/// ever removed recursively, so a mount that would not go away leaves its directory behind, never a deletion
/// through it.
#[derive(Debug)]
pub(crate) struct Staging {
    dir: PathBuf,
    guards: Vec<MountGuard>,
}

impl Staging {
    /// Make a fresh private directory under `parent`.
    pub fn new(parent: &Path) -> Result<Self> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let pid = rustix::process::getpid().as_raw_nonzero();
        for _ in 0..100 {
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let dir = parent.join(format!(".layermount-{pid}-{n}"));
            match rustix::fs::mkdir(&dir, Mode::RWXU) {
                Ok(()) => return Ok(Self { dir, guards: Vec::new() }),
                Err(rustix::io::Errno::EXIST) => continue,
                Err(e) => return Err(Error::os("compose overlay: make staging directory", e).with_path(&dir)),
            }
        }
        Err(Error::new(crate::ErrorKind::Os, "compose overlay: make staging directory").with_path(parent))
    }

    /// The next free mount point path in the directory (not created yet).
    pub fn next_path(&self) -> PathBuf {
        self.dir.join(self.guards.len().to_string())
    }

    /// Clone `base`, idmap the clone, attach it under the staging directory, and return where.
    pub fn attach_idmapped(&mut self, base: &Path, ns: &UserNamespace) -> Result<PathBuf> {
        let mut tree = DetachedTree::clone_path(base, false)?;
        tree.idmap(ns)?;
        self.attach(tree)
    }

    /// Attach `tree` under the staging directory and return where.
    pub fn attach(&mut self, tree: DetachedTree) -> Result<PathBuf> {
        let at = self.next_path();
        let guard = tree.attach(&at)?;
        self.guards.push(guard);
        Ok(at)
    }

    /// Take responsibility for a mount made at `at` by other means (`mount(2)`).
    pub fn adopt(&mut self, at: &Path) -> Result<()> {
        self.guards.push(MountGuard::adopt(at)?);
        Ok(())
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

/// Open `rel` beneath the directory `at` (never leaving it, never crossing a mount) with `oflags`.
pub(crate) fn open_beneath(at: &Path, rel: &Path, oflags: OFlags) -> Result<OwnedFd> {
    let dir = rustix::fs::open(at, OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
        .op_path("compose overlay: open", at)?;
    let resolve = ResolveFlags::BENEATH | ResolveFlags::NO_XDEV | ResolveFlags::NO_MAGICLINKS;
    rustix::fs::openat2(&dir, rel, oflags | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty(), resolve)
        .map_err(|e| Error::os("compose overlay: open", e).with_path(at.join(rel)))
}

/// Run `f` in a new thread whose working directory is changed by `f` through the [`Cwd`] it gets, without touching
/// the working directory of any other thread.
pub(crate) fn with_own_cwd<T: Send>(f: impl FnOnce(&Cwd) -> Result<T> + Send) -> Result<T> {
    std::thread::scope(|s| {
        s.spawn(|| {
            sys::unshare_fs().op("compose overlay: unshare CLONE_FS")?;
            f(&Cwd(()))
        })
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
    })
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
        let fd = rustix::fs::open(path, OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
            .op_path("compose overlay: chdir", path)?;
        self.enter(fd.as_fd(), path)
    }
}
