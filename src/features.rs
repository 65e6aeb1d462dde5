//! [`Features`]: one cached probe of what the running kernel can do, by trying each operation, and a way to force
//! a lower [`Strategy`] so every fallback path can be exercised on a new kernel.
//!
//! The probes that need privilege work on detached tmpfs mounts made with `fsmount`, which are never attached to
//! any mount table, so probing changes nothing on the host.

use std::fmt;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::sync::OnceLock;

use rustix::fs::{AtFlags, Mode, OFlags, StatxFlags};
use rustix::io::Errno;

use crate::error::{Error, ErrorKind, Result};
use crate::fscontext::FsContext;
use crate::idmap::IdMap;
use crate::sys;
use crate::tree::DetachedTree;
use crate::userns::UserNamespace;

/// The environment variable that caps the overlay strategy: `legacy`, `string`, `fd-attached` or `fd`.
///
/// Its earlier name, `LAYERMOUNT_OVERLAY_LEVEL`, is still read when this one is unset.
///
/// ```
/// use layermount::{Features, Strategy, STRATEGY_ENV};
/// // What `LAYERMOUNT_STRATEGY=string` does to `Features::get()`, done by hand:
/// let cap: Strategy = "string".parse()?;
/// let f = Features::probe().limited_to(cap);
/// assert!(f.strategy() <= Strategy::Strings);
/// assert_eq!(STRATEGY_ENV, "LAYERMOUNT_STRATEGY");
/// # Ok::<(), layermount::Error>(())
/// ```
pub const STRATEGY_ENV: &str = "LAYERMOUNT_STRATEGY";

/// The earlier name of [`STRATEGY_ENV`].
const STRATEGY_ENV_OLD: &str = "LAYERMOUNT_OVERLAY_LEVEL";

/// `STATX_MNT_ID_UNIQUE` (Linux 6.8).
const STATX_MNT_ID_UNIQUE: u32 = 0x4000;

/// How overlay layers are handed to the kernel: the overlay strategy, best last. A kernel that supports one
/// strategy supports every one below it.
///
/// ```
/// use layermount::Strategy;
/// assert!(Strategy::DetachedFds > Strategy::Legacy);
/// assert_eq!("fd".parse::<Strategy>()?, Strategy::DetachedFds);
/// assert_eq!("fd-attached".parse::<Strategy>()?, Strategy::AttachedFds);
/// # Ok::<(), layermount::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Strategy {
    /// `mount(2)` with one `lowerdir=a:b:c` string (any kernel; one page of options).
    Legacy,
    /// `fsconfig(FSCONFIG_SET_STRING, "lowerdir+")` per layer (Linux 6.7).
    Strings,
    /// `fsconfig(FSCONFIG_SET_FD, "lowerdir+")` per layer with `O_RDONLY` fds (Linux 6.13).
    AttachedFds,
    /// `O_PATH` layer fds opened inside detached (idmapped) clones (Linux 6.15, 6.13.10, 6.14.2).
    DetachedFds,
}

impl Strategy {
    /// The name used by [`STRATEGY_ENV`] and the CLI.
    ///
    /// ```
    /// use layermount::Strategy;
    /// assert_eq!(Strategy::AttachedFds.name(), "fd-attached");
    /// assert_eq!(Strategy::AttachedFds.name().parse::<Strategy>()?, Strategy::AttachedFds);
    /// # Ok::<(), layermount::Error>(())
    /// ```
    pub fn name(self) -> &'static str {
        match self {
            Self::Legacy => "legacy",
            Self::Strings => "string",
            Self::AttachedFds => "fd-attached",
            Self::DetachedFds => "fd",
        }
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Strategy {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "legacy" => Self::Legacy,
            "string" => Self::Strings,
            "fd-attached" => Self::AttachedFds,
            "fd" => Self::DetachedFds,
            _ => {
                return Err(Error::new(ErrorKind::InvalidInput, "parse overlay strategy")
                    .with_detail(format!("\"{s}\" is not one of legacy, string, fd-attached, fd")));
            }
        })
    }
}

/// What the running kernel supports, found by trying each operation (not by version numbers).
///
/// ```no_run
/// let f = layermount::Features::get();
/// println!("kernel {}: overlay strategy {}", f.kernel_release, f.strategy());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Features {
    /// `uname -r`.
    pub kernel_release: String,
    /// Whether the probe ran with `CAP_SYS_ADMIN`; without it, the probes that mount report `false`.
    pub privileged: bool,
    /// `fsopen`/`fsconfig`/`fsmount`/`move_mount`/`open_tree` (Linux 5.2).
    pub new_mount_api: bool,
    /// `mount_setattr` (Linux 5.12).
    pub mount_setattr: bool,
    /// `open_tree_attr` (Linux 6.15).
    pub open_tree_attr: bool,
    /// `STATX_MNT_ID_UNIQUE` (Linux 6.8).
    pub statx_mnt_id_unique: bool,
    /// `listmount(2)` and `statmount(2)` with a filesystem's options (`STATMOUNT_MNT_OPTS`, Linux 6.11): the live
    /// overlays of a mount namespace are found without formatting its whole mount table on every compose.
    pub statmount_options: bool,
    /// A detached tmpfs can be idmapped (idmapped mounts, and tmpfs support for them: Linux 6.3).
    pub idmap_tmpfs: bool,
    /// overlayfs is available.
    pub overlay: bool,
    /// overlay parses its options when `fsconfig` is called and reports problems on the filesystem-context fd
    /// (overlay's port to the new mount API, Linux 6.5). Before, every option is accepted by `fsconfig` and a bad
    /// one fails only at creation, with the reason written to the kernel log alone.
    pub overlay_context_messages: bool,
    /// overlay takes data-only lower layers (`lowerdir=a::b`, Linux 6.5).
    pub overlay_data_layers: bool,
    /// overlay accepts `lowerdir+` strings through `fsconfig` (Linux 6.7).
    pub overlay_lowerdir_plus: bool,
    /// overlay accepts `lowerdir+` as `O_RDONLY` directory fds (Linux 6.13).
    pub overlay_lowerdir_fd: bool,
    /// overlay accepts `O_PATH` fds of directories inside a detached idmapped clone (Linux 6.15).
    pub overlay_detached_layers: bool,
    /// A detached read-only overlay given by fd is accepted as a lower layer of another overlay with an upper: what
    /// an [`ImageStack`](crate::ImageStack) needs to stay detached (Linux 6.15; before, a stack is kept attached).
    pub overlay_stack: bool,
    /// A detached tmpfs holds `user.*` extended attributes (Linux 6.6).
    pub tmpfs_user_xattrs: bool,
}

/// Whether `statmount` reports a filesystem's options: asked of the mounts `listmount` shows until one has options
/// (a kernel without `STATMOUNT_MNT_OPTS` fills in none, and a filesystem without options gets none either).
fn probe_statmount_options() -> bool {
    use crate::mountinfo::{STATMOUNT_MNT_OPTS, statmount};
    let mut ids = Vec::new();
    crate::mountinfo::list_mounts(&mut ids).is_ok()
        && ids.iter().any(|&id| statmount(id, STATMOUNT_MNT_OPTS).is_ok_and(|s| s.mask & STATMOUNT_MNT_OPTS != 0))
}

fn syscall_exists(r: rustix::io::Result<impl Sized>) -> bool {
    !matches!(r, Err(Errno::NOSYS))
}

/// Two small directories (`a`, `b`) on a detached tmpfs.
fn scratch_tmpfs() -> Result<DetachedTree> {
    let mut fs = FsContext::open("tmpfs")?;
    fs.set_string("size", "1m")?;
    fs.create()?;
    let tree = fs.mount()?;
    for d in ["a", "b"] {
        rustix::fs::mkdirat(&tree, d, Mode::from_raw_mode(0o755))
            .map_err(|e| Error::os("probe: mkdir", e).with_path(d))?;
    }
    Ok(tree)
}

fn overlay_with(layers: &[OwnedFd]) -> Result<()> {
    let mut ov = FsContext::open("overlay")?;
    for fd in layers {
        ov.set_fd("lowerdir+", fd.as_fd())?;
    }
    ov.create()?;
    ov.mount().map(drop)
}

/// A flag no overlay knows: refused by `fsconfig` itself only where overlay parses options there (6.5), so nothing
/// is ever created and nothing reaches the kernel log.
fn probe_context_messages() -> bool {
    FsContext::open("overlay").is_ok_and(|mut ov| ov.set_flag("layermount-probe-no-such-option").is_err())
}

/// `a::b`: the second layer data-only. Parsed (and the paths looked up) by `fsconfig`; never created.
fn probe_data_layers(tmp: &DetachedTree) -> Result<()> {
    let base = format!("/proc/thread-self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&tmp.as_fd()));
    FsContext::open("overlay")?.set_string("lowerdir", &format!("{base}/a::{base}/b"))
}

fn probe_tmpfs_user_xattrs(tmp: &DetachedTree) -> bool {
    let dir = tmp.open_dir_readable("a");
    dir.is_ok_and(|d| rustix::fs::fsetxattr(&d, "user.layermount", b"1", rustix::fs::XattrFlags::empty()).is_ok())
}

/// `lowerdir+` strings are parsed, and their paths looked up, by `fsconfig` (6.7). Only that is asked: the paths
/// lead into a detached tmpfs, which overlay takes as a layer only from 6.15, so creating the overlay would fail on
/// the kernels this probe is for.
fn probe_lowerdir_strings(tmp: &DetachedTree) -> Result<()> {
    let base = crate::fd::proc_path(tmp.as_fd());
    let mut ov = FsContext::open("overlay")?;
    ov.set_string("lowerdir+", &format!("{}/a", base.display()))?;
    ov.set_string("lowerdir+", &format!("{}/b", base.display()))
}

/// `lowerdir+` as an fd is accepted by `fsconfig` from 6.13 (before, the key takes only a string). Not created,
/// for the same reason as above.
fn probe_lowerdir_fds(tmp: &DetachedTree) -> Result<()> {
    let mut ov = FsContext::open("overlay")?;
    ov.set_fd("lowerdir+", tmp.open_dir_readable("a")?.as_fd())?;
    ov.set_fd("lowerdir+", tmp.open_dir_readable("b")?.as_fd())
}

/// A detached overlay of `a` and `b` as the lower of an overlay with `c` as upper and `d` as work.
fn probe_stack() -> Result<bool> {
    let tmp = scratch_tmpfs()?;
    for d in ["c", "d"] {
        rustix::fs::mkdirat(&tmp, d, Mode::from_raw_mode(0o755))
            .map_err(|e| Error::os("probe: mkdir", e).with_path(d))?;
    }
    let mut ov = FsContext::open("overlay")?;
    ov.set_fd("lowerdir+", tmp.open_dir("a")?.as_fd())?;
    ov.set_fd("lowerdir+", tmp.open_dir("b")?.as_fd())?;
    ov.create()?;
    let stack = ov.mount()?;
    let mut top = FsContext::open("overlay")?;
    top.set_fd("lowerdir+", stack.as_fd())?;
    top.set_fd("upperdir", tmp.open_dir("c")?.as_fd())?;
    top.set_fd("workdir", tmp.open_dir("d")?.as_fd())?;
    Ok(top.create().is_ok())
}

fn probe_detached_layers(ns: &UserNamespace) -> Result<bool> {
    let mut tmp = scratch_tmpfs()?;
    if tmp.idmap(ns).is_err() {
        return Ok(false);
    }
    // Overlay takes detached layers from the release (6.15) that also lets a detached mount be cloned. Where the
    // clone is refused, creating the overlay would fail too, and say so in the kernel log: so do not try.
    let flags = rustix::mount::OpenTreeFlags::OPEN_TREE_CLONE
        | rustix::mount::OpenTreeFlags::OPEN_TREE_CLOEXEC
        | rustix::mount::OpenTreeFlags::AT_EMPTY_PATH;
    if rustix::mount::open_tree(&tmp, "", flags).is_err() {
        return Ok(false);
    }
    Ok(overlay_with(&[tmp.open_dir("a")?, tmp.open_dir("b")?]).is_ok())
}

impl Features {
    /// The process-wide probe result, made on first call, with [`STRATEGY_ENV`] applied if set (an
    /// unknown value is ignored with a warning on stderr).
    ///
    /// The probe needs no privilege to run, but without `CAP_SYS_ADMIN` the probes that mount report `false` (and
    /// [`strategy`](Self::strategy) is then `Legacy`).
    ///
    /// # Kernel
    /// Any: every probe that fails reports `false`. The probes that mount make detached tmpfs mounts (`fsmount`, 5.2),
    /// attached nowhere.
    ///
    /// ```
    /// let f = layermount::Features::get();
    /// println!("kernel {}: overlay strategy {}", f.kernel_release, f.strategy());
    /// assert!(std::ptr::eq(f, layermount::Features::get())); // probed once per process
    /// ```
    pub fn get() -> &'static Features {
        static CACHE: OnceLock<Features> = OnceLock::new();
        CACHE.get_or_init(|| {
            let f = Features::probe();
            match std::env::var(STRATEGY_ENV).or_else(|_| std::env::var(STRATEGY_ENV_OLD)) {
                Ok(v) => match v.parse() {
                    Ok(strategy) => f.limited_to(strategy),
                    Err(e) => {
                        eprintln!("layermount: ignoring {STRATEGY_ENV}: {e}");
                        f
                    }
                },
                Err(_) => f,
            }
        })
    }

    /// Probe the running kernel now (uncached, environment ignored).
    ///
    /// # Panics
    /// Never: the one `expect` is on parsing a constant id map.
    ///
    /// ```no_run
    /// let f = layermount::Features::probe();
    /// assert!(f.mount_setattr, "needs Linux 5.12");
    /// ```
    pub fn probe() -> Features {
        let kernel_release = rustix::system::uname().release().to_string_lossy().into_owned();
        let privileged = caps::has_cap(None, caps::CapSet::Effective, caps::Capability::CAP_SYS_ADMIN).unwrap_or(false);
        // Syscall presence: an invalid fd gives EBADF where the call exists, ENOSYS where it does not.
        let bad = harmless_fd();
        let mount_setattr = syscall_exists(sys::mount_setattr(bad.as_fd(), c"", 0, &sys::MountAttr::default()));
        let open_tree_attr = syscall_exists(sys::open_tree_attr(bad.as_fd(), c"", 0, None));
        let new_mount_api = syscall_exists(rustix::mount::fsopen("", rustix::mount::FsOpenFlags::FSOPEN_CLOEXEC));
        let statx_mnt_id_unique = rustix::fs::statx(
            rustix::fs::CWD,
            "/",
            AtFlags::empty(),
            StatxFlags::from_bits_retain(STATX_MNT_ID_UNIQUE),
        )
        .is_ok_and(|st| st.stx_mask & STATX_MNT_ID_UNIQUE != 0);
        let statmount_options = probe_statmount_options();

        let mut f = Features {
            kernel_release,
            privileged,
            new_mount_api,
            mount_setattr,
            open_tree_attr,
            statx_mnt_id_unique,
            statmount_options,
            idmap_tmpfs: false,
            overlay: false,
            overlay_context_messages: false,
            overlay_data_layers: false,
            overlay_lowerdir_plus: false,
            overlay_lowerdir_fd: false,
            overlay_detached_layers: false,
            overlay_stack: false,
            tmpfs_user_xattrs: false,
        };
        if !(privileged && new_mount_api) {
            return f;
        }
        // One user namespace (one short-lived child) serves every idmap probe.
        let map = IdMap::parse("0:100000:65536").expect("constant map is valid");
        let ns = UserNamespace::new(&map, &map).ok();
        f.idmap_tmpfs = ns.as_ref().is_some_and(|ns| scratch_tmpfs().and_then(|mut t| t.idmap(ns)).is_ok());
        let tmp = scratch_tmpfs().ok();
        f.tmpfs_user_xattrs = tmp.as_ref().is_some_and(probe_tmpfs_user_xattrs);
        f.overlay = FsContext::open("overlay").is_ok();
        // Where overlay's options are parsed only when the overlay is created (before 6.5), every overlay probe
        // would end in a failed creation and a line in the kernel log, and none of those features exists there.
        f.overlay_context_messages = f.overlay && probe_context_messages();
        if !f.overlay_context_messages {
            return f;
        }
        if let Some(tmp) = &tmp {
            f.overlay_data_layers = probe_data_layers(tmp).is_ok();
            f.overlay_lowerdir_plus = probe_lowerdir_strings(tmp).is_ok();
            f.overlay_lowerdir_fd = probe_lowerdir_fds(tmp).is_ok();
        }
        f.overlay_detached_layers = f.overlay_lowerdir_fd
            && f.idmap_tmpfs
            && ns.as_ref().is_some_and(|ns| probe_detached_layers(ns).unwrap_or(false));
        f.overlay_stack = f.overlay_detached_layers && probe_stack().unwrap_or(false);
        f
    }

    /// The best overlay strategy these features allow.
    ///
    /// ```
    /// let f = layermount::Features::probe();
    /// let _strategy = f.strategy();
    /// ```
    pub fn strategy(&self) -> Strategy {
        if self.overlay_detached_layers {
            Strategy::DetachedFds
        } else if self.overlay_lowerdir_fd {
            Strategy::AttachedFds
        } else if self.overlay_lowerdir_plus {
            Strategy::Strings
        } else {
            Strategy::Legacy
        }
    }

    /// These features with every overlay capability above `strategy` turned off (and `open_tree_attr`, which only
    /// kernels of the top strategy have), so code paths for older kernels can be tested on this one. Below
    /// `AttachedFds`, `statmount_options` is turned off too, and below `Strings` `statx_mnt_id_unique`: some kernels
    /// of those strategies have them (6.11 and 6.8 added them), but the paths without them are what the oldest run.
    ///
    /// ```
    /// use layermount::{Features, Strategy};
    /// let f = Features::probe().limited_to(Strategy::Legacy);
    /// assert_eq!(f.strategy(), Strategy::Legacy);
    /// ```
    pub fn limited_to(&self, strategy: Strategy) -> Features {
        let mut f = self.clone();
        if strategy < Strategy::DetachedFds {
            f.overlay_detached_layers = false;
            f.overlay_stack = false;
            f.open_tree_attr = false;
        }
        if strategy < Strategy::AttachedFds {
            f.overlay_lowerdir_fd = false;
            f.statmount_options = false;
        }
        if strategy < Strategy::Strings {
            f.overlay_lowerdir_plus = false;
            f.statx_mnt_id_unique = false;
        }
        f
    }

    /// Every feature as `(name, supported)`, in a fixed order (what `layermount probe` prints).
    ///
    /// ```
    /// for (name, yes) in layermount::Features::probe().list() {
    ///     println!("{name}: {}", if yes { "yes" } else { "no" });
    /// }
    /// ```
    pub fn list(&self) -> [(&'static str, bool); 15] {
        [
            ("privileged", self.privileged),
            ("new_mount_api", self.new_mount_api),
            ("mount_setattr", self.mount_setattr),
            ("open_tree_attr", self.open_tree_attr),
            ("statx_mnt_id_unique", self.statx_mnt_id_unique),
            ("statmount_options", self.statmount_options),
            ("idmap_tmpfs", self.idmap_tmpfs),
            ("overlay", self.overlay),
            ("overlay_context_messages", self.overlay_context_messages),
            ("overlay_data_layers", self.overlay_data_layers),
            ("overlay_lowerdir_plus", self.overlay_lowerdir_plus),
            ("overlay_lowerdir_fd", self.overlay_lowerdir_fd),
            ("overlay_detached_layers", self.overlay_detached_layers),
            ("overlay_stack", self.overlay_stack),
            ("tmpfs_user_xattrs", self.tmpfs_user_xattrs),
        ]
    }
}

/// Whether the filesystem holding `path` accepts idmapped mounts: clones `path` detached and tries to idmap the
/// clone (then drops it; nothing is attached). Needs `CAP_SYS_ADMIN`.
///
/// # Errors
/// [`ErrorKind::PermissionDenied`] without `CAP_SYS_ADMIN`; [`ErrorKind::Os`] if `path` cannot be cloned (it does not
/// exist, say); [`ErrorKind::AlreadyIdmapped`] if the mount `path` is on is idmapped already; the errors of
/// [`UserNamespace::cached`] when no user namespace can be made.
///
/// # Kernel
/// `open_tree` (5.2) and `mount_setattr` (5.12); the answer depends on the filesystem and kernel (ext4 and xfs 5.12,
/// btrfs 5.15, tmpfs 6.3). Before 5.12 the answer is `false`.
///
/// ```no_run
/// assert!(layermount::idmap_supported("/var/lib/layers")?);
/// # Ok::<(), layermount::Error>(())
/// ```
pub fn idmap_supported(path: impl AsRef<Path>) -> Result<bool> {
    let map = IdMap::parse("0:100000:65536")?;
    let mut tree = DetachedTree::clone_path(path, false)?;
    match tree.idmap(&UserNamespace::cached(&map, &map)?) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == ErrorKind::NotSupported => Ok(false),
        Err(e) => Err(e),
    }
}

/// An fd guaranteed not to be a mount: `/dev/null` opened `O_PATH`, so probes get EBADF/EINVAL, never act.
fn harmless_fd() -> OwnedFd {
    rustix::fs::open("/dev/null", OFlags::PATH | OFlags::CLOEXEC, Mode::empty())
        .unwrap_or_else(|_| rustix::fs::open("/", OFlags::PATH | OFlags::CLOEXEC, Mode::empty()).expect("open /"))
}
