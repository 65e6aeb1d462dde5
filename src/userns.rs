//! [`UserNamespace`]: an owned fd to a user namespace carrying one uid map and one gid map, the thing
//! `mount_setattr(MOUNT_ATTR_IDMAP)` needs to idmap a mount.

use std::collections::HashMap;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::{Arc, Mutex, OnceLock};

use rustix::fs::{Mode, OFlags};
use rustix::process::{Pid, Signal, WaitOptions};

use crate::error::{Context, Error, Result};
use crate::idmap::IdMap;
use crate::sys;

#[derive(Debug)]
struct Inner {
    fd: OwnedFd,
    uid_map: IdMap,
    gid_map: IdMap,
}

/// A user namespace with a fixed uid map and gid map, held by an fd. No process lives in it: the short-lived child
/// that made it is reaped before [`UserNamespace::new`] returns, on success and on every error.
///
/// Cloning is cheap (the fd is shared); the namespace lives as long as any clone or any mount idmapped with it.
///
/// ```no_run
/// use layermount::{IdMap, UserNamespace};
/// let map: IdMap = "0:100000:65536".parse()?;
/// let ns = UserNamespace::cached(&map, &map)?; // one child per distinct mapping, then cache hits
/// assert_eq!(ns.uid_map(), &map);
/// # Ok::<(), layermount::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct UserNamespace {
    inner: Arc<Inner>,
}

/// Kills and reaps the holder child however `new` returns.
struct Holder(Pid);

impl Drop for Holder {
    fn drop(&mut self) {
        // The child only ever pauses, so SIGKILL is the only way it ends; it cannot have been reaped (even with
        // SIGCHLD ignored) before this, so the pid still names it.
        let _ = rustix::process::kill_process(self.0, Signal::KILL);
        // ECHILD means SIGCHLD is ignored in this process and the kernel reaped it for us.
        while let Err(rustix::io::Errno::INTR) = rustix::process::waitpid(Some(self.0), WaitOptions::empty()) {}
    }
}

fn write_proc(pid: Pid, file: &'static str, text: &str) -> Result<()> {
    let path = format!("/proc/{}/{file}", pid.as_raw_nonzero());
    let fd = rustix::fs::open(&path, OFlags::WRONLY | OFlags::CLOEXEC, Mode::empty())
        .op_path("write id map", path.as_ref())?;
    // The kernel takes the whole map in one write() or not at all.
    let n = rustix::io::write(&fd, text.as_bytes()).op_path("write id map", path.as_ref())?;
    if n != text.len() {
        return Err(Error::new(crate::ErrorKind::Os, "write id map").with_path(&path).with_detail("short write"));
    }
    Ok(())
}

type CacheKey = (IdMap, IdMap);

fn cache() -> &'static Mutex<HashMap<CacheKey, UserNamespace>> {
    static CACHE: OnceLock<Mutex<HashMap<CacheKey, UserNamespace>>> = OnceLock::new();
    CACHE.get_or_init(Default::default)
}

impl UserNamespace {
    /// Make a new user namespace with these maps: a child is cloned into a new user namespace, the maps are
    /// written to its `/proc/<pid>/uid_map` and `gid_map`, `/proc/<pid>/ns/user` is opened, and the child is
    /// killed and reaped. Costs one process (about 0.3 ms); prefer [`UserNamespace::cached`].
    ///
    /// Needs `CAP_SETUID` and `CAP_SETGID` for any mapping other than the caller's own single id.
    ///
    /// # References
    /// - [`user_namespaces(7)`](https://man7.org/linux/man-pages/man7/user_namespaces.7.html)
    ///
    /// ```no_run
    /// let map: layermount::IdMap = "0:100000:65536".parse()?;
    /// let ns = layermount::UserNamespace::new(&map, &map)?;
    /// # Ok::<(), layermount::Error>(())
    /// ```
    pub fn new(uid_map: &IdMap, gid_map: &IdMap) -> Result<Self> {
        let holder = Holder(sys::spawn_userns_holder().op("clone user namespace")?);
        write_proc(holder.0, "uid_map", &uid_map.to_proc_format())?;
        if let Err(e) = write_proc(holder.0, "gid_map", &gid_map.to_proc_format()) {
            // Without CAP_SETGID the kernel wants setgroups denied before a gid map is written.
            if e.kind() != crate::ErrorKind::PermissionDenied {
                return Err(e);
            }
            write_proc(holder.0, "setgroups", "deny")?;
            write_proc(holder.0, "gid_map", &gid_map.to_proc_format())?;
        }
        let path = format!("/proc/{}/ns/user", holder.0.as_raw_nonzero());
        let fd = rustix::fs::open(&path, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())
            .op_path("open user namespace", path.as_ref())?;
        drop(holder);
        Ok(Self { inner: Arc::new(Inner { fd, uid_map: uid_map.clone(), gid_map: gid_map.clone() }) })
    }

    /// The process-wide cached namespace for these maps, made with [`UserNamespace::new`] on first use.
    ///
    /// The cache keeps every namespace it made (one fd each) until [`UserNamespace::clear_cache`]; a namespace
    /// handed out stays valid after it is cleared from the cache. A hit costs a mutex and a hash lookup.
    ///
    /// ```no_run
    /// let map: layermount::IdMap = "0:100000:65536".parse()?;
    /// let a = layermount::UserNamespace::cached(&map, &map)?;
    /// let b = layermount::UserNamespace::cached(&map, &map)?;
    /// assert!(a.same_as(&b));
    /// # Ok::<(), layermount::Error>(())
    /// ```
    pub fn cached(uid_map: &IdMap, gid_map: &IdMap) -> Result<Self> {
        let mut cache = cache().lock().unwrap_or_else(|p| p.into_inner());
        let key = (uid_map.clone(), gid_map.clone());
        if let Some(ns) = cache.get(&key) {
            return Ok(ns.clone());
        }
        let ns = Self::new(uid_map, gid_map)?;
        cache.insert(key, ns.clone());
        Ok(ns)
    }

    /// Drop every cached namespace (their fds close once no clone and no mount uses them). Returns how many
    /// there were.
    ///
    /// ```
    /// let _ = layermount::UserNamespace::clear_cache();
    /// ```
    pub fn clear_cache() -> usize {
        let mut cache = cache().lock().unwrap_or_else(|p| p.into_inner());
        let n = cache.len();
        cache.clear();
        n
    }

    /// The uid map.
    pub fn uid_map(&self) -> &IdMap {
        &self.inner.uid_map
    }

    /// The gid map.
    pub fn gid_map(&self) -> &IdMap {
        &self.inner.gid_map
    }

    /// True when both handles share the same fd (e.g. two cache hits).
    pub fn same_as(&self, other: &UserNamespace) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }
}

impl AsFd for UserNamespace {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.inner.fd.as_fd()
    }
}
