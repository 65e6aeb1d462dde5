//! # layermount
//!
//! Turn container image layers into mounted root filesystems, safely, over the new Linux mount API.
//!
//! This crate is built bottom-up from small safe types over real kernel interfaces:
//!
//! * [`IdMap`]: validated uid/gid maps (containerd's `c:h:s` text, OCI triples);
//! * [`UserNamespace`]: an fd to a user namespace carrying a map, cached per mapping;
//! * [`DetachedTree`]: an owned detached mount: attributes, idmap, `O_PATH` subdirectories, `attach`;
//! * [`MountGuard`]: an attached mount that is detach-unmounted when dropped;
//! * [`remove_all`]: recursive removal that never crosses a mount or follows a symlink;
//! * [`Features`]: a cached probe of the running kernel, with forced fallback levels for testing;
//! * [`MountTable`]: `mountinfo` parsing, the mount a path is on, and a mount-leak check;
//! * [`FsContext`]: `fsopen`/`fsconfig`/`fsmount` with the kernel's own error messages;
//! * [`Fixups`] ([`rootfs`]): `/etc/mtab` and the mount targets of a container root, changed only inside the root.
//!
//! Linux only. Most operations need `CAP_SYS_ADMIN`.
//!
//! ```no_run
//! use layermount::{DetachedTree, IdMap, UserNamespace};
//!
//! // Show /srv/layer to a user-namespaced container whose root is host uid 100000.
//! let map: IdMap = "0:100000:65536".parse()?;
//! let ns = UserNamespace::cached(&map, &map)?;
//! let mut tree = DetachedTree::clone_path("/srv/layer", false)?;
//! tree.idmap(&ns)?;
//! let guard = tree.attach("/run/ctr/rootfs")?;
//! // ... run the container ...
//! guard.unmount()?;
//! # Ok::<(), layermount::Error>(())
//! ```
#![cfg(target_os = "linux")]
#![deny(unsafe_code)]
#![deny(missing_docs, missing_debug_implementations, rustdoc::broken_intra_doc_links)]
#![warn(clippy::all, clippy::missing_errors_doc, clippy::missing_panics_doc)]

mod error;
mod fd;
mod features;
mod fscontext;
mod guard;
mod idmap;
pub mod layer;
mod mountinfo;
#[cfg(feature = "oci-spec")]
mod oci;
mod options;
pub mod overlay;
mod remove;
pub mod rootfs;
mod spec;
pub mod stack;
mod sys;
mod tree;
mod userns;

/// The README's example, compiled as a doctest so it cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

/// The integration tests' helpers (private mount namespace, leak check), shared with unit tests.
#[cfg(test)]
extern crate self as layermount;
#[cfg(test)]
#[path = "../tests/common/mod.rs"]
mod test_common;

pub use error::{Error, ErrorKind, IdMapProblem, LayerProblem, OverlayProblem, Result};
pub use features::{Features, STRATEGY_ENV, Strategy, idmap_supported};
pub use fscontext::FsContext;
pub use guard::{MountGuard, MountRecord};
pub use idmap::{IdMap, IdRange, MAX_EXTENTS};
pub use layer::{
    AppliedLayer, ApplyOptions, ApplyStats, AuditFinding, AuditProblem, Compression, DeviceMode, Progress,
    RecoverReport, SyncMode, WhiteoutMode, apply, apply_into, audit, is_committed, marker_path, recover, recover_dirs,
    verify,
};
pub use mountinfo::{MountChanges, MountInfo, MountTable};
pub use overlay::{
    DEFAULT_STAGING_DIR, MAX_LAYERS, Overlay, OverlayOption, STAGING_DIR_ENV, StaleCleanup, cleanup_stale,
};
pub use remove::{RemoveStats, remove_all};
pub use rootfs::{Fixup, FixupReport, Fixups};
pub use spec::MountSpec;
pub use stack::{Composition, ImageStack, StackCache, StackLimits, StackOptions, StackStats};
pub use tree::{Atime, DetachedTree, MountAttrs, Propagation};
pub use userns::{CacheStats, DEFAULT_CACHE_CAPACITY, UserNamespace};
