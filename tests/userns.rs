//! UserNamespace: the holder child is always reaped, fds do not leak, the cache hands back one namespace per map
//! and keeps only what callers hold plus a few recent ones, `from_fd` reads a namespace's maps back.

mod common;

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Mutex;

use common::{children, fd_count, have_privilege};
use layermount::{DetachedTree, ErrorKind, IdMap, IdMapProblem, UserNamespace};

/// fd counts and child lists are process-wide: the tests in this file take turns.
static SERIAL: Mutex<()> = Mutex::new(());

fn map(text: &str) -> IdMap {
    text.parse().unwrap()
}

#[test]
fn thousand_namespaces_leave_no_zombie_and_no_fd() {
    let _turn = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    if !have_privilege("thousand_namespaces_leave_no_zombie_and_no_fd") {
        return;
    }
    let m = map("0:100000:65536");
    // Warm up whatever the first call allocates (the fd of /dev/null in a probe, std's own lazies).
    drop(UserNamespace::new(&m, &m).unwrap());
    let fds = fd_count();
    for i in 0..1000u32 {
        let gid = map(&format!("0:{}:1", 200000 + i));
        let ns = UserNamespace::new(&m, &gid).unwrap();
        assert_eq!(ns.gid_map(), &gid);
        assert!(children().is_empty(), "holder child still there after namespace {i}");
    }
    assert_eq!(fd_count(), fds, "fd count changed over 1000 namespaces");
    assert!(children().is_empty());
}

#[test]
fn error_path_reaps_the_child_too() {
    let _turn = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    if !have_privilege("error_path_reaps_the_child_too") {
        return;
    }
    let fds = fd_count();
    // Capabilities are per thread: without CAP_SETUID this thread may only map its own uid, so writing a wide
    // uid map fails after the child exists.
    let err = std::thread::spawn(|| {
        caps::drop(None, caps::CapSet::Effective, caps::Capability::CAP_SETUID).unwrap();
        let m = map("0:100000:65536");
        UserNamespace::new(&m, &m).unwrap_err()
    })
    .join()
    .unwrap();
    assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{err}");
    assert!(err.to_string().contains("uid_map"), "{err}");
    assert!(children().is_empty(), "the child was not reaped on the error path");
    assert_eq!(fd_count(), fds);
}

#[test]
fn cache_hands_back_one_namespace_per_mapping() {
    let _turn = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    if !have_privilege("cache_hands_back_one_namespace_per_mapping") {
        return;
    }
    UserNamespace::clear_cache();
    let a = map("0:300000:65536");
    let b = map("0:400000:65536");
    let first = UserNamespace::cached(&a, &a).unwrap();
    let fds = fd_count();
    for _ in 0..100 {
        assert!(UserNamespace::cached(&a, &a).unwrap().same_as(&first));
    }
    assert_eq!(fd_count(), fds, "cache hits open nothing");
    let other = UserNamespace::cached(&a, &b).unwrap();
    assert!(!other.same_as(&first), "different gid map, different namespace");
    assert_eq!(UserNamespace::clear_cache(), 2);
    // A namespace handed out before the cache was cleared is still usable.
    common::privileged("cache_hands_back_one_namespace_per_mapping (use after clear)", move |scratch| {
        let mut tree = DetachedTree::clone_path(scratch, false).unwrap();
        tree.idmap(&first).unwrap();
    });
    assert!(!UserNamespace::cached(&a, &a).unwrap().same_as(&other));
    UserNamespace::clear_cache();
}

fn own_fd(ns: &UserNamespace) -> OwnedFd {
    use std::os::fd::AsFd;
    ns.as_fd().try_clone_to_owned().unwrap()
}

#[test]
fn from_fd_reads_the_maps_back_from_the_kernel() {
    let _turn = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    if !have_privilege("from_fd_reads_the_maps_back_from_the_kernel") {
        return;
    }
    let (uids, gids) = (map("0:100000:65536,65536:1000:1"), map("0:200000:1000,1000:1000:1"));
    let made = UserNamespace::new(&uids, &gids).unwrap();
    let fds = fd_count();
    let back = UserNamespace::from_fd(own_fd(&made)).unwrap();
    // The kernel's own text (padded columns) parsed back: the same ranges, in the same order.
    assert_eq!(back.uid_map(), &uids);
    assert_eq!(back.gid_map(), &gids);
    assert!(!back.same_as(&made), "from_fd makes a handle of its own");
    assert!(children().is_empty(), "the joining child was not reaped");
    drop(back);
    assert_eq!(fd_count(), fds, "from_fd keeps only the fd it was given");
}

#[test]
fn from_fd_namespace_idmaps_a_mount() {
    let _turn = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let m = map("0:100000:65536");
    common::privileged("from_fd_namespace_idmaps_a_mount", move |scratch| {
        if !layermount::idmap_supported(scratch).unwrap() {
            eprintln!("skipping from_fd_namespace_idmaps_a_mount: the kernel cannot idmap tmpfs (feature: idmap)");
            return;
        }
        let src = scratch.join("src");
        std::fs::create_dir(&src).unwrap();
        std::fs::write(src.join("file"), "x").unwrap();
        let ns = UserNamespace::from_fd(own_fd(&UserNamespace::new(&m, &m).unwrap())).unwrap();
        let mut tree = DetachedTree::clone_path(&src, false).unwrap();
        tree.idmap(&ns).unwrap();
        let guard = tree.attach(scratch.join("mnt")).unwrap();
        assert_eq!(common::owner(&guard.path().join("file")), (100000, 100000));
        guard.unmount().unwrap();
    });
}

#[test]
fn from_fd_refuses_what_cannot_idmap() {
    let _turn = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    if !have_privilege("from_fd_refuses_what_cannot_idmap") {
        return;
    }
    let open = |p: &str| -> OwnedFd { std::fs::File::open(p).unwrap().into() };
    let fds = fd_count();
    for (path, says) in [
        ("/proc/self/ns/user", "own user namespace"),
        ("/proc/self/ns/mnt", "not a user namespace"),
        ("/proc/self/status", "not a namespace"),
    ] {
        let err = UserNamespace::from_fd(open(path)).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{path}: {err}");
        assert!(err.to_string().contains(says), "{path}: {err}");
    }
    assert!(children().is_empty());
    assert_eq!(fd_count(), fds);
}

#[test]
fn from_fd_of_a_namespace_without_maps_is_an_id_map_error() {
    let _turn = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    if !have_privilege("from_fd_of_a_namespace_without_maps_is_an_id_map_error") {
        return;
    }
    // A process in a new user namespace whose maps nobody has written yet (what a runtime sees between clone and
    // writing the maps).
    let mut child = std::process::Command::new("unshare").args(["--user", "sleep", "30"]).spawn().unwrap();
    let ns_path = format!("/proc/{}/ns/user", child.id());
    let own = std::fs::read_link("/proc/self/ns/user").unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::fs::read_link(&ns_path).map(|l| l == own).unwrap_or(true) {
        assert!(std::time::Instant::now() < deadline, "unshare did not enter a new user namespace");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let fd: OwnedFd = std::fs::File::open(&ns_path).unwrap().into();
    let result = UserNamespace::from_fd(fd);
    child.kill().unwrap();
    child.wait().unwrap();
    let err = result.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidIdMap(IdMapProblem::Empty), "{err}");
    assert!(err.to_string().contains("uid_map"), "{err}");
    assert!(children().is_empty());
}

#[test]
fn cache_keeps_what_callers_hold_and_forgets_the_rest() {
    let _turn = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    if !have_privilege("cache_keeps_what_callers_hold_and_forgets_the_rest") {
        return;
    }
    UserNamespace::clear_cache();
    let previous = UserNamespace::set_cache_capacity(0);
    let (a, b) = (map("0:500000:65536"), map("0:600000:65536"));
    // Capacity 0: the cache keeps nothing alive itself, but hands back what a caller still holds.
    let held = UserNamespace::cached(&a, &a).unwrap();
    assert!(UserNamespace::cached(&a, &a).unwrap().same_as(&held));
    let fds = fd_count();
    let gone = UserNamespace::cached(&b, &b).unwrap();
    assert_eq!(fd_count(), fds + 1);
    // Our own fd pins the kernel namespace, so its id cannot be reused by the next one.
    let pin = own_fd(&gone);
    drop(gone);
    assert_eq!(fd_count(), fds + 1, "under capacity 0 the cache closed its fd when the last handle went");
    let again = UserNamespace::cached(&b, &b).unwrap();
    assert_ne!(ns_id(pin.as_raw_fd()), ns_id(fd_of(&again)), "a new namespace, not the one nobody held");
    drop(pin);
    let stats = UserNamespace::cache_stats();
    assert_eq!((stats.live, stats.retained, stats.capacity), (2, 0, 0));

    // Capacity 1: the most recently used one stays alive without callers; evict() lets it go.
    UserNamespace::set_cache_capacity(1);
    drop(again);
    let kept = UserNamespace::cached(&b, &b).unwrap();
    let kept_id = ns_id(fd_of(&kept));
    drop(kept);
    let hit = UserNamespace::cached(&b, &b).unwrap();
    assert_eq!(ns_id(fd_of(&hit)), kept_id, "the recently used namespace was kept alive by the cache");
    drop(hit);
    assert!(UserNamespace::evict(&b, &b));
    assert!(!UserNamespace::evict(&b, &b), "already evicted");
    assert_eq!(UserNamespace::cache_stats().retained, 0);
    assert!(UserNamespace::cached(&a, &a).unwrap().same_as(&held), "evicting b leaves a alone");

    UserNamespace::set_cache_capacity(previous);
    UserNamespace::clear_cache();
}

fn fd_of(ns: &UserNamespace) -> i32 {
    use std::os::fd::AsFd;
    ns.as_fd().as_raw_fd()
}

/// The namespace an fd refers to, as `user:[inode]`.
fn ns_id(fd: i32) -> std::path::PathBuf {
    std::fs::read_link(format!("/proc/self/fd/{fd}")).unwrap()
}
