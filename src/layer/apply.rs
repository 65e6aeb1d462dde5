//! [`apply`]: one OCI layer into a new directory, staged beside it and committed atomically.

use std::ffi::{OsStr, OsString};
use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use rustix::fs::{AtFlags, Mode, OFlags, RenameFlags, StatxFlags};
use rustix::io::Errno;

use super::extract::Extractor;
use super::options::{ApplyOptions, SyncMode};
use super::record::{AppliedLayer, marker_path, prepare_marker, read_marker, reserved_name, valid_digest};
use super::{digest, layer_error, limits, open_dir_path, split, stream};
use crate::error::{Error, ErrorKind, LayerProblem, Result};
#[cfg(doc)]
use crate::layer::{ApplyStats, WhiteoutMode, recover, recover_dirs, verify};

const OP: &str = "apply layer";

/// Removes the staging directory unless disarmed.
struct Staging {
    path: PathBuf,
    /// Its name in the parent directory.
    name: OsString,
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
///   the lower layers ([`ApplyOptions::parent`]) show at the root;
/// * a GNU long name or long link, or a PAX header, over 1 MiB, or such records over 2 MiB together for one member
///   (GNU sparse maps included): refused from the record's header, before its data is read
///   ([`LayerProblem::MetadataTooLarge`]), so memory stays bounded whatever the archive declares;
/// * a GNU sparse file: written with its holes (a tiny archive cannot fill the disk with zeros).
///
/// The content digest recorded in the marker is what a read-back of the tree sees: modes, owners and times as the
/// filesystem kept them (a default ACL changes modes, ext4 clamps times), so a fresh layer always passes [`verify`].
///
/// On any error nothing is left behind: the staging directory is removed and `dest` never appears.
///
/// # Errors
/// * [`ErrorKind::InvalidLayer`]: the archive is not a valid tar stream or its compression is corrupt
///   ([`LayerProblem::Corrupt`]), `dest` or its marker exists ([`LayerProblem::DestinationExists`]), the diff_id
///   differs ([`LayerProblem::DigestMismatch`]), and the other [`LayerProblem`]s of a bad layer;
/// * [`ErrorKind::Breakout`] for an entry that would reach outside the layer;
/// * [`ErrorKind::Cancelled`] when the reader returns [`std::io::ErrorKind::Interrupted`]: this is how a caller
///   cancels (a reader that may see a stray `EINTR` should retry it itself, as `read_exact` does). Any other error
///   of the reader is [`ErrorKind::Os`] with the reader's message and [`io_kind`](crate::Error::io_kind), never a
///   corrupt layer;
/// * [`ErrorKind::InvalidInput`] for a malformed expected diff_id or a name [`recover`] owns;
/// * [`ErrorKind::Os`] / [`ErrorKind::PermissionDenied`] for failed calls (no space, a parent that cannot be
///   opened).
///
/// # Kernel
/// `openat2` (5.6) for every path beneath the layer root; `renameat2(RENAME_NOREPLACE)` (3.15).
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
    let (parent, name) = checked_destination(dest, opts, OP)?;
    let parent_fd = open_dir_path(&parent, OP)?;
    match rustix::fs::statx(&parent_fd, &name, AtFlags::SYMLINK_NOFOLLOW, StatxFlags::TYPE) {
        Err(Errno::NOENT) => {}
        Ok(_) => return Err(layer_error(LayerProblem::DestinationExists, OP, dest)),
        Err(e) => return Err(Error::os(OP, e).with_path(dest)),
    }
    no_marker(&parent_fd, &name, dest, OP)?;
    let (mut staging, layer) = stage(reader, &parent_fd, &parent, &name, dest, opts, OP)?;
    // The marker is written (under a temporary name) before the layer is published, so running out of space or
    // inodes leaves nothing published; if putting it in place fails, the layer goes back to staging and is removed.
    let marker = prepare_marker(&parent_fd, &parent, &name, &layer, opts.sync != SyncMode::None)?;
    rustix::fs::renameat_with(&parent_fd, staging.name.as_os_str(), &parent_fd, &name, RenameFlags::NOREPLACE)
        .map_err(|e| match e {
            Errno::EXIST => layer_error(LayerProblem::DestinationExists, OP, dest),
            e => Error::os(OP, e).with_path(dest),
        })?;
    staging.armed = false;
    if let Err(e) = marker.publish() {
        if rustix::fs::renameat(&parent_fd, &name, &parent_fd, staging.name.as_os_str()).is_ok() {
            staging.armed = true;
        }
        return Err(e);
    }
    Ok(layer)
}

/// Apply the layer read from `reader` into `dir`, an existing empty directory, and commit it: what a snapshotter
/// needs, whose Prepare has made the directory already.
///
/// The guarantees are those of [`apply`]: the layer is written into a sibling staging directory
/// `.<name>.partial-<pid>-<n>`, its diff_id checked, synced, and the commit marker ([`marker_path`]) written and
/// synced under a temporary name; then the staging directory and `dir` are swapped in one step
/// (`renameat2(RENAME_EXCHANGE)`), the marker is renamed into place, and the caller's empty directory, now at the
/// staging name, is removed with `rmdir`. The marker comes last: [`is_committed`] is true only once everything is
/// in place.
///
/// The directory that ends up at `dir` is the layer's root, with the owner, mode and times the layer gives it
/// (its `./` entry, else the top-most [`ApplyOptions::parent`]'s root, else 0755 owned by root), exactly as
/// [`apply`] would make it.
///
/// On any error nothing is half-done: the staging directory is removed and the caller's directory is at `dir`,
/// empty, with its owner and mode (if the marker cannot be put in place the two directories are swapped back). A
/// crash leaves either the caller's empty directory, or an uncommitted layer at `dir` that [`recover_dirs`]
/// reports, with the staging sibling removed.
///
/// # Errors
/// * [`ErrorKind::InvalidInput`]: `dir` is not a directory (a symlink to one included), ends in `.` or `..`, has a
///   name [`recover`] takes for its own, or the expected diff_id is malformed;
/// * [`ErrorKind::InvalidLayer`] with [`LayerProblem::DestinationNotEmpty`] if `dir` holds anything,
///   [`LayerProblem::DestinationExists`] if its marker exists (the layer is committed already), and the problems
///   of [`apply`] for a bad layer;
/// * [`ErrorKind::Cancelled`] when the reader returns [`std::io::ErrorKind::Interrupted`] (how a caller cancels);
///   any other error of the reader is [`ErrorKind::Os`] with the reader's message and
///   [`io_kind`](crate::Error::io_kind);
/// * [`ErrorKind::Race`] if `dir` was replaced or written to while the layer was applied;
/// * [`ErrorKind::NotSupported`] if the filesystem cannot exchange two directories;
/// * [`ErrorKind::Os`] for other failed calls (`EBUSY` if `dir` is a mount point).
///
/// # Kernel
/// `renameat2(RENAME_EXCHANGE)`: Linux 3.15, on ext4, xfs, btrfs, tmpfs (3.18) and most local filesystems;
/// `openat2` (5.6) as [`apply`].
///
/// ```no_run
/// use layermount::{ApplyOptions, apply_into, is_committed};
/// // A snapshotter's Prepare made snapshots/7/fs (empty); the diff service applies the layer into it.
/// std::fs::create_dir_all("/var/lib/snap/snapshots/7/fs")?;
/// let blob = std::fs::File::open("layer.tar.gz")?;
/// let layer = apply_into(blob, "/var/lib/snap/snapshots/7/fs", &ApplyOptions::new())?;
/// assert!(is_committed("/var/lib/snap/snapshots/7/fs")?);
/// println!("{}", layer.diff_id);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn apply_into(reader: impl Read + Send, dir: impl AsRef<Path>, opts: &ApplyOptions) -> Result<AppliedLayer> {
    const OP: &str = "apply layer into";
    let dir = dir.as_ref();
    let (parent, name) = checked_destination(dir, opts, OP)?;
    let parent_fd = open_dir_path(&parent, OP)?;
    let st = rustix::fs::statx(&parent_fd, &name, AtFlags::SYMLINK_NOFOLLOW, StatxFlags::TYPE | StatxFlags::INO)
        .map_err(|e| Error::os(OP, e).with_path(dir))?;
    if rustix::fs::FileType::from_raw_mode(st.stx_mode.into()) != rustix::fs::FileType::Directory {
        return Err(Error::new(ErrorKind::InvalidInput, OP).with_path(dir).with_detail("not a directory"));
    }
    let before = (st.stx_ino, st.stx_dev_major, st.stx_dev_minor);
    if !empty_dir(&parent_fd, &name).map_err(|e| Error::os(OP, e).with_path(dir))? {
        return Err(layer_error(LayerProblem::DestinationNotEmpty, OP, dir));
    }
    no_marker(&parent_fd, &name, dir, OP)?;
    let (mut staging, layer) = stage(reader, &parent_fd, &parent, &name, dir, opts, OP)?;
    let marker = prepare_marker(&parent_fd, &parent, &name, &layer, opts.sync != SyncMode::None)?;
    let exchange =
        || rustix::fs::renameat_with(&parent_fd, staging.name.as_os_str(), &parent_fd, &name, RenameFlags::EXCHANGE);
    exchange().map_err(|e| match e {
        Errno::INVAL => Error::new(ErrorKind::NotSupported, OP)
            .with_path(dir)
            .with_detail("the filesystem cannot exchange two directories (renameat2 RENAME_EXCHANGE)"),
        e => Error::os(OP, e).with_path(dir),
    })?;
    // The staging name now holds the caller's directory: it must not be removed recursively from here on.
    staging.armed = false;
    let swap_back = |staging: &mut Staging, err: Error| -> Error {
        if rustix::fs::renameat_with(&parent_fd, staging.name.as_os_str(), &parent_fd, &name, RenameFlags::EXCHANGE)
            .is_ok()
        {
            staging.armed = true;
        }
        err
    };
    // The directory swapped out must be the one checked, still empty: anything written into it meanwhile goes back.
    let old = rustix::fs::statx(&parent_fd, staging.name.as_os_str(), AtFlags::SYMLINK_NOFOLLOW, StatxFlags::INO)
        .map(|st| (st.stx_ino, st.stx_dev_major, st.stx_dev_minor));
    let still_empty = empty_dir(&parent_fd, staging.name.as_os_str());
    if old != Ok(before) || still_empty != Ok(true) {
        let err = Error::new(ErrorKind::Race, OP)
            .with_path(dir)
            .with_detail("the directory was replaced or written to while the layer was applied");
        return Err(swap_back(&mut staging, err));
    }
    if let Err(e) = marker.publish() {
        return Err(swap_back(&mut staging, e));
    }
    // Committed. The caller's empty directory goes; should that fail, it is an empty staging directory that
    // `recover_dirs` removes.
    let _ = rustix::fs::unlinkat(&parent_fd, staging.name.as_os_str(), AtFlags::REMOVEDIR);
    Ok(layer)
}

/// Whether `dir` is a committed layer: a directory whose commit marker ([`marker_path`]) is present and well
/// formed. Reads only the marker; [`verify`] checks the content too.
///
/// # Errors
/// [`ErrorKind::Os`] (or [`ErrorKind::PermissionDenied`]) if `dir` or its marker cannot be looked at for another
/// reason than not being there; [`ErrorKind::InvalidInput`] for a path ending in `.` or `..`.
///
/// # Kernel
/// Any.
///
/// ```no_run
/// if !layermount::is_committed("/var/lib/snap/snapshots/7/fs")? {
///     eprintln!("snapshot 7 was never committed");
/// }
/// # Ok::<(), layermount::Error>(())
/// ```
pub fn is_committed(dir: impl AsRef<Path>) -> Result<bool> {
    const COP: &str = "check layer commit";
    let dir = dir.as_ref();
    split(dir, COP)?;
    match std::fs::symlink_metadata(dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Ok(false),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(Error::io(COP, &e).with_path(dir)),
    }
    match read_marker(dir, COP) {
        Ok(_) => Ok(true),
        Err(e)
            if matches!(e.kind(), ErrorKind::InvalidLayer(LayerProblem::MissingMarker | LayerProblem::BadMarker)) =>
        {
            Ok(false)
        }
        Err(e) => Err(e),
    }
}

/// True when the directory `name` in `parent_fd` holds nothing (not following a symlink).
fn empty_dir(parent_fd: &OwnedFd, name: impl rustix::path::Arg) -> rustix::io::Result<bool> {
    let fd = rustix::fs::openat(
        parent_fd,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let mut dir = rustix::fs::Dir::read_from(&fd)?;
    while let Some(entry) = dir.read() {
        let n = entry?.file_name().to_bytes().to_vec();
        if n != b"." && n != b".." {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The checks every destination passes before anything is read: a final name that is not one `recover` owns, and
/// a well-formed expected digest.
fn checked_destination(dest: &Path, opts: &ApplyOptions, op: &'static str) -> Result<(PathBuf, OsString)> {
    let (parent, name) = split(dest, op)?;
    if let Some(d) = &opts.expected_diff_id
        && !valid_digest(d)
    {
        return Err(Error::new(ErrorKind::InvalidInput, op)
            .with_path(dest)
            .with_detail(format!("expected diff_id \"{d}\" is not sha256:<64 hex>")));
    }
    if reserved_name(&name) {
        return Err(Error::new(ErrorKind::InvalidInput, op)
            .with_path(dest)
            .with_detail("the name is of the kind recover removes (staging directories, markers)"));
    }
    Ok((parent, name))
}

/// A marker left from an earlier layer of this name would make the new directory look committed the moment it is
/// put in place.
fn no_marker(parent_fd: &OwnedFd, name: &OsStr, dest: &Path, op: &'static str) -> Result<()> {
    let marker = marker_path(dest);
    match rustix::fs::statx(parent_fd, marker_path(Path::new(name)), AtFlags::SYMLINK_NOFOLLOW, StatxFlags::TYPE) {
        Err(Errno::NOENT) => Ok(()),
        Ok(_) => Err(layer_error(LayerProblem::DestinationExists, op, dest).with_detail(format!(
            "its commit marker {} is still there (recover removes a marker whose layer is gone)",
            marker.display()
        ))),
        Err(e) => Err(Error::os(op, e).with_path(marker)),
    }
}

/// Everything up to the commit: the layer extracted into a new staging directory beside `dest`, its diff_id
/// checked, synced, its content digest computed. The staging directory is removed if the returned guard is dropped
/// armed.
fn stage(
    reader: impl Read + Send,
    parent_fd: &OwnedFd,
    parent: &Path,
    name: &OsStr,
    dest: &Path,
    opts: &ApplyOptions,
    op: &'static str,
) -> Result<(Staging, AppliedLayer)> {
    let lowers = opts.parents.iter().map(|p| open_dir_path(p, op)).collect::<Result<Vec<_>>>()?;

    static COUNTER: AtomicU64 = AtomicU64::new(0);
    // `.<name>.partial-<pid>-<n>`, the name's bytes as they are (`recover_dirs` finds it by them).
    let mut staging_name = OsString::from(".");
    staging_name.push(name);
    staging_name.push(format!(
        ".partial-{}-{}",
        rustix::process::getpid().as_raw_nonzero(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    rustix::fs::mkdirat(parent_fd, staging_name.as_os_str(), Mode::RWXU)
        .map_err(|e| Error::os(op, e).with_path(parent.join(&staging_name)))?;
    let staging = Staging { path: parent.join(&staging_name), name: staging_name, armed: true };
    // In a setgid store the new directory inherited the set-gid bit, which every directory and file made in it
    // would inherit in turn (with the store's group): drop it now; final modes are set at the end.
    rustix::fs::chmodat(parent_fd, staging.name.as_os_str(), Mode::RWXU, AtFlags::empty())
        .map_err(|e| Error::os(op, e).with_path(&staging.path))?;
    let root = rustix::fs::openat(
        parent_fd,
        staging.name.as_os_str(),
        OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| Error::os(op, e).with_path(&staging.path))?;

    let corrupt = |e: std::io::Error| match limits::TooLarge::of(&e) {
        Some(too_large) => layer_error(LayerProblem::MetadataTooLarge, op, dest).with_detail(too_large.to_string()),
        None => Error::io(op, &e).with_path(dest).with_kind(ErrorKind::InvalidLayer(LayerProblem::Corrupt)),
    };
    let meter = stream::Meter::new(opts.progress.clone());
    let (summary, crcs, (stats, opaque), predicted) = std::thread::scope(|s| -> Result<_> {
        let ((tx, recycled), mut chunks) = stream::channel();
        let meter = &meter;
        let pump = s.spawn(move || stream::pump(reader, tx, recycled, meter));
        let extracted = (|| -> Result<_> {
            let root_dup = root.try_clone().map_err(|e| Error::io(op, &e))?;
            let mut ex = Extractor::new(opts, root_dup, staging.path.clone(), lowers);
            let mut archive = tar::Archive::new(limits::Guard::new(&mut chunks));
            for entry in archive.entries().map_err(corrupt)? {
                let mut entry = entry.map_err(corrupt)?;
                ex.entry(&mut entry)?;
                meter.entry();
            }
            let done = ex.finish()?;
            Ok((done.crcs, (done.stats, done.opaque), done.predicted))
        })();
        let drained = match &extracted {
            Ok(_) => chunks.drain(),
            Err(_) => Ok(()),
        };
        drop(chunks);
        let summary = pump.join().unwrap_or_else(|p| std::panic::resume_unwind(p));
        // The reader's own failure explains whatever the extraction then made of the cut stream: it comes first.
        let summary = match summary {
            Err(stream::StreamError::Source(e)) => return Err(reader_error(&e, op, dest)),
            Err(stream::StreamError::Format(e)) => Err(e),
            Ok(s) => Ok(s),
        };
        let (crcs, stats, predicted) = extracted?;
        drained.map_err(corrupt)?;
        Ok((summary.map_err(corrupt)?, crcs, stats, predicted))
    })?;
    meter.finish();

    let diff_id = format!("sha256:{}", summary.sha256_hex);
    if let Some(expected) = &opts.expected_diff_id
        && !expected.eq_ignore_ascii_case(&diff_id)
    {
        return Err(layer_error(LayerProblem::DigestMismatch, op, dest)
            .with_detail(format!("expected {expected}, got {diff_id}")));
    }
    let root_fd = rustix::fs::openat(&root, ".", OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
        .map_err(|e| Error::os(op, e).with_path(&staging.path))?;
    match opts.sync {
        SyncMode::Syncfs => rustix::fs::syncfs(&root_fd).map_err(|e| Error::os(op, e).with_path(&staging.path))?,
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
    Ok((staging, layer))
}

/// The caller's reader failed: [`ErrorKind::Cancelled`] for `Interrupted` (how a caller cancels), else its own
/// error, kind and message kept. Never a corrupt layer.
fn reader_error(e: &std::io::Error, op: &'static str, dest: &Path) -> Error {
    if e.kind() == std::io::ErrorKind::Interrupted {
        Error::new(ErrorKind::Cancelled, op).with_path(dest).with_detail(format!("the reader said: {e}"))
    } else {
        Error::io(op, e).with_path(dest).with_detail(format!("reading the layer: {e}"))
    }
}
