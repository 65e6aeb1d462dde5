//! [`apply`]: one OCI layer into a new directory, staged beside it and committed atomically.

use std::io::Read;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use rustix::fs::{AtFlags, Mode, OFlags, RenameFlags, StatxFlags};
use rustix::io::Errno;

use super::extract::Extractor;
use super::options::{ApplyOptions, SyncMode};
use super::record::{AppliedLayer, marker_path, prepare_marker, reserved_name, valid_digest};
use super::{digest, layer_error, limits, open_dir_path, split, stream};
use crate::error::{Error, ErrorKind, LayerProblem, Result};
#[cfg(doc)]
use crate::layer::{ApplyStats, WhiteoutMode, recover, verify};

const OP: &str = "apply layer";

/// Removes the staging directory unless disarmed.
struct Staging {
    path: PathBuf,
    armed: bool,
}

impl Drop for Staging {
    fn drop(&mut self) {
        if self.armed {
            let _ = crate::remove::remove_all(&self.path);
        }
    }
}

/// Apply the layer read from `reader` (tar, tar+gzip or tar+zstd, detected by magic bytes) into the new directory
/// `dest`, which must not exist, and commit it.
///
/// No mount is used. The layer is written into a sibling staging directory `.<name>.partial-<pid>-<n>`; the diff_id
/// (sha256 of the uncompressed stream) is computed on the way and compared with [`ApplyOptions::expected_diff_id`];
/// the data is synced ([`SyncMode`]); the commit marker ([`marker_path`]) is written and synced under a temporary
/// name; the staging directory is renamed to `dest`; the marker is renamed into place last and the parent directory
/// synced. A layer without its marker is not committed. If the marker cannot be written (no space, no inodes),
/// nothing is published; if it cannot be put in place, the layer is unpublished again.
///
/// `dest` must not exist, nor its marker (a marker left from an earlier layer of that name is refused: run
/// [`recover`], which removes markers whose layer is gone). Names [`recover`] takes for its own are refused
/// ([`ErrorKind::InvalidInput`]): `.<x>.partial-<y>`, `*.commit`, `*.commit.tmp`, and so is a path ending in `.` or
/// `..`.
///
/// Choices on hostile input (each tested):
/// * a name with a `..` component, or a hardlink target with one: refused ([`ErrorKind::Breakout`]);
/// * an absolute name (`/etc/passwd`): contained (`etc/passwd` in the layer);
/// * a symlink in a path (of this layer or a lower one): followed *inside the image*, `/` being the layer root, so
///   `lib/x` with `lib -> /usr/lib` lands at `usr/lib/x`, as the merged view will show it; nothing is ever
///   resolved outside the layer directory;
/// * `*.overlay.*` xattrs in the archive: dropped (counted in [`ApplyStats::dropped_xattrs`]); overlay metadata is
///   only ever written by layermount itself, in the namespace of the chosen [`WhiteoutMode`];
/// * a character device 0/0 (overlay's own whiteout): refused outside [`WhiteoutMode::Oci`];
/// * `.wh.` without a name, `.wh..`, `.wh...`: refused ([`LayerProblem::BadWhiteout`]); other `.wh..wh.*` names
///   (aufs bookkeeping) are skipped;
/// * a root-level opaque marker, which overlay ignores on a layer's root, becomes explicit whiteouts of every name
///   the lower layers ([`ApplyOptions::parent`]) show at the root.
///
/// On any error nothing is left behind: the staging directory is removed and `dest` never appears.
///
/// ```no_run
/// use layermount::{apply, ApplyOptions};
/// let blob = std::fs::File::open("layer.tar.gz")?;
/// let layer = apply(blob, "/var/lib/layers/3", &ApplyOptions::new().parent("/var/lib/layers/2"))?;
/// println!("{} ({})", layer.diff_id, layer.stats);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn apply(reader: impl Read + Send, dest: impl AsRef<Path>, opts: &ApplyOptions) -> Result<AppliedLayer> {
    let dest = dest.as_ref();
    let (parent, name) = split(dest, OP)?;
    if let Some(d) = &opts.expected_diff_id
        && !valid_digest(d)
    {
        return Err(Error::new(ErrorKind::InvalidInput, OP)
            .with_path(dest)
            .with_detail(format!("expected diff_id \"{d}\" is not sha256:<64 hex>")));
    }
    if reserved_name(&name) {
        return Err(Error::new(ErrorKind::InvalidInput, OP)
            .with_path(dest)
            .with_detail("the name is of the kind recover removes (staging directories, markers)"));
    }
    let parent_fd = open_dir_path(&parent, OP)?;
    match rustix::fs::statx(&parent_fd, &name, AtFlags::SYMLINK_NOFOLLOW, StatxFlags::TYPE) {
        Err(Errno::NOENT) => {}
        Ok(_) => return Err(layer_error(LayerProblem::DestinationExists, OP, dest)),
        Err(e) => return Err(Error::os(OP, e).with_path(dest)),
    }
    // A marker left from an earlier layer of this name would make the new directory look committed the moment it
    // is renamed into place.
    let marker = marker_path(dest);
    match rustix::fs::statx(&parent_fd, marker_path(&name), AtFlags::SYMLINK_NOFOLLOW, StatxFlags::TYPE) {
        Err(Errno::NOENT) => {}
        Ok(_) => {
            return Err(layer_error(LayerProblem::DestinationExists, OP, dest).with_detail(format!(
                "its commit marker {} is still there (recover removes a marker whose layer is gone)",
                marker.display()
            )));
        }
        Err(e) => return Err(Error::os(OP, e).with_path(marker)),
    }
    let lowers = opts.parents.iter().map(|p| open_dir_path(p, OP)).collect::<Result<Vec<_>>>()?;

    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let staging_name = format!(
        ".{}.partial-{}-{}",
        name.to_string_lossy(),
        rustix::process::getpid().as_raw_nonzero(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    );
    rustix::fs::mkdirat(&parent_fd, staging_name.as_str(), Mode::RWXU)
        .map_err(|e| Error::os(OP, e).with_path(parent.join(&staging_name)))?;
    let mut staging = Staging { path: parent.join(&staging_name), armed: true };
    // In a setgid store the new directory inherited the set-gid bit, which every directory and file made in it
    // would inherit in turn (with the store's group): drop it now; final modes are set at the end.
    rustix::fs::chmodat(&parent_fd, staging_name.as_str(), Mode::RWXU, AtFlags::empty())
        .map_err(|e| Error::os(OP, e).with_path(&staging.path))?;
    let root = rustix::fs::openat(
        &parent_fd,
        staging_name.as_str(),
        OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| Error::os(OP, e).with_path(&staging.path))?;

    let corrupt = |e: std::io::Error| match limits::TooLarge::of(&e) {
        Some(too_large) => layer_error(LayerProblem::MetadataTooLarge, OP, dest).with_detail(too_large.to_string()),
        None => Error::io(OP, &e).with_path(dest).with_kind(ErrorKind::InvalidLayer(LayerProblem::Corrupt)),
    };
    let (summary, crcs, (stats, opaque), predicted) = std::thread::scope(|s| -> Result<_> {
        let ((tx, recycled), mut chunks) = stream::channel();
        let pump = s.spawn(move || stream::pump(reader, tx, recycled));
        let extracted = (|| -> Result<_> {
            let root_dup = root.try_clone().map_err(|e| Error::io(OP, &e))?;
            let mut ex = Extractor::new(opts, root_dup, staging.path.clone(), lowers);
            let mut archive = tar::Archive::new(limits::Guard::new(&mut chunks));
            for entry in archive.entries().map_err(corrupt)? {
                let mut entry = entry.map_err(corrupt)?;
                ex.entry(&mut entry)?;
            }
            ex.finish()?;
            let predicted = ex.records.take().map(|r| (std::mem::take(&mut ex.root_record), r));
            let mut opaque: Vec<PathBuf> = ex.opaque.drain().collect();
            opaque.sort();
            Ok((ex.crcs, (ex.stats, opaque), predicted))
        })();
        let drained = match &extracted {
            Ok(_) => chunks.drain(),
            Err(_) => Ok(()),
        };
        drop(chunks);
        let summary = pump.join().unwrap_or_else(|p| std::panic::resume_unwind(p));
        let (crcs, stats, predicted) = extracted?;
        drained.map_err(corrupt)?;
        Ok((summary.map_err(corrupt)?, crcs, stats, predicted))
    })?;

    let diff_id = format!("sha256:{}", summary.sha256_hex);
    if let Some(expected) = &opts.expected_diff_id
        && !expected.eq_ignore_ascii_case(&diff_id)
    {
        return Err(layer_error(LayerProblem::DigestMismatch, OP, dest)
            .with_detail(format!("expected {expected}, got {diff_id}")));
    }
    let root_fd = rustix::fs::openat(&root, ".", OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
        .map_err(|e| Error::os(OP, e).with_path(&staging.path))?;
    match opts.sync {
        SyncMode::Syncfs => rustix::fs::syncfs(&root_fd).map_err(|e| Error::os(OP, e).with_path(&staging.path))?,
        SyncMode::Fsync | SyncMode::None => {}
    }
    // The digest from the records extraction kept, or (if it could not keep them) from a walk of the tree. Debug
    // builds, the tests among them, always check the one against the other.
    let content_digest = match predicted {
        Some((root_record, records)) => {
            let records = records.into_iter().map(|(p, r)| (p.into_os_string().into_vec(), r)).collect();
            let d = digest::digest_of(&root_record, records);
            if cfg!(debug_assertions) {
                let walked = digest::content_digest(root_fd.as_fd(), &staging.path, Some(&crcs))?;
                assert_eq!(d, walked, "content digest predicted at apply differs from the tree's");
            }
            d
        }
        None => digest::content_digest(root_fd.as_fd(), &staging.path, Some(&crcs))?,
    };

    let layer = AppliedLayer {
        diff_id,
        content_digest,
        stats,
        uncompressed_size: summary.length,
        compression: summary.compression,
        whiteouts: Some(opts.whiteouts),
        opaque_dirs: Some(opaque),
    };
    // The marker is written (under a temporary name) before the layer is published, so running out of space or
    // inodes leaves nothing published; if putting it in place fails, the layer goes back to staging and is removed.
    let marker = prepare_marker(&parent_fd, &parent, &name, &layer, opts.sync != SyncMode::None)?;
    rustix::fs::renameat_with(&parent_fd, staging_name.as_str(), &parent_fd, &name, RenameFlags::NOREPLACE).map_err(
        |e| match e {
            Errno::EXIST => layer_error(LayerProblem::DestinationExists, OP, dest),
            e => Error::os(OP, e).with_path(dest),
        },
    )?;
    staging.armed = false;
    if let Err(e) = marker.publish() {
        if rustix::fs::renameat(&parent_fd, &name, &parent_fd, staging_name.as_str()).is_ok() {
            staging.armed = true;
        }
        return Err(e);
    }
    Ok(layer)
}
