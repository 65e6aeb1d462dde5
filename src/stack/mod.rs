//! [`ImageStack`]: an image's layers composed ONCE into a read-only overlay (idmapped for one user namespace), used
//! as the single lower layer of every container overlay of that image, so that composing a container costs the same
//! whatever the image's layer count; [`StackCache`] shares stacks between containers.
//!
//! # Which kernels, which strategies
//!
//! A stack is built through the same [`Strategy`] as a flat [`Overlay`] (the best the [`Features`] probe found, or
//! the one forced), and is kept the way that strategy can hand it on:
//!
//! | strategy | the stack is | a container overlay takes it as |
//! |---|---|---|
//! | `DetachedFds` (6.15) | a detached overlay mount, attached nowhere | its root fd (`lowerdir+`) |
//! | `AttachedFds` (6.13) | attached under a private 0700 staging directory while the stack lives | an `O_RDONLY` fd of its root |
//! | `Strings` (6.7), `Legacy` | attached the same way | a `/proc/thread-self/fd/N` path to that root |
//!
//! (Before 6.15 overlay clones a layer only from a mount in the caller's mount namespace, so a stack must stay
//! attached there.) The kernel answers for which of these it supports: the probe's `overlay_stack` says whether a
//! detached overlay is accepted as a layer; it is never guessed from the version.
//!
//! # Limits
//!
//! * Stacking depth: the kernel stacks filesystems at most two deep (`FILESYSTEM_MAX_STACK_DEPTH`). A container
//!   overlay on a stack is two deep when the layers are on a plain filesystem; layers that already live on an overlay
//!   (or another stacking filesystem) would make it three, which the kernel refuses. [`ImageStack::build`] detects
//!   this up front ([`OverlayProblem::StackTooDeep`]) and [`StackCache::compose`] then composes flat instead, and
//!   says so in its [`Composition`].
//! * Inode numbers: in a flat overlay whose layers and upper share one filesystem, a file's `st_ino` is its
//!   layer's inode number and `st_dev` the overlay's. Under a stack the container overlay's layers (the stack and the
//!   upper) are on two filesystems: with `xino` off a file's `st_dev` is that of the layer it comes from, not the
//!   overlay's; with `OverlayOption::Xino("on")` (or `"auto"`) on the container overlay every object gets the
//!   overlay's `st_dev` and an inode number unique across layers, as in a flat overlay. Hard links share an inode
//!   number either way.
//! * A stack is read-only; copy-up from it into the container's upper works as from any lower layer.
//!
//! # Example
//!
//! Two containers of one image share a stack; the second compose costs the same whatever the layer count:
//!
//! ```no_run
//! use layermount::{IdMap, StackCache, UserNamespace};
//!
//! let map: IdMap = "0:100000:65536".parse()?;
//! let ns = UserNamespace::cached(&map, &map)?;
//! let cache = StackCache::default();
//! let image = ["/var/lib/layers/3", "/var/lib/layers/2", "/var/lib/layers/1"];
//! let mut roots = Vec::new();
//! for ctr in ["a", "b"] {
//!     let (overlay, how) = cache.compose(&image, Some(&ns))?; // a miss, then a hit
//!     println!("{ctr}: {how:?}");
//!     let upper = format!("/var/lib/ctr/{ctr}/upper");
//!     let work = format!("/var/lib/ctr/{ctr}/work");
//!     roots.push(overlay.upper(&upper, &work).mount_at(format!("/run/ctr/{ctr}"))?);
//! }
//! # Ok::<(), layermount::Error>(())
//! ```
//!
//! [`Overlay`]: crate::Overlay
//! [`Features`]: crate::Features
//! [`OverlayProblem::StackTooDeep`]: crate::OverlayProblem::StackTooDeep

mod cache;

use std::fmt;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustix::fs::{Mode, OFlags};

pub use cache::{Composition, StackCache, StackLimits, StackStats};

use crate::error::{Error, ErrorKind, OverlayProblem, Result};
use crate::features::{Features, Strategy};
use crate::idmap::IdMap;
use crate::overlay::{Overlay, Staging, default_staging_dir, lexical_or_given, refuse_stacking_fs};
use crate::tree::{DetachedTree, MountAttrs};
use crate::userns::UserNamespace;

/// How a stack is built: the strategy (default: the best the kernel has), the features to trust, and where the
/// fallback strategies attach things (default: the staging directory `Overlay` uses).
///
/// ```
/// use layermount::{StackOptions, Strategy};
/// let opts = StackOptions { strategy: Some(Strategy::Strings), ..StackOptions::default() };
/// ```
#[derive(Debug, Clone, Default)]
pub struct StackOptions {
    /// Force a strategy (an error if the kernel lacks it).
    pub strategy: Option<Strategy>,
    /// Use these features instead of [`Features::get`].
    pub features: Option<Features>,
    /// The private staging directory where a stack that must stay attached (kernels before 6.15, or a forced older
    /// strategy) is attached, and where the fallback strategies stage their temporary mounts (default: as
    /// [`Overlay::staging_dir`](crate::Overlay::staging_dir)).
    pub staging_dir: Option<PathBuf>,
}

struct Inner {
    /// The stack's root: a detached overlay mount, or an `O_RDONLY` fd of the attached mount's root.
    root: OwnedFd,
    layers: Vec<PathBuf>,
    maps: Option<(IdMap, IdMap)>,
    strategy: Strategy,
    /// Where the stack is attached, for the strategies that cannot take a detached mount; detached on drop.
    attached: Option<(PathBuf, Staging)>,
}

/// A read-only overlay of an image's layers (top-most first), idmapped with one [`UserNamespace`], built once and
/// given to any number of container overlays as their single lower layer with
/// [`Overlay::lower_stack`](crate::Overlay::lower_stack).
///
/// Cloning is cheap (shared). What a container sees through an overlay on a stack is what it sees through a flat
/// overlay of the same layers: names, types, modes, owners, contents, xattrs, whiteouts and opaque directories,
/// copy-up, deletes, renames, hard links, `statfs` (see the module docs for inode numbers). The stack's mount goes
/// away when the last handle is dropped, but a container overlay made on it keeps its own reference in the kernel:
/// dropping a stack never disturbs a live container.
///
/// Needs what the chosen [`Strategy`] needs, and idmapped layers need a filesystem that supports idmapped mounts;
/// see the [module docs](self) for how each kernel holds a stack.
///
/// ```no_run
/// use layermount::{IdMap, ImageStack, Overlay, UserNamespace};
/// let map: IdMap = "0:100000:65536".parse()?;
/// let ns = UserNamespace::cached(&map, &map)?;
/// let stack = ImageStack::build(["/var/lib/layers/3", "/var/lib/layers/2", "/var/lib/layers/1"], Some(&ns))?;
/// for ctr in ["a", "b"] {
///     let guard = Overlay::new()
///         .lower_stack(&stack)
///         .upper(format!("/var/lib/ctr/{ctr}/upper"), format!("/var/lib/ctr/{ctr}/work"))
///         .idmap(ns.clone())
///         .mount_at(format!("/run/ctr/{ctr}/rootfs"))?;
///     guard.leak();
/// }
/// # Ok::<(), layermount::Error>(())
/// ```
#[derive(Clone)]
pub struct ImageStack {
    inner: Arc<Inner>,
}

impl fmt::Debug for ImageStack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ImageStack")
            .field("layers", &self.inner.layers.len())
            .field("strategy", &self.inner.strategy)
            .field("attached", &self.inner.attached.as_ref().map(|(p, _)| p))
            .finish()
    }
}

impl ImageStack {
    /// Build a stack of `layers` (top-most first), idmapped with `idmap` if given, with the best strategy the kernel
    /// supports.
    ///
    /// # Errors
    /// As [`Overlay::mount`](crate::Overlay::mount) for the same layers; [`OverlayProblem::StackTooDeep`] when a
    /// layer lives on an overlay (a container overlay on the stack would be one filesystem too deep);
    /// [`OverlayProblem::NoLowerLayer`] for no layer.
    ///
    /// # Kernel
    /// Any kernel with overlay, through the same strategies as [`Overlay`] (see the table in the
    /// [module docs](self)): kept detached from Linux 6.15 where the kernel takes a detached overlay as a layer (the
    /// probe's `overlay_stack`), attached under a private 0700 staging directory before.
    ///
    /// ```no_run
    /// let stack = layermount::ImageStack::build(["/var/lib/layers/2", "/var/lib/layers/1"], None)?;
    /// assert_eq!(stack.layer_count(), 2);
    /// # Ok::<(), layermount::Error>(())
    /// ```
    pub fn build<P: AsRef<Path>>(layers: impl IntoIterator<Item = P>, idmap: Option<&UserNamespace>) -> Result<Self> {
        Self::build_with(layers, idmap, &StackOptions::default())
    }

    /// [`build`](Self::build) with a chosen strategy, features or staging directory.
    ///
    /// # Errors
    /// As [`build`](Self::build); `NotSupported` for a strategy the kernel lacks.
    ///
    /// # Kernel
    /// As [`build`](Self::build); the strategy forced needs its own kernel (see [`Strategy`]).
    ///
    /// ```no_run
    /// use layermount::{ImageStack, StackOptions, Strategy};
    /// let opts = StackOptions { strategy: Some(Strategy::Legacy), ..StackOptions::default() };
    /// let stack = ImageStack::build_with(["/l/2", "/l/1"], None, &opts)?;
    /// assert!(stack.attached_at().is_some(), "older strategies keep a stack attached");
    /// # Ok::<(), layermount::Error>(())
    /// ```
    pub fn build_with<P: AsRef<Path>>(
        layers: impl IntoIterator<Item = P>,
        idmap: Option<&UserNamespace>,
        options: &StackOptions,
    ) -> Result<Self> {
        const OP: &str = "build image stack";
        let layers: Vec<PathBuf> = layers.into_iter().map(|p| lexical_or_given(p.as_ref())).collect();
        if layers.is_empty() {
            return Err(Error::new(ErrorKind::InvalidOverlay(OverlayProblem::NoLowerLayer), OP));
        }
        let mut overlay = Overlay::new();
        if let Some(f) = &options.features {
            overlay = overlay.features(f.clone());
        }
        if let Some(s) = options.strategy {
            overlay = overlay.strategy(s);
        }
        let strategy = overlay.chosen_strategy()?;
        let features = options.features.clone().unwrap_or_else(|| Features::get().clone());
        // Detached only where the kernel takes a detached overlay as a layer (the probe says, not the version).
        let detached = strategy == Strategy::DetachedFds && features.overlay_stack;
        let staging_parent = options.staging_dir.clone().unwrap_or_else(default_staging_dir);
        let tree = if layers.len() == 1 {
            // One layer needs no overlay: its idmapped clone is the stack.
            let fd = crate::fd::open_dir_path(&layers[0]).map_err(|e| Error::os(OP, e).with_path(&layers[0]))?;
            let mut tree = DetachedTree::clone_at(&fd, "", false)?;
            if let Some(ns) = idmap {
                tree.idmap(ns)?;
            }
            tree.set_attrs(MountAttrs::RDONLY, MountAttrs::empty())?;
            refuse_stacking_fs(tree.as_fd(), &layers[0])?;
            tree
        } else {
            overlay =
                overlay.lowers(&layers).attrs(MountAttrs::RDONLY).staging_dir(&staging_parent).refuse_stacked_layers();
            if let Some(ns) = idmap {
                overlay = overlay.idmap(ns.clone());
            }
            overlay.mount()?
        };
        let (root, attached) = if detached {
            (tree.into_fd(), None)
        } else {
            let mut staging = Staging::new(&staging_parent)?;
            let at = staging.attach(tree)?;
            let root = rustix::fs::open(&at, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
                .map_err(|e| Error::os(OP, e).with_path(&at))?;
            (root, Some((at, staging)))
        };
        let maps = idmap.map(|ns| (ns.uid_map().clone(), ns.gid_map().clone()));
        Ok(Self { inner: Arc::new(Inner { root, layers, maps, strategy, attached }) })
    }

    /// The layers, top-most first, as absolute paths.
    ///
    /// ```no_run
    /// let stack = layermount::ImageStack::build(["/l/2", "/l/1"], None)?;
    /// assert_eq!(stack.layers()[0], std::path::Path::new("/l/2"));
    /// # Ok::<(), layermount::Error>(())
    /// ```
    pub fn layers(&self) -> &[PathBuf] {
        &self.inner.layers
    }

    /// How many layers the stack holds.
    ///
    /// ```no_run
    /// let stack = layermount::ImageStack::build(["/l/2", "/l/1"], None)?;
    /// assert_eq!(stack.layer_count(), 2);
    /// # Ok::<(), layermount::Error>(())
    /// ```
    pub fn layer_count(&self) -> usize {
        self.inner.layers.len()
    }

    /// The uid and gid maps the layers are idmapped with (`None`: not idmapped).
    ///
    /// ```no_run
    /// let stack = layermount::ImageStack::build(["/l/2", "/l/1"], None)?;
    /// assert!(stack.idmap().is_none());
    /// # Ok::<(), layermount::Error>(())
    /// ```
    pub fn idmap(&self) -> Option<(&IdMap, &IdMap)> {
        self.inner.maps.as_ref().map(|(u, g)| (u, g))
    }

    /// The strategy the stack was built with (and that decides how containers take it).
    ///
    /// ```no_run
    /// let stack = layermount::ImageStack::build(["/l/2", "/l/1"], None)?;
    /// println!("{}", stack.strategy());
    /// # Ok::<(), layermount::Error>(())
    /// ```
    pub fn strategy(&self) -> Strategy {
        self.inner.strategy
    }

    /// Where the stack is attached (a private directory), on strategies older than `DetachedFds`; `None` when it
    /// is a detached mount.
    ///
    /// ```no_run
    /// let stack = layermount::ImageStack::build(["/l/2", "/l/1"], None)?;
    /// if let Some(at) = stack.attached_at() { println!("attached at {}", at.display()) }
    /// # Ok::<(), layermount::Error>(())
    /// ```
    pub fn attached_at(&self) -> Option<&Path> {
        self.inner.attached.as_ref().map(|(p, _)| p.as_path())
    }

    /// How many handles share this stack (the cache's own included): more than the cache's one means in use.
    pub(crate) fn handles(&self) -> usize {
        Arc::strong_count(&self.inner)
    }
}

impl AsFd for ImageStack {
    /// The stack's root directory (a detached mount's root, or an `O_RDONLY` fd of the attached stack's root).
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.inner.root.as_fd()
    }
}
