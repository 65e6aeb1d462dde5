//! OCI image layers applied into directories that overlay can stack: whiteouts, hostile archives, and an atomic,
//! crash-safe commit that [`verify`] and [`recover`] can check afterwards.
//!
//! No mount is used to unpack. [`apply`] writes into a sibling staging directory `.<name>.partial-<pid>-<n>`,
//! computes the diff_id (sha256 of the uncompressed tar stream) on the way, compares it with the expected digest,
//! syncs, renames the staging directory to `<name>` (which must not exist before) and writes the commit marker
//! `<name>.commit` last, then syncs the parent directory. A layer without its marker is not committed, whatever its
//! directory holds.

mod apply;
mod audit;
mod digest;
mod extract;
mod options;
mod record;
mod recover;
mod stream;
mod xattr;

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use rustix::fs::{Mode, OFlags};

use crate::error::{Error, ErrorKind, LayerProblem, Result};
pub use apply::apply;
pub use audit::{AuditFinding, AuditProblem, audit};
pub use options::{ApplyOptions, DeviceMode, SyncMode, WhiteoutMode};
pub use record::{AppliedLayer, ApplyStats, marker_path};
pub use recover::{RecoverReport, recover, verify};
pub use stream::Compression;

pub(crate) fn layer_error(problem: LayerProblem, operation: &'static str, path: &Path) -> Error {
    Error::new(ErrorKind::InvalidLayer(problem), operation).with_path(path)
}

pub(crate) fn split(dest: &Path, operation: &'static str) -> Result<(PathBuf, std::ffi::OsString)> {
    let name = dest.file_name().ok_or_else(|| {
        Error::new(ErrorKind::InvalidInput, operation).with_path(dest).with_detail("path must end in a name")
    })?;
    let parent = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    Ok((parent, name.to_os_string()))
}

fn open_dir_path(path: &Path, operation: &'static str) -> Result<OwnedFd> {
    rustix::fs::open(path, OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
        .map_err(|e| Error::os(operation, e).with_path(path))
}
