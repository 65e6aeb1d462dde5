//! UserNamespace: the holder child is always reaped, fds do not leak, the cache hands back one namespace per map.

mod common;

use std::sync::Mutex;

use common::{children, fd_count, have_privilege};
use layermount::{DetachedTree, ErrorKind, IdMap, UserNamespace};

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
