//! What a containerd snapshotter does with the crate: Prepare, Commit, View, Mounts and Remove over a
//! `snapshots/<id>/{fs,work}` store, written against the public API only. Mounts are returned as `MountSpec`s
//! (containerd's `Mount` shape) made by `Overlay::to_spec`; layers are unpacked into extract snapshots with
//! `apply_into`; Commit checks `is_committed`; Remove refuses a root that is still in use
//! (`MountRecord::other_mounts`) and deletes with the mount-safe `remove_all`; on start, `recover_dirs` cleans what
//! a crash left.
//!
//! Run as root, in a mount namespace of its own so nothing reaches the host's table:
//!
//! ```text
//! unshare --mount --propagation private cargo run --example snapshotter
//! ```
//!
//! Steps (each printed): start (recovery), unpack two layers (Prepare an extract snapshot, `apply_into` its `fs`,
//! Commit), a cancelled unpack (the reader returns `Interrupted`: nothing committed, Commit refused), Prepare two
//! containers (a plain one, and one idmapped 0:100000:65536 whose upper is prepared for the container's root),
//! mount the specs as a runtime would, Remove refused while a runtime's bind of the root exists, then allowed; a
//! View; Remove of a parent refused; a crash and a restart (`recover_dirs`); everything removed.

use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use layermount::{
    ApplyOptions, ErrorKind, IdMap, MountAttrs, MountGuard, MountRecord, MountSpec, Overlay, UserNamespace, apply_into,
    is_committed, recover_dirs, remove_all,
};

type Res<T> = Result<T, Box<dyn std::error::Error>>;

fn main() {
    if let Err(e) = run() {
        eprintln!("snapshotter: {e}");
        std::process::exit(1);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Active,
    View,
    Committed,
}

/// One snapshot's metadata, kept in `snapshots/<id>/meta` (a real snapshotter keeps it in a database).
#[derive(Debug, Clone)]
struct Info {
    id: u64,
    key: String,
    kind: Kind,
    parent: Option<u64>,
    idmap: Option<IdMap>,
    extract: bool,
}

/// The store: `ROOT/snapshots/<id>/{fs,work,meta}`.
struct Snapshotter {
    root: PathBuf,
}

impl Snapshotter {
    /// Open the store and clean up after a crash: the staging directories and temporary markers an interrupted
    /// apply left beside each `fs`, and extract snapshots whose apply never committed.
    fn open(root: &Path) -> Res<Self> {
        let s = Self { root: root.to_path_buf() };
        fs::create_dir_all(s.snapshots())?;
        let all = s.all()?;
        let report = recover_dirs(all.iter().map(|i| s.fs(i.id)))?;
        println!(
            "recovered: removed {}, incomplete {}, committed {}",
            report.removed.len(),
            report.incomplete.len(),
            report.committed.len()
        );
        for p in &report.removed {
            println!("  removed {}", p.display());
        }
        for (dir, why) in &report.incomplete {
            let Some(info) = all.iter().find(|i| s.fs(i.id) == *dir) else { continue };
            if info.kind == Kind::Active && info.extract {
                println!("  {} ({}): {why}; removing the unfinished extract snapshot", info.key, dir.display());
                s.remove(&info.key)?;
            }
        }
        Ok(s)
    }

    fn snapshots(&self) -> PathBuf {
        self.root.join("snapshots")
    }
    fn dir(&self, id: u64) -> PathBuf {
        self.snapshots().join(id.to_string())
    }
    fn fs(&self, id: u64) -> PathBuf {
        self.dir(id).join("fs")
    }
    fn work(&self, id: u64) -> PathBuf {
        self.dir(id).join("work")
    }
    fn record_path(&self, id: u64) -> PathBuf {
        self.dir(id).join("mount.record")
    }

    fn all(&self) -> Res<Vec<Info>> {
        let mut out = Vec::new();
        for e in fs::read_dir(self.snapshots())? {
            let meta = e?.path().join("meta");
            if let Ok(text) = fs::read_to_string(&meta) {
                out.push(parse_info(&text).ok_or_else(|| format!("bad metadata {}", meta.display()))?);
            }
        }
        out.sort_by_key(|i| i.id);
        Ok(out)
    }

    fn get(&self, key: &str) -> Res<Info> {
        Ok(self.all()?.into_iter().find(|i| i.key == key).ok_or_else(|| format!("snapshot {key}: not found"))?)
    }

    fn save(&self, info: &Info) -> Res<()> {
        let kind = format!("{:?}", info.kind).to_lowercase();
        let mut text = format!("id {}\nkey {}\nkind {kind}\nextract {}\n", info.id, info.key, info.extract);
        if let Some(p) = info.parent {
            text.push_str(&format!("parent {p}\n"));
        }
        if let Some(m) = &info.idmap {
            text.push_str(&format!("idmap {m}\n"));
        }
        let tmp = self.dir(info.id).join("meta.tmp");
        fs::write(&tmp, text)?;
        fs::rename(tmp, self.dir(info.id).join("meta"))?;
        Ok(())
    }

    /// The `fs` directories of `parent` and its ancestors, top-most first (overlay's `lowerdir=` order).
    fn chain(&self, parent: Option<u64>) -> Res<Vec<PathBuf>> {
        let all = self.all()?;
        let mut out = Vec::new();
        let mut at = parent;
        while let Some(id) = at {
            out.push(self.fs(id));
            at = all.iter().find(|i| i.id == id).ok_or("broken parent chain")?.parent;
        }
        Ok(out)
    }

    fn create(&self, key: &str, parent: Option<&str>, kind: Kind, idmap: Option<IdMap>) -> Res<Info> {
        if self.get(key).is_ok() {
            return Err(format!("snapshot {key}: already exists").into());
        }
        let parent = match parent {
            Some(p) => {
                let info = self.get(p)?;
                if info.kind != Kind::Committed {
                    return Err(format!("parent {p} is not committed").into());
                }
                Some(info.id)
            }
            None => None,
        };
        let id = self.all()?.iter().map(|i| i.id).max().unwrap_or(0) + 1;
        fs::create_dir(self.dir(id))?;
        fs::create_dir(self.fs(id))?;
        if kind == Kind::Active {
            fs::create_dir(self.work(id))?;
        }
        let info = Info { id, key: key.to_string(), kind, parent, idmap, extract: key.starts_with("extract-") };
        self.save(&info)?;
        Ok(info)
    }

    /// Prepare: a new active snapshot on `parent`, its mounts returned. With an id map, the layers are idmapped and
    /// the (empty) upper is handed to the container's root before the spec goes out: `Overlay::prepare`.
    fn prepare(&self, key: &str, parent: Option<&str>, idmap: Option<IdMap>) -> Res<Vec<MountSpec>> {
        let info = self.create(key, parent, Kind::Active, idmap)?;
        if let Some(overlay) = self.overlay(&info)? {
            overlay.prepare()?;
        }
        self.mounts_of(&info)
    }

    /// View: a read-only snapshot of `parent`.
    fn view(&self, key: &str, parent: &str) -> Res<Vec<MountSpec>> {
        let info = self.create(key, Some(parent), Kind::View, None)?;
        self.mounts_of(&info)
    }

    /// Mounts: what Prepare or View returned, again.
    fn mounts(&self, key: &str) -> Res<Vec<MountSpec>> {
        self.mounts_of(&self.get(key)?)
    }

    /// The overlay of an active snapshot with a parent, or of a view with two or more layers.
    fn overlay(&self, info: &Info) -> Res<Option<Overlay>> {
        let lowers = self.chain(info.parent)?;
        let mut overlay = match (info.kind, lowers.len()) {
            (Kind::Active, 1..) => Overlay::new().lowers(&lowers).upper(self.fs(info.id), self.work(info.id)),
            (Kind::View, 2..) => Overlay::new().lowers(&lowers).attrs(MountAttrs::RDONLY),
            _ => return Ok(None),
        };
        if let Some(map) = &info.idmap {
            overlay = overlay.idmap(UserNamespace::cached(map, map)?);
        }
        Ok(Some(overlay))
    }

    fn mounts_of(&self, info: &Info) -> Res<Vec<MountSpec>> {
        if let Some(overlay) = self.overlay(info)? {
            return Ok(vec![overlay.to_spec()?]);
        }
        // No parent (active), or a single layer (view): a bind of the directory, as containerd's overlay
        // snapshotter returns.
        let spec = match info.kind {
            Kind::View => {
                MountSpec::new("bind", self.fs(info.parent.ok_or("view without parent")?), "").with_options("rbind,ro")
            }
            _ => MountSpec::new("bind", self.fs(info.id), "").with_options("rbind"),
        };
        Ok(vec![spec])
    }

    /// Commit: an active snapshot becomes a committed one named `name`. An extract snapshot must hold a committed
    /// layer: its apply finished (`is_committed`).
    fn commit(&self, name: &str, key: &str) -> Res<()> {
        let mut info = self.get(key)?;
        if info.kind != Kind::Active {
            return Err(format!("commit {key}: not an active snapshot").into());
        }
        if info.extract && !is_committed(self.fs(info.id))? {
            return Err(format!("commit {key}: {} holds no committed layer", self.fs(info.id).display()).into());
        }
        fs::remove_dir_all(self.work(info.id))?;
        info.key = name.to_string();
        info.kind = Kind::Committed;
        self.save(&info)?;
        Ok(())
    }

    /// Remove: refused while another snapshot builds on it, or while the root composed from it is in use beyond
    /// the mount recorded for it (a runtime's bind of it, a running container); then that mount is taken down
    /// (checked to be the recorded one) and the directory removed without crossing any mount.
    fn remove(&self, key: &str) -> Res<()> {
        let info = self.get(key)?;
        if self.all()?.iter().any(|i| i.parent == Some(info.id)) {
            return Err(format!("remove {key}: other snapshots build on it").into());
        }
        let record_path = self.record_path(info.id);
        if let Ok(bytes) = fs::read(&record_path) {
            let record = MountRecord::decode(&bytes)?;
            if record.is_attached()? {
                let users = record.other_mounts()?;
                if let Some(user) = users.first() {
                    return Err(format!("remove {key}: its root is still in use at {}", user.display()).into());
                }
                MountGuard::adopt_record(&record)?.unmount()?;
                println!("  unmounted {} (the recorded mount)", record.target().display());
            }
        }
        let stats = remove_all(self.dir(info.id))?;
        println!("  removed {} ({stats:?})", self.dir(info.id).display());
        Ok(())
    }

    /// What a runtime does with Prepare's mounts: mount them at `target`, and keep a record of the mount beside
    /// the snapshot so Remove (in this or a later process) can check and take it down.
    fn mount(&self, key: &str, target: &Path) -> Res<MountGuard> {
        let info = self.get(key)?;
        let mut spec = self.mounts(key)?.remove(0);
        spec.target = target.to_path_buf();
        fs::create_dir_all(target)?;
        let guard = spec.mount()?;
        if let Some(record) = guard.record() {
            fs::write(self.record_path(info.id), record.encode())?;
        }
        Ok(guard)
    }
}

fn parse_info(text: &str) -> Option<Info> {
    let field = |k: &str| text.lines().find_map(|l| l.strip_prefix(k)?.strip_prefix(' '));
    Some(Info {
        id: field("id")?.parse().ok()?,
        key: field("key")?.to_string(),
        kind: match field("kind")? {
            "active" => Kind::Active,
            "view" => Kind::View,
            "committed" => Kind::Committed,
            _ => return None,
        },
        parent: match field("parent") {
            Some(p) => Some(p.parse().ok()?),
            None => None,
        },
        idmap: match field("idmap") {
            Some(m) => Some(m.parse().ok()?),
            None => None,
        },
        extract: field("extract")? == "true",
    })
}

fn show(specs: &[MountSpec]) -> String {
    specs
        .iter()
        .map(|s| format!("{} {} [{}]", s.kind, s.source.to_string_lossy(), s.options_text().to_string_lossy()))
        .collect::<Vec<_>>()
        .join("; ")
}

/// A layer blob as a registry serves it: a gzip-compressed tar.
fn layer_blob(entries: &[(&str, Option<&str>)]) -> Res<Vec<u8>> {
    let mut tar = tar::Builder::new(flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast()));
    for (path, data) in entries {
        let mut h = tar::Header::new_ustar();
        match data {
            Some(d) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(0o644);
                h.set_size(d.len() as u64);
                tar.append_data(&mut h, path, d.as_bytes())?;
            }
            None => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(0o755);
                h.set_size(0);
                tar.append_data(&mut h, path, io::empty())?;
            }
        }
    }
    Ok(tar.into_inner()?.finish()?)
}

/// A reader whose caller gives up after `left` bytes: it returns `Interrupted`, which `apply_into` reports as
/// `ErrorKind::Cancelled`.
struct Cancelling<'a> {
    blob: &'a [u8],
    left: usize,
}

impl Read for Cancelling<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            return Err(io::Error::new(io::ErrorKind::Interrupted, "the pull was cancelled"));
        }
        let n = buf.len().min(self.left).min(self.blob.len());
        buf[..n].copy_from_slice(&self.blob[..n]);
        self.blob = &self.blob[n..];
        self.left -= n;
        Ok(n)
    }
}

fn run() -> Res<()> {
    let root = tempfile::Builder::new().prefix("layermount-snapshotter-").tempdir()?.keep();
    let result = scenario(&root);
    let cleanup = remove_all(&root);
    result?;
    cleanup?;
    println!("removed {}", root.display());
    println!("ok");
    Ok(())
}

fn scenario(root: &Path) -> Res<()> {
    println!("== start ({})", root.display());
    let snap = Snapshotter::open(root)?;

    // Unpack an image: per layer, an extract snapshot on the previous layer, the layer applied into its `fs`
    // (the parents given so whiteouts and opaque directories are right), committed under the layer's chain id.
    println!("== unpack");
    let layers = [
        layer_blob(&[("etc", None), ("etc/hostname", Some("image\n")), ("etc/motd", Some("base\n"))])?,
        layer_blob(&[("app", None), ("app/run.sh", Some("#!/bin/sh\n")), ("etc/.wh.motd", Some(""))])?,
    ];
    let mut parent: Option<String> = None;
    for (n, blob) in layers.iter().enumerate() {
        let key = format!("extract-{n}");
        let specs = snap.prepare(&key, parent.as_deref(), None)?;
        let info = snap.get(&key)?;
        println!("prepare {key}: {}", show(&specs));
        let mut opts = ApplyOptions::new();
        for p in snap.chain(info.parent)? {
            opts = opts.parent(p);
        }
        let applied = apply_into(&blob[..], snap.fs(info.id), &opts)?;
        println!("applied {} into {} ({} entries)", applied.diff_id, snap.fs(info.id).display(), applied.stats.entries);
        let name = format!("layer-{n}");
        snap.commit(&name, &key)?;
        println!("commit {key} as {name}: ok");
        parent = Some(name);
    }

    // A pull cancelled halfway: the reader says `Interrupted`; nothing is committed and Commit refuses.
    let key = "extract-cancelled";
    snap.prepare(key, parent.as_deref(), None)?;
    let fs_dir = snap.fs(snap.get(key)?.id);
    let reader = Cancelling { blob: &layers[0], left: layers[0].len() / 2 };
    let err = apply_into(reader, &fs_dir, &ApplyOptions::new()).expect_err("a cancelled apply");
    println!("cancelled: {err} (kind {:?})", err.kind());
    assert_eq!(err.kind(), ErrorKind::Cancelled);
    println!("{} left empty: {}", fs_dir.display(), fs::read_dir(&fs_dir)?.next().is_none());
    match snap.commit("never", key) {
        Err(e) => println!("commit refused: {e}"),
        Ok(()) => return Err("a cancelled extract snapshot was committed".into()),
    }
    snap.remove(key)?;

    // Containers: Prepare on the image's top layer, mounts returned as specs.
    println!("== containers");
    let image = parent.as_deref();
    let specs = snap.prepare("ctr-plain", image, None)?;
    println!("prepare ctr-plain: {}", show(&specs));
    let map: IdMap = "0:100000:65536".parse()?;
    let specs = snap.prepare("ctr-idmapped", image, Some(map.clone()))?;
    println!("prepare ctr-idmapped: {}", show(&specs));
    let upper = snap.fs(snap.get("ctr-idmapped")?.id);
    let m = fs::metadata(&upper)?;
    println!("ctr-idmapped upper {} owned by {}:{} (the container's root)", upper.display(), m.uid(), m.gid());
    println!("mounts ctr-idmapped again: {}", show(&snap.mounts("ctr-idmapped")?));

    // The runtime mounts them.
    let plain_root = root.join("run/ctr-plain/rootfs");
    let guard = snap.mount("ctr-plain", &plain_root)?;
    fs::write(plain_root.join("new-file"), "written in the container\n")?;
    let landed = snap.fs(snap.get("ctr-plain")?.id).join("new-file");
    println!(
        "ctr-plain mounted at {}: etc/motd whited out: {}, wrote new-file into its upper: {}",
        plain_root.display(),
        !plain_root.join("etc/motd").exists(),
        landed.exists()
    );
    guard.leak(); // the runtime keeps it; the snapshotter holds its record
    let idmapped_root = root.join("run/ctr-idmapped/rootfs");
    let idmapped = snap.mount("ctr-idmapped", &idmapped_root)?;
    let m = fs::metadata(idmapped_root.join("etc/hostname"))?;
    println!("ctr-idmapped mounted: etc/hostname shows as {}:{} on the host (root in the container)", m.uid(), m.gid());
    idmapped.leak();

    // Remove while the runtime has bound the root elsewhere: refused. Once the bind is gone: allowed.
    println!("== remove");
    let bind_target = root.join("run/ctr-plain/bind");
    fs::create_dir_all(&bind_target)?;
    let bind = MountSpec::new("bind", &plain_root, &bind_target).with_options("rbind").mount()?;
    match snap.remove("ctr-plain") {
        Err(e) => println!("refused: {e}"),
        Ok(()) => return Err("removed a root still in use".into()),
    }
    bind.unmount()?;
    snap.remove("ctr-plain")?;
    println!("remove ctr-plain: ok; {} mounted: {}", plain_root.display(), is_mount_point(&plain_root)?);
    snap.remove("ctr-idmapped")?;

    // A view of the image, read-only.
    let specs = snap.view("view-0", image.ok_or("no image")?)?;
    println!("view view-0: {}", show(&specs));
    let view_root = root.join("run/view-0");
    let view = snap.mount("view-0", &view_root)?;
    let ro = fs::write(view_root.join("x"), "x").is_err();
    println!(
        "view-0: app/run.sh {}, etc/motd whited out: {}, read-only: {ro}",
        view_root.join("app/run.sh").exists(),
        !view_root.join("etc/motd").exists()
    );
    view.unmount()?;
    snap.remove("view-0")?;
    match snap.remove("layer-0") {
        Err(e) => println!("refused: {e}"),
        Ok(()) => return Err("removed a parent".into()),
    }

    // A crash in the middle of an unpack, then a restart.
    println!("== crash and restart");
    snap.prepare("extract-crashed", image, None)?;
    let crashed = snap.get("extract-crashed")?.id;
    let staging = snap.dir(crashed).join(".fs.partial-4242-0");
    fs::create_dir_all(staging.join("usr/lib"))?;
    fs::File::create(staging.join("usr/lib/half-written.so"))?.write_all(b"\x7fELF")?;
    fs::write(snap.dir(crashed).join(".fs.4242-1.commit.tmp"), "half a marker")?;
    drop(snap);
    let snap = Snapshotter::open(root)?;
    let left: Vec<String> = snap.all()?.into_iter().map(|i| i.key).collect();
    println!("after restart: {}", left.join(", "));
    for key in ["layer-1", "layer-0"] {
        snap.remove(key)?;
    }
    Ok(())
}

fn is_mount_point(path: &Path) -> Res<bool> {
    Ok(layermount::MountTable::current()?.mounts().iter().any(|m| m.mount_point == path))
}
