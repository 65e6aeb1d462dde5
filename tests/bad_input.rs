//! A catalogue of bad input for the layer, removal and mount-table entry points and for the `apply`, `verify`,
//! `recover` and `rm` subcommands: missing paths, files where directories are expected, relative, overlong and
//! non-UTF-8 paths, paths ending in `.`, symlink loops, malformed digests, markers and mountinfo lines, reserved
//! names. Each case asserts the exact [`ErrorKind`] (the CLI: exit 1 and one line naming the operation, the path and
//! the cause) and that nothing was mounted (the helper's leak check), written or deleted.

mod common;

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use common::archive::{E, tar_of, tree};
use common::privileged;
use layermount::{
    ApplyOptions, ErrorKind, LayerProblem, MountInfo, MountTable, SyncMode, apply, marker_path, recover, remove_all,
    verify,
};

const ENOENT: i32 = 2;
const ENOTDIR: i32 = 20;
const ENAMETOOLONG: i32 = 36;
const ELOOP: i32 = 40;

/// Names and contents, and each directory's mtime.
type State = (BTreeMap<String, String>, Vec<(PathBuf, i64, i64)>);

/// What a failed call must leave as it was: every name and content under `root`, and the mtime of each directory
/// (so a staging directory made and removed again shows too).
fn state(root: &Path) -> State {
    let mut dirs = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        let m = fs::symlink_metadata(&d).unwrap();
        dirs.push((d.clone(), m.mtime(), m.mtime_nsec()));
        for e in fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            }
        }
    }
    dirs.sort();
    (tree(root), dirs)
}

/// A store with a committed layer `base`, a file, a symlink loop, a dangling symlink and a garbage marker.
fn store(scratch: &Path) -> PathBuf {
    let store = scratch.join("store");
    fs::create_dir(&store).unwrap();
    apply(&tar_of(&[E::File("f", "base")])[..], store.join("base"), &ApplyOptions::new().sync(SyncMode::None)).unwrap();
    fs::write(store.join("afile"), "a file").unwrap();
    std::os::unix::fs::symlink("loop2", store.join("loop1")).unwrap();
    std::os::unix::fs::symlink("loop1", store.join("loop2")).unwrap();
    fs::create_dir(store.join("garbled")).unwrap();
    fs::write(marker_path(store.join("garbled")), "not a marker").unwrap();
    fs::write(store.join("file-layer"), "").unwrap();
    fs::copy(marker_path(store.join("base")), marker_path(store.join("file-layer"))).unwrap();
    store
}

fn overlong_name() -> String {
    "n".repeat(256)
}

fn overlong_path(store: &Path) -> PathBuf {
    store.join("d/".repeat(2100)).join("l")
}

/// What a case expects: a kind, and for `Os` the errno.
#[derive(Debug, Clone, Copy)]
enum Want {
    Kind(ErrorKind),
    Errno(i32),
}

fn check(what: &str, result: layermount::Result<impl std::fmt::Debug>, want: Want, path: Option<&Path>) {
    let err = match result {
        Ok(v) => panic!("{what}: accepted: {v:?}"),
        Err(e) => e,
    };
    match want {
        Want::Kind(k) => assert_eq!(err.kind(), k, "{what}: {err}"),
        Want::Errno(n) => {
            assert_eq!(err.kind(), ErrorKind::Os, "{what}: {err}");
            assert_eq!(err.raw_os_error(), Some(n), "{what}: {err}");
        }
    }
    if let Some(p) = path {
        assert_eq!(err.path(), Some(p), "{what}: the path is named: {err}");
    }
    let line = err.to_string();
    assert!(!line.contains('\n'), "{what}: one line: {line}");
    assert!(line.starts_with(err.operation()), "{what}: the operation first: {line}");
}

#[test]
fn apply_refuses_bad_input_and_leaves_nothing() {
    privileged("apply_refuses_bad_input_and_leaves_nothing", |scratch| {
        let store = store(scratch);
        let blob = tar_of(&[E::File("x", "x")]);
        let opts = ApplyOptions::new().sync(SyncMode::None);
        let before = state(scratch);
        let long = store.join(overlong_name());
        let deep = overlong_path(&store);
        let dot = PathBuf::from(format!("{}/new/.", store.display()));
        let dotdot = store.join("new/..");
        let reserved = store.join(".x.partial-1-1");
        let cases: Vec<(&str, PathBuf, ApplyOptions, Want, Option<PathBuf>)> = vec![
            ("missing parent", store.join("missing/l"), opts.clone(), Want::Errno(ENOENT), Some(store.join("missing"))),
            ("file as parent", store.join("afile/l"), opts.clone(), Want::Errno(ENOTDIR), Some(store.join("afile"))),
            ("symlink loop as parent", store.join("loop1/l"), opts.clone(), Want::Errno(ELOOP), None),
            ("relative missing parent", PathBuf::from("no-such-dir-here/l"), opts.clone(), Want::Errno(ENOENT), None),
            (
                "destination exists",
                store.join("base"),
                opts.clone(),
                Want::Kind(ErrorKind::InvalidLayer(LayerProblem::DestinationExists)),
                Some(store.join("base")),
            ),
            (
                "a file at the destination",
                store.join("afile"),
                opts.clone(),
                Want::Kind(ErrorKind::InvalidLayer(LayerProblem::DestinationExists)),
                None,
            ),
            ("overlong name", long.clone(), opts.clone(), Want::Errno(ENAMETOOLONG), Some(long.clone())),
            ("overlong path", deep.clone(), opts.clone(), Want::Errno(ENAMETOOLONG), None),
            (
                "root",
                PathBuf::from("/"),
                opts.clone(),
                Want::Kind(ErrorKind::InvalidInput),
                Some(Path::new("/").into()),
            ),
            ("empty", PathBuf::new(), opts.clone(), Want::Kind(ErrorKind::InvalidInput), None),
            ("ends in .", dot.clone(), opts.clone(), Want::Kind(ErrorKind::InvalidInput), Some(dot.clone())),
            ("ends in ..", dotdot.clone(), opts.clone(), Want::Kind(ErrorKind::InvalidInput), Some(dotdot.clone())),
            ("reserved name", reserved.clone(), opts.clone(), Want::Kind(ErrorKind::InvalidInput), Some(reserved)),
            (
                "malformed digest",
                store.join("l"),
                opts.clone().expect_diff_id("sha256:xyz"),
                Want::Kind(ErrorKind::InvalidInput),
                Some(store.join("l")),
            ),
            (
                "digest of another kind",
                store.join("l"),
                opts.clone().expect_diff_id(format!("md5:{}", "0".repeat(32))),
                Want::Kind(ErrorKind::InvalidInput),
                Some(store.join("l")),
            ),
            ("missing lower", store.join("l"), opts.clone().parent(store.join("nope")), Want::Errno(ENOENT), None),
            ("file as lower", store.join("l"), opts.clone().parent(store.join("afile")), Want::Errno(ENOTDIR), None),
            ("looping lower", store.join("l"), opts.clone().parent(store.join("loop1")), Want::Errno(ELOOP), None),
        ];
        for (what, dest, o, want, path) in cases {
            check(what, apply(&blob[..], &dest, &o), want, path.as_deref());
            assert_eq!(state(scratch), before, "{what}: nothing written");
        }
        // Archives that are not archives: refused, and nothing left (the staging directory came and went).
        let mut truncated = tar_of(&[E::File("f", &*"x".repeat(5000).leak())]);
        truncated.truncate(1500);
        let mut bad_gzip = vec![0x1f, 0x8b, 8, 0];
        bad_gzip.extend_from_slice(&[0xff; 64]);
        for (what, bytes) in [("random bytes", vec![0x5au8; 2048]), ("truncated", truncated), ("bad gzip", bad_gzip)] {
            let r = apply(&bytes[..], store.join("l"), &opts);
            check(what, r, Want::Kind(ErrorKind::InvalidLayer(LayerProblem::Corrupt)), Some(&store.join("l")));
            assert_eq!(state(scratch).0, before.0, "{what}: nothing left");
        }
        // Not bad: a non-UTF-8 name, duplicate lowers.
        let odd = store.join(OsStr::from_bytes(b"layer-\xff"));
        apply(&blob[..], &odd, &opts.clone().parent(store.join("base")).parent(store.join("base"))).unwrap();
        verify(&odd).unwrap();
    });
}

#[test]
fn verify_and_recover_refuse_bad_input() {
    privileged("verify_and_recover_refuse_bad_input", |scratch| {
        let store = store(scratch);
        let before = state(scratch);
        let dot = PathBuf::from(format!("{}/base/.", store.display()));
        let missing = Want::Kind(ErrorKind::InvalidLayer(LayerProblem::MissingMarker));
        let cases: Vec<(&str, PathBuf, Want)> = vec![
            ("missing", store.join("nope"), missing),
            ("no marker", store.join("afile"), missing),
            ("garbled marker", store.join("garbled"), Want::Kind(ErrorKind::InvalidLayer(LayerProblem::BadMarker))),
            ("a file with a marker", store.join("file-layer"), Want::Errno(ENOTDIR)),
            ("symlink loop", store.join("loop1"), missing),
            ("overlong name", store.join(overlong_name()), Want::Errno(ENAMETOOLONG)),
            ("overlong path", overlong_path(&store), Want::Errno(ENAMETOOLONG)),
            ("ends in .", dot, Want::Kind(ErrorKind::InvalidInput)),
            ("root", PathBuf::from("/"), Want::Kind(ErrorKind::InvalidInput)),
        ];
        for (what, dir, want) in cases {
            check(&format!("verify {what}"), verify(&dir), want, Some(&dir));
            assert_eq!(state(scratch), before, "verify {what}");
        }
        let cases: Vec<(&str, PathBuf, i32)> = vec![
            ("missing", store.join("nope"), ENOENT),
            ("a file", store.join("afile"), ENOTDIR),
            ("symlink loop", store.join("loop1"), ELOOP),
            ("overlong", overlong_path(&store), ENAMETOOLONG),
            ("empty", PathBuf::new(), ENOENT),
        ];
        for (what, dir, errno) in cases {
            check(&format!("recover {what}"), recover(&dir), Want::Errno(errno), Some(&dir));
            assert_eq!(state(scratch), before, "recover {what}");
        }
    });
}

#[test]
fn remove_all_refuses_bad_input() {
    privileged("remove_all_refuses_bad_input", |scratch| {
        let store = store(scratch);
        let m = scratch.join("mnt");
        fs::create_dir(&m).unwrap();
        common::mount_tmpfs(&m);
        fs::write(m.join("inside"), "i").unwrap();
        let before = state(scratch);
        let long = store.join(overlong_name());
        let cases: Vec<(String, Want)> = vec![
            (String::new(), Want::Kind(ErrorKind::InvalidInput)),
            ("/".into(), Want::Kind(ErrorKind::InvalidInput)),
            (".".into(), Want::Kind(ErrorKind::InvalidInput)),
            ("..".into(), Want::Kind(ErrorKind::InvalidInput)),
            (format!("{}/base/.", store.display()), Want::Kind(ErrorKind::InvalidInput)),
            (format!("{}/base/./", store.display()), Want::Kind(ErrorKind::InvalidInput)),
            (format!("{}/base/..", store.display()), Want::Kind(ErrorKind::InvalidInput)),
            (store.join("nope").display().to_string(), Want::Errno(ENOENT)),
            (store.join("afile/x").display().to_string(), Want::Errno(ENOTDIR)),
            (store.join("loop1/x").display().to_string(), Want::Errno(ELOOP)),
            (long.display().to_string(), Want::Errno(ENAMETOOLONG)),
            (overlong_path(&store).display().to_string(), Want::Errno(ENAMETOOLONG)),
            ("relative-and-missing".into(), Want::Errno(ENOENT)),
            (m.display().to_string(), Want::Kind(ErrorKind::MountBoundary)),
        ];
        for (path, want) in cases {
            check(&format!("remove_all {path:?}"), remove_all(&path), want, Some(Path::new(&path)));
            assert_eq!(state(scratch), before, "remove_all {path:?}");
        }
        common::umount(&m);
        // Not bad: a non-UTF-8 name, and a symlink loop (removed as the symlink it is).
        let odd = store.join(OsStr::from_bytes(b"odd-\xfe"));
        fs::create_dir_all(odd.join("d")).unwrap();
        remove_all(&odd).unwrap();
        remove_all(store.join("loop1")).unwrap();
        assert!(!odd.exists() && fs::symlink_metadata(store.join("loop1")).is_err());
    });
}

#[test]
fn mount_table_entry_points_refuse_bad_input() {
    for line in [
        &b""[..],
        b"1",
        b"a 1 0:1 / / rw - tmpfs t rw",
        b"1 2 0:x / / rw - tmpfs t rw",
        b"1 2 3 / / rw - tmpfs t rw",
        b"1 2 0:1 / / rw shared:1 tmpfs t rw",
        b"1 2 0:1 / / rw -",
        b"1 2 0:1 / /",
        b"-1 2 0:1 / / rw - tmpfs t rw",
        b"99999999999999999999999 2 0:1 / / rw - tmpfs t rw",
    ] {
        let what = format!("parse_line {:?}", line.escape_ascii().to_string());
        check(&what, MountInfo::parse_line(line), Want::Kind(ErrorKind::InvalidInput), None);
    }
    let table = "22 1 0:21 / / rw - tmpfs t rw\ngarbage\n";
    check("parse", MountTable::parse(table), Want::Kind(ErrorKind::InvalidInput), None);
    // Bytes that are not UTF-8 are not bad input.
    let t = MountTable::parse(b"22 1 0:21 / /m\xff rw - tmpfs s\xfe rw\n").unwrap();
    assert_eq!(t.mounts()[0].mount_point.as_os_str().as_bytes(), b"/m\xff");

    privileged("mount_table_entry_points_refuse_bad_input", |scratch| {
        let store = store(scratch);
        let table = MountTable::current().unwrap();
        for (what, path, errno) in [
            ("missing", store.join("nope"), ENOENT),
            ("under a file", store.join("afile/x"), ENOTDIR),
            ("symlink loop", store.join("loop1/x"), ELOOP),
            ("overlong", overlong_path(&store), ENAMETOOLONG),
        ] {
            check(&format!("mount_of {what}"), table.mount_of(&path), Want::Errno(errno), Some(&path));
        }
    });
}

#[cfg(feature = "cli")]
mod cli {
    use std::process::Command;

    use super::*;

    /// Run `layermount ARGS`; on failure it must exit 1 with one line `layermount: OPERATION PATH: CAUSE`.
    fn fails(args: &[&OsStr], operation: &str, path: &Path, cause: &str) {
        let o = Command::new(env!("CARGO_BIN_EXE_layermount")).args(args).output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: one line: {err}");
        let want = format!("layermount: {operation} {}: ", path.display());
        assert!(err.starts_with(&want), "{args:?}: names operation and path ({want}): {err}");
        assert!(err.contains(cause), "{args:?}: names the cause ({cause}): {err}");
        assert!(o.stdout.is_empty(), "{args:?}: nothing on stdout");
    }

    #[test]
    fn subcommands_refuse_bad_input_with_one_line_and_exit_1() {
        privileged("subcommands_refuse_bad_input_with_one_line_and_exit_1", |scratch| {
            let store = store(scratch);
            let blob = scratch.join("layer.tar");
            fs::write(&blob, tar_of(&[E::File("x", "x")])).unwrap();
            let junk = scratch.join("junk.tar");
            fs::write(&junk, vec![0x5au8; 2048]).unwrap();
            let before = state(scratch);
            let s = |p: &Path| p.as_os_str().to_owned();
            let apply_ = OsStr::new("apply");
            let cases: Vec<(Vec<std::ffi::OsString>, &str, PathBuf, &str)> = vec![
                (
                    vec![apply_.into(), s(&store.join("nope.tar")), s(&store.join("l"))],
                    "apply layer",
                    store.join("nope.tar"),
                    "No such file",
                ),
                (
                    vec![apply_.into(), s(&blob), s(&store.join("missing/l"))],
                    "apply layer",
                    store.join("missing"),
                    "No such file",
                ),
                (
                    vec![apply_.into(), s(&blob), s(&store.join("afile/l"))],
                    "apply layer",
                    store.join("afile"),
                    "Not a directory",
                ),
                (
                    vec![apply_.into(), s(&blob), s(&store.join("base"))],
                    "apply layer",
                    store.join("base"),
                    "destination already exists",
                ),
                (
                    vec![apply_.into(), s(&blob), s(&store.join(overlong_name()))],
                    "apply layer",
                    store.join(overlong_name()),
                    "File name too long",
                ),
                (
                    vec![apply_.into(), s(&blob), s(&store.join(".x.partial-1-1"))],
                    "apply layer",
                    store.join(".x.partial-1-1"),
                    "recover",
                ),
                (
                    vec![apply_.into(), "--digest".into(), "sha256:xyz".into(), s(&blob), s(&store.join("l"))],
                    "apply layer",
                    store.join("l"),
                    "sha256:xyz",
                ),
                (
                    vec![apply_.into(), "--parent".into(), s(&store.join("loop1")), s(&blob), s(&store.join("l"))],
                    "apply layer",
                    store.join("loop1"),
                    "Too many levels of symbolic links",
                ),
                (vec![apply_.into(), s(&junk), s(&store.join("l"))], "apply layer", store.join("l"), "corrupt archive"),
                (vec!["verify".into(), s(&store.join("nope"))], "verify layer", store.join("nope"), "no commit marker"),
                (
                    vec!["verify".into(), s(&store.join("garbled"))],
                    "verify layer",
                    store.join("garbled"),
                    "unreadable commit marker",
                ),
                (
                    vec!["verify".into(), s(&store.join("file-layer"))],
                    "verify layer",
                    store.join("file-layer"),
                    "Not a directory",
                ),
                (vec!["recover".into(), s(&store.join("nope"))], "recover layers", store.join("nope"), "No such file"),
                (
                    vec!["recover".into(), s(&store.join("afile"))],
                    "recover layers",
                    store.join("afile"),
                    "Not a directory",
                ),
                (
                    vec!["recover".into(), s(&store.join("loop1"))],
                    "recover layers",
                    store.join("loop1"),
                    "Too many levels",
                ),
                (vec!["rm".into(), s(&store.join("nope"))], "remove_all", store.join("nope"), "No such file"),
                (vec!["rm".into(), s(&store.join("afile/x"))], "remove_all", store.join("afile/x"), "Not a directory"),
                (vec!["rm".into(), s(&store.join("loop1/x"))], "remove_all", store.join("loop1/x"), "Too many levels"),
                (
                    vec!["rm".into(), format!("{}/base/.", store.display()).into()],
                    "remove_all",
                    PathBuf::from(format!("{}/base/.", store.display())),
                    "not /, . or ..",
                ),
                (
                    vec!["rm".into(), s(&store.join(OsStr::from_bytes(b"no-such-\xff")))],
                    "remove_all",
                    store.join(OsStr::from_bytes(b"no-such-\xff")),
                    "No such file",
                ),
            ];
            for (args, operation, path, cause) in cases {
                let args: Vec<&OsStr> = args.iter().map(|a| a.as_os_str()).collect();
                fails(&args, operation, &path, cause);
                assert_eq!(state(scratch).0, before.0, "{args:?}: nothing written or deleted");
            }
            // Early refusals touch nothing at all, not even a directory's mtime.
            assert_eq!(state(scratch).1.len(), before.1.len());
        });
    }
}
