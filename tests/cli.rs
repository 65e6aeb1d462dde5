//! The `layermount` binary: subcommands, exit codes (0 ok, 1 failed, 2 usage) and one-line errors.
#![cfg(feature = "cli")]

mod common;

use layermount::MountTable;
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
    // `string`, or the best this kernel has if that is below it.
    let level = layermount::Features::get().strategy().min(layermount::Strategy::Strings);
    let o = Command::new(env!("CARGO_BIN_EXE_layermount"))
        .arg("probe")
        .env(layermount::STRATEGY_ENV, level.name())
        .output()
        .unwrap();
    let out = String::from_utf8(o.stdout).unwrap();
    assert!(out.contains(&format!("strategy: {level}\n")), "{out}");
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

#[test]
fn mount_usage_errors_exit_2() {
    for args in [
        &["mount", "--strategy", "fastest", "--lower", "/a", "--lower", "/b", "/t"][..],
        &["mount", "--uidmap", "0:1", "--lower", "/a", "--lower", "/b", "/t"],
        &["mount", "-t", "tmpfs", "--lower", "/a", "/t"],
        &["mount", "--lower", "/a", "--upper", "/u", "/t"],
        &["mount", "none", "/t"],
        &["mount", "-t", "tmpfs", "a", "b", "c"],
        &["umount"],
    ] {
        let o = layermount(args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
    }
}

#[test]
fn mount_and_umount_an_idmapped_overlay_with_every_strategy() {
    common::privileged("mount_and_umount_an_idmapped_overlay_with_every_strategy", |scratch| {
        for d in ["l1", "l2", "u", "w"] {
            fs::create_dir(scratch.join(d)).unwrap();
        }
        fs::write(scratch.join("l1/f"), "bottom").unwrap();
        fs::write(scratch.join("l2/g"), "top").unwrap();
        let p = |s: &str| scratch.join(s).display().to_string();
        let target = p("root");
        const NAME: &str = "mount_and_umount_an_idmapped_overlay_with_every_strategy";
        for strategy in ["auto", "fd", "fd-attached", "string", "legacy"] {
            if let Ok(level) = strategy.parse::<layermount::Strategy>()
                && !common::has_strategy(NAME, level)
            {
                continue;
            }
            let o = layermount(&[
                "mount",
                "--mkdir",
                "mount",
                "--lower",
                &p("l2"),
                "--lower",
                &p("l1"),
                "--upper",
                &p("u"),
                "--work",
                &p("w"),
                "--uidmap",
                "0:100000:65536",
                "--strategy",
                strategy,
                &target,
            ]);
            assert_eq!(o.status.code(), Some(0), "{strategy}: {}", stderr(&o));
            assert_eq!(fs::read_to_string(scratch.join("root/f")).unwrap(), "bottom", "{strategy}");
            assert_eq!(common::owner(&scratch.join("root/g")), (100000, 100000), "{strategy}");
            let o = layermount(&["umount", &target]);
            assert_eq!(o.status.code(), Some(0), "{strategy}: {}", stderr(&o));
            assert!(!scratch.join("root/f").exists(), "{strategy}: unmounted");
            fs::remove_dir(&target).unwrap();
        }
        // containerd-style -o options (and mount(8)'s X-mount.mkdir).
        let o = layermount(&[
            "mount",
            "-t",
            "overlay",
            "-o",
            &format!("lowerdir={}:{}", p("l2"), p("l1")),
            "-o",
            "ro,uidmap=0:100000:65536,gidmap=0:100000:65536,X-mount.mkdir",
            "overlay",
            &target,
        ]);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        assert_eq!(common::owner(&scratch.join("root/f")), (100000, 100000));
        assert_eq!(layermount(&["umount", &target]).status.code(), Some(0));
        // mount created the missing mount point as asked; umount leaves it (empty), as umount(8) does.
        assert_eq!(fs::read_dir(scratch.join("root")).unwrap().count(), 0);
        fs::remove_dir(scratch.join("root")).unwrap();
    });
}

/// xfstests `overlay/065` through the command line: an overlay whose lower is the upper of a live overlay is
/// refused (exit 1, one line naming the live mount), with every strategy.
#[test]
fn mount_refuses_a_live_overlays_upper_as_a_lower() {
    common::privileged("mount_refuses_a_live_overlays_upper_as_a_lower", |scratch| {
        for d in ["l1", "l2", "u", "w"] {
            fs::create_dir(scratch.join(d)).unwrap();
        }
        let p = |s: &str| scratch.join(s).display().to_string();
        let live =
            ["mount", "--mkdir", "--lower", &p("l2"), "--lower", &p("l1"), "--upper", &p("u"), "--work", &p("w")];
        let o = layermount(&[&live[..], &[&p("live")]].concat());
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        for strategy in ["fd", "fd-attached", "string", "legacy"] {
            let o = layermount(&[
                "mount",
                "--mkdir",
                "--strategy",
                strategy,
                "--lower",
                &p("u"),
                "--lower",
                &p("l1"),
                &p("second"),
            ]);
            let err = stderr(&o);
            assert_eq!(o.status.code(), Some(1), "{strategy}: {err}");
            assert_eq!(err.lines().count(), 1, "{err}");
            assert!(err.contains("in use") && err.contains(&format!("mounted at {}", p("live"))), "{strategy}: {err}");
            assert!(!scratch.join("second").exists(), "{strategy}: no mount point left");
        }
        assert_eq!(layermount(&["umount", &p("live")]).status.code(), Some(0));
    });
}

/// LTP `mount02`: mount(2) onto a missing mount point is ENOENT; mount(8) makes it only with `--mkdir[=MODE]` or
/// `-o X-mount.mkdir[=MODE]` (util-linux; default mode 0755, parents too).
#[test]
fn mount_onto_a_missing_target_needs_mkdir() {
    common::privileged("mount_onto_a_missing_target_needs_mkdir", |scratch| {
        for missing in [scratch.join("b"), scratch.join("a/b")] {
            let t = missing.display().to_string();
            let o = layermount(&["mount", "-t", "tmpfs", "tmpfs", &t]);
            let err = stderr(&o);
            assert_eq!(o.status.code(), Some(1), "{err}");
            assert_eq!(err.lines().count(), 1, "{err}");
            assert!(err.contains("No such file or directory") && err.contains(&t), "{err}");
            assert!(!scratch.join("a").exists() && !scratch.join("b").exists(), "nothing created");
        }
        let target = scratch.join("a/b");
        let t = target.display().to_string();
        for (args, mode) in [
            (&["--mkdir"][..], 0o755),
            (&["--mkdir=0700"], 0o700),
            (&["-o", "X-mount.mkdir=711"], 0o711),
            (&["-m"], 0o755),
        ] {
            let mut all = vec!["mount", "-t", "tmpfs"];
            all.extend_from_slice(args);
            all.extend_from_slice(&["tmpfs", &t]);
            let o = layermount(&all);
            assert_eq!(o.status.code(), Some(0), "{args:?}: {}", stderr(&o));
            let table = layermount::MountTable::current().unwrap();
            assert_eq!(table.mount_of(&target).unwrap().fs_type, "tmpfs", "{args:?}");
            assert_eq!(layermount(&["umount", &t]).status.code(), Some(0));
            use std::os::unix::fs::MetadataExt;
            assert_eq!(fs::metadata(&target).unwrap().mode() & 0o7777, mode, "{args:?}");
            fs::remove_dir(&target).unwrap();
            fs::remove_dir(scratch.join("a")).unwrap();
        }
        // --mkdir takes its mode only after '=': the next word stays the target.
        assert_eq!(layermount(&["mount", "-t", "tmpfs", "--mkdir", "0700", "tmpfs", &t]).status.code(), Some(2));
    });
}

#[test]
fn mount_and_umount_failures_exit_1_with_one_line() {
    common::privileged("mount_and_umount_failures_exit_1_with_one_line", |scratch| {
        fs::create_dir(scratch.join("l1")).unwrap();
        let p = |s: &str| scratch.join(s).display().to_string();
        let cases: [(&[&str], &str); 5] = [
            (
                &[
                    "mount",
                    "-t",
                    "overlay",
                    "-o",
                    &format!("lowerdir={}:{},X-containerd.bogus=1", p("l1"), p("l1")),
                    &p("t"),
                ],
                "unknown containerd option",
            ),
            (&["mount", "--mkdir", "--lower", &p("l1"), "--lower", &p("missing"), &p("t")], "missing"),
            (&["mount", "--mkdir", "--lower", &p("l1"), "--lower", &p("l1"), &p("t")], "same directory"),
            (&["mount", "-t", "tmpfs", "none", &p("t")], "does not exist"),
            (&["umount", &p("l1")], "not a mount point"),
        ];
        for (args, needle) in cases {
            let o = layermount(args);
            let err = stderr(&o);
            assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
            assert_eq!(err.lines().count(), 1, "{err}");
            assert!(err.starts_with("layermount: ") && err.contains(needle), "{err}");
        }
        // A failed mount leaves no mount point behind, even one --mkdir was to make.
        assert!(!scratch.join("t").exists());
    });
}

#[test]
fn apply_verify_recover_from_the_command_line() {
    common::privileged("apply_verify_recover_from_the_command_line", |scratch| {
        use common::archive::{E, tar_of};
        let store = scratch.join("store");
        fs::create_dir(&store).unwrap();
        let base_tar = scratch.join("base.tar");
        fs::write(&base_tar, tar_of(&[E::Dir("etc"), E::File("etc/motd", "hi"), E::File("gone", "g")])).unwrap();
        let top_tar = scratch.join("top.tar");
        fs::write(&top_tar, tar_of(&[E::File(".wh.gone", ""), E::File("etc/new", "n")])).unwrap();
        let p = |x: &std::path::Path| x.display().to_string();

        let o = layermount(&["apply", "--sync", "none", &p(&base_tar), &p(&store.join("base"))]);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        let diff_id = String::from_utf8(o.stdout).unwrap().trim().to_string();
        assert!(diff_id.starts_with("sha256:") && diff_id.len() == 71, "{diff_id}");
        // --digest checked; --parent used for whiteouts.
        let o = layermount(&[
            "apply",
            "--whiteouts",
            "overlay",
            "--parent",
            &p(&store.join("base")),
            &p(&top_tar),
            &p(&store.join("top")),
        ]);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        assert!(fs::symlink_metadata(store.join("top/gone")).is_ok(), "whiteout made");
        let o = layermount(&["verify", &p(&store.join("base"))]);
        assert_eq!(String::from_utf8(o.stdout).unwrap(), format!("ok {diff_id}\n"));

        // Failures: one line, exit 1; nothing committed.
        let wrong = format!("sha256:{}", "1".repeat(64));
        let o = layermount(&["apply", "--digest", &wrong, &p(&base_tar), &p(&store.join("bad"))]);
        assert_eq!(o.status.code(), Some(1));
        assert_eq!(stderr(&o).lines().count(), 1, "{}", stderr(&o));
        assert!(stderr(&o).contains("diff_id does not match"), "{}", stderr(&o));
        assert!(!store.join("bad").exists());
        let o = layermount(&["apply", &p(&base_tar), &p(&store.join("base"))]);
        assert_eq!(o.status.code(), Some(1));
        assert!(stderr(&o).contains("destination already exists"), "{}", stderr(&o));
        fs::write(store.join("base/etc/motd"), "changed").unwrap();
        let o = layermount(&["verify", &p(&store.join("base"))]);
        assert_eq!(o.status.code(), Some(1));
        assert!(stderr(&o).contains("content does not match"), "{}", stderr(&o));
        // From standard input.
        let mut child = Command::new(env!("CARGO_BIN_EXE_layermount"))
            .args(["apply", "--sync", "none", "-", &p(&store.join("stdin"))])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        std::io::Write::write_all(child.stdin.as_mut().unwrap(), &fs::read(&base_tar).unwrap()).unwrap();
        let out = child.wait_with_output().unwrap();
        assert_eq!(String::from_utf8(out.stdout).unwrap().trim(), diff_id);

        // recover: exit 0 when clean, 1 with an incomplete layer listed.
        assert_eq!(layermount(&["recover", &p(&store)]).status.code(), Some(0));
        fs::create_dir(store.join("half")).unwrap();
        fs::create_dir(store.join(".x.partial-1-1")).unwrap();
        let o = layermount(&["recover", &p(&store)]);
        assert_eq!(o.status.code(), Some(1));
        let out = String::from_utf8(o.stdout).unwrap();
        assert!(out.contains("removed ") && out.contains("incomplete ") && out.contains("half"), "{out}");
        // Usage errors.
        assert_eq!(layermount(&["apply", "--whiteouts", "aufs", "x", "y"]).status.code(), Some(2));
        assert_eq!(layermount(&["apply", "--sync", "sometimes", "x", "y"]).status.code(), Some(2));
    });
}

/// The peers' apply cases through the command line (see tests/peers.rs for where each comes from): a device number
/// out of range and a hardlink to a whited-out path fail with one line and leave nothing; an unsupported xattr is
/// skipped with one warning line.
#[test]
fn apply_agrees_with_the_peers_from_the_command_line() {
    common::privileged("apply_agrees_with_the_peers_from_the_command_line", |scratch| {
        use common::archive::{E, Opt, Tar, tar_of};
        let p = |x: &std::path::Path| x.display().to_string();
        let store = scratch.join("store");
        fs::create_dir(&store).unwrap();
        let mut t = Tar::new();
        t.device("dev", true, 1 << 32, 0);
        let device = scratch.join("device.tar");
        fs::write(&device, t.finish()).unwrap();
        let hardlink = scratch.join("hardlink.tar");
        fs::write(&hardlink, tar_of(&[E::File(".wh.a", ""), E::Hardlink("b", "a")])).unwrap();
        for (blob, needle) in [(&device, "out of range"), (&hardlink, "whited out")] {
            let o = layermount(&["apply", "--sync", "none", &p(blob), &p(&store.join("l"))]);
            let err = stderr(&o);
            assert_eq!(o.status.code(), Some(1), "{err}");
            assert_eq!(err.lines().count(), 1, "{err}");
            assert!(err.contains(needle), "{err}");
            assert_eq!(fs::read_dir(&store).unwrap().count(), 0, "nothing left behind");
        }
        let mut t = Tar::new();
        for name in ["x", "y"] {
            let pax = vec![("SCHILY.xattr.system.nfs4_acl".to_string(), vec![0u8; 4])];
            t.add_with(&E::File(name, "data"), &Opt { pax, ..Opt::default() });
        }
        let acl = scratch.join("acl.tar");
        fs::write(&acl, t.finish()).unwrap();
        let o = layermount(&["apply", "--sync", "none", &p(&acl), &p(&store.join("acl"))]);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(0), "{err}");
        assert_eq!(err.lines().count(), 1, "said once: {err}");
        assert!(err.contains("warning: skipped 2 xattr(s)"), "{err}");
        assert_eq!(fs::read(store.join("acl/y")).unwrap(), b"data");
    });
}

/// `layermount rm` of a chain of `depth` directories, under the resource limit `limit` (a prlimit option).
fn rm_deep_tree_limited(scratch: &std::path::Path, depth: usize, limit: &str) {
    use rustix::fs::{Mode, OFlags};
    let top = scratch.join("deep");
    fs::create_dir(&top).unwrap();
    let mut fd = rustix::fs::open(&top, OFlags::PATH | OFlags::DIRECTORY, Mode::empty()).unwrap();
    for _ in 0..depth {
        rustix::fs::mkdirat(&fd, "d", Mode::from_raw_mode(0o755)).unwrap();
        fd = rustix::fs::openat(&fd, "d", OFlags::PATH | OFlags::DIRECTORY, Mode::empty()).unwrap();
    }
    drop(fd);
    let o = Command::new("prlimit")
        .args([limit, "--"])
        .arg(env!("CARGO_BIN_EXE_layermount"))
        .arg("rm")
        .arg(&top)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{limit}: {}", stderr(&o));
    assert!(!top.exists());
}

#[test]
fn rm_removes_a_tree_deeper_than_its_fd_limit() {
    // 2000 levels, 100 descriptors allowed.
    common::privileged("rm_removes_a_tree_deeper_than_its_fd_limit", |scratch| {
        rm_deep_tree_limited(scratch, 2000, "--nofile=100")
    });
}

/// Defect 3: removal memory grows with depth, not its square: 20,000 levels (the old code kept every level's full
/// path, about 400 MB here) in 64 MiB of address space.
#[test]
fn rm_removes_a_deep_tree_in_little_memory() {
    common::privileged("rm_removes_a_deep_tree_in_little_memory", |scratch| {
        rm_deep_tree_limited(scratch, 20_000, "--as=67108864")
    });
}

/// Defect 9: `rm x/.` and `rm x/./` are refused (exit 1, one line), as GNU rm refuses them; x stays.
#[test]
fn rm_refuses_a_path_ending_in_dot() {
    common::privileged("rm_refuses_a_path_ending_in_dot", |scratch| {
        let x = scratch.join("x");
        fs::create_dir_all(x.join("sub")).unwrap();
        for bad in ["/.", "/./"] {
            let arg = format!("{}{bad}", x.display());
            let o = layermount(&["rm", &arg]);
            let err = stderr(&o);
            assert_eq!(o.status.code(), Some(1), "{arg}: {err}");
            assert_eq!(err.lines().count(), 1, "{err}");
            assert!(err.starts_with("layermount: remove_all ") && err.contains(&arg), "{err}");
            assert!(x.join("sub").is_dir(), "{arg}: nothing deleted");
        }
    });
}

/// Layer paths with `:`, `,`, `\` and non-UTF-8 bytes reach overlay as written (no U+FFFD, no split), through
/// `--lower` and through `-o lowerdir=` with escapes; a multi-range map given with `-o` stays one option.
#[test]
fn mount_takes_awkward_layer_paths_and_multi_range_maps() {
    common::privileged("mount_takes_awkward_layer_paths_and_multi_range_maps", |scratch| {
        use std::ffi::OsStr;
        use std::os::unix::ffi::OsStrExt;
        let a = scratch.join("x/a:"); // `--lower '/x/a:' --lower /y` once made /y an invisible data-only layer
        let y = scratch.join("y");
        let odd = scratch.join(OsStr::from_bytes(b"l\xff,b\\c"));
        for (d, f) in [(&a, "from-a"), (&y, "from-y"), (&odd, "from-odd")] {
            fs::create_dir_all(d).unwrap();
            fs::write(d.join(f), f).unwrap();
        }
        let target = scratch.join("root");
        fs::create_dir(&target).unwrap();
        let run = |args: Vec<&OsStr>| Command::new(env!("CARGO_BIN_EXE_layermount")).args(args).output().unwrap();
        let o = run(vec![
            "mount".as_ref(),
            "--lower".as_ref(),
            a.as_os_str(),
            "--lower".as_ref(),
            y.as_os_str(),
            "--lower".as_ref(),
            odd.as_os_str(),
            target.as_os_str(),
        ]);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        let mut names: Vec<String> =
            fs::read_dir(&target).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        names.sort();
        assert_eq!(names, ["from-a", "from-odd", "from-y"], "every layer is a lower layer");
        assert_eq!(layermount(&["umount", target.to_str().unwrap()]).status.code(), Some(0));

        // The same by hand with -o: `\:` is a colon of the path, `:` alone separates layers.
        let mut opt = b"lowerdir=".to_vec();
        opt.extend_from_slice(scratch.join("x/a").as_os_str().as_bytes());
        opt.extend_from_slice(b"\\::"); // `/x/a\::/y`: the layer `/x/a:`, then `/y`
        opt.extend_from_slice(y.as_os_str().as_bytes());
        let o = run(vec![
            "mount".as_ref(),
            "-t".as_ref(),
            "overlay".as_ref(),
            "-o".as_ref(),
            OsStr::from_bytes(&opt),
            "-o".as_ref(),
            "uidmap=0:100000:1000,1000:200000:1000,gidmap=0:100000:2000".as_ref(),
            "overlay".as_ref(),
            target.as_os_str(),
        ]);
        assert_eq!(o.status.code(), Some(0), "{:?}: {}", OsStr::from_bytes(&opt), stderr(&o));
        assert!(target.join("from-a").exists() && target.join("from-y").exists());
        assert_eq!(common::owner(&target.join("from-a")), (100000, 100000));
        assert_eq!(layermount(&["umount", target.to_str().unwrap()]).status.code(), Some(0));

        // A lone trailing backslash is an error, not dropped.
        let mut bad = b"lowerdir=".to_vec();
        bad.extend_from_slice(y.as_os_str().as_bytes());
        bad.extend_from_slice(b"\\");
        let o = run(vec![
            "mount".as_ref(),
            "-t".as_ref(),
            "overlay".as_ref(),
            "-o".as_ref(),
            OsStr::from_bytes(&bad),
            target.as_os_str(),
        ]);
        assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
        assert!(stderr(&o).contains("lone backslash"), "{}", stderr(&o));
        fs::remove_dir(&target).unwrap();
    });
}

/// `mount --stack`: the layers composed as one image stack under the container's overlay, with every strategy; the
/// stack lives as long as the mount (the command has exited: only the container's overlay is in the table).
#[test]
fn mount_stack_with_every_strategy() {
    for args in [
        &["mount", "--stack", "--lower", "/a", "--lower", "/b", "/t"][..],
        &["mount", "--stack", "-o", "ro", "--lower", "/a", "--upper", "/u", "--work", "/w", "/t"],
    ] {
        let o = layermount(args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
    }
    common::privileged("mount_stack_with_every_strategy", |scratch| {
        if !common::scratch_idmaps("mount_stack_with_every_strategy", scratch) {
            return;
        }
        for d in ["l1", "l2", "u", "w"] {
            fs::create_dir(scratch.join(d)).unwrap();
        }
        fs::write(scratch.join("l1/f"), "bottom").unwrap();
        fs::write(scratch.join("l2/g"), "top").unwrap();
        let p = |s: &str| scratch.join(s).display().to_string();
        let target = p("root");
        for strategy in ["auto", "fd", "fd-attached", "string", "legacy"] {
            if let Ok(level) = strategy.parse::<layermount::Strategy>()
                && !common::has_strategy("mount_stack_with_every_strategy", level)
            {
                continue;
            }
            let o = layermount(&[
                "mount",
                "--stack",
                "--mkdir",
                "--lower",
                &p("l2"),
                "--lower",
                &p("l1"),
                "--upper",
                &p("u"),
                "--work",
                &p("w"),
                "--uidmap",
                "0:100000:65536",
                "--strategy",
                strategy,
                &target,
            ]);
            assert_eq!(o.status.code(), Some(0), "{strategy}: {}", stderr(&o));
            assert!(stderr(&o).is_empty(), "{strategy}: stacked, nothing said: {}", stderr(&o));
            assert_eq!(fs::read_to_string(scratch.join("root/f")).unwrap(), "bottom", "{strategy}");
            assert_eq!(common::owner(&scratch.join("root/g")), (100000, 100000), "{strategy}");
            fs::write(scratch.join("root/new"), strategy).unwrap();
            let overlays = MountTable::current().unwrap().mounts().iter().filter(|m| m.fs_type == "overlay").count();
            assert_eq!(overlays, 1, "{strategy}: the stack is held by the container's overlay, attached nowhere");
            let o = layermount(&["umount", &target]);
            assert_eq!(o.status.code(), Some(0), "{strategy}: {}", stderr(&o));
            assert_eq!(fs::read_to_string(scratch.join("u/new")).unwrap(), strategy);
            fs::remove_dir(&target).unwrap();
        }
        // A missing layer: exit 1, one line.
        let o = layermount(&[
            "mount",
            "--stack",
            "--mkdir",
            "--lower",
            &p("nope"),
            "--upper",
            &p("u"),
            "--work",
            &p("w"),
            &target,
        ]);
        assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
        assert_eq!(stderr(&o).lines().count(), 1, "{}", stderr(&o));
        let _ = fs::remove_dir(&target);
    });
}

/// `apply` shows progress on one line of stderr when stderr is a terminal (util-linux's `script` gives it one), and
/// says nothing more than before when it is not.
#[test]
fn apply_shows_progress_only_on_a_terminal() {
    common::privileged("apply_shows_progress_only_on_a_terminal", |scratch| {
        let blob = scratch.join("layer.tar");
        fs::write(&blob, common::archive::tar_of(&[common::archive::E::File("a", "x"), common::archive::E::Dir("d")]))
            .unwrap();
        let p = |path: &std::path::Path| path.display().to_string();
        let piped = layermount(&["apply", "--sync", "none", &p(&blob), &p(&scratch.join("piped"))]);
        assert!(piped.status.success(), "{}", stderr(&piped));
        assert!(piped.stderr.is_empty(), "{}", stderr(&piped));
        let cmd =
            format!("{} apply --sync none {} {}", env!("CARGO_BIN_EXE_layermount"), p(&blob), p(&scratch.join("tty")));
        let o = Command::new("script").args(["-qefc", &cmd, "/dev/null"]).output().expect("run script (util-linux)");
        let shown = String::from_utf8_lossy(&o.stdout);
        assert!(o.status.success(), "{shown}");
        // The totals, then the line erased, then the diff_id on stdout.
        assert!(shown.contains("\r\u{1b}[2Klayermount: applying: 0.0 MiB read, 2 entries"), "{shown:?}");
        assert!(shown.contains("\r\u{1b}[2Ksha256:"), "{shown:?}");
        let diff_id = String::from_utf8_lossy(&piped.stdout);
        assert!(shown.contains(diff_id.trim()), "{shown:?}");
    });
}
