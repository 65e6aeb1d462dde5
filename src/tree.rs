//! [`DetachedTree`]: an owned mount that is not attached anywhere, its attributes, its idmap, and `attach`.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

use bitflags::bitflags;
use rustix::fs::{CWD, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;
use rustix::mount::{MoveMountFlags, OpenTreeFlags};

use crate::error::{Context, Error, ErrorKind, Result};
use crate::guard::MountGuard;
use crate::mountinfo::{MountTable, mount_id_of, mount_identity};
use crate::sys;
use crate::userns::UserNamespace;

bitflags! {
    /// Per-mount flags (`MOUNT_ATTR_*` of `mount_setattr(2)`), set or cleared with [`DetachedTree::set_attrs`].
    /// Access-time behaviour is [`Atime`]; propagation is [`Propagation`].
    ///
    /// ```
    /// use layermount::MountAttrs;
    /// let hardened = MountAttrs::NOSUID | MountAttrs::NODEV | MountAttrs::NOEXEC;
    /// assert!(hardened.contains(MountAttrs::NODEV));
    /// ```
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct MountAttrs: u64 {
        /// `MOUNT_ATTR_RDONLY`: read-only.
        const RDONLY = 0x0000_0001;
        /// `MOUNT_ATTR_NOSUID`: ignore set-user/group-id bits and file capabilities.
        const NOSUID = 0x0000_0002;
        /// `MOUNT_ATTR_NODEV`: no access to device files.
        const NODEV = 0x0000_0004;
        /// `MOUNT_ATTR_NOEXEC`: no execution.
        const NOEXEC = 0x0000_0008;
        /// `MOUNT_ATTR_NODIRATIME`: do not update directory access times.
        const NODIRATIME = 0x0000_0080;
        /// `MOUNT_ATTR_NOSYMFOLLOW`: do not follow symlinks during path resolution (Linux 5.14).
        const NOSYMFOLLOW = 0x0020_0000;
        /// Bits this crate does not name are kept as given.
        const _ = !0;
    }
}

/// `MOUNT_ATTR_IDMAP`.
const ATTR_IDMAP: u64 = 0x0010_0000;
/// `MOUNT_ATTR__ATIME`: the mask of the access-time mode.
const ATTR_ATIME_MASK: u64 = 0x0000_0070;

/// Access-time mode of a mount (exactly one applies).
///
/// ```
/// assert_ne!(layermount::Atime::Relative, layermount::Atime::None);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Atime {
    /// `relatime` (the kernel default).
    Relative,
    /// `noatime`.
    None,
    /// `strictatime`.
    Strict,
}

impl Atime {
    fn bits(self) -> u64 {
        match self {
            Atime::Relative => 0,
            Atime::None => 0x10,
            Atime::Strict => 0x20,
        }
    }
}

/// Mount propagation type (`mount_namespaces(7)`).
///
/// ```
/// let p = layermount::Propagation::Private;
/// assert_eq!(p, layermount::Propagation::Private);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Propagation {
    /// `MS_PRIVATE`: no events in or out.
    Private,
    /// `MS_SHARED`.
    Shared,
    /// `MS_SLAVE`: receives events from its master, sends none.
    Slave,
    /// `MS_UNBINDABLE`: private and cannot be bind-mounted.
    Unbindable,
}

impl Propagation {
    fn bits(self) -> u64 {
        // MS_PRIVATE, MS_SHARED, MS_SLAVE, MS_UNBINDABLE from <linux/mount.h>.
        match self {
            Propagation::Private => 1 << 18,
            Propagation::Shared => 1 << 20,
            Propagation::Slave => 1 << 19,
            Propagation::Unbindable => 1 << 17,
        }
    }
}

/// Where a tree's fd came from; decides how a refused idmap is explained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Origin {
    /// `open_tree(OPEN_TREE_CLONE)` by us.
    Clone,
    /// `fsmount` by us.
    FsMount,
    /// Handed to us by the caller.
    Foreign,
}

/// An owned detached mount: a clone of a directory tree (`open_tree(OPEN_TREE_CLONE)`) or a new filesystem
/// (`fsmount`). It is visible nowhere until [`attach`](DetachedTree::attach)ed, and it vanishes when dropped.
///
/// Only a detached tree can be idmapped, and only once; `attach` consumes the tree, so an attached mount cannot
/// reach [`idmap`](DetachedTree::idmap) through this type. A foreign fd adopted with
/// [`from_fd`](DetachedTree::from_fd) is checked at run time instead.
///
/// # Kernel
/// Linux 5.2 (`open_tree`, `fsmount`, `move_mount`); attributes and idmaps need `mount_setattr` (5.12) and a
/// filesystem that can be idmapped (ext4 and xfs from 5.12, btrfs 5.15, tmpfs 6.3, overlay itself 5.19 —
/// [`idmap_supported`](crate::idmap_supported) asks the kernel).
///
/// ```no_run
/// use layermount::{DetachedTree, IdMap, MountAttrs, UserNamespace};
/// let map: IdMap = "0:100000:65536".parse()?;
/// let ns = UserNamespace::cached(&map, &map)?;
/// let mut store = DetachedTree::clone_path("/var/lib/layers", false)?;
/// store.idmap(&ns)?;
/// store.set_attrs(MountAttrs::RDONLY | MountAttrs::NODEV, MountAttrs::empty())?;
/// let layer = store.open_dir("sha256-abc")?; // an O_PATH fd, ready for overlay's lowerdir+
/// # Ok::<(), layermount::Error>(())
/// ```
#[derive(Debug)]
pub struct DetachedTree {
    fd: OwnedFd,
    origin: Origin,
    recursive: bool,
    idmapped: bool,
    /// For an overlay with an upper: its upper and work recorded as in use while the tree is detached (attached, the
    /// mount table shows them).
    held: Option<crate::overlay::Held>,
}

impl DetachedTree {
    pub(crate) fn from_owned(fd: OwnedFd, origin: Origin, recursive: bool) -> Self {
        Self { fd, origin, recursive, idmapped: false, held: None }
    }

    /// Record the directories `held` as in use for as long as this tree stays detached.
    pub(crate) fn hold(&mut self, held: crate::overlay::Held) {
        self.held = Some(held);
    }

    /// Clone the mount tree at `path` (`open_tree(AT_FDCWD, path, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC)`), with
    /// every mount beneath it when `recursive` (`AT_RECURSIVE`). A symlink as the last component is not followed.
    ///
    /// # References
    /// - [`open_tree(2)`](https://man7.org/linux/man-pages/man2/open_tree.2.html)
    ///
    /// # Errors
    /// [`ErrorKind::PermissionDenied`] without `CAP_SYS_ADMIN`; [`ErrorKind::Os`] when `path` does not resolve
    /// (`ENOENT`) or cannot be cloned (`EINVAL` for a mount the caller's namespace does not own);
    /// [`ErrorKind::NotSupported`] before Linux 5.2.
    ///
    /// # Kernel
    /// Linux 5.2.
    ///
    /// ```no_run
    /// let tree = layermount::DetachedTree::clone_path("/srv/data", true)?;
    /// # Ok::<(), layermount::Error>(())
    /// ```
    #[doc(alias = "open_tree")]
    pub fn clone_path(path: impl AsRef<Path>, recursive: bool) -> Result<Self> {
        Self::clone_at(CWD, path, recursive)
    }

    /// Like [`clone_path`](Self::clone_path), relative to a directory fd (an empty path clones `dirfd` itself).
    ///
    /// # Errors
    /// As [`clone_path`](Self::clone_path).
    ///
    /// # Kernel
    /// Linux 5.2.
    ///
    /// ```no_run
    /// let dir = std::fs::File::open("/srv")?;
    /// let tree = layermount::DetachedTree::clone_at(&dir, "data", false)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn clone_at(dirfd: impl AsFd, path: impl AsRef<Path>, recursive: bool) -> Result<Self> {
        let path = path.as_ref();
        let mut flags = OpenTreeFlags::OPEN_TREE_CLONE | OpenTreeFlags::OPEN_TREE_CLOEXEC;
        flags |= OpenTreeFlags::AT_SYMLINK_NOFOLLOW;
        if recursive {
            flags |= OpenTreeFlags::AT_RECURSIVE;
        }
        if path.as_os_str().is_empty() {
            flags |= OpenTreeFlags::AT_EMPTY_PATH;
        }
        let fd = rustix::mount::open_tree(dirfd, path, flags).op_path("open_tree clone", path)?;
        Ok(Self::from_owned(fd, Origin::Clone, recursive))
    }

    /// Clone `path` with every mount beneath it, but keep attribute changes (the idmap included) to the top mount.
    /// The submounts are there only as fences: a lookup with `RESOLVE_NO_XDEV` that would cross into one fails
    /// (see [`open_beneath`](Self::open_beneath)) instead of silently showing the directory underneath.
    pub(crate) fn clone_fenced(path: &Path) -> Result<Self> {
        let mut tree = Self::clone_at(CWD, path, true)?;
        tree.recursive = false;
        Ok(tree)
    }

    /// Adopt a mount fd the caller made (e.g. with its own `open_tree` or `fsmount`). Whether it is really
    /// detached is checked when it is idmapped or attached.
    ///
    /// ```no_run
    /// use std::os::fd::OwnedFd;
    /// // An fd from the caller's own open_tree(OPEN_TREE_CLONE) or fsmount; a plain open() is shown for brevity.
    /// let fd: OwnedFd = std::fs::File::open("/srv/clone")?.into();
    /// let tree = layermount::DetachedTree::from_fd(fd);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn from_fd(fd: OwnedFd) -> Self {
        Self::from_owned(fd, Origin::Foreign, false)
    }

    fn setattr(&self, attr: &sys::MountAttr) -> rustix::io::Result<()> {
        self.setattr_with(attr, self.recursive)
    }

    fn setattr_with(&self, attr: &sys::MountAttr, recursive: bool) -> rustix::io::Result<()> {
        let mut flags = sys::AT_EMPTY_PATH;
        if recursive {
            flags |= sys::AT_RECURSIVE;
        }
        sys::mount_setattr(self.fd.as_fd(), c"", flags, attr)
    }

    /// Set then clear per-mount flags (`mount_setattr(2)`, recursively if the tree was cloned recursively).
    /// A flag in both sets is cleared.
    ///
    /// # Errors
    /// [`ErrorKind::Os`] when the kernel refuses the change (`EPERM` clearing a flag that was locked, for instance);
    /// [`ErrorKind::NotSupported`] before Linux 5.12.
    ///
    /// # Kernel
    /// `mount_setattr` (Linux 5.12).
    ///
    /// ```no_run
    /// use layermount::{DetachedTree, MountAttrs};
    /// let mut t = DetachedTree::clone_path("/srv/data", false)?;
    /// t.set_attrs(MountAttrs::RDONLY | MountAttrs::NOSUID, MountAttrs::NOEXEC)?;
    /// # Ok::<(), layermount::Error>(())
    /// ```
    #[doc(alias = "mount_setattr")]
    pub fn set_attrs(&mut self, set: MountAttrs, clear: MountAttrs) -> Result<()> {
        let attr =
            sys::MountAttr { attr_set: set.bits() & !clear.bits(), attr_clr: clear.bits(), ..Default::default() };
        self.setattr(&attr).op("set mount attributes")
    }

    /// Set the access-time mode.
    ///
    /// # Errors
    /// As [`set_attrs`](Self::set_attrs).
    ///
    /// # Kernel
    /// `mount_setattr` (Linux 5.12).
    ///
    /// ```no_run
    /// let mut t = layermount::DetachedTree::clone_path("/srv/data", false)?;
    /// t.set_atime(layermount::Atime::None)?;
    /// # Ok::<(), layermount::Error>(())
    /// ```
    pub fn set_atime(&mut self, atime: Atime) -> Result<()> {
        let attr = sys::MountAttr { attr_set: atime.bits(), attr_clr: ATTR_ATIME_MASK, ..Default::default() };
        self.setattr(&attr).op("set atime")
    }

    /// Set the propagation type.
    ///
    /// # Errors
    /// As [`set_attrs`](Self::set_attrs).
    ///
    /// # Kernel
    /// `mount_setattr` (Linux 5.12).
    ///
    /// ```no_run
    /// let mut t = layermount::DetachedTree::clone_path("/srv/data", false)?;
    /// t.set_propagation(layermount::Propagation::Private)?;
    /// # Ok::<(), layermount::Error>(())
    /// ```
    pub fn set_propagation(&mut self, propagation: Propagation) -> Result<()> {
        let attr = sys::MountAttr { propagation: propagation.bits(), ..Default::default() };
        self.setattr(&attr).op("set propagation")
    }

    /// Idmap the tree with the maps of `ns` (`MOUNT_ATTR_IDMAP`): a file owned by on-disk uid `k` appears owned
    /// by the host uid that `ns` maps container uid `k` to, and a file created by host uid `h` is stored with the
    /// container uid `ns` maps to `h`.
    ///
    /// Refused with [`ErrorKind::AlreadyIdmapped`] when the tree already has an idmap, and with
    /// [`ErrorKind::AlreadyAttached`] when it is (or was) attached to a mount table. Needs Linux 5.12 and a
    /// filesystem that supports idmapped mounts ([`ErrorKind::NotSupported`] otherwise).
    ///
    /// # Errors
    /// [`ErrorKind::AlreadyIdmapped`], [`ErrorKind::AlreadyAttached`], [`ErrorKind::NotSupported`] as above;
    /// [`ErrorKind::PermissionDenied`] without `CAP_SYS_ADMIN` in the initial user namespace.
    ///
    /// # Kernel
    /// `mount_setattr` with `MOUNT_ATTR_IDMAP` (Linux 5.12) on a filesystem that supports it (ext4, xfs: 5.12; btrfs:
    /// 5.15; tmpfs: 6.3; measured on Debian's 6.1: ext4 yes, tmpfs no).
    ///
    /// ```no_run
    /// use layermount::{DetachedTree, UserNamespace};
    /// let map = "0:100000:65536".parse()?;
    /// let mut t = DetachedTree::clone_path("/srv/layers", false)?;
    /// t.idmap(&UserNamespace::cached(&map, &map)?)?;
    /// # Ok::<(), layermount::Error>(())
    /// ```
    #[doc(alias = "MOUNT_ATTR_IDMAP")]
    pub fn idmap(&mut self, ns: &UserNamespace) -> Result<()> {
        self.idmap_with(ns, self.recursive)
    }

    /// [`idmap`](Self::idmap), choosing whether the mounts beneath a recursive clone are idmapped too (the
    /// runtime-spec's `ridmap`) or only its top mount (`idmap`).
    pub(crate) fn idmap_with(&mut self, ns: &UserNamespace, recursive: bool) -> Result<()> {
        const OP: &str = "idmap tree";
        if self.idmapped {
            return Err(Error::new(ErrorKind::AlreadyIdmapped, OP));
        }
        let fd = std::os::fd::AsRawFd::as_raw_fd(&ns.as_fd());
        let attr = sys::MountAttr { attr_set: ATTR_IDMAP, userns_fd: fd as u64, ..Default::default() };
        match self.setattr_with(&attr, recursive) {
            Ok(()) => {
                self.idmapped = true;
                Ok(())
            }
            // EINVAL means: not a detached mount (attached now, or attached once and unmounted since), or a
            // filesystem without idmap support. Tell them apart only now, off the fast path.
            Err(Errno::INVAL) => Err(self.explain_idmap_einval()),
            // EPERM on a mount we did not idmap: it came idmapped (or the caller lacks CAP_SYS_ADMIN).
            Err(Errno::PERM) if self.origin == Origin::Foreign => {
                Err(Error::new(ErrorKind::AlreadyIdmapped, OP).with_detail("or permission denied"))
            }
            Err(e) => Err(Error::os(OP, e)),
        }
    }

    fn explain_idmap_einval(&self) -> Error {
        const OP: &str = "idmap tree";
        let attached = Error::new(ErrorKind::AlreadyAttached, OP);
        if self.is_attached().unwrap_or(false) {
            return attached;
        }
        // Not in our mount table: detached (then the filesystem must lack idmap support), unmounted after being
        // attached, or attached in another namespace. `mount_setattr` refuses the last two with EINVAL whatever it
        // is asked, and a detached mount accepts any change, so ask for one that changes nothing: `nosuid` as it is
        // now. (This works on every kernel; cloning the tree to find out works only from Linux 6.15.)
        let nosuid = sys::MountAttr { attr_set: MountAttrs::NOSUID.bits(), ..Default::default() };
        let suid = sys::MountAttr { attr_clr: MountAttrs::NOSUID.bits(), ..Default::default() };
        let nop = match rustix::fs::fstatvfs(&self.fd) {
            Ok(st) if st.f_flag.contains(rustix::fs::StatVfsMountFlags::NOSUID) => nosuid,
            Ok(_) => suid,
            Err(_) => return attached,
        };
        match self.setattr(&nop) {
            Ok(()) => {
                Error::new(ErrorKind::NotSupported, OP).with_detail("the filesystem does not support idmapped mounts")
            }
            Err(_) => attached.with_detail("unmounted since, or attached in another mount namespace"),
        }
    }

    /// Give up the tree as its fd (the mount root, `O_PATH`); the mount lives as long as the fd. For an overlay
    /// with an upper, the in-use check no longer knows of it from then on (until it is attached).
    ///
    /// ```no_run
    /// let fd = layermount::DetachedTree::clone_path("/srv/layer", false)?.into_fd();
    /// # Ok::<(), layermount::Error>(())
    /// ```
    pub fn into_fd(self) -> OwnedFd {
        self.fd
    }

    /// True once [`idmap`](Self::idmap) succeeded on this tree.
    ///
    /// ```no_run
    /// use layermount::{DetachedTree, UserNamespace};
    /// let map = "0:100000:65536".parse()?;
    /// let mut t = DetachedTree::clone_path("/srv/layers", false)?;
    /// assert!(!t.is_idmapped());
    /// t.idmap(&UserNamespace::cached(&map, &map)?)?;
    /// assert!(t.is_idmapped());
    /// # Ok::<(), layermount::Error>(())
    /// ```
    pub fn is_idmapped(&self) -> bool {
        self.idmapped
    }

    /// Whether this mount is in the calling thread's mount table (a detached tree never is).
    fn is_attached(&self) -> Result<bool> {
        let id = mount_id_of(&self.fd, Path::new("")).op("find mount id")?;
        Ok(MountTable::current()?.by_id(id).is_some())
    }

    /// `openat2` of the directory `rel` beneath the tree's root, never crossing a mount, leaving the tree (`..`, an
    /// absolute symlink) or following a magic link: the raw errno (`EXDEV` for a crossing), for callers that fall
    /// back on it.
    pub(crate) fn open_beneath(&self, rel: &Path, oflags: OFlags) -> rustix::io::Result<OwnedFd> {
        let resolve = ResolveFlags::BENEATH | ResolveFlags::NO_XDEV | ResolveFlags::NO_MAGICLINKS;
        rustix::fs::openat2(&self.fd, rel, oflags | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty(), resolve)
    }

    fn open_inside(&self, path: &Path, oflags: OFlags) -> Result<OwnedFd> {
        if path.is_absolute() {
            return Err(Error::new(ErrorKind::InvalidInput, "open directory in tree")
                .with_path(path)
                .with_detail("path must be relative to the tree"));
        }
        let target = if path.as_os_str().is_empty() { Path::new(".") } else { path };
        self.open_beneath(target, oflags).map_err(|e| {
            let err = Error::os("open directory in tree", e).with_path(path);
            match e {
                Errno::NOTDIR => err.with_detail("not a directory"),
                Errno::XDEV => err.with_detail("path leaves the tree or crosses a mount"),
                _ => err,
            }
        })
    }

    /// Open the directory `path` (relative, resolved beneath the tree's root, never crossing a mount or a magic
    /// link) as an `O_PATH` fd: what overlay's `lowerdir+` takes from Linux 6.15.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidInput`] for an absolute `path`; [`ErrorKind::Os`] when it does not resolve to a directory
    /// beneath the root (`ENOTDIR`, `ENOENT`) or would leave the tree or cross a mount (`EXDEV`).
    ///
    /// # Kernel
    /// `openat2` (Linux 5.6). Overlay takes such an `O_PATH` fd of a detached tree as a layer from 6.15.
    ///
    /// ```no_run
    /// let store = layermount::DetachedTree::clone_path("/var/lib/layers", false)?;
    /// let layer = store.open_dir("sha256-abc")?;
    /// # Ok::<(), layermount::Error>(())
    /// ```
    pub fn open_dir(&self, path: impl AsRef<Path>) -> Result<OwnedFd> {
        self.open_inside(path.as_ref(), OFlags::PATH)
    }

    /// Like [`open_dir`](Self::open_dir) but `O_RDONLY`, for kernels (6.13, 6.14) whose overlay refuses `O_PATH`
    /// layer fds.
    ///
    /// # Errors
    /// As [`open_dir`](Self::open_dir).
    ///
    /// # Kernel
    /// `openat2` (Linux 5.6).
    ///
    /// ```no_run
    /// let store = layermount::DetachedTree::clone_path("/var/lib/layers", false)?;
    /// let layer = store.open_dir_readable("sha256-abc")?;
    /// # Ok::<(), layermount::Error>(())
    /// ```
    pub fn open_dir_readable(&self, path: impl AsRef<Path>) -> Result<OwnedFd> {
        self.open_inside(path.as_ref(), OFlags::RDONLY)
    }

    /// Attach the tree at `target` (`move_mount(2)`), creating `target` as an empty 0700 directory first if it does
    /// not exist; the returned guard detaches it (and removes `target` only if it was created here).
    /// A symlink as the last component of `target` is not followed.
    ///
    /// # References
    /// - [`move_mount(2)`](https://man7.org/linux/man-pages/man2/move_mount.2.html)
    ///
    /// # Errors
    /// [`ErrorKind::Os`] when `target` cannot be made or the kernel refuses the move (`ENOENT`, `EINVAL` for an fd
    /// that is not a detached mount, `ENOTDIR`); a `target` this call made is removed again.
    /// [`ErrorKind::PermissionDenied`] without `CAP_SYS_ADMIN`.
    ///
    /// # Kernel
    /// `move_mount` (Linux 5.2).
    ///
    /// ```no_run
    /// let tree = layermount::DetachedTree::clone_path("/srv/data", false)?;
    /// let guard = tree.attach("/mnt/data")?;
    /// // ... use /mnt/data ...
    /// guard.unmount()?;
    /// # Ok::<(), layermount::Error>(())
    /// ```
    #[doc(alias = "move_mount")]
    pub fn attach(self, target: impl AsRef<Path>) -> Result<MountGuard> {
        self.attach_at(target.as_ref(), true)
    }

    /// [`attach`](Self::attach), creating a missing `target` only if `create` (otherwise `move_mount` says ENOENT,
    /// as mount(8) does).
    pub(crate) fn attach_at(self, target: &Path, create: bool) -> Result<MountGuard> {
        let move_to = || rustix::mount::move_mount(&self.fd, "", CWD, target, MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH);
        // The mount point usually exists: it is made only when the move says it is missing.
        let mut created = false;
        let mut moved = move_to();
        if create && moved == Err(Errno::NOENT) {
            match rustix::fs::mkdir(target, Mode::RWXU) {
                Ok(()) => created = true,
                Err(Errno::EXIST) => {}
                Err(e) => return Err(Error::os("attach: create mount point", e).with_path(target)),
            }
            moved = move_to();
        }
        if let Err(e) = moved {
            if created {
                let _ = rustix::fs::rmdir(target);
            }
            let err = Error::os("attach", e).with_path(target);
            return Err(if e == Errno::INVAL && self.origin == Origin::Foreign {
                err.with_detail("not a detached mount")
            } else {
                err
            });
        }
        // The fd now names the attached mount; its id is how the guard knows the mount is still its own.
        let identity = mount_identity(&self.fd, Path::new("")).ok();
        Ok(MountGuard::new(target.to_path_buf(), identity, created))
    }
}

impl AsFd for DetachedTree {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}
