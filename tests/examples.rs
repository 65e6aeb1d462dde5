//! The examples that need root run for real: each in a mount namespace of its own (util-linux's `unshare`), with
//! its output checked, and the host's mount table and this process's children as before.
#![cfg(feature = "oci-spec")]

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::{children, have_privilege};
use layermount::MountTable;

/// The example's binary beside this test's own (`target/<profile>/examples/`), brought up to date with the features
/// this test was built with (a no-op after a plain `cargo test`, which builds the examples; needed when only this
/// test was asked for).
fn example(name: &str) -> PathBuf {
    let mut features = vec!["oci-spec"];
    if cfg!(feature = "cli") {
        features.push("cli");
    }
    let status = Command::new(env!("CARGO"))
        .args(["build", "--quiet", "--example", name, "--features", &features.join(",")])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .unwrap();
    assert!(status.success(), "cargo build --example {name}: {status}");
    let exe = std::env::current_exe().unwrap();
    let path = exe.parent().unwrap().parent().unwrap().join("examples").join(name);
    assert!(path.exists(), "{} not built", path.display());
    path
}

/// Run the example in a mount namespace of its own (`unshare --mount --propagation private`), check that it
/// succeeded and left the host's mount table and this process's children as they were, and return its output.
fn run_privately(name: &str) -> String {
    // One example at a time: the child check sees every thread's children.
    static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _turn = TURN.lock().unwrap_or_else(|p| p.into_inner());
    let exe = example(name);
    let host_before = MountTable::current().unwrap();
    let out = Command::new("unshare").args(["--mount", "--propagation", "private", "--"]).arg(&exe).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{name}: {}\nstdout:\n{stdout}\nstderr:\n{stderr}", out.status);
    let changed = MountTable::current().unwrap().changes_since(&host_before);
    assert!(changed.is_empty(), "{name} changed the host's mount table: {changed}");
    assert!(children().is_empty(), "{name} left a child");
    stdout
}

#[test]
fn runtime_bundle_builds_writes_and_tears_down_from_a_second_process() {
    const NAME: &str = "runtime_bundle_builds_writes_and_tears_down_from_a_second_process";
    if !have_privilege(NAME) {
        return;
    }
    let stdout = run_privately("runtime_bundle");
    for line in [
        "uid map 0:100000:65536, gid map 0:100000:65536",
        "rbind,idmap,ro,uidmap=0:100000:65536,gidmap=0:100000:65536",
        // Without the idmapped bind, host root's file would show as the overflow id 65534 inside.
        "container root sees /data/shared.txt owned by 0:0; writing to /data refused: true",
        "container root (Uid 0, Gid 0) wrote /new-file",
        "new-file is owned by 100000:100000 (the container's root)",
        "no other mount of the root filesystem, on the whole host",
        "rootfs (mount point removed: true)",
        "is no longer mounted, and its mount point is gone",
    ] {
        assert!(stdout.contains(line), "missing {line:?} in:\n{stdout}");
    }
    // The teardown ran in another process than the one that mounted.
    let pid_in = |prefix: &str| -> String {
        let line = stdout.lines().find(|l| l.starts_with(prefix)).unwrap_or_else(|| panic!("no {prefix:?} line"));
        line[prefix.len()..].split(')').next().unwrap().to_string()
    };
    assert_ne!(pid_in("runtime (pid "), pid_in("teardown (pid "), "{stdout}");
    assert_eq!(stdout.lines().last(), Some("ok"), "{stdout}");
}

#[test]
fn snapshotter_prepares_commits_views_and_removes_over_a_snapshots_store() {
    const NAME: &str = "snapshotter_prepares_commits_views_and_removes_over_a_snapshots_store";
    if !have_privilege(NAME) {
        return;
    }
    let stdout = run_privately("snapshotter");
    for line in [
        "recovered: removed 0, incomplete 0, committed 0",
        "commit extract-0 as layer-0: ok",
        "commit extract-1 as layer-1: ok",
        // The cancelled pull: its own kind, nothing committed, Commit refused.
        "(kind Cancelled)",
        "/snapshots/3/fs left empty: true",
        "holds no committed layer",
        // Mounts as specs, made by the library's encoder.
        "snapshots/1/fs,upperdir=",
        "uidmap=0:100000:65536,gidmap=0:100000:65536]",
        "upper ",
        "owned by 100000:100000 (the container's root)",
        "etc/motd whited out: true, wrote new-file into its upper: true",
        "etc/hostname shows as 100000:100000 on the host",
        // Remove refused while a runtime's bind of the root exists, then allowed.
        "refused: remove ctr-plain: its root is still in use at ",
        "rootfs (the recorded mount)",
        "rootfs mounted: false",
        "view-0: app/run.sh true, etc/motd whited out: true, read-only: true",
        "refused: remove layer-0: other snapshots build on it",
        // The restart after a crash mid-unpack.
        "recovered: removed 2, incomplete 1, committed 2",
        "/.fs.partial-4242-0",
        "removing the unfinished extract snapshot",
        "after restart: layer-0, layer-1",
    ] {
        assert!(stdout.contains(line), "missing {line:?} in:\n{stdout}");
    }
    assert_eq!(stdout.lines().last(), Some("ok"), "{stdout}");
}
