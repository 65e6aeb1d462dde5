//! The calls into layermount that wait for the library's API issue (#8): mount records that survive the process,
//! "is this root still in use". Each is written here once, over what the library has today, so
//! that switching to the library's own call touches this file only.

use std::path::PathBuf;

use layermount::{MountGuard, MountTable};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// What is kept of a composed root's mount in the store.
#[derive(Debug, Serialize, Deserialize)]
struct Record {
    path: PathBuf,
    mount_id: u64,
    device: (u32, u32),
    root: PathBuf,
}

fn decode(bytes: &[u8]) -> Result<Record> {
    serde_json::from_slice(bytes).map_err(|e| Error::internal(format!("mount record unreadable: {e}")))
}

/// Keep the guard's mount attached for good and return its record.
pub(crate) fn record(guard: MountGuard) -> Result<Vec<u8>> {
    let id = guard.mount_id().ok_or_else(|| Error::internal("composed root: mount id unknown"))?;
    let path = guard.leak();
    let table = MountTable::current()?;
    let m = table.by_id(id).ok_or_else(|| Error::internal(format!("composed root {} vanished", path.display())))?;
    let rec = Record { path, mount_id: id, device: m.device, root: m.root.clone() };
    Ok(serde_json::to_vec(&rec).expect("a record always serializes"))
}

/// The mount point of a record.
pub(crate) fn path(bytes: &[u8]) -> Result<PathBuf> {
    Ok(decode(bytes)?.path)
}

/// Whether the recorded mount is still attached at its path.
pub(crate) fn is_attached(bytes: &[u8]) -> Result<bool> {
    let rec = decode(bytes)?;
    let table = MountTable::current()?;
    Ok(table.by_id(rec.mount_id).is_some_and(|m| m.mount_point == rec.path))
}

/// Other mounts of the same root (bind mounts of it, e.g. a container's `rootfs`): while there is one, the root is
/// in use.
pub(crate) fn other_mounts(bytes: &[u8]) -> Result<Vec<PathBuf>> {
    let rec = decode(bytes)?;
    let table = MountTable::current()?;
    Ok(table
        .mounts()
        .iter()
        .filter(|m| m.mount_id != rec.mount_id && m.device == rec.device && m.root == rec.root)
        .map(|m| m.mount_point.clone())
        .collect())
}

/// Detach the recorded mount, after checking it is still the one recorded, and remove its mount point (`rmdir`).
/// A mount already gone is not an error.
pub(crate) fn release(bytes: &[u8]) -> Result<()> {
    let rec = decode(bytes)?;
    if !is_attached(bytes)? {
        return Ok(());
    }
    let guard = MountGuard::adopt(&rec.path)?;
    if guard.mount_id() != Some(rec.mount_id) {
        let _ = guard.leak();
        return Err(Error::internal(format!("{}: not the recorded mount", rec.path.display())));
    }
    guard.unmount()?;
    std::fs::remove_dir(&rec.path).map_err(|e| Error::io("remove mount point", &rec.path, e))
}
