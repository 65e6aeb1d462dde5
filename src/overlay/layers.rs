//! Opening, identifying and validating the directories of an overlay before anything is mounted.

use std::collections::{BTreeMap, HashMap};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, CWD, Mode, OFlags, StatxFlags};
use rustix::io::Errno;

use crate::error::{Error, ErrorKind, OverlayProblem, Result};

/// The kernel's limit on lower plus data-only layers (`OVL_MAX_STACK`).
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
    fn name(self) -> &'static str {
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

/// A directory of the overlay, opened once (`O_PATH`) and identified.
#[derive(Debug)]
pub(crate) struct Resolved {
    pub role: Role,
    /// The path as the caller gave it (or `fd:N` for a caller's fd), for errors.
    pub given: PathBuf,
    pub fd: OwnedFd,
    /// Where it really is, read back from the fd; `None` when not reachable from our root (a detached tree).
    pub real: Option<PathBuf>,
    pub dev: (u32, u32),
    pub ino: u64,
    pub mount_id: u64,
    /// Given as a path (so we may idmap it); a caller's fd is used as it is.
    pub from_path: bool,
}

fn overlay_error(problem: OverlayProblem, path: &Path) -> Error {
    Error::new(ErrorKind::InvalidOverlay(problem), "compose overlay").with_path(path)
}

fn identify(role: Role, given: PathBuf, fd: OwnedFd, from_path: bool) -> Result<Resolved> {
    let st = rustix::fs::statx(&fd, "", AtFlags::EMPTY_PATH, StatxFlags::TYPE | StatxFlags::INO | StatxFlags::MNT_ID)
        .map_err(|e| Error::os("compose overlay: stat", e).with_path(&given))?;
    if rustix::fs::FileType::from_raw_mode(u32::from(st.stx_mode)) != rustix::fs::FileType::Directory {
        return Err(overlay_error(OverlayProblem::NotADirectory, &given));
    }
    let link = format!("/proc/thread-self/fd/{}", fd.as_raw_fd());
    let real = std::fs::read_link(link).ok().filter(|p| p.is_absolute() && p.exists());
    Ok(Resolved {
        role,
        given,
        fd,
        real,
        dev: (st.stx_dev_major, st.stx_dev_minor),
        ino: st.stx_ino,
        mount_id: st.stx_mnt_id,
        from_path,
    })
}

/// Open `path` as a directory (`O_PATH`), following symlinks as path lookup does.
pub(crate) fn resolve_path(role: Role, path: &Path) -> Result<Resolved> {
    let fd = rustix::fs::openat(CWD, path, OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty()).map_err(
        |e| match e {
            Errno::NOTDIR => overlay_error(OverlayProblem::NotADirectory, path),
            _ => Error::os("compose overlay: open", e).with_path(path).with_detail(role.name()),
        },
    )?;
    identify(role, path.to_path_buf(), fd, true)
}

/// Identify a directory fd the caller gave (kept open; used as it is).
pub(crate) fn resolve_fd(role: Role, fd: OwnedFd) -> Result<Resolved> {
    let given = PathBuf::from(format!("fd:{}", fd.as_raw_fd()));
    identify(role, given, fd, false)
}

/// The checks the kernel would make, made first so the caller gets a precise error and nothing is mounted.
pub(crate) fn validate(all: &[Resolved], has_upper: bool) -> Result<()> {
    let lowers = all.iter().filter(|r| r.role == Role::Lower).count();
    let layers = all.iter().filter(|r| r.role.is_layer()).count();
    if lowers == 0 {
        return Err(Error::new(ErrorKind::InvalidOverlay(OverlayProblem::NoLowerLayer), "compose overlay"));
    }
    if lowers == 1 && !has_upper {
        let only = all.iter().find(|r| r.role == Role::Lower).expect("one lower");
        return Err(overlay_error(OverlayProblem::SingleLowerWithoutUpper, &only.given));
    }
    if layers > MAX_LAYERS {
        return Err(Error::new(ErrorKind::InvalidOverlay(OverlayProblem::TooManyLayers), "compose overlay")
            .with_detail(format!("{layers} layers; the kernel stacks at most {MAX_LAYERS}")));
    }
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
    let by_path: HashMap<&Path, &Resolved> = all.iter().filter_map(|r| Some((r.real.as_deref()?, r))).collect();
    for r in all {
        let Some(real) = &r.real else { continue };
        for ancestor in real.ancestors().skip(1) {
            let Some(outer) = by_path.get(ancestor) else { continue };
            // Upper or work inside a lower layer is allowed since Linux 5.12; every other nesting is refused.
            let allowed = matches!(r.role, Role::Upper | Role::Work) && outer.role.is_layer();
            if !allowed {
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
        match &r.real {
            Some(_) => by_mount.entry(r.mount_id).or_default().push(i),
            None => groups.push(Group { base: r.given.clone(), members: vec![(i, PathBuf::from("."))] }),
        }
    }
    for idxs in by_mount.into_values() {
        let base = common_ancestor(idxs.iter().map(|&i| all[i].real.as_deref().expect("grouped by real path")));
        let members = idxs
            .into_iter()
            .map(|i| {
                let rel = all[i].real.as_deref().and_then(|p| p.strip_prefix(&base).ok()).unwrap_or(Path::new(""));
                (i, if rel.as_os_str().is_empty() { PathBuf::from(".") } else { rel.to_path_buf() })
            })
            .collect();
        groups.push(Group { base, members });
    }
    groups
}

/// Reopen a resolved directory `O_RDONLY` (for kernels whose overlay refuses `O_PATH` layer fds).
pub(crate) fn reopen_readable(r: &Resolved) -> Result<OwnedFd> {
    rustix::fs::openat(r.fd.as_fd(), ".", OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
        .map_err(|e| Error::os("compose overlay: open", e).with_path(&r.given))
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
