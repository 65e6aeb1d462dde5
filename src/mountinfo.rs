//! The mount table as the kernel shows it in `/proc/thread-self/mountinfo`, the mount a path is on, and a
//! before/after comparison used as a mount-leak check.
//!
//! The table is read from `/proc/thread-self/mountinfo`, not `/proc/self/mountinfo`: a thread that entered its own
//! mount namespace (as our tests do) sees its own mounts there, while `/proc/self` shows the main thread's.

use std::fmt;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, CWD, StatxFlags};

use crate::error::{Context, Error, ErrorKind, Result};

/// One line of `mountinfo` (see `proc_pid_mountinfo(5)`), with octal escapes (`\040` and friends) decoded.
///
/// ```
/// let line = "40 1 0:50 / /run/c rw,nosuid - overlay overlay rw,lowerdir=/l,upperdir=/u,workdir=/w";
/// let m = layermount::MountInfo::parse_line(line)?;
/// assert_eq!((m.mount_id, m.parent_id), (40, 1));
/// assert_eq!(m.mount_options, "rw,nosuid");
/// assert_eq!(m.super_option("workdir"), Some("/w"));
/// # Ok::<(), layermount::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountInfo {
    /// Unique (until unmounted) id of the mount; the one `statx(STATX_MNT_ID)` returns.
    pub mount_id: u64,
    /// Id of the parent mount (itself for the namespace root).
    pub parent_id: u64,
    /// `major:minor` of the filesystem's device.
    pub device: (u32, u32),
    /// The directory of the filesystem that forms the root of this mount (`/` unless it is a bind mount).
    pub root: PathBuf,
    /// Where it is mounted, relative to the reading process's root.
    pub mount_point: PathBuf,
    /// Per-mount options (`rw,nosuid,relatime`...).
    pub mount_options: String,
    /// Optional fields (`shared:N`, `master:N`, `propagate_from:N`, `unbindable`).
    pub optional_fields: Vec<String>,
    /// Filesystem type (`tmpfs`, `overlay`, `ext4`...).
    pub fs_type: String,
    /// Filesystem-specific source (`/dev/vda`, `overlay`, `none`...); bytes that are not UTF-8 become U+FFFD.
    pub source: String,
    /// Per-superblock options (for overlay: `lowerdir=...,upperdir=...`); bytes that are not UTF-8 become U+FFFD.
    pub super_options: String,
}

/// Decode the kernel's `\ooo` octal escapes (space, tab, newline and backslash are escaped in mountinfo).
fn unescape_bytes(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            let v = u32::from(b[i + 1] - b'0') * 64 + u32::from(b[i + 2] - b'0') * 8 + u32::from(b[i + 3] - b'0');
            if let Ok(byte) = u8::try_from(v) {
                out.push(byte);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

/// A text field: decoded, and any byte that is not UTF-8 (a mount source may hold anything) replaced by U+FFFD.
fn unescape(field: &[u8]) -> String {
    String::from_utf8_lossy(&unescape_bytes(field)).into_owned()
}

fn unescape_path(field: &[u8]) -> PathBuf {
    use std::os::unix::ffi::OsStringExt;
    PathBuf::from(std::ffi::OsString::from_vec(unescape_bytes(field)))
}

fn number<T: std::str::FromStr>(field: &[u8]) -> Option<T> {
    std::str::from_utf8(field).ok()?.parse().ok()
}

impl MountInfo {
    /// Parse one `mountinfo` line. Lines are bytes: mount points and roots are kept exactly (any byte but NUL);
    /// the text fields (options, type, source) have bytes that are not UTF-8 replaced by U+FFFD.
    ///
    /// ```
    /// use layermount::MountInfo;
    /// let line = r"36 35 98:0 / /mnt/with\040space rw,noatime master:1 - ext3 /dev/root rw,errors=continue";
    /// let m = MountInfo::parse_line(line)?;
    /// assert_eq!(m.mount_point, std::path::Path::new("/mnt/with space"));
    /// assert_eq!(m.optional_fields, ["master:1"]);
    /// assert_eq!(m.fs_type, "ext3");
    /// let odd = MountInfo::parse_line(b"37 35 0:9 / /m rw - tmpfs src\xff rw")?;
    /// assert_eq!(odd.source, "src\u{fffd}");
    /// # Ok::<(), layermount::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidInput`] for a line that does not have mountinfo's fields.
    ///
    /// # Kernel
    /// None: no system call (parsing only).
    pub fn parse_line(line: impl AsRef<[u8]>) -> Result<Self> {
        let line = line.as_ref();
        let bad = || {
            Error::new(ErrorKind::InvalidInput, "parse mountinfo")
                .with_detail(format!("malformed line \"{}\"", line.escape_ascii()))
        };
        let mut it = line.split(|&b| b == b' ');
        let mount_id = it.next().and_then(number).ok_or_else(bad)?;
        let parent_id = it.next().and_then(number).ok_or_else(bad)?;
        let device = it
            .next()
            .and_then(|s| {
                let colon = s.iter().position(|&b| b == b':')?;
                Some((number(&s[..colon])?, number(&s[colon + 1..])?))
            })
            .ok_or_else(bad)?;
        let root = unescape_path(it.next().ok_or_else(bad)?);
        let mount_point = unescape_path(it.next().ok_or_else(bad)?);
        let mount_options = unescape(it.next().ok_or_else(bad)?);
        let mut optional_fields = Vec::new();
        loop {
            match it.next() {
                Some(b"-") => break,
                Some(f) => optional_fields.push(unescape(f)),
                None => return Err(bad()),
            }
        }
        let fs_type = unescape(it.next().ok_or_else(bad)?);
        let source = unescape(it.next().ok_or_else(bad)?);
        let super_options = unescape(&it.collect::<Vec<_>>().join(&b' '));
        Ok(Self {
            mount_id,
            parent_id,
            device,
            root,
            mount_point,
            mount_options,
            optional_fields,
            fs_type,
            source,
            super_options,
        })
    }
}

impl MountInfo {
    /// The value of the per-superblock option `key` (`upperdir` of an overlay, say), if the mount has it. A value
    /// holding a comma cannot be told from two options here (the table's escapes are already decoded), so it is cut
    /// at the comma.
    ///
    /// ```
    /// use layermount::MountInfo;
    /// let m = MountInfo::parse_line("40 1 0:50 / /run/c rw - overlay overlay rw,lowerdir=/l,upperdir=/u,workdir=/w")?;
    /// assert_eq!(m.super_option("upperdir"), Some("/u"));
    /// assert_eq!(m.super_option("index"), None);
    /// # Ok::<(), layermount::Error>(())
    /// ```
    pub fn super_option(&self, key: &str) -> Option<&str> {
        self.super_options.split(',').find_map(|o| o.strip_prefix(key)?.strip_prefix('='))
    }
}

/// A snapshot of the calling thread's mount table.
///
/// # Kernel
/// Reading the table needs `/proc/thread-self` (3.17); finding the mount of a path, `statx`'s mount id (5.8).
///
/// ```no_run
/// use layermount::MountTable;
/// let table = MountTable::current()?;
/// let root = table.mount_of("/")?;
/// println!("/ is {} from {}", root.fs_type, root.source);
/// # Ok::<(), layermount::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountTable {
    mounts: Vec<MountInfo>,
}

/// `statx` flags for `name` under a dirfd, not following a symlink at its end (empty: the dirfd itself).
fn nofollow(name: &Path) -> AtFlags {
    match name.as_os_str().is_empty() {
        true => AtFlags::EMPTY_PATH | AtFlags::SYMLINK_NOFOLLOW,
        false => AtFlags::SYMLINK_NOFOLLOW,
    }
}

/// The id of the mount `path` is on, as `statx(STATX_MNT_ID)` reports it (symlinks in the last component are not
/// followed).
pub(crate) fn mount_id_of(dirfd: impl std::os::fd::AsFd, name: &Path) -> rustix::io::Result<u64> {
    let flags = nofollow(name);
    let st = rustix::fs::statx(dirfd, name, flags, StatxFlags::MNT_ID)?;
    if st.stx_mask & StatxFlags::MNT_ID.bits() == 0 {
        return Err(rustix::io::Errno::NOSYS);
    }
    Ok(st.stx_mnt_id)
}

/// `STATX_MNT_ID_UNIQUE` (Linux 6.8): a 64-bit mount id never reused while the system runs.
const STATX_MNT_ID_UNIQUE: u32 = 0x4000;

/// Who a mount is: its id as `mountinfo` shows it (reused after an unmount), its never-reused id where the kernel
/// has one (Linux 6.8), and the device of its filesystem (which every other mount of the same filesystem shares).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct MountIdentity {
    pub id: u64,
    pub unique: Option<u64>,
    pub device: (u32, u32),
}

/// The never-reused id of the mount `name` (under `dirfd`; empty: `dirfd` itself) is on, where the kernel has one
/// (Linux 6.8); symlinks are not followed.
pub(crate) fn mount_id_unique(dirfd: impl std::os::fd::AsFd, name: &Path) -> rustix::io::Result<Option<u64>> {
    let flags = nofollow(name);
    let st = rustix::fs::statx(dirfd, name, flags, StatxFlags::from_bits_retain(STATX_MNT_ID_UNIQUE))?;
    Ok((st.stx_mask & STATX_MNT_ID_UNIQUE != 0).then_some(st.stx_mnt_id))
}

/// The identity of the mount `name` (under `dirfd`; empty: `dirfd` itself) is on; symlinks are not followed.
pub(crate) fn mount_identity(dirfd: impl std::os::fd::AsFd, name: &Path) -> rustix::io::Result<MountIdentity> {
    let flags = nofollow(name);
    let dirfd = dirfd.as_fd();
    let st = rustix::fs::statx(dirfd, name, flags, StatxFlags::MNT_ID)?;
    if st.stx_mask & StatxFlags::MNT_ID.bits() == 0 {
        return Err(rustix::io::Errno::NOSYS);
    }
    let unique = rustix::fs::statx(dirfd, name, flags, StatxFlags::from_bits_retain(STATX_MNT_ID_UNIQUE))
        .ok()
        .filter(|u| u.stx_mask & STATX_MNT_ID_UNIQUE != 0)
        .map(|u| u.stx_mnt_id);
    Ok(MountIdentity { id: st.stx_mnt_id, unique, device: (st.stx_dev_major, st.stx_dev_minor) })
}

/// `statmount(2)` masks (`STATMOUNT_*` of `<linux/mount.h>`).
pub(crate) const STATMOUNT_SB_BASIC: u64 = 0x1;
pub(crate) const STATMOUNT_MNT_BASIC: u64 = 0x2;
pub(crate) const STATMOUNT_MNT_POINT: u64 = 0x10;
/// The filesystem's own options (Linux 6.11).
pub(crate) const STATMOUNT_MNT_OPTS: u64 = 0x80;

/// `OVERLAYFS_SUPER_MAGIC`.
pub(crate) const OVERLAYFS_SUPER_MAGIC: u64 = 0x794c_7630;

/// What `statmount(2)` said of one mount: the fields asked for, where the kernel filled them in.
#[derive(Debug, Clone, Default)]
pub(crate) struct MountStat {
    /// The `STATMOUNT_*` fields filled in.
    pub mask: u64,
    pub sb_magic: u64,
    /// The id `mountinfo` shows.
    pub mnt_id_old: u32,
    /// Relative to the caller's root, raw bytes (not escaped).
    pub mnt_point: Option<Vec<u8>>,
    /// The filesystem's options as `mountinfo` shows them (comma-separated, values octal-escaped).
    pub opts: Option<Vec<u8>>,
}

/// `statmount` of the mount with never-reused id `id`, the buffer grown until the strings fit.
pub(crate) fn statmount(id: u64, mask: u64) -> rustix::io::Result<MountStat> {
    // The fixed part is 512 bytes; strings (mount point, options) go after it.
    let strings = STATMOUNT_MNT_POINT | STATMOUNT_MNT_OPTS;
    let mut buf = vec![0u64; if mask & strings == 0 { 64 } else { 1024 }];
    loop {
        let len = buf.len();
        match crate::sys::statmount(id, mask, &mut buf) {
            Ok(b) => return Ok(parse_statmount(b)),
            Err(rustix::io::Errno::OVERFLOW) if len < (1 << 20) => buf.resize(len * 4, 0),
            Err(e) => return Err(e),
        }
    }
}

/// `struct statmount` (the offsets of `<linux/mount.h>`; strings start after the 512-byte fixed part).
fn parse_statmount(b: &[u8]) -> MountStat {
    let u32_at = |o: usize| b.get(o..o + 4).map_or(0, |x| u32::from_ne_bytes(x.try_into().expect("4 bytes")));
    let u64_at = |o: usize| b.get(o..o + 8).map_or(0, |x| u64::from_ne_bytes(x.try_into().expect("8 bytes")));
    let mask = u64_at(8);
    let string = |bit: u64, field: usize| {
        let start = 512 + u32_at(field) as usize;
        let rest = b.get(start..).filter(|_| mask & bit != 0)?;
        Some(rest[..rest.iter().position(|&c| c == 0).unwrap_or(rest.len())].to_vec())
    };
    MountStat {
        mask,
        sb_magic: u64_at(24),
        mnt_id_old: u32_at(56),
        mnt_point: string(STATMOUNT_MNT_POINT, 108),
        opts: string(STATMOUNT_MNT_OPTS, 4),
    }
}

/// The never-reused ids of every mount in the calling thread's mount namespace, ascending, into `ids`.
pub(crate) fn list_mounts(ids: &mut Vec<u64>) -> rustix::io::Result<()> {
    ids.clear();
    let mut chunk = [0u64; 256];
    loop {
        let last = ids.last().copied().unwrap_or(0);
        let n = crate::sys::listmount(crate::sys::LSMT_ROOT, last, &mut chunk)?;
        ids.extend_from_slice(&chunk[..n]);
        if n < chunk.len() {
            return Ok(());
        }
    }
}

/// The value of option `key` in a filesystem's option text as `mountinfo` and `statmount` show it: options are
/// split at the commas the kernel wrote, then the value's escapes are decoded (so a comma in a path is kept).
pub(crate) fn option_value(opts: &[u8], key: &str) -> Option<PathBuf> {
    opts.split(|&b| b == b',').find_map(|o| {
        let v = o.strip_prefix(key.as_bytes())?.strip_prefix(b"=")?;
        Some(unescape_path(v))
    })
}

/// How many times this thread read the mount table (tests count them).
#[cfg(test)]
pub(crate) fn reads() -> u64 {
    READS.with(|r| r.get())
}

#[cfg(test)]
thread_local! {
    static READS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

impl MountTable {
    /// Read `/proc/thread-self/mountinfo`.
    ///
    /// The calling thread's view: a thread that entered a mount namespace of its own (as this crate's tests do) sees
    /// its own mounts, which `/proc/self/mountinfo` (the main thread's) would not show.
    ///
    /// # Errors
    /// [`ErrorKind::Os`](crate::ErrorKind::Os) if `/proc` is not mounted or the file cannot be read;
    /// [`ErrorKind::InvalidInput`](crate::ErrorKind::InvalidInput) if a line is malformed.
    ///
    /// # Kernel
    /// Any with `/proc/thread-self` (3.17).
    ///
    /// ```no_run
    /// let table = layermount::MountTable::current()?;
    /// println!("{} mounts", table.mounts().len());
    /// # Ok::<(), layermount::Error>(())
    /// ```
    pub fn current() -> Result<Self> {
        #[cfg(test)]
        READS.with(|r| r.set(r.get() + 1));
        let text = std::fs::read("/proc/thread-self/mountinfo")
            .or_else(|_| std::fs::read("/proc/self/mountinfo"))
            .map_err(|e| Error::io("read mountinfo", &e).with_path("/proc/thread-self/mountinfo"))?;
        Self::parse(&text)
    }

    /// Parse a whole `mountinfo` text (bytes: see [`MountInfo::parse_line`]).
    ///
    /// ```
    /// let t = layermount::MountTable::parse("22 1 0:21 / / rw shared:1 - tmpfs tmp rw\n")?;
    /// assert_eq!(t.mounts()[0].fs_type, "tmpfs");
    /// # Ok::<(), layermount::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidInput`] if any line is malformed.
    ///
    /// # Kernel
    /// None: no system call (parsing only).
    pub fn parse(text: impl AsRef<[u8]>) -> Result<Self> {
        let mounts = text
            .as_ref()
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .map(MountInfo::parse_line)
            .collect::<Result<_>>()?;
        Ok(Self { mounts })
    }

    /// Every mount, in the kernel's order (parents before children).
    ///
    /// ```
    /// let t = layermount::MountTable::parse("22 1 0:21 / / rw - tmpfs tmp rw\n23 22 0:22 / /proc rw - proc proc rw\n")?;
    /// let points: Vec<_> = t.mounts().iter().map(|m| m.mount_point.to_str().unwrap()).collect();
    /// assert_eq!(points, ["/", "/proc"]);
    /// # Ok::<(), layermount::Error>(())
    /// ```
    pub fn mounts(&self) -> &[MountInfo] {
        &self.mounts
    }

    /// The mount with this id.
    ///
    /// ```
    /// let t = layermount::MountTable::parse("22 1 0:21 / / rw - tmpfs tmp rw\n23 22 0:22 / /proc rw - proc proc rw\n")?;
    /// assert_eq!(t.by_id(23).unwrap().fs_type, "proc");
    /// assert!(t.by_id(99).is_none());
    /// # Ok::<(), layermount::Error>(())
    /// ```
    pub fn by_id(&self, mount_id: u64) -> Option<&MountInfo> {
        self.mounts.iter().find(|m| m.mount_id == mount_id)
    }

    /// The mount `path` is on (following symlinks in the path, like `stat`, but not in its last component).
    ///
    /// The mount is found by the id `statx` reports for `path`, so it is the mount the kernel resolves `path` on, not a
    /// guess from the path text.
    ///
    /// # Errors
    /// [`ErrorKind::Os`](crate::ErrorKind::Os) if `path` cannot be looked at (`statx`);
    /// [`ErrorKind::InvalidInput`](crate::ErrorKind::InvalidInput) if its mount is not in this table (the table is
    /// older than the mount, or from another namespace).
    ///
    /// # Kernel
    /// `statx` with `STATX_MNT_ID` (Linux 5.8).
    ///
    /// ```no_run
    /// let table = layermount::MountTable::current()?;
    /// let m = table.mount_of("/var/lib/layers")?;
    /// println!("layers are on {} ({})", m.mount_point.display(), m.fs_type);
    /// # Ok::<(), layermount::Error>(())
    /// ```
    pub fn mount_of(&self, path: impl AsRef<Path>) -> Result<&MountInfo> {
        let path = path.as_ref();
        let id = mount_id_of(CWD, path).op_path("find mount of", path)?;
        self.by_id(id).ok_or_else(|| {
            Error::new(ErrorKind::InvalidInput, "find mount of")
                .with_path(path)
                .with_detail(format!("mount id {id} is not in this thread's mount table"))
        })
    }

    /// Mounts whose mount point is `path` or lies beneath it (by the path text in the table).
    ///
    /// ```
    /// use std::path::Path;
    /// let t = layermount::MountTable::parse(
    ///     "22 1 0:21 / / rw - tmpfs t rw\n30 22 0:30 / /run/c rw - overlay o rw\n31 30 0:31 / /run/c/proc rw - proc p rw\n",
    /// )?;
    /// assert_eq!(t.beneath(Path::new("/run/c")).count(), 2);
    /// # Ok::<(), layermount::Error>(())
    /// ```
    pub fn beneath<'a>(&'a self, path: &'a Path) -> impl Iterator<Item = &'a MountInfo> + 'a {
        self.mounts.iter().filter(move |m| m.mount_point.starts_with(path))
    }

    /// What changed from `before` to `self`: mounts that appeared and mounts that went away.
    ///
    /// This is the mount-leak check our tests run after every privileged case; use it in yours:
    ///
    /// ```no_run
    /// use layermount::MountTable;
    /// let before = MountTable::current()?;
    /// // ... mount and unmount things ...
    /// let changes = MountTable::current()?.changes_since(&before);
    /// assert!(changes.is_empty(), "leaked mounts: {changes}");
    /// # Ok::<(), layermount::Error>(())
    /// ```
    pub fn changes_since(&self, before: &MountTable) -> MountChanges {
        let key = |m: &MountInfo| (m.mount_id, m.mount_point.clone(), m.fs_type.clone(), m.root.clone());
        let old: std::collections::HashSet<_> = before.mounts.iter().map(key).collect();
        let new: std::collections::HashSet<_> = self.mounts.iter().map(key).collect();
        MountChanges {
            added: self.mounts.iter().filter(|m| !old.contains(&key(m))).cloned().collect(),
            removed: before.mounts.iter().filter(|m| !new.contains(&key(m))).cloned().collect(),
        }
    }
}

/// The difference between two [`MountTable`]s (see [`MountTable::changes_since`]).
///
/// ```
/// let before = layermount::MountTable::parse("22 1 0:21 / / rw - tmpfs t rw\n")?;
/// let after = layermount::MountTable::parse("22 1 0:21 / / rw - tmpfs t rw\n30 22 0:30 / /mnt rw - tmpfs x rw\n")?;
/// let changes = after.changes_since(&before);
/// assert_eq!(changes.added.len(), 1);
/// assert!(changes.removed.is_empty());
/// # Ok::<(), layermount::Error>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MountChanges {
    /// Mounts present now that were not before.
    pub added: Vec<MountInfo>,
    /// Mounts present before that are gone now.
    pub removed: Vec<MountInfo>,
}

impl MountChanges {
    /// True when nothing was mounted or unmounted.
    ///
    /// ```
    /// let t = layermount::MountTable::parse("22 1 0:21 / / rw - tmpfs t rw\n")?;
    /// assert!(t.changes_since(&t).is_empty());
    /// # Ok::<(), layermount::Error>(())
    /// ```
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty()
    }
}

impl fmt::Display for MountChanges {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("no change");
        }
        let mut first = true;
        for (sign, list) in [("+", &self.added), ("-", &self.removed)] {
            for m in list {
                if !first {
                    f.write_str(", ")?;
                }
                first = false;
                write!(f, "{sign}{} ({} {})", m.mount_point.display(), m.fs_type, m.source)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_escapes_and_optional_fields() {
        let text = "22 1 0:21 / / rw shared:1 - tmpfs tmp rw\n\
                    36 22 98:0 /mnt1 /mnt/a\\011b\\134c rw,noatime master:1 shared:2 - ext3 /dev/root rw,errors=continue\n\
                    37 22 0:5 / /x rw - overlay overlay rw,lowerdir=/a\\040b:/c\n";
        let t = MountTable::parse(text).unwrap();
        assert_eq!(t.mounts().len(), 3);
        let m = &t.mounts()[1];
        assert_eq!(m.mount_point, Path::new("/mnt/a\tb\\c"));
        assert_eq!(m.root, Path::new("/mnt1"));
        assert_eq!(m.optional_fields, ["master:1", "shared:2"]);
        assert_eq!(m.device, (98, 0));
        assert_eq!(t.mounts()[2].super_options, "rw,lowerdir=/a b:/c");
        assert_eq!(t.beneath(Path::new("/mnt")).count(), 1);
    }

    #[test]
    fn rejects_malformed_lines() {
        for line in ["", "1 2", "1 2 3:4 / /x rw shared:1 tmpfs", "x 1 0:1 / / rw - a b c"] {
            let e = MountInfo::parse_line(line).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidInput, "{line}");
        }
    }

    #[test]
    fn changes_report_both_sides() {
        let a = MountTable::parse("1 1 0:1 / / rw - tmpfs t rw\n2 1 0:2 / /a rw - tmpfs t rw\n").unwrap();
        let b = MountTable::parse("1 1 0:1 / / rw - tmpfs t rw\n3 1 0:3 / /b rw - tmpfs t rw\n").unwrap();
        let c = b.changes_since(&a);
        assert_eq!(c.added.len(), 1);
        assert_eq!(c.removed[0].mount_point, Path::new("/a"));
        assert_eq!(c.to_string(), "+/b (tmpfs t), -/a (tmpfs t)");
        assert!(a.changes_since(&a).is_empty());
    }
}
