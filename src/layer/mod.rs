//! OCI image layers applied into directories that overlay can stack: whiteouts, hostile archives, and an atomic,
//! crash-safe commit that [`verify`] and [`recover`] can check afterwards.
//!
//! No mount is used to unpack. [`apply`] writes into a sibling staging directory `.<name>.partial-<pid>-<n>`,
//! computes the diff_id (sha256 of the uncompressed tar stream) on the way, compares it with the expected digest,
//! syncs, writes the commit marker under a temporary name, renames the staging directory to `<name>` (which must
//! not exist before, nor its marker) and renames the marker to `<name>.commit` last, then syncs the parent directory. A layer without its marker is not committed, whatever its
//! directory holds.
//!
//! For a snapshotter, whose Prepare has made the directory already, [`apply_into`] applies into an existing empty
//! directory with the same guarantees (the staging directory is swapped with it by `renameat2(RENAME_EXCHANGE)`,
//! the marker last), [`is_committed`] says whether a directory holds a committed layer, and [`recover_dirs`] cleans
//! up beside layer directories wherever they live (`snapshots/<id>/fs`). A reader that fails is never taken for a
//! corrupt layer: `Interrupted` is [`ErrorKind::Cancelled`], any other error keeps
//! its kind. [`ApplyOptions::progress`] reports bytes read and entries applied.
//!
//! # Kernel
//!
//! No mount and no `CAP_SYS_ADMIN`: applying needs `openat2` (Linux 5.6) and, for whiteouts as overlay writes them,
//! `CAP_MKNOD` for 0/0 character devices (unprivileged callers may make them from 5.8) and `CAP_SYS_ADMIN` for
//! `trusted.overlay.*` xattrs ([`WhiteoutMode::OverlayUserXattr`] writes `user.overlay.*` instead).
//!
//! # Example
//!
//! An image's layers applied bottom-up into a store, each on top of those below it, then checked after a restart:
//!
//! ```no_run
//! use layermount::{ApplyOptions, apply, recover, verify};
//!
//! let blobs = ["base.tar.gz", "app.tar.zst"]; // bottom-most first, as in the manifest
//! let mut below: Vec<String> = Vec::new();
//! for (i, blob) in blobs.iter().enumerate() {
//!     let dest = format!("/var/lib/layers/{i}");
//!     let opts = below.iter().rev().fold(ApplyOptions::new(), |o, p| o.parent(p)); // top-most parent first
//!     let layer = apply(std::fs::File::open(blob)?, &dest, &opts)?;
//!     println!("{dest}: {}", layer.diff_id);
//!     below.push(dest);
//! }
//! // After a crash: clean up what was cut short, then check a layer's content against its commit record.
//! let report = recover("/var/lib/layers")?;
//! assert!(report.incomplete.is_empty());
//! verify("/var/lib/layers/1")?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The same without privilege, on a temporary directory: a caller may apply a layer whose entries it owns.
//!
//! ```
//! use std::os::unix::fs::MetadataExt;
//! use layermount::{ApplyOptions, SyncMode, apply, is_committed, recover, verify};
//!
//! let store = std::env::temp_dir().join(format!("layermount-doc-layer-{}", std::process::id()));
//! std::fs::create_dir(&store)?;
//! let me = std::fs::metadata(&store)?; // entries owned by the caller: no privilege needed to apply them
//! let mut tar = tar::Builder::new(Vec::new());
//! for dir in [".", "etc", "bin"] {
//!     let mut h = tar::Header::new_gnu();
//!     h.set_entry_type(tar::EntryType::Directory);
//!     h.set_size(0);
//!     h.set_mode(0o755);
//!     h.set_uid(me.uid().into());
//!     h.set_gid(me.gid().into());
//!     h.set_cksum();
//!     tar.append_data(&mut h, dir, std::io::empty())?;
//! }
//! for (name, data) in [("etc/hostname", &b"box\n"[..]), ("bin/hello", b"#!/bin/sh\necho hi\n")] {
//!     let mut h = tar::Header::new_gnu();
//!     h.set_size(data.len() as u64);
//!     h.set_mode(0o755);
//!     h.set_uid(me.uid().into());
//!     h.set_gid(me.gid().into());
//!     h.set_cksum();
//!     tar.append_data(&mut h, name, data)?;
//! }
//! let blob = tar.into_inner()?;
//!
//! let layer = apply(&blob[..], store.join("1"), &ApplyOptions::new().sync(SyncMode::None))?;
//! assert_eq!(std::fs::read(store.join("1/etc/hostname"))?, b"box\n");
//! assert_eq!(layer.stats.files, 2);
//! assert!(is_committed(store.join("1"))?);
//! assert_eq!(verify(store.join("1"))?.diff_id, layer.diff_id);
//! assert_eq!(recover(&store)?.committed, [store.join("1")]);
//! layermount::remove_all(&store)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod apply;
mod audit;
mod digest;
mod extract;
mod limits;
mod options;
mod record;
mod recover;
mod stream;
mod xattr;

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use crate::error::{Error, ErrorKind, LayerProblem, Result};
pub use apply::{apply, apply_into, is_committed};
pub use audit::{AuditFinding, AuditProblem, audit};
pub use options::{ApplyOptions, DeviceMode, SyncMode, WhiteoutMode};
pub use record::{AppliedLayer, ApplyStats, marker_path};
pub use recover::{RecoverReport, recover, recover_dirs, verify};
pub use stream::{Compression, Progress};

pub(crate) fn layer_error(problem: LayerProblem, operation: &'static str, path: &Path) -> Error {
    Error::new(ErrorKind::InvalidLayer(problem), operation).with_path(path)
}

pub(crate) fn split(dest: &Path, operation: &'static str) -> Result<(PathBuf, std::ffi::OsString)> {
    let name = crate::remove::final_name(dest).ok_or_else(|| {
        Error::new(ErrorKind::InvalidInput, operation)
            .with_path(dest)
            .with_detail("path must end in a name (not /, . or ..)")
    })?;
    let parent = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    Ok((parent, name.to_os_string()))
}

fn open_dir_path(path: &Path, operation: &'static str) -> Result<OwnedFd> {
    crate::fd::open_dir_path(path).map_err(|e| Error::os(operation, e).with_path(path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_common::{self as common, archive::E, archive::tar_of};

    /// Defect 12: replacing directories with files does not read the mount table once per directory (with 2,000
    /// mounts on the host that cost 114 s for 20k replacements); one read per apply at most.
    #[test]
    fn replacing_directories_reads_the_mount_table_at_most_once() {
        common::privileged("replacing_directories_reads_the_mount_table_at_most_once", |scratch| {
            let leak = |s: String| -> &'static str { Box::leak(s.into_boxed_str()) };
            let mut entries = Vec::new();
            for i in 0..50 {
                let d = leak(format!("d{i}"));
                entries.push(E::Dir(d));
                entries.push(E::File(leak(format!("d{i}/x")), "x"));
                entries.push(E::File(d, "now a file"));
            }
            let before = crate::mountinfo::reads();
            let dest = scratch.join("l");
            apply(&tar_of(&entries)[..], &dest, &ApplyOptions::new().sync(SyncMode::None)).unwrap();
            let reads = crate::mountinfo::reads() - before;
            assert!(reads <= 1, "{reads} mount table reads for 50 replaced directories");
            assert_eq!(std::fs::read(dest.join("d7")).unwrap(), b"now a file");
        });
    }
}
