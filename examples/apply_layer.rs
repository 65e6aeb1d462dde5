//! Apply two OCI layers into a layer store the way an overlay snapshotter would, then stack them.
//!
//! Run as root: `cargo run --example apply_layer [LAYER.tar[.gz|.zst]...]`. With no argument it builds a base layer
//! and a top layer (with a whiteout, an opaque directory and a file under a symlinked directory) in memory. Each
//! layer is applied on top of the previous ones, verified, and finally mounted as a read-only overlay so the merged
//! view can be listed. Everything lives under a fresh temp directory, removed at the end with `remove_all`.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use layermount::{ApplyOptions, Overlay, apply, recover, remove_all, verify};

fn built_in_layers() -> Vec<(String, Vec<u8>)> {
    let tar = |entries: &[(&str, Option<&str>)]| -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, content) in entries {
            let mut h = tar::Header::new_gnu();
            match content {
                Some(data) => {
                    h.set_entry_type(tar::EntryType::Regular);
                    h.set_size(data.len() as u64);
                    h.set_mode(0o644);
                    b.append_data(&mut h, name, data.as_bytes()).unwrap();
                }
                None if name.ends_with('/') => {
                    h.set_entry_type(tar::EntryType::Directory);
                    h.set_mode(0o755);
                    h.set_size(0);
                    b.append_data(&mut h, name, &[][..]).unwrap();
                }
                None => {
                    h.set_entry_type(tar::EntryType::Symlink);
                    h.set_size(0);
                    h.set_mode(0o777);
                    b.append_link(&mut h, name, "usr/lib").unwrap();
                }
            }
        }
        b.into_inner().unwrap()
    };
    vec![
        (
            "base".into(),
            tar(&[
                ("usr/", None),
                ("usr/lib/", None),
                ("usr/lib/libold.so", Some("old")),
                ("lib", None),
                ("etc/", None),
                ("etc/motd", Some("welcome\n")),
                ("var/cache/", None),
                ("var/cache/stale", Some("stale")),
            ]),
        ),
        (
            "top".into(),
            tar(&[
                ("etc/", None),
                ("etc/.wh.motd", Some("")),
                ("etc/hostname", Some("layered\n")),
                ("var/cache/.wh..wh..opq", Some("")),
                ("var/cache/fresh", Some("fresh")),
                ("lib/libnew.so", Some("new")),
            ]),
        ),
    ]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let layers: Vec<(String, Vec<u8>)> = if args.is_empty() {
        built_in_layers()
    } else {
        args.iter()
            .map(|p| {
                let mut data = Vec::new();
                fs::File::open(p)?.read_to_end(&mut data)?;
                Ok((Path::new(p).file_name().unwrap().to_string_lossy().into_owned(), data))
            })
            .collect::<std::io::Result<_>>()?
    };
    let base = tempfile::Builder::new().prefix("layermount-apply-").tempdir()?.keep();
    let result = run(&base, &layers);
    remove_all(&base)?;
    result
}

fn run(base: &Path, layers: &[(String, Vec<u8>)]) -> Result<(), Box<dyn std::error::Error>> {
    let store = base.join("layers");
    fs::create_dir(&store)?;
    let mut applied: Vec<PathBuf> = Vec::new();
    for (i, (name, blob)) in layers.iter().enumerate() {
        let dest = store.join(format!("{i}-{name}"));
        // Parents are the layers below, top-most first.
        let mut opts = ApplyOptions::new();
        for p in applied.iter().rev() {
            opts = opts.parent(p);
        }
        let layer = apply(&blob[..], &dest, &opts)?;
        println!("applied {name}: {}\n  {}", layer.diff_id, layer.stats);
        verify(&dest)?;
        applied.push(dest);
    }
    let report = recover(&store)?;
    println!("store: {} committed, {} incomplete", report.committed.len(), report.incomplete.len());

    if applied.len() >= 2 {
        let merged = base.join("merged");
        let guard = Overlay::new().lowers(applied.iter().rev()).mount_at(&merged)?;
        println!("\nmerged view:");
        let mut stack = vec![merged.clone()];
        let mut lines = Vec::new();
        while let Some(dir) = stack.pop() {
            for e in fs::read_dir(&dir)? {
                let p = e?.path();
                let m = fs::symlink_metadata(&p)?;
                let rel = p.strip_prefix(&merged)?.display().to_string();
                if m.is_dir() {
                    stack.push(p);
                    lines.push(format!("  {rel}/"));
                } else if m.file_type().is_symlink() {
                    lines.push(format!("  {rel} -> {}", fs::read_link(&p)?.display()));
                } else {
                    lines.push(format!("  {rel}"));
                }
            }
        }
        lines.sort();
        println!("{}", lines.join("\n"));
        guard.unmount()?;
    }
    Ok(())
}
