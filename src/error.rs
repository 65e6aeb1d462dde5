//! The crate's one error type: [`Error`], with an [`ErrorKind`] to match on.

use std::fmt;
use std::path::{Path, PathBuf};

/// What went wrong, for callers to match on. New kinds may be added.
///
/// ```
/// use layermount::{ErrorKind, IdMap};
/// let err = IdMap::parse("0:1000").unwrap_err();
/// assert!(matches!(err.kind(), ErrorKind::InvalidIdMap(_)));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A system call failed; [`Error::raw_os_error`] has the errno.
    Os,
    /// An id map was malformed; the inner value says how.
    InvalidIdMap(IdMapProblem),
    /// A recursive removal met a mount point and stopped before deleting anything beneath it.
    /// [`Error::path`] is the mount point.
    MountBoundary,
    /// A tree that is or was attached to the mount table cannot be idmapped (the kernel only idmaps detached
    /// clones).
    AlreadyAttached,
    /// The tree already carries an idmap; the kernel refuses a second one.
    AlreadyIdmapped,
    /// The running kernel (or the forced strategy) lacks what the operation needs.
    NotSupported,
    /// An argument was wrong: a relative path where an absolute one is needed, a file where a directory is
    /// needed, an empty name, and so on.
    InvalidInput,
    /// The caller lacks a privilege the operation needs (usually `CAP_SYS_ADMIN`).
    PermissionDenied,
    /// An overlay could not be composed as asked; the inner value says why. Checked before any mount is made.
    InvalidOverlay(OverlayProblem),
    /// A mount specification (type, source, target, options) is malformed or names an unknown option.
    InvalidMountSpec,
    /// An archive entry (its name, a hardlink target, a whiteout) would reach outside the layer directory.
    /// Nothing was written outside; the layer was not committed.
    Breakout,
    /// A layer could not be applied, verified or recovered; the inner value says why.
    InvalidLayer(LayerProblem),
    /// The filesystem changed under the operation: a mount was replaced (a guard or record no longer names the
    /// mount at its path), or a directory was swapped while it was being used. Nothing was changed.
    Race,
    /// The caller cancelled the operation: the reader given to [`apply`](crate::apply) or
    /// [`apply_into`](crate::apply_into) returned an error of kind [`std::io::ErrorKind::Interrupted`]. Nothing was
    /// committed and nothing is left behind.
    Cancelled,
}

/// Why a layer could not be applied, verified or recovered.
///
/// ```no_run
/// use layermount::{ApplyOptions, ErrorKind, LayerProblem};
/// let blob = std::fs::File::open("layer.tar.gz")?;
/// let opts = ApplyOptions::new().expect_diff_id(format!("sha256:{}", "ab".repeat(32)));
/// match layermount::apply(blob, "/var/lib/layers/3", &opts) {
///     Ok(layer) => println!("committed {}", layer.diff_id),
///     // Nothing was committed and nothing is left behind: fetch the blob again.
///     Err(e) if e.kind() == ErrorKind::InvalidLayer(LayerProblem::DigestMismatch) => eprintln!("{e}"),
///     Err(e) => return Err(e.into()),
/// }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum LayerProblem {
    /// The archive is not a valid tar stream (or its compression is corrupt).
    Corrupt,
    /// An entry type layermount does not apply (sockets, contiguous files of unknown kind, ...), or a character
    /// device 0/0 (overlay's own whiteout, which an OCI layer must express as `.wh.`).
    UnsupportedEntry,
    /// A whiteout with no name (`.wh.`) or naming `.` or `..`.
    BadWhiteout,
    /// A hardlink whose target is missing from the layer or is a directory.
    HardlinkTarget,
    /// A device node the caller may not create, with devices set to be refused.
    DeviceNotPermitted,
    /// The sha256 of the uncompressed stream is not the expected diff_id.
    DigestMismatch,
    /// An owner the id shift does not map.
    UnmappedId,
    /// The destination already exists.
    DestinationExists,
    /// The destination of [`apply_into`](crate::apply_into) is a directory, but not an empty one.
    DestinationNotEmpty,
    /// The layer has no commit marker: it was never committed (or its commit was cut short).
    MissingMarker,
    /// The commit marker cannot be read or is of an unknown format version.
    BadMarker,
    /// The layer's content no longer matches the digest recorded when it was committed.
    ContentMismatch,
    /// A metadata record of the archive (GNU long name or long link, PAX extended or global header, GNU sparse map)
    /// is larger than 1 MiB, or the records describing one member exceed 2 MiB together. Refused from the record's
    /// header, before its data is read.
    MetadataTooLarge,
}

impl fmt::Display for LayerProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Corrupt => "corrupt archive",
            Self::UnsupportedEntry => "unsupported entry",
            Self::BadWhiteout => "invalid whiteout",
            Self::HardlinkTarget => "hardlink target missing or a directory",
            Self::DeviceNotPermitted => "device node not permitted",
            Self::DigestMismatch => "diff_id does not match the expected digest",
            Self::UnmappedId => "owner not mapped by the id shift",
            Self::DestinationExists => "destination already exists",
            Self::DestinationNotEmpty => "destination directory is not empty",
            Self::MissingMarker => "no commit marker: the layer is not committed",
            Self::BadMarker => "unreadable commit marker",
            Self::ContentMismatch => "content does not match the digest recorded at commit",
            Self::MetadataTooLarge => "archive metadata record too large",
        })
    }
}

/// Why an overlay could not be composed. Each is detected before any system call that mounts, except
/// [`SilentlyReadOnly`](OverlayProblem::SilentlyReadOnly), which is checked right after the kernel made the mount
/// (and the mount is dropped).
///
/// ```
/// use layermount::{ErrorKind, Features, Overlay, OverlayProblem, Strategy};
/// // Checked before anything is mounted: no privilege is needed to see it.
/// let err = Overlay::new().features(Features::probe().limited_to(Strategy::Legacy)).mount().unwrap_err();
/// assert_eq!(err.kind(), ErrorKind::InvalidOverlay(OverlayProblem::NoLowerLayer));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum OverlayProblem {
    /// No lower layer was given.
    NoLowerLayer,
    /// One lower layer and no upper: the kernel needs two lower layers for a read-only overlay.
    SingleLowerWithoutUpper,
    /// More than 500 layers (lower and data-only together): the kernel's limit.
    TooManyLayers,
    /// The same directory is given twice (the kernel would refuse with ELOOP). Duplicates are refused, never
    /// silently dropped, since dropping one changes which layer wins.
    DuplicateLayer,
    /// A layer lies inside another layer, or a lower layer inside the upper or work directory, or the upper and
    /// work directories inside each other (all refused by the kernel). An upper or work directory inside a lower
    /// layer is allowed (Linux 5.12+), so it is not reported.
    NestedLayers,
    /// A layer, upper or work path is not a directory.
    NotADirectory,
    /// The legacy `mount(2)` option string would exceed one page (4095 bytes) even with relative paths; the
    /// kernel would cut it silently and could mount with layers missing.
    OptionsTooLong,
    /// An option that names layers (`lowerdir`, `upperdir`, `workdir`, `datadir`) was given as a raw option.
    ReservedOption,
    /// The overlay has an upper layer but the kernel made it read-only anyway (checked right after mounting; the
    /// mount is dropped).
    SilentlyReadOnly,
    /// The upper is to be idmapped, but the map does not hold the mounter's uid and gid on its host side: overlay
    /// writes the upper with the mounter's credentials through the map, and the kernel would make the overlay
    /// read-only without an error. Checked before mounting.
    UpperNotMapped,
    /// The upper directory already holds files and is owned by someone other than the container's root (the map's
    /// host ids of container uid 0 and gid 0): it was written for another container or mapping.
    UpperOwner,
    /// A layer, upper or work directory is (or lies inside) the upper or work directory of a live overlay, found in
    /// the mount table: the kernel would mount it with only a warning ("in-use as upperdir/workdir of another mount,
    /// accessing files from both mounts will result in undefined behavior"). Checked before mounting.
    InUse,
    /// An [`ImageStack`](crate::ImageStack) cannot be made of these layers: one lives on an overlay (or another
    /// stacking filesystem), and a container overlay on the stack would be three filesystems deep, which the kernel
    /// refuses. Compose flat instead ([`StackCache::compose`](crate::StackCache::compose) does).
    StackTooDeep,
}

impl fmt::Display for OverlayProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::NoLowerLayer => "no lower layer",
            Self::SingleLowerWithoutUpper => "one lower layer and no upper: a read-only overlay needs two lower layers",
            Self::TooManyLayers => "more than 500 layers",
            Self::DuplicateLayer => "the same directory is given twice",
            Self::NestedLayers => "layers are nested inside each other",
            Self::NotADirectory => "not a directory",
            Self::OptionsTooLong => "mount(2) option string longer than one page (4095 bytes)",
            Self::ReservedOption => "layer options must be given as layers, not as raw options",
            Self::SilentlyReadOnly => "the kernel made the overlay read-only although it has an upper layer",
            Self::UpperNotMapped => "the upper's idmap does not map the mounter",
            Self::UpperOwner => "the upper belongs to someone other than the container's root",
            Self::InUse => "a directory is in use as the upper or work directory of another overlay",
            Self::StackTooDeep => "the layers live on an overlay: a stack of them would be too deep",
        })
    }
}

/// How an id map was malformed.
///
/// ```
/// use layermount::{ErrorKind, IdMap, IdMapProblem};
/// let err = IdMap::parse("0:100000:65536,10:200000:5").unwrap_err();
/// assert_eq!(err.kind(), ErrorKind::InvalidIdMap(IdMapProblem::OverlappingContainer));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum IdMapProblem {
    /// No range at all.
    Empty,
    /// A range is not `container:host:size`.
    Malformed,
    /// A field is negative, not a number, or does not fit in `u32`.
    NotANumber,
    /// A range has size 0.
    ZeroSize,
    /// `start + size` passes 4294967295 (the kernel's `(u32)-1`, never a valid id) or overflows the 32-bit id
    /// space.
    Overflow,
    /// Two ranges overlap on the container (namespace) side.
    OverlappingContainer,
    /// Two ranges overlap on the host side.
    OverlappingHost,
    /// More than 340 ranges, or more than the 4,095 bytes the kernel reads from one write of the map (the
    /// kernel's limits).
    TooManyExtents,
}

impl fmt::Display for IdMapProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Empty => "empty id map",
            Self::Malformed => "range is not container:host:size",
            Self::NotANumber => "not an unsigned 32-bit number",
            Self::ZeroSize => "range of size 0",
            Self::Overflow => "range reaches id 4294967295 or overflows the 32-bit id space",
            Self::OverlappingContainer => "container ranges overlap",
            Self::OverlappingHost => "host ranges overlap",
            Self::TooManyExtents => "more than 340 ranges, or more than 4095 bytes when written",
        })
    }
}

/// An error from layermount: the operation, the path(s) it was working on, the cause, and for new-mount-API
/// calls the messages the kernel left on the filesystem context.
///
/// It displays as one line, `operation path: cause`, fit for a log or a command-line error.
///
/// ```
/// use layermount::{ErrorKind, IdMap};
/// let err = IdMap::parse("0:0:0").unwrap_err();
/// assert_eq!(err.kind(), ErrorKind::InvalidIdMap(layermount::IdMapProblem::ZeroSize));
/// assert_eq!(err.to_string(), "parse id map: range of size 0: \"0:0:0\"");
/// ```
///
/// [`source`](std::error::Error::source) is the underlying `std::io::Error` (the errno of a failed system call, or
/// the error a caller's reader returned), so error chains keep it.
///
/// ```
/// use std::error::Error as _;
/// let err = layermount::remove_all("/nonexistent/dir").unwrap_err();
/// let io = err.source().and_then(|s| s.downcast_ref::<std::io::Error>()).unwrap();
/// assert_eq!(io.kind(), std::io::ErrorKind::NotFound);
/// ```
#[derive(Debug, Clone)]
pub struct Error {
    kind: ErrorKind,
    operation: &'static str,
    path: Option<PathBuf>,
    errno: Option<i32>,
    detail: Option<String>,
    io_kind: Option<std::io::ErrorKind>,
    kernel_messages: Vec<String>,
    source: Option<std::sync::Arc<std::io::Error>>,
}

/// Errors are equal when everything but the [`source`](std::error::Error::source) is (the source is the errno or
/// message already compared).
impl PartialEq for Error {
    fn eq(&self, other: &Self) -> bool {
        (self.kind, self.operation, &self.path, self.errno, &self.detail, self.io_kind, &self.kernel_messages)
            == (
                other.kind,
                other.operation,
                &other.path,
                other.errno,
                &other.detail,
                other.io_kind,
                &other.kernel_messages,
            )
    }
}

impl Eq for Error {}

/// `Result` with [`Error`].
///
/// ```
/// fn container_root(map: &str) -> layermount::Result<u32> {
///     let map: layermount::IdMap = map.parse()?;
///     Ok(map.to_host(0).unwrap_or(u32::MAX))
/// }
/// assert_eq!(container_root("0:100000:65536")?, 100000);
/// # Ok::<(), layermount::Error>(())
/// ```
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A new error of `kind` raised by `operation`.
    pub(crate) fn new(kind: ErrorKind, operation: &'static str) -> Self {
        Self {
            kind,
            operation,
            path: None,
            errno: None,
            detail: None,
            io_kind: None,
            kernel_messages: Vec::new(),
            source: None,
        }
    }

    /// A failed system call. EPERM and EACCES become [`ErrorKind::PermissionDenied`], ENOSYS
    /// [`ErrorKind::NotSupported`]; every other errno is [`ErrorKind::Os`].
    pub(crate) fn os(operation: &'static str, errno: rustix::io::Errno) -> Self {
        let kind = match errno {
            rustix::io::Errno::PERM | rustix::io::Errno::ACCESS => ErrorKind::PermissionDenied,
            rustix::io::Errno::NOSYS => ErrorKind::NotSupported,
            _ => ErrorKind::Os,
        };
        let mut e = Self::new(kind, operation);
        e.errno = Some(errno.raw_os_error());
        e.source = Some(std::sync::Arc::new(std::io::Error::from_raw_os_error(errno.raw_os_error())));
        e
    }

    /// From a `std::io::Error` (file reads and the like).
    pub(crate) fn io(operation: &'static str, err: &std::io::Error) -> Self {
        match err.raw_os_error() {
            Some(n) => Self::os(operation, rustix::io::Errno::from_raw_os_error(n)),
            None => {
                let mut e = Self::new(ErrorKind::Os, operation).with_detail(err.to_string());
                e.io_kind = Some(err.kind());
                e.source = Some(std::sync::Arc::new(std::io::Error::new(err.kind(), err.to_string())));
                e
            }
        }
    }

    /// An error from a `std::io::Error` met while working on `path` (for tools built on the crate, such as the
    /// command-line program, that open files themselves).
    ///
    /// ```
    /// let io = std::io::Error::from_raw_os_error(2);
    /// let e = layermount::Error::from_io("apply layer", "layer.tar", &io);
    /// assert_eq!(e.raw_os_error(), Some(2));
    /// assert_eq!(e.path(), Some(std::path::Path::new("layer.tar")));
    /// ```
    pub fn from_io(operation: &'static str, path: impl AsRef<Path>, err: &std::io::Error) -> Self {
        Self::io(operation, err).with_path(path)
    }

    pub(crate) fn with_kind(mut self, kind: ErrorKind) -> Self {
        self.kind = kind;
        self
    }

    pub(crate) fn with_path(mut self, path: impl AsRef<Path>) -> Self {
        self.path = Some(path.as_ref().to_path_buf());
        self
    }

    pub(crate) fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    pub(crate) fn with_kernel_messages(mut self, messages: Vec<String>) -> Self {
        self.kernel_messages = messages;
        self
    }

    /// What went wrong, to match on.
    ///
    /// ```
    /// use layermount::{ErrorKind, IdMap};
    /// let err = IdMap::parse("0:100000").unwrap_err();
    /// assert!(matches!(err.kind(), ErrorKind::InvalidIdMap(_)));
    /// ```
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The operation that failed, e.g. `"remove_all"`, `"idmap tree"`, `"fsconfig lowerdir+"`.
    ///
    /// ```
    /// let err = layermount::IdMap::parse("x").unwrap_err();
    /// assert_eq!(err.operation(), "parse id map");
    /// ```
    pub fn operation(&self) -> &'static str {
        self.operation
    }

    /// The path the operation was working on, if it had one. For [`ErrorKind::MountBoundary`] this is the mount
    /// point that stopped it.
    ///
    /// ```no_run
    /// use layermount::ErrorKind;
    /// match layermount::remove_all("/var/lib/ctr/old") {
    ///     Err(e) if e.kind() == ErrorKind::MountBoundary => {
    ///         eprintln!("still mounted: {}", e.path().unwrap().display());
    ///     }
    ///     other => { other?; }
    /// }
    /// # Ok::<(), layermount::Error>(())
    /// ```
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// The errno of the failed system call, if one failed.
    ///
    /// ```no_run
    /// let err = layermount::DetachedTree::clone_path("/does/not/exist", false).unwrap_err();
    /// assert_eq!(err.raw_os_error(), Some(2)); // ENOENT
    /// ```
    pub fn raw_os_error(&self) -> Option<i32> {
        self.errno
    }

    /// The kind of the [`std::io::Error`] this error came from, when it had no errno: a reader's own error (a
    /// network stream that timed out, say) that made [`apply`](crate::apply) fail keeps its kind here.
    ///
    /// ```
    /// let io = std::io::Error::new(std::io::ErrorKind::TimedOut, "registry too slow");
    /// let e = layermount::Error::from_io("apply layer", "layer.tar", &io);
    /// assert_eq!(e.io_kind(), Some(std::io::ErrorKind::TimedOut));
    /// ```
    pub fn io_kind(&self) -> Option<std::io::ErrorKind> {
        self.io_kind
    }

    /// The messages the kernel wrote to the filesystem-context fd (`fsopen`) before the failure, oldest first,
    /// e.g. `"e overlayfs: failed to clone lowerpath"`.
    ///
    /// ```no_run
    /// let mut fs = layermount::FsContext::open("overlay")?;
    /// if let Err(e) = fs.set_string("lowerdir+", "/does/not/exist") {
    ///     for line in e.kernel_messages() {
    ///         eprintln!("kernel: {line}");
    ///     }
    /// }
    /// # Ok::<(), layermount::Error>(())
    /// ```
    pub fn kernel_messages(&self) -> &[String] {
        &self.kernel_messages
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.operation)?;
        if let Some(p) = &self.path {
            write!(f, " {}", p.display())?;
        }
        f.write_str(": ")?;
        let mut need_sep = false;
        match self.kind {
            ErrorKind::InvalidIdMap(p) => {
                write!(f, "{p}")?;
                need_sep = true;
            }
            ErrorKind::InvalidOverlay(p) => {
                write!(f, "{p}")?;
                need_sep = true;
            }
            ErrorKind::InvalidLayer(p) => {
                write!(f, "{p}")?;
                need_sep = true;
            }
            ErrorKind::Breakout => {
                f.write_str("would reach outside the layer")?;
                need_sep = true;
            }
            ErrorKind::MountBoundary => {
                f.write_str("is a mount point; refusing to cross it")?;
                need_sep = true;
            }
            ErrorKind::AlreadyAttached => {
                f.write_str("tree is or was attached; only a detached clone can be idmapped")?;
                need_sep = true;
            }
            ErrorKind::AlreadyIdmapped => {
                f.write_str("tree is already idmapped")?;
                need_sep = true;
            }
            ErrorKind::Race => {
                f.write_str("changed under the operation")?;
                need_sep = true;
            }
            ErrorKind::Cancelled => {
                f.write_str("cancelled")?;
                need_sep = true;
            }
            _ => {}
        }
        if let Some(d) = &self.detail {
            if need_sep {
                f.write_str(": ")?;
            }
            f.write_str(d)?;
            need_sep = true;
        }
        if let Some(n) = self.errno {
            if need_sep {
                f.write_str(": ")?;
            }
            write!(f, "{}", std::io::Error::from_raw_os_error(n))?;
            need_sep = true;
        }
        if !need_sep {
            f.write_str(match self.kind {
                ErrorKind::NotSupported => "not supported by this kernel",
                ErrorKind::PermissionDenied => "permission denied",
                ErrorKind::InvalidInput => "invalid input",
                ErrorKind::InvalidMountSpec => "invalid mount specification",
                _ => "failed",
            })?;
        }
        if !self.kernel_messages.is_empty() {
            write!(f, " (kernel: {})", self.kernel_messages.join("; "))?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_deref().map(|e| e as &(dyn std::error::Error + 'static))
    }
}

impl From<Error> for std::io::Error {
    fn from(e: Error) -> Self {
        let kind = match e.kind {
            ErrorKind::PermissionDenied => std::io::ErrorKind::PermissionDenied,
            ErrorKind::NotSupported => std::io::ErrorKind::Unsupported,
            ErrorKind::InvalidInput
            | ErrorKind::InvalidIdMap(_)
            | ErrorKind::InvalidOverlay(_)
            | ErrorKind::InvalidMountSpec => std::io::ErrorKind::InvalidInput,
            ErrorKind::Breakout | ErrorKind::InvalidLayer(_) => std::io::ErrorKind::InvalidData,
            ErrorKind::MountBoundary => std::io::ErrorKind::ResourceBusy,
            ErrorKind::Race => std::io::ErrorKind::ResourceBusy,
            ErrorKind::Cancelled => std::io::ErrorKind::Interrupted,
            _ => match e.errno {
                Some(n) => std::io::Error::from_raw_os_error(n).kind(),
                None => e.io_kind.unwrap_or(std::io::ErrorKind::Other),
            },
        };
        std::io::Error::new(kind, e)
    }
}

/// Attach an operation (and path) to a `rustix` result.
pub(crate) trait Context<T> {
    fn op(self, operation: &'static str) -> Result<T>;
    fn op_path(self, operation: &'static str, path: &Path) -> Result<T>;
}

impl<T> Context<T> for rustix::io::Result<T> {
    fn op(self, operation: &'static str) -> Result<T> {
        self.map_err(|e| Error::os(operation, e))
    }
    fn op_path(self, operation: &'static str, path: &Path) -> Result<T> {
        self.map_err(|e| Error::os(operation, e).with_path(path))
    }
}
