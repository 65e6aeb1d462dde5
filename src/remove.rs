//! [`remove_all`]: recursive removal that never crosses a mount and never follows a symlink.
//!
//! The data-loss bug this prevents: a temporary mount fails to unmount (EBUSY), and a recursive delete of its
//! parent then walks *into* the still-attached mount and erases what it shows (image layers, host files).

use std::ffi::OsStr;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use rustix::fs::{AtFlags, Dir, FileType, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

use crate::error::{Context, Error, ErrorKind, Result};
use crate::mountinfo::{MountTable, mount_id_of};

const OP: &str = "remove_all";

/// What [`remove_all`] deleted.
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
    let resolve = ResolveFlags::BENEATH | ResolveFlags::NO_XDEV | ResolveFlags::NO_SYMLINKS;
    let oflags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    rustix::fs::openat2(parent, name, oflags, Mode::empty(), resolve).map_err(|e| match e {
        Errno::XDEV => boundary(path.to_path_buf()),
        _ => Error::os(OP, e).with_path(path),
    })
}

/// Remove `path` and everything beneath it, like `rm -rf` but safe around mounts:
///
/// * Before deleting anything, the mount table is checked: if `path` is itself a mount point, or any mount lies
///   beneath it (a bind mount of the same filesystem included), nothing is deleted and the error
///   ([`ErrorKind::MountBoundary`]) names the mount point.
/// * While deleting, every directory is entered with `openat2(RESOLVE_NO_XDEV | RESOLVE_NO_SYMLINKS)` relative to
///   its parent's fd, and a busy mount point cannot be unlinked, so a mount that appears mid-way stops the removal
///   there with the same error; what lies beneath that mount is never touched.
/// * Symlinks are removed, never followed (a symlink as `path` itself is removed as a symlink).
///
/// Components of `path` before the last are resolved normally. A missing `path` is an error (`ENOENT`).
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
    let name = match path.components().next_back() {
        Some(Component::Normal(n)) => n,
        _ => {
            return Err(Error::new(ErrorKind::InvalidInput, OP)
                .with_path(path)
                .with_detail("path must end in a file name (not /, . or ..)"));
        }
    };
    let parent_path = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let parent = rustix::fs::open(parent_path, OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
        .op_path(OP, parent_path)?;
    let st =
        rustix::fs::statx(&parent, name, AtFlags::SYMLINK_NOFOLLOW, rustix::fs::StatxFlags::TYPE).op_path(OP, path)?;
    let parent_mnt = mount_id_of(&parent, Path::new("")).op_path(OP, parent_path)?;
    let mnt = mount_id_of(&parent, Path::new(name)).op_path(OP, path)?;
    if mnt != parent_mnt {
        return Err(boundary(path.to_path_buf()));
    }
    let mut stats = RemoveStats::default();
    if FileType::from_raw_mode(u32::from(st.stx_mode)) != FileType::Directory {
        unlink(&parent, name, false, path)?;
        stats.others += 1;
        return Ok(stats);
    }

    let top = open_subdir(&parent, name, path)?;
    check_no_mounts_beneath(&top, path)?;
    remove_contents(top, path, &mut stats)?;
    unlink(&parent, name, true, path)?;
    stats.dirs += 1;
    Ok(stats)
}

/// Refuse up front if the mount table lists any mount at or beneath the directory `dir` (by its real path, read
/// back from the fd so that symlinks and `..` in the caller's path cannot hide one).
fn check_no_mounts_beneath(dir: &OwnedFd, path: &Path) -> Result<()> {
    let link = format!("/proc/thread-self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(dir));
    let Ok(real) = std::fs::read_link(&link) else {
        // No /proc: the per-step checks in `remove_contents` still stop at every mount.
        return Ok(());
    };
    let table = MountTable::current()?;
    if let Some(m) = table.beneath(&real).next() {
        let rel = m.mount_point.strip_prefix(&real).unwrap_or(Path::new(""));
        return Err(boundary(path.join(rel)));
    }
    Ok(())
}

fn unlink(dirfd: impl AsFd, name: &OsStr, dir: bool, path: &Path) -> Result<()> {
    let flags = if dir { AtFlags::REMOVEDIR } else { AtFlags::empty() };
    rustix::fs::unlinkat(dirfd, name, flags).map_err(|e| match e {
        Errno::BUSY => boundary(path.to_path_buf()),
        _ => Error::os(OP, e).with_path(path),
    })
}

/// One directory being emptied: its entries are read from `dir`, and `*at` calls go through the same fd. Only the
/// deepest [`OPEN_FRAMES`] directories keep their fd; an ancestor's is closed and, when its turn comes again,
/// reopened from its child through `..` and checked to be the same directory (device and inode).
struct Frame {
    dir: Option<Dir>,
    id: (u32, u32, u64),
    path: PathBuf,
    /// Name of this directory in its parent frame (None for the top).
    name: Option<std::ffi::OsString>,
}

/// Directory fds kept open at once: a tree of any depth is removed without running out of descriptors.
const OPEN_FRAMES: usize = 64;

fn identity(fd: impl AsFd, path: &Path) -> Result<(u32, u32, u64)> {
    let st = rustix::fs::statx(fd, "", AtFlags::EMPTY_PATH, rustix::fs::StatxFlags::INO).op_path(OP, path)?;
    Ok((st.stx_dev_major, st.stx_dev_minor, st.stx_ino))
}

fn frame(fd: OwnedFd, path: PathBuf, name: Option<std::ffi::OsString>) -> Result<Frame> {
    let id = identity(&fd, &path)?;
    Ok(Frame { dir: Some(Dir::new(fd).op_path(OP, &path)?), id, path, name })
}

/// Reopen `parent` (whose fd was closed) from its child `child` through `..`, refusing if it is no longer the same
/// directory (the tree was moved meanwhile). Its listing starts over; what was deleted is gone from it.
fn reopen(parent: &mut Frame, child: &Dir) -> Result<()> {
    let child_fd = child.fd().op_path(OP, &parent.path)?;
    let fd = rustix::fs::openat(child_fd, "..", OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
        .op_path(OP, &parent.path)?;
    if identity(&fd, &parent.path)? != parent.id {
        return Err(Error::new(ErrorKind::InvalidInput, OP)
            .with_path(&parent.path)
            .with_detail("the directory was moved during the removal"));
    }
    parent.dir = Some(Dir::new(fd).op_path(OP, &parent.path)?);
    Ok(())
}

/// Empty the directory `top` depth-first with an explicit stack (no recursion, and at most [`OPEN_FRAMES`] fds, so
/// neither the thread's stack nor the fd limit bounds the depth).
fn remove_contents(top: OwnedFd, path: &Path, stats: &mut RemoveStats) -> Result<()> {
    let mut stack = vec![frame(top, path.to_path_buf(), None)?];
    while let Some(current) = stack.last_mut() {
        let dir = current.dir.as_mut().expect("the deepest frame is open");
        let entry = match dir.read() {
            Some(entry) => entry.op_path(OP, &current.path)?,
            None => {
                let done = stack.pop().expect("stack is not empty");
                if let (Some(name), Some(parent)) = (done.name, stack.last_mut()) {
                    if parent.dir.is_none() {
                        reopen(parent, done.dir.as_ref().expect("open"))?;
                    }
                    let parent_fd = parent.dir.as_ref().expect("reopened").fd().op_path(OP, &parent.path)?;
                    unlink(parent_fd, &name, true, &done.path)?;
                    stats.dirs += 1;
                }
                continue;
            }
        };
        let name = OsStr::from_bytes(entry.file_name().to_bytes());
        if name == "." || name == ".." {
            continue;
        }
        let fd = dir.fd().op_path(OP, &current.path)?;
        let child_path = current.path.join(name);
        let mut is_dir = entry.file_type() == FileType::Directory;
        if entry.file_type() == FileType::Unknown {
            let st = rustix::fs::statx(fd, name, AtFlags::SYMLINK_NOFOLLOW, rustix::fs::StatxFlags::TYPE)
                .op_path(OP, &child_path)?;
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
                Err(Errno::BUSY) => return Err(boundary(child_path)),
                Err(e) => return Err(Error::os(OP, e).with_path(&child_path)),
            }
        }
        let sub = open_subdir(fd, name, &child_path)?;
        let child = frame(sub, child_path, Some(name.into()))?;
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
