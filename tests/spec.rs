//! MountSpec: options round-trip in order, an idmap never disturbs another option, and specs mount for real.

mod common;

use std::ffi::{OsStr, OsString};
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use common::{owner, privileged};
use layermount::{ErrorKind, IdMap, MountSpec, MountTable, Overlay, OverlayOption};
use proptest::prelude::*;

fn option() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z_]{1,10}",
        "[a-z_]{1,10}=[a-zA-Z0-9/:._-]{0,16}",
        Just("ro".to_string()),
        Just("nodev".to_string()),
        "uidmap=[0-9]{1,3}:[0-9]{1,6}:[1-9]",
        "gidmap=[0-9]{1,3}:[0-9]{1,6}:[1-9]",
        "lowerdir=(/[a-z]{1,5}){1,3}(:(/[a-z]{1,5}){1,3}){0,3}",
    ]
}

fn not_idmap(o: &&OsString) -> bool {
    let b = o.as_bytes();
    !b.starts_with(b"uidmap=") && !b.starts_with(b"gidmap=")
}

fn os(v: &[String]) -> Vec<OsString> {
    v.iter().map(OsString::from).collect()
}

/// A path component with what option text treats specially: commas, colons, backslashes, `=`, newlines, spaces,
/// and bytes that are not UTF-8.
fn awkward_name() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        prop_oneof![
            Just(b','),
            Just(b':'),
            Just(b'\\'),
            Just(b'='),
            Just(b'\n'),
            Just(b' '),
            Just(0xffu8),
            Just(0xc3u8),
            b'a'..=b'z'
        ],
        1..12,
    )
    .prop_filter("not . or ..", |n| n != b"." && n != b"..")
}

proptest! {
    #[test]
    fn parse_then_render_keeps_every_option_in_order(opts in prop::collection::vec(option(), 0..12)) {
        let text = opts.join(",");
        let parsed = MountSpec::parse_options(&text);
        prop_assert_eq!(&parsed, &os(&opts));
        let spec = MountSpec::new("overlay", "overlay", "/t").with_options(&text);
        prop_assert_eq!(spec.options_text(), OsString::from(text));
    }

    #[test]
    fn adding_an_idmap_never_drops_duplicates_or_reorders(opts in prop::collection::vec(option(), 0..12),
                                                         c in 0u32..1000, h in 1000u32..100000, n in 1u32..1000) {
        let map = IdMap::from_triples(&[(c, h, n)]).unwrap();
        let opts = os(&opts);
        let mut spec = MountSpec::new("overlay", "overlay", "/t");
        spec.options = opts.clone();
        spec.set_idmap(&map, &map);
        let before: Vec<&OsString> = opts.iter().filter(not_idmap).collect();
        let after: Vec<&OsString> = spec.options.iter().filter(not_idmap).collect();
        prop_assert_eq!(before, after);
        let starts = |o: &&OsString, k: &str| o.as_bytes().starts_with(k.as_bytes());
        let uid: Vec<&OsString> = spec.options.iter().filter(|o| starts(o, "uidmap=")).collect();
        let gid: Vec<&OsString> = spec.options.iter().filter(|o| starts(o, "gidmap=")).collect();
        let (want_uid, want_gid) = (OsString::from(format!("uidmap={map}")), OsString::from(format!("gidmap={map}")));
        prop_assert_eq!(uid, vec![&want_uid]);
        prop_assert_eq!(gid, vec![&want_gid]);
        // An idmap already present keeps its place among the other options.
        let others_before = |list: &[OsString], key: &str| {
            list.iter().position(|o| starts(&o, key)).map(|i| list[..i].iter().filter(not_idmap).count())
        };
        for key in ["uidmap=", "gidmap="] {
            if let Some(n) = others_before(&opts, key) {
                prop_assert_eq!(others_before(&spec.options, key), Some(n));
            }
        }
        // Setting it again changes nothing.
        let once = spec.options.clone();
        spec.set_idmap(&map, &map);
        prop_assert_eq!(once, spec.options);
    }

    /// `Overlay::to_spec` writes layer paths with the one encoder; `MountSpec` reads them back byte for byte, through
    /// the options' text too, whatever the paths hold.
    #[test]
    fn overlay_specs_round_trip_awkward_paths(names in prop::collection::vec(awkward_name(), 2..6),
                                              data in prop::collection::vec(awkward_name(), 0..3),
                                              maps in prop::collection::vec((0u32..1000, 1000u32..100000, 1u32..100), 1..3)) {
        let dir = tempfile::tempdir().unwrap();
        let make = |prefix: &str, n: &[u8]| -> PathBuf {
            let mut name = prefix.as_bytes().to_vec();
            name.extend_from_slice(n);
            let p = dir.path().join(OsStr::from_bytes(&name));
            fs::create_dir(&p).unwrap();
            p
        };
        let lowers: Vec<PathBuf> = names.iter().enumerate().map(|(i, n)| make(&format!("l{i}"), n)).collect();
        let datas: Vec<PathBuf> = data.iter().enumerate().map(|(i, n)| make(&format!("d{i}"), n)).collect();
        let upper = make("u", &names[0]);
        let work = make("w", &names[1]);
        let mut overlay = Overlay::new().lowers(&lowers).upper(&upper, &work).option(OverlayOption::Index(false));
        for d in &datas {
            overlay = overlay.data_layer(d);
        }
        let spec = overlay.to_spec().unwrap();
        let mut spec = MountSpec::new(spec.kind.clone(), spec.source.clone(), "/t").with_options(spec.options_text());
        // A multi-range map (commas inside one option) survives the text form too.
        let ranges: Vec<String> = maps.iter().enumerate().map(|(i, (c, h, n))| {
            format!("{}:{}:{n}", c % 500 + 1000 * i as u32, h + 100000 * i as u32)
        }).collect();
        let map: IdMap = ranges.join(",").parse().unwrap();
        spec.set_idmap(&map, &map);
        let spec = MountSpec::new(spec.kind.clone(), spec.source.clone(), "/t").with_options(spec.options_text());
        let (l, d) = spec.lower_layers().unwrap().unwrap();
        prop_assert_eq!(l, lowers);
        prop_assert_eq!(d, datas);
        prop_assert_eq!(spec.options.len(), 6, "{:?}", spec.options);
        prop_assert_eq!(&spec.options[4], &OsString::from(format!("uidmap={map}")));
        spec.validate().unwrap();
    }
}

#[test]
fn bad_specs_are_refused_before_anything_happens() {
    let spec = |opts: &str| MountSpec::new("overlay", "overlay", "/nonexistent/t").with_options(opts);
    for (opts, needle) in [
        ("lowerdir=/a:/b,X-containerd.unknown=1", "unknown containerd option"),
        ("lowerdir=/a:/b,uidmap=0:1000:1", "must be given together"),
        ("lowerdir=/a:/b,loop", "loop"),
    ] {
        let err = spec(opts).validate().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidMountSpec, "{opts}: {err}");
        assert!(err.to_string().contains(needle), "{err}");
    }
    let err = spec("uidmap=0:1000:0,gidmap=0:1000:1").validate().unwrap_err();
    assert!(matches!(err.kind(), ErrorKind::InvalidIdMap(_)), "{err}");
    let err = MountSpec::new("format/overlay", "overlay", "/t").validate().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidMountSpec);
    assert!(MountSpec::new("mkdir/overlay", "overlay", "/t").with_options("lowerdir=/a:/b").validate().is_ok());
}

#[test]
fn overlay_spec_with_idmap_mounts() {
    privileged("overlay_spec_with_idmap_mounts", |scratch| {
        for d in ["l1", "l2", "u", "w"] {
            fs::create_dir(scratch.join(d)).unwrap();
        }
        fs::write(scratch.join("l1/f"), "1").unwrap();
        fs::write(scratch.join("l2/f"), "2").unwrap();
        let s = |p: &str| scratch.join(p).display().to_string();
        fs::create_dir(scratch.join("root")).unwrap();
        let mut spec = MountSpec::new("overlay", "overlay", scratch.join("root")).with_options(format!(
            "lowerdir={}:{},upperdir={},workdir={},nodev,volatile",
            s("l2"),
            s("l1"),
            s("u"),
            s("w")
        ));
        spec.set_idmap(&"0:100000:65536".parse().unwrap(), &"0:100000:65536".parse().unwrap());
        let guard = spec.mount().unwrap();
        assert_eq!(fs::read_to_string(scratch.join("root/f")).unwrap(), "2");
        assert_eq!(owner(&scratch.join("root/f")), (100000, 100000));
        let table = MountTable::current().unwrap();
        let m = table.mount_of(scratch.join("root")).unwrap();
        assert!(m.mount_options.split(',').any(|o| o == "nodev"), "{}", m.mount_options);
        // Shown as `fsync=volatile` by overlay's newer option code, as `volatile` by older kernels (Debian's 6.1).
        assert!(m.super_options.split(',').any(|o| o == "fsync=volatile" || o == "volatile"), "{}", m.super_options);
        guard.unmount().unwrap();
    });
}

#[test]
fn bind_and_tmpfs_specs_mount() {
    privileged("bind_and_tmpfs_specs_mount", |scratch| {
        fs::create_dir(scratch.join("src")).unwrap();
        fs::write(scratch.join("src/f"), "x").unwrap();
        fs::create_dir(scratch.join("b")).unwrap();
        let bind = MountSpec::new("bind", scratch.join("src").display().to_string(), scratch.join("b"))
            .with_options("rbind,ro,nosuid");
        let guard = bind.mount().unwrap();
        assert_eq!(fs::read_to_string(scratch.join("b/f")).unwrap(), "x");
        assert_eq!(fs::write(scratch.join("b/g"), "y").unwrap_err().raw_os_error(), Some(30));
        guard.unmount().unwrap();

        let mk = scratch.join("made/by/spec");
        fs::create_dir(scratch.join("t")).unwrap();
        let tmpfs = MountSpec::new("tmpfs", "none", scratch.join("t"))
            .with_options(format!("size=1m,mode=0710,nodev,noexec,X-containerd.mkdir.path={}:0751:5:6", mk.display()));
        let guard = tmpfs.mount().unwrap();
        let meta = fs::metadata(&mk).unwrap();
        assert_eq!(meta.permissions().mode() & 0o7777, 0o751);
        assert_eq!(owner(&mk), (5, 6));
        assert_eq!(fs::metadata(scratch.join("t")).unwrap().permissions().mode() & 0o7777, 0o710);
        let table = MountTable::current().unwrap();
        let m = table.mount_of(scratch.join("t")).unwrap();
        assert_eq!(m.fs_type, "tmpfs");
        for o in ["nodev", "noexec"] {
            assert!(m.mount_options.split(',').any(|x| x == o), "{o} in {}", m.mount_options);
        }
        guard.unmount().unwrap();

        // X-mount.mkdir makes the mount point only once the filesystem is made: a refused option leaves none.
        let err = MountSpec::new("tmpfs", "none", scratch.join("bad"))
            .with_options("no_such_opt=1,X-mount.mkdir")
            .mount()
            .unwrap_err();
        assert!(err.kernel_messages().iter().any(|m| m.contains("no_such_opt")), "{err}");
        assert!(!scratch.join("bad").exists(), "no mount point left behind");
    });
}

/// Issue 10, defect 13: `X-containerd.mkdir.path` directories were made even when the mount then failed. Now a
/// failed mount leaves nothing: made directories are removed (with `rmdir`), an existing one gets its mode and
/// owner back, whatever made the mount fail (a refused option, a missing bind source, a bad overlay).
#[test]
fn mkdir_path_leaves_nothing_when_the_mount_fails() {
    privileged("mkdir_path_leaves_nothing_when_the_mount_fails", |scratch| {
        let target = scratch.join("t");
        fs::create_dir(&target).unwrap();
        let existing = scratch.join("existing");
        fs::create_dir(&existing).unwrap();
        fs::set_permissions(&existing, fs::Permissions::from_mode(0o711)).unwrap();
        let made = scratch.join("new/deeper/dir");
        let mkdirs = format!(
            "X-containerd.mkdir.path={}:0755:5:6,X-containerd.mkdir.path={}:0750:7:8",
            made.display(),
            existing.display()
        );
        let failing = [
            MountSpec::new("tmpfs", "none", &target).with_options(format!("no_such_opt=1,{mkdirs}")),
            MountSpec::new("bind", scratch.join("missing").display().to_string(), &target).with_options(&mkdirs),
            MountSpec::new("overlay", "overlay", &target).with_options(format!(
                "lowerdir={}:{},{mkdirs}",
                scratch.join("nope1").display(),
                scratch.join("nope2").display()
            )),
        ];
        for spec in failing {
            let before = MountTable::current().unwrap();
            spec.mount().unwrap_err();
            assert!(!scratch.join("new").exists(), "{spec:?}: made a directory although the mount failed");
            let meta = fs::metadata(&existing).unwrap();
            assert_eq!(meta.permissions().mode() & 0o7777, 0o711, "{spec:?}: mode not put back");
            assert_eq!(owner(&existing), (0, 0), "{spec:?}: owner not put back");
            assert!(MountTable::current().unwrap().changes_since(&before).is_empty());
        }
        // A mount that succeeds keeps them, as asked.
        let spec = MountSpec::new("tmpfs", "none", &target).with_options(format!("size=1m,{mkdirs}"));
        spec.mount().unwrap().unmount().unwrap();
        assert_eq!(owner(&made), (5, 6));
        assert_eq!(owner(&existing), (7, 8));
    });
}
