//! The `fixup`, `audit` and `demo` subcommands: output, exit codes, and that the demo leaves nothing behind.
#![cfg(feature = "cli")]

mod common;

use std::fs;
use std::os::unix::fs::symlink;
use std::os::unix::process::CommandExt;
use std::process::{Command, Output};

use common::archive::{E, tar_of};
use layermount::{ApplyOptions, SyncMode, apply};

fn layermount(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_layermount")).args(args).output().expect("run layermount")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn fixup_dry_run_then_for_real_then_nothing() {
    common::privileged("fixup_dry_run_then_for_real_then_nothing", |scratch| {
        let root = scratch.join("root");
        fs::create_dir_all(root.join("etc")).unwrap();
        fs::write(root.join("etc/mtab"), "old\n").unwrap();
        let r = root.to_str().unwrap();

        let o = layermount(&["fixup", "--dry-run", "--only", "mtab", r]);
        assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
        assert_eq!(
            text(&o.stdout),
            "would change mtab /etc/mtab: regular file (4 bytes) -> symlink to ../proc/self/mounts\n"
        );
        assert!(root.join("etc/mtab").is_file() && !root.join("etc/mtab").is_symlink());

        let o = layermount(&["fixup", "--uidmap", "0:100000:65536", r]);
        assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
        let out = text(&o.stdout);
        assert_eq!(out.lines().count(), 10, "{out}");
        assert!(out.contains("changed mount-targets /dev/pts: missing -> directory\n"), "{out}");
        assert_eq!(common::owner(&root.join("dev/pts")), (100000, 100000));
        assert_eq!(fs::read_link(root.join("etc/mtab")).unwrap(), std::path::Path::new("../proc/self/mounts"));

        let o = layermount(&["fixup", r]);
        assert_eq!((o.status.code(), text(&o.stdout)), (Some(0), String::new()));
    });
}

#[test]
fn fixup_exits_1_on_a_problem_left_alone_and_2_on_a_bad_name() {
    common::privileged("fixup_exits_1_on_a_problem_left_alone_and_2_on_a_bad_name", |scratch| {
        let root = scratch.join("root");
        fs::create_dir_all(root.join("etc")).unwrap();
        symlink("/elsewhere", root.join("etc/mtab")).unwrap();
        let r = root.to_str().unwrap();
        let o = layermount(&["fixup", "--only", "mtab", r]);
        assert_eq!(o.status.code(), Some(1));
        assert!(text(&o.stdout).starts_with("left alone mtab /etc/mtab: symlink to /elsewhere"), "{}", text(&o.stdout));
        let o = layermount(&["fixup", "--only", "mtab", "--force", r]);
        assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
        assert_eq!(layermount(&["fixup", "--only", "nope", r]).status.code(), Some(2));
        let o = layermount(&["fixup", scratch.join("missing").to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(1));
        assert_eq!(text(&o.stderr).lines().count(), 1);
    });
}

#[test]
fn audit_exits_1_on_a_finding() {
    common::privileged("audit_exits_1_on_a_finding", |scratch| {
        let layer = scratch.join("l");
        apply(&tar_of(&[E::Dir("a/"), E::Dir("b/")])[..], &layer, &ApplyOptions::new().sync(SyncMode::None)).unwrap();
        let o = layermount(&["audit", layer.to_str().unwrap()]);
        assert_eq!((o.status.code(), text(&o.stdout)), (Some(0), String::new()), "{}", text(&o.stderr));
        rustix::fs::setxattr(layer.join("b"), "trusted.overlay.opaque", b"y", rustix::fs::XattrFlags::empty()).unwrap();
        let o = layermount(&["audit", layer.to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(1));
        assert_eq!(
            text(&o.stdout),
            format!(
                "{}: /b: stray opaque directory: trusted.overlay.opaque=y not listed in the layer's commit record\n",
                layer.display()
            )
        );
        assert_eq!(layermount(&["audit"]).status.code(), Some(2));
    });
}

/// The README's first command runs to the end, shows the container's view, and leaves no mount and no process.
#[test]
fn demo_runs_to_the_end_and_leaves_nothing() {
    common::privileged("demo_runs_to_the_end_and_leaves_nothing", |_| {
        if !layermount::idmap_supported(std::env::temp_dir()).unwrap() {
            eprintln!("skipping demo_runs_to_the_end_and_leaves_nothing: the temp dir's filesystem cannot be idmapped");
            return;
        }
        let o = layermount(&["demo"]);
        let out = text(&o.stdout);
        assert_eq!(o.status.code(), Some(0), "{out}\n{}", text(&o.stderr));
        for expected in [
            "mtab /etc/mtab: regular file (56 bytes) -> symlink to ../proc/self/mounts",
            "container| uid 0 gid 0 pid 1",
            "container|   0:0        /root/hello.txt",
            // `none` from fsmount; `overlay`, the source mount(2) is given, on the legacy strategy.
            "/ overlay ",
            "container|   proc /proc proc ",
            "container| /etc/legacy.conf exists: false",
            "container| /opt/app holds [\"v2.bin\"]",
            "100000:100000 upper/root/hello.txt",
            "layer 1's /etc/mtab is still a regular file",
            "no helper process left",
            "host: mount table as before",
        ] {
            assert!(out.contains(expected), "missing {expected:?} in:\n{out}");
        }
        // This thread's children only: another test of this binary may have a child of its own running.
        assert!(common::thread_children().is_empty(), "{:?}", common::thread_children());
        let workdir = out.split("working in ").nth(1).and_then(|s| s.lines().next()).expect("the work directory");
        assert!(!std::path::Path::new(workdir).exists(), "{workdir} left behind");
    });
}

/// Without root the demo says in one line what it needs and exits 1.
#[test]
fn demo_without_root_says_what_it_needs() {
    if !common::have_privilege("demo_without_root_says_what_it_needs") {
        return;
    }
    let o = Command::new(env!("CARGO_BIN_EXE_layermount")).arg("demo").uid(65534).gid(65534).output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    let err = text(&o.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("needs root (CAP_SYS_ADMIN)"), "{err}");
}
