//! Compose + teardown of an idmapped overlay with an upper, for every strategy and layer count, beside two
//! containerd-style baselines and the raw syscall sequence of the fast path.
//!
//! Run as root: `cargo bench --bench compose`. Everything happens on a tmpfs in a private mount namespace.
//!
//! * `layermount/<strategy>`: `Overlay::mount_at` + `MountGuard::unmount`, user namespace from the cache.
//! * `raw-fd-syscalls`: the fast path's syscalls written out by hand (open_tree + mount_setattr + openat +
//!   fsopen/fsconfig/fsmount/move_mount + umount2), with the same cached user namespace: the floor.
//! * `containerd-2.0`: a new user namespace per mount, one attached temporary idmapped mount per layer, mount(2)
//!   with a `lowerdir=` string (relative names after a chdir, as containerd compacts), then unmount + rmdir of each.
//! * `containerd-2.2`: the same with ONE attached temporary idmapped mount of the layers' common parent.
#![allow(unsafe_code)] // only for mount_setattr in the raw baseline

#[path = "../tests/common/mod.rs"]
mod common;

use std::fs;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use criterion::{BenchmarkId, Criterion};
use layermount::{DetachedTree, IdMap, Overlay, Strategy, UserNamespace};
use rustix::fs::{CWD, Mode, OFlags};
use rustix::mount::{FsMountFlags, FsOpenFlags, MountAttrFlags, MoveMountFlags, OpenTreeFlags, UnmountFlags};

const COUNTS: [usize; 5] = [1, 16, 64, 256, 500];

struct Setup {
    store: PathBuf,
    layers: Vec<PathBuf>,
    upper: PathBuf,
    work: PathBuf,
    target: PathBuf,
    scratch: PathBuf,
}

fn setup(scratch: &Path, n: usize) -> Setup {
    let store = scratch.join(format!("store{n}"));
    let layers: Vec<PathBuf> = (0..n)
        .map(|i| {
            let d = store.join(i.to_string());
            fs::create_dir_all(&d).unwrap();
            fs::write(d.join(format!("f{i}")), "x").unwrap();
            d
        })
        .collect();
    let (upper, work, target) = (scratch.join(format!("u{n}")), scratch.join(format!("w{n}")), scratch.join("target"));
    for d in [&upper, &work, &target] {
        fs::create_dir_all(d).unwrap();
    }
    Setup { store, layers, upper, work, target, scratch: scratch.to_path_buf() }
}

fn ours(s: &Setup, map: &IdMap, level: Strategy) {
    let ns = UserNamespace::cached(map, map).unwrap();
    let o = Overlay::new().lowers(s.layers.iter().rev()).upper(&s.upper, &s.work).idmap(ns).strategy(level);
    // A single layer with an upper is a valid overlay; so is any count here.
    o.staging_dir(s.scratch.join("stage")).mount_at(&s.target).unwrap().unmount().unwrap();
}

fn mount_setattr_idmap(fd: &OwnedFd, ns: &UserNamespace) {
    #[repr(C)]
    struct MountAttr {
        set: u64,
        clr: u64,
        propagation: u64,
        userns: u64,
    }
    let attr = MountAttr { set: 0x0010_0000, clr: 0, propagation: 0, userns: ns.as_fd().as_raw_fd() as u64 };
    // SAFETY: valid fd, NUL-terminated empty path, a live struct of the size passed.
    let r = unsafe {
        libc::syscall(libc::SYS_mount_setattr, fd.as_raw_fd(), c"".as_ptr(), 0x1000u32, &attr, size_of::<MountAttr>())
    };
    assert_eq!(r, 0, "mount_setattr: {}", std::io::Error::last_os_error());
}

fn raw(s: &Setup, map: &IdMap) {
    let ns = UserNamespace::cached(map, map).unwrap();
    let clone =
        rustix::mount::open_tree(CWD, &s.store, OpenTreeFlags::OPEN_TREE_CLONE | OpenTreeFlags::OPEN_TREE_CLOEXEC)
            .unwrap();
    mount_setattr_idmap(&clone, &ns);
    let fds: Vec<OwnedFd> = (0..s.layers.len())
        .rev()
        .map(|i| {
            rustix::fs::openat(&clone, i.to_string(), OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
                .unwrap()
        })
        .collect();
    let ov = rustix::mount::fsopen("overlay", FsOpenFlags::FSOPEN_CLOEXEC).unwrap();
    for fd in &fds {
        rustix::mount::fsconfig_set_fd(&ov, "lowerdir+", fd).unwrap();
    }
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
fn containerd(s: &Setup, map: &IdMap, per_layer: bool) {
    let ns = UserNamespace::new(map, map).unwrap();
    let tmp = s.scratch.join("ctd-tmp");
    fs::create_dir(&tmp).unwrap();
    let mut mounted = Vec::new();
    let lowerdir: Vec<String> = if per_layer {
        (0..s.layers.len())
            .rev()
            .map(|i| {
                let mut t = DetachedTree::clone_path(&s.layers[i], false).unwrap();
                t.idmap(&ns).unwrap();
                let at = tmp.join(i.to_string());
                t.attach(&at).unwrap().leak();
                mounted.push(at);
                i.to_string()
            })
            .collect()
    } else {
        let mut t = DetachedTree::clone_path(&s.store, false).unwrap();
        t.idmap(&ns).unwrap();
        let at = tmp.join("s");
        t.attach(&at).unwrap().leak();
        mounted.push(at);
        (0..s.layers.len()).rev().map(|i| format!("s/{i}")).collect()
    };
    let data = format!("lowerdir={},upperdir={},workdir={}", lowerdir.join(":"), s.upper.display(), s.work.display());
    assert!(data.len() < 4096, "{} bytes", data.len());
    // containerd chdirs (in a forked helper) so the lowerdir names can be relative; this thread has its own cwd.
    let cwd = std::env::current_dir().unwrap();
    std::env::set_current_dir(&tmp).unwrap();
    rustix::mount::mount(
        "overlay",
        &s.target,
        "overlay",
        rustix::mount::MountFlags::empty(),
        &*std::ffi::CString::new(data).unwrap(),
    )
    .unwrap();
    std::env::set_current_dir(cwd).unwrap();
    rustix::mount::unmount(&s.target, UnmountFlags::DETACH).unwrap();
    for at in mounted {
        rustix::mount::unmount(&at, UnmountFlags::DETACH).unwrap();
        fs::remove_dir(&at).unwrap();
    }
    fs::remove_dir(&tmp).unwrap();
}

fn bench(c: &mut Criterion, scratch: &Path) {
    let map: IdMap = "0:100000:65536".parse().unwrap();
    let mut g = c.benchmark_group("compose_idmapped_overlay");
    g.sample_size(10).warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_secs(2));
    for n in COUNTS {
        let s = setup(scratch, n);
        for level in [Strategy::DetachedFds, Strategy::AttachedFds, Strategy::Strings, Strategy::Legacy] {
            g.bench_with_input(BenchmarkId::new(format!("layermount/{level}"), n), &n, |b, _| {
                b.iter(|| ours(&s, &map, level))
            });
        }
        g.bench_with_input(BenchmarkId::new("raw-fd-syscalls", n), &n, |b, _| b.iter(|| raw(&s, &map)));
        g.bench_with_input(BenchmarkId::new("containerd-2.2", n), &n, |b, _| b.iter(|| containerd(&s, &map, false)));
        g.bench_with_input(BenchmarkId::new("containerd-2.0", n), &n, |b, _| b.iter(|| containerd(&s, &map, true)));
    }
    g.finish();
}

fn main() {
    common::privileged("bench compose", |scratch| {
        let mut c = Criterion::default().configure_from_args();
        bench(&mut c, scratch);
        c.final_summary();
    });
}
