//! Fix up a container root: `/etc/mtab` and the mount targets a runtime needs, resolved inside the root.
//!
//! `cargo run --example fixup_rootfs` makes an old-style root in a temp directory (a regular `/etc/mtab`, no `/proc`), shows what a dry run would change, applies the fixups, and shows that a second run
//! changes nothing. `cargo run --example fixup_rootfs -- ROOTFS [UIDMAP]` does the same on ROOTFS (a dry run
//! only, unless `--apply` is given last). Owning what is created by a map's root (`0:100000:65536`) needs root.

use std::path::PathBuf;

use layermount::{FixupReport, Fixups, IdMap};

fn show(title: &str, report: &FixupReport) {
    println!("{title}: {} changes, {} problems", report.changes.len(), report.problems.len());
    for c in &report.changes {
        println!("  {c}");
    }
    for p in &report.problems {
        println!("  left alone: {p}");
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let apply = args.last().is_some_and(|a| a == "--apply");
    let (root, temp) = match args.first().filter(|a| *a != "--apply") {
        Some(path) => (PathBuf::from(path), None),
        None => {
            let dir = tempfile::tempdir()?;
            std::fs::create_dir(dir.path().join("etc"))?;
            std::fs::write(dir.path().join("etc/mtab"), "/dev/sda1 / ext4 rw,relatime 0 0\n")?;
            std::fs::write(dir.path().join("etc/hosts"), "127.0.0.1 localhost\n")?;
            (dir.path().to_path_buf(), Some(dir))
        }
    };
    let mut fixups = Fixups::new();
    if let Some(map) = args.get(1).filter(|a| *a != "--apply") {
        let map: IdMap = map.parse()?;
        fixups = fixups.idmap(&map, &map);
    }
    println!("root: {}", root.display());
    show("dry run", &fixups.clone().dry_run(true).apply(&root)?);
    if temp.is_some() || apply {
        show("applied", &fixups.apply(&root)?);
        show("applied again", &fixups.apply(&root)?);
    }
    Ok(())
}
