//! [`MountGuard`]: an attached mount that is detach-unmounted when dropped.

use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, CWD, StatxAttributes, StatxFlags};
use rustix::mount::UnmountFlags;

use crate::error::{Context, Error, ErrorKind, Result};
use crate::mountinfo::{MountIdentity, MountTable, mount_id_unique, mount_identity};

/// An attached mount that this guard owns. Dropping the guard detach-unmounts it (`umount2(MNT_DETACH |
/// UMOUNT_NOFOLLOW)`, which succeeds even while files inside are open: the mount leaves the tree at once and is
/// freed when the last user goes) and then removes the mount point with `rmdir` if, and only if, the guard
/// created it. Nothing is ever removed recursively.
///
/// Before unmounting, the guard checks that the mount at its path is still the one it attached (by mount id), so
/// it never unmounts a mount someone else stacked on top or moved into place.
///
/// Use [`unmount`](MountGuard::unmount) to see errors, [`leak`](MountGuard::leak) to keep the mount on purpose.
///
/// # Kernel
/// Any kernel for the unmount (`umount2` with `UMOUNT_NOFOLLOW`: 2.6.34); the same-mount check uses `statx`'s mount id
/// (5.8) and, from 6.8, the never-reused one (`STATX_MNT_ID_UNIQUE`).
///
/// ```no_run
/// let tree = layermount::DetachedTree::clone_path("/srv/data", false)?;
/// let guard = tree.attach("/mnt/data")?;
/// assert_eq!(guard.path(), std::path::Path::new("/mnt/data"));
/// drop(guard); // detached; /mnt/data removed if attach created it
/// # Ok::<(), layermount::Error>(())
/// ```
#[derive(Debug)]
#[must_use = "dropping the guard unmounts at once"]
pub struct MountGuard {
    target: PathBuf,
    identity: Option<MountIdentity>,
    created_dir: bool,
    armed: bool,
}

impl MountGuard {
    pub(crate) fn new(target: PathBuf, identity: Option<MountIdentity>, created_dir: bool) -> Self {
        Self { target, identity, created_dir, armed: true }
    }

    /// Take ownership of the mount attached at `target` (made by other means), so that it is unmounted when the
    /// guard drops. Its mount id is recorded now; the mount point itself is never removed. A path that is not a
    /// mount point is refused ([`ErrorKind::InvalidInput`]).
    ///
    /// # Errors
    /// [`ErrorKind::InvalidInput`] if `target` is not a mount point; [`ErrorKind::Os`] (or `PermissionDenied`) if it
    /// cannot be looked at (`statx`).
    ///
    /// # Kernel
    /// `statx` with `STATX_MNT_ID` (Linux 5.8); the never-reused mount id is recorded from 6.8.
    ///
    /// ```no_run
    /// let guard = layermount::MountGuard::adopt("/mnt/legacy")?;
    /// # Ok::<(), layermount::Error>(())
    /// ```
    pub fn adopt(target: impl AsRef<Path>) -> Result<Self> {
        let target = target.as_ref();
        let st = rustix::fs::statx(CWD, target, AtFlags::SYMLINK_NOFOLLOW, StatxFlags::MNT_ID)
            .op_path("adopt mount", target)?;
        let root = StatxAttributes::MOUNT_ROOT;
        if st.stx_attributes_mask.contains(root) && !st.stx_attributes.contains(root) {
            return Err(Error::new(ErrorKind::InvalidInput, "adopt mount")
                .with_path(target)
                .with_detail("not a mount point"));
        }
        let identity = mount_identity(CWD, target).op_path("adopt mount", target)?;
        debug_assert_eq!(identity.id, st.stx_mnt_id);
        Ok(Self::new(target.to_path_buf(), Some(identity), false))
    }

    /// Take ownership of the mount a [`MountRecord`] describes, made by this or another process (a shim, a daemon
    /// before it restarted), after checking that the mount at the record's target is still that very mount: the
    /// never-reused mount id (Linux 6.8) or else the mount id and the filesystem's device must match. The guard
    /// then removes the mount point too if the record says the crate made it.
    ///
    /// # Errors
    /// [`ErrorKind::Race`] if another mount is there now (the recorded one was unmounted, and maybe replaced), and
    /// nothing is unmounted; [`ErrorKind::Os`] if the target cannot be looked at.
    ///
    /// # Kernel
    /// `statx` with `STATX_MNT_ID` (5.8); the never-reused id from 6.8.
    ///
    /// ```no_run
    /// use layermount::{MountGuard, MountRecord};
    /// let bytes = std::fs::read("/run/ctr/rootfs.record")?;
    /// let record = MountRecord::decode(&bytes)?;
    /// MountGuard::adopt_record(&record)?.unmount()?; // detach, then rmdir if the crate made the mount point
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn adopt_record(record: &MountRecord) -> Result<Self> {
        const OP: &str = "adopt mount record";
        let now = mount_identity(CWD, &record.target).op_path(OP, &record.target)?;
        if !record.identity.same_mount(&now) {
            return Err(Error::new(ErrorKind::Race, OP).with_path(&record.target).with_detail(format!(
                "the mount here ({}) is not the recorded one ({})",
                now.describe(),
                record.identity.describe()
            )));
        }
        Ok(Self::new(record.target.clone(), Some(now), record.created_dir))
    }

    /// What another process needs to take this mount over later ([`MountGuard::adopt_record`]): the target, the
    /// mount's identity, and whether the crate made the mount point. `None` if the mount's id could not be read
    /// when it was attached (a kernel without `STATX_MNT_ID`).
    ///
    /// ```no_run
    /// let guard = layermount::DetachedTree::clone_path("/srv/data", false)?.attach("/run/data")?;
    /// let record = guard.record().expect("Linux 5.8+");
    /// std::fs::write("/run/data.record", record.encode())?;
    /// guard.leak(); // the record's holder unmounts it later
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn record(&self) -> Option<MountRecord> {
        Some(MountRecord { target: self.target.clone(), identity: self.identity?, created_dir: self.created_dir })
    }

    /// Where the mount is attached.
    ///
    /// ```no_run
    /// let guard = layermount::DetachedTree::clone_path("/srv/data", false)?.attach("/mnt/data")?;
    /// assert_eq!(guard.path(), std::path::Path::new("/mnt/data"));
    /// # Ok::<(), layermount::Error>(())
    /// ```
    pub fn path(&self) -> &Path {
        &self.target
    }

    /// The kernel's id of the mount (as in `mountinfo`), if it could be read when attached.
    ///
    /// ```no_run
    /// let guard = layermount::DetachedTree::clone_path("/srv/data", false)?.attach("/mnt/data")?;
    /// println!("mount {:?}", guard.mount_id());
    /// # Ok::<(), layermount::Error>(())
    /// ```
    pub fn mount_id(&self) -> Option<u64> {
        self.identity.map(|i| i.id)
    }

    /// Detach-unmount now and report what went wrong, instead of dropping the guard (which cannot).
    ///
    /// # Errors
    /// * [`ErrorKind::Race`]: the mount at the path is no longer the one this guard attached (it was unmounted, or
    ///   another was mounted over it); nothing is unmounted.
    /// * [`ErrorKind::Os`] or [`ErrorKind::PermissionDenied`]: `umount2` failed, or the mount point the guard made could
    ///   not be removed with `rmdir` (something was created in it after the unmount); the mount is gone either way.
    ///
    /// # Kernel
    /// Any (`umount2(MNT_DETACH | UMOUNT_NOFOLLOW)`); the same-mount check needs `statx`'s mount id (5.8).
    ///
    /// ```no_run
    /// let guard = layermount::DetachedTree::clone_path("/srv/data", false)?.attach("/mnt/data")?;
    /// guard.unmount()?;
    /// # Ok::<(), layermount::Error>(())
    /// ```
    #[doc(alias = "umount2")]
    pub fn unmount(mut self) -> Result<()> {
        self.armed = false;
        self.do_unmount()
    }

    fn do_unmount(&self) -> Result<()> {
        const OP: &str = "unmount";
        if let Some(expected) = &self.identity {
            // One `statx` where the never-reused id decides; the whole identity only to explain a mismatch.
            let unique = match expected.unique {
                Some(_) => mount_id_unique(CWD, &self.target).op_path(OP, &self.target)?,
                None => None,
            };
            let same = unique.is_some() && unique == expected.unique;
            let now = match same {
                true => *expected,
                false => mount_identity(CWD, &self.target).op_path(OP, &self.target)?,
            };
            if !expected.same_mount(&now) {
                return Err(Error::new(ErrorKind::Race, OP).with_path(&self.target).with_detail(format!(
                    "the mount here ({}) is not the one this guard attached ({})",
                    now.describe(),
                    expected.describe()
                )));
            }
        }
        rustix::mount::unmount(&self.target, UnmountFlags::DETACH | UnmountFlags::NOFOLLOW)
            .op_path(OP, &self.target)?;
        if self.created_dir {
            rustix::fs::rmdir(&self.target).op_path("remove mount point", &self.target)?;
        }
        Ok(())
    }

    /// Keep the mount attached for good and return its path; the guard does nothing more.
    ///
    /// ```no_run
    /// let guard = layermount::DetachedTree::clone_path("/srv/data", false)?.attach("/mnt/data")?;
    /// let path = guard.leak(); // stays mounted after we exit
    /// # Ok::<(), layermount::Error>(())
    /// ```
    pub fn leak(mut self) -> PathBuf {
        self.armed = false;
        std::mem::take(&mut self.target)
    }
}

impl Drop for MountGuard {
    fn drop(&mut self) {
        if self.armed {
            // Errors cannot be returned from drop; `unmount()` is the way to see them.
            let _ = self.do_unmount();
        }
    }
}

impl MountIdentity {
    /// Never-reused ids decide when both sides have one; otherwise the reusable id and the device together.
    fn same_mount(&self, now: &MountIdentity) -> bool {
        match (self.unique, now.unique) {
            (Some(a), Some(b)) => a == b,
            _ => self.id == now.id && self.device == now.device,
        }
    }

    fn describe(&self) -> String {
        match self.unique {
            Some(u) => format!("mount id {} (unique {u}), device {}:{}", self.id, self.device.0, self.device.1),
            None => format!("mount id {}, device {}:{}", self.id, self.device.0, self.device.1),
        }
    }
}

/// A mount as a [`MountGuard`] knew it, in a form that outlives the process: the target, the mount's identity
/// (the `mountinfo` id, the never-reused id where the kernel has one, the filesystem's device) and whether the
/// crate made the mount point. [`encode`](Self::encode) it into a file or a database, [`decode`](Self::decode) it
/// in another process, and hand it to [`MountGuard::adopt_record`] to tear the mount down safely.
///
/// ```no_run
/// use layermount::{MountGuard, MountRecord, Overlay};
/// let guard = Overlay::new().lowers(["/l/2", "/l/1"]).mount_at("/run/ctr/rootfs")?;
/// let bytes = guard.record().expect("Linux 5.8+").encode();
/// guard.leak();
/// // ... later, in another process:
/// let record = MountRecord::decode(&bytes)?;
/// if record.other_mounts()?.is_empty() {
///     MountGuard::adopt_record(&record)?.unmount()?;
/// }
/// # Ok::<(), layermount::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountRecord {
    target: PathBuf,
    identity: MountIdentity,
    created_dir: bool,
}

const RECORD_HEADER: &[u8] = b"layermount-mount-record 1\n";

impl MountRecord {
    /// Where the mount is attached.
    ///
    /// ```no_run
    /// # fn f(record: layermount::MountRecord) {
    /// println!("{}", record.target().display());
    /// # }
    /// ```
    pub fn target(&self) -> &Path {
        &self.target
    }

    /// The mount's id as `mountinfo` shows it.
    ///
    /// ```no_run
    /// # fn f(record: layermount::MountRecord) {
    /// println!("{}", record.mount_id());
    /// # }
    /// ```
    pub fn mount_id(&self) -> u64 {
        self.identity.id
    }

    /// The never-reused mount id (Linux 6.8), if the kernel had it.
    ///
    /// ```no_run
    /// # fn f(record: layermount::MountRecord) {
    /// println!("{:?}", record.unique_mount_id());
    /// # }
    /// ```
    pub fn unique_mount_id(&self) -> Option<u64> {
        self.identity.unique
    }

    /// Whether the crate made the mount point (and so removes it, with `rmdir`, after unmounting).
    ///
    /// ```no_run
    /// # fn f(record: layermount::MountRecord) {
    /// println!("{}", record.created_dir());
    /// # }
    /// ```
    pub fn created_dir(&self) -> bool {
        self.created_dir
    }

    /// The record as bytes (a few short lines; the target is hex-encoded, so any path fits).
    ///
    /// ```no_run
    /// # fn f(record: layermount::MountRecord) -> std::io::Result<()> {
    /// std::fs::write("/run/ctr/rootfs.record", record.encode())?;
    /// # Ok(()) }
    /// ```
    pub fn encode(&self) -> Vec<u8> {
        let mut out = RECORD_HEADER.to_vec();
        let hex: String = self.target.as_os_str().as_bytes().iter().map(|b| format!("{b:02x}")).collect();
        out.extend_from_slice(format!("target {hex}\nmount_id {}\n", self.identity.id).as_bytes());
        if let Some(u) = self.identity.unique {
            out.extend_from_slice(format!("unique_mount_id {u}\n").as_bytes());
        }
        let (major, minor) = self.identity.device;
        out.extend_from_slice(format!("device {major}:{minor}\ncreated_dir {}\n", self.created_dir).as_bytes());
        out
    }

    /// Read back what [`encode`](Self::encode) wrote.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidInput`] for anything else.
    ///
    /// # Kernel
    /// None: no system call (parsing only).
    ///
    /// ```no_run
    /// let record = layermount::MountRecord::decode(&std::fs::read("/run/ctr/rootfs.record")?)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let bad = |why: &str| Error::new(ErrorKind::InvalidInput, "decode mount record").with_detail(why.to_string());
        let text = bytes.strip_prefix(RECORD_HEADER).ok_or_else(|| bad("not a layermount mount record"))?;
        let text = std::str::from_utf8(text).map_err(|_| bad("not UTF-8"))?;
        let (mut target, mut id, mut unique, mut device, mut created) = (None, None, None, None, None);
        for line in text.lines() {
            let (k, v) = line.split_once(' ').ok_or_else(|| bad("malformed line"))?;
            match k {
                "target" => {
                    let bytes = (0..v.len())
                        .step_by(2)
                        .map(|i| v.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
                        .collect::<Option<Vec<u8>>>()
                        .filter(|b| !b.is_empty())
                        .ok_or_else(|| bad("bad target"))?;
                    target = Some(PathBuf::from(OsString::from_vec(bytes)));
                }
                "mount_id" => id = Some(v.parse().map_err(|_| bad("bad mount_id"))?),
                "unique_mount_id" => unique = Some(v.parse().map_err(|_| bad("bad unique_mount_id"))?),
                "device" => {
                    let (a, b) = v.split_once(':').ok_or_else(|| bad("bad device"))?;
                    let num = |x: &str| x.parse::<u32>().map_err(|_| bad("bad device"));
                    device = Some((num(a)?, num(b)?));
                }
                "created_dir" => created = Some(v.parse().map_err(|_| bad("bad created_dir"))?),
                _ => return Err(bad("unknown line")),
            }
        }
        match (target, id, device, created) {
            (Some(target), Some(id), Some(device), Some(created_dir)) => {
                Ok(Self { target, identity: MountIdentity { id, unique, device }, created_dir })
            }
            _ => Err(bad("incomplete")),
        }
    }

    /// Whether the recorded mount is still attached at its target (that very mount, not another in its place),
    /// without touching it: a daemon that restarts keeps the roots a container may still use and forgets records
    /// whose mount is gone (after a reboot, say).
    ///
    /// # Errors
    /// [`ErrorKind::Os`] if the target cannot be looked at for another reason than not existing.
    ///
    /// # Kernel
    /// `statx` with `STATX_MNT_ID` (5.8).
    ///
    /// ```no_run
    /// # fn f(record: layermount::MountRecord) -> layermount::Result<()> {
    /// if !record.is_attached()? {
    ///     println!("{} is gone; forget its record", record.target().display());
    /// }
    /// # Ok(()) }
    /// ```
    pub fn is_attached(&self) -> Result<bool> {
        match mount_identity(CWD, &self.target) {
            Ok(now) => Ok(self.identity.same_mount(&now)),
            Err(rustix::io::Errno::NOENT | rustix::io::Errno::NOTDIR) => Ok(false),
            Err(e) => Err(Error::os("check mount record", e).with_path(&self.target)),
        }
    }

    /// The other mounts that show what the recorded mount shows (its filesystem, or for a bind the directory it
    /// shows, or a part of it), in every mount namespace on the host: a bind a runtime made of a composed root, the
    /// root of a running container. Each is named by a path that reaches it from here: `/proc/<pid>/root/<mount
    /// point>` for another namespace, the mount point for this one. Empty means nothing but the recorded mount
    /// shows it, so a snapshotter may remove it. (For a bind, the filesystem the directory lives on is not
    /// counted: it shows more than the directory. Once the recorded mount is gone, every mount of its filesystem
    /// counts.)
    ///
    /// # Errors
    /// [`ErrorKind::Os`] if this namespace's mount table cannot be read; processes that exit during the scan, or
    /// whose tables cannot be read, are skipped.
    ///
    /// # Kernel
    /// Any; reading other processes' tables needs root (or `CAP_SYS_PTRACE`).
    ///
    /// ```no_run
    /// # fn f(record: layermount::MountRecord) -> layermount::Result<()> {
    /// for other in record.other_mounts()? {
    ///     eprintln!("still in use at {}", other.display());
    /// }
    /// # Ok(()) }
    /// ```
    pub fn other_mounts(&self) -> Result<Vec<PathBuf>> {
        let own = MountTable::current()?;
        // What the recorded mount shows of its filesystem: all of it (an overlay, a tmpfs), or one directory (a
        // bind). Another mount uses it if it shows that directory or a part of it.
        let shown = own.by_id(self.identity.id).filter(|m| m.device == self.identity.device).map(|m| m.root.clone());
        let uses = |m: &crate::MountInfo| {
            m.device == self.identity.device && shown.as_ref().is_none_or(|root| m.root.starts_with(root))
        };
        let mut out: Vec<PathBuf> = own
            .mounts()
            .iter()
            .filter(|m| uses(m) && m.mount_id != self.identity.id)
            .map(|m| m.mount_point.clone())
            .collect();
        let mut seen = std::collections::HashSet::new();
        if let Ok(own) = std::fs::read_link("/proc/thread-self/ns/mnt") {
            seen.insert(own);
        }
        let Ok(procs) = std::fs::read_dir("/proc") else { return Ok(out) };
        for entry in procs.flatten() {
            let name = entry.file_name();
            let Some(pid) = name.to_str().filter(|p| p.bytes().all(|b| b.is_ascii_digit())) else { continue };
            // One read per mount namespace: the first process met in it stands for all.
            let Ok(ns) = std::fs::read_link(format!("/proc/{pid}/ns/mnt")) else { continue };
            if !seen.insert(ns) {
                continue;
            }
            let Ok(text) = std::fs::read(format!("/proc/{pid}/mountinfo")) else { continue };
            let Ok(table) = MountTable::parse(&text) else { continue };
            for m in table.mounts().iter().filter(|m| uses(m)) {
                let rel = m.mount_point.strip_prefix("/").unwrap_or(&m.mount_point);
                out.push(Path::new("/proc").join(pid).join("root").join(rel));
            }
        }
        Ok(out)
    }
}
