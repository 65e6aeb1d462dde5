//! The ways of composing a container's root that the compose benchmark and the `bench_compose` example compare:
//! each is one compose + teardown of an idmapped overlay with an upper, on a tmpfs the caller mounted.
//!
//! * [`flat`]: `Overlay` with every layer as a lower (the `fd` strategy on 6.15), user namespace from the cache.
//! * [`stacked`]: `StackCache::compose` on a cache that already holds the image's stack (a hit): the container
//!   overlay has ONE lower, the stack.
//! * [`miss`]: the same on an empty cache: the stack is built for this container and stays in the cache for the
//!   image's next ones; [`evict`] is that stack's own teardown (no container waits for it), measured apart.
//! * [`raw_on`]: the floor of a container compose on a stack: [`raw`]'s syscalls after the layers, with a stack
//!   built once as the one lower.
//! * [`raw`]: the fast path's syscalls written out by hand (open_tree + mount_setattr + openat + fsopen/fsconfig/
//!   fsmount/move_mount + umount2) with the same cached user namespace: the floor of a flat compose.
//! * [`containerd`]: a new user namespace per mount, attached temporary idmapped mounts (one per layer: containerd
//!   2.0/2.1; one of the layers' common parent: 2.2), `mount(2)` with relative `lowerdir=` names after a chdir (as
//!   containerd compacts), then unmount + rmdir of each.
#![allow(dead_code)]

use std::fs;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use layermount::{DetachedTree, IdMap, ImageStack, Overlay, StackCache, Strategy, UserNamespace};
use rustix::fs::{CWD, Mode, OFlags};
use rustix::mount::{FsMountFlags, FsOpenFlags, MountAttrFlags, MoveMountFlags, UnmountFlags};

/// An image of `n` layers in `store<n>`, and one container's upper, work and mount point.
pub struct Setup {
    pub store: PathBuf,
    /// Top-most first, as overlay takes them.
    pub layers: Vec<PathBuf>,
    pub upper: PathBuf,
    pub work: PathBuf,
    pub target: PathBuf,
    pub scratch: PathBuf,
}

/// The map every way uses: container 0..65536 on host 100000...
pub fn map() -> IdMap {
    "0:100000:65536".parse().unwrap()
}

pub fn setup(scratch: &Path, n: usize) -> Setup {
    let store = scratch.join(format!("store{n}"));
    let mut layers: Vec<PathBuf> = (0..n)
        .map(|i| {
            let d = store.join(i.to_string());
            fs::create_dir_all(&d).unwrap();
            fs::write(d.join(format!("f{i}")), "x").unwrap();
            d
        })
        .collect();
    layers.reverse();
    let stage = scratch.join("stage");
    if !stage.exists() {
        std::os::unix::fs::DirBuilderExt::mode(&mut fs::DirBuilder::new(), 0o700).create(&stage).unwrap();
    }
    let s = container(scratch, &format!("c{n}"));
    Setup { store, layers, upper: s.0, work: s.1, target: s.2, scratch: scratch.to_path_buf() }
}

/// Upper, work and mount point of one more container.
pub fn container(scratch: &Path, name: &str) -> (PathBuf, PathBuf, PathBuf) {
    let d = scratch.join(name);
    let (u, w, t) = (d.join("upper"), d.join("work"), d.join("rootfs"));
    for p in [&u, &w, &t] {
        fs::create_dir_all(p).unwrap();
    }
    (u, w, t)
}

pub fn flat(s: &Setup, map: &IdMap, strategy: Strategy) {
    flat_checked(s, map, strategy, true);
}

/// [`flat`], with or without the in-use check (a read of the mount table).
pub fn flat_checked(s: &Setup, map: &IdMap, strategy: Strategy, in_use: bool) {
    let ns = UserNamespace::cached(map, map).unwrap();
    let o = Overlay::new().lowers(&s.layers).upper(&s.upper, &s.work).idmap(ns).strategy(strategy).check_in_use(in_use);
    o.staging_dir(s.scratch.join("stage")).mount_at(&s.target).unwrap().unmount().unwrap();
}

/// One container on the cached stack, with its own upper/work/target.
pub fn stacked_at(cache: &StackCache, s: &Setup, map: &IdMap, (upper, work, target): (&Path, &Path, &Path)) {
    stacked_checked(cache, s, map, (upper, work, target), true);
}

/// [`stacked_at`], with or without the in-use check.
pub fn stacked_checked(cache: &StackCache, s: &Setup, map: &IdMap, dirs: (&Path, &Path, &Path), in_use: bool) {
    let ns = UserNamespace::cached(map, map).unwrap();
    let (o, _) = cache.compose(&s.layers, Some(&ns)).unwrap();
    o.upper(dirs.0, dirs.1).check_in_use(in_use).mount_at(dirs.2).unwrap().unmount().unwrap();
}

pub fn stacked(cache: &StackCache, s: &Setup, map: &IdMap) {
    stacked_at(cache, s, map, (&s.upper, &s.work, &s.target));
}

/// A container composed (and torn down) on an empty cache: the stack is built for it. The cache, holding the stack
/// for the image's next containers, is returned so that its eviction (the stack's own teardown, which no container
/// waits for) is not counted in the container's compose; [`evict`] measures that by itself.
pub fn miss(s: &Setup, map: &IdMap) -> StackCache {
    let cache = StackCache::default();
    stacked(&cache, s, map);
    cache
}

/// Evicting an idle stack: what dropping the cache [`miss`] returned costs.
pub fn evict(cache: StackCache) {
    assert_eq!(cache.clear(), 1, "one idle stack");
}

/// The floor of a container compose on a stack: the syscalls of [`raw`] after the layers, with the stack's root as
/// the one lower (the stack built once, as on a cache hit).
pub fn raw_on(stack: &ImageStack, s: &Setup) {
    let ov = rustix::mount::fsopen("overlay", FsOpenFlags::FSOPEN_CLOEXEC).unwrap();
    rustix::mount::fsconfig_set_fd(&ov, "lowerdir+", stack).unwrap();
    raw_finish(ov, s);
}

pub fn raw(s: &Setup, map: &IdMap) {
    let ns = UserNamespace::cached(map, map).unwrap();
    let mut clone = DetachedTree::clone_path(&s.store, false).unwrap();
    // One mount_setattr(MOUNT_ATTR_IDMAP): the library's thinnest wrapper, as the floor has no other way to it.
    clone.idmap(&ns).unwrap();
    let fds: Vec<OwnedFd> = s
        .layers
        .iter()
        .map(|l| {
            let name = l.file_name().unwrap();
            rustix::fs::openat(&clone, name, OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty()).unwrap()
        })
        .collect();
    let ov = rustix::mount::fsopen("overlay", FsOpenFlags::FSOPEN_CLOEXEC).unwrap();
    for fd in &fds {
        rustix::mount::fsconfig_set_fd(&ov, "lowerdir+", fd).unwrap();
    }
    raw_finish(ov, s);
}

/// Upper and work, create, mount, attach and detach: the end every raw way shares.
fn raw_finish(ov: OwnedFd, s: &Setup) {
    let u = rustix::fs::open(&s.upper, OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty()).unwrap();
    let w = rustix::fs::open(&s.work, OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty()).unwrap();
    rustix::mount::fsconfig_set_fd(&ov, "upperdir", &u).unwrap();
    rustix::mount::fsconfig_set_fd(&ov, "workdir", &w).unwrap();
    rustix::mount::fsconfig_create(&ov).unwrap();
    let m = rustix::mount::fsmount(&ov, FsMountFlags::FSMOUNT_CLOEXEC, MountAttrFlags::empty()).unwrap();
    rustix::mount::move_mount(&m, "", CWD, &s.target, MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH).unwrap();
    rustix::mount::unmount(&s.target, UnmountFlags::DETACH).unwrap();
}

/// containerd: a fresh user namespace, attached temporary idmapped mounts, `mount(2)`, then cleanup.
pub fn containerd(s: &Setup, map: &IdMap, per_layer: bool) {
    let ns = UserNamespace::new(map, map).unwrap();
    let tmp = s.scratch.join("ctd-tmp");
    fs::create_dir(&tmp).unwrap();
    let mut mounted = Vec::new();
    let name = |l: &PathBuf| l.file_name().unwrap().to_string_lossy().into_owned();
    let lowerdir: Vec<String> = if per_layer {
        s.layers
            .iter()
            .map(|l| {
                let mut t = DetachedTree::clone_path(l, false).unwrap();
                t.idmap(&ns).unwrap();
                let at = tmp.join(name(l));
                t.attach(&at).unwrap().leak();
                mounted.push(at);
                name(l)
            })
            .collect()
    } else {
        let mut t = DetachedTree::clone_path(&s.store, false).unwrap();
        t.idmap(&ns).unwrap();
        let at = tmp.join("s");
        t.attach(&at).unwrap().leak();
        mounted.push(at);
        s.layers.iter().map(|l| format!("s/{}", name(l))).collect()
    };
    let options = |lower: &[String]| {
        format!("lowerdir={},upperdir={},workdir={}", lower.join(":"), s.upper.display(), s.work.display())
    };
    let absolute: Vec<String> = lowerdir.iter().map(|l| format!("{}/{l}", tmp.display())).collect();
    let mount = |data: String| {
        let data = std::ffi::CString::new(data).unwrap();
        rustix::mount::mount("overlay", &s.target, "overlay", rustix::mount::MountFlags::empty(), &*data).unwrap();
    };
    // containerd's mountAt: options of a page less 512 bytes or more are compacted to names relative to the layers'
    // common directory, and mounted from a new OS thread that unshares CLONE_FS and chdirs there.
    if options(&absolute).len() < 4096 - 512 {
        mount(options(&absolute));
    } else {
        let data = options(&lowerdir);
        assert!(data.len() < 4096, "{} bytes", data.len());
        std::thread::scope(|t| {
            t.spawn(|| {
                // SAFETY: this thread was made for the mount and shares its fs_struct with no one after the call.
                #[allow(unsafe_code)]
                unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::FS) }.unwrap();
                rustix::process::chdir(&tmp).unwrap();
                mount(data);
            });
        });
    }
    rustix::mount::unmount(&s.target, UnmountFlags::DETACH).unwrap();
    for at in mounted {
        rustix::mount::unmount(&at, UnmountFlags::DETACH).unwrap();
        fs::remove_dir(&at).unwrap();
    }
    fs::remove_dir(&tmp).unwrap();
}

/// `containers` containers of one image on its cached stack, composed and torn down on `threads` threads at once.
pub fn concurrent_stacked(
    cache: &StackCache,
    s: &Setup,
    map: &IdMap,
    ctrs: &[(PathBuf, PathBuf, PathBuf)],
    threads: usize,
) {
    std::thread::scope(|scope| {
        for chunk in ctrs.chunks(ctrs.len().div_ceil(threads)) {
            scope.spawn(move || {
                for (u, w, t) in chunk {
                    stacked_at(cache, s, map, (u, w, t));
                }
            });
        }
    });
}

/// The same containers composed flat (fd strategy), for comparison.
pub fn concurrent_flat(s: &Setup, map: &IdMap, ctrs: &[(PathBuf, PathBuf, PathBuf)], threads: usize) {
    std::thread::scope(|scope| {
        for chunk in ctrs.chunks(ctrs.len().div_ceil(threads)) {
            scope.spawn(move || {
                for (u, w, t) in chunk {
                    let ns = UserNamespace::cached(map, map).unwrap();
                    let o = Overlay::new().lowers(&s.layers).upper(u, w).idmap(ns);
                    o.mount_at(t).unwrap().unmount().unwrap();
                }
            });
        }
    });
}

/// Whether the forced strategy `s` can run here.
pub fn supported(s: Strategy) -> bool {
    layermount::Features::get().strategy() >= s
}
