//! `apply` throughput against GNU `tar -x` of the same file, in the same run.
//!
//! Run as root: `cargo bench --bench apply`. Two generated layers: 20,000 small files (512 bytes, 200 directories)
//! and three 100 MiB files. Each is applied on a tmpfs (private mount namespace) with `sync none`, and on a fresh
//! ext4 (loop device over a sparse file on the real disk) with `none`, `syncfs` and (big layer) `fsync`. GNU
//! `tar -x` runs on the same filesystems, alone, followed by `sha256sum` of the blob (what a snapshotter using tar
//! must add to learn the diff_id), and followed by a `syncfs` (the durable equivalent). A third group applies a layer
//! that replaces 20,000 directories with files, with and without 2,000 extra mounts.

#[path = "../tests/common/mod.rs"]
mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion};
use layermount::{ApplyOptions, SyncMode, apply, remove_all};

fn write_tar(path: &Path, build: impl FnOnce(&mut tar::Builder<fs::File>)) {
    let mut b = tar::Builder::new(fs::File::create(path).unwrap());
    build(&mut b);
    b.finish().unwrap();
}

fn entry(b: &mut tar::Builder<fs::File>, name: &str, data: &[u8]) {
    let mut h = tar::Header::new_gnu();
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_mtime(1_600_000_000);
    h.set_uid(0);
    h.set_gid(0);
    h.set_entry_type(tar::EntryType::Regular);
    b.append_data(&mut h, name, data).unwrap();
}

fn make_layers(dir: &Path) -> [(String, PathBuf); 2] {
    let small = dir.join("small.tar");
    write_tar(&small, |b| {
        let mut seed = 0x9e3779b97f4a7c15u64;
        for d in 0..200 {
            for f in 0..100 {
                let data: Vec<u8> = (0..512)
                    .map(|_| {
                        seed ^= seed << 13;
                        seed ^= seed >> 7;
                        seed ^= seed << 17;
                        seed as u8
                    })
                    .collect();
                entry(b, &format!("d{d}/f{f}"), &data);
            }
        }
    });
    let big = dir.join("big.tar");
    write_tar(&big, |b| {
        for i in 0..3u8 {
            let data: Vec<u8> = (0..100u32 << 20).map(|j| (j.wrapping_mul(2654435761) >> 13) as u8 ^ i).collect();
            entry(b, &format!("blob{i}"), &data);
        }
    });
    [("20k-small-files".to_string(), small), ("3x100MiB".to_string(), big)]
}

/// Time `run(dest)` into a fresh destination each iteration. On ext4 (`keep`) outputs stay until the filesystem
/// goes: deleting tens of thousands of inodes between iterations makes ext4's inode allocator slow (it skips
/// recently deleted inodes), which would measure the allocator, not the tool. On tmpfs they are removed, untimed.
fn timed(target: &Path, iters: u64, keep: bool, mut run: impl FnMut(&Path)) -> Duration {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        let dest = target.join(format!("out{}", N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)));
        let start = Instant::now();
        run(&dest);
        total += start.elapsed();
        if !keep {
            remove_all(&dest).unwrap();
            let _ = fs::remove_file(layermount::marker_path(&dest));
        }
    }
    total
}

fn tar_x(tarball: &Path, dest: &Path) {
    fs::create_dir(dest).unwrap();
    let ok = Command::new("tar").arg("-xf").arg(tarball).arg("-C").arg(dest).status().unwrap().success();
    assert!(ok);
}

/// A fresh ext4 filesystem on a loop device backed by a sparse file on the real disk, mounted at `at` in this
/// private mount namespace: each benchmark starts from the same state.
struct Ext4 {
    at: PathBuf,
    image: PathBuf,
}

impl Ext4 {
    fn new(at: &Path, image: &Path) -> Self {
        let f = fs::File::create(image).unwrap();
        f.set_len(12 << 30).unwrap();
        let ok = Command::new("mkfs.ext4").args(["-q", "-F", "-N", "600000"]).arg(image).status().unwrap().success();
        assert!(ok, "mkfs.ext4");
        fs::create_dir_all(at).unwrap();
        let ok =
            Command::new("mount").args(["-t", "ext4", "-o", "loop"]).arg(image).arg(at).status().unwrap().success();
        assert!(ok, "mount -o loop");
        Ext4 { at: at.to_path_buf(), image: image.to_path_buf() }
    }
}

impl Drop for Ext4 {
    fn drop(&mut self) {
        // Not detached: a plain unmount, so the loop device is released (autoclear) before the image goes.
        rustix::mount::unmount(&self.at, rustix::mount::UnmountFlags::empty()).unwrap();
        fs::remove_dir(&self.at).unwrap();
        fs::remove_file(&self.image).unwrap();
    }
}

fn bench(c: &mut Criterion, scratch: &Path) {
    // The test helper's tmpfs is small: a 4 GiB one for the blobs and the tmpfs runs (private namespace, so it goes
    // away with the bench).
    let ram = scratch.join("ram");
    fs::create_dir(&ram).unwrap();
    rustix::mount::mount("tmpfs", &ram, "tmpfs", rustix::mount::MountFlags::empty(), c"size=6g").unwrap();
    let layers = make_layers(&ram);
    let disk_parent =
        tempfile::Builder::new().prefix("layermount-bench-").tempdir_in(std::env::temp_dir()).unwrap().keep();
    let mut g = c.benchmark_group("apply");
    g.sample_size(10).warm_up_time(Duration::from_millis(200)).measurement_time(Duration::from_secs(3));
    for (name, tarball) in &layers {
        let small = name.starts_with("20k");
        // tmpfs: sync none (syncs are no-ops there).
        let tmp = ram.join(format!("out-{name}"));
        fs::create_dir(&tmp).unwrap();
        g.bench_function(BenchmarkId::new("layermount/tmpfs/sync-none", name), |b| {
            b.iter_custom(|n| {
                timed(&tmp, n, false, |d| {
                    drop(apply(fs::File::open(tarball).unwrap(), d, &ApplyOptions::new().sync(SyncMode::None)).unwrap())
                })
            })
        });
        g.bench_function(BenchmarkId::new("gnu-tar-x/tmpfs", name), |b| {
            b.iter_custom(|n| timed(&tmp, n, false, |d| tar_x(tarball, d)))
        });
        g.bench_function(BenchmarkId::new("gnu-tar-x+sha256sum/tmpfs", name), |b| {
            b.iter_custom(|n| {
                timed(&tmp, n, false, |d| {
                    tar_x(tarball, d);
                    assert!(Command::new("sha256sum").arg(tarball).output().unwrap().status.success());
                })
            })
        });
        remove_all(&tmp).unwrap();
        // ext4 on the disk, a fresh filesystem per benchmark. Per-file fsync of 20,000 files takes tens of
        // seconds a run here, so it is measured on the big layer only.
        let modes: &[SyncMode] = if small {
            &[SyncMode::None, SyncMode::Syncfs]
        } else {
            &[SyncMode::None, SyncMode::Syncfs, SyncMode::Fsync]
        };
        for mode in modes {
            let fs = Ext4::new(&ram.join("ext4"), &disk_parent.join("image"));
            g.bench_function(BenchmarkId::new(format!("layermount/ext4/sync-{mode:?}").to_lowercase(), name), |b| {
                b.iter_custom(|n| {
                    timed(&fs.at, n, true, |d| {
                        drop(apply(fs::File::open(tarball).unwrap(), d, &ApplyOptions::new().sync(*mode)).unwrap())
                    })
                })
            });
        }
        let fs = Ext4::new(&ram.join("ext4"), &disk_parent.join("image"));
        g.bench_function(BenchmarkId::new("gnu-tar-x/ext4", name), |b| {
            b.iter_custom(|n| timed(&fs.at, n, true, |d| tar_x(tarball, d)))
        });
        drop(fs);
        let fs = Ext4::new(&ram.join("ext4"), &disk_parent.join("image"));
        g.bench_function(BenchmarkId::new("gnu-tar-x+sync/ext4", name), |b| {
            b.iter_custom(|n| {
                timed(&fs.at, n, true, |d| {
                    tar_x(tarball, d);
                    rustix::fs::syncfs(fs::File::open(d).unwrap()).unwrap();
                })
            })
        });
        drop(fs);
    }
    g.finish();
    fs::remove_dir(&disk_parent).unwrap();
    common::umount(&ram);
}

/// 20,000 directories each replaced by a file of the same name (60,000 entries), on tmpfs with `sync none`, with
/// the mount table as it is and with 2,000 more mounts in it: the cost of a replaced directory must depend on
/// neither the layer's size nor the mount table's (issue 10, defect 12: 7.3 s and 114 s before).
fn bench_replaced_dirs(c: &mut Criterion, scratch: &Path) {
    let ram = scratch.join("ram-replaced");
    fs::create_dir(&ram).unwrap();
    rustix::mount::mount("tmpfs", &ram, "tmpfs", rustix::mount::MountFlags::empty(), c"size=2g").unwrap();
    let blob = ram.join("replaced.tar");
    write_tar(&blob, |b| {
        for i in 0..20_000 {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Directory);
            h.set_mode(0o755);
            h.set_size(0);
            b.append_data(&mut h, format!("d{i}/"), &[][..]).unwrap();
            entry(b, &format!("d{i}/x"), b"x");
            entry(b, &format!("d{i}"), b"y");
        }
    });
    let out = ram.join("out");
    fs::create_dir(&out).unwrap();
    let mut g = c.benchmark_group("apply-replaced-dirs");
    g.sample_size(10).warm_up_time(Duration::from_millis(200)).measurement_time(Duration::from_secs(3));
    let run = |g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>, name: &str| {
        g.bench_function(name, |b| {
            b.iter_custom(|n| {
                timed(&out, n, false, |d| {
                    drop(apply(fs::File::open(&blob).unwrap(), d, &ApplyOptions::new().sync(SyncMode::None)).unwrap())
                })
            })
        });
    };
    run(&mut g, "20k/mounts-as-is");
    let mounts: Vec<PathBuf> = (0..2000).map(|i| ram.join(format!("m{i}"))).collect();
    for m in &mounts {
        fs::create_dir(m).unwrap();
        rustix::mount::mount("tmpfs", m, "tmpfs", rustix::mount::MountFlags::empty(), c"size=1m").unwrap();
    }
    run(&mut g, "20k/2000-more-mounts");
    g.finish();
    for m in &mounts {
        common::umount(m);
    }
    common::umount(&ram);
}

fn main() {
    common::privileged("bench apply", |scratch| {
        let mut c = Criterion::default().configure_from_args();
        bench_replaced_dirs(&mut c, scratch);
        bench(&mut c, scratch);
        c.final_summary();
    });
}
