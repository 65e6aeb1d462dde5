//! After a crash: [`verify`] one committed layer, [`recover`] a store.

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use rustix::fs::{Mode, OFlags};

use super::record::{AppliedLayer, read_marker, staging_name};
use super::{digest, layer_error};
use crate::error::{Error, ErrorKind, LayerProblem, Result};

/// Check a committed layer: its marker must be there and well formed, and the content digest of the directory,
/// recomputed by reading every file, must equal the one recorded at commit. Finds the truncated, zeroed or missing
/// files a crash or a bad disk leaves.
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
/// ```no_run
/// let report = layermount::recover("/var/lib/layers")?;
/// for (dir, why) in &report.incomplete {
///     eprintln!("{}: {why}", dir.display());
/// }
/// # Ok::<(), layermount::Error>(())
/// ```
pub fn recover(store: impl AsRef<Path>) -> Result<RecoverReport> {
    const ROP: &str = "recover layers";
    let store = store.as_ref();
    let mut report = RecoverReport::default();
    let mut names: Vec<std::ffi::OsString> = Vec::new();
    for e in std::fs::read_dir(store).map_err(|e| Error::io(ROP, &e).with_path(store))? {
        names.push(e.map_err(|e| Error::io(ROP, &e).with_path(store))?.file_name());
    }
    names.sort();
    for name in names {
        let path = store.join(&name);
        let text = name.to_string_lossy();
        let Ok(meta) = std::fs::symlink_metadata(&path) else { continue };
        let has_marker = || std::fs::symlink_metadata(super::record::marker_path(&path)).is_ok_and(|m| m.is_file());
        if staging_name(&name) && meta.is_dir() && !has_marker() {
            crate::remove::remove_all(&path)?;
            report.removed.push(path);
        } else if text.starts_with('.') && text.ends_with(".commit.tmp") && !meta.is_dir() {
            std::fs::remove_file(&path).map_err(|e| Error::io(ROP, &e).with_path(&path))?;
            report.removed.push(path);
        } else if let Some(stem) = text.strip_suffix(".commit").filter(|_| meta.is_file()) {
            if !store.join(stem).is_dir() {
                std::fs::remove_file(&path).map_err(|e| Error::io(ROP, &e).with_path(&path))?;
                report.removed.push(path);
            }
        } else if meta.is_dir() {
            match read_marker(&path, ROP) {
                Ok(_) => report.committed.push(path),
                Err(e) => match e.kind() {
                    ErrorKind::InvalidLayer(p) => report.incomplete.push((path, p)),
                    _ => return Err(e),
                },
            }
        }
    }
    Ok(report)
}
