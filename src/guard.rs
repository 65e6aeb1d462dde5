//! [`MountGuard`]: an attached mount that is detach-unmounted when dropped.

use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, CWD, StatxAttributes, StatxFlags};
use rustix::mount::UnmountFlags;

use crate::error::{Context, Error, ErrorKind, Result};
use crate::mountinfo::mount_id_of;

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
    mount_id: Option<u64>,
    created_dir: bool,
    armed: bool,
}

impl MountGuard {
    pub(crate) fn new(target: PathBuf, mount_id: Option<u64>, created_dir: bool) -> Self {
        Self { target, mount_id, created_dir, armed: true }
    }

    /// Take ownership of the mount attached at `target` (made by other means), so that it is unmounted when the
    /// guard drops. Its mount id is recorded now; the mount point itself is never removed. A path that is not a
    /// mount point is refused ([`ErrorKind::InvalidInput`]).
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
        Ok(Self::new(target.to_path_buf(), Some(st.stx_mnt_id), false))
    }

    /// Where the mount is attached.
    pub fn path(&self) -> &Path {
        &self.target
    }

    /// The kernel's id of the mount (as in `mountinfo`), if it could be read when attached.
    pub fn mount_id(&self) -> Option<u64> {
        self.mount_id
    }

    /// Detach-unmount now and report what went wrong: the mount at the path is no longer ours
    /// ([`ErrorKind::InvalidInput`]), the unmount failed, or the mount point could not be removed.
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
        if let Some(expected) = self.mount_id {
            let now = mount_id_of(CWD, &self.target).op_path(OP, &self.target)?;
            if now != expected {
                return Err(Error::new(ErrorKind::InvalidInput, OP).with_path(&self.target).with_detail(format!(
                    "the mount here (id {now}) is not the one this guard attached (id {expected})"
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
