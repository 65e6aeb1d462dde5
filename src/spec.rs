//! [`MountSpec`]: containerd's `Mount { Type, Source, Target, Options }`, parsed, rendered and performed.
//!
//! Options are kept as the caller wrote them, in order; interpreting them never rewrites the list, and
//! [`MountSpec::set_idmap`] only replaces or appends `uidmap=`/`gidmap=`, so turning on user namespaces can never
//! drop, duplicate or reorder any other option.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, StatxFlags};
use rustix::io::Errno;

use crate::error::{Error, ErrorKind, Result};
use crate::features::Strategy;
use crate::fscontext::FsContext;
use crate::guard::MountGuard;
use crate::idmap::IdMap;
use crate::options;
use crate::overlay::{Overlay, OverlayOption};
use crate::tree::{Atime, DetachedTree, MountAttrs, Propagation};
use crate::userns::UserNamespace;

/// One mount to perform, in the shape of containerd's `Mount`.
///
/// Paths and options are bytes ([`OsString`]): a layer path need not be UTF-8, and nothing is ever converted lossily.
/// Paths inside options are escaped as overlay's parser expects (`\`, `:` and `,` behind a backslash); the one
/// encoder for that is shared with [`Overlay::to_spec`] and the CLI.
///
/// # Option text
///
/// The grammar is overlay's, which `mount(8)` and containerd also use, and the crate has one encoder and decoder
/// for it:
///
/// * a list of options is split on commas; a comma escaped as `\,` stays inside its option;
/// * inside a value that names directories (`lowerdir=`, `upperdir=`, `workdir=`), `:` separates layers, `::` starts
///   the data-only layers, and `\`, `:` and `,` in a path are escaped with a backslash;
/// * `uidmap=`/`gidmap=` values are containerd's `c:h:s[,c:h:s]`: the commas between ranges belong to the value, so
///   a list item that is only a range (`1000:6666:64536`) continues the map before it.
///
/// Options are bytes: a path need not be UTF-8. Property tests check that encoding and decoding are inverse with
/// commas, colons, backslashes, newlines and non-UTF-8 bytes in paths.
///
/// # Kernel
///
/// Describing a mount needs none; [`mount`](Self::mount) needs what the mount type needs.
///
/// ```
/// use layermount::MountSpec;
/// let mut spec = MountSpec::new("overlay", "overlay", "/run/rootfs")
///     .with_options("lowerdir=/l/2:/l/1,nodev,index=off");
/// spec.set_idmap(&"0:100000:65536".parse()?, &"0:100000:65536".parse()?);
/// assert_eq!(spec.options_text(), "lowerdir=/l/2:/l/1,nodev,index=off,uidmap=0:100000:65536,gidmap=0:100000:65536");
/// # Ok::<(), layermount::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MountSpec {
    /// Filesystem type (`overlay`, `bind`, `tmpfs`, ...). A containerd `mkdir/` prefix is accepted and means the
    /// `X-containerd.mkdir.path=` options are honoured (they are in any case).
    pub kind: String,
    /// Source (`overlay`, a directory for `bind`, a device, `none`).
    pub source: OsString,
    /// Where to mount.
    pub target: PathBuf,
    /// Options, in order, as written (`ro`, `lowerdir=...`, `uidmap=0:1000:1`, ...).
    pub options: Vec<OsString>,
}

fn spec_error(detail: impl Into<String>) -> Error {
    Error::new(ErrorKind::InvalidMountSpec, "mount spec").with_detail(detail)
}

fn utf8<'a>(key: &str, v: &'a [u8]) -> Result<&'a str> {
    std::str::from_utf8(v).map_err(|_| spec_error(format!("the value of {key}= is not UTF-8")))
}

/// The mount-level meaning of an option, if it has one.
enum Flag {
    Attr(MountAttrs, bool),
    Atime(Atime),
    Propagation(Propagation),
    ReadOnly(bool),
    Ignore,
}

fn flag(option: &str) -> Option<Flag> {
    use MountAttrs as A;
    Some(match option {
        "ro" => Flag::ReadOnly(true),
        "rw" => Flag::ReadOnly(false),
        "nosuid" => Flag::Attr(A::NOSUID, true),
        "suid" => Flag::Attr(A::NOSUID, false),
        "nodev" => Flag::Attr(A::NODEV, true),
        "dev" => Flag::Attr(A::NODEV, false),
        "noexec" => Flag::Attr(A::NOEXEC, true),
        "exec" => Flag::Attr(A::NOEXEC, false),
        "nosymfollow" => Flag::Attr(A::NOSYMFOLLOW, true),
        "nodiratime" => Flag::Attr(A::NODIRATIME, true),
        "diratime" => Flag::Attr(A::NODIRATIME, false),
        "relatime" => Flag::Atime(Atime::Relative),
        "noatime" => Flag::Atime(Atime::None),
        "strictatime" => Flag::Atime(Atime::Strict),
        "private" | "rprivate" => Flag::Propagation(Propagation::Private),
        "shared" | "rshared" => Flag::Propagation(Propagation::Shared),
        "slave" | "rslave" => Flag::Propagation(Propagation::Slave),
        "unbindable" | "runbindable" => Flag::Propagation(Propagation::Unbindable),
        "defaults" => Flag::Ignore,
        _ => return None,
    })
}

/// What the options say, sorted by who acts on them. Filesystem options keep their order.
#[derive(Default)]
struct Plan {
    read_only: bool,
    set: MountAttrs,
    clear: MountAttrs,
    atime: Option<Atime>,
    propagation: Option<Propagation>,
    bind: Option<bool>,
    /// The runtime-spec's `idmap` (`Some(false)`: the top mount only) or `ridmap` (`Some(true)`: every mount).
    idmap: Option<bool>,
    uid_map: Option<IdMap>,
    gid_map: Option<IdMap>,
    mkdirs: Vec<OsString>,
    /// mount(8)'s `X-mount.mkdir[=MODE]`: make a missing target (and its parents) with this mode.
    mkdir_target: Option<u32>,
    lowerdir: Option<(Vec<PathBuf>, Vec<PathBuf>)>,
    upperdir: Option<PathBuf>,
    workdir: Option<PathBuf>,
    fs_options: Vec<(String, Option<OsString>)>,
}

impl MountSpec {
    /// A spec with no options.
    ///
    /// ```
    /// let spec = layermount::MountSpec::new("tmpfs", "none", "/run/scratch");
    /// assert!(spec.options.is_empty());
    /// ```
    pub fn new(kind: impl Into<String>, source: impl AsRef<OsStr>, target: impl AsRef<Path>) -> Self {
        Self {
            kind: kind.into(),
            source: source.as_ref().to_os_string(),
            target: target.as_ref().to_path_buf(),
            options: Vec::new(),
        }
    }

    /// Append the options of a `-o`-style list (`a,b=c`; a comma escaped as `\,` stays inside its option, and the
    /// ranges of a multi-range `uidmap=`/`gidmap=` stay in their map).
    ///
    /// ```
    /// let spec = layermount::MountSpec::new("bind", "/src", "/dst").with_options("rbind,ro");
    /// assert_eq!(spec.options, ["rbind", "ro"]);
    /// ```
    pub fn with_options(mut self, text: impl AsRef<OsStr>) -> Self {
        self.options.extend(Self::parse_options(text));
        self
    }

    /// Split a `-o`-style list into options. Empty items are dropped; escapes are kept as written.
    ///
    /// ```
    /// use layermount::MountSpec;
    /// assert_eq!(MountSpec::parse_options("ro,lowerdir=/a:/b,,x=1\\,2"), ["ro", "lowerdir=/a:/b", "x=1\\,2"]);
    /// assert_eq!(MountSpec::parse_options("uidmap=0:666:1000,1000:6666:64536,ro"), ["uidmap=0:666:1000,1000:6666:64536", "ro"]);
    /// ```
    pub fn parse_options(text: impl AsRef<OsStr>) -> Vec<OsString> {
        options::split_list(text.as_ref())
    }

    /// The options as one `-o`-style list, in order (what [`parse_options`](Self::parse_options) reads back).
    ///
    /// ```
    /// let spec = layermount::MountSpec::new("tmpfs", "none", "/t").with_options("size=1m,nodev");
    /// assert_eq!(spec.options_text(), "size=1m,nodev");
    /// ```
    pub fn options_text(&self) -> OsString {
        options::join_list(&self.options)
    }

    /// The layers of an `overlay` spec's `lowerdir=` (top-most first) and its data-only layers, unescaped; `None`
    /// without `lowerdir=`.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidMountSpec`] for a malformed value (an empty layer, a lone trailing backslash).
    ///
    /// ```
    /// let spec = layermount::MountSpec::new("overlay", "overlay", "/t").with_options(r"lowerdir=/l/a\:b:/l/c::/d");
    /// let (lowers, data) = spec.lower_layers()?.unwrap();
    /// assert_eq!(lowers, [std::path::Path::new("/l/a:b"), std::path::Path::new("/l/c")]);
    /// assert_eq!(data, [std::path::Path::new("/d")]);
    /// # Ok::<(), layermount::Error>(())
    /// ```
    ///
    /// # Kernel
    /// None: no system call (parsing only).
    pub fn lower_layers(&self) -> Result<Option<(Vec<PathBuf>, Vec<PathBuf>)>> {
        Ok(self.plan()?.lowerdir)
    }

    /// Set `uidmap=` and `gidmap=`: an existing one is replaced where it stands (a later duplicate is removed),
    /// otherwise it is appended. No other option moves or disappears.
    ///
    /// ```
    /// let map: layermount::IdMap = "0:100000:65536".parse()?;
    /// let mut spec = layermount::MountSpec::new("bind", "/srv/data", "/run/c/data").with_options("rbind,ro,uidmap=0:1:1");
    /// spec.set_idmap(&map, &map);
    /// assert_eq!(spec.options_text(), "rbind,ro,uidmap=0:100000:65536,gidmap=0:100000:65536");
    /// # Ok::<(), layermount::Error>(())
    /// ```
    pub fn set_idmap(&mut self, uid_map: &IdMap, gid_map: &IdMap) {
        for (key, map) in [("uidmap=", uid_map), ("gidmap=", gid_map)] {
            let value = OsString::from(format!("{key}{map}"));
            let mut found = false;
            self.options.retain_mut(|o| {
                if !o.as_bytes().starts_with(key.as_bytes()) {
                    return true;
                }
                if found {
                    return false;
                }
                found = true;
                *o = value.clone();
                true
            });
            if !found {
                self.options.push(value);
            }
        }
    }

    fn plan(&self) -> Result<Plan> {
        let mut p = Plan::default();
        for o in &self.options {
            if let Some(f) = o.to_str().and_then(flag) {
                match f {
                    Flag::Attr(a, true) => {
                        p.set |= a;
                        p.clear -= a;
                    }
                    Flag::Attr(a, false) => {
                        p.clear |= a;
                        p.set -= a;
                    }
                    Flag::Atime(a) => p.atime = Some(a),
                    Flag::Propagation(prop) => p.propagation = Some(prop),
                    Flag::ReadOnly(ro) => p.read_only = ro,
                    Flag::Ignore => {}
                }
                continue;
            }
            match options::key_value(o)? {
                ("bind", None) => p.bind = Some(false),
                ("rbind", None) => p.bind = Some(true),
                ("idmap", None) => p.idmap = Some(false),
                ("ridmap", None) => p.idmap = Some(true),
                ("uidmap", Some(v)) => p.uid_map = Some(IdMap::parse(utf8("uidmap", v)?)?),
                ("gidmap", Some(v)) => p.gid_map = Some(IdMap::parse(utf8("gidmap", v)?)?),
                ("X-containerd.mkdir.path", Some(v)) => p.mkdirs.push(OsStr::from_bytes(v).to_os_string()),
                ("X-mount.mkdir" | "x-mount.mkdir", v) => {
                    let v = v.map(|v| utf8("X-mount.mkdir", v)).transpose()?;
                    let mode = v.map_or(Some(0o755), |m| u32::from_str_radix(m, 8).ok().filter(|m| *m <= 0o7777));
                    p.mkdir_target =
                        Some(mode.ok_or_else(|| {
                            spec_error(format!("bad \"{}\": want an octal mode", o.to_string_lossy()))
                        })?);
                }
                ("lowerdir", Some(v)) => p.lowerdir = Some(options::split_layers(v)?),
                ("upperdir", Some(v)) => p.upperdir = Some(options::single_path(v)?),
                ("workdir", Some(v)) => p.workdir = Some(options::single_path(v)?),
                (k, _) if k.starts_with("X-containerd.") => {
                    return Err(spec_error(format!("unknown containerd option \"{}\"", o.to_string_lossy())));
                }
                ("loop", None) => return Err(spec_error("loop devices are not supported")),
                (k, v) => p.fs_options.push((k.to_string(), v.map(|v| OsStr::from_bytes(v).to_os_string()))),
            }
        }
        if p.uid_map.is_some() != p.gid_map.is_some() {
            return Err(spec_error("uidmap= and gidmap= must be given together"));
        }
        if p.idmap.is_some() && p.uid_map.is_none() {
            return Err(spec_error(
                "idmap and ridmap need the maps: uidmap= and gidmap= (an OCI mount's uidMappings and gidMappings)",
            ));
        }
        Ok(p)
    }

    fn kind(&self) -> Result<&str> {
        let kind = self.kind.strip_prefix("mkdir/").unwrap_or(&self.kind);
        if kind.contains('/') {
            return Err(spec_error(format!("unsupported type \"{}\"", self.kind)));
        }
        Ok(kind)
    }

    /// Check the spec without mounting anything: the type, every option, the maps.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidMountSpec`] for an unknown mount type, a malformed or unknown option (an unknown
    /// `X-containerd.*` one included), a flag that takes no value given one, or a map that cannot be used;
    /// [`ErrorKind::InvalidIdMap`] for a malformed `uidmap=`/`gidmap=`.
    ///
    /// # Kernel
    /// None: no system call.
    ///
    /// ```
    /// use layermount::{ErrorKind, MountSpec};
    /// let ok = MountSpec::new("tmpfs", "none", "/run/scratch").with_options("size=16m,nodev,noexec");
    /// ok.validate()?;
    /// let bad = MountSpec::new("tmpfs", "none", "/run/scratch").with_options("nodev,X-containerd.unknown=1");
    /// assert_eq!(bad.validate().unwrap_err().kind(), ErrorKind::InvalidMountSpec);
    /// # Ok::<(), layermount::Error>(())
    /// ```
    pub fn validate(&self) -> Result<()> {
        self.kind()?;
        self.plan().map(drop)
    }

    /// Perform the mount at [`target`](Self::target), choosing the overlay strategy from the kernel's features.
    ///
    /// * `overlay`: composed with [`Overlay`]; `lowerdir=` (top-most first, `::` before data-only layers),
    ///   `upperdir=`, `workdir=`; `uidmap=`/`gidmap=` idmap every lower layer.
    /// * `bind` (or any type with `bind`/`rbind`): a detached clone of the source, idmapped if asked, attached.
    ///   `uidmap=`/`gidmap=` idmap every mount of an `rbind` clone; the runtime-spec's `ridmap` says the same and
    ///   its `idmap` idmaps only the top mount. Both need `uidmap=`/`gidmap=` (see `MountSpec::from_oci` with
    ///   the `oci-spec` feature, which turns an OCI mount's `uidMappings`/`gidMappings` into them).
    /// * anything else: `fsopen`/`fsconfig`/`fsmount`, each filesystem option passed as written.
    ///
    /// Mount flags (`ro`, `nosuid`, `nodev`, `noexec`, `nosymfollow`, atime modes, propagation) apply to the
    /// resulting mount. Unknown `X-containerd.*` options are an error and never reach the kernel.
    ///
    /// The target must exist, as for mount(8) and `mount(2)`: a missing one is an error (ENOENT) before anything is
    /// done, unless `X-mount.mkdir[=MODE]` (mount(8)'s option, also spelled `x-mount.mkdir`; octal mode, default
    /// 0755) asks to make it, missing parents included, or an `X-containerd.mkdir.path=` names it. A target made
    /// this way stays after unmounting, as with mount(8).
    ///
    /// # Errors
    /// Everything [`validate`](Self::validate) reports, before anything is done; [`ErrorKind::Os`] (`ENOENT`) for a
    /// missing target not asked to be made; then the errors of what performs it: [`Overlay::mount`] for `overlay`,
    /// [`DetachedTree::clone_path`], [`DetachedTree::idmap`] and [`DetachedTree::attach`] for a bind,
    /// [`FsContext`] for other types (with the kernel's messages). On error nothing stays mounted, and what
    /// `X-containerd.mkdir.path=` changed is put back.
    ///
    /// # Kernel
    /// The new mount API (Linux 5.2) and `mount_setattr` (5.12) for flags; an idmap needs 5.12 and a filesystem that
    /// supports it; `overlay` needs what [`Overlay`] needs (any kernel through the legacy strategy, 6.15 for the fast
    /// path).
    ///
    /// ```no_run
    /// let spec = layermount::MountSpec::new("tmpfs", "none", "/run/scratch").with_options("size=16m,nodev,mode=0700");
    /// let guard = spec.mount()?;
    /// # Ok::<(), layermount::Error>(())
    /// ```
    pub fn mount(&self) -> Result<MountGuard> {
        self.mount_with_strategy(None)
    }

    /// Like [`mount`](Self::mount) with the overlay strategy forced (ignored for other types).
    ///
    /// # Errors
    /// As [`mount`](Self::mount); [`ErrorKind::NotSupported`] if the kernel lacks the strategy forced.
    ///
    /// # Kernel
    /// As [`mount`](Self::mount); the strategy's own kernel (see [`Strategy`]).
    ///
    /// ```no_run
    /// use layermount::{MountSpec, Strategy};
    /// let spec = MountSpec::new("overlay", "overlay", "/run/ctr/rootfs")
    ///     .with_options("lowerdir=/var/lib/layers/2:/var/lib/layers/1,X-mount.mkdir");
    /// let guard = spec.mount_with_strategy(Some(Strategy::Legacy))?;
    /// # Ok::<(), layermount::Error>(())
    /// ```
    pub fn mount_with_strategy(&self, strategy: Option<Strategy>) -> Result<MountGuard> {
        let kind = self.kind()?;
        let plan = self.plan()?;
        self.check_target(&plan)?;
        // Nothing of `X-containerd.mkdir.path` stays if the mount fails.
        let mut undo = MkdirUndo::default();
        let mounted = plan
            .mkdirs
            .iter()
            .try_for_each(|spec| mkdir(spec, &mut undo))
            .and_then(|()| self.mount_planned(kind, &plan, strategy));
        if mounted.is_err() {
            undo.undo();
        }
        mounted
    }

    fn mount_planned(&self, kind: &str, plan: &Plan, strategy: Option<Strategy>) -> Result<MountGuard> {
        let userns = match (&plan.uid_map, &plan.gid_map) {
            (Some(u), Some(g)) => Some(UserNamespace::cached(u, g)?),
            _ => None,
        };
        let bind = plan.bind.or(if kind == "bind" { Some(false) } else { None });
        if let (Some(_), Some((k, _))) = (bind, plan.fs_options.first()) {
            return Err(spec_error(format!("a bind mount takes no filesystem option such as \"{k}\"")));
        }
        let mut tree = if let Some(recursive) = bind {
            let mut t = DetachedTree::clone_path(&self.source, recursive)?;
            if let Some(ns) = &userns {
                t.idmap_with(ns, plan.idmap.unwrap_or(recursive))?;
            }
            t
        } else if kind == "overlay" {
            self.overlay(plan, userns, strategy)?
        } else {
            let mut fs = FsContext::open(kind)?;
            if !self.source.is_empty() {
                fs.set_cstring("source", &cstring("source", self.source.as_bytes())?)?;
            }
            if plan.read_only {
                fs.set_flag("ro")?;
            }
            for (k, v) in &plan.fs_options {
                match v {
                    None => fs.set_flag(k)?,
                    Some(v) => fs.set_cstring(k, &cstring(k, v.as_bytes())?)?,
                }
            }
            fs.create()?;
            let mut t = fs.mount()?;
            if let Some(ns) = &userns {
                t.idmap(ns)?;
            }
            t
        };
        let set = if plan.read_only { plan.set | MountAttrs::RDONLY } else { plan.set };
        if !set.is_empty() || !plan.clear.is_empty() {
            tree.set_attrs(set, plan.clear)?;
        }
        if let Some(a) = plan.atime {
            tree.set_atime(a)?;
        }
        if let Some(p) = plan.propagation {
            tree.set_propagation(p)?;
        }
        // The mount point is made last, when nothing can fail but the attach, and removed again if that fails.
        let made = match plan.mkdir_target {
            Some(mode) => make_target(&self.target, mode)?,
            None => Vec::new(),
        };
        tree.attach_at(&self.target, false).inspect_err(|_| {
            for dir in made.iter().rev() {
                let _ = rustix::fs::rmdir(dir);
            }
        })
    }

    /// The target exists, or the options ask to make it.
    fn check_target(&self, plan: &Plan) -> Result<()> {
        let named = |spec: &OsString| {
            Path::new(OsStr::from_bytes(spec.as_bytes().split(|&b| b == b':').next().unwrap_or_default()))
                == self.target
        };
        if plan.mkdir_target.is_some() || plan.mkdirs.iter().any(named) {
            return Ok(());
        }
        match rustix::fs::statx(rustix::fs::CWD, &self.target, AtFlags::SYMLINK_NOFOLLOW, StatxFlags::TYPE) {
            Ok(_) => Ok(()),
            Err(e) => Err(Error::os("mount", e).with_path(&self.target).with_detail(if e == Errno::NOENT {
                "the mount point does not exist (X-mount.mkdir, or --mkdir on the command line, makes it)"
            } else {
                "the mount point cannot be reached"
            })),
        }
    }

    fn overlay(&self, plan: &Plan, userns: Option<UserNamespace>, strategy: Option<Strategy>) -> Result<DetachedTree> {
        let (lowers, data) = plan.lowerdir.as_ref().ok_or_else(|| spec_error("overlay needs lowerdir="))?;
        let mut o = Overlay::new().lowers(lowers);
        for d in data {
            o = o.data_layer(d);
        }
        match (&plan.upperdir, &plan.workdir) {
            (Some(u), Some(w)) => o = o.upper(u, w),
            (None, None) => {}
            _ => return Err(spec_error("upperdir= and workdir= must be given together")),
        }
        for (k, v) in &plan.fs_options {
            let v = v.as_ref().map(|v| utf8(k, v.as_bytes()).map(str::to_string)).transpose()?;
            o = o.option(OverlayOption::Raw(k.clone(), v));
        }
        if let Some(ns) = userns {
            o = o.idmap(ns);
        }
        if let Some(s) = strategy {
            o = o.strategy(s);
        }
        o.mount()
    }
}

/// `X-mount.mkdir=MODE`: make the missing mount point `target` and its missing parents with `mode` (parents as
/// mount(8) makes them, with the same mode); an existing one is left as it is.
/// Returns the directories it made, outermost first.
fn make_target(target: &Path, mode: u32) -> Result<Vec<PathBuf>> {
    let missing: Vec<PathBuf> =
        target.ancestors().take_while(|a| std::fs::symlink_metadata(a).is_err()).map(Path::to_path_buf).collect();
    let mut made = Vec::new();
    for dir in missing.into_iter().rev() {
        match std::fs::DirBuilder::new().mode(mode).create(&dir) {
            Ok(()) => made.push(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => {
                for d in made.iter().rev() {
                    let _ = rustix::fs::rmdir(d);
                }
                return Err(Error::io("X-mount.mkdir", &e).with_path(dir));
            }
        }
    }
    if made.last().is_some_and(|d| d == target) {
        // The umask may have taken bits away.
        std::fs::set_permissions(target, std::fs::Permissions::from_mode(mode))
            .map_err(|e| Error::io("X-mount.mkdir", &e).with_path(target))?;
    }
    Ok(made)
}

/// What `X-containerd.mkdir.path=` changed, put back when the mount then fails: the directories it made (removed
/// with `rmdir`, deepest first, so anything put in them meanwhile keeps them) and the mode and owner of those that
/// existed.
#[derive(Debug, Default)]
struct MkdirUndo {
    made: Vec<PathBuf>,
    changed: Vec<(PathBuf, u32, u32, u32)>,
}

impl MkdirUndo {
    fn undo(self) {
        for (path, mode, uid, gid) in self.changed.into_iter().rev() {
            let _ = std::os::unix::fs::lchown(&path, Some(uid), Some(gid));
            let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode & 0o7777));
        }
        for dir in self.made.into_iter().rev() {
            let _ = rustix::fs::rmdir(&dir);
        }
    }
}

/// `X-containerd.mkdir.path=PATH[:MODE[:UID:GID]]`: create `PATH` (and missing parents, 0700) if missing, then give
/// it `MODE` (octal, default 0700) and the owner. What it does is recorded in `undo`.
fn mkdir(spec: &OsStr, undo: &mut MkdirUndo) -> Result<()> {
    let parts: Vec<&[u8]> = spec.as_bytes().splitn(4, |&b| b == b':').collect();
    let bad = || {
        spec_error(format!("bad X-containerd.mkdir.path=\"{}\": want PATH[:MODE[:UID:GID]]", spec.to_string_lossy()))
    };
    let path = Path::new(OsStr::from_bytes(parts[0]));
    let parts: Vec<&str> = parts.iter().map(|p| std::str::from_utf8(p).unwrap_or("")).collect();
    if !path.is_absolute() {
        return Err(bad());
    }
    let mode = match parts.get(1) {
        Some(m) => u32::from_str_radix(m, 8).map_err(|_| bad())?,
        None => 0o700,
    };
    let owner = match (parts.get(2), parts.get(3)) {
        (Some(u), Some(g)) => Some((u.parse::<u32>().map_err(|_| bad())?, g.parse::<u32>().map_err(|_| bad())?)),
        (None, None) => None,
        _ => return Err(bad()),
    };
    let io_error = |e: std::io::Error, p: &Path| Error::io("X-containerd.mkdir.path", &e).with_path(p);
    match std::fs::symlink_metadata(path) {
        Ok(m) => {
            use std::os::unix::fs::MetadataExt;
            undo.changed.push((path.to_path_buf(), m.mode(), m.uid(), m.gid()));
        }
        Err(_) => {
            let missing: Vec<&Path> = path.ancestors().take_while(|a| std::fs::symlink_metadata(a).is_err()).collect();
            for dir in missing.into_iter().rev() {
                match std::fs::DirBuilder::new().mode(0o700).create(dir) {
                    Ok(()) => undo.made.push(dir.to_path_buf()),
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                    Err(e) => return Err(io_error(e, dir)),
                }
            }
        }
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| Error::io("X-containerd.mkdir.path", &e).with_path(path))?;
    if let Some((u, g)) = owner {
        std::os::unix::fs::lchown(path, Some(u), Some(g))
            .map_err(|e| Error::io("X-containerd.mkdir.path", &e).with_path(path))?;
    }
    Ok(())
}

fn cstring(key: &str, v: &[u8]) -> Result<std::ffi::CString> {
    std::ffi::CString::new(v).map_err(|_| spec_error(format!("NUL in the value of {key}")))
}
