//! # layermount-snapshotter
//!
//! A containerd snapshotter (a proxy plugin speaking containerd's snapshots API over a unix socket) built on
//! layermount. Snapshots live in `DIR/snapshots/<id>/{fs,work}`; their metadata in one redb database,
//! `DIR/metadata.redb`.
//!
//! * Without mapping labels, mounts are what containerd's own overlayfs snapshotter returns, so containerd's
//!   applier unpacks a layer straight into the `upperdir` of one `overlay` mount.
//! * With `containerd.io/snapshot/uidmapping`/`gidmapping` labels (`ctr run --remap-labels`), the root is composed
//!   here: lower layers idmapped (no temporary mounts on kernels that take layers as fds), the upper owned by the
//!   mapped root, rootfs fixups applied into the upper, and a `bind` of the composed root is returned.
//! * Remove refuses (`FailedPrecondition`) while a composed root is still mounted elsewhere (a container's
//!   `rootfs`), and deletes with layermount's `remove_all`, which never crosses a mount.
//! * A crash at any step is repaired on the next start: orphan directories removed (their composed roots
//!   detached first), records of vanished roots forgotten, committed snapshots untouched.
//!
//! ```no_run
//! use layermount_snapshotter::{Options, Snapshotter};
//! let s = Snapshotter::open("/var/lib/layermount-snapshotter", Options::default())?;
//! for info in s.list(&["kind==committed".to_string()])? {
//!     println!("{}", info.name);
//! }
//! # Ok::<(), layermount_snapshotter::Error>(())
//! ```
#![cfg(target_os = "linux")]
#![deny(unsafe_code)]
#![deny(missing_docs, missing_debug_implementations)]

mod error;
mod filter;
mod fixups;
mod reconcile;
mod roots;
mod server;
mod snapshotter;
mod store;

pub use error::{Error, Result};
pub use server::serve;
pub use snapshotter::{
    CRASH_ENV, InfoStream, LABEL_FIXUPS, LABEL_FIXUPS_INHERITED, LABEL_GIDMAPPING, LABEL_UIDMAPPING, Options, Service,
    Snapshotter,
};
pub use store::Kind;
