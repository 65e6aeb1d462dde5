//! What an OCI runtime does with the crate: read a bundle's `config.json`, build the container's idmapped root
//! filesystem from its `linux.uidMappings`/`gidMappings`, let the container's root write to it, and tear it down
//! later from another process (a shim, a restarted daemon) that knows only a record of the mount.
//!
//! Run as root, in a mount namespace of its own so nothing reaches the host's table:
//!
//! ```text
//! unshare --mount --propagation private cargo run --features oci-spec --example runtime_bundle [BUNDLE] [--layer DIR]...
//! ```
//!
//! * `BUNDLE`: a directory with a `config.json` (its `root.path` is where the root filesystem is mounted, its
//!   `linux.uidMappings`/`gidMappings` the container's maps). Without one, a bundle is written in a temp dir.
//! * `--layer DIR`: a lower layer, top-most first, as in `lowerdir=`. Without any, two small layers are made.
//!
//! Steps: compose the overlay with the config's map (the upper and work directories are prepared for the
//! container's root), apply the root filesystem fixups, mount the config's bind mounts (`["rbind", "idmap", "ro"]`
//! with the mount's own `uidMappings`/`gidMappings`) through `MountSpec::from_oci`, run a process as the container's root in a user namespace with that map (util-linux's
//! `nsenter`) that writes to `/`, check on the host that its files landed in the upper with its host ids, then
//! write a `MountRecord` of each mount to the state directory and let a second process (this program again) tear
//! them down from the records alone: `MountGuard::adopt_record` checks each mount is still the recorded one,
//! `MountRecord::other_mounts` that nothing else uses it, and the mount point the crate made is removed. Everything the example made is removed at the end with `remove_all`.

use std::fs;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use layermount::{Fixups, IdMap, MountGuard, MountRecord, MountSpec, MountTable, Overlay, UserNamespace, remove_all};
use oci_spec::runtime::{LinuxBuilder, LinuxIdMappingBuilder, MountBuilder, RootBuilder, Spec, SpecBuilder};

type Res<T> = Result<T, Box<dyn std::error::Error>>;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let outcome = match args.first().map(String::as_str) {
        Some("container-write") => container_write(Path::new(&args[1])),
        // The binds' records, then the root's (last).
        Some("teardown") => {
            args[1..].iter().enumerate().try_for_each(|(i, r)| teardown(Path::new(r), i == args.len() - 2))
        }
        _ => runtime(&args),
    };
    if let Err(e) = outcome {
        eprintln!("runtime_bundle: {e}");
        std::process::exit(1);
    }
}

/// The runtime's side: everything but the container's own write and the teardown.
fn runtime(args: &[String]) -> Res<()> {
    let mut bundle = None;
    let mut layers = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--layer" => layers.push(PathBuf::from(it.next().ok_or("--layer needs a directory")?)),
            _ if bundle.is_none() => bundle = Some(PathBuf::from(a)),
            _ => return Err(format!("unexpected argument {a:?}").into()),
        }
    }
    // Everything the example makes lives under one fresh directory, readable by the container's root (so it can
    // run this program from there), removed at the end.
    let work = tempfile::Builder::new().prefix("layermount-bundle-").tempdir()?.keep();
    fs::set_permissions(&work, fs::Permissions::from_mode(0o755))?;
    let result = run(&work, bundle, layers);
    let cleanup = remove_all(&work);
    result?;
    cleanup?;
    println!("removed {}", work.display());
    println!("ok");
    Ok(())
}

fn run(work: &Path, bundle: Option<PathBuf>, mut layers: Vec<PathBuf>) -> Res<()> {
    let bundle = match bundle {
        Some(b) => b,
        None => {
            let data = work.join("data");
            fs::create_dir(&data)?;
            fs::write(data.join("shared.txt"), "from the host\n")?;
            write_bundle(&work.join("bundle"), &data)?
        }
    };
    if layers.is_empty() {
        layers = make_layers(&work.join("layers"))?;
    }

    // 1. The config, as a runtime reads it.
    let spec = Spec::load(bundle.join("config.json"))?;
    let root = spec.root().as_ref().ok_or("config.json has no root")?;
    let rootfs = if root.path().is_absolute() { root.path().clone() } else { bundle.join(root.path()) };
    let linux = spec.linux().as_ref().ok_or("config.json has no linux section")?;
    let uid_map = IdMap::from_oci(linux.uid_mappings().as_deref().ok_or("config.json has no linux.uidMappings")?)?;
    let gid_map = IdMap::from_oci(linux.gid_mappings().as_deref().ok_or("config.json has no linux.gidMappings")?)?;
    println!("runtime (pid {}) read {}", std::process::id(), bundle.join("config.json").display());
    println!("root {}, uid map {uid_map}, gid map {gid_map}", rootfs.display());

    // 2. The root filesystem: the layers idmapped with the container's map, a fresh upper prepared for its root.
    let (upper, overlay_work) = (work.join("state/upper"), work.join("state/work"));
    fs::create_dir_all(&upper)?;
    fs::create_dir_all(&overlay_work)?;
    let ns = UserNamespace::cached(&uid_map, &gid_map)?;
    let guard = Overlay::new().lowers(&layers).upper(&upper, &overlay_work).idmap(ns.clone()).mount_at(&rootfs)?;
    println!("mounted {} layers at {} (mount id {:?})", layers.len(), rootfs.display(), guard.mount_id());
    let fixed = Fixups::new().idmap(&uid_map, &gid_map).apply(&rootfs)?;
    println!("fixups: {} changes (mount targets, /etc/mtab), owned by the container's root", fixed.changes.len());

    // The config's bind mounts, converted as they are (`idmap`/`ridmap` with the mount's own maps, or the
    // container's when it has none). The other mounts (proc, sysfs, ...) need the container's namespaces: a
    // runtime makes them inside. A runtime also resolves each destination inside the root (`RESOLVE_IN_ROOT`);
    // here the root is the example's own layers.
    let mut binds = Vec::new();
    for m in spec.mounts().as_deref().unwrap_or_default() {
        let mut mount = MountSpec::from_oci_with_maps(m, &uid_map, &gid_map)?;
        if !mount.options.iter().any(|o| o == "bind" || o == "rbind") {
            continue;
        }
        let inside = mount.target.strip_prefix("/").unwrap_or(&mount.target).to_path_buf();
        mount.target = rootfs.join(inside);
        fs::create_dir_all(&mount.target)?;
        println!(
            "mounting {} at {}: {}",
            mount.source.to_string_lossy(),
            mount.target.display(),
            mount.options_text().to_string_lossy()
        );
        binds.push(mount.mount()?);
    }

    // 3. The container's root writes to its `/`: a process in a user namespace with the config's map, as uid 0.
    let exe = work.join("runtime_bundle");
    fs::copy(std::env::current_exe()?, &exe)?;
    fs::set_permissions(&exe, fs::Permissions::from_mode(0o755))?;
    let userns = format!("--user=/proc/{}/fd/{}", std::process::id(), ns.as_fd().as_raw_fd());
    let status = Command::new("nsenter")
        .args([&userns, "--setuid", "0", "--setgid", "0", "--"])
        .arg(&exe)
        .arg("container-write")
        .arg(&rootfs)
        .status()
        .map_err(|e| format!("nsenter (util-linux): {e}"))?;
    if !status.success() {
        return Err(format!("the container's root could not write to its root filesystem ({status})").into());
    }
    let landed = upper.join("new-file");
    let m = fs::symlink_metadata(&landed)?;
    let expected = (uid_map.to_host(0).ok_or("map has no root")?, gid_map.to_host(0).ok_or("map has no root")?);
    if (m.uid(), m.gid()) != expected {
        return Err(format!(
            "{} is owned by {}:{}, not {}:{}",
            landed.display(),
            m.uid(),
            m.gid(),
            expected.0,
            expected.1
        )
        .into());
    }
    println!("on the host, {} is owned by {}:{} (the container's root)", landed.display(), m.uid(), m.gid());

    // 4. Teardown from a second process that knows only the record.
    // Innermost first: the binds, then the root. Each record goes to a file in the runtime's state directory, as
    // a runtime keeps it for its shim or for itself after a restart; the guards are let go without unmounting.
    let state = work.join("state");
    let mut records = Vec::new();
    for (i, guard) in binds.into_iter().rev().chain([guard]).enumerate() {
        let record = guard.record().ok_or("no mount id to record (a kernel before 5.8)")?;
        let file = state.join(format!("mount-{i}.record"));
        fs::write(&file, record.encode())?;
        println!("recorded {} (mount id {}) in {}", record.target().display(), record.mount_id(), file.display());
        guard.leak();
        records.push(file);
    }
    let status = Command::new(std::env::current_exe()?).arg("teardown").args(&records).status()?;
    if !status.success() {
        return Err(format!("teardown process failed ({status})").into());
    }
    let table = MountTable::current()?;
    if table.mounts().iter().any(|m| m.mount_point == rootfs) {
        return Err(format!("{} is still mounted after teardown", rootfs.display()).into());
    }
    if rootfs.exists() {
        return Err(format!("{} was made by the crate but is still there", rootfs.display()).into());
    }
    println!("{} is no longer mounted, and its mount point is gone", rootfs.display());
    Ok(())
}

/// Runs as the container's root (uid 0 in a user namespace with the config's map).
fn container_write(rootfs: &Path) -> Res<()> {
    let status = fs::read_to_string("/proc/self/status")?;
    // The effective id: the second of the four fields of `Uid:`/`Gid:`.
    let ids = |key: &str| status.lines().find_map(|l| l.strip_prefix(key)?.split_whitespace().nth(1).map(String::from));
    fs::write(rootfs.join("new-file"), "written by the container's root\n")?;
    fs::create_dir(rootfs.join("new-dir"))?;
    fs::write(rootfs.join("etc/hostname"), "container\n")?;
    let data = rootfs.join("data/shared.txt");
    if data.exists() {
        let m = fs::symlink_metadata(&data)?;
        let refused = fs::write(rootfs.join("data/new"), "x").is_err();
        println!(
            "container root sees /data/shared.txt owned by {}:{}; writing to /data refused: {refused}",
            m.uid(),
            m.gid()
        );
    }
    println!(
        "container root (Uid {}, Gid {}) wrote /new-file, made /new-dir and changed /etc/hostname",
        ids("Uid:").unwrap_or_default(),
        ids("Gid:").unwrap_or_default()
    );
    Ok(())
}

/// Runs as a second process that knows nothing but the record file: checks the mount is still the recorded one
/// and, for the root (an overlay, a filesystem of its own), that nothing else uses it (a bind of a host directory
/// shares the host's filesystem, so the check means nothing there); then unmounts it and removes the mount point
/// if the crate made it.
fn teardown(record_file: &Path, root: bool) -> Res<()> {
    let record = MountRecord::decode(&fs::read(record_file)?)?;
    if root {
        let others = record.other_mounts()?;
        if !others.is_empty() {
            return Err(format!("{} is still in use at {others:?}", record.target().display()).into());
        }
        println!("teardown (pid {}): no other mount of the root filesystem, on the whole host", std::process::id());
    }
    MountGuard::adopt_record(&record)?.unmount()?;
    println!(
        "teardown (pid {}): unmounted {} (mount point removed: {})",
        std::process::id(),
        record.target().display(),
        record.created_dir()
    );
    Ok(())
}

/// A bundle the way `runc spec` would start one, with a user namespace mapped to host 100000 and a host directory
/// (`data`, owned by host root) bind-mounted read-only at `/data`, idmapped so the container's root owns it.
fn write_bundle(dir: &Path, data: &Path) -> Res<PathBuf> {
    fs::create_dir_all(dir)?;
    let map = || LinuxIdMappingBuilder::default().container_id(0u32).host_id(100_000u32).size(65_536u32).build();
    let data_mount = MountBuilder::default()
        .destination("/data")
        .typ("bind")
        .source(data)
        .options(vec!["rbind".to_string(), "idmap".to_string(), "ro".to_string()])
        .uid_mappings(vec![map()?])
        .gid_mappings(vec![map()?])
        .build()?;
    let spec = SpecBuilder::default()
        .root(RootBuilder::default().path("rootfs").readonly(false).build()?)
        .mounts(vec![data_mount])
        .linux(LinuxBuilder::default().uid_mappings(vec![map()?]).gid_mappings(vec![map()?]).build()?)
        .build()?;
    spec.save(dir.join("config.json"))?;
    println!("wrote {}", dir.join("config.json").display());
    Ok(dir.to_path_buf())
}

/// Two layers as an unpacker leaves them (owned by the image's root, host 0), top-most first.
fn make_layers(dir: &Path) -> Res<Vec<PathBuf>> {
    let layer = |name: &str, files: &[(&str, &str)]| -> std::io::Result<PathBuf> {
        let d = dir.join(name);
        for (path, data) in files {
            let p = d.join(path);
            fs::create_dir_all(p.parent().unwrap_or(&d))?;
            fs::write(&p, data)?;
        }
        Ok(d)
    };
    let base = layer("1-base", &[("etc/hostname", "image\n"), ("etc/passwd", "root:x:0:0::/root:/bin/sh\n")])?;
    let app = layer("2-app", &[("app/run.sh", "#!/bin/sh\necho hi\n")])?;
    Ok(vec![app, base])
}
