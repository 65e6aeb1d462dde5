//! Applying tar entries to a staging directory, through directory fds, with OCI whiteout semantics and the merged
//! view of the lower layers for implied parents.
//!
//! Safety: every name is split into components and a `..` component is refused ([`ErrorKind::Breakout`]); a leading
//! `/` is dropped (the entry is contained). Directories are reached only by [`Extractor::resolve_dir`], which walks the
//! image's merged view one component at a time, following symlinks (of this layer or a lower one) as the image would
//! see them, with `/` meaning the layer root. Every file operation then goes through a parent directory fd opened with
//! `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV)` from the staging root, and
//! acts on a single name with `*at` calls that do not follow a symlink at that name. So even a mistake in the
//! resolver cannot write outside the layer.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::ffi::{OsStr, OsString};
use std::io::{Read, Seek, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags, StatxFlags, Timespec, Timestamps};
use rustix::io::Errno;

use super::digest::{self, CrcCache};
use super::options::{ApplyOptions, DeviceMode, SyncMode, WhiteoutMode};
use super::record::ApplyStats;
use super::xattr;
use crate::error::{Error, ErrorKind, LayerProblem, Result};

const OP: &str = "apply layer";
const OPAQUE_MARKER: &[u8] = b".wh..wh..opq";
const WHITEOUT_PREFIX: &[u8] = b".wh.";
const MAX_SYMLINK_HOPS: u32 = 40;
/// Compared against (as bytes, with `memcmp`) to find the zero runs of sparse files; as long as the read buffer.
static ZEROS: [u8; BUF_LEN] = [0; BUF_LEN];
const BUF_LEN: usize = 256 * 1024;

fn layer_error(problem: LayerProblem, path: impl AsRef<Path>) -> Error {
    Error::new(ErrorKind::InvalidLayer(problem), OP).with_path(path)
}

fn os(e: Errno, path: &Path) -> Error {
    Error::os(OP, e).with_path(path)
}

/// Split an archive name into components: empty and `.` components dropped (so a leading `/` is contained), `..`
/// refused.
pub(crate) fn components(name: &[u8]) -> Result<Vec<OsString>> {
    let mut out = Vec::new();
    for c in name.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                return Err(Error::new(ErrorKind::Breakout, OP)
                    .with_path(Path::new(OsStr::from_bytes(name)))
                    .with_detail("a \"..\" component"));
            }
            _ => out.push(OsStr::from_bytes(c).to_os_string()),
        }
    }
    Ok(out)
}

/// Metadata of an entry as it will be written.
#[derive(Debug, Clone, Default)]
pub(crate) struct Meta {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: (i64, u32),
    /// The access time the archive gives (PAX `atime`, or a GNU header's atime field), kept as given; the mtime
    /// otherwise.
    pub atime: Option<(i64, u32)>,
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Meta {
    fn timestamps(&self) -> Timestamps {
        let at = |(s, ns): (i64, u32)| Timespec { tv_sec: s, tv_nsec: ns as _ };
        Timestamps { last_access: at(self.atime.unwrap_or(self.mtime)), last_modification: at(self.mtime) }
    }
}

/// What the staging layer has at a name.
enum Here {
    Absent,
    Dir,
    Symlink(Vec<u8>),
    Other,
}

/// What the lower layers show at a name (the first visible one decides).
enum Below {
    Absent,
    Dir(Meta),
    Symlink(Vec<u8>),
}

#[derive(Debug, Clone)]
struct DirMeta {
    mode: u32,
    /// mtime and atime, or `None` to leave the time of extraction.
    times: Option<Timestamps>,
}

/// The state of one layer being applied.
pub(crate) struct Extractor<'a> {
    opts: &'a ApplyOptions,
    root: OwnedFd,
    root_path: PathBuf,
    lowers: Vec<OwnedFd>,
    // Path-keyed and ordered, so that what lies beneath a replaced directory is one range (`prune`), not a scan of
    // everything: 20k replaced directories cost 20k scans of the whole layer before.
    dirs: BTreeSet<PathBuf>,
    whiteouts: BTreeSet<PathBuf>,
    /// The directories this layer made opaque (recorded in the commit record, read by `audit`).
    opaque: HashSet<PathBuf>,
    dir_meta: BTreeMap<PathBuf, DirMeta>,
    visible: HashMap<PathBuf, Rc<Vec<usize>>>,
    parent_cache: Option<(PathBuf, Rc<OwnedFd>)>,
    root_opaque: bool,
    euid: u32,
    egid: u32,
    umask: u32,
    buf: Vec<u8>,
    crcs: CrcCache,
    stats: ApplyStats,
    /// The content-digest record of every entry, built from what was just written (see `digest`), unless the
    /// staging directory inherited something (a default ACL) that makes prediction unsafe: then `None`, and the
    /// digest is computed by walking the tree.
    records: Option<BTreeMap<PathBuf, Vec<u8>>>,
    /// A directory of this layer has a default ACL: nodes made beneath it may carry an access ACL nobody set, so
    /// their xattrs are read back whether or not the archive gave any.
    inherits: bool,
    root_record: Vec<u8>,
}

/// What an [`Extractor`] leaves when it is done: the counts, the opaque directories (sorted), the CRCs of the files
/// it wrote, and the content-digest records it built (`None` when it could not predict them).
pub(crate) struct Extracted {
    pub stats: ApplyStats,
    pub opaque: Vec<PathBuf>,
    pub crcs: CrcCache,
    pub predicted: Option<Predicted>,
}

/// The root's content-digest record and every entry's, by path.
pub(crate) type Predicted = (Vec<u8>, BTreeMap<PathBuf, Vec<u8>>);

fn beneath(dir: BorrowedFd<'_>, rel: &Path, oflags: OFlags) -> rustix::io::Result<OwnedFd> {
    let resolve = ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS | ResolveFlags::NO_XDEV;
    crate::fd::open_beneath(dir, rel, oflags, resolve)
}

/// What is read of a lower layer's directory to give a directory of this layer the same attributes.
const LOWER_DIR_STATX: StatxFlags = StatxFlags::TYPE
    .union(StatxFlags::MODE)
    .union(StatxFlags::UID)
    .union(StatxFlags::GID)
    .union(StatxFlags::MTIME)
    .union(StatxFlags::ATIME);

/// The attributes of the lower layer's directory `name` in `dir` (`name` empty: `dir` itself), from `st`: mode,
/// owner, times and its plain xattrs (never overlay's own).
fn lower_dir_meta(dir: BorrowedFd<'_>, name: &OsStr, st: &rustix::fs::Statx) -> Meta {
    let xattrs =
        xattr::list(dir, name).unwrap_or_default().into_iter().filter(|(k, _)| !xattr::is_overlay(k)).collect();
    Meta {
        mode: u32::from(st.stx_mode) & 0o7777,
        uid: st.stx_uid,
        gid: st.stx_gid,
        mtime: (st.stx_mtime.tv_sec, st.stx_mtime.tv_nsec),
        atime: Some((st.stx_atime.tv_sec, st.stx_atime.tv_nsec)),
        xattrs,
    }
}

/// A device entry's major and minor as the header writes them (octal, or GNU base-256 as Go's archive/tar writes
/// any int64), refused unless the kernel can hold them: `mknod` takes 12 bits of major and 20 of minor and would
/// silently make another node from larger numbers (containerd refuses negative numbers and numbers >= 2^32).
fn device_numbers(h: &tar::Header, entry_name: &Path) -> Result<(u32, u32)> {
    if h.as_ustar().is_none() && h.as_gnu().is_none() {
        return Ok((0, 0));
    }
    let field = |at: usize| -> Option<i128> {
        let b = &h.as_bytes()[at..at + 8];
        if b[0] & 0x80 != 0 {
            // Base-256, two's complement when the sign bit (0x40 of the first byte) is set.
            let mut v: i128 = if b[0] & 0x40 != 0 { -1 } else { 0 };
            v = (v << 6) | i128::from(b[0] & 0x3f);
            for &c in &b[1..] {
                v = (v << 8) | i128::from(c);
            }
            return Some(v);
        }
        let text = std::str::from_utf8(b).ok()?;
        let text = text.trim_matches(|c| c == '\0' || c == ' ');
        if text.is_empty() { Some(0) } else { i128::from_str_radix(text, 8).ok() }
    };
    let (major, minor) = (field(329), field(337));
    match (major, minor) {
        (Some(ma), Some(mi)) if (0..1 << 12).contains(&ma) && (0..1 << 20).contains(&mi) => Ok((ma as u32, mi as u32)),
        _ => {
            let show = |v: Option<i128>| v.map_or("?".to_string(), |v| v.to_string());
            Err(layer_error(LayerProblem::UnsupportedEntry, entry_name).with_detail(format!(
                "device number {}:{} out of range (the kernel holds majors below 4096 and minors below 1048576)",
                show(major),
                show(minor)
            )))
        }
    }
}

fn split_target(target: &[u8]) -> (bool, VecDeque<OsString>) {
    let absolute = target.first() == Some(&b'/');
    let comps = target.split(|&b| b == b'/').filter(|c| !c.is_empty()).map(|c| OsStr::from_bytes(c).to_os_string());
    (absolute, comps.collect())
}

impl<'a> Extractor<'a> {
    pub fn new(opts: &'a ApplyOptions, root: OwnedFd, root_path: PathBuf, lowers: Vec<OwnedFd>) -> Self {
        let mut dirs = BTreeSet::new();
        dirs.insert(PathBuf::new());
        // Records can be predicted only if nothing is inherited from the store (a default ACL would add xattrs and
        // change modes behind our back).
        let predict = xattr::list(root.as_fd(), OsStr::new("")).is_ok_and(|x| !digest::has_own_xattrs(&x));
        let mut ex = Self {
            opts,
            root,
            root_path,
            lowers,
            dirs,
            whiteouts: BTreeSet::new(),
            opaque: HashSet::new(),
            dir_meta: BTreeMap::new(),
            visible: HashMap::new(),
            parent_cache: None,
            root_opaque: false,
            euid: rustix::process::geteuid().as_raw(),
            egid: rustix::process::getegid().as_raw(),
            umask: current_umask(),
            buf: vec![0u8; BUF_LEN],
            crcs: CrcCache::new(),
            stats: ApplyStats::default(),
            records: None,
            inherits: false,
            root_record: Vec::new(),
        };
        if predict {
            ex.records = Some(BTreeMap::new());
        }
        ex
    }

    fn record(&mut self, rel: PathBuf, facts: &digest::Facts<'_>) {
        if let Some(r) = &mut self.records {
            r.insert(rel, digest::encode(facts));
        }
    }

    /// The xattrs of a node as the kernel keeps them, read back only if any were set.
    fn xattrs_of(
        &self,
        dir: BorrowedFd<'_>,
        name: &OsStr,
        set: &[(Vec<u8>, Vec<u8>)],
        rel: &Path,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        if self.records.is_none() || (set.is_empty() && !self.inherits) {
            return Ok(Vec::new());
        }
        xattr::list(dir, name).map_err(|e| os(e, &self.full(rel)))
    }

    /// `facts` with the mode, owner and mtime the filesystem kept for the node just made (`name` in `dir`, or `dir`
    /// itself when `name` is empty) rather than those asked for: a default ACL changes modes, a filesystem clamps
    /// times outside its range or drops nanoseconds. One `statx`, and only while records are kept.
    fn kept<'f>(
        &self,
        dir: BorrowedFd<'_>,
        name: &OsStr,
        rel: &Path,
        mut facts: digest::Facts<'f>,
    ) -> Result<digest::Facts<'f>> {
        if self.records.is_none() {
            return Ok(facts);
        }
        let flags = if name.is_empty() { AtFlags::EMPTY_PATH } else { AtFlags::SYMLINK_NOFOLLOW };
        let want = StatxFlags::TYPE | StatxFlags::MODE | StatxFlags::UID | StatxFlags::GID | StatxFlags::MTIME;
        let st = rustix::fs::statx(dir, name, flags, want).map_err(|e| os(e, &self.full(rel)))?;
        facts.mode = u32::from(st.stx_mode);
        facts.uid = st.stx_uid;
        facts.gid = st.stx_gid;
        facts.mtime = (st.stx_mtime.tv_sec, st.stx_mtime.tv_nsec);
        Ok(facts)
    }

    fn full(&self, rel: &Path) -> PathBuf {
        self.root_path.join(rel)
    }

    /// An fd of the staging directory `rel` (a path the resolver produced: real directories only).
    fn dir_fd(&mut self, rel: &Path) -> Result<Rc<OwnedFd>> {
        if let Some((p, fd)) = &self.parent_cache
            && p == rel
        {
            return Ok(fd.clone());
        }
        let fd = Rc::new(beneath(self.root.as_fd(), rel, OFlags::PATH).map_err(|e| os(e, &self.full(rel)))?);
        self.parent_cache = Some((rel.to_path_buf(), fd.clone()));
        Ok(fd)
    }

    fn ids(&self, uid: u64, gid: u64, name: &Path) -> Result<(u32, u32)> {
        let (uid, gid) = match (u32::try_from(uid), u32::try_from(gid)) {
            (Ok(u), Ok(g)) => (u, g),
            _ => return Err(layer_error(LayerProblem::UnmappedId, name).with_detail(format!("uid {uid} gid {gid}"))),
        };
        match &self.opts.shift {
            None => Ok((uid, gid)),
            Some(map) => match (map.to_host(uid), map.to_host(gid)) {
                (Some(u), Some(g)) => Ok((u, g)),
                _ => Err(layer_error(LayerProblem::UnmappedId, name).with_detail(format!("uid {uid} gid {gid}"))),
            },
        }
    }

    fn default_meta(&self) -> Meta {
        let (uid, gid) = self.ids(0, 0, Path::new("/")).unwrap_or((0, 0));
        Meta { mode: 0o755, uid, gid, mtime: (0, 0), atime: None, xattrs: Vec::new() }
    }

    fn here(&mut self, parent: &Path, name: &OsStr) -> Result<Here> {
        let fd = self.dir_fd(parent)?;
        match rustix::fs::statx(&*fd, name, AtFlags::SYMLINK_NOFOLLOW, StatxFlags::TYPE) {
            Err(Errno::NOENT) => Ok(Here::Absent),
            Err(e) => Err(os(e, &self.full(&parent.join(name)))),
            Ok(st) => Ok(match FileType::from_raw_mode(u32::from(st.stx_mode)) {
                FileType::Directory => Here::Dir,
                FileType::Symlink => Here::Symlink(
                    rustix::fs::readlinkat(&*fd, name, Vec::new())
                        .map_err(|e| os(e, &self.full(&parent.join(name))))?
                        .into_bytes(),
                ),
                _ => Here::Other,
            }),
        }
    }

    fn is_opaque(fd: BorrowedFd<'_>) -> bool {
        ["trusted.overlay.opaque", "user.overlay.opaque"]
            .iter()
            .any(|k| xattr::get_at(fd, OsStr::new(""), k).as_deref() == Some(b"y"))
    }

    /// Indexes of the lower layers in which `rel` is a directory visible in the merged view, top-most first.
    fn visible(&mut self, rel: &Path) -> Rc<Vec<usize>> {
        if let Some(v) = self.visible.get(rel) {
            return v.clone();
        }
        let v = match rel.parent() {
            None => (0..self.lowers.len()).collect(),
            Some(parent) => {
                let above = self.visible(parent);
                let mut v = Vec::new();
                for &i in above.iter() {
                    match beneath(self.lowers[i].as_fd(), rel, OFlags::RDONLY) {
                        Ok(fd) => {
                            v.push(i);
                            if Self::is_opaque(fd.as_fd()) {
                                break;
                            }
                        }
                        Err(Errno::NOENT) => {}
                        // A non-directory (file, symlink, whiteout) hides every layer below it.
                        Err(_) => break,
                    }
                }
                v
            }
        };
        let v = Rc::new(v);
        self.visible.insert(rel.to_path_buf(), v.clone());
        v
    }

    /// What the lower layers show at `parent/name`.
    fn below(&mut self, parent: &Path, name: &OsStr) -> Result<Below> {
        for &i in self.visible(parent).iter() {
            let Ok(pfd) = beneath(self.lowers[i].as_fd(), parent, OFlags::RDONLY) else { continue };
            let st = match rustix::fs::statx(
                &pfd,
                name,
                AtFlags::SYMLINK_NOFOLLOW | AtFlags::STATX_DONT_SYNC,
                LOWER_DIR_STATX | StatxFlags::SIZE,
            ) {
                Err(Errno::NOENT) if Self::is_opaque(pfd.as_fd()) => return Ok(Below::Absent),
                Err(_) => continue,
                Ok(st) => st,
            };
            return Ok(match FileType::from_raw_mode(u32::from(st.stx_mode)) {
                FileType::Directory => Below::Dir(lower_dir_meta(pfd.as_fd(), name, &st)),
                FileType::Symlink => match rustix::fs::readlinkat(&pfd, name, Vec::new()) {
                    Ok(t) => Below::Symlink(t.into_bytes()),
                    Err(_) => Below::Absent,
                },
                // A whiteout, a file, a device: nothing to descend into.
                _ => Below::Absent,
            });
        }
        Ok(Below::Absent)
    }

    /// True when the lower layers show something (anything but a whiteout) at `parent/name`.
    fn below_exists(&mut self, parent: &Path, name: &OsStr) -> bool {
        for &i in self.visible(parent).iter() {
            let Ok(pfd) = beneath(self.lowers[i].as_fd(), parent, OFlags::RDONLY) else { continue };
            match rustix::fs::statx(&pfd, name, AtFlags::SYMLINK_NOFOLLOW, StatxFlags::TYPE | StatxFlags::SIZE) {
                Err(_) if Self::is_opaque(pfd.as_fd()) => return false,
                Err(_) => continue,
                Ok(st) => {
                    let ft = FileType::from_raw_mode(u32::from(st.stx_mode));
                    let whiteout = ft == FileType::CharacterDevice && (st.stx_rdev_major, st.stx_rdev_minor) == (0, 0);
                    return !whiteout;
                }
            }
        }
        false
    }

    /// Remove whatever is at `parent/name` in the staging layer (a directory recursively, never following a
    /// symlink), and forget what we knew about it.
    fn clear(&mut self, parent: &Path, name: &OsStr) -> Result<()> {
        let rel = parent.join(name);
        let fd = self.dir_fd(parent)?;
        match rustix::fs::unlinkat(&*fd, name, AtFlags::empty()) {
            Ok(()) | Err(Errno::NOENT) => {}
            Err(Errno::ISDIR) => {
                // No mount-table read per replaced directory: nothing is mounted in a staging directory we made,
                // and the per-step checks would stop at a mount anyway.
                crate::remove::remove_at(&fd, name, &self.full(&rel), false)?;
                prune(&mut self.dirs, &rel);
                prune(&mut self.dir_meta, &rel);
                prune(&mut self.whiteouts, &rel);
                if let Some(r) = &mut self.records {
                    prune(r, &rel);
                }
                if !self.opaque.is_empty() {
                    self.opaque.retain(|d| !d.starts_with(&rel));
                }
                self.parent_cache = None;
            }
            Err(e) => return Err(os(e, &self.full(&rel))),
        }
        self.whiteouts.remove(&rel);
        self.crcs.remove(&rel);
        if let Some(r) = &mut self.records {
            r.remove(&rel);
        }
        Ok(())
    }

    /// Owner and xattrs of `name` in `parent` (no symlink followed), then its mtime.
    /// `existed`: the node was there before (a directory met again), so its owner may be anything.
    fn finish_node(&mut self, parent: &Path, name: &OsStr, meta: &Meta, times: bool, existed: bool) -> Result<()> {
        let rel = parent.join(name);
        let fd = self.dir_fd(parent)?;
        if existed || (meta.uid, meta.gid) != (self.euid, self.egid) {
            rustix::fs::chownat(
                &*fd,
                name,
                Some(rustix::fs::Uid::from_raw(meta.uid)),
                Some(rustix::fs::Gid::from_raw(meta.gid)),
                AtFlags::SYMLINK_NOFOLLOW,
            )
            .map_err(|e| os(e, &self.full(&rel)))?;
        }
        for (k, v) in &meta.xattrs {
            let set = xattr::set_at(fd.as_fd(), name, k, v);
            self.xattr_set(set, &rel)?;
            self.inherits |= k == b"system.posix_acl_default";
        }
        if times {
            rustix::fs::utimensat(&*fd, name, &meta.timestamps(), AtFlags::SYMLINK_NOFOLLOW)
                .map_err(|e| os(e, &self.full(&rel)))?;
        }
        Ok(())
    }

    /// The outcome of setting one archive xattr: one the filesystem does not support (`EOPNOTSUPP`) is skipped and
    /// counted, as containerd and umoci skip it; any other failure is an error.
    fn xattr_set(&mut self, set: rustix::io::Result<()>, rel: &Path) -> Result<()> {
        match set {
            Ok(()) => Ok(()),
            Err(Errno::NOTSUP) => {
                self.stats.skipped_xattrs += 1;
                Ok(())
            }
            Err(e) => Err(os(e, &self.full(rel)).with_detail("set xattr")),
        }
    }

    /// Make `parent/name` a directory of this layer with `meta` (mode and mtime applied at the end, so that
    /// children can be added first). An existing directory keeps its children and takes `meta`.
    fn make_dir(&mut self, parent: &Path, name: &OsStr, meta: &Meta, explicit: bool) -> Result<()> {
        let rel = parent.join(name);
        let was_whiteout = self.whiteouts.contains(&rel);
        let fd = self.dir_fd(parent)?;
        let existed = match rustix::fs::mkdirat(&*fd, name, Mode::RWXU) {
            Ok(()) => false,
            Err(Errno::EXIST) => match self.here(parent, name)? {
                // An existing directory keeps its children and takes the entry's attributes (owner included).
                Here::Dir => true,
                _ => {
                    self.clear(parent, name)?;
                    let fd = self.dir_fd(parent)?;
                    rustix::fs::mkdirat(&*fd, name, Mode::RWXU).map_err(|e| os(e, &self.full(&rel)))?;
                    false
                }
            },
            Err(e) => return Err(os(e, &self.full(&rel))),
        };
        self.finish_node(parent, name, meta, false, existed)?;
        let times = (explicit || meta.mtime != (0, 0)).then(|| meta.timestamps());
        self.dir_meta.insert(rel.clone(), DirMeta { mode: meta.mode, times });
        self.whiteouts.remove(&rel);
        if was_whiteout {
            // A directory whited out earlier in this same layer, then made again: it hides the lower one.
            self.set_opaque(&rel)?;
        }
        self.dirs.insert(rel);
        Ok(())
    }

    /// Resolve the image directory `comps` to a real directory of the staging layer, following symlinks of this
    /// layer and of the lower layers inside the image, and creating missing directories (with the metadata of the
    /// same directory in the nearest lower layer) unless `create` is false, when a missing one yields `None`.
    fn resolve_dir(&mut self, comps: &[OsString], create: bool) -> Result<Option<PathBuf>> {
        let mut todo: VecDeque<OsString> = comps.iter().cloned().collect();
        let mut cur = PathBuf::new();
        let mut hops = 0;
        while let Some(c) = todo.pop_front() {
            if c == ".." {
                cur.pop();
                continue;
            }
            if c == "." {
                continue;
            }
            let next = cur.join(&c);
            if self.dirs.contains(&next) {
                cur = next;
                continue;
            }
            let here = self.here(&cur, &c)?;
            let follow = match here {
                Here::Dir => {
                    self.dirs.insert(next.clone());
                    cur = next;
                    continue;
                }
                Here::Symlink(target) => Some(target),
                Here::Absent => match self.below(&cur, &c)? {
                    Below::Symlink(target) => Some(target),
                    Below::Dir(meta) => {
                        if !create {
                            return Ok(None);
                        }
                        self.make_dir(&cur, &c, &meta, false)?;
                        cur = next;
                        continue;
                    }
                    Below::Absent => None,
                },
                Here::Other => None,
            };
            match follow {
                Some(target) => {
                    hops += 1;
                    if hops > MAX_SYMLINK_HOPS {
                        return Err(os(Errno::LOOP, &self.full(&next)));
                    }
                    let (absolute, mut rest) = split_target(&target);
                    if absolute {
                        cur = PathBuf::new();
                    }
                    rest.extend(todo);
                    todo = rest;
                }
                None => {
                    if !create {
                        return Ok(None);
                    }
                    let meta = self.default_meta();
                    self.make_dir(&cur, &c, &meta, false)?;
                    cur = next;
                }
            }
        }
        Ok(Some(cur))
    }

    fn set_opaque(&mut self, rel: &Path) -> Result<()> {
        let key: &[u8] = match self.opts.whiteouts {
            WhiteoutMode::Overlay => b"trusted.overlay.opaque",
            WhiteoutMode::OverlayUserXattr => b"user.overlay.opaque",
            WhiteoutMode::Oci => return Ok(()),
        };
        if rel.as_os_str().is_empty() {
            self.root_opaque = true;
            return Ok(());
        }
        let (parent, name) = (rel.parent().unwrap_or(Path::new("")), rel.file_name().unwrap_or_default());
        let fd = self.dir_fd(parent)?;
        xattr::set_at(fd.as_fd(), name, key, b"y").map_err(|e| os(e, &self.full(rel)).with_detail("set opaque"))?;
        if self.opaque.insert(rel.to_path_buf()) {
            self.stats.opaque_dirs += 1;
        }
        // Whiteouts this layer wrote beneath it before the marker came are now redundant, and would be phantoms.
        let mut beneath: Vec<PathBuf> =
            self.whiteouts.iter().filter(|w| w.starts_with(rel) && *w != rel).cloned().collect();
        beneath.sort();
        for w in beneath {
            let (parent, name) = (w.parent().unwrap_or(Path::new("")), w.file_name().unwrap_or_default());
            self.clear(parent, name)?;
            self.stats.whiteouts -= 1;
        }
        Ok(())
    }

    /// True when `dir` or one of its ancestors (the layer root aside, where overlay ignores opacity) was made opaque
    /// by this layer.
    fn under_opaque(&self, dir: &Path) -> bool {
        !self.opaque.is_empty() && dir.ancestors().any(|a| !a.as_os_str().is_empty() && self.opaque.contains(a))
    }

    /// Make a whiteout at `parent/name`: a 0/0 character device, in both overlay modes. Unprivileged callers may
    /// make one (Linux 5.8) and overlay honours it under `userxattr` too; the xattr form of 6.7 (an empty file with
    /// `overlay.whiteout` in a directory marked `opaque=x`) is not used, since overlay 6.18 still lists such a
    /// whiteout when it sits in a layer's root directory.
    fn make_whiteout(&mut self, parent: &Path, name: &OsStr, meta: &Meta) -> Result<()> {
        let rel = parent.join(name);
        let fd = self.dir_fd(parent)?;
        rustix::fs::mknodat(&*fd, name, FileType::CharacterDevice, Mode::empty(), rustix::fs::makedev(0, 0))
            .map_err(|e| os(e, &self.full(&rel)).with_detail("make whiteout"))?;
        let node_meta = Meta { xattrs: Vec::new(), ..meta.clone() };
        self.finish_node(parent, name, &node_meta, true, false)?;
        let xattrs = self.xattrs_of(fd.as_fd(), name, &[], &rel)?;
        let facts = digest::Facts {
            mode: FileType::CharacterDevice.as_raw_mode(),
            uid: meta.uid,
            gid: meta.gid,
            mtime: meta.mtime,
            xattrs: &xattrs,
            ..Default::default()
        };
        let facts = self.kept(fd.as_fd(), name, &rel, facts)?;
        self.record(rel.clone(), &facts);
        self.whiteouts.insert(rel);
        self.stats.whiteouts += 1;
        Ok(())
    }

    /// Apply one archive entry.
    pub fn entry<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<()> {
        let raw_name = entry.path_bytes().into_owned();
        let name_path = PathBuf::from(OsString::from_vec(raw_name.clone()));
        let kind = entry.header().entry_type();
        if kind.is_pax_global_extensions() {
            return Ok(());
        }
        self.stats.entries += 1;
        let comps = components(&raw_name)?;
        let meta = self.meta(entry, &name_path)?;
        let Some((leaf, parent_comps)) = comps.split_last() else {
            // The layer root itself ("./"): only a directory can describe it.
            if kind.is_dir() {
                self.dir_meta.insert(PathBuf::new(), DirMeta { mode: meta.mode, times: Some(meta.timestamps()) });
                // Always: the staging root may have inherited a setgid directory's group.
                let (u, g) = (rustix::fs::Uid::from_raw(meta.uid), rustix::fs::Gid::from_raw(meta.gid));
                rustix::fs::chownat(&self.root, "", Some(u), Some(g), AtFlags::EMPTY_PATH)
                    .map_err(|e| os(e, &self.root_path))?;
                return Ok(());
            }
            return Err(layer_error(LayerProblem::UnsupportedEntry, &name_path)
                .with_detail("a non-directory as the layer root"));
        };
        let leaf_bytes = leaf.as_bytes();
        if self.opts.whiteouts != WhiteoutMode::Oci && leaf_bytes.starts_with(WHITEOUT_PREFIX) {
            return self.whiteout_entry(parent_comps, leaf_bytes, &meta, &name_path);
        }
        let parent = self.resolve_dir(parent_comps, true)?.expect("created");
        match kind {
            tar::EntryType::Directory => {
                self.make_dir(&parent, leaf, &meta, true)?;
                self.stats.dirs += 1;
            }
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
                let sparse = kind == tar::EntryType::GNUSparse;
                self.file(&parent, leaf, &meta, entry, sparse)?;
            }
            tar::EntryType::Symlink => {
                let target = entry.link_name_bytes().map(|t| t.into_owned()).unwrap_or_default();
                if target.is_empty() {
                    return Err(
                        layer_error(LayerProblem::UnsupportedEntry, &name_path).with_detail("symlink without a target")
                    );
                }
                self.replace(&parent, leaf)?;
                let fd = self.dir_fd(&parent)?;
                rustix::fs::symlinkat(OsStr::from_bytes(&target), &*fd, leaf)
                    .map_err(|e| os(e, &self.full(&parent.join(leaf))))?;
                self.finish_node(&parent, leaf, &meta, true, false)?;
                let fd = self.dir_fd(&parent)?;
                let xattrs = self.xattrs_of(fd.as_fd(), leaf, &meta.xattrs, &parent.join(leaf))?;
                let facts = digest::Facts {
                    mode: FileType::Symlink.as_raw_mode() | 0o777,
                    uid: meta.uid,
                    gid: meta.gid,
                    target: &target,
                    mtime: meta.mtime,
                    xattrs: &xattrs,
                    ..Default::default()
                };
                let facts = self.kept(fd.as_fd(), leaf, &parent.join(leaf), facts)?;
                self.record(parent.join(leaf), &facts);
                self.stats.symlinks += 1;
            }
            tar::EntryType::Link => {
                let target = entry.link_name_bytes().map(|t| t.into_owned()).unwrap_or_default();
                self.hardlink(&parent, leaf, &target, &name_path)?;
            }
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                self.special(&parent, leaf, kind, &meta, entry, &name_path)?;
            }
            other => {
                return Err(layer_error(LayerProblem::UnsupportedEntry, &name_path)
                    .with_detail(format!("entry type {other:?}")));
            }
        }
        Ok(())
    }

    /// Clear the way for a new non-directory at `parent/name` (collisions unlink first, never write through).
    fn replace(&mut self, parent: &Path, name: &OsStr) -> Result<()> {
        let fd = self.dir_fd(parent)?;
        match rustix::fs::statx(&*fd, name, AtFlags::SYMLINK_NOFOLLOW, StatxFlags::TYPE) {
            Err(Errno::NOENT) => Ok(()),
            _ => self.clear(parent, name),
        }
    }

    fn meta<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>, name: &Path) -> Result<Meta> {
        let h = entry.header();
        let bad = |e: std::io::Error| corrupt(&e, name);
        let mode = h.mode().map_err(bad)? & 0o7777;
        // An owner field left empty (all NULs or spaces, as some writers leave it) means 0, as it does for tar(1).
        let blank = |field: &[u8]| field.iter().all(|&b| b == 0 || b == b' ');
        let old = h.as_old();
        let uid = if blank(&old.uid) { 0 } else { h.uid().map_err(bad)? };
        let gid = if blank(&old.gid) { 0 } else { h.gid().map_err(bad)? };
        let mut mtime = (h.mtime().unwrap_or(0) as i64, 0u32);
        let mut atime = h.as_gnu().and_then(|g| g.atime().ok()).filter(|&t| t != 0).map(|t| (t as i64, 0u32));
        let (uid, gid) = self.ids(uid, gid, name)?;
        let mut xattrs = Vec::new();
        let mut dropped = 0;
        if let Ok(Some(exts)) = entry.pax_extensions() {
            for ext in exts.flatten() {
                let key = ext.key_bytes();
                if key == b"mtime" || key == b"atime" {
                    if let Some(t) = parse_pax_time(ext.value_bytes()) {
                        if key == b"mtime" {
                            mtime = t;
                        } else {
                            atime = Some(t);
                        }
                    }
                } else if let Some(x) = key.strip_prefix(b"SCHILY.xattr.") {
                    if xattr::is_overlay(x) {
                        dropped += 1;
                    } else {
                        xattrs.push((x.to_vec(), ext.value_bytes().to_vec()));
                    }
                }
            }
        }
        self.stats.dropped_xattrs += dropped;
        Ok(Meta { mode, uid, gid, mtime, atime, xattrs })
    }

    /// A regular file. A GNU sparse entry (`sparse`) keeps its holes: the archive reader yields zeros for them, and
    /// an all-zero chunk is skipped over (its CRC summed without reading), never written.
    fn file<R: Read>(&mut self, parent: &Path, name: &OsStr, meta: &Meta, data: &mut R, sparse: bool) -> Result<()> {
        let rel = parent.join(name);
        let flags = OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        // Created with its final permission bits (a new file's fd is writable whatever they say); a chmod is needed
        // only when the umask took bits away, for set-id and sticky bits, or after a chown (which clears set-id).
        let create_mode = Mode::from_raw_mode(meta.mode & 0o777);
        let chown = (meta.uid, meta.gid) != (self.euid, self.egid);
        let chmod = chown || meta.mode & 0o7000 != 0 || meta.mode & self.umask != 0;
        let fd = self.dir_fd(parent)?;
        let fd = match rustix::fs::openat(&*fd, name, flags, create_mode) {
            Ok(f) => f,
            Err(Errno::EXIST) => {
                self.clear(parent, name)?;
                let fd = self.dir_fd(parent)?;
                rustix::fs::openat(&*fd, name, flags, create_mode).map_err(|e| os(e, &self.full(&rel)))?
            }
            Err(e) => return Err(os(e, &self.full(&rel))),
        };
        let mut file = std::fs::File::from(fd);
        let mut crc = crc32fast::Hasher::new();
        let mut written = 0u64;
        loop {
            let n = match data.read(&mut self.buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(corrupt(&e, &rel)),
            };
            written += n as u64;
            if sparse && self.buf[..n] == ZEROS[..n] {
                crc.combine(&digest::zeros(n as u64));
                file.seek(std::io::SeekFrom::Current(n as i64))
                    .map_err(|e| Error::io(OP, &e).with_path(self.full(&rel)))?;
                continue;
            }
            crc.update(&self.buf[..n]);
            file.write_all(&self.buf[..n]).map_err(|e| Error::io(OP, &e).with_path(self.full(&rel)))?;
            self.stats.bytes += n as u64;
        }
        if sparse {
            // A trailing hole: the size is set, nothing written.
            file.set_len(written).map_err(|e| Error::io(OP, &e).with_path(self.full(&rel)))?;
        }
        if chown {
            let (u, g) = (rustix::fs::Uid::from_raw(meta.uid), rustix::fs::Gid::from_raw(meta.gid));
            rustix::fs::fchown(&file, Some(u), Some(g)).map_err(|e| os(e, &self.full(&rel)))?;
        }
        if chmod {
            // After chown, which clears set-id bits and file capabilities.
            rustix::fs::fchmod(&file, Mode::from_raw_mode(meta.mode)).map_err(|e| os(e, &self.full(&rel)))?;
        }
        for (k, v) in &meta.xattrs {
            let set = rustix::fs::fsetxattr(&file, OsStr::from_bytes(k), v, rustix::fs::XattrFlags::empty());
            self.xattr_set(set, &rel)?;
        }
        rustix::fs::futimens(&file, &meta.timestamps()).map_err(|e| os(e, &self.full(&rel)))?;
        if self.opts.sync == SyncMode::Fsync {
            rustix::fs::fsync(&file).map_err(|e| os(e, &self.full(&rel)))?;
        }
        let crc = crc.finalize();
        let xattrs = self.xattrs_of(file.as_fd(), OsStr::new(""), &meta.xattrs, &rel)?;
        let facts = digest::Facts {
            mode: FileType::RegularFile.as_raw_mode() | meta.mode,
            uid: meta.uid,
            gid: meta.gid,
            size: written,
            crc,
            mtime: meta.mtime,
            xattrs: &xattrs,
            ..Default::default()
        };
        let facts = self.kept(file.as_fd(), OsStr::new(""), &rel, facts)?;
        self.record(rel.clone(), &facts);
        self.crcs.insert(rel, crc);
        self.stats.files += 1;
        Ok(())
    }

    fn hardlink(&mut self, parent: &Path, name: &OsStr, target: &[u8], entry_name: &Path) -> Result<()> {
        let tcomps = components(target)?;
        let missing = || {
            layer_error(LayerProblem::HardlinkTarget, entry_name)
                .with_detail(format!("target \"{}\"", String::from_utf8_lossy(target)))
        };
        let Some((tleaf, tparent_comps)) = tcomps.split_last() else { return Err(missing()) };
        let Some(tparent) = self.resolve_dir(tparent_comps, false)? else { return Err(missing()) };
        if tparent == parent && tleaf == name {
            return Ok(());
        }
        if self.whiteouts.contains(&tparent.join(tleaf)) {
            // What the target named is deleted by this very layer: a link would be one more whiteout.
            return Err(layer_error(LayerProblem::HardlinkTarget, entry_name).with_detail(format!(
                "target \"{}\" is whited out earlier in this layer",
                String::from_utf8_lossy(target)
            )));
        }
        let tfd = self.dir_fd(&tparent)?;
        match rustix::fs::statx(&*tfd, tleaf.as_os_str(), AtFlags::SYMLINK_NOFOLLOW, StatxFlags::TYPE) {
            Ok(st) if FileType::from_raw_mode(u32::from(st.stx_mode)) != FileType::Directory => {}
            _ => return Err(missing()),
        }
        self.replace(parent, name)?;
        let pfd = self.dir_fd(parent)?;
        rustix::fs::linkat(&*tfd, tleaf.as_os_str(), &*pfd, name, AtFlags::empty())
            .map_err(|e| os(e, &self.full(&parent.join(name))))?;
        if let Some(records) = &mut self.records {
            match records.get(&tparent.join(tleaf)).cloned() {
                Some(rec) => {
                    records.insert(parent.join(name), rec);
                }
                // A target with no record (cannot happen: every node made is recorded): stop predicting.
                None => self.records = None,
            }
        }
        if let Some(&crc) = self.crcs.get(&tparent.join(tleaf)) {
            self.crcs.insert(parent.join(name), crc);
        }
        self.stats.hardlinks += 1;
        Ok(())
    }

    fn special<R: Read>(
        &mut self,
        parent: &Path,
        name: &OsStr,
        kind: tar::EntryType,
        meta: &Meta,
        entry: &tar::Entry<'_, R>,
        entry_name: &Path,
    ) -> Result<()> {
        let rel = parent.join(name);
        let (ft, dev) = match kind {
            tar::EntryType::Fifo => (FileType::Fifo, 0),
            _ => {
                let (major, minor) = device_numbers(entry.header(), entry_name)?;
                let ft = if kind == tar::EntryType::Char { FileType::CharacterDevice } else { FileType::BlockDevice };
                if ft == FileType::CharacterDevice
                    && (major, minor) == (0, 0)
                    && self.opts.whiteouts != WhiteoutMode::Oci
                {
                    return Err(layer_error(LayerProblem::UnsupportedEntry, entry_name).with_detail(
                        "a 0/0 character device is overlay's whiteout; an OCI layer writes .wh. instead",
                    ));
                }
                (ft, rustix::fs::makedev(major, minor))
            }
        };
        self.replace(parent, name)?;
        let fd = self.dir_fd(parent)?;
        match rustix::fs::mknodat(&*fd, name, ft, Mode::from_raw_mode(meta.mode & 0o777), dev) {
            Ok(()) => {}
            Err(Errno::PERM) if ft != FileType::Fifo => match self.opts.devices {
                DeviceMode::Skip => {
                    self.stats.skipped_devices += 1;
                    return Ok(());
                }
                DeviceMode::Refuse => return Err(layer_error(LayerProblem::DeviceNotPermitted, entry_name)),
            },
            Err(e) => return Err(os(e, &self.full(&rel))),
        }
        self.finish_node(parent, name, meta, true, false)?;
        if meta.mode & 0o7000 != 0 || meta.mode & self.umask != 0 {
            rustix::fs::chmodat(&*fd, name, Mode::from_raw_mode(meta.mode), AtFlags::empty())
                .map_err(|e| os(e, &self.full(&rel)))?;
        }
        let xattrs = self.xattrs_of(fd.as_fd(), name, &meta.xattrs, &rel)?;
        let rdev = (rustix::fs::major(dev), rustix::fs::minor(dev));
        let facts = digest::Facts {
            mode: ft.as_raw_mode() | meta.mode,
            uid: meta.uid,
            gid: meta.gid,
            rdev,
            mtime: meta.mtime,
            xattrs: &xattrs,
            ..Default::default()
        };
        let facts = self.kept(fd.as_fd(), name, &rel, facts)?;
        self.record(rel, &facts);
        if ft == FileType::Fifo {
            self.stats.fifos += 1;
        } else {
            self.stats.devices += 1;
        }
        Ok(())
    }

    fn whiteout_entry(&mut self, parent_comps: &[OsString], leaf: &[u8], meta: &Meta, entry_name: &Path) -> Result<()> {
        let parent = self.resolve_dir(parent_comps, true)?.expect("created");
        if leaf == OPAQUE_MARKER {
            return self.set_opaque(&parent);
        }
        let target = &leaf[WHITEOUT_PREFIX.len()..];
        if target.starts_with(WHITEOUT_PREFIX) {
            // `.wh..wh.*` other than the opaque marker: aufs bookkeeping, meaningless to overlay.
            return Ok(());
        }
        if target.is_empty() || target == b"." || target == b".." {
            return Err(layer_error(LayerProblem::BadWhiteout, entry_name));
        }
        let target = OsStr::from_bytes(target);
        let rel = parent.join(target);
        match self.here(&parent, target)? {
            // Whiteouts apply to the layers below: an entry of this layer with the same name stays. A directory
            // of this layer must still hide the lower one's children, so it becomes opaque.
            Here::Dir => self.set_opaque(&rel),
            Here::Symlink(_) | Here::Other => Ok(()),
            // A directory this layer made opaque already hides every lower entry beneath it; a whiteout there would
            // be listed by overlay's readdir (the directory is not merged) and be missing to lstat.
            Here::Absent if self.under_opaque(&parent) => Ok(()),
            // Without lower layers to look at, hide whatever may be there; with them, only what they show (a
            // whiteout in a directory no lower layer has would be listed by overlay's readdir).
            Here::Absent if self.lowers.is_empty() || self.below_exists(&parent, target) => {
                self.make_whiteout(&parent, target, meta)
            }
            Here::Absent => Ok(()),
        }
    }

    /// After the last entry: a root-level opaque marker (which overlay ignores on a layer root) becomes explicit
    /// whiteouts of every name the lower layers show at the root; then directory modes and mtimes, deepest first.
    /// Returns what was extracted.
    pub fn finish(mut self) -> Result<Extracted> {
        self.finish_tree()?;
        let mut opaque: Vec<PathBuf> = self.opaque.into_iter().collect();
        opaque.sort();
        let predicted = self.records.map(|r| (self.root_record, r));
        Ok(Extracted { stats: self.stats, opaque, crcs: self.crcs, predicted })
    }

    fn finish_tree(&mut self) -> Result<()> {
        if self.root_opaque && self.opts.whiteouts != WhiteoutMode::Oci {
            let mut names: Vec<OsString> = Vec::new();
            for &i in self.visible(Path::new("")).iter() {
                let fd = beneath(self.lowers[i].as_fd(), Path::new(""), OFlags::RDONLY)
                    .map_err(|e| os(e, &self.opts.parents[i]))?;
                let mut dir = rustix::fs::Dir::read_from(&fd).map_err(|e| os(e, &self.opts.parents[i]))?;
                while let Some(Ok(e)) = dir.read() {
                    let n = OsStr::from_bytes(e.file_name().to_bytes());
                    if n != "." && n != ".." {
                        names.push(n.to_os_string());
                    }
                }
                if Self::is_opaque(fd.as_fd()) {
                    break;
                }
            }
            names.sort();
            names.dedup();
            let meta = self.default_meta();
            for n in names {
                if matches!(self.here(Path::new(""), &n)?, Here::Absent) {
                    self.make_whiteout(Path::new(""), &n, &meta)?;
                }
            }
        }
        let root_meta = match self.dir_meta.remove(Path::new("")) {
            Some(m) => m,
            None => {
                // No "./" entry: the root follows the rule of every implied directory: the top-most lower layer's
                // root (mode, owner, times, plain xattrs), else 0755 owned by (shifted) root. The owner is always
                // set: the staging root may have inherited a setgid directory's group.
                let lower = match self.lowers.first() {
                    Some(fd) => Some(
                        rustix::fs::statx(fd, "", AtFlags::EMPTY_PATH, LOWER_DIR_STATX)
                            .map(|st| lower_dir_meta(fd.as_fd(), OsStr::new(""), &st))
                            .map_err(|e| os(e, &self.opts.parents[0]))?,
                    ),
                    None => None,
                };
                let d = lower.clone().unwrap_or_else(|| self.default_meta());
                let (u, g) = (rustix::fs::Uid::from_raw(d.uid), rustix::fs::Gid::from_raw(d.gid));
                rustix::fs::chownat(&self.root, "", Some(u), Some(g), AtFlags::EMPTY_PATH)
                    .map_err(|e| os(e, &self.root_path))?;
                for (k, v) in &d.xattrs {
                    let set = xattr::set_at(self.root.as_fd(), OsStr::new(""), k, v);
                    self.xattr_set(set, Path::new(""))?;
                }
                DirMeta { mode: d.mode, times: lower.map(|m| m.timestamps()) }
            }
        };
        let mut dirs: Vec<(PathBuf, DirMeta)> = std::mem::take(&mut self.dir_meta).into_iter().collect();
        dirs.sort_by_key(|(p, _)| std::cmp::Reverse(p.components().count()));
        dirs.push((PathBuf::new(), root_meta));
        for (rel, m) in dirs {
            let fd = beneath(self.root.as_fd(), &rel, OFlags::RDONLY).map_err(|e| os(e, &self.full(&rel)))?;
            rustix::fs::fchmod(&fd, Mode::from_raw_mode(m.mode)).map_err(|e| os(e, &self.full(&rel)))?;
            if let Some(t) = &m.times {
                rustix::fs::futimens(&fd, t).map_err(|e| os(e, &self.full(&rel)))?;
            }
            if self.opts.sync == SyncMode::Fsync {
                rustix::fs::fsync(&fd).map_err(|e| os(e, &self.full(&rel)))?;
            }
            if self.records.is_some() {
                // Directories are few: their records are read back rather than predicted.
                let (_, rec) = digest::observe(fd.as_fd(), OsStr::new(""), &rel, &self.full(&rel), None)?;
                if rel.as_os_str().is_empty() {
                    self.root_record = rec;
                } else if let Some(records) = &mut self.records {
                    records.insert(rel, rec);
                }
            }
        }
        Ok(())
    }
}

/// An ordered path-keyed collection: the paths under `rel` (itself included) sort as one range starting at `rel`
/// (paths compare component by component).
trait PathKeys {
    fn keys_from(&self, rel: &Path) -> Vec<PathBuf>;
    fn remove_key(&mut self, key: &Path);
}

impl PathKeys for BTreeSet<PathBuf> {
    fn keys_from(&self, rel: &Path) -> Vec<PathBuf> {
        self.range::<Path, _>((std::ops::Bound::Included(rel), std::ops::Bound::Unbounded))
            .take_while(|p| p.starts_with(rel))
            .cloned()
            .collect()
    }
    fn remove_key(&mut self, key: &Path) {
        self.remove(key);
    }
}

impl<V> PathKeys for BTreeMap<PathBuf, V> {
    fn keys_from(&self, rel: &Path) -> Vec<PathBuf> {
        self.range::<Path, _>((std::ops::Bound::Included(rel), std::ops::Bound::Unbounded))
            .map(|(p, _)| p)
            .take_while(|p| p.starts_with(rel))
            .cloned()
            .collect()
    }
    fn remove_key(&mut self, key: &Path) {
        self.remove(key);
    }
}

/// Forget `rel` and everything beneath it.
fn prune(c: &mut impl PathKeys, rel: &Path) {
    for k in c.keys_from(rel) {
        c.remove_key(&k);
    }
}

/// The process's umask, read without changing it (`umask(2)` can only set it, and setting it, even briefly, would
/// race with other threads creating files). Assumes the most restrictive mask if it cannot be read, which only costs
/// a `chmod` per file.
fn current_umask() -> u32 {
    std::fs::read_to_string("/proc/thread-self/status")
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("Umask:").map(|v| v.trim().to_string())))
        .and_then(|v| u32::from_str_radix(&v, 8).ok())
        .unwrap_or(0o777)
}

fn corrupt(e: &std::io::Error, rel: &Path) -> Error {
    Error::io(OP, e).with_path(rel).with_kind(ErrorKind::InvalidLayer(LayerProblem::Corrupt))
}

/// A PAX time: decimal seconds with an optional fraction, as (seconds, nanoseconds) with the nanoseconds counted up
/// from the whole second below, so `-1.5` is (-2, 500000000).
fn parse_pax_time(v: &[u8]) -> Option<(i64, u32)> {
    let s = std::str::from_utf8(v).ok()?;
    let (sec, frac) = s.split_once('.').unwrap_or((s, ""));
    let negative = sec.starts_with('-');
    let sec: i64 = sec.parse().ok()?;
    let mut ns = 0u32;
    for (i, d) in frac.bytes().enumerate() {
        if !d.is_ascii_digit() {
            return None;
        }
        if i < 9 {
            ns += u32::from(d - b'0') * 10u32.pow(8 - i as u32);
        }
    }
    if negative && ns > 0 { Some((sec.checked_sub(1)?, 1_000_000_000 - ns)) } else { Some((sec, ns)) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_contained_or_refused() {
        assert_eq!(components(b"/etc/passwd").unwrap(), ["etc", "passwd"]);
        assert_eq!(components(b"./a//b/./c/").unwrap(), ["a", "b", "c"]);
        assert!(components(b"./").unwrap().is_empty());
        assert_eq!(components(b"a/../../etc").unwrap_err().kind(), ErrorKind::Breakout);
        assert_eq!(components(b"..").unwrap_err().kind(), ErrorKind::Breakout);
    }

    #[test]
    fn pax_times() {
        assert_eq!(parse_pax_time(b"1700000000.5"), Some((1700000000, 500_000_000)));
        assert_eq!(parse_pax_time(b"12"), Some((12, 0)));
        assert_eq!(parse_pax_time(b"x"), None);
        // Defect 14: the fraction counts up from the (negative) whole second below.
        assert_eq!(parse_pax_time(b"-1.5"), Some((-2, 500_000_000)));
        assert_eq!(parse_pax_time(b"-0.25"), Some((-1, 750_000_000)));
        assert_eq!(parse_pax_time(b"-3"), Some((-3, 0)));
        assert_eq!(parse_pax_time(b"-3.0"), Some((-3, 0)));
    }
}
