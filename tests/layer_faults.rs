//! Layer apply under hostile input and faulty filesystems: oversized tar metadata, sparse files, inherited ACLs,
//! clamped timestamps, names recover would take for its own, a commit marker that cannot be written, negative PAX
//! times. Each test here failed before its fix (issue 10).

mod common;

use std::fs;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use common::archive::{E, Opt, Tar, tar_of};
use common::loopfs::Ext4;
use common::privileged;
use layermount::{ApplyOptions, ErrorKind, LayerProblem, SyncMode, apply, marker_path, recover, verify};

fn quick() -> ApplyOptions {
    ApplyOptions::new().sync(SyncMode::None)
}

/// Names in `dir`, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> =
        fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    v.sort();
    v
}

/// A tar stream of `head`, then `declared` bytes of 'a' made on demand, then `tail`. It fails the read (rather than
/// use memory) past `budget` bytes, and counts what was read.
struct Huge {
    head: Vec<u8>,
    declared: u64,
    tail: Vec<u8>,
    pos: u64,
    budget: u64,
    read: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl Read for Huge {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.pos > self.budget {
            return Err(std::io::Error::other("test: read past the budget"));
        }
        let head = self.head.len() as u64;
        let body_end = head + self.declared.div_ceil(512) * 512;
        let n = if self.pos < head {
            let n = buf.len().min((head - self.pos) as usize);
            buf[..n].copy_from_slice(&self.head[self.pos as usize..self.pos as usize + n]);
            n
        } else if self.pos < body_end {
            let n = buf.len().min((body_end - self.pos) as usize);
            buf[..n].fill(b'a');
            n
        } else {
            let at = (self.pos - body_end) as usize;
            let n = buf.len().min(self.tail.len().saturating_sub(at));
            buf[..n].copy_from_slice(&self.tail[at..at + n]);
            n
        };
        self.pos += n as u64;
        self.read.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
        Ok(n)
    }
}

/// Defect 2: a 1.5 GB GNU long-name (or long-link, PAX, PAX global) record is refused from its header, before its
/// data is read, with a clear error; several records of 1 MiB describing one member are refused too.
#[test]
fn oversized_tar_metadata_records_are_refused_before_they_are_read() {
    privileged("oversized_tar_metadata_records_are_refused_before_they_are_read", |scratch| {
        let store = scratch.join("store");
        fs::create_dir(&store).unwrap();
        let tail = tar_of(&[E::File("f", "x")]);
        for (kind, what) in [(b'L', "GNU long name"), (b'K', "GNU long link"), (b'x', "PAX"), (b'g', "PAX global")] {
            let read = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
            let huge = Huge {
                head: Tar::record_header(b"././@LongLink", kind, 1_500_000_000).to_vec(),
                declared: 1_500_000_000,
                tail: tail.clone(),
                pos: 0,
                budget: 64 << 20,
                read: read.clone(),
            };
            let err = apply(huge, store.join("l"), &quick()).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidLayer(LayerProblem::MetadataTooLarge), "{what}: {err}");
            assert!(err.to_string().contains("1500000000"), "{what}: the size is named: {err}");
            let consumed = read.load(std::sync::atomic::Ordering::Relaxed);
            assert!(consumed < 8 << 20, "{what}: {consumed} bytes read before refusing");
            assert!(names(&store).is_empty(), "{what}: nothing left: {:?}", names(&store));
        }
        // One member described by 1 MiB long name + 1 MiB long link + 1 MiB PAX: over the per-member total.
        let mut blob = Vec::new();
        for kind in [b'L', b'K', b'x'] {
            let size = 1 << 20;
            blob.extend_from_slice(&Tar::record_header(b"././@LongLink", kind, size));
            let body: Vec<u8> = if kind == b'x' {
                // One well-formed PAX record of exactly 1 MiB.
                let value_len = size as usize - "1048576 comment=\n".len();
                format!("1048576 comment={}\n", "c".repeat(value_len)).into_bytes()
            } else {
                let mut b = vec![b'n'; size as usize - 1];
                b.push(0);
                b
            };
            assert_eq!(body.len() as u64, size);
            blob.extend_from_slice(&body);
        }
        blob.extend_from_slice(&tail);
        let err = apply(&blob[..], store.join("l"), &quick()).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidLayer(LayerProblem::MetadataTooLarge), "{err}");
        assert!(names(&store).is_empty(), "{:?}", names(&store));
        // Records under the caps are fine.
        let mut t = Tar::new();
        let long: &'static str = Box::leak(("n".repeat(200) + "/f").into_boxed_str());
        t.add(&E::File(long, "ok"));
        apply(&t.finish()[..], store.join("ok"), &quick()).unwrap();
        assert_eq!(fs::read(store.join("ok").join(long)).unwrap(), b"ok");
    });
}

/// Defect 11: a GNU sparse entry keeps its holes (a 64 MiB file with 8 KiB of data takes 8 KiB, not 64 MiB), reads
/// back exactly, and verifies.
#[test]
fn sparse_entries_keep_their_holes() {
    privileged("sparse_entries_keep_their_holes", |scratch| {
        let x = vec![b'x'; 4096];
        let y = vec![b'y'; 4096];
        let real = 64u64 << 20;
        let mut t = Tar::new();
        t.sparse("sparse", real, &[(0, &x), (32 << 20, &y)]);
        t.add(&E::File("after", "a"));
        let blob = t.finish();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        std::io::Write::write_all(&mut gz, &blob).unwrap();
        let gz = gz.finish().unwrap();
        assert!(gz.len() < 1024, "{}", gz.len());
        let dest = scratch.join("layer");
        let layer = apply(&gz[..], &dest, &quick()).unwrap();
        let m = fs::metadata(dest.join("sparse")).unwrap();
        assert_eq!(m.len(), real);
        assert!(m.blocks() * 512 <= 64 << 10, "holes kept: {} bytes allocated", m.blocks() * 512);
        let data = fs::read(dest.join("sparse")).unwrap();
        assert_eq!(&data[..4096], &x[..]);
        assert!(data[4096..32 << 20].iter().all(|&b| b == 0));
        assert_eq!(&data[32 << 20..(32 << 20) + 4096], &y[..]);
        assert!(data[(32 << 20) + 4096..].iter().all(|&b| b == 0));
        assert_eq!(fs::read(dest.join("after")).unwrap(), b"a");
        assert_eq!(verify(&dest).unwrap().content_digest, layer.content_digest);
        // The digest holds the holes' zeros: filling one hole with data is found.
        let f = fs::OpenOptions::new().write(true).open(dest.join("sparse")).unwrap();
        std::os::unix::fs::FileExt::write_at(&f, b"z", 1 << 20).unwrap();
        assert_eq!(verify(&dest).unwrap_err().kind(), ErrorKind::InvalidLayer(LayerProblem::ContentMismatch));
    });
}

/// A POSIX ACL (`system.posix_acl_*` value): owner rwx, user 1000 r-x, group r-x, mask r-x, others none.
fn acl() -> Vec<u8> {
    let mut v = 2u32.to_le_bytes().to_vec();
    for (tag, perm, id) in [(0x01u16, 7u16, u32::MAX), (0x02, 5, 1000), (0x04, 5, u32::MAX), (0x10, 5, u32::MAX)]
        .into_iter()
        .chain([(0x20u16, 0u16, u32::MAX)])
    {
        v.extend_from_slice(&tag.to_le_bytes());
        v.extend_from_slice(&perm.to_le_bytes());
        v.extend_from_slice(&id.to_le_bytes());
    }
    v
}

/// Defect 6: the recorded content digest is what a read-back of the tree sees, even when the filesystem changes what
/// was written: a directory's default ACL gives its children an access ACL and other modes; ext4 clamps times
/// outside its range and drops nanoseconds (128-byte inodes). `verify` (a walk of the tree) must agree with what
/// `apply` recorded, in any build.
#[test]
fn the_recorded_digest_is_what_a_read_back_sees() {
    privileged("the_recorded_digest_is_what_a_read_back_sees", |scratch| {
        let mut t = Tar::new();
        t.add_with(
            &E::Dir("acl"),
            &Opt { pax: vec![("SCHILY.xattr.system.posix_acl_default".into(), acl())], ..Opt::default() },
        );
        t.add(&E::File("acl/f", "inherits"));
        t.add(&E::Dir("acl/sub"));
        t.add(&E::File("acl/sub/g", "inherits too"));
        t.add(&E::Symlink("acl/l", "f"));
        t.add(&E::Fifo("acl/p"));
        t.add(&E::Hardlink("acl/h", "acl/f"));
        t.add(&E::File("plain", "p"));
        let blob = t.finish();
        let dest = scratch.join("acl-layer");
        let layer = apply(&blob[..], &dest, &quick()).unwrap();
        let mut buf = vec![0u8; 256];
        assert!(
            rustix::fs::getxattr(dest.join("acl/f"), "system.posix_acl_access", &mut buf[..]).is_ok(),
            "the ACL was inherited (so the filesystem did change what was written)"
        );
        assert_eq!(verify(&dest).unwrap().content_digest, layer.content_digest);

        let disk = Ext4::create(&scratch.join("ext4.img"), &scratch.join("ext4"), 32, "");
        let mut t = Tar::new();
        for (name, time) in
            [("far-future", "100000000000.5"), ("far-past", "-100000000000"), ("ns", "1700000000.123456789")]
        {
            t.add_with(
                &E::File(Box::leak(name.to_string().into_boxed_str()), "t"),
                &Opt { pax: vec![("mtime".into(), time.as_bytes().to_vec())], ..Opt::default() },
            );
        }
        t.add_with(
            &E::Symlink("far-link", "far-future"),
            &Opt { pax: vec![("mtime".into(), b"100000000000".to_vec())], ..Opt::default() },
        );
        let dest = disk.at.join("times");
        let layer = apply(&t.finish()[..], &dest, &quick()).unwrap();
        assert_ne!(fs::metadata(dest.join("far-future")).unwrap().mtime(), 100_000_000_000, "ext4 clamped it");
        assert_eq!(verify(&dest).unwrap().content_digest, layer.content_digest);
        drop(disk);
    });
}

/// Defect 7: `apply` refuses the names `recover` treats as its own (staging directories, temporary markers,
/// markers), and `recover` never removes a directory that has a commit marker.
#[test]
fn names_recover_owns_are_refused_and_committed_layers_are_never_swept() {
    privileged("names_recover_owns_are_refused_and_committed_layers_are_never_swept", |scratch| {
        let store = scratch.join("store");
        fs::create_dir(&store).unwrap();
        let blob = tar_of(&[E::File("f", "data")]);
        for name in [".cache.partial-keep", ".x.partial-1-2", ".a.commit.tmp", "a.commit"] {
            let err = apply(&blob[..], store.join(name), &quick()).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidInput, "{name}: {err}");
            assert!(err.to_string().contains(name), "{name}: {err}");
            assert!(names(&store).is_empty(), "{name}: {:?}", names(&store));
        }
        // A committed layer that another tool named like a staging directory survives recover.
        apply(&blob[..], store.join("keep"), &quick()).unwrap();
        fs::rename(store.join("keep"), store.join(".cache.partial-1-1")).unwrap();
        fs::rename(marker_path(store.join("keep")), marker_path(store.join(".cache.partial-1-1"))).unwrap();
        let report = recover(&store).unwrap();
        assert!(report.removed.is_empty(), "{report:?}");
        assert_eq!(report.committed, vec![store.join(".cache.partial-1-1")]);
        verify(store.join(".cache.partial-1-1")).unwrap();
    });
}

/// Defect 8: a marker that cannot be written (a tmpfs out of inodes) publishes nothing; a retry then works. A stale
/// marker left from an earlier layer of the same name is refused, so a new directory can never pass as committed.
#[test]
fn a_marker_that_cannot_be_written_publishes_nothing() {
    privileged("a_marker_that_cannot_be_written_publishes_nothing", |scratch| {
        let store = scratch.join("store");
        fs::create_dir(&store).unwrap();
        // Root, staging directory and two files: the marker's temporary file is the fifth inode.
        rustix::mount::mount("tmpfs", &store, "tmpfs", rustix::mount::MountFlags::empty(), c"nr_inodes=4").unwrap();
        let blob = tar_of(&[E::File("a", "a"), E::File("b", "b")]);
        let err = apply(&blob[..], store.join("l"), &ApplyOptions::new()).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(28), "ENOSPC: {err}");
        assert!(names(&store).is_empty(), "nothing published, nothing left: {:?}", names(&store));
        rustix::mount::mount_remount(&store, rustix::mount::MountFlags::empty(), c"nr_inodes=100").unwrap();
        apply(&blob[..], store.join("l"), &ApplyOptions::new()).unwrap();
        verify(store.join("l")).unwrap();

        // A stale marker (its layer deleted without it) is refused and left for recover.
        fs::write(marker_path(store.join("stale")), fs::read(marker_path(store.join("l"))).unwrap()).unwrap();
        let err = apply(&tar_of(&[E::File("other", "o")])[..], store.join("stale"), &quick()).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidLayer(LayerProblem::DestinationExists), "{err}");
        assert!(err.to_string().contains("stale.commit"), "{err}");
        assert_eq!(names(&store), ["l", "l.commit", "stale.commit"]);
        let report = recover(&store).unwrap();
        assert_eq!(report.removed, vec![marker_path(store.join("stale"))]);
        apply(&tar_of(&[E::File("other", "o")])[..], store.join("stale"), &quick()).unwrap();
        verify(store.join("stale")).unwrap();
        common::umount(&store);
    });
}

/// Defect 14: PAX mtime -1.5 is 1.5 s before the epoch (-2 s + 0.5 s), not -0.5 s.
#[test]
fn negative_fractional_pax_times() {
    privileged("negative_fractional_pax_times", |scratch| {
        let mut t = Tar::new();
        for (name, time) in [("a", "-1.5"), ("b", "-0.25"), ("c", "-3")] {
            t.add_with(
                &E::File(name, "t"),
                &Opt { pax: vec![("mtime".into(), time.as_bytes().to_vec())], ..Opt::default() },
            );
        }
        let dest = scratch.join("layer");
        apply(&t.finish()[..], &dest, &quick()).unwrap();
        let times = |n: &str| {
            let m = fs::symlink_metadata(dest.join(n)).unwrap();
            (m.mtime(), m.mtime_nsec())
        };
        assert_eq!(times("a"), (-2, 500_000_000));
        assert_eq!(times("b"), (-1, 750_000_000));
        assert_eq!(times("c"), (-3, 0));
        verify(&dest).unwrap();
    });
}
