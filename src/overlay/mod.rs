//! [`Overlay`]: compose an overlay root filesystem from image layers, idmapped for a user-namespaced container, with
//! no temporary mount ever attached on kernels that take layers as file descriptors.
//!
//! Strategies, picked from [`Features`] (or forced with [`Overlay::strategy`] / `LAYERMOUNT_STRATEGY`):
//!
//! | [`Strategy`] | kernel | layers reach the kernel as | idmapping |
//! |---|---|---|---|
//! | `DetachedFds` | 6.15 | `O_PATH` fds, `fsconfig(FSCONFIG_SET_FD, "lowerdir+")` | one *detached* idmapped clone per mount the layers are on |
//! | `AttachedFds` | 6.13 | `O_RDONLY` fds, same call | one idmapped clone per mount, attached under a private staging directory while the overlay is made |
//! | `Strings` | 6.7 | `fsconfig(FSCONFIG_SET_STRING, "lowerdir+")`, paths over 255 bytes made relative by a `fchdir` in a thread of its own | as above |
//! | `Legacy` | any | `mount(2)` with one `lowerdir=` string, checked against the 4095-byte page (compacted to relative paths when that makes it fit; refused otherwise) | as above |
//!
//! In every strategy the overlay is created first as a detached tree; [`Overlay::mount_at`] then attaches it.
//! Temporary mounts of the fallbacks are detached and their directories removed (with `rmdir`) before
//! [`Overlay::mount`] returns, on success and on error.
//!
//! # Staging and crashes (fallback strategies)
//!
//! The fallbacks attach their idmapped clones under a private staging directory ([`Overlay::staging_dir`], default
//! [`DEFAULT_STAGING_DIR`]: 0700, owned by the caller), one `<pid>-<n>` directory per compose. Each clone is based
//! at the deepest directory holding the layers of one mount, and is **read-only**: overlay only reads lower
//! layers, so even if the composing process is killed while they are attached, a `rm -rf` through what it left
//! fails with `EROFS` instead of deleting layers. Only an idmapped upper ([`Overlay::idmap_upper`]) gets a writable
//! clone, based at the common directory of the upper and work directories alone; the legacy strategy's own
//! overlay mount is made read-only as soon as it exists (its detached clone gets the caller's flags).
//!
//! A killed process leaves its clones attached. A daemon should call [`cleanup_stale`] on its staging directory
//! once at startup (or run `layermount cleanup DIR` from its unit before starting): it detach-unmounts what dead
//! processes left and removes their directories with `rmdir`, nothing else. The fast path attaches nothing and
//! leaves nothing after a kill.
//!
//! # The upper of an idmapped overlay
//!
//! With idmapped lower layers and a plain upper, the merged root directory *is* the upper's root directory: its
//! owner is what the container sees on `/`, and new files are created with the writer's host ids. A fresh upper
//! made by host root would show as `nobody` (unmapped) to the container and refuse its root's writes, so an empty
//! upper (and work) directory is handed to the map's root before mounting ([`Overlay::prepare_upper`], on by
//! default); an upper that already holds files and belongs to someone else is refused
//! ([`OverlayProblem::UpperOwner`]). Idmapping the upper too ([`Overlay::idmap_upper`]) is rarely what is
//! wanted: overlay writes it with the mounter's credentials through the map.
//!
//! # Example
//!
//! A container root from three layers, idmapped for a container whose root is host uid 100000, torn down again:
//!
//! ```no_run
//! use layermount::{IdMap, MountAttrs, Overlay, UserNamespace};
//!
//! let map: IdMap = "0:100000:65536".parse()?;
//! let overlay = Overlay::new()
//!     .lowers(["/var/lib/layers/3", "/var/lib/layers/2", "/var/lib/layers/1"])
//!     .upper("/var/lib/ctr/upper", "/var/lib/ctr/work")
//!     .idmap(UserNamespace::cached(&map, &map)?)
//!     .attrs(MountAttrs::NODEV | MountAttrs::NOSUID);
//! println!("composing with the {} strategy", overlay.chosen_strategy()?);
//! let guard = overlay.mount_at("/run/ctr/rootfs")?;
//! // ... run the container on /run/ctr/rootfs ...
//! guard.unmount()?;
//! # Ok::<(), layermount::Error>(())
//! ```
//!
//! [`OverlayProblem::UpperOwner`]: crate::OverlayProblem::UpperOwner

mod describe;
mod layers;
mod live;
mod staging;
mod upper;

use std::borrow::Cow;
use std::ffi::OsStr;
use std::fmt;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{CWD, Mode, OFlags};
use rustix::io::Errno;
use rustix::mount::MountAttrFlags;

pub use layers::MAX_LAYERS;
pub(crate) use layers::refuse_stacking_fs;
use layers::{Resolved, Role};
pub(crate) use live::Held;
pub use staging::{DEFAULT_STAGING_DIR, STAGING_DIR_ENV, StaleCleanup, cleanup_stale};
pub(crate) use staging::{Staging, default_staging_dir};
use staging::{open_beneath, with_own_cwd};

use crate::error::{Error, ErrorKind, OverlayProblem, Result};
use crate::features::{Features, Strategy};
use crate::fscontext::FsContext;
use crate::guard::MountGuard;
use crate::options;
use crate::stack::ImageStack;
use crate::tree::{DetachedTree, MountAttrs};
use crate::userns::UserNamespace;

/// The kernel caps a string given to `fsconfig` at this many bytes.
const FSCONFIG_STRING_MAX: usize = 255;
/// `mount(2)` copies one page of options and silently cuts the rest.
const LEGACY_OPTIONS_MAX: usize = 4095;

/// A source of one overlay directory.
#[derive(Debug)]
enum Source {
    Path(PathBuf),
    Fd(OwnedFd),
    /// An image stack's root, used as it is; the handle keeps the stack (and any mount it needs) alive until the
    /// overlay exists.
    Stack(ImageStack),
}

/// Typed overlay options (see `Documentation/filesystems/overlayfs.rst`), or a raw one.
///
/// Options are passed to the kernel in the order given, after the layers; the kernel refuses one it does not know
/// when the overlay is made (`EINVAL`, with its message in [`Error::kernel_messages`]).
///
/// ```
/// use layermount::OverlayOption;
/// assert_eq!(OverlayOption::Index(false).to_string(), "index=off");
/// assert_eq!(OverlayOption::Raw("nfs_export".into(), Some("off".into())).to_string(), "nfs_export=off");
/// let o = layermount::Overlay::new()
///     .lowers(["/l/2", "/l/1"])
///     .option(OverlayOption::UserXattr)
///     .option(OverlayOption::Xino("auto"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OverlayOption {
    /// `volatile`: no syncs to the upper layer; the overlay must be discarded after a crash.
    Volatile,
    /// `userxattr`: use `user.overlay.*` xattrs (needed in user namespaces).
    UserXattr,
    /// `index=on|off`.
    Index(bool),
    /// `metacopy=on|off`.
    Metacopy(bool),
    /// `redirect_dir=on|off|follow|nofollow`.
    RedirectDir(&'static str),
    /// `xino=on|off|auto`.
    Xino(&'static str),
    /// `uuid=on|off|null|auto`.
    Uuid(&'static str),
    /// Any other option: `key` alone (a flag) or `key=value`.
    Raw(String, Option<String>),
}

impl OverlayOption {
    fn key_value(&self) -> (&str, Option<String>) {
        let on_off = |b: bool| Some(if b { "on" } else { "off" }.to_string());
        match self {
            Self::Volatile => ("volatile", None),
            Self::UserXattr => ("userxattr", None),
            Self::Index(b) => ("index", on_off(*b)),
            Self::Metacopy(b) => ("metacopy", on_off(*b)),
            Self::RedirectDir(v) => ("redirect_dir", Some(v.to_string())),
            Self::Xino(v) => ("xino", Some(v.to_string())),
            Self::Uuid(v) => ("uuid", Some(v.to_string())),
            Self::Raw(k, v) => (k, v.clone()),
        }
    }
}

impl fmt::Display for OverlayOption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.key_value() {
            (k, None) => f.write_str(k),
            (k, Some(v)) => write!(f, "{k}={v}"),
        }
    }
}

/// Builder of an overlay mount.
///
/// Lower layers are given top-most first, as in `lowerdir=top:...:bottom`. A [`UserNamespace`] given with
/// [`idmap`](Overlay::idmap) idmaps every lower and data-only layer given as a path (layers given as fds are used as
/// they are), and the upper and work directories too with [`idmap_upper`](Overlay::idmap_upper).
///
/// # Kernel
/// Any kernel with overlay; which [`Strategy`] is used, and so what is attached while composing, depends on the
/// kernel (table in the [module docs](self)). The fast path needs Linux 6.15.
///
/// ```no_run
/// use layermount::{IdMap, MountAttrs, Overlay, UserNamespace};
/// let map: IdMap = "0:100000:65536".parse()?;
/// let guard = Overlay::new()
///     .lower("/var/lib/layers/3")
///     .lower("/var/lib/layers/2")
///     .lower("/var/lib/layers/1")
///     .upper("/var/lib/ctr/upper", "/var/lib/ctr/work")
///     .idmap(UserNamespace::cached(&map, &map)?)
///     .idmap_upper(true)
///     .attrs(MountAttrs::NODEV | MountAttrs::NOSUID)
///     .mount_at("/run/ctr/rootfs")?;
/// # Ok::<(), layermount::Error>(())
/// ```
#[derive(Debug, Default)]
pub struct Overlay {
    lowers: Vec<Source>,
    data: Vec<Source>,
    upper: Option<(Source, Source)>,
    options: Vec<OverlayOption>,
    userns: Option<UserNamespace>,
    idmap_upper: bool,
    keep_upper_owner: bool,
    skip_in_use: bool,
    /// Building an image stack: refuse layers on a stacking filesystem (checked once per clone on the fast path).
    refuse_stacking: bool,
    attrs: MountAttrs,
    strategy: Option<Strategy>,
    features: Option<Features>,
    staging_parent: Option<PathBuf>,
}

impl Overlay {
    /// An empty builder.
    ///
    /// ```
    /// let overlay = layermount::Overlay::new().lower("/var/lib/layers/2").lower("/var/lib/layers/1");
    /// ```
    pub fn new() -> Self {
        Self::default()
    }

    /// Add a lower layer below those added so far (the first one added is the top-most).
    ///
    /// ```
    /// // lowerdir=/var/lib/layers/3:/var/lib/layers/2:/var/lib/layers/1 (3 wins)
    /// let overlay = layermount::Overlay::new()
    ///     .lower("/var/lib/layers/3")
    ///     .lower("/var/lib/layers/2")
    ///     .lower("/var/lib/layers/1");
    /// ```
    pub fn lower(mut self, dir: impl AsRef<Path>) -> Self {
        self.lowers.push(Source::Path(dir.as_ref().to_path_buf()));
        self
    }

    /// Add lower layers, top-most first.
    ///
    /// ```
    /// let o = layermount::Overlay::new().lowers(["/l/2", "/l/1"]);
    /// ```
    pub fn lowers<P: AsRef<Path>>(mut self, dirs: impl IntoIterator<Item = P>) -> Self {
        self.lowers.extend(dirs.into_iter().map(|d| Source::Path(d.as_ref().to_path_buf())));
        self
    }

    /// Add a lower layer given as a directory fd (an `O_PATH` or `O_RDONLY` fd, or the root of a
    /// [`DetachedTree`]); it is used as it is, never idmapped here. The legacy and string strategies pass it as a
    /// `/proc/thread-self/fd/N` path.
    ///
    /// ```no_run
    /// use std::os::fd::OwnedFd;
    /// let top: OwnedFd = std::fs::File::open("/var/lib/layers/2")?.into();
    /// let guard = layermount::Overlay::new()
    ///     .lower_fd(top)
    ///     .lower("/var/lib/layers/1")
    ///     .mount_at("/run/ctr/rootfs")?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn lower_fd(mut self, fd: OwnedFd) -> Self {
        self.lowers.push(Source::Fd(fd));
        self
    }

    /// Add an [`ImageStack`] as a lower layer below those added so far: usually the only one, so that composing
    /// costs the same whatever the image's layer count. The stack is used as it is (already idmapped); the
    /// builder's [`idmap`](Self::idmap) still decides how the upper is prepared. Once the overlay exists it holds
    /// the stack by itself: dropping every [`ImageStack`] handle never disturbs it.
    ///
    /// Needs what the stack needs (see [`ImageStack`]): on kernels before 6.15 the stack is attached under a private
    /// directory, and every strategy takes it from there.
    ///
    /// # Errors
    /// None here; [`mount`](Self::mount) reports a kernel that refuses the stack (`NotSupported`).
    ///
    /// ```no_run
    /// use layermount::{IdMap, ImageStack, Overlay, UserNamespace};
    /// let map: IdMap = "0:100000:65536".parse()?;
    /// let ns = UserNamespace::cached(&map, &map)?;
    /// let stack = ImageStack::build(["/var/lib/layers/3", "/var/lib/layers/2", "/var/lib/layers/1"], Some(&ns))?;
    /// let guard = Overlay::new()
    ///     .lower_stack(&stack)
    ///     .upper("/var/lib/ctr/upper", "/var/lib/ctr/work")
    ///     .idmap(ns)
    ///     .mount_at("/run/ctr/rootfs")?;
    /// # Ok::<(), layermount::Error>(())
    /// ```
    pub fn lower_stack(mut self, stack: &ImageStack) -> Self {
        self.lowers.push(Source::Stack(stack.clone()));
        self
    }

    /// Add a lower layer given as a detached tree (its root).
    ///
    /// Before Linux 6.15 the kernel takes no layer from a detached mount (`overlayfs: failed to clone lowerpath`):
    /// attach the tree first there, or give its path.
    ///
    /// ```no_run
    /// use layermount::{DetachedTree, IdMap, Overlay, UserNamespace};
    /// let map: IdMap = "0:100000:65536".parse()?;
    /// let mut base = DetachedTree::clone_path("/var/lib/layers/1", false)?;
    /// base.idmap(&UserNamespace::cached(&map, &map)?)?; // idmapped here, so used as it is
    /// let tree = Overlay::new().lower("/var/lib/layers/2").lower_tree(base).mount()?;
    /// # Ok::<(), layermount::Error>(())
    /// ```
    pub fn lower_tree(self, tree: DetachedTree) -> Self {
        self.lower_fd(tree.into_fd())
    }

    /// Add a data-only lower layer (`datadir+`, or `::` in a `lowerdir=` string), below every lower layer. Data-only
    /// layers are reachable only through metacopy redirects.
    ///
    /// Needs `metacopy=on` to be useful and a kernel with data-only layers (6.5 for `::` in `lowerdir=`, 6.7 for
    /// `datadir+`); where the kernel has none, composing is refused.
    ///
    /// ```
    /// use layermount::{Overlay, OverlayOption};
    /// let overlay = Overlay::new()
    ///     .lowers(["/var/lib/meta/2", "/var/lib/meta/1"])
    ///     .data_layer("/var/lib/blobs")
    ///     .option(OverlayOption::Metacopy(true));
    /// ```
    pub fn data_layer(mut self, dir: impl AsRef<Path>) -> Self {
        self.data.push(Source::Path(dir.as_ref().to_path_buf()));
        self
    }

    /// Make the overlay writable: `upper` receives changes, `work` is overlay's scratch directory (same filesystem,
    /// empty, not inside `upper`).
    ///
    /// ```
    /// let overlay = layermount::Overlay::new().lower("/var/lib/layers/1").upper("/var/lib/ctr/upper", "/var/lib/ctr/work");
    /// ```
    pub fn upper(mut self, upper: impl AsRef<Path>, work: impl AsRef<Path>) -> Self {
        self.upper = Some((Source::Path(upper.as_ref().to_path_buf()), Source::Path(work.as_ref().to_path_buf())));
        self
    }

    /// Add an overlay option, after those given so far (order is kept).
    ///
    /// ```
    /// use layermount::{Overlay, OverlayOption};
    /// let overlay = Overlay::new().lowers(["/l/2", "/l/1"]).option(OverlayOption::Index(false)).option(OverlayOption::Volatile);
    /// ```
    pub fn option(mut self, option: OverlayOption) -> Self {
        self.options.push(option);
        self
    }

    /// Idmap the layers with `ns`.
    ///
    /// Layers given as paths are idmapped through one detached idmapped clone per mount they live on (the fast path)
    /// or attached clones (the fallbacks); the upper is prepared for the map's root unless told otherwise
    /// ([`prepare_upper`](Self::prepare_upper), [`idmap_upper`](Self::idmap_upper)).
    ///
    /// ```no_run
    /// use layermount::{IdMap, Overlay, UserNamespace};
    /// let map: IdMap = "0:100000:65536".parse()?;
    /// let overlay = Overlay::new()
    ///     .lowers(["/var/lib/layers/2", "/var/lib/layers/1"])
    ///     .idmap(UserNamespace::cached(&map, &map)?);
    /// # Ok::<(), layermount::Error>(())
    /// ```
    pub fn idmap(mut self, ns: UserNamespace) -> Self {
        self.userns = Some(ns);
        self
    }

    /// Also idmap the upper and work directories (needs [`idmap`](Self::idmap)). Overlay writes the upper with the
    /// mounter's credentials through the map, so the map's host side must hold the mounter's uid and gid (for
    /// root: a map of host 0); otherwise the kernel would make the overlay read-only, and this is refused before
    /// mounting with [`OverlayProblem::UpperNotMapped`]. Usually not wanted: the default (a plain upper, prepared
    /// for the container's root) lets a user-namespaced container write and stores its files with host ids.
    ///
    /// ```
    /// let o = layermount::Overlay::new().lowers(["/l/2", "/l/1"]).upper("/c/upper", "/c/work").idmap_upper(true);
    /// ```
    pub fn idmap_upper(mut self, yes: bool) -> Self {
        self.idmap_upper = yes;
        self
    }

    /// Whether to refuse a directory that is (or lies inside) the upper or work directory of a live overlay
    /// ([`OverlayProblem::InUse`]; default: yes). The check reads the mount table on every compose, about 1 µs per
    /// mount in the namespace (some 40 µs in a namespace of 45 mounts, a tenth of a 16-layer compose); a caller that
    /// knows which overlays use its directories (a snapshotter that owns its store) can turn it off.
    ///
    /// ```
    /// let o = layermount::Overlay::new().lowers(["/l/2", "/l/1"]).check_in_use(false);
    /// ```
    pub fn check_in_use(mut self, yes: bool) -> Self {
        self.skip_in_use = !yes;
        self
    }

    /// Refuse layers that live on a stacking filesystem ([`OverlayProblem::StackTooDeep`]): what an image stack
    /// needs, checked where it costs least (once for all the layers inside one fenced clone).
    pub(crate) fn refuse_stacked_layers(mut self) -> Self {
        self.refuse_stacking = true;
        self
    }

    /// Whether to prepare the upper for the container's root (default: yes). With an [`idmap`](Self::idmap) and a
    /// plain (not idmapped) upper, an empty upper and work directory are handed to the map's root (the host ids of
    /// container uid 0 and gid 0) before mounting, so the merged `/` belongs to the container's root and it can
    /// write; files it writes land on disk with its host ids. An upper that already holds files and belongs to
    /// someone else is refused ([`OverlayProblem::UpperOwner`]). `prepare_upper(false)` leaves owners as they are.
    ///
    /// # Kernel
    /// Any: a `fchown` of each directory.
    ///
    /// ```no_run
    /// use layermount::{IdMap, Overlay, UserNamespace};
    /// let map: IdMap = "0:100000:65536".parse()?;
    /// let root = Overlay::new()
    ///     .lowers(["/var/lib/layers/2", "/var/lib/layers/1"])
    ///     .upper("/var/lib/ctr/upper", "/var/lib/ctr/work") // now owned by 100000:100000 if it was empty
    ///     .idmap(UserNamespace::cached(&map, &map)?)
    ///     .mount_at("/run/ctr/rootfs")?;
    /// # Ok::<(), layermount::Error>(())
    /// ```
    pub fn prepare_upper(mut self, yes: bool) -> Self {
        self.keep_upper_owner = !yes;
        self
    }

    /// Per-mount flags of the resulting mount (`RDONLY`, `NOSUID`, `NODEV`, ...).
    ///
    /// ```
    /// use layermount::{MountAttrs, Overlay};
    /// let overlay = Overlay::new().lowers(["/l/2", "/l/1"]).attrs(MountAttrs::RDONLY | MountAttrs::NODEV | MountAttrs::NOSUID);
    /// ```
    pub fn attrs(mut self, attrs: MountAttrs) -> Self {
        self.attrs = attrs;
        self
    }

    /// Force a strategy instead of the best one the kernel supports (an error if the kernel lacks it).
    ///
    /// ```
    /// use layermount::{Overlay, Strategy};
    /// let overlay = Overlay::new().lowers(["/l/2", "/l/1"]).strategy(Strategy::Strings);
    /// ```
    pub fn strategy(mut self, strategy: Strategy) -> Self {
        self.strategy = Some(strategy);
        self
    }

    /// Use these features instead of [`Features::get`] (tests, or a caller that probes once itself).
    ///
    /// ```
    /// use layermount::{Features, Overlay, Strategy};
    /// // Test the legacy path on a new kernel.
    /// let overlay = Overlay::new().lowers(["/l/2", "/l/1"]).features(Features::probe().limited_to(Strategy::Legacy));
    /// assert_eq!(overlay.chosen_strategy()?, Strategy::Legacy);
    /// # Ok::<(), layermount::Error>(())
    /// ```
    pub fn features(mut self, features: Features) -> Self {
        self.features = Some(features);
        self
    }

    /// The private staging directory of the fallback strategies (default: `$LAYERMOUNT_STAGING_DIR`, else
    /// [`DEFAULT_STAGING_DIR`]). It is made (mode 0700) if missing and must be a directory owned by the caller's
    /// uid with no access for group or others; each compose works in a `<pid>-<n>` directory inside it, where the
    /// idmapped clones of the layers are attached read-only while the overlay is made. What a killed process
    /// leaves there, [`cleanup_stale`] sweeps. The fast path never uses it.
    ///
    /// ```
    /// let overlay = layermount::Overlay::new().lowers(["/l/2", "/l/1"]).staging_dir("/run/my-daemon/staging");
    /// ```
    pub fn staging_dir(mut self, parent: impl AsRef<Path>) -> Self {
        self.staging_parent = Some(parent.as_ref().to_path_buf());
        self
    }

    /// The strategy [`mount`](Self::mount) will use.
    ///
    /// # Errors
    /// [`ErrorKind::NotSupported`] when a strategy was forced ([`strategy`](Self::strategy)) that the kernel (or the
    /// features given) lacks.
    ///
    /// # Kernel
    /// Any: reads the cached [`Features`] probe (made on first use).
    ///
    /// ```no_run
    /// let o = layermount::Overlay::new().lowers(["/l/2", "/l/1"]);
    /// println!("composing with {}", o.chosen_strategy()?);
    /// # Ok::<(), layermount::Error>(())
    /// ```
    pub fn chosen_strategy(&self) -> Result<Strategy> {
        self.strategy_for(self.the_features())
    }

    fn the_features(&self) -> &Features {
        self.features.as_ref().unwrap_or_else(|| Features::get())
    }

    fn strategy_for(&self, features: &Features) -> Result<Strategy> {
        let best = features.strategy();
        match self.strategy {
            None => Ok(best),
            Some(s) if s <= best => Ok(s),
            Some(s) => Err(Error::new(ErrorKind::NotSupported, "compose overlay")
                .with_detail(format!("strategy {s} needs a newer kernel (best here: {best})"))),
        }
    }

    /// Make the overlay as a detached tree (attached nowhere).
    ///
    /// Checked before anything is mounted, and refused with [`ErrorKind::InvalidOverlay`] naming the directory: no lower
    /// layer, one lower and no upper, more than [`MAX_LAYERS`], a directory given twice, nested layers, a path that is
    /// not a directory, a layer option given as a raw option, an idmapped upper the map cannot write, an upper owned by
    /// someone else, a directory in use by a live overlay. Nothing of the fallbacks' temporary mounts remains, on
    /// success or error.
    ///
    /// While the tree stays detached, no mount table shows it: this process's other composes refuse its upper and
    /// work ([`OverlayProblem::InUse`]) until it is attached (the table shows it then) or dropped. Another process
    /// cannot know of it (nor can this one after [`DetachedTree::into_fd`]).
    ///
    /// # Errors
    /// * [`ErrorKind::InvalidOverlay`] with the [`OverlayProblem`] above, or
    ///   [`SilentlyReadOnly`](OverlayProblem::SilentlyReadOnly) when the kernel made a writable overlay read-only (the
    ///   mount is dropped);
    /// * [`ErrorKind::NotSupported`] for a forced strategy the kernel lacks, or idmapping on a filesystem that cannot be
    ///   idmapped;
    /// * [`ErrorKind::PermissionDenied`] without `CAP_SYS_ADMIN`;
    /// * [`ErrorKind::Os`] when the kernel refuses the overlay, with its messages in [`Error::kernel_messages`].
    ///
    /// # Kernel
    /// Any kernel with overlay, through the best [`Strategy`] the kernel has (table in the [module docs](self)):
    /// `O_PATH` layer fds in detached idmapped clones from 6.15 (and 6.13.10, 6.14.2), layer fds from 6.13,
    /// `lowerdir+` strings from 6.7, `mount(2)` with one `lowerdir=` string before. Idmapped layers need
    /// `mount_setattr` (5.12), overlay on idmapped layers (5.19) and filesystems that can be idmapped.
    ///
    /// ```no_run
    /// use layermount::{MountAttrs, Overlay};
    /// let tree = Overlay::new()
    ///     .lowers(["/var/lib/layers/2", "/var/lib/layers/1"])
    ///     .attrs(MountAttrs::RDONLY)
    ///     .mount()?; // attached nowhere yet
    /// let guard = tree.attach("/run/ctr/rootfs")?;
    /// # Ok::<(), layermount::Error>(())
    /// ```
    pub fn mount(self) -> Result<DetachedTree> {
        // While the overlay is detached no mount table shows it: its upper and work are recorded as in use until
        // the tree is attached or dropped (through the fallbacks' strings too, as the kernel would take them).
        let held: Vec<(&'static str, PathBuf)> = match &self.upper {
            Some((Source::Path(u), Source::Path(w))) => vec![("upperdir", u.clone()), ("workdir", w.clone())],
            _ => Vec::new(),
        };
        let mut tree = self.make()?;
        if !held.is_empty() {
            let identified = held.into_iter().filter_map(|(key, path)| {
                let st =
                    rustix::fs::statx(CWD, &path, rustix::fs::AtFlags::empty(), rustix::fs::StatxFlags::INO).ok()?;
                Some((key, path, ((st.stx_dev_major, st.stx_dev_minor), st.stx_ino)))
            });
            tree.hold(live::Held::new(identified));
        }
        Ok(tree)
    }

    /// [`mount`](Self::mount) without recording the upper as held: for a tree attached at once.
    fn make(mut self) -> Result<DetachedTree> {
        let features = self.the_features().clone();
        let strategy = self.strategy_for(&features)?;
        for o in &self.options {
            let (k, _) = o.key_value();
            if matches!(k, "lowerdir" | "lowerdir+" | "upperdir" | "workdir" | "datadir+") {
                return Err(Error::new(ErrorKind::InvalidOverlay(OverlayProblem::ReservedOption), "compose overlay")
                    .with_detail(k.to_string()));
            }
        }
        let first_lower = match self.lowers.first() {
            Some(Source::Path(p)) => p.clone(),
            _ => PathBuf::new(),
        };
        layers::check_counts(self.lowers.len(), self.data.len(), self.upper.is_some(), &first_lower)?;
        if !self.data.is_empty() && !features.overlay_data_layers {
            return Err(Error::new(ErrorKind::NotSupported, "compose overlay").with_detail(format!(
                "overlay on this kernel ({}) does not take data-only layers (Linux 6.5 added them)",
                features.kernel_release
            )));
        }
        if let (Some(ns), true, true) = (&self.userns, self.upper.is_some(), self.idmap_upper) {
            upper::check_idmapped(ns)?;
        }
        let tree = match self.compose(strategy) {
            Ok(tree) => tree,
            // Where the kernel's reason goes only to its log, tell a refused idmap apart by trying without it.
            Err(e)
                if self.userns.is_some()
                    && e.raw_os_error() == Some(Errno::INVAL.raw_os_error())
                    && (strategy == Strategy::Legacy || !features.overlay_context_messages) =>
            {
                self.userns = None;
                return Err(match self.compose(strategy) {
                    Ok(_) => Error::new(ErrorKind::NotSupported, "compose overlay").with_detail(format!(
                        "overlay on this kernel ({}) refuses idmapped layers (Linux 5.19 added them): the same \
                         layers compose without the idmap",
                        features.kernel_release
                    )),
                    Err(_) => e,
                });
            }
            Err(e) => return Err(e),
        };
        if self.upper.is_some() && !self.attrs.contains(MountAttrs::RDONLY) {
            let st = rustix::fs::fstatvfs(&tree).map_err(|e| Error::os("compose overlay: statvfs", e))?;
            if st.f_flag.contains(rustix::fs::StatVfsMountFlags::RDONLY) {
                return Err(Error::new(ErrorKind::InvalidOverlay(OverlayProblem::SilentlyReadOnly), "compose overlay"));
            }
        }
        Ok(tree)
    }

    /// The upper prepared for the container's root: with an idmap, a plain upper, and no opt-out.
    fn prepares_upper(&self) -> Option<(u32, u32)> {
        match (&self.userns, &self.upper) {
            (Some(ns), Some(_)) if !self.idmap_upper && !self.keep_upper_owner => upper::root_of(ns),
            _ => None,
        }
    }

    /// Every directory identified by a `statx` and checked as the kernel would, the upper prepared: what the
    /// fallback strategies start from.
    fn resolve_checked(&self) -> Result<Vec<Resolved>> {
        let resolved = self.resolve()?;
        layers::validate_with(&resolved, (!self.skip_in_use).then_some(self.the_features()))?;
        if self.refuse_stacking {
            for r in resolved.iter().filter(|r| r.role.is_layer()) {
                layers::refuse_stacking_fs(r.open(OFlags::PATH)?.as_fd(), &r.given)?;
            }
        }
        if let (Some(ns), Some(_)) = (&self.userns, self.prepares_upper()) {
            upper::prepare(&resolved, ns)?;
        }
        Ok(resolved)
    }

    /// Make the overlay and attach it at `target` (created if missing, and then removed by the guard).
    ///
    /// # Errors
    /// As [`mount`](Self::mount) and [`DetachedTree::attach`].
    ///
    /// # Kernel
    /// As [`mount`](Self::mount).
    ///
    /// ```no_run
    /// let guard = layermount::Overlay::new()
    ///     .lowers(["/var/lib/layers/2", "/var/lib/layers/1"])
    ///     .upper("/var/lib/ctr/upper", "/var/lib/ctr/work")
    ///     .mount_at("/run/ctr/rootfs")?;
    /// std::fs::write("/run/ctr/rootfs/hello", "lands in the upper")?;
    /// guard.unmount()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn mount_at(self, target: impl AsRef<Path>) -> Result<MountGuard> {
        self.make()?.attach(target)
    }

    /// Compose with `strategy`: the fast path, or a fallback in a staging directory of its own.
    fn compose(&self, strategy: Strategy) -> Result<DetachedTree> {
        if strategy == Strategy::DetachedFds {
            return self.compose_detached_fds();
        }
        let mut all = self.resolve_checked()?;
        self.staged_compose(|s| {
            // Every fallback does this on every kernel, so forcing one on a new kernel tests what old ones run.
            attach_detached(&mut all, s)?;
            match strategy {
                Strategy::AttachedFds => self.compose_attached_fds(&all, s),
                Strategy::Strings => self.compose_strings(&all, s),
                _ => self.compose_legacy(&all, s),
            }
        })
    }

    /// Run a fallback strategy with a fresh staging directory, emptied and removed afterwards (on error too).
    fn staged_compose(&self, compose: impl FnOnce(&mut Staging) -> Result<DetachedTree>) -> Result<DetachedTree> {
        let dir = self.staging_parent.clone().unwrap_or_else(staging::default_staging_dir);
        let mut staging = Staging::new(&dir)?;
        let tree = compose(&mut staging)?;
        staging.cleanup()?;
        Ok(tree)
    }

    fn resolve(&self) -> Result<Vec<Resolved>> {
        let roles = self.sources();
        // Each path made absolute once; their common directory is opened once, each looked up from there.
        let sources: Vec<(Role, &Source, Option<PathBuf>)> = roles
            .map(|(role, s)| match s {
                Source::Path(p) => (role, s, layers::lexical_absolute(p)),
                Source::Fd(_) | Source::Stack(_) => (role, s, None),
            })
            .collect();
        let texts: Vec<&Path> = sources.iter().filter_map(|(_, _, t)| t.as_deref()).collect();
        let anchor = layers::Anchor::new(&texts);
        sources
            .into_iter()
            .map(|(role, s, lexical)| match s {
                Source::Path(p) => layers::resolve_path(role, p, lexical, anchor.as_ref()),
                Source::Fd(fd) => {
                    let dup = fd.try_clone().map_err(|e| Error::io("compose overlay: dup", &e))?;
                    layers::resolve_fd(role, dup)
                }
                Source::Stack(stack) => {
                    let dup = stack.as_fd().try_clone_to_owned().map_err(|e| Error::io("compose overlay: dup", &e))?;
                    layers::resolve_fd(role, dup)
                }
            })
            .collect()
    }

    /// Which resolved directories this builder idmaps.
    fn idmapped(&self, r: &Resolved) -> bool {
        self.userns.is_some() && r.fd.is_none() && (r.role != Role::Upper && r.role != Role::Work || self.idmap_upper)
    }

    /// Apply options in the order given.
    fn set_options(&self, ov: &mut FsContext) -> Result<()> {
        for o in &self.options {
            match o.key_value() {
                (k, None) => ov.set_flag(k)?,
                (k, Some(v)) => ov.set_string(k, &v)?,
            }
        }
        Ok(())
    }

    fn finish(&self, ov: &mut FsContext) -> Result<DetachedTree> {
        self.set_options(ov)?;
        ov.create().map_err(|e| {
            // Duplicates were ruled out, so ELOOP is nesting the paths' text did not show (a symlink).
            if e.raw_os_error() == Some(Errno::LOOP.raw_os_error()) {
                e.with_kind(ErrorKind::InvalidOverlay(OverlayProblem::NestedLayers))
            } else {
                e
            }
        })?;
        ov.mount_with(MountAttrFlags::from_bits_retain(self.attrs.bits() as u32))
    }

    /// An idmapped clone of one directory by itself, for a layer whose path text does not lead to it inside its
    /// group's clone (a symlink out of the common parent, say).
    fn own_clone(r: &Resolved, ns: &UserNamespace) -> Result<DetachedTree> {
        let mut tree = DetachedTree::clone_at(r.open(OFlags::PATH)?, "", false)?;
        tree.idmap(ns)?;
        Ok(tree)
    }

    /// Where `rel` under the attached clone `at` is the directory `r`, or else a clone of `r` by itself attached
    /// under `staging` (read-only unless `writable`).
    fn staged(
        r: &Resolved,
        (at, rel): (&Path, &Path),
        staging: &mut Staging,
        ns: &UserNamespace,
        writable: bool,
    ) -> Result<PathBuf> {
        match open_beneath(at, rel, OFlags::PATH) {
            Ok(fd) if r.is(fd.as_fd()) => Ok(if rel == Path::new(".") { at.to_path_buf() } else { at.join(rel) }),
            _ => staging.attach_view(DetachedTree::clone_at(r.open(OFlags::PATH)?, "", false)?, ns, writable),
        }
    }

    /// The idmapped directories grouped for the attached fallbacks, each group with whether its clone must be
    /// writable. Layers and the upper/work pair never share a clone: overlay only reads lower layers, so their
    /// clones are read-only (a `rm -rf` through a clone a killed composer left behind fails with `EROFS`), and the
    /// writable clone for an idmapped upper is based at the common directory of upper and work alone.
    fn attached_groups(&self, all: &[Resolved]) -> Vec<(layers::Group, bool)> {
        let layers = layers::group_by_mount(all, |r| self.idmapped(r) && r.role.is_layer());
        let upper = layers::group_by_mount(all, |r| self.idmapped(r) && !r.role.is_layer());
        layers.into_iter().map(|g| (g, false)).chain(upper.into_iter().map(|g| (g, true))).collect()
    }

    /// Every directory in the kernel's order (lower, data-only, upper, work) with its role.
    fn sources(&self) -> impl Iterator<Item = (Role, &Source)> {
        self.lowers
            .iter()
            .map(|s| (Role::Lower, s))
            .chain(self.data.iter().map(|s| (Role::Data, s)))
            .chain(self.upper.iter().flat_map(|(u, w)| [(Role::Upper, u), (Role::Work, w)]))
    }

    /// [`Strategy::DetachedFds`] (Linux 6.15): nothing is attached anywhere, and nothing is looked up twice.
    ///
    /// The idmapped directories are opened (`O_PATH`, `openat2` beneath, never crossing a mount) inside ONE
    /// detached idmapped clone of their common directory, cloned with the mounts beneath it as fences; the fd
    /// opened in the clone is the layer's identity, so no `statx` is made per layer. The kernel refuses duplicate
    /// and nested layers itself (ELOOP); only then are the directories identified one by one, to say which.
    /// A directory the clone cannot reach (on another mount, or behind a symlink out of the common directory) is
    /// identified and cloned the careful way, with the mount it is on.
    fn compose_detached_fds(&self) -> Result<DetachedTree> {
        const PATH: OFlags = OFlags::PATH.union(OFlags::DIRECTORY).union(OFlags::CLOEXEC);
        let sources: Vec<(Role, &Source)> = self.sources().collect();
        // Absolute paths by their text alone; a `..` (whose text lies about nesting) is resolved instead.
        // Paths are handled as bytes here: on hundreds of layers, component-wise `Path` work is a measurable part
        // of the compose.
        let abs: Vec<Option<Cow<'_, Path>>> = sources
            .iter()
            .map(|(_, s)| match s {
                Source::Path(p) if plain_absolute(p) => Some(Cow::Borrowed(p.as_path())),
                Source::Path(p) => Some(Cow::Owned(lexical_or_given(p))),
                _ => None,
            })
            .collect();
        let idmapped =
            |i: usize| self.userns.is_some() && abs[i].is_some() && (sources[i].0.is_layer() || self.idmap_upper);
        let mut fds: Vec<Option<OwnedFd>> = (0..sources.len()).map(|_| None).collect();
        // Every clone stays alive (as do the fds inside it) until the overlay is created.
        let mut clones: Vec<DetachedTree> = Vec::new();
        if let Some(ns) = &self.userns {
            let members: Vec<usize> = (0..sources.len()).filter(|&i| idmapped(i)).collect();
            let mut strays = Vec::new();
            if !members.is_empty() {
                let bytes = |i: usize| abs[i].as_deref().expect("a path").as_os_str().as_bytes();
                let base_len = members
                    .iter()
                    .fold(bytes(members[0]).len(), |len, &i| common_dir_len(&bytes(members[0])[..len], bytes(i)));
                let base = Path::new(OsStr::from_bytes(&bytes(members[0])[..base_len.max(1)]));
                match DetachedTree::clone_fenced(base).and_then(|mut t| t.idmap(ns).map(|()| t)) {
                    Ok(tree) => {
                        // Every layer opened in the fenced clone is on its mount: one look at the filesystem.
                        if self.refuse_stacking {
                            layers::refuse_stacking_fs(tree.as_fd(), base)?;
                        }
                        for &i in &members {
                            let rel = &bytes(i)[base_len..];
                            let rel = match rel.iter().position(|&b| b != b'/') {
                                Some(start) => Path::new(OsStr::from_bytes(&rel[start..])),
                                None => Path::new("."),
                            };
                            match tree.open_beneath(rel, OFlags::PATH) {
                                Ok(fd) => fds[i] = Some(fd),
                                Err(_) => strays.push(i),
                            }
                        }
                        clones.push(tree);
                    }
                    Err(_) => strays = members,
                }
            }
            for i in strays {
                let Source::Path(p) = sources[i].1 else { unreachable!("only paths are idmapped") };
                let r = layers::resolve_path(sources[i].0, p, layers::lexical_absolute(p), None)?;
                let own = Self::own_clone(&r, ns)?;
                if self.refuse_stacking {
                    layers::refuse_stacking_fs(own.as_fd(), p)?;
                }
                fds[i] = Some(own.open_dir(".")?);
                clones.push(own);
            }
        }
        let root = self.prepares_upper();
        for (i, (role, source)) in sources.iter().enumerate() {
            if let (None, Source::Path(p)) = (&fds[i], source) {
                let at = abs[i].as_deref().unwrap_or(p);
                let fd =
                    rustix::fs::openat(CWD, at, PATH, Mode::empty()).map_err(|e| layers::open_error(*role, p, e))?;
                fds[i] = Some(fd);
            }
        }
        let fd_of = |i: usize| match (&fds[i], sources[i].1) {
            (Some(fd), _) => fd.as_fd(),
            (None, Source::Fd(fd)) => fd.as_fd(),
            (None, Source::Stack(stack)) => stack.as_fd(),
            (None, Source::Path(_)) => unreachable!("every path was opened"),
        };
        if self.refuse_stacking {
            for (i, (role, source)) in sources.iter().enumerate().filter(|(i, (r, _))| r.is_layer() && !idmapped(*i)) {
                let given = match source {
                    Source::Path(p) => p.clone(),
                    _ => PathBuf::from(format!("{role:?} fd")),
                };
                layers::refuse_stacking_fs(fd_of(i), &given)?;
            }
        }
        // Only when some overlay is live is anything identified (one statx per directory).
        let live = if self.skip_in_use { None } else { live::LiveDirs::read(self.the_features()) };
        if let Some(live) = live {
            for (i, (role, source)) in sources.iter().enumerate() {
                let (given, text) = match source {
                    Source::Path(p) => (p.clone(), abs[i].clone()),
                    Source::Fd(fd) => (PathBuf::from(format!("fd:{}", fd.as_raw_fd())), None),
                    Source::Stack(_) => continue,
                };
                let id =
                    layers::identity(fd_of(i)).map_err(|e| Error::os("compose overlay: stat", e).with_path(&given))?;
                let real = || match &text {
                    Some(t) => std::fs::canonicalize(t).ok(),
                    None => layers::real_path_of(fd_of(i)),
                };
                live.check(*role, &given, id, text.as_deref(), real)?;
            }
        }
        if let Some(root) = root {
            for (i, (role, source)) in sources.iter().enumerate().filter(|(_, (r, _))| !r.is_layer()) {
                if let Source::Path(p) = source {
                    upper::prepare_dir(*role, p, fd_of(i), root)?;
                }
            }
        }
        let mut ov = FsContext::open("overlay")?;
        for (i, (role, _)) in sources.iter().enumerate() {
            ov.set_fd(key(*role), fd_of(i))?;
        }
        let tree = self.finish(&mut ov).map_err(|e| self.explain_refusal(e))?;
        drop(clones);
        Ok(tree)
    }

    /// The kernel refused the overlay (ELOOP for a duplicate or nested directory, EINVAL for a work directory inside
    /// the upper, which the fast path leaves to the kernel to find): identify every directory to say what is wrong.
    fn explain_refusal(&self, e: Error) -> Error {
        let Ok(all) = self.resolve() else { return e };
        match layers::validate(&all) {
            Err(precise) if matches!(precise.kind(), ErrorKind::InvalidOverlay(_)) => precise,
            _ => nested_or(e, &all),
        }
    }

    /// [`Strategy::AttachedFds`] (Linux 6.13, 6.14): the idmapped clones are attached under `staging` and the layers
    /// opened `O_RDONLY` there.
    fn compose_attached_fds(&self, all: &[Resolved], staging: &mut Staging) -> Result<DetachedTree> {
        let mut fds: Vec<Option<OwnedFd>> = (0..all.len()).map(|_| None).collect();
        if let Some(ns) = &self.userns {
            for (group, writable) in self.attached_groups(all) {
                let at = staging.attach_idmapped(&group.base, ns, writable)?;
                for (i, rel) in &group.members {
                    let path = Self::staged(&all[*i], (&at, rel), staging, ns, writable)?;
                    fds[*i] = Some(open_beneath(&path, Path::new("."), OFlags::RDONLY)?);
                }
            }
        }
        self.create_with_fds(all, fds, OFlags::RDONLY)
    }

    /// Hand every directory to a new overlay context as an fd (`fds[i]` when opened already, else the caller's fd,
    /// else the path opened with `oflags`), then create the overlay.
    fn create_with_fds(&self, all: &[Resolved], fds: Vec<Option<OwnedFd>>, oflags: OFlags) -> Result<DetachedTree> {
        let mut ov = FsContext::open("overlay")?;
        for (r, fd) in all.iter().zip(&fds) {
            let opened;
            let fd = match (fd, &r.fd) {
                (Some(fd), _) => fd.as_fd(),
                // A caller's fd is used as it is.
                (None, Some(fd)) => fd.as_fd(),
                (None, None) => {
                    opened = r.open(oflags)?;
                    opened.as_fd()
                }
            };
            ov.set_fd(key(r.role), fd)?;
        }
        self.finish(&mut ov).map_err(|e| nested_or(e, all))
    }

    /// Paths of the directories for the string and legacy strategies: idmapped ones point into clones attached
    /// under `staging`; a caller's fd becomes `/proc/thread-self/fd/N`.
    fn paths(&self, all: &[Resolved], staging: &mut Staging) -> Result<Vec<PathBuf>> {
        let mut paths: Vec<PathBuf> = all
            .iter()
            .map(|r| match (&r.fd, &r.path) {
                (Some(fd), _) => crate::fd::proc_path(fd.as_fd()),
                (None, Some(p)) => p.clone(),
                (None, None) => r.given.clone(),
            })
            .collect();
        if let Some(ns) = &self.userns {
            for (group, writable) in self.attached_groups(all) {
                let at = staging.attach_idmapped(&group.base, ns, writable)?;
                for (i, rel) in group.members {
                    paths[i] = Self::staged(&all[i], (&at, &rel), staging, ns, writable)?;
                }
            }
        }
        Ok(paths)
    }

    /// [`Strategy::Strings`]: `lowerdir+` strings (Linux 6.7). A path over 255 bytes is passed as `.` after a `fchdir` to it, in a thread
    /// that has its own working directory.
    fn compose_strings(&self, all: &[Resolved], staging: &mut Staging) -> Result<DetachedTree> {
        let paths = self.paths(all, staging)?;
        let values: Vec<Cow<'_, Path>> = all
            .iter()
            .zip(&paths)
            .map(|(r, p)| match r.role {
                Role::Upper | Role::Work => options::upper_string(p),
                _ => Cow::Borrowed(p.as_path()),
            })
            .collect();
        let mut ov = FsContext::open("overlay")?;
        let set_all = |ov: &mut FsContext, cwd: Option<&staging::Cwd>| -> Result<()> {
            for ((r, p), value) in all.iter().zip(&paths).zip(&values) {
                if value.as_os_str().len() <= FSCONFIG_STRING_MAX {
                    ov.set_cstring(key(r.role), &cstring(value)?)?;
                } else {
                    let cwd = cwd.expect("long paths are set in a thread with its own cwd");
                    cwd.enter_path(p)?;
                    ov.set_string(key(r.role), ".")?;
                }
            }
            Ok(())
        };
        if values.iter().any(|p| p.as_os_str().len() > FSCONFIG_STRING_MAX) {
            with_own_cwd(|cwd| set_all(&mut ov, Some(cwd)))?;
        } else {
            set_all(&mut ov, None)?;
        }
        self.finish(&mut ov).map_err(|e| nested_or(e, all))
    }

    /// [`Strategy::Legacy`]: `mount(2)` with one option string, onto a staging directory; the result is cloned detached and the staging
    /// mount removed.
    fn compose_legacy(&self, all: &[Resolved], staging: &mut Staging) -> Result<DetachedTree> {
        let paths = self.paths(all, staging)?;
        let data = legacy_options(all, &paths, None, &self.options);
        let at = staging.next_path();
        rustix::fs::mkdir(&at, rustix::fs::Mode::RWXU)
            .map_err(|e| Error::os("compose overlay: make staging mount point", e).with_path(&at))?;
        let mount = |data: &[u8]| {
            rustix::mount::mount("overlay", &at, "overlay", rustix::mount::MountFlags::empty(), &*cstring_bytes(data)?)
                .map_err(|e| {
                    let err = Error::os("compose overlay: mount(2)", e).with_detail(format!(
                        "{} bytes of options; mount(2) gives its reason only in the kernel log (dmesg)",
                        data.len()
                    ));
                    nested_or(err, all)
                })
        };
        let mounted = if data.len() <= LEGACY_OPTIONS_MAX {
            mount(&data)
        } else {
            // Lower and data-only layers become relative to their common directory (where the thread `chdir`s);
            // upper and work stay absolute.
            let layer_paths = all.iter().zip(&paths).filter(|(r, _)| r.role.is_layer()).map(|(_, p)| p.as_path());
            let base = layers::common_ancestor(layer_paths);
            let relative = legacy_options(all, &paths, Some(&base), &self.options);
            if relative.len() > LEGACY_OPTIONS_MAX {
                let _ = rustix::fs::rmdir(&at);
                return Err(Error::new(ErrorKind::InvalidOverlay(OverlayProblem::OptionsTooLong), "compose overlay")
                    .with_detail(format!(
                        "{} bytes with absolute paths, {} relative to {}",
                        data.len(),
                        relative.len(),
                        base.display()
                    )));
            }
            with_own_cwd(|cwd| {
                cwd.enter_path(&base)?;
                mount(&relative)
            })
        };
        if let Err(e) = mounted {
            let _ = rustix::fs::rmdir(&at);
            return Err(e);
        }
        // Read-only while attached (a kill now leaves nothing a `rm -rf` could write through); the detached clone
        // gets the caller's flags.
        staging.adopt_read_only(&at)?;
        let mut tree = DetachedTree::clone_path(&at, false)?;
        tree.set_attrs(self.attrs, MountAttrs::RDONLY - self.attrs)?;
        Ok(tree)
    }
}

/// True for an absolute path with no `..` component: usable as it is (checked on bytes, without `Path` parsing).
pub(crate) fn plain_absolute(path: &Path) -> bool {
    let b = path.as_os_str().as_bytes();
    // Most paths hold no `/..` at all, which the (vectorised) substring search of `str` says fastest: on hundreds
    // of layers this check is per compose.
    let maybe_dotdot = match std::str::from_utf8(b) {
        Ok(s) => s.contains("/.."),
        Err(_) => b.windows(3).any(|w| w == b"/.."),
    };
    b.first() == Some(&b'/') && !(maybe_dotdot && b.split(|&c| c == b'/').any(|c| c == b".."))
}

/// The length of the longest prefix of `a` that is a whole directory of both `a` and `b` (absolute paths as
/// bytes): a byte-wise common prefix cut back to a `/` boundary. `0` when they share only the root.
fn common_dir_len(a: &[u8], b: &[u8]) -> usize {
    let n = a.iter().zip(b).take_while(|(x, y)| x == y).count();
    let whole = |p: &[u8]| p.len() == n || p[n] == b'/';
    if whole(a) && whole(b) {
        return n;
    }
    a[..n].iter().rposition(|&c| c == b'/').unwrap_or(0)
}

/// Duplicates were ruled out before mounting, so the kernel's ELOOP is nesting the paths' text did not show (a
/// symlink or a bind mount): reported with the caller's paths, never a staging path.
fn nested_or(e: Error, all: &[Resolved]) -> Error {
    if e.raw_os_error() != Some(Errno::LOOP.raw_os_error()) {
        return e;
    }
    const SHOWN: usize = 8;
    let mut given: Vec<String> = all.iter().take(SHOWN).map(|r| r.given.display().to_string()).collect();
    if all.len() > SHOWN {
        given.push(format!("and {} more", all.len() - SHOWN));
    }
    Error::os("compose overlay", Errno::LOOP)
        .with_kind(ErrorKind::InvalidOverlay(OverlayProblem::NestedLayers))
        .with_kernel_messages(e.kernel_messages().to_vec())
        .with_detail(format!(
            "the kernel found one directory inside another (through a symlink or a mount) among {}",
            given.join(", ")
        ))
}

/// Before Linux 6.15 overlay refuses a layer on a detached mount. A caller's fd that is the root of a detached mount
/// is attached under `staging` (the builder owns the fd, so the mount is its to move), and replaced by a readable fd
/// of the attached mount; one inside a detached mount but not its root cannot be attached and is refused.
fn attach_detached(all: &mut [Resolved], staging: &mut Staging) -> Result<()> {
    let mut table = None;
    for r in all.iter_mut() {
        let Some(fd) = &r.fd else { continue };
        let id = crate::mountinfo::mount_id_of(fd, Path::new(""))
            .map_err(|e| Error::os("compose overlay: mount id", e).with_path(&r.given))?;
        if table.is_none() {
            table = Some(crate::mountinfo::MountTable::current()?);
        }
        if table.as_ref().is_some_and(|t| t.by_id(id).is_some()) {
            continue;
        }
        let st = rustix::fs::statx(fd, "", rustix::fs::AtFlags::EMPTY_PATH, rustix::fs::StatxFlags::BASIC_STATS)
            .map_err(|e| Error::os("compose overlay: stat", e).with_path(&r.given))?;
        let root = rustix::fs::StatxAttributes::MOUNT_ROOT;
        if st.stx_attributes_mask.contains(root) && !st.stx_attributes.contains(root) {
            return Err(Error::new(ErrorKind::NotSupported, "compose overlay").with_path(&r.given).with_detail(
                "a directory inside a detached mount is a layer only from Linux 6.15: give the mount's root or an \
                 attached directory",
            ));
        }
        let dup = fd.try_clone().map_err(|e| Error::io("compose overlay: dup", &e))?;
        let at = staging.attach(DetachedTree::from_fd(dup))?;
        r.fd = Some(
            rustix::fs::open(&at, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, rustix::fs::Mode::empty())
                .map_err(|e| Error::os("compose overlay: open", e).with_path(&at))?,
        );
    }
    Ok(())
}

/// `path` made absolute by its text, or (with a `..` in it) by resolving it, or as given when it cannot be resolved.
pub(crate) fn lexical_or_given(path: &Path) -> PathBuf {
    layers::lexical_absolute(path).or_else(|| std::fs::canonicalize(path).ok()).unwrap_or_else(|| path.to_path_buf())
}

fn key(role: Role) -> &'static str {
    match role {
        Role::Lower => "lowerdir+",
        Role::Data => "datadir+",
        Role::Upper => "upperdir",
        Role::Work => "workdir",
    }
}

fn cstring(p: &Path) -> Result<std::ffi::CString> {
    std::ffi::CString::new(p.as_os_str().as_bytes())
        .map_err(|_| Error::new(ErrorKind::InvalidInput, "compose overlay").with_path(p).with_detail("NUL in path"))
}

fn cstring_bytes(s: &[u8]) -> Result<std::ffi::CString> {
    std::ffi::CString::new(s)
        .map_err(|_| Error::new(ErrorKind::InvalidInput, "compose overlay").with_detail("NUL in options"))
}

/// `lowerdir=l1:l2::d1,upperdir=u,workdir=w,opts...`, paths made relative to `base` when given.
fn legacy_options(all: &[Resolved], paths: &[PathBuf], base: Option<&Path>, options: &[OverlayOption]) -> Vec<u8> {
    let shown = |p: &Path, role: Role| -> PathBuf {
        match base.filter(|_| role.is_layer()).and_then(|b| p.strip_prefix(b).ok()) {
            Some(rel) if rel.as_os_str().is_empty() => PathBuf::from("."),
            Some(rel) => rel.to_path_buf(),
            None => p.to_path_buf(),
        }
    };
    let shown_role = |role: Role| {
        let shown = &shown;
        all.iter().zip(paths).filter(move |(r, _)| r.role == role).map(move |(r, p)| shown(p, r.role))
    };
    let (lowers, data): (Vec<PathBuf>, Vec<PathBuf>) =
        (shown_role(Role::Lower).collect(), shown_role(Role::Data).collect());
    let mut out = b"lowerdir=".to_vec();
    out.extend(options::join_layers(lowers.iter().map(|p| p.as_os_str()), data.iter().map(|p| p.as_os_str())));
    for (r, p) in all.iter().zip(paths) {
        let k = match r.role {
            Role::Upper => "upperdir",
            Role::Work => "workdir",
            _ => continue,
        };
        out.push(b',');
        out.extend_from_slice(options::path_option(k, shown(p, r.role).as_os_str()).as_bytes());
    }
    for o in options {
        out.push(b',');
        out.extend_from_slice(o.to_string().as_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_directory_of_paths_as_bytes() {
        assert_eq!(common_dir_len(b"/s/l1", b"/s/l2"), 2, "cut back to /s");
        assert_eq!(common_dir_len(b"/s/a/1", b"/s/a b/2"), 2);
        assert_eq!(common_dir_len(b"/s/l1", b"/s/l1"), 5);
        assert_eq!(common_dir_len(b"/s/l1", b"/s/l1/up"), 5, "a path inside another");
        assert_eq!(common_dir_len(b"/a", b"/b"), 0, "only the root");
        assert!(plain_absolute(Path::new("/s/x/..y")));
        assert!(!plain_absolute(Path::new("/s/../x")));
        assert!(!plain_absolute(Path::new("s/x")));
        for plain in ["/", "/a", "/a/..b", "/a/b..", "/a/.../b", "/a/b/..."] {
            assert!(plain_absolute(Path::new(plain)), "{plain}");
        }
        for dotdot in ["/..", "/a/..", "/a/../b", "/../a", "/a/b/../.."] {
            assert!(!plain_absolute(Path::new(dotdot)), "{dotdot}");
        }
        // Not UTF-8: the byte-wise search decides.
        assert!(plain_absolute(Path::new(OsStr::from_bytes(b"/\xff/..x"))));
        assert!(!plain_absolute(Path::new(OsStr::from_bytes(b"/\xff/../x"))));
    }
}
