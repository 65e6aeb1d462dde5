//! OCI image layers applied into directories that overlay can stack: whiteouts, hostile archives, and an atomic,
//! crash-safe commit that [`verify`] and [`recover`] can check afterwards.
//!
//! No mount is used to unpack. [`apply`] writes into a sibling staging directory `.<name>.partial-<pid>-<n>`,
//! computes the diff_id (sha256 of the uncompressed tar stream) on the way, compares it with the expected digest,
//! syncs, renames the staging directory to `<name>` (which must not exist before) and writes the commit marker
//! `<name>.commit` last, then syncs the parent directory. A layer without its marker is not committed, whatever its
//! directory holds.

mod digest;
mod extract;
mod stream;
mod xattr;

use std::fmt;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use rustix::fs::{AtFlags, Mode, OFlags, RenameFlags, StatxFlags};
use rustix::io::Errno;

use crate::error::{Error, ErrorKind, LayerProblem, Result};
use crate::idmap::IdMap;
use extract::Extractor;
pub use stream::Compression;

const OP: &str = "apply layer";
const MARKER_HEADER: &str = "layermount-layer-commit 1";

/// How whiteouts and opaque directories are written.
///
/// ```
/// assert_eq!(layermount::WhiteoutMode::default(), layermount::WhiteoutMode::Overlay);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WhiteoutMode {
    /// `.wh.x` becomes a 0/0 character device `x` with the entry's owner; `.wh..wh..opq` sets
    /// `trusted.overlay.opaque=y` (for overlay mounted by root).
    #[default]
    Overlay,
    /// For unprivileged or `userxattr` overlays: opaque is `user.overlay.opaque=y`, and only the `user.overlay.*`
    /// namespace is written. Whiteouts are 0/0 character devices here too: unprivileged callers may make them
    /// (Linux 5.8) and overlay honours them under `userxattr`, while the xattr whiteout form of 6.7 is still listed
    /// by overlay's readdir when it sits in a layer's root directory (measured on 6.18).
    OverlayUserXattr,
    /// Keep `.wh.` files as they are, for consumers other than overlay.
    Oci,
}

/// How the layer is made durable before it is published.
///
/// ```
/// assert_eq!(layermount::SyncMode::default(), layermount::SyncMode::Syncfs);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SyncMode {
    /// One `syncfs` of the filesystem holding the layer.
    #[default]
    Syncfs,
    /// `fsync` of every file and directory written.
    Fsync,
    /// No sync at all (tests, throwaway layers, tmpfs).
    None,
}

/// What to do with a device node the caller may not create (`mknod` says EPERM).
///
/// ```
/// assert_eq!(layermount::DeviceMode::default(), layermount::DeviceMode::Refuse);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceMode {
    /// Fail with [`LayerProblem::DeviceNotPermitted`].
    #[default]
    Refuse,
    /// Skip it (counted in [`ApplyStats::skipped_devices`]).
    Skip,
}

/// Options of [`apply`].
///
/// ```
/// use layermount::{ApplyOptions, SyncMode, WhiteoutMode};
/// let opts = ApplyOptions::new()
///     .whiteouts(WhiteoutMode::Overlay)
///     .sync(SyncMode::None)
///     .parent("/var/lib/layers/2")
///     .parent("/var/lib/layers/1");
/// assert_eq!(opts.parents.len(), 2);
/// ```
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct ApplyOptions {
    /// Whiteout format.
    pub whiteouts: WhiteoutMode,
    /// Durability before publishing.
    pub sync: SyncMode,
    /// Device nodes that cannot be made.
    pub devices: DeviceMode,
    /// The lower layer directories this layer goes on top of, top-most first: missing parents copy their metadata,
    /// symlinked parents are followed, a root-level opaque marker whites out their root entries.
    pub parents: Vec<PathBuf>,
    /// The expected diff_id (`sha256:<64 hex>`); a mismatch fails the apply and commits nothing.
    pub expected_diff_id: Option<String>,
    /// Shift owners from container ids to host ids with this map (for filesystems that cannot be idmapped);
    /// an owner outside the map is an error.
    pub shift: Option<IdMap>,
}

impl ApplyOptions {
    /// Defaults: overlay whiteouts, `syncfs`, devices refused when not permitted, no parents.
    pub fn new() -> Self {
        Self::default()
    }
    /// Set the whiteout format.
    pub fn whiteouts(mut self, mode: WhiteoutMode) -> Self {
        self.whiteouts = mode;
        self
    }
    /// Set the sync mode.
    pub fn sync(mut self, mode: SyncMode) -> Self {
        self.sync = mode;
        self
    }
    /// Set what happens to device nodes that cannot be made.
    pub fn devices(mut self, mode: DeviceMode) -> Self {
        self.devices = mode;
        self
    }
    /// Add a lower layer, below those added so far.
    pub fn parent(mut self, dir: impl AsRef<Path>) -> Self {
        self.parents.push(dir.as_ref().to_path_buf());
        self
    }
    /// Expect this diff_id (`sha256:<hex>`).
    pub fn expect_diff_id(mut self, digest: impl Into<String>) -> Self {
        self.expected_diff_id = Some(digest.into());
        self
    }
    /// Shift owners through this map.
    pub fn shift(mut self, map: IdMap) -> Self {
        self.shift = Some(map);
        self
    }
}

/// Counts of what [`apply`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ApplyStats {
    /// Archive entries read (PAX global headers excluded).
    pub entries: u64,
    /// Regular files written.
    pub files: u64,
    /// Directories from directory entries.
    pub dirs: u64,
    /// Symlinks.
    pub symlinks: u64,
    /// Hardlinks.
    pub hardlinks: u64,
    /// Device nodes.
    pub devices: u64,
    /// FIFOs.
    pub fifos: u64,
    /// Whiteouts written.
    pub whiteouts: u64,
    /// Directories made opaque.
    pub opaque_dirs: u64,
    /// Device nodes skipped ([`DeviceMode::Skip`]).
    pub skipped_devices: u64,
    /// `*.overlay.*` xattrs from the archive that were dropped.
    pub dropped_xattrs: u64,
    /// Bytes of file data written.
    pub bytes: u64,
}

impl ApplyStats {
    /// Every counter with its name, in marker order: the one list the marker's writer and reader share.
    fn fields_mut(&mut self) -> [(&'static str, &mut u64); 12] {
        [
            ("entries", &mut self.entries),
            ("files", &mut self.files),
            ("dirs", &mut self.dirs),
            ("symlinks", &mut self.symlinks),
            ("hardlinks", &mut self.hardlinks),
            ("devices", &mut self.devices),
            ("fifos", &mut self.fifos),
            ("whiteouts", &mut self.whiteouts),
            ("opaque_dirs", &mut self.opaque_dirs),
            ("skipped_devices", &mut self.skipped_devices),
            ("dropped_xattrs", &mut self.dropped_xattrs),
            ("bytes", &mut self.bytes),
        ]
    }

    fn fields(&self) -> [(&'static str, u64); 12] {
        let mut copy = *self;
        copy.fields_mut().map(|(k, v)| (k, *v))
    }

    fn set(&mut self, key: &str, value: u64) {
        if let Some((_, slot)) = self.fields_mut().into_iter().find(|(k, _)| *k == key) {
            *slot = value;
        }
    }
}

impl fmt::Display for ApplyStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.fields().iter().map(|(k, v)| format!("{k}={v}")).collect();
        f.write_str(&parts.join(" "))
    }
}

/// A committed layer: what [`apply`] returns and what the commit marker records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppliedLayer {
    /// `sha256:<hex>` of the uncompressed tar stream (the OCI diff_id).
    pub diff_id: String,
    /// `sha256:<hex>` content digest of the layer directory (see [`verify`]).
    pub content_digest: String,
    /// What was applied.
    pub stats: ApplyStats,
    /// Length of the uncompressed tar stream (0 when read back from a marker).
    pub uncompressed_size: u64,
    /// The compression the blob had (`None` when read back from a marker).
    pub compression: Compression,
}

fn layer_error(problem: LayerProblem, operation: &'static str, path: &Path) -> Error {
    Error::new(ErrorKind::InvalidLayer(problem), operation).with_path(path)
}

fn split(dest: &Path, operation: &'static str) -> Result<(PathBuf, std::ffi::OsString)> {
    let name = dest.file_name().ok_or_else(|| {
        Error::new(ErrorKind::InvalidInput, operation).with_path(dest).with_detail("path must end in a name")
    })?;
    let parent = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    Ok((parent, name.to_os_string()))
}

/// Where the commit marker of the layer directory `dir` lives: `<dir>.commit`, beside it (a file inside the layer
/// would show up in the container).
///
/// ```
/// assert_eq!(layermount::marker_path("/store/abc"), std::path::Path::new("/store/abc.commit"));
/// ```
pub fn marker_path(dir: impl AsRef<Path>) -> PathBuf {
    let dir = dir.as_ref();
    let mut name = dir.file_name().unwrap_or_default().to_os_string();
    name.push(".commit");
    dir.with_file_name(name)
}

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

fn open_dir_path(path: &Path, operation: &'static str) -> Result<OwnedFd> {
    rustix::fs::open(path, OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
        .map_err(|e| Error::os(operation, e).with_path(path))
}

fn valid_digest(d: &str) -> bool {
    d.strip_prefix("sha256:").is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Apply the layer read from `reader` (tar, tar+gzip or tar+zstd, detected by magic bytes) into the new directory
/// `dest`, which must not exist, and commit it.
///
/// No mount is used. The layer is written into a sibling staging directory `.<name>.partial-<pid>-<n>`; the diff_id
/// (sha256 of the uncompressed stream) is computed on the way and compared with [`ApplyOptions::expected_diff_id`];
/// the data is synced ([`SyncMode`]); the staging directory is renamed to `dest`; the commit marker
/// ([`marker_path`]) is written last and the parent directory synced. A layer without its marker is not committed.
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
        return Err(Error::new(ErrorKind::InvalidInput, OP).with_detail(format!("\"{d}\" is not sha256:<64 hex>")));
    }
    let parent_fd = open_dir_path(&parent, OP)?;
    match rustix::fs::statx(&parent_fd, &name, AtFlags::SYMLINK_NOFOLLOW, StatxFlags::TYPE) {
        Err(Errno::NOENT) => {}
        Ok(_) => return Err(layer_error(LayerProblem::DestinationExists, OP, dest)),
        Err(e) => return Err(Error::os(OP, e).with_path(dest)),
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

    let corrupt =
        |e: std::io::Error| Error::io(OP, &e).with_path(dest).with_kind(ErrorKind::InvalidLayer(LayerProblem::Corrupt));
    let (summary, crcs, stats, predicted) = std::thread::scope(|s| -> Result<_> {
        let ((tx, recycled), mut chunks) = stream::channel();
        let pump = s.spawn(move || stream::pump(reader, tx, recycled));
        let extracted = (|| -> Result<_> {
            let root_dup = root.try_clone().map_err(|e| Error::io(OP, &e))?;
            let mut ex = Extractor::new(opts, root_dup, staging.path.clone(), lowers);
            let mut archive = tar::Archive::new(&mut chunks);
            for entry in archive.entries().map_err(corrupt)? {
                let mut entry = entry.map_err(corrupt)?;
                ex.entry(&mut entry)?;
            }
            ex.finish()?;
            let predicted = ex.records.take().map(|r| (std::mem::take(&mut ex.root_record), r));
            Ok((ex.crcs, ex.stats, predicted))
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

    rustix::fs::renameat_with(&parent_fd, staging_name.as_str(), &parent_fd, &name, RenameFlags::NOREPLACE).map_err(
        |e| match e {
            Errno::EXIST => layer_error(LayerProblem::DestinationExists, OP, dest),
            e => Error::os(OP, e).with_path(dest),
        },
    )?;
    staging.armed = false;
    let layer = AppliedLayer {
        diff_id,
        content_digest,
        stats,
        uncompressed_size: summary.length,
        compression: summary.compression,
    };
    write_marker(&parent_fd, &parent, &name, &layer, opts.sync != SyncMode::None)?;
    Ok(layer)
}

fn marker_text(layer: &AppliedLayer) -> String {
    let stats: Vec<String> = layer.stats.fields().iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!("{MARKER_HEADER}\ndiff_id {}\ncontent {}\nstats {}\n", layer.diff_id, layer.content_digest, stats.join(","))
}

/// Write `<name>.commit` through a temporary file and a rename, then make both durable.
fn write_marker(
    parent_fd: &OwnedFd,
    parent: &Path,
    name: &std::ffi::OsStr,
    layer: &AppliedLayer,
    durable: bool,
) -> Result<()> {
    let final_name = marker_path(Path::new(name)).into_os_string();
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(&final_name);
    tmp_name.push(".tmp");
    let err = |e: Errno| Error::os("commit layer", e).with_path(parent.join(&final_name));
    let fd = rustix::fs::openat(
        parent_fd,
        &tmp_name,
        OFlags::CREATE | OFlags::TRUNC | OFlags::WRONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
        Mode::from_raw_mode(0o644),
    )
    .map_err(err)?;
    let mut f = std::fs::File::from(fd);
    f.write_all(marker_text(layer).as_bytes())
        .map_err(|e| Error::io("commit layer", &e).with_path(parent.join(&tmp_name)))?;
    if durable {
        rustix::fs::fsync(&f).map_err(err)?;
    }
    rustix::fs::renameat(parent_fd, &tmp_name, parent_fd, &final_name).map_err(err)?;
    if durable {
        let dir =
            rustix::fs::openat(parent_fd, ".", OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
                .map_err(err)?;
        rustix::fs::fsync(&dir).map_err(err)?;
    }
    Ok(())
}

/// Read and check the commit marker of `dir`.
fn read_marker(dir: &Path, operation: &'static str) -> Result<AppliedLayer> {
    let path = marker_path(dir);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(layer_error(LayerProblem::MissingMarker, operation, dir));
        }
        Err(e) => return Err(layer_error(LayerProblem::BadMarker, operation, dir).with_detail(e.to_string())),
    };
    let bad = |why: &str| layer_error(LayerProblem::BadMarker, operation, dir).with_detail(why.to_string());
    let mut lines = text.lines();
    if lines.next() != Some(MARKER_HEADER) {
        return Err(bad("unknown format"));
    }
    let (mut diff_id, mut content, mut stats) = (None, None, ApplyStats::default());
    for line in lines {
        match line.split_once(' ') {
            Some(("diff_id", v)) if valid_digest(v) => diff_id = Some(v.to_string()),
            Some(("content", v)) if valid_digest(v) => content = Some(v.to_string()),
            Some(("stats", v)) => {
                for kv in v.split(',') {
                    let (k, n) = kv.split_once('=').ok_or_else(|| bad("bad stats"))?;
                    stats.set(k, n.parse().map_err(|_| bad("bad stats"))?);
                }
            }
            _ => return Err(bad("unknown line")),
        }
    }
    match (diff_id, content) {
        (Some(diff_id), Some(content_digest)) => {
            Ok(AppliedLayer { diff_id, content_digest, stats, uncompressed_size: 0, compression: Compression::None })
        }
        _ => Err(bad("incomplete")),
    }
}

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

/// Clean up a layer store after a crash: remove staging directories (`.<name>.partial-*`, with the mount-safe
/// [`remove_all`](crate::remove_all)), temporary markers and markers whose layer is gone; report layer directories
/// without a valid marker. Committed layers are not touched.
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
        if text.starts_with('.') && text.contains(".partial-") && meta.is_dir() {
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
