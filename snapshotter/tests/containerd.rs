//! End to end with the distribution's containerd and runc: a containerd started in a scratch directory with the
//! snapshotter as its proxy plugin, an image built offline and imported, containers run with `ctr`.

mod common;

use common::image::{IMAGE, write_test_image};
use std::path::PathBuf;
use std::process::Stdio;

use common::{ChildOutput, Containerd, SNAPSHOTTER, have_containerd, mounts_beneath, owner, privileged, tree_digest};

/// Import the image and run a container without user namespaces: the layers are unpacked through one overlay
/// mount (whiteout and opaque directory honoured), the container sees them.
#[test]
fn plain_run() {
    if !have_containerd("plain_run") {
        return;
    }
    privileged("plain_run", |scratch| {
        let image = scratch.join("image.tar");
        write_test_image(&image);
        let c = Containerd::start(&scratch.join("ctd"), &[]);
        c.ctr_ok(&["images", "import", "--snapshotter", SNAPSHOTTER, image.to_str().unwrap()]);
        let out = c.ctr_ok(&[
            "run",
            "--rm",
            "--snapshotter",
            SNAPSHOTTER,
            "--runc-root",
            &c.runc_root(),
            IMAGE,
            "plain",
            "/bin/sh",
            "-c",
            "id -u; ls /data; test -e /gone && echo gone-visible; cat /home/user/owned",
        ]);
        assert_eq!(out, "0\nnew\nmine\n");
        let root = c.snapshotter.root.clone();
        c.wait_for(20, "the container's snapshot to be removed", || c.snapshotter.snapshot_dirs().len() == 2);
        assert!(mounts_beneath(&root).is_empty());
        c.stop();
    });
}

/// Layer digests of every snapshot directory that holds a committed layer (all of them right after an import).
fn layer_digests(c: &Containerd) -> Vec<(PathBuf, String)> {
    c.snapshotter.snapshot_dirs().into_iter().map(|d| (d.clone(), tree_digest(&d.join("fs")))).collect()
}

/// The run: `ctr run --remap-labels --uidmap/--gidmap`. Inside: uid 0, image files owned by 0 and 1000,
/// whiteout and opaque directory honoured, `/etc/mtab` (a regular file in the image) shows the mounts; on disk the
/// container's writes belong to host 100000; after `ctr run --rm` nothing is mounted, the container's snapshot is
/// gone and the image layers are byte-identical.
#[test]
fn user_namespaced_run() {
    if !have_containerd("user_namespaced_run") {
        return;
    }
    privileged("user_namespaced_run", |scratch| {
        let image = scratch.join("image.tar");
        write_test_image(&image);
        let c = Containerd::start(&scratch.join("ctd"), &[]);
        c.ctr_ok(&["images", "import", "--snapshotter", SNAPSHOTTER, image.to_str().unwrap()]);
        let layers = layer_digests(&c);
        assert_eq!(layers.len(), 2, "two layers imported: {layers:?}");
        let script = "id -u; id -g; stat -c %u:%g / /etc/passwd /home/user/owned; ls /data; \
                      test -e /gone && echo gone-visible; readlink /etc/mtab; grep -c ' /proc proc ' /etc/mtab; \
                      touch /written; mkdir /home/user/sub; echo ready; sleep 2";
        let mut run = c
            .ctr_cmd(&[
                "run",
                "--rm",
                "--snapshotter",
                SNAPSHOTTER,
                "--runc-root",
                &c.runc_root(),
                "--fifo-dir",
                &c.fifo_dir(),
                "--uidmap",
                "0:100000:65536",
                "--gidmap",
                "0:100000:65536",
                "--remap-labels",
                IMAGE,
                "userns",
                "/bin/sh",
                "-c",
                script,
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // While it sleeps: its writes are in the upper, owned by host 100000.
        let mut upper = None;
        c.wait_for(30, "the container's write in its upper", || {
            if let Ok(Some(_)) = run.try_wait() {
                let out = run.wait_with_output_ref();
                panic!("ctr run ended early: {out}");
            }
            upper = c.snapshotter.snapshot_dirs().into_iter().find(|d| d.join("fs/written").exists());
            upper.is_some()
        });
        let upper = upper.unwrap().join("fs");
        assert_eq!(owner(&upper.join("written")), (100000, 100000));
        assert_eq!(owner(&upper.join("home/user/sub")), (100000, 100000));
        assert_eq!(owner(&upper.join("home/user")), (101000, 101000), "copied up with its owner mapped");
        let out = run.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "ctr run failed: {stdout}{}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(stdout, "0\n0\n0:0\n0:0\n1000:1000\nnew\n../proc/self/mounts\n1\nready\n");
        let root = c.snapshotter.root.clone();
        c.wait_for(20, "the container's snapshot to be removed", || c.snapshotter.snapshot_dirs().len() == 2);
        assert_eq!(mounts_beneath(&root), Vec::<PathBuf>::new());
        assert_eq!(layer_digests(&c), layers, "image layers changed");
        c.stop();
    });
}

/// `ctr snapshots rm` of a running user-namespaced container's snapshot is accepted by containerd, whose garbage
/// collector then calls Remove: the snapshotter refuses while the shim's `rootfs` still mounts the composed root, and
/// deletes nothing; once the container is gone, the next collection removes it.
#[test]
fn snapshot_rm_of_running_container_refused() {
    if !have_containerd("snapshot_rm_of_running_container_refused") {
        return;
    }
    privileged("snapshot_rm_of_running_container_refused", |scratch| {
        let image = scratch.join("image.tar");
        write_test_image(&image);
        let c = Containerd::start(&scratch.join("ctd"), &[]);
        c.ctr_ok(&["images", "import", "--snapshotter", SNAPSHOTTER, image.to_str().unwrap()]);
        c.ctr_ok(&[
            "run",
            "-d",
            "--snapshotter",
            SNAPSHOTTER,
            "--runc-root",
            &c.runc_root(),
            "--fifo-dir",
            &c.fifo_dir(),
            "--uidmap",
            "0:100000:65536",
            "--gidmap",
            "0:100000:65536",
            "--remap-labels",
            IMAGE,
            "busy",
            "/bin/sh",
            "-c",
            "echo kept > /written; exec sleep 600",
        ]);
        let mut upper = None;
        c.wait_for(30, "the container's write", || {
            upper = c.snapshotter.snapshot_dirs().into_iter().find(|d| d.join("fs/written").exists());
            upper.is_some()
        });
        let upper = upper.unwrap();
        c.ctr_ok(&["snapshots", "--snapshotter", SNAPSHOTTER, "rm", "busy"]);
        c.wait_for(30, "the collector's Remove to be refused", || {
            std::fs::read_to_string(&c.snapshotter.log).unwrap_or_default().contains("is in use")
        });
        assert_eq!(std::fs::read_to_string(upper.join("fs/written")).unwrap(), "kept\n", "nothing deleted");
        assert!(mounts_beneath(&c.snapshotter.root).contains(&upper.join("rootfs")));
        let out = c.ctr_ok(&["tasks", "exec", "--exec-id", "check", "busy", "cat", "/written"]);
        assert_eq!(out, "kept\n", "the container still has its root");
        c.ctr_ok(&["tasks", "kill", "-s", "SIGKILL", "busy"]);
        c.wait_for(30, "the task to stop", || c.ctr(&["tasks", "delete", "busy"]).status.success());
        c.ctr_ok(&["containers", "rm", "busy"]);
        // containerd 1.6 retries a refused Remove only when it collects this snapshotter again: on the next
        // removal of one of its snapshots (or a restart).
        c.gc_kick();
        c.wait_for(30, "the snapshot to be removed", || !upper.exists());
        assert_eq!(mounts_beneath(&c.snapshotter.root), Vec::<PathBuf>::new());
        c.stop();
    });
}
