//! Overlay composition on real mounts: one suite run against every strategy, plus validation and limits.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::{chown, owner, privileged};
use layermount::{ErrorKind, IdMap, MountTable, Overlay, OverlayOption, OverlayProblem, Strategy, UserNamespace};

/// Every strategy, best first.
const ALL_LEVELS: [Strategy; 4] = [Strategy::DetachedFds, Strategy::AttachedFds, Strategy::Strings, Strategy::Legacy];

/// Whether the running kernel has the strategy `level` (the probe's best is at least it); one skip line naming the
/// missing feature otherwise.
fn kernel_has(name: &str, level: Strategy) -> bool {
    common::has_feature(name, common::strategy_feature(level))
}

/// The strategies the running kernel has, best first (a skip line for each other one).
fn levels_here(name: &str) -> Vec<Strategy> {
    ALL_LEVELS.into_iter().filter(|&l| kernel_has(&format!("{name}/{l}"), l)).collect()
}

/// Container uid/gid 1000 is host root; container 0..1000 are host 100000..101000.
fn ns() -> UserNamespace {
    let map: IdMap = "1000:0:1,0:100000:1000".parse().unwrap();
    UserNamespace::cached(&map, &map).unwrap()
}

/// Make `dir` with `files` (relative path, contents).
fn layer(dir: &Path, files: &[(&str, &str)]) -> PathBuf {
    fs::create_dir_all(dir).unwrap();
    for (p, data) in files {
        let path = dir.join(p);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, data).unwrap();
    }
    dir.to_path_buf()
}

fn read(p: &Path) -> String {
    fs::read_to_string(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> =
        fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    v.sort();
    v
}

/// The staging directory given to the builder must be empty again after any composition.
fn assert_staging_clean(stage: &Path) {
    assert!(names(stage).is_empty(), "staging left behind: {:?}", names(stage));
}

fn stage(scratch: &Path) -> PathBuf {
    // The staging directory must be private (0700); the builder would make it so if missing.
    let s = scratch.join("stage");
    std::os::unix::fs::DirBuilderExt::mode(&mut fs::DirBuilder::new(), 0o700).create(&s).unwrap();
    s
}

fn two_layers_merge_read_only(level: Strategy) {
    let name = format!("two_layers_merge_read_only/{level}");
    if !kernel_has(&name, level) {
        return;
    }
    privileged(&name, move |scratch| {
        let stage = stage(scratch);
        let l1 = layer(&scratch.join("store/l1"), &[("a", "a1"), ("b", "b1")]);
        let l2 = layer(&scratch.join("store/l2"), &[("b", "b2"), ("c", "c2")]);
        let mnt = scratch.join("mnt");
        let guard = Overlay::new().lower(&l2).lower(&l1).strategy(level).staging_dir(&stage).mount_at(&mnt).unwrap();
        assert_staging_clean(&stage);
        assert_eq!(names(&mnt), ["a", "b", "c"]);
        assert_eq!(read(&mnt.join("b")), "b2", "the first lower given is the top-most");
        let err = fs::write(mnt.join("new"), "x").unwrap_err();
        assert_eq!(err.raw_os_error(), Some(rustix::io::Errno::ROFS.raw_os_error()));
        let m = MountTable::current().unwrap();
        assert_eq!(m.mount_of(&mnt).unwrap().fs_type, "overlay");
        guard.unmount().unwrap();
    });
}

fn idmapped_layers_and_upper(level: Strategy) {
    let name = format!("idmapped_layers_and_upper/{level}");
    if !kernel_has(&name, level) {
        return;
    }
    privileged(&name, move |scratch| {
        let stage = stage(scratch);
        let store = scratch.join("store");
        let l1 = layer(&store.join("1"), &[("etc/passwd", "root"), ("home/user/file", "u")]);
        chown(&l1.join("home/user/file"), 1000, 1000);
        let l2 = layer(&store.join("2"), &[("etc/hostname", "h")]);
        let l3 = layer(&store.join("3"), &[("bin/sh", "sh")]);
        let upper = layer(&scratch.join("ctr/upper"), &[]);
        let work = layer(&scratch.join("ctr/work"), &[]);
        let mnt = scratch.join("rootfs");
        let guard = Overlay::new()
            .lowers([&l3, &l2, &l1])
            .upper(&upper, &work)
            .idmap(ns())
            .idmap_upper(true)
            .strategy(level)
            .staging_dir(&stage)
            .mount_at(&mnt)
            .unwrap();
        assert_staging_clean(&stage);
        // Owners seen through the overlay are mapped.
        assert_eq!(owner(&mnt.join("etc/passwd")), (100000, 100000));
        assert_eq!(owner(&mnt.join("home/user/file")), (0, 0));
        // Copy-up: the upper copy keeps the lower's on-disk owner (0), not the mapped one.
        fs::write(mnt.join("etc/passwd"), "root\nuser").unwrap();
        assert_eq!(owner(&upper.join("etc/passwd")), (0, 0));
        assert_eq!(read(&l1.join("etc/passwd")), "root", "the lower layer is untouched");
        // A new file by host root lands on disk as container id 1000.
        fs::write(mnt.join("new"), "n").unwrap();
        assert_eq!(owner(&upper.join("new")), (1000, 1000));
        assert_eq!(owner(&mnt.join("new")), (0, 0));
        guard.unmount().unwrap();
    });
}

/// Run `script` with `sh -c` as host uid/gid `id` (the container's root of a 0:100000 map), in this thread's mount
/// namespace.
fn sh_as(id: u32, script: &str) -> std::process::Output {
    use std::os::unix::process::CommandExt;
    std::process::Command::new("sh").arg("-c").arg(script).uid(id).gid(id).output().unwrap()
}

fn container_root_writes_into_prepared_upper(level: Strategy) {
    let name = format!("container_root_writes_into_prepared_upper/{level}");
    if !kernel_has(&name, level) {
        return;
    }
    privileged(&name, move |scratch| {
        let stage = stage(scratch);
        let l1 = layer(&scratch.join("store/1"), &[("etc/passwd", "root")]);
        let map: IdMap = "0:100000:65536".parse().unwrap();
        let ns = UserNamespace::cached(&map, &map).unwrap();
        let compose = |name: &str, prepare: bool| {
            let upper = layer(&scratch.join(name).join("upper"), &[]);
            let work = layer(&scratch.join(name).join("work"), &[]);
            let mnt = scratch.join(name).join("rootfs");
            let guard = Overlay::new()
                .lower(&l1)
                .upper(&upper, &work)
                .idmap(ns.clone())
                .prepare_upper(prepare)
                .strategy(level)
                .staging_dir(&stage)
                .mount_at(&mnt)
                .unwrap();
            (guard, upper, work, mnt)
        };
        let (guard, upper, work, mnt) = compose("prepared", true);
        assert_staging_clean(&stage);
        assert_eq!(owner(&upper), (100000, 100000), "the empty upper is handed to the container's root");
        assert_eq!(owner(&work), (100000, 100000));
        assert_eq!(owner(&mnt), (100000, 100000), "the merged / belongs to the container's root");
        let out =
            sh_as(100000, &format!("echo hi > {0}/new && mkdir {0}/dir && echo x >> {0}/etc/passwd", mnt.display()));
        assert!(out.status.success(), "container root cannot write: {}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(owner(&upper.join("new")), (100000, 100000), "writes land with the container root's host ids");
        assert_eq!(owner(&upper.join("dir")), (100000, 100000));
        assert_eq!(read(&l1.join("etc/passwd")), "root", "the lower layer is untouched");
        guard.unmount().unwrap();
        // Mounting again over the same, now non-empty, upper: still the container root's, so accepted.
        let again = Overlay::new().lower(&l1).upper(&upper, &work).idmap(ns.clone()).strategy(level);
        again.staging_dir(&stage).mount_at(&mnt).unwrap().unmount().unwrap();

        // Opting out leaves the upper to host root: the container's root is refused.
        let (guard, upper2, _, mnt2) = compose("kept", false);
        assert_eq!(owner(&upper2), (0, 0));
        assert!(!sh_as(100000, &format!("echo hi > {}/new", mnt2.display())).status.success());
        guard.unmount().unwrap();

        // A non-empty upper that belongs to someone else is refused before anything is mounted.
        let upper3 = layer(&scratch.join("foreign/upper"), &[("old", "o")]);
        let work3 = layer(&scratch.join("foreign/work"), &[]);
        chown(&upper3, 200000, 200000);
        let err = Overlay::new()
            .lower(&l1)
            .upper(&upper3, &work3)
            .idmap(ns.clone())
            .strategy(level)
            .staging_dir(&stage)
            .mount()
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidOverlay(OverlayProblem::UpperOwner), "{err}");
        assert!(err.to_string().contains("200000:200000"), "{err}");
        assert_eq!(owner(&upper3), (200000, 200000), "left as it was");
        assert_staging_clean(&stage);
    });
}

fn whiteouts_and_opaque_dirs(level: Strategy) {
    let name = format!("whiteouts_and_opaque_dirs/{level}");
    if !kernel_has(&name, level) {
        return;
    }
    privileged(&name, move |scratch| {
        let stage = stage(scratch);
        let base = layer(&scratch.join("s/base"), &[("gone", "g"), ("d/x", "x"), ("d/y", "y"), ("keep", "k")]);
        let top = layer(&scratch.join("s/top"), &[("d/z", "z")]);
        rustix::fs::mknodat(
            rustix::fs::CWD,
            top.join("gone"),
            rustix::fs::FileType::CharacterDevice,
            rustix::fs::Mode::empty(),
            rustix::fs::makedev(0, 0),
        )
        .unwrap();
        rustix::fs::setxattr(top.join("d"), "trusted.overlay.opaque", b"y", rustix::fs::XattrFlags::empty()).unwrap();
        let mnt = scratch.join("mnt");
        let guard = Overlay::new().lower(&top).lower(&base).strategy(level).staging_dir(&stage).mount_at(&mnt).unwrap();
        assert_eq!(names(&mnt), ["d", "keep"], "the whiteout hides 'gone'");
        assert_eq!(names(&mnt.join("d")), ["z"], "the opaque directory hides the lower children");
        drop(guard);
        assert_staging_clean(&stage);
    });
}

fn failures_leave_nothing(level: Strategy) {
    let name = format!("failures_leave_nothing/{level}");
    if !kernel_has(&name, level) {
        return;
    }
    privileged(&name, move |scratch| {
        let stage = stage(scratch);
        let l1 = layer(&scratch.join("s/1"), &[("a", "a")]);
        let l2 = layer(&scratch.join("s/2"), &[("b", "b")]);
        fs::write(scratch.join("s/file"), "not a dir").unwrap();
        let mnt = scratch.join("mnt");
        let build = || Overlay::new().strategy(level).staging_dir(&stage).idmap(ns());

        let err = build().lower(&l1).lower(scratch.join("s/missing")).mount_at(&mnt).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(2), "{err}");
        assert_eq!(err.path(), Some(scratch.join("s/missing").as_path()));

        let err = build().lower(&l1).lower(scratch.join("s/file")).mount_at(&mnt).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidOverlay(OverlayProblem::NotADirectory), "{err}");

        // Rejected by the kernel only after the layers were opened (and, in fallbacks, staged).
        let err = build()
            .lower(&l1)
            .lower(&l2)
            .option(OverlayOption::Raw("no_such_option".into(), None))
            .mount_at(&mnt)
            .unwrap_err();
        assert_eq!(err.raw_os_error(), Some(22), "{err}");
        if level == Strategy::Legacy {
            assert!(err.to_string().contains("only in the kernel log"), "mount(2) tells its reason only there: {err}");
        } else {
            assert!(err.kernel_messages().iter().any(|m| m.contains("no_such_option")), "{err}");
        }
        assert!(!mnt.exists(), "no mount point left");
        assert_staging_clean(&stage);
    });
}

fn many_layers(level: Strategy, count: usize) {
    let name = format!("many_layers/{level}/{count}");
    if !kernel_has(&name, level) {
        return;
    }
    privileged(&name, move |scratch| {
        let stage = stage(scratch);
        let layers: Vec<PathBuf> = (0..count)
            .map(|i| layer(&scratch.join(format!("store/{i}/fs")), &[(&format!("f{i}"), "x"), ("who", &i.to_string())]))
            .collect();
        let mnt = scratch.join("mnt");
        let upper = layer(&scratch.join("ctr/u"), &[]);
        let work = layer(&scratch.join("ctr/w"), &[]);
        let guard = Overlay::new()
            .lowers(layers.iter().rev())
            .upper(&upper, &work)
            .idmap(ns())
            .strategy(level)
            .staging_dir(&stage)
            .mount_at(&mnt)
            .unwrap();
        assert_staging_clean(&stage);
        assert_eq!(fs::read_dir(&mnt).unwrap().count(), count + 1);
        assert_eq!(read(&mnt.join("who")), (count - 1).to_string(), "the last layer given first is on top");
        assert_eq!(owner(&mnt.join("f0")), (100000, 100000));
        guard.unmount().unwrap();
    });
}

macro_rules! strategy_suite {
    ($($module:ident => $level:expr),* $(,)?) => {$(
        mod $module {
            use super::*;
            const LEVEL: Strategy = $level;
            #[test]
            fn two_layers_merge_read_only() { super::two_layers_merge_read_only(LEVEL) }
            #[test]
            fn idmapped_layers_and_upper() { super::idmapped_layers_and_upper(LEVEL) }
            #[test]
            fn whiteouts_and_opaque_dirs() { super::whiteouts_and_opaque_dirs(LEVEL) }
            #[test]
            fn container_root_writes_into_prepared_upper() { super::container_root_writes_into_prepared_upper(LEVEL) }
            #[test]
            fn failures_leave_nothing() { super::failures_leave_nothing(LEVEL) }
            #[test]
            fn two_layers() { super::many_layers(LEVEL, 2) }
            #[test]
            fn sixty_four_layers() { super::many_layers(LEVEL, 64) }
            #[test]
            fn five_hundred_layers() { super::many_layers(LEVEL, 500) }
        }
    )*};
}

strategy_suite! {
    fd_detached => Strategy::DetachedFds,
    fd_attached => Strategy::AttachedFds,
    string => Strategy::Strings,
    legacy => Strategy::Legacy,
}

#[test]
fn validation_before_any_mount() {
    privileged("validation_before_any_mount", |scratch| {
        let l1 = layer(&scratch.join("s/1"), &[("a", "a")]);
        let l2 = layer(&scratch.join("s/2"), &[]);
        let up = layer(&scratch.join("c/u"), &[]);
        let wk = layer(&scratch.join("c/w"), &[]);
        let kind = |o: Overlay| o.mount().unwrap_err().kind();
        let p = ErrorKind::InvalidOverlay;
        assert_eq!(kind(Overlay::new()), p(OverlayProblem::NoLowerLayer));
        assert_eq!(kind(Overlay::new().upper(&up, &wk)), p(OverlayProblem::NoLowerLayer));
        assert_eq!(kind(Overlay::new().lower(&l1)), p(OverlayProblem::SingleLowerWithoutUpper));
        // The same directory twice (even through another path) is refused, not silently dropped.
        fs::create_dir(scratch.join("alias")).unwrap();
        common::bind(&l1, &scratch.join("alias"));
        let err = Overlay::new().lower(&l1).lower(scratch.join("alias")).mount().unwrap_err();
        assert_eq!(err.kind(), p(OverlayProblem::DuplicateLayer), "{err}");
        assert!(err.to_string().contains("is the same directory as"), "{err}");
        common::umount(&scratch.join("alias"));
        assert_eq!(kind(Overlay::new().lower(&l1).lower(scratch.join("s"))), p(OverlayProblem::NestedLayers));
        let inner = layer(&up.join("lower"), &[]);
        assert_eq!(kind(Overlay::new().lower(&inner).lower(&l1).upper(&up, &wk)), p(OverlayProblem::NestedLayers));
        let work_in_upper = layer(&up.join("work"), &[]);
        assert_eq!(kind(Overlay::new().lower(&l1).upper(&up, &work_in_upper)), p(OverlayProblem::NestedLayers));
        assert_eq!(kind(Overlay::new().lower(&l1).upper(&up, &up)), p(OverlayProblem::DuplicateLayer));
        let err = Overlay::new().lower(&l1).lower(&l2).option(OverlayOption::Raw("lowerdir".into(), Some("/x".into())));
        assert_eq!(kind(err), p(OverlayProblem::ReservedOption));
        // An upper inside a lower is allowed by the kernel (5.12+), so it is allowed here.
        let u_in_l = layer(&l2.join("upper"), &[]);
        let w_in_l = layer(&l2.join("work"), &[]);
        let guard = Overlay::new().lower(&l1).upper(&u_in_l, &w_in_l).mount_at(scratch.join("m")).unwrap();
        fs::write(scratch.join("m/new"), "n").unwrap();
        assert_eq!(read(&u_in_l.join("new")), "n");
        guard.unmount().unwrap();
    });
}

#[test]
fn the_501st_layer_is_refused() {
    privileged("the_501st_layer_is_refused", |scratch| {
        let layers: Vec<PathBuf> = (0..501).map(|i| layer(&scratch.join(format!("l/{i}")), &[])).collect();
        let err = Overlay::new().lowers(&layers).mount().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidOverlay(OverlayProblem::TooManyLayers), "{err}");
        assert!(err.to_string().contains("501 layers"), "{err}");
        // 500 lowers plus one data-only layer is also 501.
        let err = Overlay::new().lowers(&layers[..500]).data_layer(&layers[500]).mount().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidOverlay(OverlayProblem::TooManyLayers));
    });
}

/// 200 layers whose paths are each longer than 255 bytes (the fsconfig string cap).
fn long_paths(level: Strategy) {
    let name = format!("long_paths/{level}");
    if !kernel_has(&name, level) {
        return;
    }
    privileged(&name, move |scratch| {
        let stage = stage(scratch);
        let deep = scratch.join("x".repeat(200)).join("y".repeat(60));
        let layers: Vec<PathBuf> =
            (0..200).map(|i| layer(&deep.join(format!("layer-{i:03}")), &[(&format!("f{i}"), "v")])).collect();
        assert!(layers.iter().all(|p| p.as_os_str().len() > 255));
        let mnt = scratch.join("mnt");
        // Without an idmap the long paths reach the kernel as they are (fds, `fchdir` + ".", or relative names in
        // the legacy string); with one they go through the idmapped clones.
        for userns in [None, Some(ns())] {
            let mut o = Overlay::new().lowers(layers.iter().rev()).strategy(level).staging_dir(&stage);
            if let Some(ns) = userns {
                o = o.idmap(ns);
            }
            let guard = o.mount_at(&mnt).unwrap();
            assert_staging_clean(&stage);
            assert_eq!(fs::read_dir(&mnt).unwrap().count(), 200, "every layer is there");
            guard.unmount().unwrap();
        }
    });
}

#[test]
fn long_paths_fd_detached() {
    long_paths(Strategy::DetachedFds)
}
#[test]
fn long_paths_fd_attached() {
    long_paths(Strategy::AttachedFds)
}
#[test]
fn long_paths_string() {
    long_paths(Strategy::Strings)
}
#[test]
fn long_paths_legacy() {
    long_paths(Strategy::Legacy)
}

#[test]
fn legacy_refuses_an_option_string_over_a_page() {
    privileged("legacy_refuses_an_option_string_over_a_page", |scratch| {
        // 40 layers with 200-byte names in different parents: even relative paths exceed 4095 bytes.
        let layers: Vec<PathBuf> =
            (0..40).map(|i| layer(&scratch.join(format!("{i}-{}", "n".repeat(200))), &[])).collect();
        let err = Overlay::new().lowers(&layers).strategy(Strategy::Legacy).mount().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidOverlay(OverlayProblem::OptionsTooLong), "{err}");
        // 15 such layers fit once relative to their common parent.
        let guard = Overlay::new()
            .lowers(&layers[..15])
            .strategy(Strategy::Legacy)
            .staging_dir(scratch.join("stage"))
            .mount_at(scratch.join("m"))
            .unwrap();
        guard.unmount().unwrap();
    });
}

#[test]
fn unmapped_mounter_with_idmapped_upper_is_refused() {
    privileged("unmapped_mounter_with_idmapped_upper_is_refused", |scratch| {
        let l1 = layer(&scratch.join("s/1"), &[("a", "a")]);
        let up = layer(&scratch.join("c/u"), &[]);
        let wk = layer(&scratch.join("c/w"), &[]);
        let map: IdMap = "0:100000:65536".parse().unwrap(); // host root is not mapped
        let err = Overlay::new()
            .lower(&l1)
            .upper(&up, &wk)
            .idmap(UserNamespace::cached(&map, &map).unwrap())
            .idmap_upper(true)
            .mount()
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidOverlay(OverlayProblem::UpperNotMapped), "{err}");
        assert!(err.to_string().contains("does not hold the mounter's uid 0"), "{err}");
    });
}

#[test]
fn forcing_a_strategy_the_kernel_lacks_is_an_error() {
    let f = layermount::Features::probe().limited_to(Strategy::Strings);
    let err = Overlay::new().features(f).strategy(Strategy::DetachedFds).mount().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotSupported, "{err}");
}

#[test]
fn fast_path_attaches_nothing_but_the_overlay() {
    if !kernel_has("fast_path_attaches_nothing_but_the_overlay", Strategy::DetachedFds) {
        return;
    }
    privileged("fast_path_attaches_nothing_but_the_overlay", |scratch| {
        let layers: Vec<PathBuf> = (0..16).map(|i| layer(&scratch.join(format!("l/{i}")), &[("f", "x")])).collect();
        let before = MountTable::current().unwrap();
        let tree = Overlay::new().lowers(&layers).idmap(ns()).strategy(Strategy::DetachedFds).mount().unwrap();
        assert!(MountTable::current().unwrap().changes_since(&before).is_empty(), "nothing attached yet");
        let guard = tree.attach(scratch.join("m")).unwrap();
        let changes = MountTable::current().unwrap().changes_since(&before);
        assert_eq!(changes.added.len(), 1, "{changes}");
        assert_eq!(changes.added[0].fs_type, "overlay");
        guard.unmount().unwrap();
    });
}

#[test]
fn symlinked_layer_paths() {
    const NAME: &str = "symlinked_layer_paths";
    privileged(NAME, |scratch| {
        let store = scratch.join("store");
        let elsewhere = layer(&scratch.join("elsewhere/deep/layer"), &[("from-elsewhere", "e")]);
        let l1 = layer(&store.join("1"), &[("one", "1")]);
        // A layer path whose text is under the store but which leads out of it.
        std::os::unix::fs::symlink(&elsewhere, store.join("2")).unwrap();
        for level in levels_here(NAME) {
            let mnt = scratch.join("mnt");
            let guard = Overlay::new()
                .lower(store.join("2"))
                .lower(&l1)
                .idmap(ns())
                .strategy(level)
                .staging_dir(scratch.join("stage"))
                .mount_at(&mnt)
                .unwrap_or_else(|e| panic!("{level}: {e}"));
            assert_eq!(names(&mnt), ["from-elsewhere", "one"], "{level}");
            assert_eq!(owner(&mnt.join("from-elsewhere")), (100000, 100000), "{level}: idmapped too");
            guard.unmount().unwrap();
        }
        // Nested by text only: store/1/link is a symlink out, so it is not inside store/1.
        std::os::unix::fs::symlink(&elsewhere, l1.join("link")).unwrap();
        let guard = Overlay::new().lower(l1.join("link")).lower(&l1).mount_at(scratch.join("m2")).unwrap();
        guard.unmount().unwrap();
        // Nested for real but hidden by a symlink: the kernel's ELOOP is reported as nesting, on every strategy,
        // naming the caller's paths and never a staging directory.
        let inner = layer(&l1.join("inner"), &[]);
        std::os::unix::fs::symlink(&inner, scratch.join("alias")).unwrap();
        let stage = scratch.join("stage");
        for level in levels_here(NAME) {
            for userns in [None, Some(ns())] {
                let mut o = Overlay::new().lower(scratch.join("alias")).lower(&l1).strategy(level).staging_dir(&stage);
                if let Some(ns) = userns {
                    o = o.idmap(ns);
                }
                let err = o.mount().unwrap_err();
                assert_eq!(err.kind(), ErrorKind::InvalidOverlay(OverlayProblem::NestedLayers), "{level}: {err}");
                assert_eq!(err.raw_os_error(), Some(40), "{level}: {err}");
                let text = err.to_string();
                assert!(text.contains(&scratch.join("alias").display().to_string()), "{level}: {text}");
                assert!(text.contains(&l1.display().to_string()), "{level}: {text}");
                assert!(!text.contains(".layermount-"), "{level}: a staging path: {text}");
                assert_staging_clean(&stage);
            }
        }
    });
}

#[test]
fn layers_given_as_trees_and_fds() {
    const NAME: &str = "layers_given_as_trees_and_fds";
    privileged(NAME, |scratch| {
        let l1 = layer(&scratch.join("s/1"), &[("from-path", "p")]);
        let l2 = layer(&scratch.join("s/2"), &[("from-tree", "t")]);
        let l3 = layer(&scratch.join("s/3"), &[("from-fd", "f")]);
        for level in levels_here(NAME) {
            // The caller idmaps its own tree; the builder uses it as it is (and idmaps only path layers).
            let mut tree = layermount::DetachedTree::clone_path(&l2, false).unwrap();
            tree.idmap(&ns()).unwrap();
            let fd: std::os::fd::OwnedFd = fs::File::open(&l3).unwrap().into();
            let mnt = scratch.join("mnt");
            let result = Overlay::new()
                .lower_tree(tree)
                .lower_fd(fd)
                .lower(&l1)
                .strategy(level)
                .staging_dir(scratch.join("stage"))
                .mount_at(&mnt);
            let guard = result.unwrap_or_else(|e| panic!("{level}: {e}"));
            assert_eq!(names(&mnt), ["from-fd", "from-path", "from-tree"], "{level}");
            assert_eq!(owner(&mnt.join("from-tree")), (100000, 100000), "{level}: the tree's own idmap");
            assert_eq!(owner(&mnt.join("from-path")), (0, 0), "{level}: no idmap asked for path layers");
            guard.unmount().unwrap();
            assert!(!scratch.join("stage").exists() || names(&scratch.join("stage")).is_empty(), "{level}");
            // A directory inside a detached mount (not its root) cannot be attached for the kernels that refuse
            // detached layers (before 6.15): refused before anything is mounted. The fast path takes it as it is.
            let tree = layermount::DetachedTree::clone_path(scratch.join("s"), false).unwrap();
            let inside = tree.open_dir("2").unwrap();
            let o = Overlay::new().lower_fd(inside).lower(&l1).strategy(level).staging_dir(scratch.join("stage"));
            let result = o.mount();
            if level == Strategy::DetachedFds {
                drop(result.unwrap_or_else(|e| panic!("{level}: {e}")));
            } else {
                let err = result.unwrap_err();
                assert_eq!(err.kind(), ErrorKind::NotSupported, "{level}: {err}");
                assert!(err.to_string().contains("inside a detached mount"), "{level}: {err}");
            }
            assert!(!scratch.join("stage").exists() || names(&scratch.join("stage")).is_empty(), "{level}");
        }
    });
}

#[test]
fn awkward_layer_names_on_every_strategy() {
    const NAME: &str = "awkward_layer_names_on_every_strategy";
    privileged(NAME, |scratch| {
        use std::os::unix::ffi::OsStrExt;
        // Separators of the option string, a backslash, a space, and bytes that are not UTF-8.
        let awkward: [&[u8]; 3] = [b"a:b,c", b"back\\slash and space", b"not-utf8-\xff\xfe"];
        let layers: Vec<PathBuf> = awkward
            .iter()
            .enumerate()
            .map(|(i, n)| layer(&scratch.join("s").join(std::ffi::OsStr::from_bytes(n)), &[(&format!("f{i}"), "x")]))
            .collect();
        for level in levels_here(NAME) {
            let mnt = scratch.join("mnt");
            let guard = Overlay::new()
                .lowers(&layers)
                .idmap(ns())
                .strategy(level)
                .staging_dir(scratch.join("stage"))
                .mount_at(&mnt)
                .unwrap_or_else(|e| panic!("{level}: {e}"));
            assert_eq!(names(&mnt), ["f0", "f1", "f2"], "{level}");
            guard.unmount().unwrap();
            // Without an idmap the names reach the kernel as they are.
            let guard = Overlay::new()
                .lowers(&layers)
                .strategy(level)
                .mount_at(&mnt)
                .unwrap_or_else(|e| panic!("{level}: {e}"));
            assert_eq!(names(&mnt), ["f0", "f1", "f2"], "{level}");
            guard.unmount().unwrap();
        }
    });
}

#[test]
fn data_only_layers_are_refused_where_overlay_lacks_them() {
    const NAME: &str = "data_only_layers_are_refused_where_overlay_lacks_them";
    privileged(NAME, |scratch| {
        let stage = stage(scratch);
        let l1 = layer(&scratch.join("s/1"), &[("a", "a")]);
        let l2 = layer(&scratch.join("s/2"), &[("b", "b")]);
        let data = layer(&scratch.join("s/data"), &[("blob", "d")]);
        let mnt = scratch.join("mnt");
        let here = layermount::Features::get().clone();
        // What a kernel without data-only layers (before 6.5) is told, on every strategy; and, where this kernel
        // is one, what it is told as probed.
        let mut without = here.clone();
        without.overlay_data_layers = false;
        let mut cases = vec![Some(without)];
        if !here.overlay_data_layers {
            cases.push(None);
        }
        for features in cases {
            for level in levels_here(NAME) {
                let mut o = Overlay::new().lower(&l2).lower(&l1).data_layer(&data).strategy(level).staging_dir(&stage);
                if let Some(f) = &features {
                    o = o.features(f.clone());
                }
                let err = o.mount_at(&mnt).unwrap_err();
                assert_eq!(err.kind(), ErrorKind::NotSupported, "{level}: {err}");
                assert!(err.to_string().contains("data-only layers"), "{level}: {err}");
                assert!(!mnt.exists(), "{level}: nothing mounted");
                assert_staging_clean(&stage);
            }
        }
    });
}
