//! Cases taken from the peers' own test suites (containerd's `pkg/archive`, umoci's `oci/layer`, xfstests'
//! `overlay/065`, LTP's `mount02`, util-linux's `mount --mkdir`), where layermount used to disagree with them.
//! Each test names the peer case it follows.

mod common;

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use common::archive::{E, Opt, Tar, tar_of, tree};
use common::privileged;
use layermount::{
    ApplyOptions, ErrorKind, LayerProblem, Overlay, OverlayOption, OverlayProblem, Strategy, SyncMode, WhiteoutMode,
    apply, verify,
};

fn opts(mode: WhiteoutMode) -> ApplyOptions {
    ApplyOptions::new().whiteouts(mode).sync(SyncMode::None)
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> =
        fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    v.sort();
    v
}

/// containerd `pkg/archive/tar_unix_test.go` `TestHandleTarTypeBlockCharFifoDeviceRange`: a device whose major or
/// minor is >= 2^32 or negative is refused (containerd: `errInvalidArchive`), not created as 0:0. Numbers the kernel
/// cannot hold (major >= 2^12, minor >= 2^20: `mknod` would silently make another node) are refused too.
#[test]
fn device_numbers_out_of_range_are_refused() {
    privileged("device_numbers_out_of_range_are_refused", |scratch| {
        let store = scratch.join("store");
        fs::create_dir(&store).unwrap();
        let cases: [(&str, i64, i64); 6] = [
            ("major above uint32", 1 << 32, 0),
            ("minor above uint32", 0, 1 << 32),
            ("negative major", -1, 0),
            ("negative minor", 0, -1),
            ("major beyond the kernel's 12 bits", 4096, 0),
            ("minor beyond the kernel's 20 bits", 0, 1 << 20),
        ];
        for (name, major, minor) in cases {
            let mut t = Tar::new();
            t.add(&E::File("before", "b"));
            t.device("dev", true, major, minor);
            let err = apply(&t.finish()[..], store.join("l"), &opts(WhiteoutMode::Overlay)).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidLayer(LayerProblem::UnsupportedEntry), "{name}: {err}");
            assert!(err.to_string().contains("out of range"), "{name}: {err}");
            assert!(names(&store).is_empty(), "{name}: nothing left behind: {:?}", names(&store));
        }
        // The largest numbers the kernel holds are made as given.
        let mut t = Tar::new();
        t.device("big", true, 4095, (1 << 20) - 1);
        apply(&t.finish()[..], store.join("ok"), &opts(WhiteoutMode::Overlay)).unwrap();
        let m = fs::symlink_metadata(store.join("ok/big")).unwrap();
        assert!(m.file_type().is_block_device());
        assert_eq!((rustix::fs::major(m.rdev()), rustix::fs::minor(m.rdev())), (4095, (1 << 20) - 1));
        verify(store.join("ok")).unwrap();
    });
}

/// umoci `oci/layer/tar_extract_linux_test.go` `TestUnpackEntry_OverlayfsRootfs_Whiteout_Nested`
/// ("opaque-innerplain"): plain whiteouts beneath a directory the same layer makes opaque, before and after the
/// marker, are not written; nested opaque directories stay opaque.
#[test]
fn no_plain_whiteout_beneath_an_opaque_directory() {
    for mode in [WhiteoutMode::Overlay, WhiteoutMode::OverlayUserXattr] {
        privileged(&format!("no_plain_whiteout_beneath_an_opaque_directory/{mode:?}"), move |scratch| {
            let top = [
                E::File("opaque-innerplain/foo/bar/baz/.wh.before", ""),
                E::File("opaque-innerplain/regfile", "r"),
                E::File("opaque-innerplain/.wh..wh..opq", ""),
                E::File("opaque-innerplain/a/b/c/d/e/f/.wh.after", ""),
                E::File("opaque-innerplain/a/b/c/d/regfile", "r"),
                E::File("opaque-nested/a/b/c/d/.wh..wh..opq", ""),
                E::File("opaque-nested/a/b/.wh..wh..opq", ""),
                E::File("opaque-nested/.wh..wh..opq", ""),
            ];
            let key = if mode == WhiteoutMode::Overlay { "trusted.overlay.opaque" } else { "user.overlay.opaque" };
            let opaque = |p: &Path| {
                let mut buf = [0u8; 4];
                rustix::fs::lgetxattr(p, key, &mut buf[..]).map(|n| buf[..n].to_vec()).ok() == Some(b"y".to_vec())
            };
            // umoci's case as it is: one layer, no parent.
            let alone = scratch.join("alone");
            apply(&tar_of(&top)[..], &alone, &opts(mode)).unwrap();
            assert!(opaque(&alone.join("opaque-innerplain")));
            for p in ["opaque-innerplain/foo/bar/baz/before", "opaque-innerplain/a/b/c/d/e/f/after"] {
                assert!(fs::symlink_metadata(alone.join(p)).is_err(), "{mode:?}: {p} must not be written");
            }
            for p in ["opaque-nested", "opaque-nested/a/b", "opaque-nested/a/b/c/d"] {
                assert!(opaque(&alone.join(p)), "{mode:?}: {p} stays opaque");
            }
            verify(&alone).unwrap();

            // On a base that has both names: the merged view lists no entry that lstat cannot find.
            let base = scratch.join("base");
            apply(
                &tar_of(&[
                    E::File("opaque-innerplain/foo/bar/baz/before", "x"),
                    E::File("opaque-innerplain/a/b/c/d/e/f/after", "x"),
                    E::File("opaque-innerplain/old", "x"),
                ])[..],
                &base,
                &opts(mode),
            )
            .unwrap();
            let layer = scratch.join("top");
            apply(&tar_of(&top)[..], &layer, &opts(mode).parent(&base)).unwrap();
            let mut o = Overlay::new().lower(&layer).lower(&base);
            if mode == WhiteoutMode::OverlayUserXattr {
                o = o.option(OverlayOption::UserXattr);
            }
            let mnt = scratch.join("mnt");
            let guard = o.mount_at(&mnt).unwrap();
            let listed = names(&mnt.join("opaque-innerplain/foo/bar/baz"));
            let listed_deep = names(&mnt.join("opaque-innerplain/a/b/c/d/e/f"));
            let view = tree(&mnt);
            guard.unmount().unwrap();
            assert!(listed.is_empty(), "{mode:?}: phantom entries {listed:?}");
            assert!(listed_deep.is_empty(), "{mode:?}: phantom entries {listed_deep:?}");
            assert_eq!(view.get("opaque-innerplain/regfile").map(String::as_str), Some("f:r"));
            assert!(!view.contains_key("opaque-innerplain/old"), "{view:?}");
            verify(&layer).unwrap();
        });
    }
}

/// containerd `pkg/archive/tar.go` (`ignored xattr %s in archive` on ENOTSUP) and umoci's extractor (warns once on
/// ENOTSUP): an archive xattr the destination filesystem does not support (`system.nfs4_acl` on tmpfs) is skipped
/// and counted, and the rest of the entry is applied.
#[test]
fn unsupported_xattrs_are_skipped_and_counted() {
    privileged("unsupported_xattrs_are_skipped_and_counted", |scratch| {
        let mut t = Tar::new();
        let pax = |k: &str, v: &[u8]| (format!("SCHILY.xattr.{k}"), v.to_vec());
        t.add_with(
            &E::File("acl", "data"),
            &Opt { pax: vec![pax("system.nfs4_acl", b"\0\0\0\0"), pax("user.keep", b"v")], ..Opt::default() },
        );
        t.add_with(&E::Dir("d"), &Opt { pax: vec![pax("system.nfs4_acl", b"\0\0\0\0")], ..Opt::default() });
        let dest = scratch.join("layer");
        let layer = apply(&t.finish()[..], &dest, &opts(WhiteoutMode::Overlay)).unwrap();
        assert_eq!(layer.stats.skipped_xattrs, 2);
        assert_eq!(fs::read(dest.join("acl")).unwrap(), b"data");
        let mut buf = [0u8; 8];
        let n = rustix::fs::getxattr(dest.join("acl"), "user.keep", &mut buf[..]).unwrap();
        assert_eq!(&buf[..n], b"v");
        assert_eq!(verify(&dest).unwrap().stats.skipped_xattrs, 2, "recorded in the marker");
    });
}

/// A hard link to a path this layer has just whited out (containerd `tar_test.go` refuses hard links whose target
/// is not an entry of the layer: `HardlinkRelativeUpAndOut` and friends) is refused, never a link to the whiteout.
#[test]
fn a_hardlink_to_a_whited_out_path_is_refused() {
    for mode in [WhiteoutMode::Overlay, WhiteoutMode::OverlayUserXattr] {
        privileged(&format!("a_hardlink_to_a_whited_out_path_is_refused/{mode:?}"), move |scratch| {
            let store = scratch.join("store");
            fs::create_dir(&store).unwrap();
            apply(&tar_of(&[E::File("a", "a")])[..], store.join("base"), &opts(mode)).unwrap();
            let top = tar_of(&[E::File(".wh.a", ""), E::Hardlink("b", "a")]);
            for parent in [true, false] {
                let o = if parent { opts(mode).parent(store.join("base")) } else { opts(mode) };
                let err = apply(&top[..], store.join("top"), &o).unwrap_err();
                assert_eq!(err.kind(), ErrorKind::InvalidLayer(LayerProblem::HardlinkTarget), "{err}");
                assert!(err.to_string().contains("whited out"), "{err}");
                assert_eq!(names(&store), ["base", "base.commit"]);
            }
        });
    }
}

/// containerd `pkg/archive/tar.go` `mkparent` copies each missing parent's attributes from the parent layers;
/// the layer root, which the archive may leave out too, follows the same rule: the archive's `./` entry, else the
/// lower layer's root. atime is kept where the archive gives it (PAX `atime`).
#[test]
fn implied_directories_and_the_root_follow_one_rule() {
    privileged("implied_directories_and_the_root_follow_one_rule", |scratch| {
        let store = scratch.join("store");
        fs::create_dir(&store).unwrap();
        let mut t = Tar::new();
        t.add_with(&E::Dir("."), &Opt { mode: 0o750, uid: 3, gid: 4, mtime: 1_111_111_111, ..Opt::default() });
        t.add_with(&E::Dir("etc"), &Opt { mode: 0o700, mtime: 1_222_222_222, ..Opt::default() });
        apply(&t.finish()[..], store.join("base"), &opts(WhiteoutMode::Overlay)).unwrap();

        // No "./" entry, no "etc/" entry: both come from the lower layer.
        let mut t = Tar::new();
        t.add_with(
            &E::File("etc/f", "f"),
            &Opt { mtime: 1_500_000_000, pax: vec![("atime".into(), b"1600000000.5".to_vec())], ..Opt::default() },
        );
        let top = store.join("top");
        apply(&t.finish()[..], &top, &opts(WhiteoutMode::Overlay).parent(store.join("base"))).unwrap();
        let root = fs::metadata(&top).unwrap();
        assert_eq!((root.mode() & 0o7777, root.uid(), root.gid()), (0o750, 3, 4), "root from the lower root");
        assert_eq!(root.mtime(), 1_111_111_111, "root mtime from the lower root");
        let etc = fs::metadata(top.join("etc")).unwrap();
        assert_eq!((etc.mode() & 0o7777, etc.mtime()), (0o700, 1_222_222_222), "implied parent from the lower");
        let f = fs::metadata(top.join("etc/f")).unwrap();
        assert_eq!((f.mtime(), f.atime(), f.atime_nsec()), (1_500_000_000, 1_600_000_000, 500_000_000));
        verify(&top).unwrap();

        // The archive's "./" entry wins over the lower root; its atime is kept too.
        let mut t = Tar::new();
        t.add_with(
            &E::Dir("./"),
            &Opt {
                mode: 0o711,
                mtime: 1_333_333_333,
                pax: vec![("atime".into(), b"1444444444".to_vec())],
                ..Opt::default()
            },
        );
        t.add(&E::File("g", "g"));
        let own = store.join("own");
        apply(&t.finish()[..], &own, &opts(WhiteoutMode::Overlay).parent(store.join("base"))).unwrap();
        // (A directory's atime is set too, but any later readdir, such as verify's walk, moves it under relatime.)
        let root = fs::metadata(&own).unwrap();
        assert_eq!((root.mode() & 0o7777, root.uid(), root.mtime()), (0o711, 0, 1_333_333_333));
    });
}

/// xfstests `overlay/065` ("overlapping lowerdir with other mount upperdir/workdir") and `overlay/036` (exclusive
/// upper and work directories): a lower (or upper) that is, or lies inside, the upper or work directory of a live
/// overlay is refused before mounting, naming that mount, whichever strategy mounted the live overlay and whichever
/// composes the new one, whether the live overlays are found through `listmount`/`statmount` or `mountinfo`, and for
/// an upper whose name holds a comma and a space (escaped in the kernel's option text). Once the live overlay is
/// gone, the same overlay mounts.
#[test]
fn a_live_overlays_upper_or_work_is_refused_as_a_layer() {
    let all: Vec<Strategy> = [Strategy::DetachedFds, Strategy::AttachedFds, Strategy::Strings, Strategy::Legacy]
        .into_iter()
        .filter(|&s| common::has_strategy("a_live_overlays_upper_or_work_is_refused_as_a_layer", s))
        .collect();
    for live in all.clone() {
        let all = all.clone();
        privileged(&format!("a_live_overlays_upper_or_work_is_refused_as_a_layer/{live}"), move |scratch| {
            for d in ["l1", "l2", "u/sub", "w", "u2", "w2", "other", "u,1 x", "w3"] {
                fs::create_dir_all(scratch.join(d)).unwrap();
            }
            let p = |d: &str| scratch.join(d);
            let mnt = p("live");
            let guard = Overlay::new()
                .lower(p("l2"))
                .lower(p("l1"))
                .upper(p("u"), p("w"))
                .strategy(live)
                .staging_dir(scratch.join("stage"))
                .mount_at(&mnt)
                .unwrap();
            let odd = Overlay::new()
                .lower(p("l1"))
                .upper(p("u,1 x"), p("w3"))
                .strategy(live)
                .staging_dir(scratch.join("stage"))
                .mount_at(p("odd"))
                .unwrap();
            let cases: [(&str, &dyn Fn() -> Overlay, &str); 5] = [
                ("lower is the live upper", &|| Overlay::new().lower(p("u")).lower(p("l1")), "live"),
                ("lower is the live work", &|| Overlay::new().lower(p("other")).lower(p("w")), "live"),
                ("lower inside the live upper", &|| Overlay::new().lower(p("u/sub")).lower(p("l1")), "live"),
                ("upper is the live upper", &|| Overlay::new().lower(p("l1")).upper(p("u"), p("w2")), "live"),
                ("upper with a comma", &|| Overlay::new().lower(p("l2")).upper(p("u,1 x"), p("w2")), "odd"),
            ];
            let readers = both_readers();
            for (name, make, at) in cases {
                for s in all.iter().copied() {
                    for (how, f) in &readers {
                        let o = make().features(f.clone()).strategy(s).staging_dir(scratch.join("stage"));
                        let err = match o.mount() {
                            Ok(_) => panic!("{live}/{s}/{how} {name}: mounted"),
                            Err(e) => e,
                        };
                        assert_eq!(
                            err.kind(),
                            ErrorKind::InvalidOverlay(OverlayProblem::InUse),
                            "{live}/{s}/{how} {name}: {err}"
                        );
                        let text = err.to_string();
                        assert!(
                            text.contains(&p(at).display().to_string()),
                            "{live}/{s}/{how} {name}: names it: {text}"
                        );
                    }
                }
            }
            odd.unmount().unwrap();
            guard.unmount().unwrap();
            let o = Overlay::new().lower(p("u")).lower(p("w")).staging_dir(scratch.join("stage"));
            o.mount_at(p("after")).unwrap().unmount().unwrap();
        });
    }
}

/// The in-use check after the live overlay's upper was away (renamed) when the check first saw that overlay: once
/// the upper is back under its name, a lower that is that upper is refused, through `listmount`/`statmount` (which
/// must not remember "nothing found" for that mount) as through `mountinfo`.
#[test]
fn a_live_upper_away_when_first_seen_is_refused_once_back() {
    privileged("a_live_upper_away_when_first_seen_is_refused_once_back", |scratch| {
        let p = |d: &str| scratch.join(d);
        for d in ["l1", "l2", "u", "w", "u2", "w2"] {
            fs::create_dir_all(p(d)).unwrap();
        }
        let readers = both_readers();
        for (how, f) in readers {
            let live = Overlay::new().lower(p("l1")).upper(p("u"), p("w")).mount_at(p("live")).unwrap();
            fs::rename(p("u"), p("u.away")).unwrap();
            // Any compose looks at the live overlays: this is the first that sees `live`.
            let other = Overlay::new().features(f.clone()).lower(p("l2")).upper(p("u2"), p("w2")).mount().unwrap();
            drop(other);
            fs::rename(p("u.away"), p("u")).unwrap();
            let err = match Overlay::new().features(f.clone()).lower(p("u")).lower(p("l2")).mount() {
                Ok(_) => panic!("{how}: the live upper was mounted as a lower"),
                Err(e) => e,
            };
            assert_eq!(err.kind(), ErrorKind::InvalidOverlay(OverlayProblem::InUse), "{how}: {err}");
            live.unmount().unwrap();
        }
    });
}

/// One upper, mounted, unmounted and mounted again by a new overlay (a new mount id each time), through both
/// readers: refused as a lower while each overlay lives, accepted between them and after.
#[test]
fn an_upper_is_refused_while_each_of_its_overlays_lives() {
    privileged("an_upper_is_refused_while_each_of_its_overlays_lives", |scratch| {
        let p = |d: &str| scratch.join(d);
        for d in ["l1", "l2", "u", "w"] {
            fs::create_dir(p(d)).unwrap();
        }
        let readers = both_readers();
        let compose =
            |f: &layermount::Features| Overlay::new().features(f.clone()).lower(p("u")).lower(p("l2")).mount();
        for round in 0..3 {
            let live = Overlay::new().lower(p("l1")).upper(p("u"), p("w")).mount_at(p("live")).unwrap();
            for (how, f) in &readers {
                match compose(f) {
                    Ok(_) => panic!("round {round}/{how}: the live upper was mounted as a lower"),
                    Err(e) => {
                        assert_eq!(e.kind(), ErrorKind::InvalidOverlay(OverlayProblem::InUse), "{round}/{how}: {e}")
                    }
                }
            }
            live.unmount().unwrap();
            for (how, f) in &readers {
                drop(compose(f).unwrap_or_else(|e| panic!("round {round}/{how}: refused with no overlay live: {e}")));
            }
        }
    });
}

/// An overlay made with `Overlay::mount` and held detached is in no mount table: its upper and work are still
/// refused by this process's other composes (as a lower, as an upper, as a work directory; through both readers and
/// every strategy), while it is detached and once attached, and accepted again once it is gone.
#[test]
fn a_detached_overlays_upper_is_refused_while_held() {
    let all: Vec<Strategy> = [Strategy::DetachedFds, Strategy::AttachedFds, Strategy::Strings, Strategy::Legacy]
        .into_iter()
        .filter(|&s| common::has_strategy("a_detached_overlays_upper_is_refused_while_held", s))
        .collect();
    privileged("a_detached_overlays_upper_is_refused_while_held", move |scratch| {
        let p = |d: &str| scratch.join(d);
        for d in ["l1", "l2", "u", "w", "u2", "w2"] {
            fs::create_dir(p(d)).unwrap();
        }
        let readers = both_readers();
        let cases: [(&str, &dyn Fn() -> Overlay); 3] = [
            ("as a lower", &|| Overlay::new().lower(p("u")).lower(p("l2"))),
            ("as an upper", &|| Overlay::new().lower(p("l2")).upper(p("u"), p("w2"))),
            ("as a work directory", &|| Overlay::new().lower(p("l2")).upper(p("u2"), p("w"))),
        ];
        let refused = |when: &str| {
            for (name, make) in &cases {
                for s in all.iter().copied() {
                    for (how, f) in &readers {
                        let o = make().features(f.clone()).strategy(s).staging_dir(scratch.join("stage"));
                        match o.mount() {
                            Ok(_) => panic!("{when}, {s}/{how}: the held upper was taken {name}"),
                            Err(e) => assert_eq!(
                                e.kind(),
                                ErrorKind::InvalidOverlay(OverlayProblem::InUse),
                                "{when}, {s}/{how}: {e}"
                            ),
                        }
                    }
                }
            }
        };
        let accepted = |when: &str| {
            for (name, make) in &cases {
                drop(make().mount().unwrap_or_else(|e| panic!("{when}: refused {name}: {e}")));
            }
        };
        for s in all.iter().copied() {
            let held = Overlay::new().lower(p("l1")).upper(p("u"), p("w")).strategy(s);
            let tree = held.staging_dir(scratch.join("stage")).mount().unwrap();
            refused(&format!("detached ({s})"));
            let text = Overlay::new().lower(p("u")).lower(p("l2")).mount().unwrap_err().to_string();
            assert!(text.contains("holds detached"), "says where the upper is in use: {text}");
            let guard = tree.attach(p("m")).unwrap();
            refused(&format!("attached ({s})"));
            guard.unmount().unwrap();
            accepted(&format!("unmounted ({s})"));
            drop(
                Overlay::new()
                    .lower(p("l1"))
                    .upper(p("u"), p("w"))
                    .strategy(s)
                    .staging_dir(scratch.join("stage"))
                    .mount()
                    .unwrap(),
            );
            accepted(&format!("dropped ({s})"));
        }
    });
}

/// The probed features, and the same with `statmount_options` off, each with its name: the in-use check through
/// `listmount`/`statmount` (where the kernel has them) and through `mountinfo`.
fn both_readers() -> [(&'static str, layermount::Features); 2] {
    let listed = layermount::Features::get().clone();
    let mut from_mountinfo = listed.clone();
    from_mountinfo.statmount_options = false;
    [(if listed.statmount_options { "statmount" } else { "mountinfo" }, listed), ("mountinfo", from_mountinfo)]
}

/// Make the syscalls numbered `nrs` fail with `errno` in the calling thread (and threads it starts) from now on, as a
/// seccomp filter of a container runtime would: a classic-BPF seccomp filter without `TSYNC`, so other threads are
/// untouched. Call it only in a thread made for one test (the filter cannot be removed). The numbers are those of
/// the running architecture.
#[allow(unsafe_code)]
fn refuse_syscalls_in_this_thread(nrs: &[u32], errno: u16) {
    const LD_NR: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS, offset 0: seccomp_data.nr
    const JEQ: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
    const RET: u16 = 0x06; // BPF_RET | BPF_K
    let op = |code, jt, jf, k| libc::sock_filter { code, jt, jf, k };
    let n = u8::try_from(nrs.len()).expect("a few syscalls");
    let mut prog = vec![op(LD_NR, 0, 0, 0)];
    // Instruction i + 1 jumps to the refusal past the remaining `n - i - 1` tests and the allow.
    prog.extend(nrs.iter().enumerate().map(|(i, &nr)| op(JEQ, n - i as u8, 0, nr)));
    prog.push(op(RET, 0, 0, libc::SECCOMP_RET_ALLOW));
    prog.push(op(RET, 0, 0, libc::SECCOMP_RET_ERRNO | u32::from(errno)));
    let fprog = libc::sock_fprog { len: prog.len() as u16, filter: prog.as_mut_ptr() };
    // SAFETY: plain prctl/seccomp calls; `fprog` points at `prog`, which outlives the call (the kernel copies it).
    unsafe {
        assert_eq!(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), 0, "no_new_privs");
        let r = libc::syscall(libc::SYS_seccomp, libc::SECCOMP_SET_MODE_FILTER, 0, &fprog as *const libc::sock_fprog);
        assert_eq!(r, 0, "seccomp: {}", std::io::Error::last_os_error());
    }
}

/// Under a seccomp filter that refuses `listmount` (or only `statmount`) with `ENOSYS` on a kernel that has them, as
/// an older runtime's profile does, the in-use check reads `mountinfo` instead and still refuses a live upper.
#[test]
fn a_live_upper_is_refused_when_seccomp_refuses_listmount_or_statmount() {
    let name = "a_live_upper_is_refused_when_seccomp_refuses_listmount_or_statmount";
    if !common::has_feature(name, "statmount_options") {
        return;
    }
    const STATMOUNT: u32 = 457;
    const LISTMOUNT: u32 = 458;
    for refused in [&[LISTMOUNT][..], &[STATMOUNT]] {
        privileged(&format!("{name}/{refused:?}"), move |scratch| {
            let p = |d: &str| scratch.join(d);
            for d in ["l1", "l2", "u", "w"] {
                fs::create_dir(p(d)).unwrap();
            }
            refuse_syscalls_in_this_thread(refused, rustix::io::Errno::NOSYS.raw_os_error() as u16);
            let live = Overlay::new().lower(p("l1")).upper(p("u"), p("w")).mount_at(p("live")).unwrap();
            match Overlay::new().lower(p("u")).lower(p("l2")).mount() {
                Ok(_) => panic!("{refused:?} refused: the live upper was mounted as a lower"),
                Err(e) => assert_eq!(e.kind(), ErrorKind::InvalidOverlay(OverlayProblem::InUse), "{refused:?}: {e}"),
            }
            live.unmount().unwrap();
        });
    }
}

/// Upper directories with the bytes the kernel's option text escapes or overlay unescapes (backslash, comma, equals,
/// tab, newline, non-UTF-8), each mounted by every strategy and checked through both readers: the live upper is
/// refused as a lower. A directory whose name is the upper's with its backslashes doubled (what a `mount(2)` or
/// `fsconfig` string of the upper says before overlay removes its escapes) is there too and must not be taken for it.
#[test]
fn a_live_upper_with_escaped_bytes_in_its_name_is_refused() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    let name = "a_live_upper_with_escaped_bytes_in_its_name_is_refused";
    let all: Vec<Strategy> = [Strategy::DetachedFds, Strategy::AttachedFds, Strategy::Strings, Strategy::Legacy]
        .into_iter()
        .filter(|&s| common::has_strategy(name, s))
        .collect();
    privileged(name, move |scratch| {
        let uppers: [&[u8]; 5] = [b"b\\x", b"c\\,d=e", b"t\tn\nl", b"\xff\xfe", b"z\\"];
        fs::create_dir(scratch.join("l")).unwrap();
        let readers = both_readers();
        for live in all.iter().copied() {
            for (i, u) in uppers.iter().enumerate() {
                let dir = |b: &[u8]| scratch.join(format!("{live}-{i}")).join(OsStr::from_bytes(b));
                let upper = dir(u);
                let doubled: Vec<u8> = u.iter().flat_map(|&b| if b == b'\\' { vec![b, b] } else { vec![b] }).collect();
                for d in [upper.clone(), dir(&doubled), dir(b"w")] {
                    fs::create_dir_all(d).unwrap();
                }
                let what = format!("{live} {:?}", upper);
                let guard = Overlay::new()
                    .lower(scratch.join("l"))
                    .upper(&upper, dir(b"w"))
                    .strategy(live)
                    .staging_dir(scratch.join("stage"))
                    .mount_at(dir(b"m"))
                    .unwrap_or_else(|e| panic!("{what}: {e}"));
                for (how, f) in &readers {
                    match Overlay::new().features(f.clone()).lower(&upper).lower(scratch.join("l")).mount() {
                        Ok(_) => panic!("{what}/{how}: the live upper was mounted as a lower"),
                        Err(e) => {
                            assert_eq!(e.kind(), ErrorKind::InvalidOverlay(OverlayProblem::InUse), "{what}/{how}: {e}")
                        }
                    }
                }
                guard.unmount().unwrap();
            }
        }
    });
}

/// LTP `mount02` (mount(2) onto a missing mount point fails with ENOENT) and util-linux's `X-mount.mkdir[=mode]`
/// (mount(8) `--mkdir`, default mode 0755, missing parents made too): a [`MountSpec`](layermount::MountSpec) onto a
/// missing target is refused with ENOENT and creates nothing; with `X-mount.mkdir` the target is made.
#[test]
fn a_mount_onto_a_missing_target_is_refused_unless_asked() {
    privileged("a_mount_onto_a_missing_target_is_refused_unless_asked", |scratch| {
        use layermount::MountSpec;
        for missing in [scratch.join("missing"), scratch.join("missing/mnt")] {
            let err = MountSpec::new("tmpfs", "tmpfs", &missing).with_options("size=1m").mount().map(drop).unwrap_err();
            assert_eq!(err.raw_os_error(), Some(libc_enoent()), "{err}");
            assert!(err.to_string().contains(&missing.display().to_string()), "{err}");
            assert!(!scratch.join("missing").exists(), "nothing created");
        }
        let target = scratch.join("missing/mnt");

        for (option, mode) in [("X-mount.mkdir", 0o755), ("x-mount.mkdir=0700", 0o700), ("X-mount.mkdir=711", 0o711)] {
            let spec = MountSpec::new("tmpfs", "tmpfs", &target).with_options(format!("size=1m,{option}"));
            let guard = spec.mount().unwrap_or_else(|e| panic!("{option}: {e}"));
            let table = layermount::MountTable::current().unwrap();
            assert_eq!(table.mount_of(&target).unwrap().fs_type, "tmpfs", "{option}: mounted");
            guard.unmount().unwrap();
            let m = fs::metadata(&target).unwrap();
            assert_eq!(m.mode() & 0o7777, mode, "{option}: made with its mode, left after unmount as by mount(8)");
            fs::remove_dir(&target).unwrap();
            fs::remove_dir(scratch.join("missing")).unwrap();
        }
        let err = MountSpec::new("tmpfs", "tmpfs", &target).with_options("X-mount.mkdir=9z").mount().map(drop);
        assert_eq!(err.unwrap_err().kind(), ErrorKind::InvalidMountSpec);
        assert!(!scratch.join("missing").exists());
    });
}

fn libc_enoent() -> i32 {
    rustix::io::Errno::NOENT.raw_os_error()
}
