//! A small ext4 filesystem on a loop device, for tests that need a real disk filesystem: clamped timestamps, and
//! durability (what reached the "disk" is exactly what the loop device's backing file holds, so copying that file is
//! a power cut).
#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// An ext4 image mounted (loop, in the caller's private mount namespace) at `at`; unmounted when dropped (a plain
/// unmount, so the loop device is released). The image file stays.
pub struct Ext4 {
    pub at: PathBuf,
    pub image: PathBuf,
}

impl Ext4 {
    /// Make a fresh `size_mib` MiB ext4 image at `image` and mount it at `at` with `options` (e.g. `commit=300`).
    pub fn create(image: &Path, at: &Path, size_mib: u64, options: &str) -> Self {
        fs::File::create(image).unwrap().set_len(size_mib << 20).unwrap();
        let ok = Command::new("mkfs.ext4").args(["-q", "-F"]).arg(image).status().expect("mkfs.ext4").success();
        assert!(ok, "mkfs.ext4");
        Self::mount(image, at, options)
    }

    /// Mount an existing image.
    pub fn mount(image: &Path, at: &Path, options: &str) -> Self {
        fs::create_dir_all(at).unwrap();
        let opts = if options.is_empty() { "loop".to_string() } else { format!("loop,{options}") };
        let out = Command::new("mount").args(["-t", "ext4", "-o", &opts]).arg(image).arg(at).output().unwrap();
        assert!(out.status.success(), "mount -o loop: {}", String::from_utf8_lossy(&out.stderr));
        Self { at: at.to_path_buf(), image: image.to_path_buf() }
    }

    /// What a power cut now would leave on the disk: a copy of the backing file as the loop device last wrote it
    /// (data still in the page cache of the mounted ext4 is not in it).
    pub fn power_cut_copy(&self, to: &Path) {
        fs::copy(&self.image, to).unwrap();
    }
}

impl Drop for Ext4 {
    fn drop(&mut self) {
        // Detached, as the crate's own guards do: a plain unmount that meets EBUSY under load (a killed child's
        // last references still going away) fails silently here and leaks the mount into the leak check.
        let _ = rustix::mount::unmount(&self.at, rustix::mount::UnmountFlags::DETACH);
    }
}
