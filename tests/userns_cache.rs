//! The user namespace cache stays bounded: 1,000 distinct maps leave at most `capacity` namespaces (fds) and a
//! bounded amount of memory behind. Alone in its own test binary, so the counting allocator sees no other test.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

use common::{children, fd_count, have_privilege};
use layermount::{IdMap, UserNamespace};

/// Bytes allocated and not yet freed, process-wide.
struct Counting;

static LIVE_BYTES: AtomicIsize = AtomicIsize::new(0);

// SAFETY: forwards every call to the system allocator unchanged and only counts sizes.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE_BYTES.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE_BYTES.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

#[test]
fn thousand_distinct_maps_keep_fds_and_memory_bounded() {
    if !have_privilege("thousand_distinct_maps_keep_fds_and_memory_bounded") {
        return;
    }
    const CAPACITY: usize = 16;
    const HELD_EVERY: u32 = 100;
    UserNamespace::set_cache_capacity(CAPACITY);
    let uid: IdMap = "0:100000:65536".parse().unwrap();
    let maps: Vec<IdMap> = (0..1000u32).map(|i| format!("0:{}:65536", 200_000 + 65_536 * i).parse().unwrap()).collect();
    // Warm up what the first call allocates once (the cache itself, std's lazies).
    drop(UserNamespace::cached(&uid, &uid).unwrap());
    UserNamespace::clear_cache();
    let (fds, bytes) = (fd_count(), LIVE_BYTES.load(Ordering::Relaxed));
    let before = UserNamespace::cache_stats();

    let mut held = Vec::new();
    for (i, gid) in maps.iter().enumerate() {
        let ns = UserNamespace::cached(&uid, gid).unwrap();
        if i as u32 % HELD_EVERY == 0 {
            held.push(ns);
        }
    }
    let stats = UserNamespace::cache_stats();
    let fds_after = fd_count();
    let bytes_after = LIVE_BYTES.load(Ordering::Relaxed);
    let grown = bytes_after - bytes;
    eprintln!(
        "1000 maps, capacity {CAPACITY}, {} held: fds {fds} -> {fds_after}, heap +{grown} bytes, {stats:?}",
        held.len()
    );
    assert_eq!(stats.misses - before.misses, 1000);
    assert_eq!(stats.retained, CAPACITY);
    assert!(stats.live <= CAPACITY + held.len(), "{stats:?}");
    assert!(fds_after <= fds + CAPACITY + held.len(), "fds {fds} -> {fds_after}");
    // An unbounded cache holds each of the 1000 maps (two keys, two maps, an Arc: well over 100 bytes each);
    // bounded, what is left is the recent and held entries and the hash table's buckets.
    assert!(grown < 48 * 1024, "heap grew by {grown} bytes over 1000 distinct maps");
    // The held ones are still handed back.
    for (i, ns) in held.iter().enumerate() {
        assert!(UserNamespace::cached(&uid, &maps[i * HELD_EVERY as usize]).unwrap().same_as(ns));
    }
    drop(held);
    UserNamespace::clear_cache();
    assert_eq!(fd_count(), fds, "every namespace closed once nobody holds it");
    assert!(children().is_empty());
}
