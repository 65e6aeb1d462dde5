//! The content digest of a layer directory: sha256 over one record per entry (path, type, mode, owner, size,
//! CRC-32 of the data, symlink target, device number, mtime of non-directories, xattrs), in bytewise path order.
//!
//! Its job is to find what a crash leaves behind (truncated, zeroed or missing files, lost metadata), not to
//! authenticate a layer: that is what the diff_id is for. File data is summarised by CRC-32 and length, which catch
//! every truncation and any zeroed block, at a fraction of sha256's cost. `security.selinux`, `security.ima` and
//! `security.evm`, which the host assigns, are left out.
//!
//! [`verify`](super::verify) computes it by walking the tree ([`content_digest`]). `apply` builds the same records
//! while it writes ([`encode`] from what it just set; directories read back with [`observe`]), so committing needs no
//! second walk; debug builds check the two against each other on every apply.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::io::Read;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex};

use rustix::fs::{AtFlags, Dir, FileType, Mode, OFlags, ResolveFlags, StatxFlags};
use sha2::{Digest, Sha256};

use super::xattr;
use crate::error::{Error, Result};

const OP: &str = "layer content digest";

/// CRC-32 of each regular file's data, by path relative to the layer root, as extraction computed it. Every file
/// extraction creates (or hardlinks) updates its path's entry, so an entry is never stale for a path that exists.
pub(crate) type CrcCache = HashMap<PathBuf, u32>;

fn open_dir(parent: BorrowedFd<'_>, name: &OsStr, path: &Path) -> Result<OwnedFd> {
    let resolve = ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_XDEV;
    crate::fd::open_beneath(parent, Path::new(name), OFlags::RDONLY | OFlags::NOFOLLOW, resolve)
        .map_err(|e| Error::os(OP, e).with_path(path))
}

/// The CRC-32 state of `n` zero bytes, made by doubling (about 2 log2(n) combines): holes of sparse files are summed
/// without being read or written.
pub(crate) fn zeros(mut n: u64) -> crc32fast::Hasher {
    let mut out = crc32fast::Hasher::new();
    let mut run = crc32fast::Hasher::new();
    run.update(&[0]);
    while n > 0 {
        if n & 1 == 1 {
            out.combine(&run);
        }
        n >>= 1;
        if n > 0 {
            let copy = run.clone();
            run.combine(&copy);
        }
    }
    out
}

/// CRC-32 of a file's data. Holes (`SEEK_HOLE`) are summed as zeros without reading them, so a sparse file of any
/// size costs what its data costs.
fn crc_of_file(dir: BorrowedFd<'_>, name: &OsStr, path: &Path) -> Result<u32> {
    use rustix::fs::SeekFrom;
    let err = |e: rustix::io::Errno| Error::os(OP, e).with_path(path);
    let fd = rustix::fs::openat(dir, name, OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC, Mode::empty())
        .map_err(err)?;
    let size = rustix::fs::fstat(&fd).map_err(err)?.st_size as u64;
    let mut file = std::fs::File::from(fd);
    let mut crc = crc32fast::Hasher::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut pos = 0u64;
    while pos < size {
        // No SEEK_DATA here (EINVAL and the like): everything is data.
        let data = match rustix::fs::seek(&file, SeekFrom::Data(pos)) {
            Ok(d) => d.min(size),
            Err(rustix::io::Errno::NXIO) => size,
            Err(_) => pos,
        };
        if data > pos {
            crc.combine(&zeros(data - pos));
            pos = data;
            continue;
        }
        let end = rustix::fs::seek(&file, SeekFrom::Hole(pos)).map_or(size, |h| h.clamp(pos + 1, size));
        rustix::fs::seek(&file, SeekFrom::Start(pos)).map_err(err)?;
        while pos < end {
            let want = buf.len().min((end - pos) as usize);
            let n = file.read(&mut buf[..want]).map_err(|e| Error::io(OP, &e).with_path(path))?;
            if n == 0 {
                // Truncated meanwhile: the size recorded by the caller's statx will not match either.
                return Ok(crc.finalize());
            }
            crc.update(&buf[..n]);
            pos += n as u64;
        }
    }
    Ok(crc.finalize())
}

fn put(h: &mut Vec<u8>, bytes: &[u8]) {
    h.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
    h.extend_from_slice(bytes);
}

/// What a record says about one entry. Built from `statx` by [`content_digest`], and by extraction from what it
/// just wrote, so both must fill it the same way.
#[derive(Debug, Clone, Default)]
pub(crate) struct Facts<'a> {
    /// `st_mode`, type bits included.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Regular files: length and CRC-32 of the data.
    pub size: u64,
    pub crc: u32,
    /// Symlinks: the target.
    pub target: &'a [u8],
    /// Devices: major and minor.
    pub rdev: (u32, u32),
    /// Non-directories: mtime.
    pub mtime: (i64, u32),
    /// Sorted; host-assigned ones are skipped here.
    pub xattrs: &'a [(Vec<u8>, Vec<u8>)],
}

/// Encode one entry's record (everything but its path).
pub(crate) fn encode(f: &Facts<'_>) -> Vec<u8> {
    let ft = FileType::from_raw_mode(f.mode);
    let mut h = Vec::with_capacity(64);
    h.extend_from_slice(&f.mode.to_le_bytes());
    h.extend_from_slice(&f.uid.to_le_bytes());
    h.extend_from_slice(&f.gid.to_le_bytes());
    match ft {
        FileType::RegularFile => {
            h.extend_from_slice(&f.size.to_le_bytes());
            h.extend_from_slice(&f.crc.to_le_bytes());
        }
        FileType::Symlink => put(&mut h, f.target),
        FileType::CharacterDevice | FileType::BlockDevice => {
            h.extend_from_slice(&f.rdev.0.to_le_bytes());
            h.extend_from_slice(&f.rdev.1.to_le_bytes());
        }
        _ => {}
    }
    if ft != FileType::Directory {
        h.extend_from_slice(&f.mtime.0.to_le_bytes());
        h.extend_from_slice(&f.mtime.1.to_le_bytes());
    }
    for (k, v) in f.xattrs.iter().filter(|(k, _)| !HOST_ASSIGNED.contains(&k.as_slice())) {
        put(&mut h, k);
        put(&mut h, v);
    }
    h
}

/// True when `xattrs` holds anything besides what the host assigns by itself.
pub(crate) fn has_own_xattrs(xattrs: &[(Vec<u8>, Vec<u8>)]) -> bool {
    xattrs.iter().any(|(k, _)| !HOST_ASSIGNED.contains(&k.as_slice()))
}

/// The record of `name` in `dir` (the directory itself when `name` is empty), read from the filesystem.
pub(crate) fn observe(
    dir: BorrowedFd<'_>,
    name: &OsStr,
    rel: &Path,
    path: &Path,
    crcs: Option<&CrcCache>,
) -> Result<(FileType, Vec<u8>)> {
    let flags =
        if name.is_empty() { AtFlags::EMPTY_PATH | AtFlags::SYMLINK_NOFOLLOW } else { AtFlags::SYMLINK_NOFOLLOW };
    let st =
        rustix::fs::statx(dir, name, flags, StatxFlags::BASIC_STATS).map_err(|e| Error::os(OP, e).with_path(path))?;
    let mode = u32::from(st.stx_mode);
    let ft = FileType::from_raw_mode(mode);
    let crc = match ft {
        FileType::RegularFile => match crcs.and_then(|c| c.get(rel)) {
            Some(&crc) => crc,
            None => crc_of_file(dir, name, path)?,
        },
        _ => 0,
    };
    let target = match ft {
        FileType::Symlink => {
            rustix::fs::readlinkat(dir, name, Vec::new()).map_err(|e| Error::os(OP, e).with_path(path))?.into_bytes()
        }
        _ => Vec::new(),
    };
    let xattrs = xattr::list(dir, name).map_err(|e| Error::os(OP, e).with_path(path))?;
    let facts = Facts {
        mode,
        uid: st.stx_uid,
        gid: st.stx_gid,
        size: st.stx_size,
        crc,
        target: &target,
        rdev: (st.stx_rdev_major, st.stx_rdev_minor),
        mtime: (st.stx_mtime.tv_sec, st.stx_mtime.tv_nsec),
        xattrs: &xattrs,
    };
    Ok((ft, encode(&facts)))
}

/// Xattrs the host puts on files by itself, whatever the layer says.
pub(crate) const HOST_ASSIGNED: [&[u8]; 3] = [b"security.selinux", b"security.ima", b"security.evm"];

/// Directories waiting to be read, shared by the walkers, and how many are being read now.
struct Queue {
    pending: Vec<PathBuf>,
    busy: usize,
    failed: bool,
}

/// Record every entry of the directory `rel`; push its subdirectories onto the queue.
fn walk_dir(
    root: BorrowedFd<'_>,
    root_path: &Path,
    rel: &Path,
    crcs: Option<&CrcCache>,
    out: &mut Vec<(Vec<u8>, Vec<u8>)>,
    subdirs: &mut Vec<PathBuf>,
) -> Result<()> {
    let path = root_path.join(rel);
    let fd = open_dir(root, rel.as_os_str(), &path)?;
    let mut dir = Dir::read_from(&fd).map_err(|e| Error::os(OP, e).with_path(&path))?;
    while let Some(entry) = dir.read() {
        let entry = entry.map_err(|e| Error::os(OP, e).with_path(&path))?;
        let name = OsStr::from_bytes(entry.file_name().to_bytes());
        if name == "." || name == ".." {
            continue;
        }
        let child_rel = rel.join(name);
        let (ft, rec) = observe(fd.as_fd(), name, &child_rel, &root_path.join(&child_rel), crcs)?;
        if ft == FileType::Directory {
            subdirs.push(child_rel.clone());
        }
        out.push((child_rel.into_os_string().into_vec(), rec));
    }
    Ok(())
}

/// The content digest (`sha256:<hex>`) of the tree at `root` (an fd of the layer directory): sha256 over every
/// entry's path and record, in bytewise path order. With `crcs`, file data is not read for paths it knows.
///
/// Two threads walk the tree (the order they meet entries in does not matter: records are sorted by path before
/// hashing). Pending directories are kept as paths, opened beneath the root in their turn, so a wide tree cannot run
/// the process out of descriptors.
pub(crate) fn content_digest(root: BorrowedFd<'_>, root_path: &Path, crcs: Option<&CrcCache>) -> Result<String> {
    let (_, root_record) = observe(root, OsStr::new(""), Path::new(""), root_path, crcs)?;
    let queue = Mutex::new(Queue { pending: vec![PathBuf::new()], busy: 0, failed: false });
    let ready = Condvar::new();
    let worker = || -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut out = Vec::new();
        loop {
            let rel = {
                let mut q = queue.lock().unwrap_or_else(|p| p.into_inner());
                loop {
                    if q.failed {
                        return Ok(out);
                    }
                    if let Some(rel) = q.pending.pop() {
                        q.busy += 1;
                        break rel;
                    }
                    if q.busy == 0 {
                        return Ok(out);
                    }
                    q = ready.wait(q).unwrap_or_else(|p| p.into_inner());
                }
            };
            let mut subdirs = Vec::new();
            let result = walk_dir(root, root_path, &rel, crcs, &mut out, &mut subdirs);
            let mut q = queue.lock().unwrap_or_else(|p| p.into_inner());
            q.busy -= 1;
            q.failed |= result.is_err();
            q.pending.extend(subdirs);
            ready.notify_all();
            drop(q);
            result?;
        }
    };
    let records = std::thread::scope(|s| {
        let helper = s.spawn(worker);
        let mine = worker();
        let theirs = helper.join().unwrap_or_else(|p| std::panic::resume_unwind(p));
        let (mut a, b) = (mine?, theirs?);
        a.extend(b);
        Ok::<_, Error>(a)
    })?;
    Ok(digest_of(&root_record, records))
}

/// The digest of a layer from its root's record and every other entry's (path, record), in any order.
pub(crate) fn digest_of(root_record: &[u8], mut records: Vec<(Vec<u8>, Vec<u8>)>) -> String {
    records.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    let mut h = Sha256::new();
    let mut buf = Vec::new();
    put(&mut buf, b"");
    h.update(&buf);
    h.update(root_record);
    for (path, rec) in &records {
        buf.clear();
        put(&mut buf, path);
        put(&mut buf, rec);
        h.update(&buf);
    }
    let hex: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

#[cfg(test)]
mod tests {
    /// The CRC of a run of zeros made by doubling is the CRC of the zeros, after any prefix.
    #[test]
    fn zero_runs_sum_like_zeros() {
        for n in [0u64, 1, 2, 3, 511, 4103, 1 << 20] {
            let mut want = crc32fast::Hasher::new();
            want.update(b"prefix");
            want.update(&vec![0u8; n as usize]);
            let mut got = crc32fast::Hasher::new();
            got.update(b"prefix");
            got.combine(&super::zeros(n));
            assert_eq!(got.finalize(), want.finalize(), "{n}");
        }
    }
}
