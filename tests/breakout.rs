//! Hostile archives: no entry, symlink, hardlink or whiteout writes or links outside the layer. A sentinel directory
//! beside the store must be byte-for-byte unchanged after every case, and a refused archive commits nothing.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use common::archive::{E, tar_of, tree};
use common::privileged;
use layermount::{ApplyOptions, ErrorKind, LayerProblem, SyncMode, apply};
use proptest::prelude::*;

/// A directory beside the store, with something of every kind an escape could touch: files with contents, modes,
/// owners, times and xattrs, a private directory, a symlink.
fn sentinel(scratch: &Path) -> std::path::PathBuf {
    let s = scratch.join("sentinel");
    fs::create_dir_all(s.join("etc")).unwrap();
    fs::write(s.join("etc/passwd"), "root:x:0:0").unwrap();
    fs::write(s.join("file"), "do not touch").unwrap();
    rustix::fs::setxattr(s.join("file"), "user.mark", b"m", rustix::fs::XattrFlags::empty()).unwrap();
    fs::create_dir(s.join("private")).unwrap();
    fs::set_permissions(s.join("private"), fs::Permissions::from_mode(0o700)).unwrap();
    common::chown(&s.join("private"), 1234, 5678);
    std::os::unix::fs::symlink("file", s.join("link")).unwrap();
    s
}

/// Everything a write, chmod, chown, utime, xattr or link through an escape could change under `root` (the root
/// included): inode, type and mode, owner, size, link count, mtime and ctime, xattrs, contents, link targets. Not
/// atime, which reading for the snapshot itself changes.
fn snapshot(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        let m = fs::symlink_metadata(&p).unwrap();
        let mut xattrs = vec![0u8; 4096];
        let n = rustix::fs::llistxattr(&p, &mut xattrs[..]).unwrap_or(0);
        let mut names: Vec<&[u8]> = xattrs[..n].split(|&b| b == 0).filter(|k| !k.is_empty()).collect();
        names.sort();
        let mut x = String::new();
        for k in names {
            let mut v = vec![0u8; 4096];
            let len = rustix::fs::lgetxattr(&p, std::ffi::OsStr::new(std::str::from_utf8(k).unwrap()), &mut v[..]);
            x += &format!("{}={:?};", String::from_utf8_lossy(k), &v[..len.unwrap_or(0)]);
        }
        let content = if m.is_dir() {
            let mut children: Vec<_> = fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()).collect();
            children.sort();
            stack.extend(children);
            String::new()
        } else if m.file_type().is_symlink() {
            fs::read_link(&p).unwrap().display().to_string()
        } else if m.is_file() {
            String::from_utf8_lossy(&fs::read(&p).unwrap()).into_owned()
        } else {
            String::new()
        };
        let info = format!(
            "ino={} mode={:o} owner={}:{} size={} nlink={} mtime={}.{} ctime={}.{} xattrs={x} {content}",
            m.ino(),
            m.mode(),
            m.uid(),
            m.gid(),
            m.size(),
            m.nlink(),
            m.mtime(),
            m.mtime_nsec(),
            m.ctime(),
            m.ctime_nsec()
        );
        out.insert(p.display().to_string(), info);
    }
    out
}

/// The host's `/etc` as an escape would change it: the directory, every entry's metadata (not descending), and the
/// contents of the account files.
fn host_etc() -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let etc = Path::new("/etc");
    let mut entries: Vec<_> = fs::read_dir(etc).unwrap().map(|e| e.unwrap().path()).collect();
    entries.push(etc.to_path_buf());
    for p in entries {
        let Ok(m) = fs::symlink_metadata(&p) else { continue };
        let content = match p.file_name().and_then(|n| n.to_str()) {
            Some("passwd" | "shadow" | "group" | "hosts") => fs::read(&p).unwrap_or_default(),
            _ => Vec::new(),
        };
        let info = format!(
            "{} {:o} {}:{} {} {}.{} {:?}",
            m.ino(),
            m.mode(),
            m.uid(),
            m.gid(),
            m.nlink(),
            m.mtime(),
            m.mtime_nsec(),
            String::from_utf8_lossy(&content)
        );
        out.insert(p.display().to_string(), info);
    }
    out
}

/// Every inode of the layer is the layer's own: each directory is on the layer's mount (nothing mounted inside),
/// no entry is an inode of `outside` (the sentinel), and a file with several links has all of them in the layer (a
/// hardlink to a file outside would show as a link count the layer cannot account for).
fn all_inside(layer: &Path, outside: &Path) {
    let foreign: std::collections::HashSet<(u64, u64)> =
        snapshot(outside).keys().map(|p| fs::symlink_metadata(p).unwrap()).map(|m| (m.dev(), m.ino())).collect();
    let root_dev = fs::symlink_metadata(layer).unwrap().dev();
    let mut links: BTreeMap<(u64, u64), (u64, u64, String)> = BTreeMap::new();
    for path in tree(layer).keys() {
        let p = layer.join(path);
        let m = fs::symlink_metadata(&p).unwrap();
        assert!(!foreign.contains(&(m.dev(), m.ino())), "{} is an inode of the sentinel", p.display());
        if m.is_dir() {
            assert_eq!(m.dev(), root_dev, "{} is on another filesystem", p.display());
        } else {
            let e = links.entry((m.dev(), m.ino())).or_insert((m.nlink(), 0, path.clone()));
            e.1 += 1;
        }
    }
    for (nlink, seen, path) in links.values() {
        assert_eq!(nlink, seen, "{path}: {nlink} links, {seen} of them in the layer");
    }
}

/// Climb to `/` from anywhere in the scratch directory (more `..` than it is deep).
const UP: &str = "../../../../../../../../../../../../../../../../../../../../../../../../../../../../../../../..";

/// Put the sentinel's absolute path where an entry says "{S}", its path relative to a layer directory (and to a
/// staging directory: both sit in the store) where it says "{R}", and `..` enough to reach `/` where it says "{U}".
fn with_sentinel(entries: &[E], abs: &str) -> Vec<E> {
    let fill = |t: &str| -> &'static str {
        Box::leak(t.replace("{S}", abs).replace("{R}", "../../sentinel").replace("{U}", UP).into_boxed_str())
    };
    entries
        .iter()
        .map(|e| match e {
            E::Symlink(n, t) => E::Symlink(n, fill(t)),
            E::Hardlink(n, t) => E::Hardlink(n, fill(t)),
            E::File(n, d) => E::File(fill(n), d),
            other => other.clone(),
        })
        .collect()
}

/// The checks above can fail: every kind of change to the sentinel shows in its snapshot, and a hardlink or an
/// inode from outside fails `all_inside`.
#[test]
fn the_sentinel_and_containment_checks_see_escapes() {
    privileged("the_sentinel_and_containment_checks_see_escapes", |scratch| {
        let s = sentinel(scratch);
        type Change = Box<dyn Fn(&Path)>;
        let changes: [(&str, Change); 7] = [
            ("write", Box::new(|s| fs::write(s.join("file"), "do not touch").unwrap())),
            ("chmod", Box::new(|s| fs::set_permissions(s.join("file"), fs::Permissions::from_mode(0o600)).unwrap())),
            ("chown", Box::new(|s| common::chown(&s.join("etc/passwd"), 1, 1))),
            (
                "utime",
                Box::new(|s| fs::File::open(s.join("file")).unwrap().set_modified(std::time::UNIX_EPOCH).unwrap()),
            ),
            ("xattr", Box::new(|s| rustix::fs::setxattr(s, "user.x", b"1", rustix::fs::XattrFlags::empty()).unwrap())),
            ("link", Box::new(|s| fs::hard_link(s.join("file"), s.join("../hl")).unwrap())),
            ("create", Box::new(|s| fs::write(s.join("private/new"), "").unwrap())),
        ];
        for (what, change) in changes {
            let before = snapshot(&s);
            std::thread::sleep(std::time::Duration::from_millis(2));
            change(&s);
            assert_ne!(snapshot(&s), before, "{what} went unseen");
        }
        let layer = scratch.join("layer");
        fs::create_dir(&layer).unwrap();
        fs::write(layer.join("own"), "x").unwrap();
        all_inside(&layer, &s);
        fs::hard_link(scratch.join("hl"), layer.join("stolen")).unwrap();
        let caught = std::panic::catch_unwind(|| all_inside(&layer, &s));
        assert!(caught.is_err(), "a hardlink to a file outside went unseen");
    });
}

enum Want {
    /// Applies; these paths (in the layer) must hold these contents.
    Contained(&'static [(&'static str, &'static str)]),
    Refused(ErrorKind),
}

fn case(name: &str, base: &[E], top: &[E], want: Want) {
    let name = name.to_string();
    let (base, top) = (base.to_vec(), top.to_vec());
    privileged(&format!("breakout/{name}"), move |scratch| {
        let sentinel = sentinel(scratch);
        let abs = sentinel.display().to_string();
        let fix = |es: &[E]| tar_of(&with_sentinel(es, &abs));
        let before = snapshot(&sentinel);
        let etc_before = host_etc();
        let store = scratch.join("store");
        fs::create_dir(&store).unwrap();
        let opts = ApplyOptions::new().sync(SyncMode::None);
        apply(&fix(&base)[..], store.join("base"), &opts).unwrap();
        let result = apply(&fix(&top)[..], store.join("top"), &opts.clone().parent(store.join("base")));
        assert_eq!(snapshot(&sentinel), before, "{name}: the sentinel changed");
        assert_eq!(host_etc(), etc_before, "{name}: the host's /etc changed");
        match want {
            Want::Contained(files) => {
                result.unwrap_or_else(|e| panic!("{name}: {e}"));
                for (p, content) in files {
                    assert_eq!(fs::read_to_string(store.join("top").join(p)).unwrap(), *content, "{name}: {p}");
                }
                all_inside(&store.join("top"), &sentinel);
            }
            Want::Refused(kind) => {
                let err = result.unwrap_err();
                assert_eq!(err.kind(), kind, "{name}: {err}");
                assert!(!store.join("top").exists(), "{name}: nothing committed");
            }
        }
        let left: Vec<_> = fs::read_dir(&store).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert!(left.iter().all(|n| !n.to_string_lossy().contains("partial")), "{name}: {left:?}");
        all_inside(&store.join("base"), &sentinel);
    });
}

use E::*;

#[test]
fn absolute_names_are_contained() {
    case(
        "absolute",
        &[],
        &[File("/etc/passwd", "mine"), File("{S}/file", "mine too")],
        Want::Contained(&[("etc/passwd", "mine")]),
    );
}

#[test]
fn dotdot_names_are_refused() {
    case("dotdot", &[], &[File("../escape", "x")], Want::Refused(ErrorKind::Breakout));
    case("dotdot-deep", &[], &[Dir("a"), File("a/../../escape", "x")], Want::Refused(ErrorKind::Breakout));
    case("dotdot-dir", &[], &[Dir("../../sentinel-sibling")], Want::Refused(ErrorKind::Breakout));
}

#[test]
fn writing_through_a_symlink_stays_inside() {
    case(
        "relative-symlink",
        &[],
        &[Symlink("evil", "{R}"), File("evil/file", "p"), File("evil/etc/passwd", "q")],
        Want::Contained(&[("sentinel/file", "p"), ("sentinel/etc/passwd", "q")]),
    );
    case("absolute-symlink", &[], &[Symlink("evil", "{S}"), File("evil/file", "p")], Want::Contained(&[]));
    case(
        "symlink-then-file-of-same-name",
        &[],
        &[Symlink("x", "{S}/file"), File("x", "replaced")],
        Want::Contained(&[("x", "replaced")]),
    );
}

#[test]
fn two_hop_symlink_chains_stay_inside() {
    case(
        "two-hop",
        &[],
        &[Symlink("a", "b"), Symlink("b", "{U}{S}"), File("a/file", "p"), File("a/etc/passwd", "q")],
        Want::Contained(&[]),
    );
    case("loop", &[], &[Symlink("a", "b"), Symlink("b", "a"), File("a/file", "p")], Want::Refused(ErrorKind::Os));
}

#[test]
fn hardlinks_cannot_reach_outside() {
    case("hardlink-dotdot", &[], &[Hardlink("h", "../../sentinel/file")], Want::Refused(ErrorKind::Breakout));
    case(
        "hardlink-through-symlinked-dir",
        &[],
        &[Symlink("d", "{S}"), Hardlink("h", "d/file")],
        Want::Refused(ErrorKind::InvalidLayer(LayerProblem::HardlinkTarget)),
    );
    case(
        "hardlink-absolute",
        &[],
        &[Hardlink("h", "{S}/file")],
        Want::Refused(ErrorKind::InvalidLayer(LayerProblem::HardlinkTarget)),
    );
}

#[test]
fn lower_layer_symlinks_out_of_the_root_stay_inside() {
    case("lower-symlink-out", &[Symlink("out", "{U}{S}")], &[File("out/etc/passwd", "p")], Want::Contained(&[]));
    case("lower-symlink-abs", &[Symlink("out", "{S}")], &[File("out/new", "p")], Want::Contained(&[]));
}

#[test]
fn bad_whiteouts_are_refused() {
    case("wh-empty", &[], &[File(".wh.", "")], Want::Refused(ErrorKind::InvalidLayer(LayerProblem::BadWhiteout)));
    case("wh-dot", &[], &[File("d/.wh..", "")], Want::Refused(ErrorKind::InvalidLayer(LayerProblem::BadWhiteout)));
    case("wh-dotdot", &[], &[File(".wh...", "")], Want::Refused(ErrorKind::InvalidLayer(LayerProblem::BadWhiteout)));
    case(
        "wh-overlay-device",
        &[],
        &[E::Char("fake-whiteout", 0, 0)],
        Want::Refused(ErrorKind::InvalidLayer(LayerProblem::UnsupportedEntry)),
    );
}

/// Random archives made of hostile pieces never write outside and never panic.
fn hostile_entry() -> impl Strategy<Value = E> {
    let names = prop::sample::select(vec![
        "a",
        "b",
        "a/b",
        "/abs",
        "../x",
        "a/../../x",
        ".wh.a",
        ".wh..",
        "l",
        "l/x",
        "d/.wh..wh..opq",
        "./c",
    ]);
    let targets = prop::sample::select(vec![
        "/",
        "..",
        "../..",
        "a",
        "/tmp",
        "l",
        "b/../../..",
        "{S}",
        "{S}/file",
        "{R}",
        "{R}/file",
        "{U}{S}",
        "{U}etc",
    ]);
    prop_oneof![
        names.clone().prop_map(Dir),
        names.clone().prop_map(|n| File(n, "data")),
        (names.clone(), targets.clone()).prop_map(|(n, t)| Symlink(n, t)),
        (names, targets).prop_map(|(n, t)| Hardlink(n, t)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]
    #[test]
    fn random_hostile_archives_stay_inside(entries in prop::collection::vec(hostile_entry(), 1..10)) {
        if !common::have_privilege("random_hostile_archives_stay_inside") {
            return Ok(());
        }
        privileged("random_hostile_archives_stay_inside", move |scratch| {
            let sentinel = sentinel(scratch);
            let abs = sentinel.display().to_string();
            let fixed = with_sentinel(&entries, &abs);
            let before = snapshot(&sentinel);
            let dest = scratch.join("layer");
            if apply(&tar_of(&fixed)[..], &dest, &ApplyOptions::new().sync(SyncMode::None)).is_ok() {
                all_inside(&dest, &sentinel);
                layermount::verify(&dest).unwrap();
            } else {
                assert!(!dest.exists());
            }
            assert_eq!(snapshot(&sentinel), before);
        });
    }
}
