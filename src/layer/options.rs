//! What [`apply`](super::apply) is asked to do: [`ApplyOptions`] and its modes.

use std::path::{Path, PathBuf};

use super::stream::{Progress, ProgressFn};
use crate::idmap::IdMap;
#[cfg(doc)]
use crate::{LayerProblem, layer::ApplyStats};

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

/// Options of [`apply`](fn@crate::apply).
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
#[derive(Clone, Default)]
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
    /// Called as the layer is read ([`ApplyOptions::progress`]).
    pub(crate) progress: Option<ProgressFn>,
}

impl std::fmt::Debug for ApplyOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApplyOptions")
            .field("whiteouts", &self.whiteouts)
            .field("sync", &self.sync)
            .field("devices", &self.devices)
            .field("parents", &self.parents)
            .field("expected_diff_id", &self.expected_diff_id)
            .field("shift", &self.shift)
            .field("progress", &self.progress.as_ref().map(|_| "Fn(Progress)"))
            .finish()
    }
}

impl ApplyOptions {
    /// Defaults: overlay whiteouts, `syncfs`, devices refused when not permitted, no parents.
    ///
    /// ```
    /// let opts = layermount::ApplyOptions::new();
    /// assert_eq!(opts.sync, layermount::SyncMode::Syncfs);
    /// assert!(opts.parents.is_empty());
    /// ```
    pub fn new() -> Self {
        Self::default()
    }
    /// Set the whiteout format.
    ///
    /// ```
    /// use layermount::{ApplyOptions, WhiteoutMode};
    /// // For an overlay mounted with `userxattr` (in a user namespace).
    /// let opts = ApplyOptions::new().whiteouts(WhiteoutMode::OverlayUserXattr);
    /// ```
    pub fn whiteouts(mut self, mode: WhiteoutMode) -> Self {
        self.whiteouts = mode;
        self
    }
    /// Set the sync mode.
    ///
    /// ```
    /// use layermount::{ApplyOptions, SyncMode};
    /// let opts = ApplyOptions::new().sync(SyncMode::Fsync); // a shared filesystem where syncfs would flush too much
    /// ```
    pub fn sync(mut self, mode: SyncMode) -> Self {
        self.sync = mode;
        self
    }
    /// Set what happens to device nodes that cannot be made.
    ///
    /// ```
    /// use layermount::{ApplyOptions, DeviceMode};
    /// let opts = ApplyOptions::new().devices(DeviceMode::Skip); // unprivileged: skip what mknod refuses
    /// ```
    pub fn devices(mut self, mode: DeviceMode) -> Self {
        self.devices = mode;
        self
    }
    /// Add a lower layer, below those added so far.
    ///
    /// ```
    /// let opts = layermount::ApplyOptions::new().parent("/var/lib/layers/2").parent("/var/lib/layers/1");
    /// assert_eq!(opts.parents.len(), 2);
    /// ```
    pub fn parent(mut self, dir: impl AsRef<Path>) -> Self {
        self.parents.push(dir.as_ref().to_path_buf());
        self
    }
    /// Expect this diff_id (`sha256:<hex>`).
    ///
    /// ```
    /// let diff_id = format!("sha256:{}", "0".repeat(64)); // from the image config's rootfs.diff_ids
    /// let opts = layermount::ApplyOptions::new().expect_diff_id(diff_id);
    /// ```
    pub fn expect_diff_id(mut self, digest: impl Into<String>) -> Self {
        self.expected_diff_id = Some(digest.into());
        self
    }
    /// Shift owners through this map.
    ///
    /// ```
    /// let map: layermount::IdMap = "0:100000:65536".parse()?;
    /// let opts = layermount::ApplyOptions::new().shift(map); // root-owned files land as 100000
    /// # Ok::<(), layermount::Error>(())
    /// ```
    pub fn shift(mut self, map: IdMap) -> Self {
        self.shift = Some(map);
        self
    }
    /// Call `callback` with how far the apply has got ([`Progress`]: bytes read from the reader, entries applied),
    /// at most once every 100 ms while the layer is read, and once more with the totals when the whole stream has
    /// been read. It runs on the applying thread or on the thread that reads the blob, never on both at once; keep
    /// it short (it holds up the apply while it runs).
    ///
    /// ```
    /// use std::sync::Arc;
    /// use layermount::{ApplyOptions, Progress};
    /// let opts = ApplyOptions::new().progress(Arc::new(|p: Progress| {
    ///     eprint!("\r{} bytes, {} entries", p.bytes_read, p.entries);
    /// }));
    /// # let _ = opts;
    /// ```
    pub fn progress(mut self, callback: std::sync::Arc<dyn Fn(Progress) + Send + Sync>) -> Self {
        self.progress = Some(callback);
        self
    }
}
