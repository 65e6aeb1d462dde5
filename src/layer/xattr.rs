//! Extended attributes of a name inside a directory fd, without following a symlink at the name.
//!
//! Reading uses `listxattrat`/`getxattrat` (Linux 6.13) when the kernel has them, and otherwise goes through
//! `/proc/thread-self/fd/N/NAME` with the `l*xattr` calls, which resolve the directory through its fd (no path from
//! `/`) and never follow the last component. Writing always takes the second way (it is rare).

use std::ffi::{CString, OsStr};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

use rustix::io::Errno;

use crate::sys;

fn proc_path(dir: BorrowedFd<'_>, name: &OsStr) -> PathBuf {
    let mut p = PathBuf::from(format!("/proc/thread-self/fd/{}", dir.as_raw_fd()));
    if !name.is_empty() {
        p.push(name);
    }
    p
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
            Err(Errno::NOTSUP) => return Ok(Vec::new()),
            other => return other,
        }
    }
    let path = proc_path(dir, name);
    let mut names = vec![0u8; 4096];
    let n = loop {
        match rustix::fs::llistxattr(&path, &mut names[..]) {
            Ok(n) => break n,
            Err(Errno::RANGE) => names.resize(rustix::fs::llistxattr_query(&path)?.max(names.len() * 2), 0),
            Err(Errno::NOTSUP) => return Ok(Vec::new()),
            Err(e) => return Err(e),
        }
    };
    let mut out = Vec::new();
    for key in names[..n].split(|&b| b == 0).filter(|k| !k.is_empty()) {
        out.push((key.to_vec(), get(&path, key)?));
    }
    out.sort();
    Ok(out)
}

fn get(path: &PathBuf, key: &[u8]) -> rustix::io::Result<Vec<u8>> {
    let key = OsStr::from_bytes(key);
    let mut value = vec![0u8; 256];
    loop {
        match rustix::fs::lgetxattr(path, key, &mut value[..]) {
            Ok(n) => {
                value.truncate(n);
                return Ok(value);
            }
            Err(Errno::RANGE) => value.resize(rustix::fs::lgetxattr_query(path, key)?.max(value.len() * 2), 0),
            Err(e) => return Err(e),
        }
    }
}

/// The value of one xattr of `name` in `dir`, if set.
pub(crate) fn get_at(dir: BorrowedFd<'_>, name: &OsStr, key: &str) -> Option<Vec<u8>> {
    get(&proc_path(dir, name), key.as_bytes()).ok()
}

/// Set one xattr on `name` in `dir` (not following a symlink at `name`).
pub(crate) fn set_at(dir: BorrowedFd<'_>, name: &OsStr, key: &[u8], value: &[u8]) -> rustix::io::Result<()> {
    rustix::fs::lsetxattr(proc_path(dir, name), OsStr::from_bytes(key), value, rustix::fs::XattrFlags::empty())
}

/// True for names in overlay's metadata namespaces (`trusted.overlay.*`, `user.overlay.*`, ...): never taken from
/// an archive or copied from a lower layer.
pub(crate) fn is_overlay(key: &[u8]) -> bool {
    key.splitn(2, |&b| b == b'.').nth(1).is_some_and(|rest| rest.starts_with(b"overlay."))
}
