//! The live overlays of the calling thread's mount namespace, and the upper and work directories they hold: a new
//! overlay must not take one of those (the kernel marks them "in use" and, without `index=on`, mounts a second
//! overlay over them with only a warning in its log).
//!
//! This is read on every compose, so it is made cheap where the kernel allows: from Linux 6.11 (`listmount(2)` and
//! `statmount(2)` with the filesystem's options) the namespace's mounts are listed by their never-reused ids and
//! each id is looked at once in the process's life (is it an overlay; if so, which upper and work): a compose then
//! costs one `listmount` (about 40 ns per mount in the namespace, 2 µs for 22) instead of the kernel formatting
//! every mount's `mountinfo` line (about 1.07 µs each), which is what older kernels (or a seccomp filter refusing
//! the calls) still pay.
//!
//! Overlays this process made with `Overlay::mount` and still holds detached are in no mount table: their upper and
//! work are recorded ([`Held`]) while their tree lives, and refused the same way.

use std::collections::HashMap;
use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use rustix::fs::{AtFlags, CWD, StatxFlags};

use super::layers::{Role, overlay_error};
use crate::error::{OverlayProblem, Result};
use crate::features::Features;
use crate::mountinfo::{
    self, OVERLAYFS_SUPER_MAGIC, STATMOUNT_MNT_BASIC, STATMOUNT_MNT_OPTS, STATMOUNT_MNT_POINT, STATMOUNT_SB_BASIC,
};

/// One live overlay: its `mountinfo` id, where it is mounted, and its upper and work directories as
/// `(key, path, identity)`: `(device, inode)`, or `None` for a path that led to no directory when the overlay was
/// first seen (renamed away for the moment, or inside a mount the path cannot reach): its text is compared then.
#[derive(Debug)]
pub(crate) struct LiveOverlay {
    mount_id: u64,
    mount_point: PathBuf,
    dirs: Vec<(&'static str, PathBuf, Option<DirId>)>,
}

/// A directory's `(device, inode)`.
type DirId = ((u32, u32), u64);

impl LiveOverlay {
    /// The overlay with these options, if it shows an upper or work directory.
    fn new(mount_id: u64, mount_point: PathBuf, option: impl Fn(&str) -> Option<PathBuf>) -> Option<Arc<Self>> {
        const WANT: StatxFlags = StatxFlags::TYPE.union(StatxFlags::INO);
        let mut dirs = Vec::new();
        for key in ["upperdir", "workdir"] {
            let Some(shown) = option(key).filter(|p| p.is_absolute()) else { continue };
            // Overlay keeps the backslash escapes of an upper or work given as a string (`\\` for a backslash, `\,`
            // for a comma) in the path it shows; one given as an fd shows as it is. Both names are tried, and both
            // kept when both lead to a directory (a name that differs only in escapes cannot tell which it is).
            let names: Vec<_> = [Some(shown.clone()), unescape_overlay(&shown)].into_iter().flatten().collect();
            let before = dirs.len();
            for d in &names {
                if let Ok(st) = rustix::fs::statx(CWD, d, AtFlags::empty(), WANT) {
                    let id = Some(((st.stx_dev_major, st.stx_dev_minor), st.stx_ino));
                    if !dirs[before..].iter().any(|(_, _, known)| *known == id) {
                        dirs.push((key, d.clone(), id));
                    }
                }
            }
            if dirs.len() == before {
                dirs.extend(names.into_iter().map(|d| (key, d, None)));
            }
        }
        (!dirs.is_empty()).then(|| Arc::new(Self { mount_id, mount_point, dirs }))
    }
}

/// `path` without overlay's backslash escapes (`\x` is `x`), if it has any.
fn unescape_overlay(path: &Path) -> Option<PathBuf> {
    let bytes = path.as_os_str().as_bytes();
    if !bytes.contains(&b'\\') {
        return None;
    }
    crate::options::unescape(bytes).ok().map(|plain| PathBuf::from(OsString::from_vec(plain)))
}

/// The upper and work directories of the live overlays of this mount namespace, identified by `statx`.
pub(crate) struct LiveDirs {
    overlays: Vec<Arc<LiveOverlay>>,
}

/// What `listmount` showed last, and what each mount id seen is (`None`: not an overlay with an upper), with the
/// read that last showed it. Mount ids from `listmount` are never reused, so what is known of one stays true while
/// the mount lives.
struct Known {
    ids: Vec<u64>,
    mounts: HashMap<u64, (u64, Option<Arc<LiveOverlay>>)>,
    /// Reads so far.
    reads: u64,
    /// Forget what is not listed any more once `mounts` is this large.
    prune_at: usize,
}

/// A mount not listed in this many reads is forgotten (at the next prune). Threads of the process in other mount
/// namespaces see other mounts: those are kept while some thread still reads them, so that namespaces taking turns
/// do not look at each other's mounts again and again.
const KEEP_UNSEEN: u64 = 256;

static KNOWN: Mutex<Option<Known>> = Mutex::new(None);

/// The upper and work directories of overlays this process made and still holds detached (`Overlay::mount`): no
/// mount table shows those, so they are recorded here while their tree lives, by the tree's token.
static HELD: Mutex<Vec<(u64, &'static str, PathBuf, DirId)>> = Mutex::new(Vec::new());

/// The mount id of the pseudo overlay of held directories (no mount has id 0).
const HELD_ID: u64 = 0;

/// While this lives (inside the `DetachedTree` of an overlay with an upper), the in-use check refuses that overlay's
/// upper and work directories as it refuses those of a mounted overlay.
#[derive(Debug)]
pub(crate) struct Held(u64);

impl Held {
    /// Record `dirs` (`key`, path, identity) as held detached by this process.
    pub(crate) fn new(dirs: impl IntoIterator<Item = (&'static str, PathBuf, DirId)>) -> Held {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let token = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut held = HELD.lock().unwrap_or_else(PoisonError::into_inner);
        held.extend(dirs.into_iter().map(|(key, path, id)| (token, key, path, id)));
        Held(token)
    }

    /// The directories held now, as one pseudo overlay "held detached by this process".
    fn all() -> Option<Arc<LiveOverlay>> {
        let held = HELD.lock().unwrap_or_else(PoisonError::into_inner);
        let dirs: Vec<_> = held.iter().map(|(_, key, path, id)| (*key, path.clone(), Some(*id))).collect();
        (!dirs.is_empty()).then(|| Arc::new(LiveOverlay { mount_id: HELD_ID, mount_point: PathBuf::new(), dirs }))
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        HELD.lock().unwrap_or_else(PoisonError::into_inner).retain(|(token, ..)| *token != self.0);
    }
}

impl LiveDirs {
    /// `None` when there is no live overlay directory to compare with (or no mount table to read).
    pub(crate) fn read(features: &Features) -> Option<LiveDirs> {
        let mounted = match features.statmount_options.then(Self::listed).flatten() {
            Some(listed) => listed,
            None => Self::from_mountinfo(),
        };
        match (mounted, Held::all()) {
            (Some(mut live), Some(held)) => {
                live.overlays.push(held);
                Some(live)
            }
            (None, Some(held)) => Some(LiveDirs { overlays: vec![held] }),
            (mounted, None) => mounted,
        }
    }

    /// Through `listmount`/`statmount`; `None` when the kernel (or a seccomp filter) refuses them, or does not show
    /// an overlay's options, so that the caller reads `mountinfo` instead.
    fn listed() -> Option<Option<LiveDirs>> {
        let mut known = KNOWN.lock().unwrap_or_else(PoisonError::into_inner);
        let Known { ids, mounts, reads, prune_at } =
            known.get_or_insert_with(|| Known { ids: Vec::new(), mounts: HashMap::new(), reads: 0, prune_at: 64 });
        mountinfo::list_mounts(ids).ok()?;
        *reads += 1;
        let mut overlays = Vec::new();
        for id in ids.iter() {
            let overlay = match mounts.get_mut(id) {
                Some((seen, o)) => {
                    *seen = *reads;
                    o.clone()
                }
                None => {
                    let o = Self::look_at(*id)?;
                    mounts.insert(*id, (*reads, o.clone()));
                    o
                }
            };
            overlays.extend(overlay);
        }
        // Forget unmounted ones (and those of namespaces no thread reads any more) once they outnumber the rest.
        if mounts.len() > *prune_at {
            mounts.retain(|_, (seen, _)| *reads - *seen < KEEP_UNSEEN);
            *prune_at = 2 * mounts.len() + 64;
        }
        Some((!overlays.is_empty()).then_some(LiveDirs { overlays }))
    }

    /// The mount `id`: `Some(None)` when it is not an overlay with an upper (or is gone), `None` when its options
    /// cannot be had from `statmount` (nothing is then remembered of it).
    fn look_at(id: u64) -> Option<Option<Arc<LiveOverlay>>> {
        #[cfg(test)]
        LOOKS.with(|l| l.set(l.get() + 1));
        let stat = |mask| match mountinfo::statmount(id, mask) {
            Ok(s) => Some(Some(s)),
            Err(rustix::io::Errno::NOENT) => Some(None),
            Err(_) => None,
        };
        let Some(basic) = stat(STATMOUNT_SB_BASIC)? else { return Some(None) };
        if basic.sb_magic != OVERLAYFS_SUPER_MAGIC {
            return Some(None);
        }
        let Some(full) = stat(STATMOUNT_MNT_BASIC | STATMOUNT_MNT_POINT | STATMOUNT_MNT_OPTS)? else {
            return Some(None);
        };
        let opts = full.opts?;
        let point = full.mnt_point.map(|p| PathBuf::from(OsString::from_vec(p)));
        Some(LiveOverlay::new(u64::from(full.mnt_id_old), point.unwrap_or_default(), |key| {
            mountinfo::option_value(&opts, key)
        }))
    }

    /// Through `/proc/thread-self/mountinfo`, read at once; only overlay lines are parsed.
    fn from_mountinfo() -> Option<LiveDirs> {
        use std::io::Read;
        let mut text = Vec::with_capacity(64 * 1024);
        std::fs::File::open("/proc/thread-self/mountinfo").ok()?.read_to_end(&mut text).ok()?;
        let overlays: Vec<_> = text
            .split(|&b| b == b'\n')
            .filter(|l| l.windows(11).any(|w| w == b" - overlay "))
            .filter_map(|line| {
                let m = crate::mountinfo::MountInfo::parse_line(line).ok()?;
                // The super options as the kernel wrote them (escapes not yet decoded): split at its commas.
                let after = line.windows(3).position(|w| w == b" - ")? + 3;
                let opts = line[after..].splitn(3, |&b| b == b' ').nth(2)?;
                LiveOverlay::new(m.mount_id, m.mount_point, |key| mountinfo::option_value(opts, key))
            })
            .collect();
        (!overlays.is_empty()).then_some(LiveDirs { overlays })
    }

    /// Refuse the directory `(dev, ino)` at `path` (its text; `real` tells where it really leads) if it is, or lies
    /// inside, a live overlay's upper or work directory.
    pub(crate) fn check(
        &self,
        role: Role,
        given: &Path,
        id: DirId,
        path: Option<&Path>,
        real: impl Fn() -> Option<PathBuf>,
    ) -> Result<()> {
        for m in &self.overlays {
            for (key, dir, known) in &m.dirs {
                let same = *known == Some(id);
                // Inside: the path's text says so, and where it really leads confirms it (a symlink could lead out).
                // A directory not identified when first seen is found here by its text alone.
                let place = match same || !path.is_none_or(|p| p.starts_with(dir)) {
                    true => None,
                    false => match (real(), std::fs::canonicalize(dir)) {
                        (Some(real), Ok(dir)) if real == dir => Some("already"),
                        (Some(real), Ok(dir)) if real.starts_with(&dir) => Some("inside"),
                        _ => None,
                    },
                };
                let inside = place.is_some();
                if same || inside {
                    let whose = match m.mount_id {
                        HELD_ID => "an overlay this process holds detached (not attached anywhere)".to_string(),
                        id => format!("the overlay mounted at {} (mount id {id})", m.mount_point.display()),
                    };
                    return Err(overlay_error(OverlayProblem::InUse, given).with_detail(format!(
                        "{} {} is {} the {key} of {whose}; the kernel would mount it with only a warning, and files \
                         seen through both mounts would be undefined",
                        role.name(),
                        given.display(),
                        place.unwrap_or("already"),
                    )));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
thread_local! {
    /// How many mount ids this thread looked at with `statmount` (tests count them).
    static LOOKS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_common as common;

    fn looks() -> u64 {
        LOOKS.with(|l| l.get())
    }

    /// Through `listmount`/`statmount` (no `mountinfo` fallback): a new overlay is found with its upper and work
    /// identified, each mount id is looked at once (a second read makes no `statmount`), and an unmounted overlay is
    /// no longer reported.
    #[test]
    fn live_overlays_are_listed_and_each_mount_looked_at_once() {
        if !Features::get().statmount_options {
            common::skip(
                "live_overlays_are_listed_and_each_mount_looked_at_once",
                "the kernel lacks statmount_options",
            );
            return;
        }
        common::privileged("live_overlays_are_listed_and_each_mount_looked_at_once", |scratch| {
            for d in ["l", "u", "w", "m"] {
                std::fs::create_dir(scratch.join(d)).unwrap();
            }
            let ours = |live: &Option<LiveDirs>| {
                live.iter().flat_map(|l| &l.overlays).find(|o| o.mount_point == scratch.join("m")).cloned()
            };
            let before = LiveDirs::listed().expect("listmount works here");
            assert!(ours(&before).is_none());
            let guard = crate::Overlay::new()
                .lower(scratch.join("l"))
                .upper(scratch.join("u"), scratch.join("w"))
                .mount_at(scratch.join("m"))
                .unwrap();
            let looked = looks();
            let live = LiveDirs::listed().expect("listmount works here");
            assert_eq!(looks() - looked, 1, "only the new mount is looked at");
            let o = ours(&live).expect("the new overlay is listed");
            let keys: Vec<_> = o.dirs.iter().map(|(k, d, _)| (*k, d.clone())).collect();
            assert_eq!(keys, [("upperdir", scratch.join("u")), ("workdir", scratch.join("w"))]);
            let st = std::fs::metadata(scratch.join("u")).unwrap();
            assert_eq!(o.dirs[0].2.map(|(_, ino)| ino), Some(std::os::unix::fs::MetadataExt::ino(&st)));
            let looked = looks();
            assert!(ours(&LiveDirs::listed().unwrap()).is_some());
            assert_eq!(looks(), looked, "known mounts are not looked at again");
            guard.unmount().unwrap();
            assert!(ours(&LiveDirs::listed().unwrap()).is_none(), "an unmounted overlay is gone");
        });
    }

    /// Threads of one process in two mount namespaces of different sizes take turns: each namespace's mounts stay
    /// known (the small one's reads do not forget the big one's mounts, which `listmount` does not show it).
    #[test]
    fn mounts_of_another_namespace_stay_known() {
        if !Features::get().statmount_options {
            common::skip("mounts_of_another_namespace_stay_known", "the kernel lacks statmount_options");
            return;
        }
        common::privileged("mounts_of_another_namespace_stay_known", |_| {
            let (ask, asked) = std::sync::mpsc::channel::<()>();
            let (tell, told) = std::sync::mpsc::channel::<()>();
            // Shares this (small) namespace.
            let small = std::thread::spawn(move || {
                for () in asked {
                    LiveDirs::listed().expect("listmount works here");
                    tell.send(()).unwrap();
                }
            });
            common::privileged("mounts_of_another_namespace_stay_known/big", move |scratch| {
                let dirs: Vec<_> = (0..150).map(|i| scratch.join(format!("t{i}"))).collect();
                for d in &dirs {
                    std::fs::create_dir(d).unwrap();
                    common::mount_tmpfs(d);
                }
                for round in 0..3 {
                    LiveDirs::listed().expect("listmount works here");
                    let looked = looks();
                    ask.send(()).unwrap();
                    told.recv().unwrap();
                    LiveDirs::listed().expect("listmount works here");
                    assert_eq!(looks(), looked, "round {round}: the big namespace's mounts were looked at again");
                }
                for d in dirs.iter().rev() {
                    common::umount(d);
                }
            });
            small.join().unwrap();
        });
    }

    /// More mounts than one `listmount` call returns (600, where a call takes 256), and an overlay whose options are
    /// longer than the first `statmount` buffer (100 lower layers with 200-byte names: over 20 KB): the overlay,
    /// mounted last (its id is the highest), is found with its upper and work.
    #[test]
    fn an_overlay_past_many_mounts_with_long_options_is_found() {
        let name = "an_overlay_past_many_mounts_with_long_options_is_found";
        if !Features::get().statmount_options {
            common::skip(name, "statmount_options");
            return;
        }
        common::privileged(name, |scratch| {
            let dirs: Vec<_> = (0..600).map(|i| scratch.join(format!("t{i}"))).collect();
            for d in &dirs {
                std::fs::create_dir(d).unwrap();
                common::mount_tmpfs(d);
            }
            let lowers: Vec<_> = (0..100).map(|i| scratch.join(format!("{i:03}{}", "x".repeat(197)))).collect();
            for d in lowers.iter().chain([&scratch.join("u"), &scratch.join("w")]) {
                std::fs::create_dir(d).unwrap();
            }
            let guard = crate::Overlay::new()
                .lowers(&lowers)
                .upper(scratch.join("u"), scratch.join("w"))
                .mount_at(scratch.join("m"))
                .unwrap();
            let mut ids = Vec::new();
            mountinfo::list_mounts(&mut ids).unwrap();
            assert!(ids.len() > 600, "{} mounts listed", ids.len());
            let live = LiveDirs::listed().expect("listmount works here");
            let o = live.iter().flat_map(|l| &l.overlays).find(|o| o.mount_point == scratch.join("m"));
            let keys: Vec<_> = o.expect("the overlay is found").dirs.iter().map(|(k, d, _)| (*k, d.clone())).collect();
            assert_eq!(keys, [("upperdir", scratch.join("u")), ("workdir", scratch.join("w"))]);
            guard.unmount().unwrap();
            for d in dirs.iter().rev() {
                common::umount(d);
            }
        });
    }
}
