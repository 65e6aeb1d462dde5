//! [`StackCache`]: image stacks shared between the containers of an image, built on first use.

use std::collections::HashMap;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::{ImageStack, StackOptions};
use crate::error::{Error, ErrorKind, OverlayProblem, Result};
use crate::idmap::IdMap;
use crate::overlay::{Overlay, lexical_or_given, plain_absolute};
use crate::userns::UserNamespace;

/// How long and how many stacks a [`StackCache`] keeps once no one uses them. A stack in use is never evicted.
///
/// ```
/// use std::time::Duration;
/// let limits = layermount::StackLimits { max_idle: 16, idle_time: Duration::from_secs(300) };
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StackLimits {
    /// At most this many idle stacks are kept; the least recently used go first.
    pub max_idle: usize,
    /// An idle stack not asked for in this long is evicted (checked on each [`StackCache::get`] and
    /// [`StackCache::sweep`]).
    pub idle_time: Duration,
}

impl Default for StackLimits {
    fn default() -> Self {
        Self { max_idle: 32, idle_time: Duration::from_secs(600) }
    }
}

/// Counters of a [`StackCache`] since it was made.
///
/// ```
/// let stats = layermount::StackCache::default().stats();
/// assert_eq!((stats.hits, stats.misses, stats.evictions), (0, 0, 0));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StackStats {
    /// Requests answered by a stack already built (or being built by another thread).
    pub hits: u64,
    /// Requests that built a stack.
    pub misses: u64,
    /// Idle stacks dropped by the limits (or [`StackCache::clear`]).
    pub evictions: u64,
    /// Stacks held now, in use or idle.
    pub stacks: usize,
    /// Of those, stacks that nobody but the cache holds.
    pub idle: usize,
}

/// How [`StackCache::compose`] composed.
///
/// ```no_run
/// use layermount::{Composition, StackCache};
/// let cache = StackCache::default();
/// let (overlay, how) = cache.compose(&["/var/lib/layers/2", "/var/lib/layers/1"], None)?;
/// match &how {
///     Composition::Hit => println!("on a cached stack"),
///     Composition::Miss => println!("built a stack"),
///     Composition::Flat(why) => println!("flat: {why}"),
///     _ => {}
/// }
/// # Ok::<(), layermount::Error>(())
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum Composition {
    /// On a stack the cache already had.
    Hit,
    /// On a stack built for this request.
    Miss,
    /// Flat (every layer a lower of the container's overlay), because no stack can be made of these layers; the
    /// error says why (for instance [`OverlayProblem::StackTooDeep`]).
    Flat(Error),
}

/// The identity of a stack: its layers (absolute paths, top-most first, as bytes joined by NUL: one hash and one
/// compare however many layers, where `Path`'s component-wise hashing costs a measurable part of a hit at 500
/// layers), how many, and the id maps. A `Path` may hold a NUL (no syscall takes it): with the count, layers that
/// hold one never make the key of layers that do not (the same bytes would be more layers), and no stack is ever
/// built for them.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    layers: Vec<u8>,
    count: usize,
    maps: Option<(IdMap, IdMap)>,
}

impl Key {
    fn new<P: AsRef<Path>>(layers: &[P], idmap: Option<&UserNamespace>) -> Self {
        let mut bytes = Vec::with_capacity(layers.iter().map(|p| p.as_ref().as_os_str().len() + 1).sum());
        let mut absolute = true;
        for p in layers {
            let b = p.as_ref().as_os_str().as_bytes();
            absolute &= b.first() == Some(&b'/');
            bytes.extend_from_slice(b);
            bytes.push(0);
        }
        // One search over all the paths for a `..` (a per-path check was a measurable part of a hit at hundreds of
        // layers); only when one may hold a `..` component, or is relative, is each path looked at.
        let maybe_dotdot = std::str::from_utf8(&bytes).map_or(true, |s| s.contains("/.."));
        if !absolute || maybe_dotdot {
            bytes.clear();
            for p in layers {
                let p = p.as_ref();
                match plain_absolute(p) {
                    true => bytes.extend_from_slice(p.as_os_str().as_bytes()),
                    false => bytes.extend_from_slice(lexical_or_given(p).as_os_str().as_bytes()),
                }
                bytes.push(0);
            }
        }
        Key { layers: bytes, count: layers.len(), maps: idmap.map(|ns| (ns.uid_map().clone(), ns.gid_map().clone())) }
    }
}

/// A hash for [`Key`]s, four words at a time in four independent lanes: keys hold every layer's path (kilobytes at
/// hundreds of layers) and are hashed on every request, where SipHash's byte-wise rounds (and then a one-lane hash)
/// were a measurable part of a hit. Keys come from the caller's own layer store, and a hit compares the whole key.
#[derive(Default)]
struct KeyHasher([u64; 4]);

impl std::hash::Hasher for KeyHasher {
    fn write(&mut self, bytes: &[u8]) {
        let word = |b: &[u8]| u64::from_le_bytes(b.try_into().expect("8 bytes"));
        let mut blocks = bytes.chunks_exact(32);
        for b in &mut blocks {
            for (lane, w) in self.0.iter_mut().zip(b.chunks_exact(8)) {
                *lane = mix(*lane, word(w));
            }
        }
        let mut words = blocks.remainder().chunks_exact(8);
        for w in &mut words {
            self.0[0] = mix(self.0[0], word(w));
        }
        let rest = words.remainder();
        let mut last = [0u8; 8];
        last[..rest.len()].copy_from_slice(rest);
        self.0[1] = mix(self.0[1], u64::from_le_bytes(last) ^ (bytes.len() as u64) << 56);
    }

    fn finish(&self) -> u64 {
        let h = self.0.iter().fold(0u64, |h, &lane| mix(h, lane));
        // Spread the bits over the whole hash (the table uses the low and the high bits).
        (h ^ (h >> 29)).wrapping_mul(0xbf58_476d_1ce4_e5b9)
    }
}

fn mix(lane: u64, word: u64) -> u64 {
    (lane.rotate_left(5) ^ word).wrapping_mul(0x517c_c1b7_2722_0a95)
}

type Entries = HashMap<Key, Entry, std::hash::BuildHasherDefault<KeyHasher>>;

#[derive(Debug)]
struct Entry {
    /// Held while the stack is built, so concurrent requests for one image build it once.
    slot: Arc<Mutex<Option<ImageStack>>>,
    last_used: Instant,
}

/// Image stacks keyed by (layers, id map), built on first use and shared by reference; kept while anyone holds
/// one, and then within [`StackLimits`] (LRU by last request, and an idle time). Thread-safe: concurrent requests
/// for one image build one stack; requests for different images build in parallel.
///
/// Layers are identified by their paths: a store that names layers by content (as snapshotters do) never puts other
/// content at a path a cached stack uses. Replace a layer in place only after [`clear`](Self::clear).
///
/// A stack the cache evicts, or that its last user drops, goes away only as a mount of its own: every container
/// overlay made on it holds its own reference in the kernel.
///
/// ```no_run
/// use layermount::{IdMap, Overlay, StackCache, UserNamespace};
/// let cache = StackCache::default();
/// let map: IdMap = "0:100000:65536".parse()?;
/// let ns = UserNamespace::cached(&map, &map)?;
/// let layers = ["/var/lib/layers/3", "/var/lib/layers/2", "/var/lib/layers/1"];
/// let stack = cache.get(&layers, Some(&ns))?; // built now
/// let again = cache.get(&layers, Some(&ns))?; // a hit
/// let guard = Overlay::new().lower_stack(&again).upper("/ctr/upper", "/ctr/work").idmap(ns).mount_at("/ctr/rootfs")?;
/// assert_eq!(cache.stats().hits, 1);
/// # Ok::<(), layermount::Error>(())
/// ```
#[derive(Debug, Default)]
pub struct StackCache {
    entries: Mutex<Entries>,
    limits: StackLimits,
    options: StackOptions,
    hits: AtomicU64,
    misses: AtomicU64,
    evictions: AtomicU64,
}

impl StackCache {
    /// An empty cache with these limits, building stacks with `options`.
    ///
    /// ```
    /// use layermount::{StackCache, StackLimits, StackOptions};
    /// let cache = StackCache::new(StackLimits::default(), StackOptions::default());
    /// ```
    pub fn new(limits: StackLimits, options: StackOptions) -> Self {
        Self { limits, options, ..Self::default() }
    }

    fn lock(&self) -> MutexGuard<'_, Entries> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The stack of `layers` (top-most first) idmapped with `idmap`: the cached one, or one built now (concurrent
    /// callers for the same key wait for that one build). Evicts idle stacks over the limits.
    ///
    /// # Errors
    /// As [`ImageStack::build_with`]; a failed build caches nothing.
    ///
    /// # Kernel
    /// As [`ImageStack::build`]: a detached stack from 6.15, attached under the private staging directory before.
    ///
    /// ```no_run
    /// let cache = layermount::StackCache::default();
    /// let stack = cache.get(&["/l/2", "/l/1"], None)?;
    /// # Ok::<(), layermount::Error>(())
    /// ```
    pub fn get<P: AsRef<Path>>(&self, layers: &[P], idmap: Option<&UserNamespace>) -> Result<ImageStack> {
        self.lookup(layers, idmap).map(|(stack, _)| stack)
    }

    /// [`get`](Self::get), and whether it was a hit.
    fn lookup<P: AsRef<Path>>(&self, layers: &[P], idmap: Option<&UserNamespace>) -> Result<(ImageStack, bool)> {
        let key = Key::new(layers, idmap);
        let slot = {
            let mut entries = self.lock();
            self.evict(&mut entries, Some(&key));
            let now = Instant::now();
            let entry = match entries.get_mut(&key) {
                Some(entry) => entry,
                None => entries.entry(key.clone()).or_insert_with(|| Entry { slot: Arc::default(), last_used: now }),
            };
            entry.last_used = now;
            Arc::clone(&entry.slot)
        };
        let mut built = slot.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(stack) = &*built {
            self.hits.fetch_add(1, Ordering::Relaxed);
            return Ok((stack.clone(), true));
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        match ImageStack::build_with(layers, idmap, &self.options) {
            Ok(stack) => {
                *built = Some(stack.clone());
                Ok((stack, false))
            }
            Err(e) => {
                drop(built);
                let mut entries = self.lock();
                if entries.get(&key).is_some_and(|e| Arc::ptr_eq(&e.slot, &slot) && Self::is_empty(&e.slot)) {
                    entries.remove(&key);
                }
                Err(e)
            }
        }
    }

    /// A builder for a container overlay of `layers` idmapped with `idmap`: on the cached (or newly built) stack, or
    /// flat when no stack can be made of these layers ([`OverlayProblem::StackTooDeep`]); the [`Composition`] says
    /// which. Add the upper, options and attributes, then mount.
    ///
    /// # Errors
    /// Any failure to build the stack other than one a flat compose avoids.
    ///
    /// # Kernel
    /// As [`ImageStack::build`]; a flat compose needs what [`Overlay`](crate::Overlay) needs.
    ///
    /// ```no_run
    /// use layermount::{Composition, StackCache};
    /// let cache = StackCache::default();
    /// let (overlay, how) = cache.compose(&["/l/2", "/l/1"], None)?;
    /// if let Composition::Flat(why) = &how { eprintln!("composed flat: {why}") }
    /// let guard = overlay.upper("/ctr/upper", "/ctr/work").mount_at("/ctr/rootfs")?;
    /// # Ok::<(), layermount::Error>(())
    /// ```
    pub fn compose<P: AsRef<Path>>(
        &self,
        layers: &[P],
        idmap: Option<&UserNamespace>,
    ) -> Result<(Overlay, Composition)> {
        let mut overlay = Overlay::new();
        if let Some(f) = &self.options.features {
            overlay = overlay.features(f.clone());
        }
        if let Some(s) = self.options.strategy {
            overlay = overlay.strategy(s);
        }
        if let Some(d) = &self.options.staging_dir {
            overlay = overlay.staging_dir(d);
        }
        if let Some(ns) = idmap {
            overlay = overlay.idmap(ns.clone());
        }
        match self.lookup(layers, idmap) {
            Ok((stack, hit)) => {
                Ok((overlay.lower_stack(&stack), if hit { Composition::Hit } else { Composition::Miss }))
            }
            Err(e) if e.kind() == ErrorKind::InvalidOverlay(OverlayProblem::StackTooDeep) => {
                Ok((overlay.lowers(layers), Composition::Flat(e)))
            }
            Err(e) => Err(e),
        }
    }

    /// Evict idle stacks over the limits now (also done on every [`get`](Self::get)); returns how many.
    ///
    /// ```
    /// let cache = layermount::StackCache::default();
    /// assert_eq!(cache.sweep(), 0);
    /// ```
    pub fn sweep(&self) -> usize {
        let mut entries = self.lock();
        self.evict(&mut entries, None)
    }

    /// Evict every idle stack; stacks in use stay. Returns how many were evicted.
    ///
    /// ```
    /// let cache = layermount::StackCache::default();
    /// assert_eq!(cache.clear(), 0);
    /// ```
    pub fn clear(&self) -> usize {
        let mut entries = self.lock();
        let idle: Vec<Key> = entries.iter().filter(|(_, e)| Self::is_idle(&e.slot)).map(|(k, _)| k.clone()).collect();
        for k in &idle {
            entries.remove(k);
        }
        self.evictions.fetch_add(idle.len() as u64, Ordering::Relaxed);
        idle.len()
    }

    /// The counters, and how many stacks are held.
    ///
    /// ```
    /// let cache = layermount::StackCache::default();
    /// assert_eq!(cache.stats().stacks, 0);
    /// ```
    pub fn stats(&self) -> StackStats {
        let entries = self.lock();
        StackStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            evictions: self.evictions.load(Ordering::Relaxed),
            stacks: entries.values().filter(|e| !Self::is_empty(&e.slot)).count(),
            idle: entries.values().filter(|e| Self::is_idle(&e.slot)).count(),
        }
    }

    /// Built, and held by nobody but the cache. A slot being built (locked) is not idle.
    fn is_idle(slot: &Mutex<Option<ImageStack>>) -> bool {
        slot.try_lock().is_ok_and(|s| s.as_ref().is_some_and(|stack| stack.handles() == 1))
    }

    /// Not built (and not being built).
    fn is_empty(slot: &Mutex<Option<ImageStack>>) -> bool {
        slot.try_lock().is_ok_and(|s| s.is_none())
    }

    /// Drop idle entries past the idle time, then the least recently used idle ones over the count; never `keep`.
    fn evict(&self, entries: &mut Entries, keep: Option<&Key>) -> usize {
        let now = Instant::now();
        let mut idle: Vec<(Instant, Key)> = entries
            .iter()
            .filter(|(k, e)| Some(*k) != keep && Self::is_idle(&e.slot))
            .map(|(k, e)| (e.last_used, k.clone()))
            .collect();
        idle.sort_by_key(|(t, _)| *t);
        let over = idle.len().saturating_sub(self.limits.max_idle);
        let mut evicted = 0;
        for (i, (last_used, key)) in idle.into_iter().enumerate() {
            if i < over || now.duration_since(last_used) >= self.limits.idle_time {
                entries.remove(&key);
                evicted += 1;
            }
        }
        self.evictions.fetch_add(evicted as u64, Ordering::Relaxed);
        evicted
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::BuildHasher;

    fn hash(k: &Key) -> u64 {
        std::hash::BuildHasherDefault::<KeyHasher>::default().hash_one(k)
    }

    /// Spellings of the same layers make one key (and one hash): a `..` is resolved (on disk, as a symlink could
    /// lead elsewhere) and a relative path made absolute; different layers, orders or lengths make different keys.
    #[test]
    fn keys_name_layers_not_spellings() {
        let dir = tempfile::tempdir().unwrap();
        let t = dir.path().canonicalize().unwrap();
        for d in ["l1", "l2", "x"] {
            std::fs::create_dir(t.join(d)).unwrap();
        }
        let plain = Key::new(&[t.join("l2"), t.join("l1")], None);
        let same = Key::new(&[t.join("x/../l2"), t.join("l1")], None);
        assert_eq!(same, plain);
        assert_eq!(hash(&same), hash(&plain));
        let cwd = std::env::current_dir().unwrap();
        let relative = Key::new(&["l2", "./l1"], None);
        assert_eq!(relative, Key::new(&[cwd.join("l2"), cwd.join("l1")], None));
        let plain = Key::new(&["/s/l2", "/s/l1"], None);
        for other in [
            Key::new(&["/s/l1", "/s/l2"], None),
            Key::new(&["/s/l2"], None),
            Key::new(&["/s/l2", "/s/l1", "/s/l0"], None),
            Key::new(&["/s/l2", "/s/l1x"], None),
            Key::new(&["/s/..l2", "/s/l1"], None),
        ] {
            assert_ne!(other, plain);
            assert_ne!(hash(&other), hash(&plain));
        }
        // A `Path` may hold a NUL (no syscall takes it): one layer with a NUL is not the two layers on either side.
        assert_ne!(Key::new(&["/s/l2\0/s/l1"], None), plain);
        assert_ne!(Key::new(&["/s/l2\0/s/l1", "/s/l0"], None), Key::new(&["/s/l2", "/s/l1", "/s/l0"], None));
        // Long keys: one byte changed anywhere changes the hash.
        let layers: Vec<String> = (0..500).map(|i| format!("/var/lib/layers/{i:04}/fs")).collect();
        let long = hash(&Key::new(&layers, None));
        for i in [0, 17, 250, 499] {
            let mut changed = layers.clone();
            changed[i].replace_range(16..17, "x");
            assert_ne!(hash(&Key::new(&changed, None)), long, "layer {i}");
        }
    }
}
