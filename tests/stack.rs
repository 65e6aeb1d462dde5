//! Image stacks: the same suite run on a flat compose and on a compose over an `ImageStack`, compared entry by entry,
//! on every strategy; the kernel's limits (stacking depth, inode numbers); the cache under concurrent use and
//! eviction; a stack dropped while a container on it writes.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use common::{chown, privileged};
use layermount::{
    Composition, ErrorKind, IdMap, ImageStack, MountTable, Overlay, OverlayOption, OverlayProblem, StackCache,
    StackLimits, StackOptions, Strategy, UserNamespace,
};
use rustix::fs::{CWD, FileType, Mode, XattrFlags};

const ALL: [Strategy; 4] = [Strategy::DetachedFds, Strategy::AttachedFds, Strategy::Strings, Strategy::Legacy];

/// Container uid/gid 1000 is host root; container 0..1000 are host 100000..101000.
fn ns() -> UserNamespace {
    let map: IdMap = "1000:0:1,0:100000:1000".parse().unwrap();
    UserNamespace::cached(&map, &map).unwrap()
}

/// The strategies this kernel has, best first.
fn strategies_here(name: &str) -> Vec<Strategy> {
    ALL.into_iter().filter(|&l| common::has_strategy(name, l)).collect()
}

/// A staging directory as the fallbacks want it: 0700.
fn private_dir(p: &Path) -> PathBuf {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new().mode(0o700).create(p).unwrap();
    p.to_path_buf()
}

fn write(dir: &Path, rel: &str, data: &str) {
    let p = dir.join(rel);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, data).unwrap();
}

fn whiteout(dir: &Path, rel: &str) {
    rustix::fs::mknodat(CWD, dir.join(rel), FileType::CharacterDevice, Mode::empty(), rustix::fs::makedev(0, 0))
        .unwrap();
}

/// Three layers (top-most first) with everything a container can observe: owners, modes, xattrs, symlinks, hard
/// links, whiteouts, an opaque directory, a directory to rename and one to delete.
fn image(store: &Path) -> Vec<PathBuf> {
    let (base, mid, top) = (store.join("base"), store.join("mid"), store.join("top"));
    for (f, d) in [("a", "a"), ("gone", "g"), ("d/x", "x"), ("d/y", "y"), ("keep/k", "k"), ("ren/inner/f", "f")] {
        write(&base, f, d);
    }
    write(&base, "del/one", "1");
    write(&base, "hl1", "hard");
    fs::hard_link(base.join("hl1"), base.join("hl2")).unwrap();
    std::os::unix::fs::symlink("a", base.join("sl")).unwrap();
    fs::set_permissions(base.join("keep/k"), fs::Permissions::from_mode(0o751)).unwrap();
    chown(&base.join("keep/k"), 1000, 1000);

    rustix::fs::setxattr(base.join("a"), "user.note", b"base", XattrFlags::empty()).unwrap();
    write(&mid, "m", "m");
    write(&mid, "d/z", "z");
    whiteout(&mid, "gone");
    rustix::fs::setxattr(mid.join("d"), "trusted.overlay.opaque", b"y", XattrFlags::empty()).unwrap();
    chown(&mid.join("d"), 5, 6);
    write(&top, "a", "A");
    write(&top, "t/deep/file", "t");
    rustix::fs::setxattr(top.join("a"), "user.note", b"top", XattrFlags::empty()).unwrap();
    vec![top, mid, base]
}

/// One entry as a container sees it.
#[derive(Debug, PartialEq, Eq)]
struct Seen {
    kind: &'static str,
    mode: u32,
    owner: (u32, u32),
    nlink: u64,
    content: String,
    xattrs: Vec<(String, Vec<u8>)>,
}

fn xattrs(p: &Path) -> Vec<(String, Vec<u8>)> {
    let mut names = vec![0u8; 4096];
    let n = rustix::fs::llistxattr(p, &mut names).unwrap_or(0);
    let mut out: Vec<(String, Vec<u8>)> = names[..n]
        .split(|&b| b == 0)
        .filter(|s| !s.is_empty())
        .map(|name| {
            let name = String::from_utf8_lossy(name).into_owned();
            let mut v = vec![0u8; 4096];
            let len = rustix::fs::lgetxattr(p, name.as_str(), &mut v).unwrap_or(0);
            v.truncate(len);
            (name, v)
        })
        .collect();
    out.sort();
    out
}

/// Every entry under `root` (relative path -> what is seen).
fn snapshot(root: &Path) -> BTreeMap<String, Seen> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            let m = fs::symlink_metadata(&p).unwrap();
            let (kind, content) = if m.is_dir() {
                stack.push(p.clone());
                ("dir", String::new())
            } else if m.file_type().is_symlink() {
                ("symlink", fs::read_link(&p).unwrap().display().to_string())
            } else {
                ("file", fs::read_to_string(&p).unwrap())
            };
            let nlink = if m.is_dir() { 0 } else { m.nlink() };
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            let seen =
                Seen { kind, mode: m.mode() & 0o7777, owner: (m.uid(), m.gid()), nlink, content, xattrs: xattrs(&p) };
            out.insert(rel, seen);
        }
    }
    out
}

/// What a container does, with each step's outcome (Ok, or the errno).
fn exercise(root: &Path) -> Vec<(&'static str, Result<(), i32>)> {
    let r = |res: std::io::Result<()>| res.map_err(|e| e.raw_os_error().unwrap_or(-1));
    let p = |rel: &str| root.join(rel);
    vec![
        (
            "append to a lower file (copy-up)",
            r(fs::OpenOptions::new().append(true).open(p("a")).and_then(|mut f| {
                use std::io::Write;
                f.write_all(b"+")
            })),
        ),
        ("new file in a lower directory (copy-up of the directory)", r(fs::write(p("keep/new"), "n"))),
        ("chmod a lower file", r(fs::set_permissions(p("keep/k"), fs::Permissions::from_mode(0o600)))),
        ("chown a lower directory", r(std::os::unix::fs::chown(p("t"), Some(100007), Some(100008)))),
        ("delete a lower file", r(fs::remove_file(p("d/z")))),
        ("delete a lower directory", r(fs::remove_dir_all(p("del")))),
        ("rename a lower directory", r(fs::rename(p("ren"), p("renamed")))),
        ("rename a lower file", r(fs::rename(p("m"), p("m2")))),
        ("write through a hard link (copy-up breaks it)", r(fs::write(p("hl1"), "changed"))),
        ("new hard link", r(fs::hard_link(p("hl2"), p("hl3")))),
        ("recreate a whited-out name", r(fs::write(p("gone"), "back"))),
        ("mkdir and rmdir", r(fs::create_dir(p("nd")).and_then(|()| fs::remove_dir(p("nd"))))),
        ("set a user xattr", r(rustix::fs::setxattr(p("sl"), "user.x", b"1", XattrFlags::empty()).map_err(Into::into))),
    ]
}

fn statfs_of(root: &Path) -> (i64, i64, u64, i64) {
    let s = rustix::fs::statfs(root).unwrap();
    #[allow(clippy::unnecessary_cast)]
    (s.f_type as i64, s.f_bsize as i64, s.f_blocks as u64, s.f_namelen as i64)
}

fn flat_and_stacked_agree(level: Strategy) {
    if !common::has_strategy("flat_and_stacked_agree", level) {
        return;
    }
    let name = format!("flat_and_stacked_agree/{level}");
    privileged(&name, move |scratch| {
        let stage = private_dir(&scratch.join("stage"));
        let layers = image(&scratch.join("store"));
        let ctr = |name: &str| {
            let (u, w, m) =
                (scratch.join(name).join("upper"), scratch.join(name).join("work"), scratch.join(name).join("root"));
            fs::create_dir_all(&u).unwrap();
            fs::create_dir_all(&w).unwrap();
            (u, w, m)
        };
        let (fu, fw, fm) = ctr("flat");
        let flat = Overlay::new()
            .lowers(&layers)
            .upper(&fu, &fw)
            .idmap(ns())
            .strategy(level)
            .staging_dir(&stage)
            .mount_at(&fm)
            .unwrap();
        let opts = StackOptions { strategy: Some(level), staging_dir: Some(stage.clone()), ..StackOptions::default() };
        let stack = ImageStack::build_with(&layers, Some(&ns()), &opts).unwrap();
        assert_eq!(stack.strategy(), level);
        let detached = level == Strategy::DetachedFds && layermount::Features::get().overlay_stack;
        assert_eq!(stack.attached_at().is_none(), detached, "detached only where the probe says the kernel takes it");
        let (su, sw, sm) = ctr("stacked");
        let stacked = Overlay::new()
            .lower_stack(&stack)
            .upper(&su, &sw)
            .idmap(ns())
            .strategy(level)
            .staging_dir(&stage)
            .mount_at(&sm)
            .unwrap();

        let before = snapshot(&fm);
        assert!(before.contains_key("t/deep/file") && !before.contains_key("gone") && !before.contains_key("d/x"));
        assert_eq!(before["a"].content, "A");
        assert_eq!(before["keep/k"].owner, (0, 0), "container 1000 is host root through the idmap");
        assert_eq!(before["d"].owner, (100005, 100006));
        assert_eq!(before["hl1"].nlink, 2);
        assert_eq!(before, snapshot(&sm), "the merged trees differ before any change");
        let ino = |m: &Path, f: &str| fs::symlink_metadata(m.join(f)).unwrap().ino();
        assert_eq!(ino(&sm, "hl1"), ino(&sm, "hl2"), "hard links share an inode number on a stack");
        assert_eq!(statfs_of(&fm), statfs_of(&sm));

        let (flat_steps, stacked_steps) = (exercise(&fm), exercise(&sm));
        assert_eq!(flat_steps, stacked_steps, "the same operations had different outcomes");
        let after = snapshot(&fm);
        assert_eq!(after["a"].content, "A+");
        assert!(!after.contains_key("d/z") && !after.contains_key("del"));
        assert_eq!(after["hl1"].content, "changed");
        assert_eq!(after["hl2"].content, "hard", "copy-up broke the hard link");
        assert_eq!(after, snapshot(&sm), "the merged trees differ after the same changes");
        assert_eq!(statfs_of(&fm), statfs_of(&sm));
        // What reached the uppers is what the container wrote, as host ids of the container's root.
        assert_eq!(fs::read_to_string(su.join("keep/new")).unwrap(), "n");
        assert_eq!(owner_of(&su.join("keep/new")), owner_of(&fu.join("keep/new")));
        assert_eq!(fs::read_to_string(layers[0].join("a")).unwrap(), "A", "the layer is untouched");

        flat.unmount().unwrap();
        stacked.unmount().unwrap();
        drop(stack);
        assert!(fs::read_dir(&stage).unwrap().next().is_none(), "staging left behind");
    });
}

fn owner_of(p: &Path) -> (u32, u32) {
    let m = fs::symlink_metadata(p).unwrap();
    (m.uid(), m.gid())
}

#[test]
fn flat_and_stacked_agree_fd_detached() {
    flat_and_stacked_agree(Strategy::DetachedFds);
}
#[test]
fn flat_and_stacked_agree_fd_attached() {
    flat_and_stacked_agree(Strategy::AttachedFds);
}
#[test]
fn flat_and_stacked_agree_string() {
    flat_and_stacked_agree(Strategy::Strings);
}
#[test]
fn flat_and_stacked_agree_legacy() {
    flat_and_stacked_agree(Strategy::Legacy);
}

#[test]
fn one_layer_stack_and_many_containers() {
    privileged("one_layer_stack_and_many_containers", |scratch| {
        if !common::scratch_idmaps("one_layer_stack_and_many_containers", scratch) {
            return;
        }
        let layer = scratch.join("l");
        write(&layer, "etc/os-release", "x");
        for level in strategies_here("one_layer_stack_and_many_containers") {
            let stage = private_dir(&scratch.join(format!("stage-{level}")));
            let opts = StackOptions { strategy: Some(level), staging_dir: Some(stage.clone()), ..Default::default() };
            let stack = ImageStack::build_with([&layer], Some(&ns()), &opts).unwrap();
            let guards: Vec<_> = (0..3)
                .map(|i| {
                    let d = scratch.join(format!("{level}-{i}"));
                    fs::create_dir_all(d.join("u")).unwrap();
                    fs::create_dir_all(d.join("w")).unwrap();
                    let g = Overlay::new()
                        .lower_stack(&stack)
                        .upper(d.join("u"), d.join("w"))
                        .idmap(ns())
                        .strategy(level)
                        .staging_dir(&stage)
                        .mount_at(d.join("root"))
                        .unwrap();
                    fs::write(d.join("root/mine"), i.to_string()).unwrap();
                    assert_eq!(owner_of(&d.join("root/etc/os-release")), (100000, 100000));
                    g
                })
                .collect();
            for (i, g) in guards.into_iter().enumerate() {
                let d = scratch.join(format!("{level}-{i}"));
                assert_eq!(fs::read_to_string(d.join("root/mine")).unwrap(), i.to_string(), "containers are apart");
                g.unmount().unwrap();
            }
        }
    });
}

/// The kernel stacks filesystems at most two deep: layers on an overlay make a stack the kernel would refuse under
/// a container; `build` says so, and the cache composes flat instead.
#[test]
fn layers_on_an_overlay_fall_back_to_flat() {
    privileged("layers_on_an_overlay_fall_back_to_flat", |scratch| {
        let inner = image(&scratch.join("store"));
        let under = scratch.join("under");
        let guard = Overlay::new().lowers(&inner).mount_at(&under).unwrap();
        // Layers that live on that overlay.
        let layers = [under.join("t"), under.join("keep")];
        // (Overlay cannot be idmapped, so such layers are composed without an idmap.)
        let err = ImageStack::build(&layers, None).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidOverlay(OverlayProblem::StackTooDeep), "{err}");
        assert!(err.to_string().contains("three filesystems"), "{err}");
        // The kernel's own refusal, shown without our check: an overlay of them under a container overlay.
        let deep = Overlay::new().lowers(&layers).attrs(layermount::MountAttrs::RDONLY).mount().unwrap();
        fs::create_dir_all(scratch.join("c/u")).unwrap();
        fs::create_dir_all(scratch.join("c/w")).unwrap();
        let refused = Overlay::new()
            .lower_tree(deep)
            .upper(scratch.join("c/u"), scratch.join("c/w"))
            .mount_at(scratch.join("c/r"));
        assert!(refused.is_err(), "the kernel took a third level of stacking");

        let cache = StackCache::default();
        let (overlay, how) = cache.compose(&layers, None).unwrap();
        assert!(
            matches!(&how, Composition::Flat(e) if e.kind() == ErrorKind::InvalidOverlay(OverlayProblem::StackTooDeep))
        );
        let ctr = overlay.upper(scratch.join("c/u"), scratch.join("c/w")).mount_at(scratch.join("c/r")).unwrap();
        assert!(scratch.join("c/r/deep/file").exists(), "the flat compose has the layers");
        assert_eq!(cache.stats().stacks, 0, "nothing cached for a failed stack");
        ctr.unmount().unwrap();
        guard.unmount().unwrap();
    });
}

/// Inode numbers: on a stack the container overlay's layers are on two filesystems. With `xino=on` every entry
/// shows the overlay's `st_dev`, as in a flat overlay; without it a lower file shows the stack's.
#[test]
fn inode_numbers_with_and_without_xino() {
    privileged("inode_numbers_with_and_without_xino", |scratch| {
        if !common::scratch_idmaps("inode_numbers_with_and_without_xino", scratch) {
            return;
        }
        let layers = image(&scratch.join("store"));
        let stack = ImageStack::build(&layers, Some(&ns())).unwrap();
        let mount = |name: &str, xino: Option<&'static str>| {
            let d = scratch.join(name);
            fs::create_dir_all(d.join("u")).unwrap();
            fs::create_dir_all(d.join("w")).unwrap();
            let mut o = Overlay::new().lower_stack(&stack).upper(d.join("u"), d.join("w")).idmap(ns());
            if let Some(x) = xino {
                o = o.option(OverlayOption::Xino(x));
            }
            (o.mount_at(d.join("r")).unwrap(), d.join("r"))
        };
        let dev = |p: &Path| fs::symlink_metadata(p).unwrap().dev();
        let (on, r) = mount("on", Some("on"));
        assert_eq!(dev(&r.join("a")), dev(&r), "xino=on: a lower file shows the overlay's st_dev");
        assert_eq!(dev(&r.join("t/deep/file")), dev(&r));
        let ino = |p: &Path| fs::symlink_metadata(p).unwrap().ino();
        assert_eq!(ino(&r.join("hl1")), ino(&r.join("hl2")));
        assert_ne!(ino(&r.join("a")), ino(&r.join("m")));
        on.unmount().unwrap();
        let (off, r) = mount("off", Some("off"));
        assert_ne!(dev(&r.join("a")), dev(&r), "xino=off: a lower file shows its layer's st_dev");
        off.unmount().unwrap();
    });
}

#[test]
fn cache_concurrent_use_and_eviction() {
    privileged("cache_concurrent_use_and_eviction", |scratch| {
        if !common::scratch_idmaps("cache_concurrent_use_and_eviction", scratch) {
            return;
        }
        let a = image(&scratch.join("a"));
        let b = vec![scratch.join("b1"), scratch.join("b2")];
        write(&b[0], "b", "1");
        write(&b[1], "c", "2");
        let cache = Arc::new(StackCache::new(
            StackLimits { max_idle: 1, idle_time: Duration::from_secs(3600) },
            StackOptions::default(),
        ));
        // Eight containers of one image at once: one build, seven hits, each container on the same stack.
        let threads: Vec<_> = (0..8)
            .map(|i| {
                let (cache, a, scratch) = (Arc::clone(&cache), a.clone(), scratch.to_path_buf());
                std::thread::spawn(move || {
                    let d = scratch.join(format!("ctr{i}"));
                    fs::create_dir_all(d.join("u")).unwrap();
                    fs::create_dir_all(d.join("w")).unwrap();
                    let (o, _) = cache.compose(&a, Some(&ns())).unwrap();
                    let g = o.upper(d.join("u"), d.join("w")).mount_at(d.join("r")).unwrap();
                    fs::write(d.join("r/a"), format!("ctr{i}")).unwrap();
                    assert_eq!(fs::read_to_string(d.join("r/m")).unwrap(), "m");
                    g
                })
            })
            .collect();
        let guards: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        let s = cache.stats();
        assert_eq!((s.misses, s.hits, s.stacks), (1, 7, 1), "{s:?}");
        for (i, g) in guards.into_iter().enumerate() {
            assert_eq!(fs::read_to_string(scratch.join(format!("ctr{i}/r/a"))).unwrap(), format!("ctr{i}"));
            g.unmount().unwrap();
        }
        assert_eq!(cache.stats().idle, 1, "no handle left: idle, still cached");

        // LRU: a second idle image pushes the least recently used one out (max_idle = 1).
        let held_b = cache.get(&b, Some(&ns())).unwrap();
        assert_eq!(cache.sweep(), 0, "a is the only idle stack");
        drop(held_b);
        std::thread::sleep(Duration::from_millis(2));
        assert_eq!(cache.sweep(), 1);
        let s = cache.stats();
        assert_eq!((s.evictions, s.stacks), (1, 1), "{s:?}");
        cache.get(&b, Some(&ns())).unwrap();
        assert_eq!(cache.stats().hits, 8, "b (most recently used) stayed");
        cache.get(&a, Some(&ns())).unwrap();
        assert_eq!(cache.stats().misses, 3, "a was evicted and is built again");

        // In use is never evicted, whatever the limits; idle time evicts what is idle.
        let strict = StackCache::new(StackLimits { max_idle: 0, idle_time: Duration::ZERO }, StackOptions::default());
        let held = strict.get(&a, None).unwrap();
        strict.get(&b, None).unwrap();
        assert_eq!(strict.sweep(), 1, "only the idle stack goes");
        assert_eq!(strict.stats().stacks, 1);
        drop(held);
        assert_eq!(strict.clear() + strict.sweep(), 1);
        assert_eq!(strict.stats().stacks, 0);
    });
}

/// A layer path holding a NUL names no directory: the cache refuses it even when the paths on either side of the
/// NUL are the layers of a stack it holds (its keys join paths with NULs), and caches nothing for it.
#[test]
fn a_path_with_a_nul_is_not_the_layers_around_it() {
    privileged("a_path_with_a_nul_is_not_the_layers_around_it", |scratch| {
        use std::ffi::OsStr;
        use std::os::unix::ffi::OsStrExt;
        let layers = [scratch.join("l2"), scratch.join("l1")];
        write(&layers[0], "a", "2");
        write(&layers[1], "b", "1");
        let cache = StackCache::default();
        let held = cache.get(&layers, None).unwrap();
        let mut joined = layers[0].as_os_str().as_bytes().to_vec();
        joined.push(0);
        joined.extend_from_slice(layers[1].as_os_str().as_bytes());
        let one = PathBuf::from(OsStr::from_bytes(&joined));
        match cache.get(&[&one], None) {
            Ok(_) => panic!("a path with a NUL got the stack of the layers around it"),
            Err(e) => assert_eq!(e.kind(), ErrorKind::Os, "{e}"),
        }
        let s = cache.stats();
        assert_eq!((s.hits, s.stacks), (0, 1), "nothing hit, nothing cached for it: {s:?}");
        drop(held);
    });
}

/// A stack's last handle dropped (and evicted) while a container on it writes: the container never notices, and
/// the stack's own mount is gone.
#[test]
fn dropping_a_stack_under_a_writing_container() {
    privileged("dropping_a_stack_under_a_writing_container", |scratch| {
        if !common::scratch_idmaps("dropping_a_stack_under_a_writing_container", scratch) {
            return;
        }
        let name = "dropping_a_stack_under_a_writing_container";
        for level in [Strategy::DetachedFds, Strategy::Legacy].into_iter().filter(|&l| common::has_strategy(name, l)) {
            let layers = image(&scratch.join(format!("s-{level}")));
            let stage = private_dir(&scratch.join(format!("stage-{level}")));
            let opts = StackOptions { strategy: Some(level), staging_dir: Some(stage.clone()), ..Default::default() };
            let cache = StackCache::new(StackLimits::default(), opts);
            let d = scratch.join(format!("ctr-{level}"));
            fs::create_dir_all(d.join("u")).unwrap();
            fs::create_dir_all(d.join("w")).unwrap();
            let (o, _) = cache.compose(&layers, Some(&ns())).unwrap();
            let guard = o.upper(d.join("u"), d.join("w")).mount_at(d.join("r")).unwrap();
            let root = d.join("r");
            let writer = {
                let root = root.clone();
                std::thread::spawn(move || {
                    for i in 0..400 {
                        fs::write(root.join(format!("f{i}")), i.to_string()).unwrap();
                        assert_eq!(fs::read_to_string(root.join("t/deep/file")).unwrap(), "t");
                        fs::write(root.join("a"), format!("A{i}")).unwrap();
                    }
                })
            };
            while !root.join("f20").exists() {
                std::thread::yield_now();
            }
            assert_eq!(cache.clear(), 1, "the stack had no handle but the cache's: evicted mid-write");
            writer.join().unwrap();
            assert_eq!(fs::read_to_string(root.join("m")).unwrap(), "m", "the lower is still there");
            assert_eq!(fs::read_to_string(root.join("f399")).unwrap(), "399");
            assert_eq!(fs::read_to_string(d.join("u/a")).unwrap(), "A399");
            assert!(fs::read_dir(&stage).unwrap().next().is_none(), "the attached stack is gone with its directory");
            let overlays = MountTable::current().unwrap().mounts().iter().filter(|m| m.fs_type == "overlay").count();
            assert_eq!(overlays, 1, "only the container's overlay is in the mount table");
            guard.unmount().unwrap();
        }
    });
}

/// Which kernels hold a stack how, asked of the probe: where `overlay_stack` is missing (or turned off, as here, to
/// run that path on a new kernel) a `DetachedFds` stack stays attached under the staging directory, and containers
/// on it work the same.
#[test]
fn a_kernel_without_detached_stacks_keeps_them_attached() {
    privileged("a_kernel_without_detached_stacks_keeps_them_attached", |scratch| {
        if !common::scratch_idmaps("a_kernel_without_detached_stacks_keeps_them_attached", scratch) {
            return;
        }
        let f = layermount::Features::get().clone();
        if !f.overlay_stack {
            eprintln!("note: this kernel lacks overlay_stack (a detached overlay as a layer): stacks stay attached");
        }
        let mut without = f.clone();
        without.overlay_stack = false;
        let layers = image(&scratch.join("store"));
        let stage = private_dir(&scratch.join("stage"));
        let strategy = f.strategy();
        let opts = StackOptions { features: Some(without), staging_dir: Some(stage.clone()), ..Default::default() };
        let stack = ImageStack::build_with(&layers, Some(&ns()), &opts).unwrap();
        assert_eq!(stack.strategy(), strategy);
        let at = stack.attached_at().expect("attached without overlay_stack").to_path_buf();
        assert!(at.starts_with(&stage));
        assert_eq!(MountTable::current().unwrap().mount_of(&at).unwrap().fs_type, "overlay");
        let d = scratch.join("ctr");
        fs::create_dir_all(d.join("u")).unwrap();
        fs::create_dir_all(d.join("w")).unwrap();
        let g = Overlay::new()
            .lower_stack(&stack)
            .upper(d.join("u"), d.join("w"))
            .idmap(ns())
            .mount_at(d.join("r"))
            .unwrap();
        assert_eq!(fs::read_to_string(d.join("r/a")).unwrap(), "A");
        drop(stack);
        assert!(!at.exists(), "the attached stack and its directory go with the last handle");
        assert_eq!(fs::read_to_string(d.join("r/t/deep/file")).unwrap(), "t", "the container keeps its lower");
        g.unmount().unwrap();
        if f.overlay_stack && strategy == Strategy::DetachedFds {
            let stack = ImageStack::build(&layers, Some(&ns())).unwrap();
            assert!(stack.attached_at().is_none(), "the probe says detached stacks work here");
        }
    });
}
