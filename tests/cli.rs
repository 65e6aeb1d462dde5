//! The `layermount` binary: subcommands, exit codes (0 ok, 1 failed, 2 usage) and one-line errors.
#![cfg(feature = "cli")]

mod common;

use std::fs;
use std::process::{Command, Output};

fn layermount(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_layermount")).args(args).output().expect("run layermount")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn usage_errors_exit_2() {
    for args in [&["bogus"][..], &[], &["rm"], &["probe", "--nope"]] {
        let o = layermount(args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
    }
}

#[test]
fn probe_prints_every_feature_and_the_kernel() {
    let o = layermount(&["probe"]);
    assert_eq!(o.status.code(), Some(0));
    let out = String::from_utf8(o.stdout).unwrap();
    let release = rustix::system::uname().release().to_string_lossy().into_owned();
    assert!(out.starts_with(&format!("kernel: {release}\n")), "{out}");
    for name in ["new_mount_api", "mount_setattr", "overlay_lowerdir_fd", "overlay_detached_layers"] {
        assert!(out.lines().any(|l| l == format!("{name}: yes") || l == format!("{name}: no")), "{name} in {out}");
    }
    let json = String::from_utf8(layermount(&["probe", "--json"]).stdout).unwrap();
    assert!(json.starts_with(&format!("{{\"kernel\":\"{release}\",\"features\":{{")), "{json}");
    assert!(json.trim_end().ends_with('}') && json.lines().count() == 1, "{json}");
}

#[test]
fn probe_honours_a_forced_level() {
    if !common::have_privilege("probe_honours_a_forced_level") {
        return;
    }
    let o = Command::new(env!("CARGO_BIN_EXE_layermount"))
        .arg("probe")
        .env(layermount::OVERLAY_LEVEL_ENV, "string")
        .output()
        .unwrap();
    let out = String::from_utf8(o.stdout).unwrap();
    assert!(out.contains("overlay_level: string\n"), "{out}");
    assert!(out.contains("overlay_lowerdir_fd: no\n"), "{out}");
}

#[test]
fn rm_removes_and_stops_at_a_mount() {
    common::privileged("rm_removes_and_stops_at_a_mount", |scratch| {
        let tree = scratch.join("tree");
        fs::create_dir_all(tree.join("x/y")).unwrap();
        fs::write(tree.join("x/y/f"), b"f").unwrap();
        let store = scratch.join("store");
        fs::create_dir(&store).unwrap();
        fs::write(store.join("layer"), b"keep").unwrap();
        common::bind(&store, &tree.join("x/y"));

        let o = layermount(&["rm", tree.to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(1));
        let err = stderr(&o);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains("remove_all") && err.contains(&tree.join("x/y").display().to_string()), "{err}");
        assert_eq!(fs::read(store.join("layer")).unwrap(), b"keep");
        assert!(tree.join("x/y/layer").exists());

        common::umount(&tree.join("x/y"));
        let o = layermount(&["rm", tree.to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        assert!(!tree.exists());
        let o = layermount(&["rm", tree.to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(1));
        assert!(stderr(&o).contains("No such file or directory"), "{}", stderr(&o));
    });
}
