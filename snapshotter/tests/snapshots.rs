//! The snapshots API through the snapshotter's socket, as containerd's proxy calls it (no containerd here): the
//! whole trait, mounts of each kind, Remove's safety, and crash recovery (SIGKILL between any two steps).

mod common;

use std::path::{Path, PathBuf};

use common::client::Client;
use common::{Snapshotter, mounts_beneath, owner, privileged, tree_digest};
use containerd_snapshots::tonic::Code;

const UIDMAP: (&str, &str) = ("containerd.io/snapshot/uidmapping", "0:100000:65536");
const GIDMAP: (&str, &str) = ("containerd.io/snapshot/gidmapping", "0:100000:65536");

fn opt(m: &containerd_snapshots::api::types::Mount, prefix: &str) -> Option<String> {
    m.options.iter().find_map(|o| o.strip_prefix(prefix).map(str::to_string))
}

/// Two committed layers, `l1` (a file owned by 0, a directory owned by 1000) and `l2` on it, written as containerd's
/// applier writes them: into the directory of the single mount returned for the extract snapshot.
fn two_layers(c: &mut Client) {
    let m = c.prepare("extract-1", "", &[]).unwrap();
    assert_eq!((m.len(), m[0].r#type.as_str()), (1, "bind"), "{m:?}");
    let fs = PathBuf::from(&m[0].source);
    std::fs::write(fs.join("base"), "l1\n").unwrap();
    std::fs::create_dir(fs.join("home")).unwrap();
    std::os::unix::fs::chown(fs.join("home"), Some(1000), Some(1000)).unwrap();
    c.commit("l1", "extract-1").unwrap();
    let m = c.prepare("extract-2", "l1", &[]).unwrap();
    assert_eq!((m.len(), m[0].r#type.as_str()), (1, "overlay"), "{m:?}");
    let upper = PathBuf::from(opt(&m[0], "upperdir=").expect("upperdir"));
    assert!(opt(&m[0], "lowerdir=").unwrap().ends_with("/fs"));
    std::fs::write(upper.join("second"), "l2\n").unwrap();
    c.commit("l2", "extract-2").unwrap();
}

#[test]
fn whole_api() {
    privileged("whole_api", |scratch| {
        let mut s = Snapshotter::start(scratch, &[], &[]);
        let mut c = Client::connect(&s.socket);
        two_layers(&mut c);

        let m = c.prepare("active", "l2", &[]).unwrap();
        let lowers = opt(&m[0], "lowerdir=").unwrap();
        assert_eq!(lowers.split(':').count(), 2, "top-most first: {lowers}");
        assert!(opt(&m[0], "workdir=").is_some());
        assert_eq!(c.mounts("active").unwrap(), m);
        let v = c.view("view2", "l2", &[]).unwrap();
        assert_eq!(v[0].r#type, "overlay");
        assert!(opt(&v[0], "upperdir=").is_none());
        let v = c.view("view1", "l1", &[]).unwrap();
        assert_eq!((v[0].r#type.as_str(), v[0].options.contains(&"ro".to_string())), ("bind", true));

        assert_eq!(c.prepare("active", "l2", &[]).unwrap_err().code(), Code::AlreadyExists);
        assert_eq!(c.prepare("x", "missing", &[]).unwrap_err().code(), Code::NotFound);
        assert_eq!(c.prepare("x", "active", &[]).unwrap_err().code(), Code::FailedPrecondition);
        assert_eq!(c.commit("x", "view1").unwrap_err().code(), Code::FailedPrecondition);
        assert_eq!(c.commit("l1", "active").unwrap_err().code(), Code::AlreadyExists);
        assert_eq!(c.mounts("l1").unwrap_err().code(), Code::FailedPrecondition);
        assert_eq!(c.remove("l1").unwrap_err().code(), Code::FailedPrecondition, "l1 has children");
        assert_eq!(c.remove("missing").unwrap_err().code(), Code::NotFound);
        assert_eq!(c.stat("missing").unwrap_err().code(), Code::NotFound);
        assert_eq!(
            c.prepare("x", "", &[("containerd.io/snapshot/uidmapping", "0:1")]).unwrap_err().code(),
            Code::InvalidArgument
        );
        assert_eq!(c.list(&["labels.\"open"]).unwrap_err().code(), Code::InvalidArgument);

        let info = c.stat("l2").unwrap();
        assert_eq!((info.parent.as_str(), info.kind), ("l1", 3));
        let mut upd = info.clone();
        upd.labels.insert("containerd.io/gc.root".into(), "yes".into());
        upd.labels.insert("other".into(), "x".into());
        let got = c.update(upd.clone(), &["labels.containerd.io/gc.root"]).unwrap();
        assert_eq!(got.labels.keys().collect::<Vec<_>>(), ["containerd.io/gc.root"], "only the named label");
        let got = c.update(upd, &[]).unwrap();
        assert_eq!(got.labels.len(), 2, "no mask: all labels");
        assert_eq!(c.update(info, &["parent"]).unwrap_err().code(), Code::InvalidArgument);

        let names =
            |v: Vec<containerd_snapshots::api::snapshots::v1::Info>| v.into_iter().map(|i| i.name).collect::<Vec<_>>();
        assert_eq!(names(c.list(&[]).unwrap()), ["active", "l1", "l2", "view1", "view2"]);
        assert_eq!(names(c.list(&["kind==committed"]).unwrap()), ["l1", "l2"]);
        assert_eq!(names(c.list(&[r#"labels."containerd.io/gc.root""#]).unwrap()), ["l2"]);
        assert_eq!(names(c.list(&["parent==l1", "kind==view"]).unwrap()), ["l2", "view1", "view2"]);
        assert_eq!(
            c.list(&["parent==l2"]).unwrap().iter().map(|i| i.parent.as_str()).collect::<Vec<_>>(),
            ["l2", "l2"]
        );

        let (size, inodes) = c.usage("l2").unwrap();
        assert!(size > 0 && inodes == 2, "l2 usage: {size} bytes, {inodes} inodes");
        let active_fs = PathBuf::from(opt(&m[0], "upperdir=").unwrap());
        std::fs::write(active_fs.join("new"), vec![1u8; 10000]).unwrap();
        let (size, inodes) = c.usage("active").unwrap();
        assert!(size >= 10000 && inodes == 2, "active usage measured now: {size} bytes, {inodes} inodes");

        // A plain active snapshot is in use while an overlay writes into its upper (the shim's rootfs).
        let mnt = scratch.join("shim-rootfs");
        std::fs::create_dir(&mnt).unwrap();
        let data = std::ffi::CString::new(m[0].options.join(",")).unwrap();
        rustix::mount::mount("overlay", &mnt, "overlay", rustix::mount::MountFlags::empty(), data.as_c_str()).unwrap();
        let e = c.remove("active").unwrap_err();
        assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
        assert!(e.message().contains("shim-rootfs"), "{}", e.message());
        assert!(active_fs.join("new").exists(), "nothing deleted");
        common::umount(&mnt);
        for k in ["active", "view1", "view2", "l2", "l1"] {
            c.remove(k).unwrap();
        }
        assert!(c.list(&[]).unwrap().is_empty());
        assert!(s.snapshot_dirs().is_empty(), "left: {:?}", s.snapshot_dirs());
        drop(c);
        s.stop_ok();
    });
}

/// The composed root of a user-namespaced snapshot: lower files seen through it with mapped owners, the upper owned
/// by the mapped root; Remove refuses while another mount of the root exists (the shim's `rootfs` bind) and deletes
/// nothing, then succeeds once it is gone.
#[test]
fn remove_refuses_while_root_in_use() {
    privileged("remove_refuses_while_root_in_use", |scratch| {
        let mut s = Snapshotter::start(scratch, &[], &[]);
        let mut c = Client::connect(&s.socket);
        two_layers(&mut c);
        let m = c.prepare("ctr", "l2", &[UIDMAP, GIDMAP]).unwrap();
        assert_eq!((m.len(), m[0].r#type.as_str()), (1, "bind"), "{m:?}");
        let root = PathBuf::from(&m[0].source);
        assert_eq!(owner(&root.join("base")), (100000, 100000));
        assert_eq!(owner(&root.join("home")), (101000, 101000));
        assert_eq!(owner(&root), (100000, 100000), "the upper belongs to the mapped root");
        std::fs::write(root.join("written"), "x").unwrap();
        let table = layermount::MountTable::current().unwrap();
        let composed = table.mounts().iter().find(|m| m.mount_point == root).expect("composed root mounted");
        assert_eq!(composed.super_options.matches("lowerdir").count(), 1, "on the image's stack: {composed:?}");
        assert_eq!(c.mounts("ctr").unwrap(), m);
        // Rootfs fixups went into the upper (mount targets made, owned by the mapped root); the label turns them off.
        let upper = s.snapshot_dirs().into_iter().find(|d| d.join("rootfs") == root).unwrap().join("fs");
        assert_eq!(owner(&upper.join("proc")), (100000, 100000));
        let off =
            c.prepare("no-fixups", "l2", &[UIDMAP, GIDMAP, ("containerd.io/snapshot/layermount.fixups", "false")]);
        let off_root = PathBuf::from(&off.unwrap()[0].source);
        assert!(off_root.join("second").exists() && !off_root.join("proc").exists(), "no fixups with the label");
        c.remove("no-fixups").unwrap();
        // Maps of several extents, as containerd 2.x and `uidmap=` options write them.
        let split = "0:100000:1000,1000:101000:64536";
        let view = c.view("ctr-view", "l2", &[(UIDMAP.0, split), (GIDMAP.0, split)]).unwrap();
        let view_root = PathBuf::from(&view[0].source);
        assert_eq!(owner(&view_root.join("second")), (100000, 100000));
        assert_eq!(owner(&view_root.join("home")), (101000, 101000));
        assert!(std::fs::write(view_root.join("x"), "").is_err(), "a view is read-only");

        let shim = scratch.join("bundle-rootfs");
        std::fs::create_dir(&shim).unwrap();
        common::bind(&root, &shim);
        let e = c.remove("ctr").unwrap_err();
        assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
        assert!(e.message().contains("bundle-rootfs"), "names the other mount: {}", e.message());
        assert_eq!(std::fs::read_to_string(shim.join("written")).unwrap(), "x", "nothing deleted");
        assert_eq!(c.stat("ctr").unwrap().name, "ctr");
        assert_eq!(c.commit("c2", "ctr").unwrap_err().code(), Code::FailedPrecondition, "commit refused too");
        common::umount(&shim);
        c.remove("ctr").unwrap();
        c.remove("ctr-view").unwrap();
        assert_eq!(mounts_beneath(&s.root), Vec::<PathBuf>::new());
        for k in ["l2", "l1"] {
            c.remove(k).unwrap();
        }
        assert!(s.snapshot_dirs().is_empty());
        drop(c);
        s.stop_ok();
    });
}

/// Each step at which the snapshotter can be killed, with the operation that passes through it.
const STEPS: &[(&str, &str)] = &[
    ("prepare:after-id", "prepare"),
    ("prepare:after-mkdir", "prepare"),
    ("prepare:after-compose", "prepare"),
    ("prepare:after-insert", "prepare"),
    ("commit:before-commit", "commit"),
    ("commit:after-commit", "commit"),
    ("remove:after-release", "remove"),
    ("remove:after-delete", "remove"),
];

/// Kill -9 the snapshotter between any two steps of prepare, commit and remove; the next start reconciles: no
/// orphan directory, no stray mount, committed layers intact, and the interrupted key either fully there or absent.
#[test]
fn crash_at_every_step() {
    privileged("crash_at_every_step", |scratch| {
        for (step, op) in STEPS {
            let dir = scratch.join(step.replace(':', "-"));
            std::fs::create_dir(&dir).unwrap();
            let mut s = Snapshotter::start(&dir, &[], &[]);
            let mut c = Client::connect(&s.socket);
            two_layers(&mut c);
            if *op == "commit" {
                c.prepare("work", "l2", &[UIDMAP, GIDMAP]).unwrap();
            }
            if *op == "remove" {
                c.prepare("ctr", "l2", &[UIDMAP, GIDMAP]).unwrap();
            }
            let committed: Vec<String> = s.snapshot_dirs()[..2].iter().map(|d| tree_digest(&d.join("fs"))).collect();
            drop(c);
            s.stop_ok();

            let mut s = Snapshotter::start(&dir, &[], &[(layermount_snapshotter::CRASH_ENV, step)]);
            let mut c = Client::connect(&s.socket);
            let r = match *op {
                "prepare" => c.prepare("ctr", "l2", &[UIDMAP, GIDMAP]).map(|_| ()),
                "commit" => c.commit("done", "work"),
                _ => c.remove("ctr"),
            };
            assert!(r.is_err(), "{step}: the call must not complete");
            let st = s.child.wait().unwrap();
            assert_eq!(std::os::unix::process::ExitStatusExt::signal(&st), Some(9), "{step}: killed at the step");
            drop(c);
            drop(s);

            let mut s = Snapshotter::start(&dir, &[], &[]);
            let mut c = Client::connect(&s.socket);
            let listed = c.list(&[]).unwrap();
            assert_eq!(
                listed.len(),
                s.snapshot_dirs().len(),
                "{step}: a directory per snapshot, no orphan: {listed:?}"
            );
            let now: Vec<String> = s.snapshot_dirs()[..2].iter().map(|d| tree_digest(&d.join("fs"))).collect();
            assert_eq!(now, committed, "{step}: committed layers intact");
            assert_eq!(c.stat("l2").unwrap().kind, 3);
            // The interrupted key is either whole (its mounts work, its root composed) or absent (and can be made).
            for key in ["ctr", "work", "done"] {
                match c.stat(key) {
                    Ok(info) if info.kind == 2 => {
                        let m = c.mounts(key).unwrap();
                        assert!(Path::new(&m[0].source).join("second").exists(), "{step}: {key} root composed");
                        c.remove(key).unwrap();
                    }
                    Ok(_) => c.remove(key).unwrap(),
                    Err(e) => assert_eq!(e.code(), Code::NotFound, "{step}: {key}: {e:?}"),
                }
            }
            if *op == "prepare" {
                c.prepare("ctr", "l2", &[UIDMAP, GIDMAP]).unwrap();
                c.remove("ctr").unwrap();
            }
            c.remove("l2").unwrap();
            c.remove("l1").unwrap();
            assert_eq!(mounts_beneath(&dir), Vec::<PathBuf>::new(), "{step}");
            assert!(s.snapshot_dirs().is_empty(), "{step}: left {:?}", s.snapshot_dirs());
            drop(c);
            s.stop_ok();
        }
    });
}

/// The binary's contract: usage errors exit 2 with one line; a store another snapshotter holds, or a socket someone
/// listens on, exit 1 with one line naming it; SIGTERM exits 0 (every test above stops it so).
#[test]
fn cli_contract() {
    let bin = env!("CARGO_BIN_EXE_layermount-snapshotter");
    let run = |args: &[&str]| std::process::Command::new(bin).args(args).output().unwrap();
    for bad in [&[][..], &["--root"], &["--address", "/x"], &["--root", "/x", "--address", "/y", "--bogus"]] {
        let out = run(bad);
        assert_eq!(out.status.code(), Some(2), "{bad:?}");
        assert!(String::from_utf8_lossy(&out.stderr).starts_with("layermount-snapshotter: "), "{bad:?}");
    }
    assert_eq!(run(&["--help"]).status.code(), Some(0));
    let dir = tempfile::tempdir().unwrap();
    let first = Snapshotter::start(dir.path(), &[], &[]);
    let root = first.root.to_str().unwrap();
    let other_sock = dir.path().join("other.sock");
    let out = run(&["--address", other_sock.to_str().unwrap(), "--root", root]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("metadata database"), "{out:?}");
    let other_root = dir.path().join("other");
    let out = run(&["--address", first.socket.to_str().unwrap(), "--root", other_root.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("another server is listening"), "{out:?}");
    let mut first = first;
    first.stop_ok();
}
