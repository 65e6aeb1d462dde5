//! The mounts of composed roots, kept in the store as the library's encoded [`MountRecord`]s: one made when a root
//! is attached, checked (same mount) before it is detached, by this process or the next one.

use layermount::{MountGuard, MountRecord};

use crate::error::{Error, Result};

/// Keep the guard's mount attached for good and return its record, encoded.
pub(crate) fn record(guard: MountGuard) -> Result<Vec<u8>> {
    let record = guard.record().ok_or_else(|| {
        Error::internal(format!("composed root {}: the kernel gave no mount id", guard.path().display()))
    })?;
    guard.leak();
    Ok(record.encode())
}

/// Read a stored record.
pub(crate) fn decode(bytes: &[u8]) -> Result<MountRecord> {
    Ok(MountRecord::decode(bytes)?)
}

/// Detach the recorded mount, after checking it is still the one recorded, and remove its mount point (`rmdir`).
/// A mount already gone is not an error.
pub(crate) fn release(bytes: &[u8]) -> Result<()> {
    let record = decode(bytes)?;
    if record.is_attached()? {
        MountGuard::adopt_record(&record)?.unmount()?;
    }
    Ok(())
}
