//! Opening, identifying and validating the directories of an overlay before anything is mounted.

use std::collections::{BTreeMap, HashMap};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use rustix::fs::{AtFlags, CWD, Mode, OFlags, StatxFlags};
use rustix::io::Errno;

use super::live::LiveDirs;
use crate::error::{Error, ErrorKind, OverlayProblem, Result};
use crate::features::Features;

/// The kernel's limit on lower plus data-only layers (`OVL_MAX_STACK`).
///
/// ```
/// use layermount::{ErrorKind, Features, Overlay, OverlayProblem, Strategy, MAX_LAYERS};
/// let layers: Vec<String> = (0..=MAX_LAYERS).map(|i| format!("/var/lib/layers/{i}")).collect();
/// // Refused before anything is looked at or mounted.
/// let err = Overlay::new().lowers(&layers).features(Features::probe().limited_to(Strategy::Legacy)).mount().unwrap_err();
/// assert_eq!(err.kind(), ErrorKind::InvalidOverlay(OverlayProblem::TooManyLayers));
/// ```
pub const MAX_LAYERS: usize = 500;

/// What a directory is for in the overlay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    Lower,
    Data,
    Upper,
    Work,
}

impl Role {
    pub(super) fn name(self) -> &'static str {
        match self {
            Role::Lower => "lower layer",
            Role::Data => "data-only layer",
            Role::Upper => "upper directory",
            Role::Work => "work directory",
        }
    }
    pub(crate) fn is_layer(self) -> bool {
        matches!(self, Role::Lower | Role::Data)
    }
}

/// A directory of the overlay, identified by one `statx` (no fd is held for a path until one is needed).
#[derive(Debug)]
pub(crate) struct Resolved {
    pub role: Role,
    /// The path as the caller gave it (or `fd:N` for a caller's fd), for errors.
    pub given: PathBuf,
    /// The caller's fd, for a directory given as an fd.
    pub fd: Option<OwnedFd>,
    /// The absolute path, made without resolving symlinks (so without a syscall) unless the caller's path had
    /// `..` in it; `None` for a caller's fd.
    pub path: Option<PathBuf>,
    pub dev: (u32, u32),
    pub ino: u64,
    pub mount_id: u64,
}

pub(super) fn overlay_error(problem: OverlayProblem, path: &Path) -> Error {
    Error::new(ErrorKind::InvalidOverlay(problem), "compose overlay").with_path(path)
}

const STATX_WANT: StatxFlags = StatxFlags::TYPE.union(StatxFlags::INO).union(StatxFlags::MNT_ID);

fn identify(
    role: Role,
    given: PathBuf,
    st: &rustix::fs::Statx,
    fd: Option<OwnedFd>,
    path: Option<PathBuf>,
) -> Result<Resolved> {
    if rustix::fs::FileType::from_raw_mode(u32::from(st.stx_mode)) != rustix::fs::FileType::Directory {
        return Err(overlay_error(OverlayProblem::NotADirectory, &given));
    }
    Ok(Resolved {
        role,
        given,
        fd,
        path,
        dev: (st.stx_dev_major, st.stx_dev_minor),
        ino: st.stx_ino,
        mount_id: st.stx_mnt_id,
    })
}

/// Where the fd really is, read back from `/proc` (`None` when unreachable from our root).
pub(crate) fn real_path_of(fd: BorrowedFd<'_>) -> Option<PathBuf> {
    std::fs::read_link(crate::fd::proc_path(fd))
        .ok()
        .filter(|p| p.is_absolute() && !p.to_string_lossy().ends_with(" (deleted)"))
}

/// The deepest directory above every path of an overlay, opened once so each path is looked up from there
/// instead of from `/` (most of a snapshotter's path is the same for every layer).
#[derive(Debug)]
pub(crate) struct Anchor {
    path: PathBuf,
    fd: OwnedFd,
}

/// `path` made absolute without resolving anything, when its text can be trusted (no `..`).
pub(crate) fn lexical_absolute(path: &Path) -> Option<PathBuf> {
    let abs = std::path::absolute(path).ok()?;
    (!abs.components().any(|c| c == Component::ParentDir)).then_some(abs)
}

impl Anchor {
    /// Open the common ancestor of `paths` (absolute, without `..`); `None` if there is nothing to share.
    pub fn new(paths: &[&Path]) -> Option<Anchor> {
        if paths.len() < 2 {
            return None;
        }
        let path = common_ancestor(paths.iter().copied());
        let fd = crate::fd::open_dir_path(&path).ok()?;
        Some(Anchor { path, fd })
    }
}

/// Identify the directory at `path` (symlinks followed, as the kernel would). `lexical` is
/// [`lexical_absolute`]`(path)`, computed once by the caller.
pub(crate) fn resolve_path(
    role: Role,
    path: &Path,
    lexical: Option<PathBuf>,
    anchor: Option<&Anchor>,
) -> Result<Resolved> {
    let open_err = |e: Errno| open_error(role, path, e);
    let rel = lexical.as_deref().and_then(|abs| anchor.and_then(|a| Some((a, abs.strip_prefix(&a.path).ok()?))));
    let st = match rel {
        Some((a, rel)) if rel.as_os_str().is_empty() => rustix::fs::statx(&a.fd, "", AtFlags::EMPTY_PATH, STATX_WANT),
        Some((a, rel)) => rustix::fs::statx(&a.fd, rel, AtFlags::empty(), STATX_WANT),
        None => rustix::fs::statx(CWD, path, AtFlags::empty(), STATX_WANT),
    }
    .map_err(open_err)?;
    let r = identify(role, path.to_path_buf(), &st, None, None)?;
    // Without a trustworthy text (a `..` would lie about nesting and common parents), use where it really leads.
    let path = match lexical {
        Some(abs) => Some(abs),
        None => real_path_of(r.open(OFlags::PATH)?.as_fd()),
    };
    Ok(Resolved { path, ..r })
}

/// `(dev, ino)` of an open directory.
pub(crate) fn identity(fd: BorrowedFd<'_>) -> rustix::io::Result<((u32, u32), u64)> {
    let st = rustix::fs::statx(fd, "", AtFlags::EMPTY_PATH, StatxFlags::INO)?;
    Ok(((st.stx_dev_major, st.stx_dev_minor), st.stx_ino))
}

/// Identify a directory fd the caller gave (kept open; used as it is).
pub(crate) fn resolve_fd(role: Role, fd: OwnedFd) -> Result<Resolved> {
    let given = PathBuf::from(format!("fd:{}", fd.as_raw_fd()));
    let st = rustix::fs::statx(&fd, "", AtFlags::EMPTY_PATH, STATX_WANT)
        .map_err(|e| Error::os("compose overlay: stat", e).with_path(&given))?;
    identify(role, given, &st, Some(fd), None)
}

impl Resolved {
    /// True when `fd` is the directory this was resolved to.
    pub fn is(&self, fd: BorrowedFd<'_>) -> bool {
        rustix::fs::statx(fd, "", AtFlags::EMPTY_PATH, StatxFlags::INO)
            .is_ok_and(|st| (st.stx_dev_major, st.stx_dev_minor, st.stx_ino) == (self.dev.0, self.dev.1, self.ino))
    }

    /// Open the directory with `oflags` (`O_PATH` or `O_RDONLY`), checking it is still the one resolved.
    pub fn open(&self, oflags: OFlags) -> Result<OwnedFd> {
        let flags = oflags | OFlags::DIRECTORY | OFlags::CLOEXEC;
        let fd = match (&self.fd, &self.path) {
            (Some(fd), _) => rustix::fs::openat(fd, ".", flags, Mode::empty()),
            (None, Some(p)) => rustix::fs::openat(CWD, p, flags, Mode::empty()),
            (None, None) => rustix::fs::openat(CWD, &self.given, flags, Mode::empty()),
        }
        .map_err(|e| Error::os("compose overlay: open", e).with_path(&self.given))?;
        if !self.is(fd.as_fd()) {
            return Err(Error::new(ErrorKind::InvalidInput, "compose overlay")
                .with_path(&self.given)
                .with_detail("the directory was replaced while the overlay was being composed"));
        }
        Ok(fd)
    }

    /// Where the directory really is (symlinks resolved), for confirming what the path's text suggests.
    fn real_path(&self) -> Option<PathBuf> {
        real_path_of(self.open(OFlags::PATH).ok()?.as_fd())
    }
}

/// The kernel's rules on how many layers an overlay has (no syscall needed). `first_lower` names the only lower
/// layer in the error for a read-only overlay of one layer.
pub(crate) fn check_counts(lowers: usize, data: usize, has_upper: bool, first_lower: &Path) -> Result<()> {
    if lowers == 0 {
        return Err(Error::new(ErrorKind::InvalidOverlay(OverlayProblem::NoLowerLayer), "compose overlay"));
    }
    if lowers == 1 && !has_upper {
        return Err(overlay_error(OverlayProblem::SingleLowerWithoutUpper, first_lower));
    }
    if lowers + data > MAX_LAYERS {
        return Err(Error::new(ErrorKind::InvalidOverlay(OverlayProblem::TooManyLayers), "compose overlay")
            .with_detail(format!("{} layers; the kernel stacks at most {MAX_LAYERS}", lowers + data)));
    }
    Ok(())
}

/// `OVERLAYFS_SUPER_MAGIC` and `ECRYPTFS_SUPER_MAGIC`: filesystems that stack on another (depth 1 at least).
const STACKING_MAGICS: [i64; 2] = [0x794c_7630, 0xf15f];

/// Refuse a layer (open as `fd`) on a stacking filesystem (overlay, ecryptfs): an overlay of it, under a container
/// overlay, would be three filesystems deep, which the kernel refuses.
pub(crate) fn refuse_stacking_fs(fd: BorrowedFd<'_>, given: &Path) -> Result<()> {
    let st = rustix::fs::fstatfs(fd).map_err(|e| Error::os("build image stack: statfs", e).with_path(given))?;
    #[allow(clippy::unnecessary_cast)] // f_type's width differs between architectures
    if STACKING_MAGICS.contains(&(st.f_type as i64)) {
        return Err(Error::new(ErrorKind::InvalidOverlay(OverlayProblem::StackTooDeep), "build image stack")
            .with_path(given)
            .with_detail(
                "the layer lives on an overlay: a container overlay on a stack of it would be three filesystems deep \
                 (the kernel allows two); compose it flat",
            ));
    }
    Ok(())
}

/// The error for a directory of the overlay that cannot be opened.
pub(crate) fn open_error(role: Role, path: &Path, e: Errno) -> Error {
    match e {
        Errno::NOTDIR => overlay_error(OverlayProblem::NotADirectory, path),
        _ => Error::os("compose overlay: open", e).with_path(path).with_detail(role.name()),
    }
}

/// The checks the kernel would make, made first so the caller gets a precise error and nothing is mounted.
pub(crate) fn validate(all: &[Resolved]) -> Result<()> {
    validate_with(all, Some(Features::get()))
}

/// [`validate`], with the check against live overlays (found as these features allow) only when `in_use` is given.
pub(crate) fn validate_with(all: &[Resolved], in_use: Option<&Features>) -> Result<()> {
    let mut seen: HashMap<((u32, u32), u64), &Resolved> = HashMap::with_capacity(all.len());
    for r in all {
        if let Some(first) = seen.insert((r.dev, r.ino), r) {
            return Err(overlay_error(OverlayProblem::DuplicateLayer, &r.given).with_detail(format!(
                "{} {} is the same directory as {} {}",
                r.role.name(),
                r.given.display(),
                first.role.name(),
                first.given.display()
            )));
        }
    }
    let by_path: HashMap<&Path, &Resolved> = all.iter().filter_map(|r| Some((r.path.as_deref()?, r))).collect();
    for r in all {
        let Some(path) = &r.path else { continue };
        for ancestor in path.ancestors().skip(1) {
            let Some(outer) = by_path.get(ancestor) else { continue };
            // Upper or work inside a lower layer is allowed since Linux 5.12; every other nesting is refused.
            let allowed = matches!(r.role, Role::Upper | Role::Work) && outer.role.is_layer();
            // The text says nested; a symlink at the end of the inner path could say otherwise, so confirm.
            let really = || match (r.real_path(), outer.real_path()) {
                (Some(inner), Some(outer)) => inner.starts_with(outer),
                _ => true,
            };
            if !allowed && really() {
                return Err(overlay_error(OverlayProblem::NestedLayers, &r.given).with_detail(format!(
                    "{} {} is inside {} {}",
                    r.role.name(),
                    r.given.display(),
                    outer.role.name(),
                    outer.given.display()
                )));
            }
        }
    }
    match in_use {
        Some(features) => not_in_use(all, features),
        None => Ok(()),
    }
}

/// Refuse a directory that is, or lies inside, the upper or work directory of a live overlay of this mount
/// namespace: the kernel marks those "in use" and, without `index=on`, mounts a second overlay over them with only a
/// warning in its log. The live overlays' directories are read from the mount table's `upperdir=`/`workdir=`
/// options and identified by `statx`, whatever strategy mounted them; a path the table shows that no longer leads
/// to the directory (an upper idmapped through a temporary or detached mount) cannot be checked.
fn not_in_use(all: &[Resolved], features: &Features) -> Result<()> {
    let Some(live) = LiveDirs::read(features) else { return Ok(()) };
    for r in all {
        live.check(r.role, &r.given, (r.dev, r.ino), r.path.as_deref(), || r.real_path())?;
    }
    Ok(())
}

/// A set of directories on one mount, and the deepest directory holding all of them: the one place to clone (and
/// idmap) for the whole set.
#[derive(Debug)]
pub(crate) struct Group {
    /// Where to clone from.
    pub base: PathBuf,
    /// Indexes into the resolved list, with each one's path relative to `base` (`.` for `base` itself).
    pub members: Vec<(usize, PathBuf)>,
}

pub(crate) fn common_ancestor<'a>(mut paths: impl Iterator<Item = &'a Path>) -> PathBuf {
    let mut base = paths.next().map(Path::to_path_buf).unwrap_or_default();
    for p in paths {
        while !p.starts_with(&base) {
            if !base.pop() {
                break;
            }
        }
    }
    base
}

/// Group the directories picked by `want` by the mount they are on. A directory whose real path is unknown gets a
/// group of its own, based at itself.
pub(crate) fn group_by_mount(all: &[Resolved], want: impl Fn(&Resolved) -> bool) -> Vec<Group> {
    let mut by_mount: BTreeMap<u64, Vec<usize>> = BTreeMap::new();
    let mut groups = Vec::new();
    for (i, r) in all.iter().enumerate().filter(|(_, r)| want(r)) {
        match &r.path {
            Some(_) => by_mount.entry(r.mount_id).or_default().push(i),
            None => groups.push(Group { base: r.given.clone(), members: vec![(i, PathBuf::from("."))] }),
        }
    }
    for idxs in by_mount.into_values() {
        let base = common_ancestor(idxs.iter().map(|&i| all[i].path.as_deref().expect("grouped by path")));
        let members = idxs
            .into_iter()
            .map(|i| {
                let rel = all[i].path.as_deref().and_then(|p| p.strip_prefix(&base).ok()).unwrap_or(Path::new(""));
                (i, if rel.as_os_str().is_empty() { PathBuf::from(".") } else { rel.to_path_buf() })
            })
            .collect();
        groups.push(Group { base, members });
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_ancestor_is_component_wise() {
        let paths = [Path::new("/s/a b/1"), Path::new("/s/a/2"), Path::new("/s/a/3")];
        assert_eq!(common_ancestor(paths.iter().copied()), Path::new("/s"));
        assert_eq!(common_ancestor([Path::new("/s/x")].into_iter()), Path::new("/s/x"));
        assert_eq!(common_ancestor([Path::new("/a"), Path::new("/b")].into_iter()), Path::new("/"));
    }
}
