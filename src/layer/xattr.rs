//! Extended attributes of a name inside a directory fd, without following a symlink at the name.
//!
//! Reading uses `listxattrat`/`getxattrat` (Linux 6.13) when the kernel has them, and otherwise goes through
//! `/proc/thread-self/fd/N/NAME` with the `l*xattr` calls, which resolve the directory through its fd (no path from
//! `/`) and never follow the last component. Writing always takes the second way (it is rare).

use std::ffi::{CString, OsStr};
use std::os::fd::BorrowedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

use rustix::io::Errno;

use crate::sys;

/// The `/proc` path of `name` in `dir`. For the directory itself (`name` empty) it is the fd's magic link, which the
/// calls must follow (`nofollow` false); for a name inside, the last component is never followed.
struct ProcPath {
    path: PathBuf,
    nofollow: bool,
}

fn proc_path(dir: BorrowedFd<'_>, name: &OsStr) -> ProcPath {
    let mut path = crate::fd::proc_path(dir);
    if !name.is_empty() {
        path.push(name);
    }
    ProcPath { path, nofollow: !name.is_empty() }
}

impl ProcPath {
    fn list(&self, buf: &mut [u8]) -> rustix::io::Result<usize> {
        if self.nofollow { rustix::fs::llistxattr(&self.path, buf) } else { rustix::fs::listxattr(&self.path, buf) }
    }
    fn get(&self, key: &OsStr, buf: &mut [u8]) -> rustix::io::Result<usize> {
        if self.nofollow {
            rustix::fs::lgetxattr(&self.path, key, buf)
        } else {
            rustix::fs::getxattr(&self.path, key, buf)
        }
    }
    fn set(&self, key: &OsStr, value: &[u8]) -> rustix::io::Result<()> {
        let flags = rustix::fs::XattrFlags::empty();
        if self.nofollow {
            rustix::fs::lsetxattr(&self.path, key, value, flags)
        } else {
            rustix::fs::setxattr(&self.path, key, value, flags)
        }
    }
}

static NO_XATTRAT: AtomicBool = AtomicBool::new(false);

/// `*xattrat` flags for `name`: the directory itself when `name` is empty, never following a symlink at `name`.
fn at_flags(name: &OsStr) -> u32 {
    const AT_SYMLINK_NOFOLLOW: u32 = 0x100;
    if name.is_empty() { AT_SYMLINK_NOFOLLOW | sys::AT_EMPTY_PATH } else { AT_SYMLINK_NOFOLLOW }
}

/// Grow `buf` and retry while the kernel says ERANGE.
fn sized(mut call: impl FnMut(&mut [u8]) -> rustix::io::Result<usize>) -> rustix::io::Result<Vec<u8>> {
    let mut buf = vec![0u8; 1024];
    loop {
        match call(&mut buf) {
            Ok(n) => {
                buf.truncate(n);
                return Ok(buf);
            }
            Err(Errno::RANGE) if buf.len() < 1 << 20 => buf.resize(buf.len() * 4, 0),
            Err(e) => return Err(e),
        }
    }
}

fn list_at(dir: BorrowedFd<'_>, name: &OsStr) -> rustix::io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let path = CString::new(name.as_bytes()).map_err(|_| Errno::INVAL)?;
    let flags = at_flags(name);
    let names = sized(|b| sys::listxattrat(dir, &path, flags, b))?;
    let mut out = Vec::new();
    for key in names.split(|&b| b == 0).filter(|k| !k.is_empty()) {
        let ckey = CString::new(key).map_err(|_| Errno::INVAL)?;
        out.push((key.to_vec(), sized(|b| sys::getxattrat(dir, &path, flags, &ckey, b))?));
    }
    out.sort();
    Ok(out)
}

/// Every xattr of `name` in `dir` (or of `dir` itself when `name` is empty), sorted by name.
pub(crate) fn list(dir: BorrowedFd<'_>, name: &OsStr) -> rustix::io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    if !NO_XATTRAT.load(Ordering::Relaxed) {
        match list_at(dir, name) {
            Err(Errno::NOSYS) => NO_XATTRAT.store(true, Ordering::Relaxed),
            // An `O_PATH` fd of the directory itself: the `*xattrat` calls refuse it, its `/proc` link does not.
            Err(Errno::BADF) if name.is_empty() => {}
            Err(Errno::NOTSUP) => return Ok(Vec::new()),
            other => return other,
        }
    }
    let path = proc_path(dir, name);
    let names = match sized(|b| path.list(b)) {
        Err(Errno::NOTSUP) => return Ok(Vec::new()),
        other => other?,
    };
    let mut out = Vec::new();
    for key in names.split(|&b| b == 0).filter(|k| !k.is_empty()) {
        out.push((key.to_vec(), sized(|b| path.get(OsStr::from_bytes(key), b))?));
    }
    out.sort();
    Ok(out)
}

/// The value of one xattr of `name` in `dir` (the directory itself when `name` is empty), if set.
pub(crate) fn get_at(dir: BorrowedFd<'_>, name: &OsStr, key: &str) -> Option<Vec<u8>> {
    let path = proc_path(dir, name);
    sized(|b| path.get(OsStr::new(key), b)).ok()
}

/// Set one xattr on `name` in `dir` (the directory itself when `name` is empty; never following a symlink at
/// `name`).
pub(crate) fn set_at(dir: BorrowedFd<'_>, name: &OsStr, key: &[u8], value: &[u8]) -> rustix::io::Result<()> {
    proc_path(dir, name).set(OsStr::from_bytes(key), value)
}

/// True for names in overlay's metadata namespaces (`trusted.overlay.*`, `user.overlay.*`, ...): never taken from
/// an archive or copied from a lower layer.
pub(crate) fn is_overlay(key: &[u8]) -> bool {
    key.splitn(2, |&b| b == b'.').nth(1).is_some_and(|rest| rest.starts_with(b"overlay."))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    fn check(dir: &std::path::Path) {
        let path_fd =
            rustix::fs::open(dir, rustix::fs::OFlags::PATH | rustix::fs::OFlags::DIRECTORY, rustix::fs::Mode::empty())
                .unwrap();
        let ro_fd = rustix::fs::open(
            dir,
            rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::DIRECTORY,
            rustix::fs::Mode::empty(),
        )
        .unwrap();
        set_at(path_fd.as_fd(), OsStr::new(""), b"user.dir", b"d").unwrap();
        std::fs::write(dir.join("f"), "x").unwrap();
        set_at(ro_fd.as_fd(), OsStr::new("f"), b"user.file", b"f").unwrap();
        for fd in [&path_fd, &ro_fd] {
            assert_eq!(list(fd.as_fd(), OsStr::new("")).unwrap(), vec![(b"user.dir".to_vec(), b"d".to_vec())]);
            assert_eq!(list(fd.as_fd(), OsStr::new("f")).unwrap(), vec![(b"user.file".to_vec(), b"f".to_vec())]);
            assert_eq!(get_at(fd.as_fd(), OsStr::new(""), "user.dir").as_deref(), Some(&b"d"[..]));
        }
    }

    /// Both ways (the `*xattrat` calls and `/proc`) give the same answers, through `O_PATH` and ordinary fds.
    #[test]
    fn both_ways_agree() {
        // tmpfs holds `user.*` xattrs from Linux 6.6; elsewhere the temporary directory's filesystem must.
        let parent: std::path::PathBuf =
            if crate::Features::get().tmpfs_user_xattrs { "/dev/shm".into() } else { std::env::temp_dir() };
        let dir = tempfile::tempdir_in(&parent).unwrap();
        check(&dir.path().join("."));
        NO_XATTRAT.store(true, Ordering::Relaxed);
        let dir2 = tempfile::tempdir_in(&parent).unwrap();
        check(dir2.path());
        NO_XATTRAT.store(false, Ordering::Relaxed);
    }
}
