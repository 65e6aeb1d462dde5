//! [`remove_all`]: recursive removal that never crosses a mount and never follows a symlink.

use std::ffi::OsStr;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, Dir, FileType, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

use crate::error::{Context, Error, ErrorKind, Result};
use crate::fd;
use crate::mountinfo::{MountTable, mount_id_of};

const OP: &str = "remove_all";

/// What [`remove_all`] deleted.
///
/// ```no_run
/// let stats = layermount::remove_all("/var/lib/ctr/42")?;
/// println!("removed {} directories and {} other entries", stats.dirs, stats.others);
/// # Ok::<(), layermount::Error>(())
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RemoveStats {
    /// Directories removed (the top one included).
    pub dirs: u64,
    /// Non-directories removed (files, symlinks, devices, fifos, sockets).
    pub others: u64,
}

fn boundary(path: PathBuf) -> Error {
    Error::new(ErrorKind::MountBoundary, OP).with_path(path)
}

/// Open `name` in `parent` as a directory to delete from: never through a symlink, never onto another mount.
fn open_subdir(parent: impl AsFd, name: &OsStr, path: &Path) -> Result<OwnedFd> {
    let resolve = ResolveFlags::NO_XDEV | ResolveFlags::NO_SYMLINKS;
    fd::open_beneath(parent, Path::new(name), OFlags::RDONLY | OFlags::NOFOLLOW, resolve).map_err(|e| match e {
        Errno::XDEV => boundary(path.to_path_buf()),
        _ => Error::os(OP, e).with_path(path),
    })
}

/// The last component of `path` as written, if it names something removable: `None` for `/`, `.`, `..` and any
/// path whose last component is `.` or `..` (`x/.`, `x/./`, `x/..`), which [`Path::components`] would silently
/// normalise to `x`. A trailing slash alone (`x/`) still names `x`.
pub(crate) fn final_name(path: &Path) -> Option<&OsStr> {
    let bytes = path.as_os_str().as_bytes();
    let end = bytes.iter().rposition(|&b| b != b'/')? + 1;
    let start = bytes[..end].iter().rposition(|&b| b == b'/').map_or(0, |i| i + 1);
    match &bytes[start..end] {
        b"." | b".." => None,
        name => Some(OsStr::from_bytes(name)),
    }
}

/// Remove `path` and everything beneath it, like `rm -rf` but safe around mounts.
///
/// Why it exists: the data loss it prevents. A temporary mount fails to unmount (`EBUSY`, or a crash between mount
/// and unmount), and a recursive delete of its parent then walks *into* the still-attached mount and erases what it
/// shows: image layers, host files. `std::fs::remove_dir_all` and `rm -rf` both do this. Here:
///
/// * Before deleting anything, the mount table is checked: if `path` is itself a mount point, or any mount lies
///   beneath it (a bind mount of the same filesystem included, and a mount that is only visible through another
///   path to the same directory, such as the original of a bind-mounted ancestor), nothing is deleted and the error
///   ([`ErrorKind::MountBoundary`]) names the mount point.
/// * While deleting, every directory is entered with `openat2(RESOLVE_NO_XDEV | RESOLVE_NO_SYMLINKS)` relative to
///   its parent's fd, and a busy mount point cannot be unlinked, so a mount that appears mid-way stops the removal
///   there with the same error; what lies beneath that mount is never touched.
/// * Symlinks are removed, never followed (a symlink as `path` itself is removed as a symlink).
/// * Memory grows with the depth of the tree (one name per level), never with its square, and at most 64
///   directory fds are open at once, so any depth can be removed.
///
/// Components of `path` before the last are resolved normally. A missing `path` is an error (`ENOENT`); a path
/// whose last component is `.` or `..` (`x/.` included) is refused ([`ErrorKind::InvalidInput`]), as GNU rm
/// refuses it.
///
/// # Errors
/// * [`ErrorKind::MountBoundary`]: a mount is at or beneath `path`; [`Error::path`] is the mount point. Nothing
///   beneath it was deleted; when found up front (the usual case) nothing at all was.
/// * [`ErrorKind::InvalidInput`]: `path` ends in `/`, `.` or `..`.
/// * [`ErrorKind::Os`] / [`ErrorKind::PermissionDenied`]: a system call failed (`ENOENT` for a missing `path`);
///   what was deleted before it stays deleted.
///
/// # Kernel
/// Linux 5.8: `openat2` with `RESOLVE_NO_XDEV` (5.6) and `statx` with `STATX_MNT_ID` (5.8).
///
/// No privilege is needed beyond write access to what is removed:
///
/// ```
/// let dir = std::env::temp_dir().join(format!("layermount-doc-{}", std::process::id()));
/// std::fs::create_dir_all(dir.join("a/b"))?;
/// std::fs::write(dir.join("a/b/file"), "x")?;
/// std::os::unix::fs::symlink("/etc", dir.join("a/etc"))?; // removed, never followed
/// let stats = layermount::remove_all(&dir)?;
/// assert_eq!((stats.dirs, stats.others), (3, 2));
/// assert!(!dir.exists());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// ```no_run
/// use layermount::{remove_all, ErrorKind};
/// match remove_all("/var/lib/snapshots/42") {
///     Ok(stats) => println!("removed {} directories", stats.dirs),
///     Err(e) if e.kind() == ErrorKind::MountBoundary => {
///         eprintln!("still mounted: {}", e.path().unwrap().display())
///     }
///     Err(e) => return Err(e),
/// }
/// # Ok::<(), layermount::Error>(())
/// ```
pub fn remove_all(path: impl AsRef<Path>) -> Result<RemoveStats> {
    let path = path.as_ref();
    let Some(name) = final_name(path) else {
        return Err(Error::new(ErrorKind::InvalidInput, OP)
            .with_path(path)
            .with_detail("path must end in a file name (not /, . or ..)"));
    };
    let parent_path = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let parent = fd::open_dir_path(parent_path).op_path(OP, path)?;
    remove_at(&parent, name, path, true)
}

/// Remove `name` in `parent` (`path` names it in errors) like [`remove_all`]. Without `check_table`, the up-front
/// mount-table check is skipped: for trees this process made itself (a layer's staging directory), where the
/// per-step checks (`RESOLVE_NO_XDEV`, `EBUSY`) are enough and reading a table of thousands of mounts for every
/// replaced directory is not.
pub(crate) fn remove_at(parent: &OwnedFd, name: &OsStr, path: &Path, check_table: bool) -> Result<RemoveStats> {
    let st =
        rustix::fs::statx(parent, name, AtFlags::SYMLINK_NOFOLLOW, rustix::fs::StatxFlags::TYPE).op_path(OP, path)?;
    let parent_mnt = mount_id_of(parent, Path::new("")).op_path(OP, path)?;
    let mnt = mount_id_of(parent, Path::new(name)).op_path(OP, path)?;
    if mnt != parent_mnt {
        return Err(boundary(path.to_path_buf()));
    }
    let mut stats = RemoveStats::default();
    if FileType::from_raw_mode(u32::from(st.stx_mode)) != FileType::Directory {
        unlink(parent, name, false, || path.to_path_buf())?;
        stats.others += 1;
        return Ok(stats);
    }

    let top = open_subdir(parent, name, path)?;
    if check_table {
        check_no_mounts_beneath(&top, path)?;
    }
    remove_contents(top, path, &mut stats)?;
    unlink(parent, name, true, || path.to_path_buf())?;
    stats.dirs += 1;
    Ok(stats)
}

/// Refuse up front if the mount table lists any mount at or beneath the directory `dir`: by its real path, read
/// back from the fd so that symlinks and `..` in the caller's path cannot hide one; and by its place in its
/// filesystem, so that a mount seen only through another path to the same directory (the original of a bind mount
/// we are looking through) is found too.
fn check_no_mounts_beneath(dir: &OwnedFd, path: &Path) -> Result<()> {
    let link = fd::proc_path(dir.as_fd());
    let Ok(real) = std::fs::read_link(&link) else {
        // No /proc: the per-step checks in `remove_contents` still stop at every mount.
        return Ok(());
    };
    let table = MountTable::current()?;
    if let Some(m) = table.beneath(&real).next() {
        let rel = m.mount_point.strip_prefix(&real).unwrap_or(Path::new(""));
        return Err(boundary(path.join(rel)));
    }
    let Ok(mine) = mount_id_of(dir, Path::new("")) else { return Ok(()) };
    let Some(mine) = table.by_id(mine) else { return Ok(()) };
    let Ok(rel) = real.strip_prefix(&mine.mount_point) else { return Ok(()) };
    let in_fs = mine.root.join(rel);
    for m in table.mounts() {
        let Some(parent) = table.by_id(m.parent_id).filter(|p| p.mount_id != m.mount_id) else { continue };
        if parent.device != mine.device {
            continue;
        }
        let Ok(at) = m.mount_point.strip_prefix(&parent.mount_point) else { continue };
        if let Ok(below) = parent.root.join(at).strip_prefix(&in_fs) {
            return Err(boundary(path.join(below)));
        }
    }
    Ok(())
}

fn unlink(dirfd: impl AsFd, name: &OsStr, dir: bool, path: impl FnOnce() -> PathBuf) -> Result<()> {
    let flags = if dir { AtFlags::REMOVEDIR } else { AtFlags::empty() };
    rustix::fs::unlinkat(dirfd, name, flags).map_err(|e| match e {
        Errno::BUSY => boundary(path()),
        _ => Error::os(OP, e).with_path(path()),
    })
}

/// One directory being emptied: its entries are read from `dir`, and `*at` calls go through the same fd. Only the
/// deepest [`OPEN_FRAMES`] directories keep their fd; an ancestor's is closed and, when its turn comes again,
/// reopened from its child through `..` and checked to be the same directory (device and inode). A frame holds its
/// own name only: paths are built for error messages alone.
struct Frame {
    dir: Option<Dir>,
    id: (u32, u32, u64),
    /// Name of this directory in its parent frame (None for the top).
    name: Option<std::ffi::OsString>,
}

/// Directory fds kept open at once: a tree of any depth is removed without running out of descriptors.
const OPEN_FRAMES: usize = 64;

/// The path of the deepest frame of `stack` (then `leaf`, if given), from the top's `top`.
fn path_of(top: &Path, stack: &[Frame], leaf: Option<&OsStr>) -> PathBuf {
    let mut p = top.to_path_buf();
    p.extend(stack.iter().filter_map(|f| f.name.as_deref()));
    p.extend(leaf);
    p
}

fn identity(fd: impl AsFd) -> rustix::io::Result<(u32, u32, u64)> {
    let st = rustix::fs::statx(fd, "", AtFlags::EMPTY_PATH, rustix::fs::StatxFlags::INO)?;
    Ok((st.stx_dev_major, st.stx_dev_minor, st.stx_ino))
}

fn frame(fd: OwnedFd, name: Option<std::ffi::OsString>) -> rustix::io::Result<Frame> {
    let id = identity(&fd)?;
    Ok(Frame { dir: Some(Dir::new(fd)?), id, name })
}

/// Reopen the directory `id` (whose fd was closed) from its child `child` through `..`, refusing if it is no longer
/// the same directory (the tree was moved meanwhile). Its listing starts over; what was deleted is gone from it.
fn reopen(id: (u32, u32, u64), child: &Dir) -> Result<Dir> {
    let fd = child
        .fd()
        .and_then(|c| rustix::fs::openat(c, "..", OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty()))
        .op(OP)?;
    if identity(&fd).op(OP)? != id {
        return Err(Error::new(ErrorKind::InvalidInput, OP).with_detail("the directory was moved during the removal"));
    }
    Dir::new(fd).op(OP)
}

/// Empty the directory `top` depth-first with an explicit stack (no recursion, and at most [`OPEN_FRAMES`] fds, so
/// neither the thread's stack nor the fd limit bounds the depth).
fn remove_contents(top: OwnedFd, path: &Path, stats: &mut RemoveStats) -> Result<()> {
    let mut stack = vec![frame(top, None).op_path(OP, path)?];
    while let Some(current) = stack.last_mut() {
        let entry = match current.dir.as_mut().expect("the deepest frame is open").read() {
            Some(Ok(entry)) => entry,
            Some(Err(e)) => return Err(Error::os(OP, e).with_path(path_of(path, &stack, None))),
            None => {
                let done = stack.pop().expect("stack is not empty");
                let Some(name) = done.name else { continue };
                let parent = stack.len() - 1;
                if stack[parent].dir.is_none() {
                    let dir = reopen(stack[parent].id, done.dir.as_ref().expect("open"))
                        .map_err(|e| e.with_path(path_of(path, &stack, None)))?;
                    stack[parent].dir = Some(dir);
                }
                let parent_fd = stack[parent].dir.as_ref().expect("reopened").fd();
                let parent_fd = parent_fd.map_err(|e| Error::os(OP, e).with_path(path_of(path, &stack, None)))?;
                unlink(parent_fd, &name, true, || path_of(path, &stack, Some(&name)))?;
                stats.dirs += 1;
                continue;
            }
        };
        let name = OsStr::from_bytes(entry.file_name().to_bytes());
        if name == "." || name == ".." {
            continue;
        }
        let dir = stack.last().and_then(|f| f.dir.as_ref()).expect("open");
        let fd = dir.fd().map_err(|e| Error::os(OP, e).with_path(path_of(path, &stack, None)))?;
        let mut is_dir = entry.file_type() == FileType::Directory;
        if entry.file_type() == FileType::Unknown {
            let st = rustix::fs::statx(fd, name, AtFlags::SYMLINK_NOFOLLOW, rustix::fs::StatxFlags::TYPE)
                .map_err(|e| Error::os(OP, e).with_path(path_of(path, &stack, Some(name))))?;
            is_dir = FileType::from_raw_mode(u32::from(st.stx_mode)) == FileType::Directory;
        }
        if !is_dir {
            match rustix::fs::unlinkat(fd, name, AtFlags::empty()) {
                Ok(()) => {
                    stats.others += 1;
                    continue;
                }
                // Replaced by a directory since it was listed: handle it as one.
                Err(Errno::ISDIR) => {}
                Err(Errno::BUSY) => return Err(boundary(path_of(path, &stack, Some(name)))),
                Err(e) => return Err(Error::os(OP, e).with_path(path_of(path, &stack, Some(name)))),
            }
        }
        let sub = match open_subdir(fd, name, Path::new("")) {
            Ok(sub) => sub,
            Err(e) => return Err(e.with_path(path_of(path, &stack, Some(name)))),
        };
        let child =
            frame(sub, Some(name.into())).map_err(|e| Error::os(OP, e).with_path(path_of(path, &stack, Some(name))))?;
        stack.push(child);
        if stack.len() > OPEN_FRAMES {
            let idx = stack.len() - 1 - OPEN_FRAMES;
            stack[idx].dir = None;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::test_common as common;

    use super::*;

    /// A mount that appears after the up-front check (simulated by skipping it) still stops the walk, and
    /// nothing behind it is touched.
    #[test]
    fn mount_appearing_mid_way_stops_the_walk() {
        common::privileged("mount_appearing_mid_way_stops_the_walk", |scratch| {
            let tree = scratch.join("tree");
            std::fs::create_dir_all(tree.join("b/m")).unwrap();
            std::fs::write(tree.join("b/file"), b"f").unwrap();
            common::mount_tmpfs(&tree.join("b/m"));
            std::fs::write(tree.join("b/m/precious"), b"p").unwrap();
            let parent = std::fs::File::open(scratch).unwrap();
            let top = open_subdir(&parent, OsStr::new("tree"), &tree).unwrap();
            let err = remove_contents(top, &tree, &mut RemoveStats::default()).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::MountBoundary, "{err}");
            assert_eq!(err.path(), Some(tree.join("b/m").as_path()));
            assert_eq!(std::fs::read(tree.join("b/m/precious")).unwrap(), b"p");
            common::umount(&tree.join("b/m"));
            remove_all(&tree).unwrap();
        });
    }
}
