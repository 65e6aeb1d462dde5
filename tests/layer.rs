//! Layer apply: OCI whiteout conformance (checked in the layer directory and in a real overlay of base + layer),
//! metadata, formats, commit, verify and recover.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use common::archive::{E, Opt, Tar, expect, tar_of, tree};
use common::privileged;
use layermount::{
    ApplyOptions, ErrorKind, LayerProblem, Overlay, OverlayOption, SyncMode, WhiteoutMode, apply, marker_path, recover,
    verify,
};

fn opts(mode: WhiteoutMode) -> ApplyOptions {
    ApplyOptions::new().whiteouts(mode).sync(SyncMode::None)
}

/// Apply `base` then `top` (on top of base) in `mode`, mount base + top read-only (with `userxattr` in that mode)
/// and return the merged tree, plus the top layer's directory.
fn merged(scratch: &Path, mode: WhiteoutMode, base: &[E], top: &[E]) -> (BTreeMap<String, String>, PathBuf) {
    let store = scratch.join("store");
    fs::create_dir_all(&store).unwrap();
    let (b, t) = (store.join("base"), store.join("top"));
    apply(&tar_of(base)[..], &b, &opts(mode)).unwrap();
    apply(&tar_of(top)[..], &t, &opts(mode).parent(&b)).unwrap();
    let mut o = Overlay::new().lower(&t).lower(&b);
    if mode == WhiteoutMode::OverlayUserXattr {
        o = o.option(OverlayOption::UserXattr);
    }
    let mnt = scratch.join("merged");
    let guard = o.mount_at(&mnt).unwrap();
    let view = tree(&mnt);
    guard.unmount().unwrap();
    (view, t)
}

struct Case {
    name: &'static str,
    base: Vec<E>,
    top: Vec<E>,
    merged: Vec<(&'static str, &'static str)>,
}

fn cases() -> Vec<Case> {
    use E::*;
    vec![
        Case {
            name: "whiteout of a file",
            base: vec![File("a", "a"), File("b", "b")],
            top: vec![File(".wh.a", "")],
            merged: vec![("b", "f:b")],
        },
        Case {
            name: "whiteout of a directory",
            base: vec![Dir("d"), File("d/x", "x"), File("d/y", "y"), File("e", "e")],
            top: vec![File(".wh.d", "")],
            merged: vec![("e", "f:e")],
        },
        Case {
            name: "opaque marker before siblings",
            base: vec![Dir("d"), File("d/x", "x")],
            top: vec![Dir("d"), File("d/.wh..wh..opq", ""), File("d/y", "y")],
            merged: vec![("d", "d"), ("d/y", "f:y")],
        },
        Case {
            name: "opaque marker after siblings",
            base: vec![Dir("d"), File("d/x", "x")],
            top: vec![Dir("d"), File("d/y", "y"), File("d/.wh..wh..opq", "")],
            merged: vec![("d", "d"), ("d/y", "f:y")],
        },
        Case {
            name: "entry and its whiteout in the same layer: the entry stays",
            base: vec![File("a", "base"), Dir("d"), File("d/x", "x")],
            top: vec![File("a", "top"), File(".wh.a", ""), Dir("d"), File("d/y", "y"), File(".wh.d", "")],
            merged: vec![("a", "f:top"), ("d", "d"), ("d/y", "f:y")],
        },
        Case {
            name: "directory whiteout then recreated: opaque",
            base: vec![Dir("d"), File("d/x", "x")],
            top: vec![File(".wh.d", ""), Dir("d"), File("d/z", "z")],
            merged: vec![("d", "d"), ("d/z", "f:z")],
        },
        Case {
            name: "whiteout then the same name as a file",
            base: vec![Dir("d"), File("d/x", "x")],
            top: vec![File(".wh.d", ""), File("d", "now a file")],
            merged: vec![("d", "f:now a file")],
        },
        Case {
            name: "nested opaque",
            base: vec![Dir("d"), Dir("d/e"), File("d/e/x", "x"), File("d/y", "y")],
            top: vec![File("d/e/.wh..wh..opq", ""), File("d/e/n", "n")],
            merged: vec![("d", "d"), ("d/y", "f:y"), ("d/e", "d"), ("d/e/n", "f:n")],
        },
        Case {
            name: "whiteout of a missing path",
            base: vec![File("a", "a")],
            top: vec![File(".wh.nothing", ""), File("sub/.wh.nothing", "")],
            merged: vec![("a", "f:a"), ("sub", "d")],
        },
        Case {
            name: "hardlink chains",
            base: vec![],
            top: vec![File("f", "data"), Hardlink("l1", "f"), Hardlink("l2", "l1"), Hardlink("dir/l3", "./l2")],
            merged: vec![("f", "f:data"), ("l1", "f:data"), ("l2", "f:data"), ("dir", "d"), ("dir/l3", "f:data")],
        },
        Case {
            name: "hardlink to a symlink",
            base: vec![],
            top: vec![Symlink("s", "target"), Hardlink("h", "s")],
            merged: vec![("s", "l:target"), ("h", "l:target")],
        },
        Case {
            name: "implied parent through a lower symlink",
            base: vec![Dir("usr"), Dir("usr/lib"), File("usr/lib/old", "o"), Symlink("lib", "usr/lib")],
            top: vec![File("lib/new", "n")],
            merged: vec![
                ("usr", "d"),
                ("usr/lib", "d"),
                ("usr/lib/old", "f:o"),
                ("usr/lib/new", "f:n"),
                ("lib", "l:usr/lib"),
            ],
        },
        Case {
            name: "root-level opaque marker",
            base: vec![File("a", "a"), Dir("b"), File("b/x", "x")],
            top: vec![File(".wh..wh..opq", ""), File("c", "c")],
            merged: vec![("c", "f:c")],
        },
        Case {
            name: "aufs bookkeeping and PAX-free long names",
            base: vec![],
            top: vec![File(".wh..wh.plnk", ""), File(long_name(), "long")],
            merged: vec![(long_dir(), "d"), (long_name(), "f:long")],
        },
    ]
}

fn long_name() -> &'static str {
    "a-directory-name-that-is-quite-long-indeed/and-a-file-name-that-pushes-the-whole-path-well-beyond-one-hundred-bytes.txt"
}
fn long_dir() -> &'static str {
    "a-directory-name-that-is-quite-long-indeed"
}

fn conformance(mode: WhiteoutMode) {
    privileged(&format!("conformance/{mode:?}"), move |scratch| {
        for (i, case) in cases().into_iter().enumerate() {
            let dir = scratch.join(i.to_string());
            let (view, top) = merged(&dir, mode, &case.base, &case.top);
            assert_eq!(view, expect(&case.merged), "{mode:?}: {}", case.name);
            // Nothing of the archive's whiteout names survives in the layer directory itself.
            let layer = tree(&top);
            assert!(layer.keys().all(|k| !k.contains(".wh.")), "{}: {layer:?}", case.name);
            verify(&top).unwrap_or_else(|e| panic!("{}: {e}", case.name));
        }
    });
}

#[test]
fn conformance_overlay_whiteouts() {
    conformance(WhiteoutMode::Overlay);
}

#[test]
fn conformance_userxattr_whiteouts() {
    conformance(WhiteoutMode::OverlayUserXattr);
}

#[test]
fn layer_directory_details() {
    privileged("layer_directory_details", |scratch| {
        let (_, top) = merged(
            &scratch.join("1"),
            WhiteoutMode::Overlay,
            &[E::Dir("usr"), E::Dir("usr/lib"), E::Symlink("lib", "usr/lib"), E::File("gone", "g")],
            &[
                E::File("lib/new", "n"),
                E::File(".wh.gone", ""),
                E::File(".wh.never-there", ""),
                E::Hardlink("lib/again", "lib/new"),
            ],
        );
        // The implied parent was followed: nothing at lib, the file at usr/lib/new.
        assert!(fs::symlink_metadata(top.join("lib")).is_err());
        assert_eq!(fs::read(top.join("usr/lib/new")).unwrap(), b"n");
        assert_eq!(
            fs::metadata(top.join("usr/lib/again")).unwrap().ino(),
            fs::metadata(top.join("usr/lib/new")).unwrap().ino()
        );
        let wh = fs::symlink_metadata(top.join("gone")).unwrap();
        assert!(std::os::unix::fs::FileTypeExt::is_char_device(&wh.file_type()) && wh.rdev() == 0);
        assert!(fs::symlink_metadata(top.join("never-there")).is_err(), "no whiteout for what no lower layer has");

        // Missing parents take the lower layer's mode, owner and plain xattrs, never its overlay ones.
        let dir = scratch.join("2/store");
        fs::create_dir_all(&dir).unwrap();
        let base = dir.join("base");
        let mut t = Tar::new();
        t.add_with(&E::Dir("etc"), &Opt { mode: 0o750, uid: 5, gid: 6, ..Opt::default() });
        apply(&t.finish()[..], &base, &opts(WhiteoutMode::Overlay)).unwrap();
        rustix::fs::setxattr(base.join("etc"), "user.note", b"kept", rustix::fs::XattrFlags::empty()).unwrap();
        rustix::fs::setxattr(base.join("etc"), "trusted.overlay.opaque", b"y", rustix::fs::XattrFlags::empty())
            .unwrap();
        let top = dir.join("top");
        apply(&tar_of(&[E::File("etc/passwd", "p")])[..], &top, &opts(WhiteoutMode::Overlay).parent(&base)).unwrap();
        let m = fs::metadata(top.join("etc")).unwrap();
        assert_eq!((m.mode() & 0o7777, m.uid(), m.gid()), (0o750, 5, 6));
        let mut buf = [0u8; 16];
        let n = rustix::fs::getxattr(top.join("etc"), "user.note", &mut buf[..]).unwrap();
        assert_eq!(&buf[..n], b"kept");
        assert!(rustix::fs::getxattr(top.join("etc"), "trusted.overlay.opaque", &mut buf[..]).is_err());
        // A parent missing everywhere is 0755 root-owned; the layer root too.
        apply(&tar_of(&[E::File("new/dir/f", "f")])[..], dir.join("fresh"), &opts(WhiteoutMode::Overlay)).unwrap();
        for p in ["fresh", "fresh/new", "fresh/new/dir"] {
            let m = fs::metadata(dir.join(p)).unwrap();
            assert_eq!((m.mode() & 0o7777, m.uid(), m.gid()), (0o755, 0, 0), "{p}");
        }
    });
}

#[test]
fn metadata_is_preserved_exactly() {
    privileged("metadata_is_preserved_exactly", |scratch| {
        let mut t = Tar::new();
        t.pax_global(&[("comment", "ignored")]);
        t.add_with(
            &E::File("suid", "s"),
            &Opt { mode: 0o4755, uid: 1000, gid: 1000, mtime: 1_234_567_890, ..Opt::default() },
        );
        t.add_with(&E::File("sticky-dir-file", "x"), &Opt { mode: 0o600, ..Opt::default() });
        t.add_with(&E::Dir("tmp"), &Opt { mode: 0o1777, mtime: 1_000_000_000, ..Opt::default() });
        t.add_with(&E::File("tmp/inside", "i"), &Opt::default());
        let cap = vec![1u8, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        t.add_with(
            &E::File("ping", "elf"),
            &Opt {
                mode: 0o755,
                pax: vec![
                    ("SCHILY.xattr.security.capability".into(), cap.clone()),
                    ("SCHILY.xattr.user.keep".into(), b"v".to_vec()),
                    ("SCHILY.xattr.trusted.overlay.opaque".into(), b"y".to_vec()),
                    ("SCHILY.xattr.user.overlay.whiteout".into(), b"y".to_vec()),
                    ("mtime".into(), b"1700000000.25".to_vec()),
                ],
                ..Opt::default()
            },
        );
        t.add_with(&E::Symlink("link", "/abs/target/verbatim"), &Opt { uid: 7, gid: 8, ..Opt::default() });
        t.add(&E::Fifo("fifo"));
        t.add(&E::Char("null", 1, 3));
        let long_target = "t/".repeat(80) + "end";
        t.add(&E::Symlink("longlink", Box::leak(long_target.clone().into_boxed_str())));
        let pax_name = "p/".repeat(70) + "pax-named";
        t.add_with(
            &E::File("placeholder", "pax"),
            &Opt { pax: vec![("path".into(), pax_name.clone().into_bytes())], ..Opt::default() },
        );
        let dest = scratch.join("layer");
        // A restrictive umask must not matter.
        let old = rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
        let layer = apply(&t.finish()[..], &dest, &opts(WhiteoutMode::Overlay));
        rustix::process::umask(old);
        let layer = layer.unwrap();
        let m = fs::metadata(dest.join("suid")).unwrap();
        assert_eq!((m.mode() & 0o7777, m.uid(), m.gid(), m.mtime()), (0o4755, 1000, 1000, 1_234_567_890));
        assert_eq!(fs::metadata(dest.join("sticky-dir-file")).unwrap().mode() & 0o7777, 0o600);
        let m = fs::metadata(dest.join("tmp")).unwrap();
        assert_eq!((m.mode() & 0o7777, m.mtime()), (0o1777, 1_000_000_000), "dir attrs applied after its children");
        let m = fs::metadata(dest.join("ping")).unwrap();
        assert_eq!((m.mtime(), m.mtime_nsec()), (1_700_000_000, 250_000_000));
        let mut buf = [0u8; 64];
        let n = rustix::fs::getxattr(dest.join("ping"), "security.capability", &mut buf[..]).unwrap();
        assert_eq!(&buf[..n], &cap[..]);
        let n = rustix::fs::getxattr(dest.join("ping"), "user.keep", &mut buf[..]).unwrap();
        assert_eq!(&buf[..n], b"v");
        assert!(rustix::fs::getxattr(dest.join("ping"), "trusted.overlay.opaque", &mut buf[..]).is_err());
        assert!(rustix::fs::getxattr(dest.join("ping"), "user.overlay.whiteout", &mut buf[..]).is_err());
        assert_eq!(layer.stats.dropped_xattrs, 2);
        assert_eq!(fs::read_link(dest.join("link")).unwrap(), Path::new("/abs/target/verbatim"));
        let m = fs::symlink_metadata(dest.join("link")).unwrap();
        assert_eq!((m.uid(), m.gid()), (7, 8));
        assert!(std::os::unix::fs::FileTypeExt::is_fifo(&fs::symlink_metadata(dest.join("fifo")).unwrap().file_type()));
        let m = fs::symlink_metadata(dest.join("null")).unwrap();
        assert_eq!((rustix::fs::major(m.rdev()), rustix::fs::minor(m.rdev())), (1, 3));
        assert_eq!(fs::read_link(dest.join("longlink")).unwrap(), Path::new(&long_target));
        assert_eq!(fs::read(dest.join(&pax_name)).unwrap(), b"pax");
        assert!(!dest.join("placeholder").exists());
        assert!(!dest.join("pax_global_header").exists());
        assert_eq!(fs::metadata(&dest).unwrap().mode() & 0o7777, 0o755);
        verify(&dest).unwrap();
    });
}

#[test]
fn compression_digest_and_commit() {
    privileged("compression_digest_and_commit", |scratch| {
        let plain = tar_of(&[E::Dir("d"), E::File("d/f", "hello")]);
        let want = {
            use sha2::Digest;
            let hex: String = sha2::Sha256::digest(&plain).iter().map(|b| format!("{b:02x}")).collect();
            format!("sha256:{hex}")
        };
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        std::io::Write::write_all(&mut gz, &plain).unwrap();
        let gz = gz.finish().unwrap();
        let zst = zstd::encode_all(&plain[..], 3).unwrap();
        for (i, blob) in [plain.clone(), gz, zst].iter().enumerate() {
            let dest = scratch.join(format!("l{i}"));
            let layer = apply(&blob[..], &dest, &ApplyOptions::new().expect_diff_id(want.clone())).unwrap();
            assert_eq!(layer.diff_id, want);
            assert_eq!(layer.uncompressed_size, plain.len() as u64);
            assert!(marker_path(&dest).is_file());
            assert_eq!(verify(&dest).unwrap().diff_id, want);
        }
        // A wrong digest commits nothing and leaves nothing.
        let bad = format!("sha256:{}", "0".repeat(64));
        let err = apply(&plain[..], scratch.join("bad"), &ApplyOptions::new().expect_diff_id(bad)).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidLayer(LayerProblem::DigestMismatch), "{err}");
        let names: Vec<_> =
            fs::read_dir(scratch).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        assert!(names.iter().all(|n| !n.contains("bad")), "{names:?}");
        // The destination must not exist.
        let err = apply(&plain[..], scratch.join("l0"), &ApplyOptions::new()).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidLayer(LayerProblem::DestinationExists));
        // A corrupt stream is an error, and leaves nothing.
        let mut broken = tar_of(&[E::File("f", &*"x".repeat(10_000).leak())]);
        broken.truncate(3000);
        let err = apply(&broken[..], scratch.join("broken"), &ApplyOptions::new()).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidLayer(LayerProblem::Corrupt), "{err}");
        assert!(!scratch.join("broken").exists());
        assert_eq!(fs::read_dir(scratch).unwrap().count(), 6, "three layers and three markers");
    });
}

#[test]
fn verify_finds_damage_and_recover_cleans_up() {
    privileged("verify_finds_damage_and_recover_cleans_up", |scratch| {
        let store = scratch.join("store");
        fs::create_dir(&store).unwrap();
        let entries = [E::Dir("d"), E::File("d/a", "aaaaaaaa"), E::File("d/b", "bbbbbbbb"), E::File("c", "cc")];
        for name in ["truncated", "zeroed", "missing", "chmod", "ok"] {
            apply(&tar_of(&entries)[..], store.join(name), &ApplyOptions::new()).unwrap();
        }
        fs::OpenOptions::new().write(true).open(store.join("truncated/d/a")).unwrap().set_len(3).unwrap();
        fs::write(store.join("zeroed/d/b"), [0u8; 8]).unwrap();
        fs::remove_file(store.join("missing/c")).unwrap();
        fs::set_permissions(store.join("chmod/c"), fs::Permissions::from_mode(0o777)).unwrap();
        for name in ["truncated", "zeroed", "missing", "chmod"] {
            let err = verify(store.join(name)).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidLayer(LayerProblem::ContentMismatch), "{name}: {err}");
        }
        verify(store.join("ok")).unwrap();

        // What a crash leaves: a staging directory, a temporary marker, a layer without marker, an orphan marker.
        fs::create_dir_all(store.join(".next.partial-1-0/sub")).unwrap();
        fs::write(store.join(".next.partial-1-0/sub/f"), "half").unwrap();
        fs::write(store.join(".next.commit.tmp"), "half a marker").unwrap();
        fs::create_dir(store.join("uncommitted")).unwrap();
        fs::write(store.join("gone.commit"), "orphan").unwrap();
        fs::write(marker_path(store.join("ok")).with_file_name("chmod.commit"), "garbage").unwrap();
        let report = recover(&store).unwrap();
        assert_eq!(report.removed.len(), 3, "{report:?}");
        assert!(!store.join(".next.partial-1-0").exists() && !store.join(".next.commit.tmp").exists());
        assert!(!store.join("gone.commit").exists());
        assert_eq!(
            report.incomplete,
            vec![
                (store.join("chmod"), LayerProblem::BadMarker),
                (store.join("uncommitted"), LayerProblem::MissingMarker)
            ]
        );
        assert_eq!(report.committed.len(), 4);
        let err = verify(store.join("uncommitted")).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidLayer(LayerProblem::MissingMarker));
        // Recover never crosses a mount left in a staging directory.
        fs::create_dir_all(store.join(".x.partial-2-0/m")).unwrap();
        common::mount_tmpfs(&store.join(".x.partial-2-0/m"));
        fs::write(store.join(".x.partial-2-0/m/keep"), "k").unwrap();
        let err = recover(&store).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::MountBoundary);
        assert_eq!(fs::read(store.join(".x.partial-2-0/m/keep")).unwrap(), b"k");
        common::umount(&store.join(".x.partial-2-0/m"));
        recover(&store).unwrap();
    });
}

#[test]
fn devices_skipped_or_refused_without_privilege_and_ids_shifted() {
    privileged("devices_skipped_or_refused_without_privilege_and_ids_shifted", |scratch| {
        let blob = tar_of(&[E::Char("dev/null", 1, 3), E::File("f", "f")]);
        let (a, b) = (scratch.join("a"), scratch.join("b"));
        let results = std::thread::spawn(move || {
            caps::drop(None, caps::CapSet::Effective, caps::Capability::CAP_MKNOD).unwrap();
            let refused = apply(&blob[..], &a, &ApplyOptions::new().sync(SyncMode::None));
            let skipped =
                apply(&blob[..], &b, &ApplyOptions::new().sync(SyncMode::None).devices(layermount::DeviceMode::Skip));
            (refused.map(|l| l.stats), skipped.map(|l| l.stats))
        })
        .join()
        .unwrap();
        assert_eq!(results.0.unwrap_err().kind(), ErrorKind::InvalidLayer(LayerProblem::DeviceNotPermitted));
        assert!(!scratch.join("a").exists());
        assert_eq!(results.1.unwrap().skipped_devices, 1);
        assert!(scratch.join("b/f").exists() && !scratch.join("b/dev/null").exists());

        // Owners shifted into a host range; an owner outside the map is refused.
        let mut t = Tar::new();
        t.add_with(&E::File("user", "u"), &Opt { uid: 1000, gid: 100, ..Opt::default() });
        let shift = layermount::IdMap::parse("0:100000:65536").unwrap();
        apply(&t.finish()[..], scratch.join("shifted"), &ApplyOptions::new().shift(shift.clone())).unwrap();
        let m = fs::metadata(scratch.join("shifted/user")).unwrap();
        assert_eq!((m.uid(), m.gid()), (101000, 100100));
        assert_eq!(fs::metadata(scratch.join("shifted")).unwrap().uid(), 100000, "root maps too");
        let mut t = Tar::new();
        t.add_with(&E::File("far", "u"), &Opt { uid: 70000, ..Opt::default() });
        let err = apply(&t.finish()[..], scratch.join("far"), &ApplyOptions::new().shift(shift)).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidLayer(LayerProblem::UnmappedId));
    });
}

#[test]
fn oci_mode_keeps_whiteout_files() {
    privileged("oci_mode_keeps_whiteout_files", |scratch| {
        let dest = scratch.join("oci");
        apply(&tar_of(&[E::File(".wh.a", ""), E::File("d/.wh..wh..opq", "")])[..], &dest, &opts(WhiteoutMode::Oci))
            .unwrap();
        assert_eq!(tree(&dest), expect(&[(".wh.a", "f:"), ("d", "d"), ("d/.wh..wh..opq", "f:")]));
    });
}

#[test]
fn setgid_store_and_directories_met_again() {
    privileged("setgid_store_and_directories_met_again", |scratch| {
        let store = scratch.join("store");
        fs::create_dir(&store).unwrap();
        common::chown(&store, 0, 1234);
        fs::set_permissions(&store, fs::Permissions::from_mode(0o2775)).unwrap();
        let mut t = Tar::new();
        t.add_with(&E::Dir("etc"), &Opt { uid: 5, gid: 6, mode: 0o700, ..Opt::default() });
        apply(&t.finish()[..], store.join("base"), &opts(WhiteoutMode::Overlay)).unwrap();
        // etc/x makes etc from the lower layer (owner 5:6); the explicit etc/ entry after it takes its owner back.
        let mut t = Tar::new();
        t.add(&E::File("etc/x", "x"));
        t.add_with(&E::Dir("etc"), &Opt { uid: 0, gid: 0, mode: 0o755, ..Opt::default() });
        t.add(&E::File("top-file", "t"));
        let top = store.join("top");
        apply(&t.finish()[..], &top, &opts(WhiteoutMode::Overlay).parent(store.join("base"))).unwrap();
        for p in ["", "etc", "etc/x", "top-file"] {
            let m = fs::metadata(top.join(p)).unwrap();
            assert_eq!((m.uid(), m.gid()), (0, 0), "{p:?}: the store's setgid group must not leak in");
            assert_eq!(m.mode() & 0o2000, 0, "{p:?}: no inherited set-gid bit");
        }
        assert_eq!(fs::metadata(top.join("etc")).unwrap().mode() & 0o7777, 0o755);
        verify(&top).unwrap();
        verify(store.join("base")).unwrap();
    });
}

#[test]
fn data_only_layers_stay_out_of_the_merged_view() {
    for level in [layermount::Strategy::DetachedFds, layermount::Strategy::Strings, layermount::Strategy::Legacy] {
        if !common::has_strategy("data_only_layers_stay_out_of_the_merged_view", level) {
            continue;
        }
        let name = format!("data_only_layers_stay_out_of_the_merged_view/{level}");
        if !common::has_feature(&name, "overlay_data_layers") {
            continue;
        }
        privileged(&name, move |scratch| {
            let store = scratch.join("store");
            fs::create_dir(&store).unwrap();
            let o = opts(WhiteoutMode::Overlay);
            apply(&tar_of(&[E::File("seen", "s")])[..], store.join("l1"), &o).unwrap();
            apply(&tar_of(&[E::File("also-seen", "a")])[..], store.join("l2"), &o).unwrap();
            apply(&tar_of(&[E::File("data-blob", "d")])[..], store.join("data"), &o).unwrap();
            let mnt = scratch.join("mnt");
            let guard = Overlay::new()
                .lower(store.join("l2"))
                .lower(store.join("l1"))
                .data_layer(store.join("data"))
                // Data-only layers need metacopy (Debian's 6.12 refuses them without it; 6.18 does not ask).
                .option(layermount::OverlayOption::Metacopy(true))
                .strategy(level)
                .staging_dir(scratch.join("stage"))
                .mount_at(&mnt)
                .unwrap();
            assert_eq!(tree(&mnt), expect(&[("seen", "f:s"), ("also-seen", "f:a")]), "{level}");
            guard.unmount().unwrap();
        });
    }
}

#[test]
fn a_layer_nested_past_path_max_is_refused_and_cleaned_up() {
    privileged("a_layer_nested_past_path_max_is_refused_and_cleaned_up", |scratch| {
        let deep: &'static str = Box::leak(("d/".repeat(2100) + "f").into_boxed_str());
        let mut t = Tar::new();
        t.add_with(
            &E::File("placeholder", "x"),
            &Opt { pax: vec![("path".into(), deep.as_bytes().to_vec())], ..Opt::default() },
        );
        let store = scratch.join("store");
        fs::create_dir(&store).unwrap();
        let err = apply(&t.finish()[..], store.join("deep"), &opts(WhiteoutMode::Overlay)).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(36), "ENAMETOOLONG: {err}");
        assert_eq!(fs::read_dir(&store).unwrap().count(), 0, "the staging directory, 2000 levels deep, is gone");
    });
}
