//! After a crash: [`verify`] one committed layer, [`recover`] a store.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{OsStr, OsString};
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{Mode, OFlags};

use super::record::{AppliedLayer, marker_path, read_marker, staging_name, staging_owner, tmp_marker_owner};
use super::{digest, layer_error};
use crate::error::{Error, ErrorKind, LayerProblem, Result};

/// Check a committed layer: its marker must be there and well formed, and the content digest of the directory,
/// recomputed by reading every file, must equal the one recorded at commit. Finds the truncated, zeroed or missing
/// files a crash or a bad disk leaves.
///
/// # Errors
/// [`ErrorKind::InvalidLayer`] with [`LayerProblem::MissingMarker`] (never committed), [`LayerProblem::BadMarker`]
/// (unreadable or of an unknown version) or [`LayerProblem::ContentMismatch`] (changed since the commit);
/// [`ErrorKind::InvalidInput`] for a path ending in `.` or `..`; [`ErrorKind::Os`] when the tree cannot be read.
///
/// # Kernel
/// Any (reads through directory fds; extended attributes with `listxattrat`/`getxattrat` from 6.13, through
/// `/proc/thread-self/fd` before).
///
/// ```no_run
/// let layer = layermount::verify("/var/lib/layers/3")?;
/// println!("ok: {}", layer.diff_id);
/// # Ok::<(), layermount::Error>(())
/// ```
pub fn verify(dir: impl AsRef<Path>) -> Result<AppliedLayer> {
    const VOP: &str = "verify layer";
    let dir = dir.as_ref();
    // A path ending in `.` or `..` names another directory than its marker's.
    super::split(dir, VOP)?;
    let layer = read_marker(dir, VOP)?;
    let fd =
        rustix::fs::open(dir, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC, Mode::empty())
            .map_err(|e| Error::os(VOP, e).with_path(dir))?;
    let now = digest::content_digest(fd.as_fd(), dir, None)?;
    if now != layer.content_digest {
        return Err(layer_error(LayerProblem::ContentMismatch, VOP, dir)
            .with_detail(format!("recorded {}, found {now}", layer.content_digest)));
    }
    Ok(layer)
}

/// What [`recover`] found and did in a layer store.
///
/// ```no_run
/// let report = layermount::recover("/var/lib/layers")?;
/// println!("{} committed, {} removed", report.committed.len(), report.removed.len());
/// for (dir, why) in &report.incomplete {
///     eprintln!("{} is not a layer ({why}): apply it again", dir.display());
/// }
/// # Ok::<(), layermount::Error>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoverReport {
    /// Staging directories and temporary or orphaned markers that were removed.
    pub removed: Vec<PathBuf>,
    /// Layer directories that are not committed (no marker, or an unreadable one); left in place for the caller.
    pub incomplete: Vec<(PathBuf, LayerProblem)>,
    /// Committed layers (marker present and well formed; use [`verify`] to check their content).
    pub committed: Vec<PathBuf>,
}

/// Clean up a layer store after a crash: remove staging directories (`.<name>.partial-<pid>-<n>` without a commit
/// marker of their own, with the mount-safe [`remove_all`](crate::remove_all)), temporary markers and markers whose
/// layer is gone; report layer directories without a valid marker. Committed layers are not touched.
///
/// Every directory in `store` is taken for a layer. For another layout (a snapshotter's `snapshots/<id>/fs`), give
/// the layer directories to [`recover_dirs`].
///
/// # Errors
/// [`ErrorKind::Os`] if the store cannot be read or something found cannot be removed;
/// [`ErrorKind::MountBoundary`] if a staging directory holds a mount (nothing beneath it is removed).
///
/// # Kernel
/// Any; `openat2` (5.6) for [`remove_all`](crate::remove_all).
///
/// ```no_run
/// let report = layermount::recover("/var/lib/layers")?;
/// for (dir, why) in &report.incomplete {
///     eprintln!("{}: {why}", dir.display());
/// }
/// # Ok::<(), layermount::Error>(())
/// ```
pub fn recover(store: impl AsRef<Path>) -> Result<RecoverReport> {
    let store = store.as_ref();
    let mut report = RecoverReport::default();
    sweep(store, None, &mut report)?;
    Ok(report)
}

/// [`recover`] for layer directories wherever they live: the caller names them (a snapshotter's
/// `snapshots/<id>/fs` for each snapshot it knows). For each, the staging directories, temporary markers and the
/// orphaned marker that [`apply`](crate::apply) or [`apply_into`](crate::apply_into) may have left beside it are
/// removed; the directory itself is reported committed or incomplete (a missing one is skipped). Nothing else in
/// the parent directories is looked at: a snapshot's `work` directory, or another program's files, stay.
///
/// # Errors
/// As [`recover`]: [`ErrorKind::Os`] if a parent directory cannot be read or something found cannot be removed,
/// [`ErrorKind::MountBoundary`] if a staging directory holds a mount; [`ErrorKind::InvalidInput`] for a path
/// ending in `.` or `..`.
///
/// # Kernel
/// Any; `openat2` (5.6) for [`remove_all`](crate::remove_all).
///
/// ```no_run
/// let snapshots = std::fs::read_dir("/var/lib/snap/snapshots")?
///     .map(|e| e.map(|e| e.path().join("fs")))
///     .collect::<std::io::Result<Vec<_>>>()?;
/// let report = layermount::recover_dirs(&snapshots)?;
/// println!("{} removed, {} incomplete", report.removed.len(), report.incomplete.len());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn recover_dirs(dirs: impl IntoIterator<Item = impl AsRef<Path>>) -> Result<RecoverReport> {
    let mut by_parent: BTreeMap<PathBuf, BTreeSet<OsString>> = BTreeMap::new();
    for dir in dirs {
        let (parent, name) = super::split(dir.as_ref(), ROP)?;
        by_parent.entry(parent).or_default().insert(name);
    }
    let mut report = RecoverReport::default();
    for (parent, names) in &by_parent {
        sweep(parent, Some(names), &mut report)?;
    }
    Ok(report)
}

const ROP: &str = "recover layers";

/// One directory's sweep: of everything (`layers` = `None`, a flat store) or of what belongs to the named layers.
fn sweep(store: &Path, layers: Option<&BTreeSet<OsString>>, report: &mut RecoverReport) -> Result<()> {
    let ours = |owner: Option<&[u8]>| match (owner, layers) {
        (None, _) => false,
        (Some(_), None) => true,
        (Some(o), Some(set)) => set.contains(OsStr::from_bytes(o)),
    };
    let mut names: Vec<OsString> = Vec::new();
    let entries = match std::fs::read_dir(store) {
        Ok(entries) => entries,
        // A caller's list may name snapshots whose directory is gone: nothing to do there.
        Err(e) if layers.is_some() && e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io(ROP, &e).with_path(store)),
    };
    for e in entries {
        names.push(e.map_err(|e| Error::io(ROP, &e).with_path(store))?.file_name());
    }
    names.sort();
    for name in names {
        let path = store.join(&name);
        let text = name.to_string_lossy();
        let Ok(meta) = std::fs::symlink_metadata(&path) else { continue };
        let has_marker = || std::fs::symlink_metadata(marker_path(&path)).is_ok_and(|m| m.is_file());
        let marker_of = text.strip_suffix(".commit").filter(|_| meta.is_file());
        if staging_name(&name) && meta.is_dir() && ours(staging_owner(&name)) && !has_marker() {
            crate::remove::remove_all(&path)?;
            report.removed.push(path);
        } else if text.starts_with('.') && text.ends_with(".commit.tmp") && !meta.is_dir() {
            if layers.is_none() || ours(tmp_marker_owner(&name)) {
                std::fs::remove_file(&path).map_err(|e| Error::io(ROP, &e).with_path(&path))?;
                report.removed.push(path);
            }
        } else if let Some(stem) = marker_of {
            if ours(Some(stem.as_bytes())) && !store.join(stem).is_dir() {
                std::fs::remove_file(&path).map_err(|e| Error::io(ROP, &e).with_path(&path))?;
                report.removed.push(path);
            }
        } else if meta.is_dir() && layers.is_none_or(|set| set.contains(&name)) {
            match read_marker(&path, ROP) {
                Ok(_) => report.committed.push(path),
                Err(e) => match e.kind() {
                    ErrorKind::InvalidLayer(p) => report.incomplete.push((path, p)),
                    _ => return Err(e),
                },
            }
        }
    }
    Ok(())
}
