//! A real runtime on what the crate builds: runc (Debian's 1.1.5 in CI) runs a user-namespaced container whose
//! rootfs the crate applied, composed idmapped with an upper, and fixed up.

mod common;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

use layermount::{ApplyOptions, Fixups, IdMap, Overlay, SyncMode, UserNamespace, apply};

const BUSYBOX: &str = "/bin/busybox";

/// runc and a static busybox, or why not. Under `LAYERMOUNT_REQUIRE_ROOT=1` (CI) a missing one is a failure.
fn have_runc(name: &str) -> bool {
    let runc = Command::new("runc").arg("--version").output().is_ok_and(|o| o.status.success());
    let busybox = fs::read(BUSYBOX).is_ok_and(|b| b.starts_with(b"\x7fELF"));
    if runc && busybox {
        return true;
    }
    let missing = if runc { "busybox-static (/bin/busybox)" } else { "runc" };
    if std::env::var("LAYERMOUNT_REQUIRE_ROOT").as_deref() == Ok("1") {
        panic!("{name}: needs {missing} (.ci/run installs it) and LAYERMOUNT_REQUIRE_ROOT=1 forbids skipping");
    }
    eprintln!("skipping {name}: needs {missing}");
    false
}

/// What an entry of a test layer is: a directory (`None`), a file's data (`Some(Ok)`), a symlink's target
/// (`Some(Err)`).
type Content<'a> = Option<Result<&'a [u8], &'a str>>;

/// A layer tar from `(name, content, mode)`, owned by 0.
fn tar(entries: &[(&str, Content<'_>, u32)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, what, mode) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_mode(*mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_700_000_000);
        match what {
            None => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_size(0);
                b.append_data(&mut h, name, std::io::empty()).unwrap();
            }
            Some(Ok(data)) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(data.len() as u64);
                b.append_data(&mut h, name, *data).unwrap();
            }
            Some(Err(target)) => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_size(0);
                b.append_link(&mut h, name, target).unwrap();
            }
        }
    }
    b.into_inner().unwrap()
}

fn config(args: &[&str]) -> String {
    let args: Vec<String> = args.iter().map(|a| format!("{a:?}")).collect();
    format!(
        r#"{{
  "ociVersion": "1.0.2",
  "process": {{
    "terminal": false,
    "user": {{ "uid": 0, "gid": 0 }},
    "args": [{}],
    "env": ["PATH=/bin"],
    "cwd": "/",
    "noNewPrivileges": true
  }},
  "root": {{ "path": "rootfs", "readonly": false }},
  "hostname": "layermount",
  "mounts": [
    {{ "destination": "/proc", "type": "proc", "source": "proc" }},
    {{ "destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"] }},
    {{ "destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"] }},
    {{ "destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"] }}
  ],
  "linux": {{
    "uidMappings": [{{ "containerID": 0, "hostID": 100000, "size": 65536 }}],
    "gidMappings": [{{ "containerID": 0, "hostID": 100000, "size": 65536 }}],
    "namespaces": [{{ "type": "pid" }}, {{ "type": "ipc" }}, {{ "type": "uts" }}, {{ "type": "mount" }}, {{ "type": "user" }}, {{ "type": "network" }}]
  }}
}}
"#,
        args.join(", ")
    )
}

#[test]
fn runc_runs_a_user_namespaced_container_on_a_crate_built_rootfs() {
    const NAME: &str = "runc_runs_a_user_namespaced_container_on_a_crate_built_rootfs";
    if !common::have_privilege(NAME) || !have_runc(NAME) {
        return;
    }
    common::privileged(NAME, |scratch| {
        if !layermount::idmap_supported(scratch).unwrap() {
            eprintln!("skipping {NAME}: this kernel lacks idmap_tmpfs (idmapped mounts of tmpfs, 6.3)");
            return;
        }
        let busybox = fs::read(BUSYBOX).unwrap();
        let base = tar(&[
            ("bin/", None, 0o755),
            ("bin/busybox", Some(Ok(&busybox)), 0o755),
            ("bin/sh", Some(Err("busybox")), 0o777),
            ("etc/", None, 0o755),
            ("etc/passwd", Some(Ok(b"root:x:0:0:root:/root:/bin/sh\n")), 0o644),
            ("etc/mtab", Some(Ok(b"/dev/sda1 / ext4 rw 0 0\n")), 0o644),
            ("etc/legacy.conf", Some(Ok(b"old\n")), 0o644),
            ("root/", None, 0o700),
            ("opt/", None, 0o755),
            ("opt/app/", None, 0o755),
            ("opt/app/old", Some(Ok(b"old\n")), 0o644),
        ]);
        let top = tar(&[
            ("etc/.wh.legacy.conf", Some(Ok(b"")), 0o644),
            ("opt/app/", None, 0o755),
            ("opt/app/.wh..wh..opq", Some(Ok(b"")), 0o644),
            ("opt/app/new", Some(Ok(b"new\n")), 0o644),
        ]);
        let store = scratch.join("layers");
        fs::create_dir(&store).unwrap();
        let (l1, l2) = (store.join("1"), store.join("2"));
        let opts = ApplyOptions::new().sync(SyncMode::None);
        apply(&base[..], &l1, &opts).unwrap();
        apply(&top[..], &l2, &opts.clone().parent(&l1)).unwrap();

        let map: IdMap = "0:100000:65536".parse().unwrap();
        let bundle = scratch.join("bundle");
        let (upper, work, rootfs) = (scratch.join("upper"), scratch.join("work"), bundle.join("rootfs"));
        for d in [&bundle, &upper, &work] {
            fs::create_dir(d).unwrap();
        }
        let guard = Overlay::new()
            .lowers([&l2, &l1])
            .upper(&upper, &work)
            .idmap(UserNamespace::cached(&map, &map).unwrap())
            .mount_at(&rootfs)
            .unwrap();
        let report = Fixups::new().idmap(&map, &map).apply(&rootfs).unwrap();
        assert!(report.problems.is_empty(), "{report:?}");

        let script = "busybox id -u; busybox id -g; busybox stat -c '%u:%g %n' /etc/passwd /bin/busybox /; \
                      echo hi > /root/written; busybox cat /root/written; \
                      busybox readlink /etc/mtab; busybox cat /etc/mtab; \
                      echo opt: $(busybox ls /opt/app); \
                      if [ -e /etc/legacy.conf ]; then echo legacy present; else echo legacy gone; fi";
        fs::write(bundle.join("config.json"), config(&["/bin/busybox", "sh", "-c", script])).unwrap();
        let state = scratch.join("runc-state");
        let id = format!("layermount-test-{}", std::process::id());
        let out = Command::new("runc")
            .arg("--root")
            .arg(&state)
            .args(["run", "--bundle"])
            .arg(&bundle)
            .arg(&id)
            .output()
            .expect("run runc");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        // runc deletes a container when `run` returns; make sure, whatever happened.
        let _ = Command::new("runc").arg("--root").arg(&state).args(["delete", "--force", &id]).output();
        assert!(out.status.success(), "runc failed: {stderr}\n{stdout}");

        let lines: Vec<&str> = stdout.lines().collect();
        assert_eq!(lines[..2], ["0", "0"], "uid and gid inside:\n{stdout}");
        assert!(lines.contains(&"0:0 /etc/passwd"), "image files owned by 0 inside:\n{stdout}");
        assert!(lines.contains(&"0:0 /bin/busybox"), "{stdout}");
        assert!(lines.contains(&"0:0 /"), "{stdout}");
        assert!(lines.contains(&"hi"), "{stdout}");
        assert!(lines.contains(&"../proc/self/mounts"), "{stdout}");
        assert!(
            lines.iter().any(|l| l.split(' ').nth(1) == Some("/") && l.split(' ').nth(2) == Some("overlay")),
            "/etc/mtab lists the overlay as /:\n{stdout}"
        );
        assert!(lines.contains(&"opt: new"), "opaque dir honoured:\n{stdout}");
        assert!(lines.contains(&"legacy gone"), "whiteout honoured:\n{stdout}");

        // The write landed in the upper as the container's root's host id.
        let written = upper.join("root/written");
        assert_eq!(fs::read_to_string(&written).unwrap(), "hi\n");
        let m = fs::metadata(&written).unwrap();
        assert_eq!((m.uid(), m.gid()), (100000, 100000));
        // The layers are untouched: still owned by 0 on disk, the regular mtab still in layer 1.
        assert_eq!(common::owner(&l1.join("etc/passwd")), (0, 0));
        assert!(fs::symlink_metadata(l1.join("etc/mtab")).unwrap().is_file());

        guard.unmount().unwrap();
        assert!(common::children().is_empty(), "processes left: {:?}", common::children());
        let left: Vec<_> =
            fs::read_dir(&state).map(|d| d.flatten().map(|e| e.file_name()).collect()).unwrap_or_default();
        assert!(left.is_empty(), "runc state left: {left:?}");
        assert!(!Path::new("/sys/fs/cgroup/pids").join(&id).exists(), "cgroup left");
    });
}
