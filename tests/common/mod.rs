//! Shared helpers for privileged tests: a private mount namespace on a private tmpfs, and the mount-leak check.
//!
//! Every privileged test calls [`privileged`]: it runs the test body in a new thread that unshares its mount
//! namespace, makes `/` recursively private and mounts a tmpfs on a fresh directory. After the body, the helper
//! asserts that the thread's mount table is exactly as before (nothing leaked), unmounts the tmpfs, removes the
//! (empty) directory, and checks that the host's mount table did not change either.
#![allow(dead_code)]
// `unshare(CLONE_NEWNS | CLONE_FS)` is `unsafe` in rustix because it changes what other threads sharing the
// fs_struct observe; here it runs in a thread made for the purpose, which shares nothing.
#![allow(unsafe_code)]

use std::path::{Path, PathBuf};

pub mod archive;
pub mod loopfs;

use layermount::MountTable;
use rustix::mount::{MountFlags, MountPropagationFlags, UnmountFlags};
use rustix::thread::UnshareFlags;

/// True when this process may mount. Without it: with `LAYERMOUNT_REQUIRE_ROOT=1` this panics (CI must run every
/// privileged test); otherwise it prints one line and the caller returns early (skips).
pub fn have_privilege(name: &str) -> bool {
    let ok = caps::has_cap(None, caps::CapSet::Effective, caps::Capability::CAP_SYS_ADMIN).unwrap_or(false);
    if !ok {
        if std::env::var("LAYERMOUNT_REQUIRE_ROOT").as_deref() == Ok("1") {
            panic!("{name}: needs CAP_SYS_ADMIN (root) and LAYERMOUNT_REQUIRE_ROOT=1 forbids skipping");
        }
        // Seen even when the test "passes"; once per name (property tests ask once per case).
        skip(name, "needs root (CAP_SYS_ADMIN)");
    }
    ok
}

/// Mount a fresh tmpfs at `dir` (plain `mount(2)`, independent of the code under test).
pub fn mount_tmpfs(dir: &Path) {
    rustix::mount::mount("tmpfs", dir, "tmpfs", MountFlags::empty(), c"size=256m,mode=0755").expect("mount tmpfs");
}

/// Bind-mount `src` on `dst` (plain `mount(2)`).
pub fn bind(src: &Path, dst: &Path) {
    rustix::mount::mount_bind(src, dst).expect("bind mount");
}

/// Detach-unmount `dir` (plain `umount2(2)`).
pub fn umount(dir: &Path) {
    rustix::mount::unmount(dir, UnmountFlags::DETACH).expect("umount");
}

/// Whether tmpfs can do on this kernel what tests ask of their scratch space: idmapped mounts (Linux 6.3) and
/// `user.*` extended attributes (6.6), as the probe finds. Where it cannot, scratch space is a directory of the
/// temporary directory's filesystem (`TMPDIR`: ext4 in `.ci/qemu/run-kernel`) bind-mounted on itself.
pub fn tmpfs_can_scratch() -> bool {
    let f = layermount::Features::get();
    f.idmap_tmpfs && f.tmpfs_user_xattrs
}

/// Whether idmapped mounts can be made of `scratch`'s filesystem (the probe asked on that very directory); says
/// why not on one line, naming the feature, when they cannot.
pub fn scratch_idmaps(name: &str, scratch: &Path) -> bool {
    let yes = layermount::idmap_supported(scratch).unwrap_or(false);
    if !yes {
        skip(name, "the scratch filesystem cannot be idmapped (idmap_supported is false)");
    }
    yes
}

/// Print `skipping NAME: WHY` once per name, straight to fd 2 (past the harness's capture).
pub fn skip(name: &str, why: &str) {
    static SAID: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let mut said = SAID.lock().unwrap_or_else(|p| p.into_inner());
    if !said.iter().any(|n| n == name) {
        said.push(name.to_string());
        use std::io::Write;
        let _ = writeln!(std::io::stderr(), "skipping {name}: {why}");
    }
}

/// The probe feature (as `layermount probe` names it) that the overlay strategy `s` needs.
pub fn strategy_feature(s: layermount::Strategy) -> &'static str {
    match s {
        layermount::Strategy::DetachedFds => "overlay_detached_layers",
        layermount::Strategy::AttachedFds => "overlay_lowerdir_fd",
        layermount::Strategy::Strings => "overlay_lowerdir_plus",
        layermount::Strategy::Legacy => "overlay",
    }
}

/// Why a test of strategy `s` is skipped: the feature it needs, named.
pub fn lacks_strategy(s: layermount::Strategy) -> String {
    format!("the kernel lacks {} (strategy {s})", strategy_feature(s))
}

/// True when the running kernel has the overlay strategy `level` (the probe's best, or below it); otherwise prints
/// one skip line, `name/level`, naming the feature it lacks.
pub fn has_strategy(name: &str, level: layermount::Strategy) -> bool {
    let here = level <= layermount::Features::get().strategy();
    if !here {
        skip(&format!("{name}/{level}"), &lacks_strategy(level));
    }
    here
}

/// True when the running kernel has `feature` (a [`layermount::Features`] flag, named as `layermount probe` names
/// it); otherwise prints one skip line naming it.
pub fn has_feature(name: &str, feature: &str) -> bool {
    let yes = layermount::Features::get().list().iter().any(|(n, v)| *n == feature && *v);
    if !yes {
        skip(name, &format!("the kernel lacks {feature}"));
    }
    yes
}

/// Run `body(scratch)` as root in a private mount namespace with a private tmpfs at `scratch`; skip (or fail, under
/// `LAYERMOUNT_REQUIRE_ROOT=1`) without privilege. Panics in the body propagate; a leaked mount fails the test.
pub fn privileged(name: &str, body: impl FnOnce(&Path) + Send + 'static) {
    if !have_privilege(name) {
        return;
    }
    let host_before = MountTable::current().expect("read host mount table");
    let name_owned = name.to_string();
    let result = std::thread::spawn(move || {
        // SAFETY: see the module comment; this thread shares its fs_struct with no one after the call.
        unsafe { rustix::thread::unshare_unsafe(UnshareFlags::NEWNS | UnshareFlags::FS) }.expect("unshare");
        rustix::mount::mount_change("/", MountPropagationFlags::PRIVATE | MountPropagationFlags::REC)
            .expect("make / rprivate");
        let dir: PathBuf = tempfile::Builder::new().prefix("layermount-test-").tempdir().expect("tempdir").keep();
        let on_tmpfs = tmpfs_can_scratch();
        if on_tmpfs {
            mount_tmpfs(&dir);
        } else {
            bind(&dir, &dir);
        }
        let before = MountTable::current().expect("read mount table");
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| body(&dir)));
        let leaked = MountTable::current().expect("read mount table").changes_since(&before);
        umount(&dir);
        if on_tmpfs {
            rustix::fs::rmdir(&dir).expect("remove scratch dir");
        } else {
            // Unmounted above, and removal stops at any mount the body left: nothing beneath a mount is deleted.
            layermount::remove_all(&dir).expect("remove scratch dir");
        }
        if let Err(p) = outcome {
            std::panic::resume_unwind(p);
        }
        assert!(leaked.is_empty(), "{name_owned}: mounts leaked: {leaked}");
    })
    .join();
    if let Err(p) = result {
        std::panic::resume_unwind(p);
    }
    let host_changes = MountTable::current().expect("read host mount table").changes_since(&host_before);
    assert!(host_changes.is_empty(), "{name}: host mount table changed: {host_changes}");
}

/// Print one line straight to fd 2, past the test harness's capture, so that figures (cycles, kills) and skips
/// show in CI logs of passing tests too.
pub fn say(line: impl std::fmt::Display) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// Number of open fds of this process.
pub fn fd_count() -> usize {
    std::fs::read_dir("/proc/self/fd").expect("read /proc/self/fd").count()
}

/// Pids of this process's children (of every thread), from `/proc/self/task/*/children`.
pub fn children() -> Vec<u32> {
    let mut out = Vec::new();
    for task in std::fs::read_dir("/proc/self/task").expect("read tasks").flatten() {
        if let Ok(text) = std::fs::read_to_string(task.path().join("children")) {
            out.extend(text.split_whitespace().filter_map(|p| p.parse::<u32>().ok()));
        }
    }
    out
}

/// Pids of the calling thread's children (`/proc/thread-self/children`): what a test spawned itself, whatever other
/// tests running beside it in the same process have spawned.
pub fn thread_children() -> Vec<u32> {
    let text = std::fs::read_to_string("/proc/thread-self/children").unwrap_or_default();
    text.split_whitespace().filter_map(|p| p.parse::<u32>().ok()).collect()
}

/// Owner `(uid, gid)` of `path` as seen through the caller's view (no symlink following).
pub fn owner(path: &Path) -> (u32, u32) {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::symlink_metadata(path).unwrap_or_else(|e| panic!("stat {}: {e}", path.display()));
    (m.uid(), m.gid())
}

/// Set the owner of `path` (not following symlinks).
pub fn chown(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid)).expect("chown");
}
