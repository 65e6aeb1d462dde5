//! [`Snapshotter`]: containerd's snapshots API over a `DIR/snapshots/<id>/{fs,work}` store.
//!
//! Without mapping labels a snapshot is served as containerd's own overlayfs snapshotter serves it: a `bind` of
//! `fs` for a snapshot without parents, otherwise one `overlay` mount with `lowerdir=` the parents' `fs`
//! (top-most first) and, for an active snapshot, `upperdir=`/`workdir=`. containerd's applier writes a layer
//! straight into the `upperdir` of such a mount, with overlay whiteouts and opaque markers.
//!
//! With `containerd.io/snapshot/uidmapping` and `.../gidmapping` labels on Prepare or View, the snapshotter
//! composes the root itself with layermount (lower layers idmapped, the upper prepared for the mapped root, rootfs
//! fixups applied into the upper), keeps it mounted at `DIR/snapshots/<id>/rootfs`, and hands out a `bind` of it.

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use containerd_snapshots::api::types::Mount;
use containerd_snapshots::{Info, Usage};
use layermount::{IdMap, MountAttrs, MountTable, Overlay, StackCache, StackLimits, StackOptions, UserNamespace};

use crate::error::{Error, Result};
use crate::filter::{Fields, Filters};
use crate::fixups;
use crate::roots;
use crate::store::{Idmapping, Kind, Record, Store};

/// The label containerd's `--remap-labels` puts on the container's snapshot: the uid map, `c:h:s[,c:h:s]`.
pub const LABEL_UIDMAPPING: &str = "containerd.io/snapshot/uidmapping";
/// The gid map, as [`LABEL_UIDMAPPING`].
pub const LABEL_GIDMAPPING: &str = "containerd.io/snapshot/gidmapping";
/// `false` turns the rootfs fixups off for one snapshot. containerd 1.6 passes only labels under
/// `containerd.io/snapshot/` to a snapshotter, so that spelling ([`LABEL_FIXUPS_INHERITED`]) works too.
pub const LABEL_FIXUPS: &str = "layermount.fixups";
/// [`LABEL_FIXUPS`] under the prefix containerd passes through.
pub const LABEL_FIXUPS_INHERITED: &str = "containerd.io/snapshot/layermount.fixups";
/// Environment variable naming a step at which the process kills itself with SIGKILL (crash tests).
pub const CRASH_ENV: &str = "LAYERMOUNT_SNAPSHOTTER_CRASH_AT";

/// The fallback strategies' staging directory, under the store (which is 0711; the library makes this one 0700).
const STAGING: &str = "staging";

/// Options of a [`Snapshotter`].
#[derive(Debug, Clone)]
pub struct Options {
    /// Apply rootfs fixups into the upper of composed roots (default on; `--no-fixups`).
    pub fixups: bool,
    /// Kill the process with SIGKILL at this named step (tests); see [`CRASH_ENV`].
    pub crash_at: Option<String>,
}

impl Default for Options {
    fn default() -> Self {
        Self { fixups: true, crash_at: std::env::var(CRASH_ENV).ok() }
    }
}

/// The snapshotter: a store directory and its metadata database. Blocking; [`crate::Service`] serves it over
/// gRPC.
#[derive(Debug)]
pub struct Snapshotter {
    root: PathBuf,
    store: Store,
    options: Options,
    /// The images' idmapped layer stacks, shared by the composed roots of one image and mapping.
    stacks: StackCache,
    /// Serializes the operations that change the store and the disk.
    lock: Mutex<()>,
}

fn mkdir(path: &Path, mode: u32) -> Result<()> {
    std::fs::DirBuilder::new().mode(mode).create(path).map_err(|e| Error::io("create directory", path, e))?;
    // The mode given to mkdir is masked by the umask; the store's modes must not depend on it.
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(mode))
        .map_err(|e| Error::io("chmod", path, e))
}

fn bind(source: &Path, readonly: bool) -> Mount {
    Mount {
        r#type: "bind".into(),
        source: source.display().to_string(),
        target: String::new(),
        options: vec![if readonly { "ro" } else { "rw" }.into(), "rbind".into()],
    }
}

fn info(name: &str, rec: &Record) -> Info {
    Info {
        kind: match rec.kind {
            Kind::View => containerd_snapshots::Kind::View,
            Kind::Active => containerd_snapshots::Kind::Active,
            Kind::Committed => containerd_snapshots::Kind::Committed,
        },
        name: name.to_string(),
        parent: rec.parent.clone(),
        labels: rec.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        created_at: rec.created,
        updated_at: rec.updated,
    }
}

/// Disk usage of a directory tree as containerd counts it: each inode once, its blocks in bytes.
fn measure(dir: &Path) -> Result<(i64, i64)> {
    let mut seen = std::collections::HashSet::new();
    let mut size = 0i64;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        let md = std::fs::symlink_metadata(&path).map_err(|e| Error::io("stat", &path, e))?;
        if seen.insert((md.dev(), md.ino())) {
            size += i64::try_from(md.blocks() * 512).unwrap_or(i64::MAX);
        }
        if md.is_dir() {
            for entry in std::fs::read_dir(&path).map_err(|e| Error::io("read directory", &path, e))? {
                stack.push(entry.map_err(|e| Error::io("read directory", &path, e))?.path());
            }
        }
    }
    Ok((size, seen.len() as i64))
}

impl Snapshotter {
    /// Open the store at `root` (created with mode 0711 if missing: the mapped root of a container must be able
    /// to search every directory above its composed root) and reconcile it with the disk and the mount table
    /// (a crash at any step is repaired: see the crate docs).
    ///
    /// # Errors
    /// The directory or the database cannot be opened, or reconciling fails.
    ///
    /// ```no_run
    /// use layermount_snapshotter::{Options, Snapshotter};
    /// let s = Snapshotter::open("/var/lib/layermount-snapshotter", Options { fixups: false, ..Options::default() })?;
    /// # Ok::<(), layermount_snapshotter::Error>(())
    /// ```
    pub fn open(root: impl AsRef<Path>, options: Options) -> Result<Self> {
        let root = std::path::absolute(root.as_ref()).map_err(|e| Error::io("resolve", root.as_ref(), e))?;
        for dir in [root.clone(), root.join("snapshots")] {
            if !dir.exists() {
                mkdir(&dir, 0o711)?;
            }
        }
        // The startup step of a daemon that composes with a fallback strategy: sweep the read-only staging mounts a
        // killed predecessor left (detach + rmdir only).
        let stale = layermount::cleanup_stale(root.join(STAGING))?;
        for (path, why) in &stale.kept {
            eprintln!("layermount-snapshotter: stale staging entry {} left: {why}", path.display());
        }
        let store = Store::open(&root.join("metadata.redb"))?;
        let stack_options = StackOptions { staging_dir: Some(root.join(STAGING)), ..StackOptions::default() };
        let stacks = StackCache::new(StackLimits::default(), stack_options);
        let s = Self { root, store, options, stacks, lock: Mutex::new(()) };
        let report = crate::reconcile::reconcile(&s)?;
        for dir in &report.removed_dirs {
            eprintln!("layermount-snapshotter: removed orphan snapshot directory {dir}");
        }
        for mount in &report.detached {
            eprintln!("layermount-snapshotter: detached unrecorded composed root {mount}");
        }
        for key in &report.forgotten_roots {
            eprintln!("layermount-snapshotter: the composed root of {key:?} is gone; composed again on Mounts");
        }
        Ok(s)
    }

    /// The store's directory.
    ///
    /// ```no_run
    /// # let s = layermount_snapshotter::Snapshotter::open("/var/lib/lms", Default::default())?;
    /// println!("{}", s.root().display());
    /// # Ok::<(), layermount_snapshotter::Error>(())
    /// ```
    pub fn root(&self) -> &Path {
        &self.root
    }

    pub(crate) fn store(&self) -> &Store {
        &self.store
    }

    pub(crate) fn snapshots_dir(&self) -> PathBuf {
        self.root.join("snapshots")
    }

    pub(crate) fn dir(&self, id: u64) -> PathBuf {
        self.snapshots_dir().join(id.to_string())
    }

    fn fs(&self, id: u64) -> PathBuf {
        self.dir(id).join("fs")
    }

    fn work(&self, id: u64) -> PathBuf {
        self.dir(id).join("work")
    }

    /// The private directory where the fallback strategies (kernels before 6.15) attach their temporary mounts.
    fn staging(&self) -> PathBuf {
        self.root.join(STAGING)
    }

    /// An empty directory (mode 0755), the lower layer of a composed root without parents.
    fn empty_dir(&self) -> Result<PathBuf> {
        let dir = self.root.join("empty");
        if !dir.exists() {
            mkdir(&dir, 0o755)?;
        }
        Ok(dir)
    }

    /// Where the composed root of a user-namespaced snapshot is mounted.
    pub(crate) fn rootfs(&self, id: u64) -> PathBuf {
        self.dir(id).join("rootfs")
    }

    fn crash_point(&self, step: &str) {
        if self.options.crash_at.as_deref() == Some(step) {
            let _ = rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::KILL);
            std::thread::sleep(std::time::Duration::from_secs(60));
        }
    }

    fn get(&self, key: &str) -> Result<Record> {
        self.store.get(key)?.ok_or_else(|| Error::not_found(key))
    }

    fn locked(&self) -> std::sync::MutexGuard<'_, ()> {
        self.lock.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Ids of `parent` and its ancestors, top-most first.
    fn chain(&self, parent: &str) -> Result<Vec<u64>> {
        let mut out = Vec::new();
        let mut key = parent.to_string();
        while !key.is_empty() {
            let rec = self.store.get(&key)?.ok_or_else(|| Error::NotFound(format!("parent {key:?} not found")))?;
            if rec.kind != Kind::Committed {
                return Err(Error::FailedPrecondition(format!("parent {key:?} is not committed")));
            }
            out.push(rec.id);
            key = rec.parent;
        }
        Ok(out)
    }

    /// Information about `key`.
    ///
    /// # Errors
    /// [`Error::NotFound`].
    ///
    /// ```no_run
    /// # let s = layermount_snapshotter::Snapshotter::open("/var/lib/lms", Default::default())?;
    /// println!("parent: {}", s.stat("default/3/c1")?.parent);
    /// # Ok::<(), layermount_snapshotter::Error>(())
    /// ```
    pub fn stat(&self, key: &str) -> Result<Info> {
        Ok(info(key, &self.get(key)?))
    }

    /// Change the labels of `info.name`: all of them (no field paths, or `labels`), or those named `labels.<key>`
    /// (set from `info.labels`, removed if absent there).
    ///
    /// # Errors
    /// [`Error::NotFound`]; [`Error::InvalidArgument`] for a field other than labels.
    ///
    /// ```no_run
    /// # let s = layermount_snapshotter::Snapshotter::open("/var/lib/lms", Default::default())?;
    /// let mut info = s.stat("l1")?;
    /// info.labels.insert("containerd.io/gc.root".into(), "yes".into());
    /// s.update(info, Some(vec!["labels.containerd.io/gc.root".into()]))?;
    /// # Ok::<(), layermount_snapshotter::Error>(())
    /// ```
    pub fn update(&self, info_in: Info, fieldpaths: Option<Vec<String>>) -> Result<Info> {
        let _l = self.locked();
        let paths = fieldpaths.unwrap_or_default();
        let rec = self.store.update(&info_in.name, |rec| {
            if paths.is_empty() {
                rec.labels = info_in.labels.clone().into_iter().collect();
            }
            for p in &paths {
                if p == "labels" {
                    rec.labels = info_in.labels.clone().into_iter().collect();
                } else if let Some(k) = p.strip_prefix("labels.") {
                    match info_in.labels.get(k) {
                        Some(v) => rec.labels.insert(k.to_string(), v.clone()),
                        None => rec.labels.remove(k),
                    };
                } else {
                    return Err(Error::InvalidArgument(format!("cannot update field {p:?} of a snapshot")));
                }
            }
            Ok(())
        })?;
        Ok(info(&info_in.name, &rec))
    }

    /// Disk usage of `key`: measured when it was committed, measured now for an active snapshot.
    ///
    /// # Errors
    /// [`Error::NotFound`], or the directory cannot be read.
    ///
    /// ```no_run
    /// # let s = layermount_snapshotter::Snapshotter::open("/var/lib/lms", Default::default())?;
    /// let u = s.usage("l1")?;
    /// println!("{} bytes in {} inodes", u.size, u.inodes);
    /// # Ok::<(), layermount_snapshotter::Error>(())
    /// ```
    pub fn usage(&self, key: &str) -> Result<Usage> {
        let rec = self.get(key)?;
        let (size, inodes) = match rec.usage {
            Some(u) => u,
            None => measure(&self.fs(rec.id))?,
        };
        Ok(Usage { size, inodes })
    }

    /// The mounts of an active or view snapshot (a composed root that vanished, after a reboot, is composed
    /// again).
    ///
    /// # Errors
    /// [`Error::NotFound`]; [`Error::FailedPrecondition`] for a committed snapshot; composing errors.
    ///
    /// ```no_run
    /// # let s = layermount_snapshotter::Snapshotter::open("/var/lib/lms", Default::default())?;
    /// for m in s.mounts("c1")? {
    ///     println!("{} {} {:?}", m.r#type, m.source, m.options);
    /// }
    /// # Ok::<(), layermount_snapshotter::Error>(())
    /// ```
    pub fn mounts(&self, key: &str) -> Result<Vec<Mount>> {
        let rec = self.get(key)?;
        if rec.idmap.is_some() {
            let attached = match &rec.root {
                Some(r) => roots::decode(r)?.is_attached()?,
                None => false,
            };
            if !attached {
                let _l = self.locked();
                let rec = self.get(key)?;
                let chain = self.chain(&rec.parent)?;
                let root = self.compose(rec.id, &chain, &rec)?;
                self.store.update(key, |r| {
                    r.root = Some(root);
                    Ok(())
                })?;
            }
        }
        self.mounts_of(&rec)
    }

    fn mounts_of(&self, rec: &Record) -> Result<Vec<Mount>> {
        let readonly = match rec.kind {
            Kind::Committed => {
                return Err(Error::FailedPrecondition("a committed snapshot has no mounts".into()));
            }
            Kind::View => true,
            Kind::Active => false,
        };
        if rec.idmap.is_some() {
            return Ok(vec![bind(&self.rootfs(rec.id), readonly)]);
        }
        let chain = self.chain(&rec.parent)?;
        let lowerdir = || {
            let dirs: Vec<String> = chain.iter().map(|id| self.fs(*id).display().to_string()).collect();
            format!("lowerdir={}", dirs.join(":"))
        };
        Ok(vec![match (rec.kind, chain.len()) {
            (Kind::Active, 0) => bind(&self.fs(rec.id), false),
            (Kind::Active, _) => Mount {
                r#type: "overlay".into(),
                source: "overlay".into(),
                target: String::new(),
                options: vec![
                    format!("workdir={}", self.work(rec.id).display()),
                    format!("upperdir={}", self.fs(rec.id).display()),
                    lowerdir(),
                ],
            },
            (_, 0) => bind(&self.fs(rec.id), true),
            (_, 1) => bind(&self.fs(chain[0]), true),
            (_, _) => Mount {
                r#type: "overlay".into(),
                source: "overlay".into(),
                target: String::new(),
                options: vec![lowerdir()],
            },
        }])
    }

    /// Make a new active (`Prepare`) or view (`View`) snapshot `key` on `parent` and return its mounts.
    ///
    /// # Errors
    /// [`Error::AlreadyExists`]; [`Error::NotFound`] / [`Error::FailedPrecondition`] for the parent;
    /// [`Error::InvalidArgument`] for bad mapping labels; composing errors (then nothing is left behind).
    ///
    /// ```no_run
    /// use layermount_snapshotter::{Kind, LABEL_GIDMAPPING, LABEL_UIDMAPPING, Snapshotter};
    /// # let s = Snapshotter::open("/var/lib/lms", Default::default())?;
    /// let labels = [(LABEL_UIDMAPPING, "0:100000:65536"), (LABEL_GIDMAPPING, "0:100000:65536")];
    /// let labels = labels.into_iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    /// let mounts = s.create(Kind::Active, "c1", "l2", labels)?; // a bind of the composed root
    /// # Ok::<(), layermount_snapshotter::Error>(())
    /// ```
    pub fn create(&self, kind: Kind, key: &str, parent: &str, labels: HashMap<String, String>) -> Result<Vec<Mount>> {
        let _l = self.locked();
        if self.store.get(key)?.is_some() {
            return Err(Error::AlreadyExists(format!("snapshot {key:?} already exists")));
        }
        let chain = self.chain(parent)?;
        let labels: BTreeMap<String, String> = labels.into_iter().collect();
        let idmap = match (labels.get(LABEL_UIDMAPPING), labels.get(LABEL_GIDMAPPING)) {
            (None, None) => None,
            (Some(uid), Some(gid)) => Some(Idmapping { uid: uid.clone(), gid: gid.clone() }),
            (Some(uid), None) => Some(Idmapping { uid: uid.clone(), gid: uid.clone() }),
            (None, Some(_)) => {
                return Err(Error::InvalidArgument(format!("{LABEL_GIDMAPPING} without {LABEL_UIDMAPPING}")));
            }
        };
        let off = |k| labels.get(k).is_some_and(|v: &String| v == "false");
        let fixups = self.options.fixups && !off(LABEL_FIXUPS) && !off(LABEL_FIXUPS_INHERITED);
        let now = SystemTime::now();
        let mut rec = Record {
            id: self.store.next_id()?,
            kind,
            parent: parent.to_string(),
            labels,
            created: now,
            updated: now,
            idmap,
            fixups,
            root: None,
            usage: None,
        };
        if let Some(m) = &rec.idmap {
            // Bad maps are refused before anything is made on disk.
            parse_maps(m)?;
        }
        self.crash_point("prepare:after-id");
        let dir = self.dir(rec.id);
        mkdir(&dir, 0o711)?;
        let made = (|| {
            mkdir(&self.fs(rec.id), 0o755)?;
            mkdir(&self.work(rec.id), 0o700)?;
            self.crash_point("prepare:after-mkdir");
            if rec.idmap.is_some() {
                rec.root = Some(self.compose(rec.id, &chain, &rec)?);
                self.crash_point("prepare:after-compose");
            }
            self.store.insert(key, &rec)?;
            self.crash_point("prepare:after-insert");
            self.mounts_of(&rec)
        })();
        if made.is_err() {
            if let Some(root) = &rec.root {
                let _ = roots::release(root);
            }
            let _ = layermount::remove_all(&dir);
        }
        made
    }

    /// Compose the root of a user-namespaced snapshot at [`Self::rootfs`] and return the record of its mount.
    fn compose(&self, id: u64, chain: &[u64], rec: &Record) -> Result<Vec<u8>> {
        let m = rec.idmap.as_ref().expect("compose needs a mapping");
        let (uid, gid) = parse_maps(m)?;
        let ns = UserNamespace::cached(&uid, &gid)?;
        let target = self.rootfs(id);
        let lowers: Vec<PathBuf> = chain.iter().map(|i| self.fs(*i)).collect();
        let guard = match (rec.kind, lowers.len()) {
            // An overlay needs a lower layer: a snapshot without parents gets the store's empty directory.
            (Kind::Active, 0) => Overlay::new()
                .lower(self.empty_dir()?)
                .upper(self.fs(id), self.work(id))
                .idmap(ns)
                .staging_dir(self.staging())
                .mount_at(&target)?,
            // On the image's stack (its idmapped layers composed once per image and mapping), or flat where the
            // kernel cannot stack them.
            (Kind::Active, _) => {
                let (overlay, _how) = self.stacks.compose(&lowers, Some(&ns))?;
                overlay.upper(self.fs(id), self.work(id)).staging_dir(self.staging()).mount_at(&target)?
            }
            // A view is a read-only overlay even of one layer (with the store's empty directory as a second
            // lower: overlay wants two without an upper), so that its root is a filesystem of its own whose other
            // mounts tell whether it is in use.
            (_, n) => {
                let lowers = match n {
                    0 => vec![self.fs(id), self.empty_dir()?],
                    1 => vec![lowers[0].clone(), self.empty_dir()?],
                    _ => lowers,
                };
                Overlay::new()
                    .lowers(&lowers)
                    .idmap(ns)
                    .attrs(MountAttrs::RDONLY)
                    .staging_dir(self.staging())
                    .mount_at(&target)?
            }
        };
        let record = roots::record(guard)?;
        if rec.kind == Kind::Active
            && rec.fixups
            && let Err(e) = fixups::apply(&target, &uid, &gid)
        {
            let _ = roots::release(&record);
            return Err(e);
        }
        Ok(record)
    }

    /// Commit the active snapshot `key` as `name`. A composed root is unmounted first (refused while in use).
    ///
    /// # Errors
    /// [`Error::NotFound`]; [`Error::AlreadyExists`] (`name`); [`Error::FailedPrecondition`] (not active, or its
    /// root still in use).
    ///
    /// ```no_run
    /// # let s = layermount_snapshotter::Snapshotter::open("/var/lib/lms", Default::default())?;
    /// s.commit("sha256:abc", "extract-1", Default::default())?;
    /// # Ok::<(), layermount_snapshotter::Error>(())
    /// ```
    pub fn commit(&self, name: &str, key: &str, labels: HashMap<String, String>) -> Result<()> {
        let _l = self.locked();
        let rec = self.get(key)?;
        if rec.kind != Kind::Active {
            return Err(Error::FailedPrecondition(format!("snapshot {key:?} is not active")));
        }
        if self.store.get(name)?.is_some() {
            return Err(Error::AlreadyExists(format!("snapshot {name:?} already exists")));
        }
        if let Some(root) = &rec.root {
            self.release_root(key, root)?;
            self.store.update(key, |r| {
                r.root = None;
                Ok(())
            })?;
        }
        let usage = measure(&self.fs(rec.id))?;
        self.crash_point("commit:before-commit");
        self.store.commit(key, name, labels.into_iter().collect(), usage)?;
        self.crash_point("commit:after-commit");
        Ok(())
    }

    /// Refuse while the composed root has another mount (a container's `rootfs`); otherwise detach it.
    fn release_root(&self, key: &str, root: &[u8]) -> Result<()> {
        let others = roots::decode(root)?.other_mounts()?;
        if !others.is_empty() {
            let list: Vec<String> = others.iter().map(|p| p.display().to_string()).collect();
            return Err(Error::FailedPrecondition(format!(
                "snapshot {key:?} is in use: its root is also mounted at {}",
                list.join(", ")
            )));
        }
        roots::release(root)
    }

    /// Remove `key`: refused while it has children or its composed root is in use; then its root is detached (after
    /// checking it is the recorded mount), its record deleted, and its directory removed with `remove_all`, which
    /// never crosses a mount.
    ///
    /// # Errors
    /// [`Error::NotFound`]; [`Error::FailedPrecondition`] (children, in use).
    ///
    /// ```no_run
    /// use layermount_snapshotter::Error;
    /// # let s = layermount_snapshotter::Snapshotter::open("/var/lib/lms", Default::default())?;
    /// match s.remove("c1") {
    ///     Err(Error::FailedPrecondition(why)) => eprintln!("not now: {why}"),
    ///     other => other?,
    /// }
    /// # Ok::<(), layermount_snapshotter::Error>(())
    /// ```
    pub fn remove(&self, key: &str) -> Result<()> {
        let _l = self.locked();
        let rec = self.get(key)?;
        if let Some((child, _)) = self.store.all()?.into_iter().find(|(_, r)| r.parent == key) {
            return Err(Error::FailedPrecondition(format!("cannot remove snapshot {key:?}: {child:?} is its child")));
        }
        if let Some(root) = &rec.root {
            self.release_root(key, root)?;
            self.crash_point("remove:after-release");
        } else if rec.kind == Kind::Active {
            // A plain snapshot is mounted by its user (the shim), not here: refuse while an overlay writes into it.
            let fs = self.fs(rec.id);
            let table = MountTable::current()?;
            let live = table
                .mounts()
                .iter()
                .find(|m| m.fs_type == "overlay" && m.super_option("upperdir").is_some_and(|u| Path::new(u) == fs));
            if let Some(m) = live {
                return Err(Error::FailedPrecondition(format!(
                    "snapshot {key:?} is in use: the overlay at {} writes into it",
                    m.mount_point.display()
                )));
            }
        }
        self.store.remove(key)?;
        if rec.kind == Kind::Committed {
            // Stacks hold layers open; those of a removed layer are idle (its children are gone) and go now.
            self.stacks.clear();
        }
        self.crash_point("remove:after-delete");
        let dir = self.dir(rec.id);
        if let Err(e) = layermount::remove_all(&dir) {
            // The record is gone: the directory is an orphan now, removed on the next start if it can be.
            eprintln!("layermount-snapshotter: remove {key:?}: {e}");
        }
        Ok(())
    }

    /// Every snapshot that matches `filters` (containerd's filter syntax).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a bad filter; database errors.
    ///
    /// ```no_run
    /// # let s = layermount_snapshotter::Snapshotter::open("/var/lib/lms", Default::default())?;
    /// let roots = s.list(&[r#"labels."containerd.io/gc.root""#.to_string()])?;
    /// # Ok::<(), layermount_snapshotter::Error>(())
    /// ```
    pub fn list(&self, filters: &[String]) -> Result<Vec<Info>> {
        let filters = Filters::parse(filters)?;
        Ok(self
            .store
            .all()?
            .into_iter()
            .filter(|(name, rec)| {
                filters.matches(&Fields { name, parent: &rec.parent, kind: rec.kind.as_str(), labels: &rec.labels })
            })
            .map(|(name, rec)| info(&name, &rec))
            .collect())
    }
}

fn parse_maps(m: &Idmapping) -> Result<(IdMap, IdMap)> {
    let parse = |label: &str, text: &str| {
        IdMap::parse(text).map_err(|e| Error::InvalidArgument(format!("label {label}={text:?}: {e}")))
    };
    Ok((parse(LABEL_UIDMAPPING, &m.uid)?, parse(LABEL_GIDMAPPING, &m.gid)?))
}

/// The gRPC face of a [`Snapshotter`]: each call runs on tokio's blocking pool; a failure other than NotFound is
/// logged in one line. [`serve`](crate::serve) uses it; a server of one's own can too:
///
/// ```no_run
/// use std::sync::Arc;
/// use layermount_snapshotter::{Service, Snapshotter};
/// let s = Snapshotter::open("/var/lib/layermount-snapshotter", Default::default())?;
/// let grpc = containerd_snapshots::server(Arc::new(Service(Arc::new(s))));
/// # Ok::<(), layermount_snapshotter::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Service(pub Arc<Snapshotter>);

impl Service {
    /// Run `f` on the blocking pool; a failure is logged (one line naming the operation) and returned.
    async fn run<T: Send + 'static>(
        &self,
        op: &str,
        f: impl FnOnce(&Snapshotter) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let s = self.0.clone();
        let r = tokio::task::spawn_blocking(move || f(&s))
            .await
            .map_err(|e| Error::internal(format!("task failed: {e}")))
            .and_then(|r| r);
        if let Err(e) = &r
            && e.code() != containerd_snapshots::tonic::Code::NotFound
        {
            eprintln!("layermount-snapshotter: {op}: {e}");
        }
        r
    }
}

/// The stream `List` answers with.
pub type InfoStream = tokio_stream::Iter<std::vec::IntoIter<Result<Info>>>;

#[containerd_snapshots::tonic::async_trait]
impl containerd_snapshots::Snapshotter for Service {
    type Error = Error;
    type InfoStream = InfoStream;

    async fn stat(&self, key: String) -> Result<Info> {
        self.run("stat", move |s| s.stat(&key)).await
    }

    async fn update(&self, info: Info, fieldpaths: Option<Vec<String>>) -> Result<Info> {
        self.run("update", move |s| s.update(info, fieldpaths)).await
    }

    async fn usage(&self, key: String) -> Result<Usage> {
        self.run("usage", move |s| s.usage(&key)).await
    }

    async fn mounts(&self, key: String) -> Result<Vec<Mount>> {
        self.run("mounts", move |s| s.mounts(&key)).await
    }

    async fn prepare(&self, key: String, parent: String, labels: HashMap<String, String>) -> Result<Vec<Mount>> {
        self.run("prepare", move |s| s.create(Kind::Active, &key, &parent, labels)).await
    }

    async fn view(&self, key: String, parent: String, labels: HashMap<String, String>) -> Result<Vec<Mount>> {
        self.run("view", move |s| s.create(Kind::View, &key, &parent, labels)).await
    }

    async fn commit(&self, name: String, key: String, labels: HashMap<String, String>) -> Result<()> {
        self.run("commit", move |s| s.commit(&name, &key, labels)).await
    }

    async fn remove(&self, key: String) -> Result<()> {
        self.run("remove", move |s| s.remove(&key)).await
    }

    async fn list(&self, _snapshotter: String, filters: Vec<String>) -> Result<InfoStream> {
        let infos = self.run("list", move |s| s.list(&filters)).await?;
        Ok(tokio_stream::iter(infos.into_iter().map(Ok).collect::<Vec<_>>()))
    }
}
