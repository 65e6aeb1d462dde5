//! Compose an idmapped overlay from three layers, as a container runtime would for a user-namespaced container.
//!
//! Run as root: `cargo run --example compose_idmapped`. Everything is made under a fresh directory in the temp dir
//! and torn down at the end (the overlay is detach-unmounted; the directory is removed with `remove_all`, which would
//! refuse to cross a mount).

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use layermount::{Features, IdMap, Overlay, UserNamespace, remove_all};

fn owner(p: &Path) -> String {
    let m = fs::symlink_metadata(p).expect("stat");
    format!("{}:{}", m.uid(), m.gid())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let base = tempfile::Builder::new().prefix("layermount-demo-").tempdir()?.keep();
    let result = demo(&base);
    remove_all(&base)?;
    result
}

fn demo(base: &Path) -> Result<(), Box<dyn std::error::Error>> {
    // Three image layers, bottom first, as an unpacker would leave them (files owned by the image's ids).
    let store = base.join("layers");
    let layer = |name: &str, files: &[(&str, &str, u32)]| -> std::io::Result<std::path::PathBuf> {
        let dir = store.join(name);
        for (path, data, id) in files {
            let p = dir.join(path);
            fs::create_dir_all(p.parent().unwrap())?;
            fs::write(&p, data)?;
            std::os::unix::fs::chown(&p, Some(*id), Some(*id))?;
        }
        Ok(dir)
    };
    let l1 = layer("1-base", &[("etc/passwd", "root:x:0:0::/root:/bin/sh\n", 0), ("etc/hostname", "image\n", 0)])?;
    let l2 = layer("2-app", &[("app/run.sh", "#!/bin/sh\necho hi\n", 0), ("home/app/.profile", "PS1=$\n", 1000)])?;
    let l3 = layer("3-config", &[("etc/hostname", "configured\n", 0)])?;
    let (upper, work, rootfs) = (base.join("upper"), base.join("work"), base.join("rootfs"));
    fs::create_dir_all(&upper)?;
    fs::create_dir_all(&work)?;

    // The container's root is host uid/gid 100000.
    let map: IdMap = "0:100000:65536".parse()?;
    let ns = UserNamespace::cached(&map, &map)?;
    let overlay = Overlay::new().lowers([&l3, &l2, &l1]).upper(&upper, &work).idmap(ns);
    println!("kernel {}; strategy: {}", Features::get().kernel_release, overlay.chosen_strategy()?);
    let guard = overlay.mount_at(&rootfs)?;
    println!("overlay of 3 layers (idmap {map}) at {}", rootfs.display());

    println!("\nowners seen through the overlay (on disk -> seen):");
    for (path, layer) in [("etc/passwd", &l1), ("etc/hostname", &l3), ("app/run.sh", &l2), ("home/app/.profile", &l2)] {
        println!(
            "  /{path:<20} {:>13} -> {:<13} (from {})",
            owner(&layer.join(path)),
            owner(&rootfs.join(path)),
            layer.file_name().unwrap().to_string_lossy()
        );
    }
    println!("  /etc/hostname reads {:?}: the top-most layer wins", fs::read_to_string(rootfs.join("etc/hostname"))?);

    fs::write(rootfs.join("hello.txt"), "written through the overlay\n")?;
    fs::write(rootfs.join("etc/hostname"), "container\n")?;
    println!("\nwrote /hello.txt and changed /etc/hostname through the overlay:");
    for path in ["hello.txt", "etc/hostname"] {
        println!("  landed in {} (owner {} on disk)", upper.join(path).display(), owner(&upper.join(path)));
    }
    println!("  the layer's own /etc/hostname still reads {:?}", fs::read_to_string(l3.join("etc/hostname"))?);
    println!("  (the upper is not idmapped here, so it stores host ids, as containerd's snapshotter expects; with");
    println!("  .idmap_upper(true) and a map that covers the mounter it would store container ids)");

    guard.unmount()?;
    println!("\nunmounted; removing {}", base.display());
    Ok(())
}
