//! The commit record: [`AppliedLayer`] and [`ApplyStats`], and the marker file `<dir>.commit` that holds them.
//!
//! The marker is written last, through a temporary file and a rename, so a layer directory without one was never
//! committed, whatever it holds.

use std::fmt;
use std::io::Write;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;

use std::os::unix::ffi::{OsStrExt, OsStringExt};

use super::layer_error;
use super::options::WhiteoutMode;
use super::stream::Compression;
use crate::error::{Error, LayerProblem, Result};
#[cfg(doc)]
use crate::layer::{DeviceMode, verify};

/// The header this version writes. Version 2 added the `whiteouts` line and the `opaque` lines; version 1 records
/// (without them) are still read.
const MARKER_HEADER: &str = "layermount-layer-commit 2";
const MARKER_HEADER_V1: &str = "layermount-layer-commit 1";

/// Counts of what [`apply`](fn@crate::apply) did.
///
/// ```no_run
/// let layer = layermount::apply(std::fs::File::open("layer.tar")?, "/var/lib/layers/4", &Default::default())?;
/// let s = layer.stats;
/// println!("{} files, {} bytes, {} whiteouts", s.files, s.bytes, s.whiteouts);
/// println!("{s}"); // every counter as name=value
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
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
    /// xattrs from the archive that the destination filesystem does not support (`EOPNOTSUPP`, e.g.
    /// `system.nfs4_acl` on tmpfs), skipped as containerd and umoci skip them.
    pub skipped_xattrs: u64,
    /// Bytes of file data written.
    pub bytes: u64,
}

impl ApplyStats {
    /// Every counter with its name, in marker order: the one list the marker's writer and reader share.
    fn fields_mut(&mut self) -> [(&'static str, &mut u64); 13] {
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
            ("skipped_xattrs", &mut self.skipped_xattrs),
            ("bytes", &mut self.bytes),
        ]
    }

    fn fields(&self) -> [(&'static str, u64); 13] {
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

/// A committed layer: what [`apply`](fn@crate::apply) returns and what the commit marker records.
///
/// ```no_run
/// let layer = layermount::verify("/var/lib/layers/3")?; // what the commit marker recorded, content checked
/// println!("diff_id {} content {}", layer.diff_id, layer.content_digest);
/// # Ok::<(), layermount::Error>(())
/// ```
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
    /// The whiteout format the layer was written in (`None` when read back from a record older than this field).
    pub whiteouts: Option<WhiteoutMode>,
    /// The directories the layer itself made opaque, relative to the layer root, sorted (`None` when read back
    /// from a record older than this list). [`audit`](fn@crate::audit) reports any other opaque directory.
    pub opaque_dirs: Option<Vec<PathBuf>>,
}

fn whiteouts_name(mode: WhiteoutMode) -> &'static str {
    match mode {
        WhiteoutMode::Overlay => "overlay",
        WhiteoutMode::OverlayUserXattr => "userxattr",
        WhiteoutMode::Oci => "oci",
    }
}

/// A path as one token of a record line: bytes outside printable ASCII, space and `%` become `%XX`.
fn escape(path: &Path) -> String {
    let mut out = String::new();
    for &b in path.as_os_str().as_bytes() {
        if b.is_ascii_graphic() && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn unescape(text: &str) -> Option<PathBuf> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Some(PathBuf::from(std::ffi::OsString::from_vec(out)))
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

pub(super) fn valid_digest(d: &str) -> bool {
    d.strip_prefix("sha256:").is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn marker_text(layer: &AppliedLayer) -> String {
    let stats: Vec<String> = layer.stats.fields().iter().map(|(k, v)| format!("{k}={v}")).collect();
    let mut text = format!(
        "{MARKER_HEADER}\ndiff_id {}\ncontent {}\nstats {}\n",
        layer.diff_id,
        layer.content_digest,
        stats.join(",")
    );
    if let Some(mode) = layer.whiteouts {
        text.push_str(&format!("whiteouts {}\n", whiteouts_name(mode)));
    }
    for dir in layer.opaque_dirs.iter().flatten() {
        text.push_str(&format!("opaque {}\n", escape(dir)));
    }
    text
}

/// True for names [`recover`](super::recover) takes for its own: staging directories (`.<name>.partial-*`),
/// temporary markers (`.*.commit.tmp`) and markers (`*.commit`). A layer may not be given such a name.
pub(super) fn reserved_name(name: &std::ffi::OsStr) -> bool {
    let b = name.as_encoded_bytes();
    let hidden = b.first() == Some(&b'.');
    (hidden && b.windows(9).any(|w| w == b".partial-")) || b.ends_with(b".commit") || b.ends_with(b".commit.tmp")
}

/// True for the staging directory names `apply` makes: `.<name>.partial-<pid>-<n>`.
pub(super) fn staging_name(name: &std::ffi::OsStr) -> bool {
    let b = name.as_encoded_bytes();
    let Some(at) = b.windows(9).rposition(|w| w == b".partial-") else { return false };
    let Some((pid, n)) = std::str::from_utf8(&b[at + 9..]).ok().and_then(|t| t.split_once('-')) else {
        return false;
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit());
    b.first() == Some(&b'.') && at > 1 && digits(pid) && digits(n)
}

/// The layer name a staging directory `.<name>.partial-<pid>-<n>` belongs to.
pub(super) fn staging_owner(name: &std::ffi::OsStr) -> Option<&[u8]> {
    if !staging_name(name) {
        return None;
    }
    let b = name.as_encoded_bytes();
    let at = b.windows(9).rposition(|w| w == b".partial-")?;
    Some(&b[1..at])
}

/// The layer name a temporary marker `.<name>.<pid>-<n>.commit.tmp` belongs to.
pub(super) fn tmp_marker_owner(name: &std::ffi::OsStr) -> Option<&[u8]> {
    let b = name.as_encoded_bytes().strip_prefix(b".")?.strip_suffix(b".commit.tmp")?;
    let dot = b.iter().rposition(|&c| c == b'.')?;
    let (pid, n) = std::str::from_utf8(&b[dot + 1..]).ok()?.split_once('-')?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit());
    (dot > 0 && digits(pid) && digits(n)).then_some(&b[..dot])
}

/// A commit marker written under a temporary name and synced, waiting to be renamed into place; removed if dropped
/// before [`publish`](PendingMarker::publish).
pub(super) struct PendingMarker<'a> {
    parent_fd: &'a OwnedFd,
    parent: &'a Path,
    tmp_name: std::ffi::OsString,
    final_name: std::ffi::OsString,
    durable: bool,
    published: bool,
}

/// Write `<name>.commit`'s content to a temporary file `.<name>.<pid>-<n>.commit.tmp` (made new, synced if
/// `durable`). Everything that can run out of space or inodes happens here, before the layer is published.
pub(super) fn prepare_marker<'a>(
    parent_fd: &'a OwnedFd,
    parent: &'a Path,
    name: &std::ffi::OsStr,
    layer: &AppliedLayer,
    durable: bool,
) -> Result<PendingMarker<'a>> {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let final_name = marker_path(Path::new(name)).into_os_string();
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(
        ".{}-{}.commit.tmp",
        rustix::process::getpid().as_raw_nonzero(),
        COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    let fd = rustix::fs::openat(
        parent_fd,
        &tmp_name,
        OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
        Mode::from_raw_mode(0o644),
    )
    .map_err(|e| Error::os("commit layer", e).with_path(parent.join(&tmp_name)))?;
    let pending = PendingMarker { parent_fd, parent, tmp_name, final_name, durable, published: false };
    let mut f = std::fs::File::from(fd);
    f.write_all(marker_text(layer).as_bytes())
        .map_err(|e| Error::io("commit layer", &e).with_path(parent.join(&pending.tmp_name)))?;
    if durable {
        rustix::fs::fsync(&f).map_err(|e| Error::os("commit layer", e).with_path(parent.join(&pending.tmp_name)))?;
    }
    Ok(pending)
}

impl PendingMarker<'_> {
    /// Rename the marker into place (never over an existing one) and sync the parent directory. On error the marker
    /// is not in place.
    pub(super) fn publish(mut self) -> Result<()> {
        let path = self.parent.join(&self.final_name);
        let err = |e: Errno| Error::os("commit layer", e).with_path(&path);
        rustix::fs::renameat_with(
            self.parent_fd,
            &self.tmp_name,
            self.parent_fd,
            &self.final_name,
            rustix::fs::RenameFlags::NOREPLACE,
        )
        .map_err(err)?;
        self.published = true;
        if self.durable {
            let synced = rustix::fs::openat(
                self.parent_fd,
                ".",
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .and_then(|dir| rustix::fs::fsync(&dir));
            if let Err(e) = synced {
                let _ = rustix::fs::unlinkat(self.parent_fd, &self.final_name, rustix::fs::AtFlags::empty());
                return Err(err(e));
            }
        }
        Ok(())
    }
}

impl Drop for PendingMarker<'_> {
    fn drop(&mut self) {
        if !self.published {
            let _ = rustix::fs::unlinkat(self.parent_fd, &self.tmp_name, rustix::fs::AtFlags::empty());
        }
    }
}

/// Read and check the commit marker of `dir`.
pub(super) fn read_marker(dir: &Path, operation: &'static str) -> Result<AppliedLayer> {
    let path = marker_path(dir);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(layer_error(LayerProblem::MissingMarker, operation, dir));
        }
        // The marker's path cannot be reached at all: a fault of the path given, not of a marker.
        Err(e) if matches!(e.raw_os_error(), Some(20 | 36 | 40)) => return Err(Error::io(operation, &e).with_path(dir)),
        Err(e) => return Err(layer_error(LayerProblem::BadMarker, operation, dir).with_detail(e.to_string())),
    };
    let bad = |why: &str| layer_error(LayerProblem::BadMarker, operation, dir).with_detail(why.to_string());
    let mut lines = text.lines();
    let (mut whiteouts, mut opaque_dirs) = match lines.next() {
        Some(MARKER_HEADER) => (None, Some(Vec::new())),
        Some(MARKER_HEADER_V1) => (None, None),
        _ => return Err(bad("unknown format")),
    };
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
            Some(("whiteouts", v)) if opaque_dirs.is_some() => {
                let mode = [WhiteoutMode::Overlay, WhiteoutMode::OverlayUserXattr, WhiteoutMode::Oci]
                    .into_iter()
                    .find(|m| whiteouts_name(*m) == v);
                whiteouts = Some(mode.ok_or_else(|| bad("bad whiteouts"))?);
            }
            Some(("opaque", v)) => match (&mut opaque_dirs, unescape(v)) {
                (Some(list), Some(p)) => list.push(p),
                _ => return Err(bad("bad opaque")),
            },
            _ => return Err(bad("unknown line")),
        }
    }
    match (diff_id, content) {
        (Some(diff_id), Some(content_digest)) => Ok(AppliedLayer {
            diff_id,
            content_digest,
            stats,
            uncompressed_size: 0,
            compression: Compression::None,
            whiteouts,
            opaque_dirs,
        }),
        _ => Err(bad("incomplete")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(opaque: Option<Vec<PathBuf>>) -> AppliedLayer {
        AppliedLayer {
            diff_id: format!("sha256:{}", "a".repeat(64)),
            content_digest: format!("sha256:{}", "b".repeat(64)),
            stats: ApplyStats { opaque_dirs: 2, ..ApplyStats::default() },
            uncompressed_size: 0,
            compression: Compression::None,
            whiteouts: Some(WhiteoutMode::OverlayUserXattr),
            opaque_dirs: opaque,
        }
    }

    #[test]
    fn record_round_trips_with_awkward_opaque_names() {
        let dir = tempfile::tempdir().unwrap();
        let names = vec![PathBuf::from("a b/100%"), PathBuf::from(std::ffi::OsString::from_vec(b"x\n\xff".to_vec()))];
        let written = layer(Some(names));
        std::fs::write(marker_path(dir.path().join("l")), marker_text(&written)).unwrap();
        assert_eq!(read_marker(&dir.path().join("l"), "t").unwrap(), written);
    }

    /// A version-1 record (no whiteouts line, no opaque list) still reads, with both unknown.
    #[test]
    fn version_1_records_still_read() {
        let dir = tempfile::tempdir().unwrap();
        let v2 = marker_text(&layer(Some(Vec::new())));
        let v1 = v2.replacen(MARKER_HEADER, MARKER_HEADER_V1, 1).replace("whiteouts userxattr\n", "");
        std::fs::write(marker_path(dir.path().join("l")), v1).unwrap();
        let read = read_marker(&dir.path().join("l"), "t").unwrap();
        assert_eq!(read.opaque_dirs, None);
        assert_eq!(read.whiteouts, None);
        assert_eq!(read.stats.opaque_dirs, 2);
    }
}
