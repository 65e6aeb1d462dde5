//! End to end with the distribution's containerd and runc: a containerd started in a scratch directory with the
//! snapshotter as its proxy plugin, an image built offline and imported, containers run with `ctr`.

mod common;

use common::image::{IMAGE, write_test_image};
use common::{Containerd, SNAPSHOTTER, have_containerd, mounts_beneath, privileged, tree_digest};

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
        let _ = tree_digest;
        c.stop();
    });
}
