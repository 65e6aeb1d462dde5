//! The content digest of a layer directory: sha256 over one record per entry (path, type, mode, owner, size,
//! CRC-32 of the data, symlink target, device number, mtime of non-directories, xattrs), in sorted path order.
//!
//! Its job is to find what a crash leaves behind (truncated, zeroed or missing files, lost metadata), not to
//! authenticate a layer: that is what the diff_id is for. File data is summarised by CRC-32 and length, which catch
//! every truncation and any zeroed block, at a fraction of sha256's cost; at commit time the CRCs come from
//! extraction, so nothing is read twice. `security.selinux`, which the host assigns, is left out.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::io::Read;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, Dir, FileType, Mode, OFlags, ResolveFlags, StatxFlags};
use sha2::{Digest, Sha256};

use super::xattr;
use crate::error::{Error, Result};

const OP: &str = "layer content digest";

/// CRC-32 of each regular file's data, by path relative to the layer root, as extraction computed it. Every file
/// extraction creates (or hardlinks) updates its path's entry, so an entry is never stale for a path that exists.
pub(crate) type CrcCache = HashMap<PathBuf, u32>;

fn open_dir(parent: BorrowedFd<'_>, name: &OsStr, path: &Path) -> Result<OwnedFd> {
    let target = if name.is_empty() { OsStr::new(".") } else { name };
    rustix::fs::openat2(
        parent,
        target,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_XDEV,
    )
    .map_err(|e| Error::os(OP, e).with_path(path))
}

fn crc_of_file(dir: BorrowedFd<'_>, name: &OsStr, path: &Path) -> Result<u32> {
    let fd = rustix::fs::openat(dir, name, OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC, Mode::empty())
        .map_err(|e| Error::os(OP, e).with_path(path))?;
    let mut file = std::fs::File::from(fd);
    let mut crc = crc32fast::Hasher::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = file.read(&mut buf).map_err(|e| Error::io(OP, &e).with_path(path))?;
        if n == 0 {
            break;
        }
        crc.update(&buf[..n]);
    }
    Ok(crc.finalize())
}

fn put(h: &mut Sha256, bytes: &[u8]) {
    h.update((bytes.len() as u64).to_le_bytes());
    h.update(bytes);
}

/// Hash one entry's record into `h`.
fn record(
    h: &mut Sha256,
    dir: BorrowedFd<'_>,
    name: &OsStr,
    rel: &Path,
    path: &Path,
    crcs: Option<&CrcCache>,
) -> Result<FileType> {
    let flags =
        if name.is_empty() { AtFlags::EMPTY_PATH | AtFlags::SYMLINK_NOFOLLOW } else { AtFlags::SYMLINK_NOFOLLOW };
    let st =
        rustix::fs::statx(dir, name, flags, StatxFlags::BASIC_STATS).map_err(|e| Error::os(OP, e).with_path(path))?;
    let ft = FileType::from_raw_mode(u32::from(st.stx_mode));
    put(h, rel.as_os_str().as_bytes());
    h.update(u32::from(st.stx_mode).to_le_bytes());
    h.update(st.stx_uid.to_le_bytes());
    h.update(st.stx_gid.to_le_bytes());
    match ft {
        FileType::RegularFile => {
            h.update(st.stx_size.to_le_bytes());
            let crc = match crcs.and_then(|c| c.get(rel)) {
                Some(&crc) => crc,
                None => crc_of_file(dir, name, path)?,
            };
            h.update(crc.to_le_bytes());
        }
        FileType::Symlink => {
            let target = rustix::fs::readlinkat(dir, name, Vec::new()).map_err(|e| Error::os(OP, e).with_path(path))?;
            put(h, target.as_bytes());
        }
        FileType::CharacterDevice | FileType::BlockDevice => {
            h.update(st.stx_rdev_major.to_le_bytes());
            h.update(st.stx_rdev_minor.to_le_bytes());
        }
        _ => {}
    }
    if ft != FileType::Directory {
        h.update(st.stx_mtime.tv_sec.to_le_bytes());
        h.update(st.stx_mtime.tv_nsec.to_le_bytes());
    }
    let attrs = xattr::list(dir, name).map_err(|e| Error::os(OP, e).with_path(path))?;
    for (k, v) in attrs.iter().filter(|(k, _)| k != b"security.selinux") {
        put(h, k);
        put(h, v);
    }
    h.update([0xff]);
    Ok(ft)
}

/// The content digest (`sha256:<hex>`) of the tree at `root` (an fd of the layer directory). With `crcs`, file
/// data is not read for paths it knows.
pub(crate) fn content_digest(root: BorrowedFd<'_>, root_path: &Path, crcs: Option<&CrcCache>) -> Result<String> {
    let mut h = Sha256::new();
    record(&mut h, root, OsStr::new(""), Path::new(""), root_path, crcs)?;
    // Depth-first, names sorted bytewise at every level; an explicit stack bounds nothing but memory.
    // Pending directories are kept as paths (opened beneath the root when their turn comes), not as fds, so a wide
    // tree cannot run the process out of descriptors.
    let mut stack: Vec<PathBuf> = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let path = root_path.join(&rel);
        let fd = open_dir(root, rel.as_os_str(), &path)?;
        let mut names: Vec<OsString> = Vec::new();
        let mut dir = Dir::read_from(&fd).map_err(|e| Error::os(OP, e).with_path(&path))?;
        while let Some(entry) = dir.read() {
            let entry = entry.map_err(|e| Error::os(OP, e).with_path(&path))?;
            let name = OsStr::from_bytes(entry.file_name().to_bytes());
            if name != "." && name != ".." {
                names.push(name.to_os_string());
            }
        }
        names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        let mut subdirs = Vec::new();
        for name in &names {
            let child_rel = rel.join(name);
            let child_path = root_path.join(&child_rel);
            if record(&mut h, fd.as_fd(), name, &child_rel, &child_path, crcs)? == FileType::Directory {
                subdirs.push(child_rel);
            }
        }
        // Reverse so the smallest name is visited first: the order is fixed either way.
        stack.extend(subdirs.into_iter().rev());
    }
    let hex: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
    Ok(format!("sha256:{hex}"))
}
