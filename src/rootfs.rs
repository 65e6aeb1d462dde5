//! [`Fixups`]: the last changes a container root needs before a runtime starts on it, made through a handle on the
//! root so that no path, and no symlink inside the image, can send a change outside it.
//!
//! Two fixups, each on by default and each can be turned off:
//!
//! * [`Fixup::Mtab`]: `/etc/mtab` becomes the symlink `../proc/self/mounts`, so `mount`, `df` and friends inside the
//!   container see the container's own mount table. Old images ship a regular `/etc/mtab` (a snapshot of some build
//!   machine's mounts): inside the container those tools then lie. A regular file, or no file at all (when `/etc`
//!   exists), is replaced; a symlink to `/proc/mounts`, `/proc/self/mounts` or `/proc/thread-self/mounts` (however
//!   spelled) is left alone; a symlink anywhere else is reported as a [`Problem`] and left unless
//!   [`Fixups::force_mtab`] is set.
//! * [`Fixup::MountTargets`]: the directories and files a runtime mounts on exist with the right type: `/proc`,
//!   `/sys`, `/dev`, `/dev/pts`, `/dev/shm`, `/tmp` (directories; `/tmp` and `/dev/shm` sticky and world-writable)
//!   and `/etc/resolv.conf`, `/etc/hosts`, `/etc/hostname` (empty files; `/etc` is made too if missing). Each is
//!   created only when missing, owned by the container's root when an owner or a map is given. One of the wrong type
//!   is reported and left alone; a symlink is left alone (runtimes resolve it inside the root).
//!
//! Every path is resolved with `openat2(RESOLVE_IN_ROOT)` relative to the root handle: an absolute symlink such as
//! `/etc -> /host/etc` resolves to `<root>/host/etc`, never to the host's `/etc`, and `..` cannot climb above the
//! root. The last component is never followed (`*at` calls with `AT_SYMLINK_NOFOLLOW`, `O_NOFOLLOW`, `O_EXCL`).
//!
//! Apply the fixups through the *merged* root (the mounted overlay) so that changes land in the container's upper
//! layer, as a container's own writes would, and never in a shared lower layer.
//!
//! # Kernel
//!
//! `openat2` with `RESOLVE_IN_ROOT` (Linux 5.6). No mount is made.
//!
//! # Example
//!
//! ```no_run
//! use layermount::{Fixups, IdMap, Overlay, UserNamespace};
//!
//! let map: IdMap = "0:100000:65536".parse()?;
//! let root = Overlay::new()
//!     .lowers(["/var/lib/layers/2", "/var/lib/layers/1"])
//!     .upper("/var/lib/ctr/upper", "/var/lib/ctr/work")
//!     .idmap(UserNamespace::cached(&map, &map)?)
//!     .mount_at("/run/ctr/rootfs")?;
//! let report = Fixups::new().idmap(&map, &map).apply(root.path())?; // through the merged root: into the upper
//! for change in &report.changes {
//!     println!("{change}");
//! }
//! for problem in &report.problems {
//!     eprintln!("left alone: {problem}");
//! }
//! # Ok::<(), layermount::Error>(())
//! ```

use std::ffi::OsStr;
use std::fmt;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStringExt;
use std::path::{Component, Path, PathBuf};
use std::str::FromStr;

use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags, StatxFlags};
use rustix::io::Errno;

use crate::error::{Error, ErrorKind, Result};
use crate::idmap::IdMap;

const OP: &str = "fix rootfs";
/// What `/etc/mtab` becomes: relative, so it is right whatever the root is seen as.
///
/// ```
/// assert_eq!(layermount::rootfs::MTAB_TARGET, "../proc/self/mounts");
/// ```
pub const MTAB_TARGET: &str = "../proc/self/mounts";

/// One fixup, to turn on or off by name (`--only mtab`).
///
/// ```
/// use layermount::Fixup;
/// assert_eq!("mount-targets".parse::<Fixup>()?, Fixup::MountTargets);
/// assert_eq!(Fixup::Mtab.name(), "mtab");
/// # Ok::<(), layermount::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Fixup {
    /// `/etc/mtab` -> `../proc/self/mounts`.
    Mtab,
    /// The mount targets a runtime needs.
    MountTargets,
}

impl Fixup {
    /// Every fixup, in the order they are applied.
    ///
    /// ```
    /// use layermount::Fixup;
    /// let names: Vec<&str> = Fixup::ALL.iter().map(|f| f.name()).collect();
    /// assert_eq!(names, ["mount-targets", "mtab"]);
    /// ```
    pub const ALL: [Fixup; 2] = [Fixup::MountTargets, Fixup::Mtab];

    /// The fixup's name: `mtab`, `mount-targets`.
    ///
    /// ```
    /// use layermount::Fixup;
    /// assert_eq!(Fixup::MountTargets.name(), "mount-targets");
    /// assert_eq!("mtab".parse::<Fixup>()?, Fixup::Mtab);
    /// # Ok::<(), layermount::Error>(())
    /// ```
    pub fn name(self) -> &'static str {
        match self {
            Self::Mtab => "mtab",
            Self::MountTargets => "mount-targets",
        }
    }
}

impl fmt::Display for Fixup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Fixup {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Self::ALL.into_iter().find(|f| f.name() == s).ok_or_else(|| {
            Error::new(ErrorKind::InvalidInput, "parse fixup name")
                .with_detail(format!("\"{s}\" is not one of mtab, mount-targets"))
        })
    }
}

/// What a path inside the root is (or would be), as a fixup saw it.
///
/// ```
/// use layermount::rootfs::Entry;
/// assert_eq!(Entry::File { size: 12 }.to_string(), "regular file (12 bytes)");
/// assert_eq!(Entry::Symlink("../proc/self/mounts".into()).to_string(), "symlink to ../proc/self/mounts");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// Nothing there.
    Missing,
    /// A regular file of this many bytes.
    File {
        /// Its length.
        size: u64,
    },
    /// A directory.
    Dir,
    /// A symlink with this target.
    Symlink(PathBuf),
    /// Something else (a device, a FIFO, a socket), named.
    Other(&'static str),
}

impl fmt::Display for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Missing => f.write_str("missing"),
            Self::File { size } => write!(f, "regular file ({size} bytes)"),
            Self::Dir => f.write_str("directory"),
            Self::Symlink(t) => write!(f, "symlink to {}", t.display()),
            Self::Other(kind) => f.write_str(kind),
        }
    }
}

/// One change made (or, in a dry run, that would be made). Displays as one line.
///
/// ```
/// use layermount::Fixup;
/// use layermount::rootfs::{Change, Entry};
/// let c = Change { fixup: Fixup::MountTargets, path: "/proc".into(), before: Entry::Missing, after: Entry::Dir };
/// assert_eq!(c.to_string(), "mount-targets /proc: missing -> directory");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The fixup that made it.
    pub fixup: Fixup,
    /// The path inside the root, absolute (`/etc/mtab`).
    pub path: PathBuf,
    /// What was there before.
    pub before: Entry,
    /// What is there now.
    pub after: Entry,
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {} -> {}", self.fixup, self.path.display(), self.before, self.after)
    }
}

/// Something a fixup found and left alone. Displays as one line.
///
/// ```
/// use layermount::Fixup;
/// use layermount::rootfs::{Entry, Problem};
/// let p = Problem { fixup: Fixup::MountTargets, path: "/proc".into(), found: Entry::File { size: 3 }, why: "wrong type" };
/// assert_eq!(p.to_string(), "mount-targets /proc: regular file (3 bytes): wrong type");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The fixup that found it.
    pub fixup: Fixup,
    /// The path inside the root, absolute.
    pub path: PathBuf,
    /// What is there.
    pub found: Entry,
    /// Why it was left alone.
    pub why: &'static str,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}: {}", self.fixup, self.path.display(), self.found, self.why)
    }
}

/// What [`Fixups::apply`] did: every change with what was there before, and what it left alone.
///
/// ```no_run
/// let report = layermount::Fixups::new().apply("/run/ctr/rootfs")?;
/// if !report.is_clean() {
///     report.changes.iter().for_each(|c| println!("{c}"));
/// }
/// # Ok::<(), layermount::Error>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FixupReport {
    /// Changes in the order made.
    pub changes: Vec<Change>,
    /// Things found wrong and left alone.
    pub problems: Vec<Problem>,
    /// True when nothing was changed because the fixups ran as a dry run.
    pub dry_run: bool,
}

impl FixupReport {
    /// No change needed and no problem found.
    ///
    /// ```
    /// assert!(layermount::FixupReport::default().is_clean());
    /// ```
    pub fn is_clean(&self) -> bool {
        self.changes.is_empty() && self.problems.is_empty()
    }
}

/// The rootfs fixups to apply, and how. See the [module documentation](self) for what each does.
///
/// Needs Linux 5.6 (`openat2`). Creating entries owned by another user needs `CAP_CHOWN`.
///
/// ```no_run
/// use layermount::{Fixups, IdMap};
/// let map: IdMap = "0:100000:65536".parse()?;
/// let report = Fixups::new().idmap(&map, &map).apply("/run/ctr/rootfs")?;
/// for change in &report.changes {
///     println!("{change}"); // mtab /etc/mtab: regular file (61 bytes) -> symlink to ../proc/self/mounts
/// }
/// # Ok::<(), layermount::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Fixups {
    mtab: bool,
    force_mtab: bool,
    mount_targets: bool,
    owner: Option<(u32, u32)>,
    maps: Option<(IdMap, IdMap)>,
    dry_run: bool,
}

impl Default for Fixups {
    fn default() -> Self {
        Self::new()
    }
}

/// A directory mount target: path and mode.
const TARGET_DIRS: [(&str, u32); 7] = [
    ("proc", 0o555),
    ("sys", 0o555),
    ("dev", 0o755),
    ("dev/pts", 0o755),
    ("dev/shm", 0o1777),
    ("tmp", 0o1777),
    ("etc", 0o755),
];
/// File mount targets (empty files, mode 0644).
const TARGET_FILES: [&str; 3] = ["etc/resolv.conf", "etc/hosts", "etc/hostname"];

impl Fixups {
    /// Every fixup on, new entries owned by the caller, not a dry run. The other methods change one setting each.
    ///
    /// ```
    /// use layermount::{Fixups, IdMap};
    /// let map: IdMap = "0:100000:65536".parse()?;
    /// let fixups = Fixups::new().mtab(true).force_mtab(false).mount_targets(true).idmap(&map, &map).dry_run(true);
    /// let by_ids = Fixups::new().owner(100000, 100000);
    /// # Ok::<(), layermount::Error>(())
    /// ```
    pub fn new() -> Self {
        Self { mtab: true, force_mtab: false, mount_targets: true, owner: None, maps: None, dry_run: false }
    }

    /// Turn the `/etc/mtab` fixup on or off.
    ///
    /// ```
    /// let only_targets = layermount::Fixups::new().mtab(false);
    /// ```
    pub fn mtab(mut self, on: bool) -> Self {
        self.mtab = on;
        self
    }

    /// Also replace an `/etc/mtab` symlink that points somewhere other than the mount table (default: report it).
    ///
    /// ```
    /// let fixups = layermount::Fixups::new().force_mtab(true);
    /// ```
    pub fn force_mtab(mut self, on: bool) -> Self {
        self.force_mtab = on;
        self
    }

    /// Turn the mount-target fixup on or off.
    ///
    /// ```
    /// let only_mtab = layermount::Fixups::new().mount_targets(false);
    /// ```
    pub fn mount_targets(mut self, on: bool) -> Self {
        self.mount_targets = on;
        self
    }

    /// Turn only the named fixups on (the others off).
    ///
    /// ```
    /// let f = layermount::Fixups::new().only(&[layermount::Fixup::Mtab]);
    /// ```
    pub fn only(self, fixups: &[Fixup]) -> Self {
        self.mtab(fixups.contains(&Fixup::Mtab)).mount_targets(fixups.contains(&Fixup::MountTargets))
    }

    /// Own what is created by these ids, as seen through the root handed to [`apply`](Self::apply) (host ids, for
    /// a root that is not itself idmapped).
    ///
    /// ```
    /// let fixups = layermount::Fixups::new().owner(100000, 100000);
    /// ```
    pub fn owner(mut self, uid: u32, gid: u32) -> Self {
        self.owner = Some((uid, gid));
        self.maps = None;
        self
    }

    /// Own what is created by the container's root under these maps: the host ids that container id 0 maps to.
    /// [`apply`](Self::apply) fails if a map does not map 0.
    ///
    /// ```
    /// let map: layermount::IdMap = "0:100000:65536".parse()?;
    /// let fixups = layermount::Fixups::new().idmap(&map, &map); // new entries owned by 100000:100000
    /// # Ok::<(), layermount::Error>(())
    /// ```
    pub fn idmap(mut self, uid_map: &IdMap, gid_map: &IdMap) -> Self {
        self.maps = Some((uid_map.clone(), gid_map.clone()));
        self.owner = None;
        self
    }

    /// Only report what would change.
    ///
    /// ```no_run
    /// let report = layermount::Fixups::new().dry_run(true).apply("/run/ctr/rootfs")?;
    /// for change in &report.changes {
    ///     println!("would change {change}");
    /// }
    /// # Ok::<(), layermount::Error>(())
    /// ```
    pub fn dry_run(mut self, on: bool) -> Self {
        self.dry_run = on;
        self
    }

    /// Apply the fixups to the root directory at `root` (opened `O_PATH`; a symlink naming the root itself is
    /// followed, since the caller chose the path).
    ///
    /// # Errors
    ///
    /// The root cannot be opened or is not a directory; a map given to [`idmap`](Self::idmap) does not map 0; a
    /// system call fails while inspecting or changing an entry (`Error::path` then names the entry inside the root,
    /// and what was done before the failure stays done: each change is complete in itself).
    ///
    /// # Kernel
    /// `openat2` with `RESOLVE_IN_ROOT` (Linux 5.6). No privilege is needed beyond write access to the root (and
    /// `CAP_CHOWN` for an owner other than the caller):
    ///
    /// ```
    /// let root = std::env::temp_dir().join(format!("layermount-doc-rootfs-{}", std::process::id()));
    /// std::fs::create_dir_all(root.join("etc"))?;
    /// std::fs::write(root.join("etc/mtab"), "stale\n")?;
    /// let report = layermount::Fixups::new().apply(&root)?;
    /// assert_eq!(std::fs::read_link(root.join("etc/mtab"))?, std::path::Path::new("../proc/self/mounts"));
    /// assert!(root.join("proc").is_dir() && root.join("etc/resolv.conf").is_file());
    /// assert!(layermount::Fixups::new().apply(&root)?.is_clean()); // idempotent
    /// layermount::remove_all(&root)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn apply(&self, root: impl AsRef<Path>) -> Result<FixupReport> {
        let root = root.as_ref();
        let fd = rustix::fs::open(root, OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
            .map_err(|e| Error::os(OP, e).with_path(root))?;
        self.run(fd.as_fd(), Some(root))
    }

    /// Apply the fixups to the root directory `root` (any directory fd; `O_PATH` is enough).
    ///
    /// # Errors
    ///
    /// As for [`apply`](Self::apply).
    ///
    /// # Kernel
    /// `openat2` with `RESOLVE_IN_ROOT` (Linux 5.6).
    ///
    /// ```no_run
    /// let root = std::fs::File::open("/run/ctr/rootfs")?;
    /// let report = layermount::Fixups::new().dry_run(true).apply_at(&root)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn apply_at(&self, root: impl AsFd) -> Result<FixupReport> {
        self.run(root.as_fd(), None)
    }

    fn resolved_owner(&self) -> Result<Option<(u32, u32)>> {
        match &self.maps {
            None => Ok(self.owner),
            Some((u, g)) => {
                match (u.to_host(0), g.to_host(0)) {
                    (Some(uid), Some(gid)) => Ok(Some((uid, gid))),
                    _ => Err(Error::new(ErrorKind::InvalidInput, OP)
                        .with_detail("the id map does not map container root (0)")),
                }
            }
        }
    }

    fn run(&self, root: BorrowedFd<'_>, root_path: Option<&Path>) -> Result<FixupReport> {
        let st =
            rustix::fs::fstat(root).map_err(|e| Error::os(OP, e).with_path(root_path.unwrap_or(Path::new("/"))))?;
        if FileType::from_raw_mode(st.st_mode) != FileType::Directory {
            return Err(Error::new(ErrorKind::InvalidInput, OP)
                .with_path(root_path.unwrap_or(Path::new("/")))
                .with_detail("the root is not a directory"));
        }
        let mut run = Run {
            root,
            root_path,
            owner: self.resolved_owner()?,
            dry_run: self.dry_run,
            planned: Vec::new(),
            report: FixupReport { dry_run: self.dry_run, ..FixupReport::default() },
        };
        if self.mount_targets {
            for (rel, mode) in TARGET_DIRS {
                run.target(rel, Some(mode))?;
            }
            for rel in TARGET_FILES {
                run.target(rel, None)?;
            }
        }
        if self.mtab {
            run.mtab(self.force_mtab)?;
        }
        Ok(run.report)
    }
}

/// One application of the fixups.
struct Run<'a> {
    root: BorrowedFd<'a>,
    root_path: Option<&'a Path>,
    owner: Option<(u32, u32)>,
    dry_run: bool,
    /// Directories a dry run would have created: their children are then simply missing.
    planned: Vec<PathBuf>,
    report: FixupReport,
}

/// The directory fd a name lives in, or why there is none.
enum Parent {
    Fd(OwnedFd),
    /// Missing, but a dry run planned to create it.
    Planned,
    Missing,
    NotADirectory,
}

fn is_mount_table(target: &Path) -> bool {
    let joined = if target.is_absolute() { target.to_path_buf() } else { Path::new("/etc").join(target) };
    let mut parts: Vec<&OsStr> = Vec::new();
    for c in joined.components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir => {
                parts.pop();
            }
            Component::Normal(n) => parts.push(n),
            Component::Prefix(_) => return false,
        }
    }
    let parts: Vec<&str> = parts.iter().map(|p| p.to_str().unwrap_or("")).collect();
    matches!(parts[..], ["proc", "mounts"] | ["proc", "self" | "thread-self", "mounts"])
}

impl Run<'_> {
    fn err(&self, e: Errno, rel: &Path) -> Error {
        let path = match self.root_path {
            Some(r) => r.join(rel),
            None => Path::new("/").join(rel),
        };
        Error::os(OP, e).with_path(path)
    }

    fn open_parent(&self, rel: &Path) -> Result<Parent> {
        let parent = rel.parent().unwrap_or(Path::new(""));
        if parent.as_os_str().is_empty() {
            let dup = rustix::io::fcntl_dupfd_cloexec(self.root, 0).map_err(|e| self.err(e, parent))?;
            return Ok(Parent::Fd(dup));
        }
        let resolve = ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS;
        let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC;
        // openat2 says EAGAIN when a rename raced with the lookup; a few retries are what the man page advises.
        let mut tries = 0;
        loop {
            match rustix::fs::openat2(self.root, parent, flags, Mode::empty(), resolve) {
                Ok(fd) => return Ok(Parent::Fd(fd)),
                Err(Errno::AGAIN) if tries < 16 => tries += 1,
                Err(Errno::NOENT) if self.planned.iter().any(|p| p == parent) => return Ok(Parent::Planned),
                Err(Errno::NOENT) => return Ok(Parent::Missing),
                Err(Errno::NOTDIR) => return Ok(Parent::NotADirectory),
                Err(e) => return Err(self.err(e, parent)),
            }
        }
    }

    fn entry(&self, dir: BorrowedFd<'_>, name: &OsStr, rel: &Path) -> Result<Entry> {
        let st = match rustix::fs::statx(dir, name, AtFlags::SYMLINK_NOFOLLOW, StatxFlags::TYPE | StatxFlags::SIZE) {
            Ok(st) => st,
            Err(Errno::NOENT) => return Ok(Entry::Missing),
            Err(e) => return Err(self.err(e, rel)),
        };
        Ok(match FileType::from_raw_mode(st.stx_mode.into()) {
            FileType::RegularFile => Entry::File { size: st.stx_size },
            FileType::Directory => Entry::Dir,
            FileType::Symlink => {
                let target = rustix::fs::readlinkat(dir, name, Vec::new()).map_err(|e| self.err(e, rel))?;
                Entry::Symlink(PathBuf::from(std::ffi::OsString::from_vec(target.into_bytes())))
            }
            FileType::CharacterDevice => Entry::Other("character device"),
            FileType::BlockDevice => Entry::Other("block device"),
            FileType::Fifo => Entry::Other("fifo"),
            FileType::Socket => Entry::Other("socket"),
            FileType::Unknown => Entry::Other("file of unknown type"),
        })
    }

    fn chown(&self, dir: BorrowedFd<'_>, name: &OsStr, rel: &Path) -> Result<()> {
        if let Some((uid, gid)) = self.owner {
            rustix::fs::chownat(
                dir,
                name,
                Some(rustix::fs::Uid::from_raw(uid)),
                Some(rustix::fs::Gid::from_raw(gid)),
                AtFlags::SYMLINK_NOFOLLOW,
            )
            .map_err(|e| self.err(e, rel))?;
        }
        Ok(())
    }

    fn changed(&mut self, fixup: Fixup, rel: &Path, before: Entry, after: Entry) {
        self.report.changes.push(Change { fixup, path: Path::new("/").join(rel), before, after });
    }

    fn problem(&mut self, fixup: Fixup, rel: &Path, found: Entry, why: &'static str) {
        self.report.problems.push(Problem { fixup, path: Path::new("/").join(rel), found, why });
    }

    /// A mount target: a directory of `mode` (`Some`), or an empty file.
    fn target(&mut self, rel: &str, mode: Option<u32>) -> Result<()> {
        const F: Fixup = Fixup::MountTargets;
        let rel = Path::new(rel);
        let name = rel.file_name().expect("targets end in a name");
        let dir = match self.open_parent(rel)? {
            Parent::Fd(fd) => fd,
            Parent::Planned => {
                if mode.is_some() {
                    self.planned.push(rel.to_path_buf());
                }
                let after = if mode.is_some() { Entry::Dir } else { Entry::File { size: 0 } };
                self.changed(F, rel, Entry::Missing, after);
                return Ok(());
            }
            // The directory targets come parents first, so only a parent of the wrong type (or a dangling
            // symlink) gets here.
            Parent::Missing | Parent::NotADirectory => {
                let parent = rel.parent().unwrap_or(Path::new(""));
                self.problem(F, parent, Entry::Other("not a directory"), "cannot hold a mount target; left alone");
                return Ok(());
            }
        };
        let before = self.entry(dir.as_fd(), name, rel)?;
        match (&before, mode) {
            (Entry::Dir, Some(_)) | (Entry::File { .. }, None) | (Entry::Symlink(_), _) => return Ok(()),
            (Entry::Missing, _) => {}
            (_, Some(_)) => {
                self.problem(F, rel, before, "a runtime mounts a directory here; left alone");
                return Ok(());
            }
            (_, None) => {
                self.problem(F, rel, before, "a runtime bind-mounts a file here; left alone");
                return Ok(());
            }
        }
        if self.dry_run {
            if mode.is_some() {
                self.planned.push(rel.to_path_buf());
            }
        } else if let Some(mode) = mode {
            match rustix::fs::mkdirat(&dir, name, Mode::from_raw_mode(0o700)) {
                Ok(()) => {}
                // Made by someone else since we looked: it exists, which is all we want.
                Err(Errno::EXIST) => return Ok(()),
                Err(e) => return Err(self.err(e, rel)),
            }
            self.chown(dir.as_fd(), name, rel)?;
            // Mode last (umask, and chown clears set-id bits): the sticky bit must survive.
            rustix::fs::chmodat(&dir, name, Mode::from_raw_mode(mode), AtFlags::empty())
                .map_err(|e| self.err(e, rel))?;
        } else {
            let flags = OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
            let fd = match rustix::fs::openat(&dir, name, flags, Mode::from_raw_mode(0o644)) {
                Ok(fd) => fd,
                Err(Errno::EXIST) => return Ok(()),
                Err(e) => return Err(self.err(e, rel)),
            };
            if let Some((uid, gid)) = self.owner {
                rustix::fs::fchown(&fd, Some(rustix::fs::Uid::from_raw(uid)), Some(rustix::fs::Gid::from_raw(gid)))
                    .map_err(|e| self.err(e, rel))?;
            }
            rustix::fs::fchmod(&fd, Mode::from_raw_mode(0o644)).map_err(|e| self.err(e, rel))?;
        }
        let after = if mode.is_some() { Entry::Dir } else { Entry::File { size: 0 } };
        self.changed(F, rel, before, after);
        Ok(())
    }

    fn mtab(&mut self, force: bool) -> Result<()> {
        const F: Fixup = Fixup::Mtab;
        let rel = Path::new("etc/mtab");
        let name = OsStr::new("mtab");
        let after = Entry::Symlink(PathBuf::from(MTAB_TARGET));
        let dir = match self.open_parent(rel)? {
            Parent::Fd(fd) => fd,
            Parent::Planned => {
                self.changed(F, rel, Entry::Missing, after);
                return Ok(());
            }
            // No /etc: nothing in the image would read /etc/mtab.
            Parent::Missing => return Ok(()),
            Parent::NotADirectory => {
                self.problem(F, Path::new("etc"), Entry::Other("not a directory"), "no /etc to hold mtab");
                return Ok(());
            }
        };
        let before = self.entry(dir.as_fd(), name, rel)?;
        match &before {
            Entry::Symlink(t) if is_mount_table(t) => return Ok(()),
            Entry::Symlink(_) if !force => {
                self.problem(F, rel, before, "points elsewhere than the mount table; left alone (force to replace)");
                return Ok(());
            }
            Entry::Missing | Entry::File { .. } | Entry::Symlink(_) => {}
            Entry::Dir | Entry::Other(_) => {
                self.problem(F, rel, before, "not a file or symlink; left alone");
                return Ok(());
            }
        }
        if !self.dry_run {
            if before == Entry::Missing {
                rustix::fs::symlinkat(MTAB_TARGET, &dir, name).map_err(|e| self.err(e, rel))?;
                self.chown(dir.as_fd(), name, rel)?;
            } else {
                // A new symlink renamed over the old entry: the change is atomic, and half of it never shows.
                let tmp = format!(".mtab.layermount-{}", rustix::process::getpid().as_raw_nonzero());
                // A leftover of a run of ours that was killed between these two calls: ours to remove.
                match rustix::fs::symlinkat(MTAB_TARGET, &dir, tmp.as_str()) {
                    Ok(()) => {}
                    Err(Errno::EXIST) => {
                        rustix::fs::unlinkat(&dir, tmp.as_str(), AtFlags::empty()).map_err(|e| self.err(e, rel))?;
                        rustix::fs::symlinkat(MTAB_TARGET, &dir, tmp.as_str()).map_err(|e| self.err(e, rel))?;
                    }
                    Err(e) => return Err(self.err(e, rel)),
                }
                let done = self
                    .chown(dir.as_fd(), OsStr::new(&tmp), rel)
                    .and_then(|()| rustix::fs::renameat(&dir, tmp.as_str(), &dir, name).map_err(|e| self.err(e, rel)));
                if let Err(e) = done {
                    let _ = rustix::fs::unlinkat(&dir, tmp.as_str(), AtFlags::empty());
                    return Err(e);
                }
            }
        }
        self.changed(F, rel, before, after);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_table_spellings() {
        for t in ["/proc/mounts", "/proc/self/mounts", "../proc/self/mounts", "../proc/mounts", "/proc/./self/mounts"] {
            assert!(is_mount_table(Path::new(t)), "{t}");
        }
        assert!(is_mount_table(Path::new("../../../proc/thread-self/mounts")));
        for t in ["/etc/mtab.real", "mounts", "/proc/self/mountinfo", "../proc/1/mounts", "/host/proc/mounts"] {
            assert!(!is_mount_table(Path::new(t)), "{t}");
        }
    }

    #[test]
    fn names_round_trip() {
        for f in Fixup::ALL {
            assert_eq!(f.name().parse::<Fixup>().unwrap(), f);
        }
        assert_eq!("nope".parse::<Fixup>().unwrap_err().kind(), ErrorKind::InvalidInput);
    }
}
