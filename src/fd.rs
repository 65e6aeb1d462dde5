//! Directories reached through file descriptors: the crate's one place for opening a directory `O_PATH`, for
//! `openat2(RESOLVE_BENEATH)` beneath a directory fd, and for the `/proc/thread-self/fd/N` path of an fd.
//!
//! Everything that must not leave a directory (layer apply, digests, audits, removal, staging) goes through
//! [`open_beneath`]; each caller adds the resolve flags its job needs (never cross a mount, never follow a symlink)
//! and says why where it calls.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{Mode, OFlags, ResolveFlags};

/// Open the directory `path` with `O_PATH` (no read access needed, no atime touched).
pub(crate) fn open_dir_path(path: impl rustix::path::Arg) -> rustix::io::Result<OwnedFd> {
    rustix::fs::open(path, OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
}

/// Open the directory `rel` beneath `dir` (`""` is `dir` itself) with `oflags`: `openat2` with
/// `RESOLVE_BENEATH` and `resolve`, so neither `..`, an absolute path nor a symlink can lead out of `dir`.
pub(crate) fn open_beneath(
    dir: impl AsFd,
    rel: &Path,
    oflags: OFlags,
    resolve: ResolveFlags,
) -> rustix::io::Result<OwnedFd> {
    let rel = if rel.as_os_str().is_empty() { Path::new(".") } else { rel };
    rustix::fs::openat2(
        dir,
        rel,
        oflags | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
        resolve | ResolveFlags::BENEATH,
    )
}

/// `/proc/thread-self/fd/N` for `fd`: a path the kernel resolves through the fd itself (never through the
/// directory's name), for the calls that take only paths.
pub(crate) fn proc_path(fd: BorrowedFd<'_>) -> PathBuf {
    PathBuf::from(format!("/proc/thread-self/fd/{}", fd.as_raw_fd()))
}
