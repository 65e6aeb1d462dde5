//! [`UserNamespace`]: an owned fd to a user namespace carrying one uid map and one gid map, the thing
//! `mount_setattr(MOUNT_ATTR_IDMAP)` needs to idmap a mount.

use std::collections::{HashMap, VecDeque};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};

use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;
use rustix::process::{Pid, Signal, WaitOptions};

use crate::error::{Context, Error, ErrorKind, Result};
use crate::idmap::IdMap;
use crate::sys;

#[derive(Debug)]
struct Inner {
    fd: OwnedFd,
    uid_map: IdMap,
    gid_map: IdMap,
}

/// A user namespace with a fixed uid map and gid map, held by an fd. No process of ours lives in it: the
/// short-lived child that made it ([`UserNamespace::new`]) or read its maps ([`UserNamespace::from_fd`]) is reaped
/// before the call returns, on success and on every error.
///
/// Cloning is cheap (the fd is shared); the namespace lives as long as any clone or any mount idmapped with it.
/// [`UserNamespace::cached`] shares one per mapping through a bounded process-wide cache (weak references to
/// every namespace in use, strong ones to the most recently used; see [`UserNamespace::cache_stats`]).
///
/// # Kernel
/// User namespaces (Linux 3.8, and enabled: some distributions turn unprivileged ones off, which does not matter
/// to a root caller); idmapping a mount with one needs `mount_setattr` (5.12).
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
        return Err(Error::new(ErrorKind::Os, "write id map").with_path(&path).with_detail("short write"));
    }
    Ok(())
}

type CacheKey = (IdMap, IdMap);

/// How many namespaces the process-wide cache keeps alive on its own unless told otherwise
/// ([`UserNamespace::set_cache_capacity`]).
///
/// ```
/// use layermount::{UserNamespace, DEFAULT_CACHE_CAPACITY};
/// let previous = UserNamespace::set_cache_capacity(DEFAULT_CACHE_CAPACITY * 4); // a daemon with many maps
/// UserNamespace::set_cache_capacity(previous);
/// ```
pub const DEFAULT_CACHE_CAPACITY: usize = 64;

/// What the process-wide cache of [`UserNamespace::cached`] holds and has done, from
/// [`UserNamespace::cache_stats`].
///
/// ```
/// let stats = layermount::UserNamespace::cache_stats();
/// assert!(stats.retained <= stats.capacity);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CacheStats {
    /// Calls answered with a namespace the cache knew.
    pub hits: u64,
    /// Calls that made a new namespace.
    pub misses: u64,
    /// Namespaces the cache stopped keeping alive because it was full (the least recently used go first).
    pub evictions: u64,
    /// Namespaces the cache can hand out: those it keeps alive plus those only callers (clones) still hold.
    pub live: usize,
    /// Namespaces the cache itself keeps alive (one fd each): at most `capacity`.
    pub retained: usize,
    /// The most namespaces the cache keeps alive on its own.
    pub capacity: usize,
}

/// Weak entries for every namespace still alive anywhere, and strong ones for the most recently used few.
struct Cache {
    entries: HashMap<CacheKey, Weak<Inner>>,
    /// Least recently used first.
    lru: VecDeque<Arc<Inner>>,
    capacity: usize,
    /// Dead weak entries are swept when `entries` grows to this, so it stays within twice the live ones.
    sweep_at: usize,
    hits: u64,
    misses: u64,
    evictions: u64,
}

const MIN_SWEEP: usize = 64;

impl Cache {
    fn touch(&mut self, inner: Arc<Inner>) {
        // From the back: a hit is most often on one of the most recently used.
        if let Some(pos) = self.lru.iter().rposition(|a| Arc::ptr_eq(a, &inner)) {
            self.lru.remove(pos);
        }
        self.lru.push_back(inner);
        self.shrink();
    }

    fn shrink(&mut self) {
        while self.lru.len() > self.capacity {
            self.lru.pop_front();
            self.evictions += 1;
        }
    }

    fn sweep(&mut self) {
        if self.entries.len() >= self.sweep_at {
            self.entries.retain(|_, w| w.strong_count() > 0);
            self.sweep_at = (2 * self.entries.len()).max(MIN_SWEEP);
        }
    }

    fn live(&self) -> usize {
        self.entries.values().filter(|w| w.strong_count() > 0).count()
    }
}

fn cache() -> MutexGuard<'static, Cache> {
    static CACHE: OnceLock<Mutex<Cache>> = OnceLock::new();
    CACHE
        .get_or_init(|| {
            Mutex::new(Cache {
                entries: HashMap::new(),
                lru: VecDeque::new(),
                capacity: DEFAULT_CACHE_CAPACITY,
                sweep_at: MIN_SWEEP,
                hits: 0,
                misses: 0,
                evictions: 0,
            })
        })
        .lock()
        .unwrap_or_else(|p| p.into_inner())
}

fn from_fd_error(detail: &str) -> Error {
    Error::new(ErrorKind::InvalidInput, "user namespace from fd").with_detail(detail)
}

fn read_map(pid: Pid, file: &'static str) -> Result<IdMap> {
    const OP: &str = "read user namespace maps";
    let path = format!("/proc/{}/{file}", pid.as_raw_nonzero());
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(OP, &e).with_path(&path))?;
    if text.trim().is_empty() {
        return Err(Error::new(ErrorKind::InvalidIdMap(crate::IdMapProblem::Empty), OP)
            .with_path(&path)
            .with_detail("the namespace has no map written yet"));
    }
    IdMap::from_proc_format(&text).map_err(|e| e.with_path(&path))
}

impl UserNamespace {
    /// Make a new user namespace with these maps: a child is cloned into a new user namespace, the maps are
    /// written to its `/proc/<pid>/uid_map` and `gid_map`, `/proc/<pid>/ns/user` is opened, and the child is
    /// killed and reaped. Costs one process (about 0.3 ms); prefer [`UserNamespace::cached`].
    ///
    /// Needs `CAP_SETUID` and `CAP_SETGID` for any mapping other than the caller's own single id.
    ///
    /// # Kernel
    /// Linux 3.8 for user namespaces; 5.12 to idmap a mount with one.
    ///
    /// # Errors
    /// [`ErrorKind::PermissionDenied`] when the kernel refuses a map (missing capability), [`ErrorKind::Os`] when
    /// the child cannot be made (e.g. `max_user_namespaces` reached). The child is reaped on every path.
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
        let holder = Holder(sys::spawn_userns_holder(None).op("clone user namespace")?);
        write_proc(holder.0, "uid_map", &uid_map.to_proc_format())?;
        if let Err(e) = write_proc(holder.0, "gid_map", &gid_map.to_proc_format()) {
            // Without CAP_SETGID the kernel wants setgroups denied before a gid map is written.
            if e.kind() != ErrorKind::PermissionDenied {
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

    /// Take a user namespace someone else made (a runtime's container namespace, `/proc/<pid>/ns/user` of a
    /// process, a namespace fd passed over a socket) and read its maps back from the kernel.
    ///
    /// The maps are not taken on trust from the caller: a short-lived child joins the namespace (`setns(2)`), its
    /// `/proc/<pid>/uid_map` and `gid_map` are read from outside, and it is killed and reaped, so
    /// [`uid_map`](Self::uid_map) and [`gid_map`](Self::gid_map) give host ids as seen from the caller's user
    /// namespace (the kernel's ids when the caller is in the initial one), exactly what an idmapped mount made
    /// with this namespace will show. Costs one process, like [`UserNamespace::new`]. The namespace is not put in
    /// the cache.
    ///
    /// Needs `CAP_SYS_ADMIN` over the namespace (root in an ancestor of it).
    ///
    /// # Kernel
    /// Linux 4.11 (`NS_GET_NSTYPE`); idmapping a mount with the namespace needs 5.12.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidInput`] when `fd` is not a namespace, is a namespace of another type, or is the
    /// caller's own user namespace or an ancestor of it (no mount can be idmapped with those);
    /// [`ErrorKind::InvalidIdMap`] when the namespace has no map yet; [`ErrorKind::PermissionDenied`] without
    /// `CAP_SYS_ADMIN` over it.
    ///
    /// ```no_run
    /// use std::fs::File;
    /// use std::os::fd::OwnedFd;
    /// // The user namespace of a container's init process.
    /// let fd: OwnedFd = File::open("/proc/4242/ns/user").map_err(|e| layermount::Error::from_io("open", "/proc/4242/ns/user", &e))?.into();
    /// let ns = layermount::UserNamespace::from_fd(fd)?;
    /// println!("container root is host uid {:?}", ns.uid_map().to_host(0));
    /// # Ok::<(), layermount::Error>(())
    /// ```
    #[doc(alias = "setns")]
    #[doc(alias = "NS_GET_NSTYPE")]
    pub fn from_fd(fd: OwnedFd) -> Result<Self> {
        match sys::namespace_type(fd.as_fd()) {
            Ok(sys::CLONE_NEWUSER) => {}
            Ok(_) => return Err(from_fd_error("a namespace, but not a user namespace")),
            Err(Errno::NOTTY | Errno::INVAL) => return Err(from_fd_error("not a namespace")),
            Err(e) => return Err(Error::os("user namespace from fd", e)),
        }
        let pid = sys::spawn_userns_holder(Some(fd.as_fd())).map_err(|e| match e {
            Errno::INVAL => from_fd_error("the caller's own user namespace or an ancestor of it"),
            e => Error::os("join user namespace", e),
        })?;
        let holder = Holder(pid);
        let uid_map = read_map(holder.0, "uid_map")?;
        let gid_map = read_map(holder.0, "gid_map")?;
        drop(holder);
        Ok(Self { inner: Arc::new(Inner { fd, uid_map, gid_map }) })
    }

    /// The process-wide cached namespace for these maps, made with [`UserNamespace::new`] on first use.
    ///
    /// The cache is bounded. It keeps alive on its own the [`capacity`](Self::set_cache_capacity) most recently
    /// used namespaces (64 unless set; one fd each); beyond those it only remembers namespaces that some caller
    /// still holds (a weak reference), so a namespace nobody uses any more costs nothing once it falls out of the
    /// recently used set. A namespace handed out stays valid whatever the cache does. A hit costs a mutex, a hash
    /// lookup and a scan of the recently used list.
    ///
    /// # Errors
    /// As [`UserNamespace::new`], on a miss.
    ///
    /// # Kernel
    /// As [`UserNamespace::new`] on a miss; a hit makes no system call.
    ///
    /// ```no_run
    /// let map: layermount::IdMap = "0:100000:65536".parse()?;
    /// let a = layermount::UserNamespace::cached(&map, &map)?;
    /// let b = layermount::UserNamespace::cached(&map, &map)?;
    /// assert!(a.same_as(&b));
    /// # Ok::<(), layermount::Error>(())
    /// ```
    pub fn cached(uid_map: &IdMap, gid_map: &IdMap) -> Result<Self> {
        let mut cache = cache();
        let key = (uid_map.clone(), gid_map.clone());
        if let Some(inner) = cache.entries.get(&key).and_then(Weak::upgrade) {
            cache.hits += 1;
            cache.touch(inner.clone());
            return Ok(Self { inner });
        }
        cache.misses += 1;
        // Made under the lock, so two threads asking for the same new map make one namespace.
        let ns = Self::new(uid_map, gid_map)?;
        cache.entries.insert(key, Arc::downgrade(&ns.inner));
        cache.touch(ns.inner.clone());
        cache.sweep();
        Ok(ns)
    }

    /// Forget the cached namespace for these maps: the cache stops keeping it alive and the next
    /// [`cached`](Self::cached) call makes a new one. Handles already given out keep working. Returns whether
    /// the cache knew a live namespace for them.
    ///
    /// # Kernel
    /// Any: no system call.
    ///
    /// ```
    /// let map: layermount::IdMap = "0:100000:65536".parse()?;
    /// layermount::UserNamespace::evict(&map, &map);
    /// # Ok::<(), layermount::Error>(())
    /// ```
    pub fn evict(uid_map: &IdMap, gid_map: &IdMap) -> bool {
        let mut cache = cache();
        let known = cache.entries.remove(&(uid_map.clone(), gid_map.clone())).is_some_and(|w| w.strong_count() > 0);
        cache.lru.retain(|a| !(&a.uid_map == uid_map && &a.gid_map == gid_map));
        known
    }

    /// Forget every cached namespace (their fds close once no handle and no mount uses them). Returns how many
    /// live ones the cache knew.
    ///
    /// # Kernel
    /// Any: nothing but `close(2)` of the fds nobody else holds.
    ///
    /// ```
    /// let _ = layermount::UserNamespace::clear_cache();
    /// ```
    pub fn clear_cache() -> usize {
        let mut cache = cache();
        let n = cache.live();
        cache.entries.clear();
        cache.lru.clear();
        cache.sweep_at = MIN_SWEEP;
        n
    }

    /// Set how many recently used namespaces the cache keeps alive on its own (0: only those callers hold), and
    /// return the previous capacity. Shrinking lets the least recently used go at once.
    ///
    /// # Kernel
    /// Any: no system call.
    ///
    /// ```
    /// let previous = layermount::UserNamespace::set_cache_capacity(8);
    /// assert_eq!(layermount::UserNamespace::cache_stats().capacity, 8);
    /// layermount::UserNamespace::set_cache_capacity(previous);
    /// ```
    pub fn set_cache_capacity(capacity: usize) -> usize {
        let mut cache = cache();
        let previous = std::mem::replace(&mut cache.capacity, capacity);
        cache.shrink();
        previous
    }

    /// Counters and sizes of the process-wide cache.
    ///
    /// # Kernel
    /// Any: no system call.
    ///
    /// ```
    /// let stats = layermount::UserNamespace::cache_stats();
    /// println!("{} hits, {} misses, {} namespaces alive", stats.hits, stats.misses, stats.live);
    /// ```
    pub fn cache_stats() -> CacheStats {
        let cache = cache();
        CacheStats {
            hits: cache.hits,
            misses: cache.misses,
            evictions: cache.evictions,
            live: cache.live(),
            retained: cache.lru.len(),
            capacity: cache.capacity,
        }
    }

    /// The uid map: written by [`new`](Self::new), read back from the kernel by [`from_fd`](Self::from_fd).
    ///
    /// # Kernel
    /// Any: no system call.
    ///
    /// ```no_run
    /// let map: layermount::IdMap = "0:100000:65536".parse()?;
    /// assert_eq!(layermount::UserNamespace::cached(&map, &map)?.uid_map().to_host(0), Some(100000));
    /// # Ok::<(), layermount::Error>(())
    /// ```
    pub fn uid_map(&self) -> &IdMap {
        &self.inner.uid_map
    }

    /// The gid map, as [`uid_map`](Self::uid_map).
    ///
    /// # Kernel
    /// Any: no system call.
    ///
    /// ```no_run
    /// let map: layermount::IdMap = "0:100000:65536".parse()?;
    /// assert_eq!(layermount::UserNamespace::cached(&map, &map)?.gid_map(), &map);
    /// # Ok::<(), layermount::Error>(())
    /// ```
    pub fn gid_map(&self) -> &IdMap {
        &self.inner.gid_map
    }

    /// True when both handles share the same fd (e.g. two cache hits).
    ///
    /// # Kernel
    /// Any: no system call.
    ///
    /// ```no_run
    /// let map: layermount::IdMap = "0:100000:65536".parse()?;
    /// let ns = layermount::UserNamespace::new(&map, &map)?;
    /// assert!(ns.same_as(&ns.clone()));
    /// # Ok::<(), layermount::Error>(())
    /// ```
    pub fn same_as(&self, other: &UserNamespace) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }
}

impl AsFd for UserNamespace {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.inner.fd.as_fd()
    }
}
