//! Reconcile the store with the disk and the mount table on start, after a crash at any step.
//!
//! Each operation orders its steps so that a crash leaves only states this pass repairs:
//!
//! * Prepare/View make the directory (and a composed root) *before* the transaction that records them: a crash
//!   before it leaves a directory that no record names. Such an orphan's composed root (the mount at its
//!   `rootfs`, the only mount this snapshotter makes there) is detached, then the directory goes through
//!   `remove_all`, which never crosses a mount.
//! * Remove deletes the record *before* the directory: the same orphan.
//! * A record whose composed root is no longer attached (detached by a Commit or Remove that crashed before its
//!   transaction, or gone with a reboot) forgets it; the next `Mounts` composes it again.
//! * A composed root still attached is kept: containerd may have a container running on it.
//! * Committed snapshots are never touched.

use std::collections::HashSet;

use layermount::{MountGuard, MountTable};

use crate::error::{Error, Result};
use crate::roots;
use crate::snapshotter::Snapshotter;

/// What a reconcile pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    /// Orphan snapshot directories removed.
    pub removed_dirs: Vec<String>,
    /// Mounts detached (composed roots no record named).
    pub detached: Vec<String>,
    /// Records whose composed root had vanished.
    pub forgotten_roots: Vec<String>,
}

/// Reconcile `s`'s store (see the module docs). Problems that cannot be repaired (a foreign mount inside an
/// orphan directory) are logged and left alone.
///
/// # Errors
/// Database errors, or the snapshot directory cannot be read.
pub fn reconcile(s: &Snapshotter) -> Result<Report> {
    let mut report = Report::default();
    let records = s.store().all()?;
    let mut live = HashSet::new();
    for (key, rec) in &records {
        live.insert(rec.id.to_string());
        if let Some(root) = &rec.root
            && !roots::decode(root)?.is_attached()?
        {
            s.store().update(key, |r| {
                r.root = None;
                Ok(())
            })?;
            report.forgotten_roots.push(key.clone());
        }
    }
    let table = MountTable::current()?;
    let snapshots = s.snapshots_dir();
    let entries = std::fs::read_dir(&snapshots).map_err(|e| Error::io("read directory", &snapshots, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io("read directory", &snapshots, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let dir = entry.path();
        let recorded_root = records.iter().find(|(_, r)| r.id.to_string() == name).and_then(|(_, r)| r.root.clone());
        // A mount at `rootfs` that no record names is a composed root whose Prepare (or re-compose) never
        // finished: only this snapshotter mounts there.
        if let Ok(id) = name.parse::<u64>() {
            let rootfs = s.rootfs(id);
            let recorded =
                recorded_root.as_deref().is_some_and(|r| roots::decode(r).is_ok_and(|r| r.target() == rootfs));
            if !recorded && table.mounts().iter().any(|m| m.mount_point == rootfs) {
                MountGuard::adopt(&rootfs)?.unmount()?;
                std::fs::remove_dir(&rootfs).map_err(|e| Error::io("remove mount point", &rootfs, e))?;
                report.detached.push(rootfs.display().to_string());
            }
        }
        if live.contains(&name) {
            continue;
        }
        match layermount::remove_all(&dir) {
            Ok(_) => report.removed_dirs.push(name),
            Err(e) => eprintln!("layermount-snapshotter: orphan {} left: {e}", dir.display()),
        }
    }
    Ok(report)
}
