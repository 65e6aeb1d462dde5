//! Layers for snapshotters: `apply_into` an existing empty directory, `is_committed`, `recover_dirs` over a
//! `snapshots/<id>/{fs,work}` layout, a reader's failure told apart from a corrupt layer, and the progress callback.

mod common;

use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::archive::{E, tar_of, tree};
use common::privileged;
use layermount::{
    ApplyOptions, ErrorKind, LayerProblem, Progress, SyncMode, apply, apply_into, is_committed, marker_path, recover,
    recover_dirs, verify,
};

fn quick() -> ApplyOptions {
    ApplyOptions::new().sync(SyncMode::None)
}

fn layer() -> Vec<u8> {
    tar_of(&[E::Dir("etc"), E::File("etc/hostname", "snap\n"), E::Symlink("bin", "usr/bin"), E::File("a", "aaaa")])
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> =
        fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    v.sort();
    v
}

/// The caller's empty directory: mode 0700, owned by 1234:1234, so a replacement would show.
fn empty_dir(path: &Path) -> (u64, u32, u32, u32) {
    fs::create_dir_all(path).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o700)).unwrap();
    std::os::unix::fs::lchown(path, Some(1234), Some(1234)).unwrap();
    let m = fs::symlink_metadata(path).unwrap();
    (m.ino(), m.uid(), m.gid(), m.mode() & 0o7777)
}

fn identity(path: &Path) -> (u64, u32, u32, u32) {
    let m = fs::symlink_metadata(path).unwrap();
    (m.ino(), m.uid(), m.gid(), m.mode() & 0o7777)
}

#[test]
fn apply_into_swaps_the_layer_into_the_empty_directory() {
    privileged("apply_into_swaps_the_layer_into_the_empty_directory", |scratch| {
        let snap = scratch.join("snapshots/1");
        let fs_dir = snap.join("fs");
        let before = empty_dir(&fs_dir);
        fs::create_dir(snap.join("work")).unwrap();
        assert!(!is_committed(&fs_dir).unwrap());
        let applied = apply_into(&layer()[..], &fs_dir, &quick()).unwrap();
        assert!(is_committed(&fs_dir).unwrap());
        assert_ne!(identity(&fs_dir).0, before.0, "the staged directory was swapped in");
        // Only the layer, its marker and the caller's work directory: the old empty directory was removed.
        assert_eq!(names(&snap), ["fs", "fs.commit", "work"]);
        assert_eq!(fs::read(fs_dir.join("etc/hostname")).unwrap(), b"snap\n");
        assert_eq!(fs::read_link(fs_dir.join("bin")).unwrap(), Path::new("usr/bin"));
        // The same layer as `apply` makes: same digests, same tree, root 0755 owned by root.
        let flat = scratch.join("flat");
        let direct = apply(&layer()[..], &flat, &quick()).unwrap();
        assert_eq!(applied, direct);
        assert_eq!(tree(&fs_dir), tree(&flat));
        let (a, b) = (identity(&fs_dir), identity(&flat));
        assert_eq!((a.1, a.2, a.3), (b.1, b.2, b.3));
        assert_eq!(verify(&fs_dir).unwrap().content_digest, applied.content_digest);
        // Applying again into a committed directory is refused (it is not empty, and its marker is there).
        let err = apply_into(&layer()[..], &fs_dir, &quick()).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidLayer(LayerProblem::DestinationNotEmpty), "{err}");
    });
}

#[test]
fn apply_into_refuses_bad_destinations_and_leaves_the_empty_directory_as_it_was() {
    privileged("apply_into_refuses_bad_destinations_and_leaves_the_empty_directory_as_it_was", |scratch| {
        let snap = scratch.join("snapshots/2");
        let fs_dir = snap.join("fs");
        let before = empty_dir(&fs_dir);

        // Not empty: refused, the content untouched.
        fs::write(fs_dir.join("keep"), "mine").unwrap();
        let err = apply_into(&layer()[..], &fs_dir, &quick()).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidLayer(LayerProblem::DestinationNotEmpty), "{err}");
        assert!(err.to_string().contains(&fs_dir.display().to_string()), "{err}");
        assert_eq!(fs::read(fs_dir.join("keep")).unwrap(), b"mine");
        fs::remove_file(fs_dir.join("keep")).unwrap();

        // Not a directory, a symlink to one, missing.
        fs::write(snap.join("file"), "").unwrap();
        std::os::unix::fs::symlink("fs", snap.join("link")).unwrap();
        for (name, kind) in
            [("file", ErrorKind::InvalidInput), ("link", ErrorKind::InvalidInput), ("gone", ErrorKind::Os)]
        {
            let err = apply_into(&layer()[..], snap.join(name), &quick()).unwrap_err();
            assert_eq!(err.kind(), kind, "{name}: {err}");
        }
        assert_eq!(fs::read_link(snap.join("link")).unwrap(), Path::new("fs"));
        fs::remove_file(snap.join("file")).unwrap();
        fs::remove_file(snap.join("link")).unwrap();

        // A corrupt archive, a wrong digest, a hostile entry: nothing half-done.
        let mut cut = layer();
        cut.truncate(700);
        let wrong = quick().expect_diff_id(format!("sha256:{}", "0".repeat(64)));
        let breakout = tar_of(&[E::File("../escape", "x")]);
        for (what, blob, opts, kind) in [
            ("cut", cut, quick(), ErrorKind::InvalidLayer(LayerProblem::Corrupt)),
            ("digest", layer(), wrong, ErrorKind::InvalidLayer(LayerProblem::DigestMismatch)),
            ("breakout", breakout, quick(), ErrorKind::Breakout),
        ] {
            let err = apply_into(&blob[..], &fs_dir, &opts).unwrap_err();
            assert_eq!(err.kind(), kind, "{what}: {err}");
            assert_eq!(identity(&fs_dir), before, "{what}: the caller's directory, as it was");
            assert_eq!(names(&snap), ["fs"], "{what}: nothing left beside it");
            assert!(names(&fs_dir).is_empty(), "{what}");
            assert!(!is_committed(&fs_dir).unwrap());
        }
        assert!(!scratch.join("escape").exists() && !scratch.join("snapshots/escape").exists());

        // A mount point cannot be swapped: refused by the kernel, nothing left.
        common::mount_tmpfs(&fs_dir);
        let err = apply_into(&layer()[..], &fs_dir, &quick()).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(16), "EBUSY: {err}");
        common::umount(&fs_dir);
        assert_eq!(identity(&fs_dir), before);
        assert_eq!(names(&snap), ["fs"]);

        // A marker left from before: refused (the layer would look committed).
        fs::write(marker_path(&fs_dir), "stale").unwrap();
        let err = apply_into(&layer()[..], &fs_dir, &quick()).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidLayer(LayerProblem::DestinationExists), "{err}");
        assert!(!is_committed(&fs_dir).unwrap(), "a malformed marker does not commit");
        fs::remove_file(marker_path(&fs_dir)).unwrap();
        apply_into(&layer()[..], &fs_dir, &quick()).unwrap();
        assert!(is_committed(&fs_dir).unwrap());
    });
}

/// A reader that yields `blob` in small pieces, then fails with `kind` once `fail_at` bytes are out.
struct Failing {
    blob: Vec<u8>,
    pos: usize,
    fail_at: usize,
    kind: io::ErrorKind,
}

impl Read for Failing {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pos >= self.fail_at {
            return Err(io::Error::new(self.kind, "the caller's own reason"));
        }
        let n = buf.len().min(4096).min(self.fail_at - self.pos).min(self.blob.len() - self.pos);
        buf[..n].copy_from_slice(&self.blob[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

fn big_layer() -> Vec<u8> {
    let data: &'static str = Box::leak("0123456789abcdef".repeat(4096).into_boxed_str());
    let names: Vec<&'static str> = (0..40).map(|i| &*Box::leak(format!("f{i}").into_boxed_str())).collect();
    tar_of(&names.iter().map(|n| E::File(n, data)).collect::<Vec<_>>())
}

fn gzip(blob: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    io::Write::write_all(&mut gz, blob).unwrap();
    gz.finish().unwrap()
}

#[test]
fn a_failing_reader_is_cancelled_or_its_own_error_never_a_corrupt_layer() {
    privileged("a_failing_reader_is_cancelled_or_its_own_error_never_a_corrupt_layer", |scratch| {
        let plain = big_layer();
        let compressed = gzip(&plain);
        for (format, blob) in [("tar", plain), ("tar+gzip", compressed)] {
            for (kind, want) in [
                (io::ErrorKind::Interrupted, ErrorKind::Cancelled),
                (io::ErrorKind::TimedOut, ErrorKind::Os),
                (io::ErrorKind::ConnectionReset, ErrorKind::Os),
            ] {
                let fail_at = blob.len() / 2;
                let fs_dir = scratch.join(format!("s/{format}-{kind:?}/fs"));
                let before = empty_dir(&fs_dir);
                let reader = Failing { blob: blob.clone(), pos: 0, fail_at, kind };
                let err = apply_into(reader, &fs_dir, &quick()).unwrap_err();
                assert_eq!(err.kind(), want, "{format}, {kind:?}: {err}");
                if want == ErrorKind::Os {
                    assert_eq!(err.io_kind(), Some(kind), "{format}: {err}");
                    assert!(err.to_string().contains("the caller's own reason"), "{err}");
                    assert_eq!(io::Error::from(err.clone()).kind(), kind);
                } else {
                    assert_eq!(io::Error::from(err.clone()).kind(), io::ErrorKind::Interrupted);
                }
                assert_eq!(identity(&fs_dir), before);
                assert_eq!(names(fs_dir.parent().unwrap()), ["fs"], "{format}, {kind:?}: nothing left");

                let dest = scratch.join(format!("flat-{format}-{kind:?}"));
                let reader = Failing { blob: blob.clone(), pos: 0, fail_at, kind };
                let err = apply(reader, &dest, &quick()).unwrap_err();
                assert_eq!(err.kind(), want, "apply, {format}, {kind:?}: {err}");
                assert!(!dest.exists());
            }
        }
        // A reader that fails before giving anything.
        let reader = Failing { blob: Vec::new(), pos: 0, fail_at: 0, kind: io::ErrorKind::Interrupted };
        let err = apply(reader, scratch.join("never"), &quick()).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Cancelled, "{err}");
        // Corrupt compression is still a corrupt layer.
        let mut bad = gzip(&big_layer());
        let mid = bad.len() / 2;
        bad[mid..mid + 64].fill(0xa5);
        let err = apply(&bad[..], scratch.join("bad"), &quick()).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidLayer(LayerProblem::Corrupt), "{err}");
        assert_eq!(names(scratch).iter().filter(|n| n.starts_with('.')).count(), 0, "{:?}", names(scratch));
    });
}

/// A reader that gives 8 KiB every 20 ms.
struct Slow<'a>(&'a [u8]);

impl Read for Slow<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        std::thread::sleep(Duration::from_millis(20));
        let n = buf.len().min(8192).min(self.0.len());
        buf[..n].copy_from_slice(&self.0[..n]);
        self.0 = &self.0[n..];
        Ok(n)
    }
}

#[test]
fn progress_reports_bytes_and_entries_at_most_every_100_ms() {
    privileged("progress_reports_bytes_and_entries_at_most_every_100_ms", |scratch| {
        let blob = gzip(&big_layer());
        let seen: Arc<Mutex<Vec<(Instant, Progress)>>> = Arc::default();
        let log = seen.clone();
        let opts = quick().progress(Arc::new(move |p| log.lock().unwrap().push((Instant::now(), p))));
        let start = Instant::now();
        let fs_dir = scratch.join("s/fs");
        empty_dir(&fs_dir);
        let applied = apply_into(Slow(&blob), &fs_dir, &opts).unwrap();
        let elapsed = start.elapsed();
        let seen = seen.lock().unwrap();
        let last = seen.last().expect("called at least once").1;
        assert_eq!(last.bytes_read, blob.len() as u64, "the last call has the totals");
        assert_eq!(last.entries, applied.stats.entries);
        assert!(seen.len() >= 3, "{} calls in {elapsed:?}", seen.len());
        for w in seen.windows(2) {
            assert!(w[1].1.bytes_read >= w[0].1.bytes_read && w[1].1.entries >= w[0].1.entries);
        }
        // At most one call per 100 ms, the closing one aside.
        for w in seen[..seen.len() - 1].windows(2) {
            let gap = w[1].0 - w[0].0;
            assert!(gap >= Duration::from_millis(99), "calls {gap:?} apart");
        }
    });
}

#[test]
fn recover_dirs_cleans_a_snapshot_layout_that_recover_cannot() {
    privileged("recover_dirs_cleans_a_snapshot_layout_that_recover_cannot", |scratch| {
        let snapshots = scratch.join("snapshots");
        let fs_of = |id: u32| snapshots.join(id.to_string()).join("fs");
        // 1: committed. 2: a crash mid-apply (staging sibling with files, a temporary marker) and its work dir.
        // 3: an fs without marker. 4: an orphan marker, its fs gone. 5: listed, but no directory at all.
        for id in 1..=3 {
            empty_dir(&fs_of(id));
            fs::create_dir(snapshots.join(format!("{id}/work"))).unwrap();
        }
        apply_into(&layer()[..], fs_of(1), &quick()).unwrap();
        fs::remove_dir(fs_of(2)).unwrap();
        fs::create_dir_all(snapshots.join("2/.fs.partial-99-0/etc")).unwrap();
        fs::write(snapshots.join("2/.fs.partial-99-0/etc/half"), "half").unwrap();
        fs::write(snapshots.join("2/.fs.99-1.commit.tmp"), "half a marker").unwrap();
        // Another program's files, and staging of a name not listed: not ours, left alone.
        fs::create_dir_all(snapshots.join("2/.other.partial-5-5")).unwrap();
        fs::write(snapshots.join("2/notes.commit.tmp"), "theirs").unwrap();
        fs::create_dir_all(snapshots.join("4")).unwrap();
        fs::write(marker_path(fs_of(4)), "orphan").unwrap();

        // The flat recover takes every snapshot directory for a layer: all incomplete.
        let flat = recover(&snapshots).unwrap();
        assert!(flat.committed.is_empty() && flat.incomplete.len() == 4, "{flat:?}");

        let report = recover_dirs((1..=5).map(fs_of)).unwrap();
        assert_eq!(report.committed, [fs_of(1)]);
        assert_eq!(report.incomplete, [(fs_of(3), LayerProblem::MissingMarker)]);
        let mut removed = report.removed.clone();
        removed.sort();
        let want: Vec<PathBuf> =
            vec![snapshots.join("2/.fs.99-1.commit.tmp"), snapshots.join("2/.fs.partial-99-0"), marker_path(fs_of(4))];
        assert_eq!(removed, want);
        assert_eq!(names(&snapshots.join("2")), [".other.partial-5-5", "notes.commit.tmp", "work"]);
        assert_eq!(names(&snapshots.join("1")), ["fs", "fs.commit", "work"]);
        assert!(verify(fs_of(1)).is_ok());
        // A second run finds nothing more to do.
        let again = recover_dirs((1..=5).map(fs_of)).unwrap();
        assert!(again.removed.is_empty(), "{again:?}");
    });
}

/// Someone else acts on the destination while the layer is applied (here from the progress callback, which runs
/// during the apply): a marker that appears, a file written into the empty directory. The directories are swapped
/// back and the caller's directory is as it was, with what was written into it.
#[test]
fn apply_into_swaps_back_when_the_destination_changes_under_it() {
    privileged("apply_into_swaps_back_when_the_destination_changes_under_it", |scratch| {
        let fs_dir = scratch.join("s/fs");
        let before = empty_dir(&fs_dir);
        let racer = fs_dir.clone();
        let opts = quick().progress(Arc::new(move |_| {
            let _ = fs::write(marker_path(&racer), "someone else's");
        }));
        let err = apply_into(&layer()[..], &fs_dir, &opts).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(17), "EEXIST putting the marker in place: {err}");
        assert_eq!(identity(&fs_dir), before, "the caller's directory is back");
        assert!(names(&fs_dir).is_empty());
        assert_eq!(names(&scratch.join("s")), ["fs", "fs.commit"], "nothing of ours left");
        assert_eq!(fs::read(marker_path(&fs_dir)).unwrap(), b"someone else's");
        fs::remove_file(marker_path(&fs_dir)).unwrap();

        let racer = fs_dir.clone();
        let opts = quick().progress(Arc::new(move |_| {
            let _ = fs::write(racer.join("late"), "written during the apply");
        }));
        let err = apply_into(&layer()[..], &fs_dir, &opts).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Race, "{err}");
        assert_eq!(identity(&fs_dir), before);
        assert_eq!(fs::read(fs_dir.join("late")).unwrap(), b"written during the apply");
        assert_eq!(names(&scratch.join("s")), ["fs"]);
        assert!(!is_committed(&fs_dir).unwrap());
    });
}

/// A layer directory whose name is not UTF-8: its staging sibling carries the name's own bytes, so `recover_dirs`
/// (which matches by bytes) finds what a crash would leave of it.
#[test]
fn a_non_utf8_layer_name_keeps_its_bytes_in_staging() {
    privileged("a_non_utf8_layer_name_keeps_its_bytes_in_staging", |scratch| {
        use std::ffi::OsStr;
        use std::os::unix::ffi::OsStrExt;
        let snap = scratch.join("s");
        let dir = snap.join(OsStr::from_bytes(b"f\xffs"));
        empty_dir(&dir);
        let seen: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
        let (log, parent) = (seen.clone(), snap.clone());
        let opts = quick().progress(Arc::new(move |_| {
            for e in fs::read_dir(&parent).unwrap() {
                log.lock().unwrap().push(e.unwrap().file_name().as_bytes().to_vec());
            }
        }));
        apply_into(&layer()[..], &dir, &opts).unwrap();
        let seen = seen.lock().unwrap();
        assert!(seen.iter().any(|n| n.starts_with(b".f\xffs.partial-")), "{seen:?}");
        // What a crash would leave, found by those bytes.
        fs::remove_file(marker_path(&dir)).unwrap();
        let staging = snap.join(OsStr::from_bytes(b".f\xffs.partial-7-0"));
        fs::create_dir(&staging).unwrap();
        let report = recover_dirs([&dir]).unwrap();
        assert_eq!(report.removed, [staging]);
        assert_eq!(report.incomplete, [(dir, LayerProblem::MissingMarker)]);
    });
}
