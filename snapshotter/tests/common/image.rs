//! An image built offline as a docker-archive tar (`manifest.json`, a config, uncompressed layers), for
//! `ctr images import`: busybox-static, an old-style regular `/etc/mtab`, files owned by 1000, and a second layer
//! with a whiteout and an opaque directory.

use std::path::Path;

use sha2::{Digest, Sha256};

/// The name `ctr images import` gives the test image.
pub const IMAGE: &str = "docker.io/library/lmtest:1";

/// Busybox applets linked in `/bin`.
const APPLETS: &[&str] = &[
    "sh", "cat", "ls", "id", "stat", "echo", "touch", "mkfifo", "sleep", "true", "test", "readlink", "grep", "wc", "cd",
];

/// Builds one layer.
pub struct Layer(tar::Builder<Vec<u8>>);

impl Layer {
    pub fn new() -> Self {
        let mut b = tar::Builder::new(Vec::new());
        b.mode(tar::HeaderMode::Deterministic);
        Self(b)
    }

    fn header(kind: tar::EntryType, mode: u32, uid: u64, size: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(uid);
        h.set_gid(uid);
        h.set_size(size);
        h.set_mtime(1_700_000_000);
        h
    }

    pub fn dir(mut self, path: &str, mode: u32, uid: u64) -> Self {
        let mut h = Self::header(tar::EntryType::Directory, mode, uid, 0);
        self.0.append_data(&mut h, path, std::io::empty()).unwrap();
        self
    }

    pub fn file(mut self, path: &str, mode: u32, uid: u64, data: &[u8]) -> Self {
        let mut h = Self::header(tar::EntryType::Regular, mode, uid, data.len() as u64);
        self.0.append_data(&mut h, path, data).unwrap();
        self
    }

    pub fn symlink(mut self, path: &str, target: &str) -> Self {
        let mut h = Self::header(tar::EntryType::Symlink, 0o777, 0, 0);
        self.0.append_link(&mut h, path, target).unwrap();
        self
    }

    pub fn finish(self) -> Vec<u8> {
        self.0.into_inner().unwrap()
    }
}

/// The base layer: busybox and its applets, `/etc` with a regular `mtab`, a home owned by 1000, and what the second
/// layer hides.
pub fn base_layer() -> Vec<u8> {
    let busybox = std::fs::read("/bin/busybox").expect("busybox-static installed (/bin/busybox)");
    let mut l = Layer::new()
        .dir("bin", 0o755, 0)
        .file("bin/busybox", 0o755, 0, &busybox)
        .dir("etc", 0o755, 0)
        .file("etc/mtab", 0o644, 0, b"rootfs / rootfs rw 0 0\n")
        .file("etc/passwd", 0o644, 0, b"root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000::/home/user:/bin/sh\n")
        .file("etc/group", 0o644, 0, b"root:x:0:\nuser:x:1000:\n")
        .dir("home", 0o755, 0)
        .dir("home/user", 0o755, 1000)
        .file("home/user/owned", 0o644, 1000, b"mine\n")
        .dir("proc", 0o555, 0)
        .dir("sys", 0o555, 0)
        .dir("dev", 0o755, 0)
        .dir("tmp", 0o1777, 0)
        .dir("root", 0o700, 0)
        .file("gone", 0o644, 0, b"whited out by layer 2\n")
        .dir("data", 0o755, 0)
        .file("data/old1", 0o644, 0, b"hidden by the opaque dir\n")
        .file("data/old2", 0o644, 0, b"hidden by the opaque dir\n");
    for a in APPLETS {
        l = l.symlink(&format!("bin/{a}"), "busybox");
    }
    l.finish()
}

/// The second layer: a whiteout of `/gone`, `/data` made opaque with one new file.
pub fn second_layer() -> Vec<u8> {
    Layer::new()
        .file(".wh.gone", 0o644, 0, b"")
        .dir("data", 0o755, 0)
        .file("data/.wh..wh..opq", 0o644, 0, b"")
        .file("data/new", 0o644, 0, b"from layer 2\n")
        .finish()
}

/// A layer of `count` small files in `/many/<i/1000>/<i>`.
pub fn many_files_layer(count: usize) -> Vec<u8> {
    let mut l = Layer::new().dir("many", 0o755, 0);
    for d in 0..count.div_ceil(1000) {
        l = l.dir(&format!("many/{d}"), 0o755, 0);
    }
    for i in 0..count {
        l = l.file(&format!("many/{}/{i}", i / 1000), 0o644, 0, format!("{i}\n").as_bytes());
    }
    l.finish()
}

fn sha256(data: &[u8]) -> String {
    Sha256::digest(data).iter().map(|b| format!("{b:02x}")).collect()
}

/// Write a docker-archive of `layers` (bottom first) named `name` to `path`.
pub fn write_archive(path: &Path, name: &str, layers: &[Vec<u8>]) {
    let diff_ids: Vec<String> = layers.iter().map(|l| format!("\"sha256:{}\"", sha256(l))).collect();
    let config = format!(
        r#"{{"architecture":"amd64","os":"linux","config":{{"Env":["PATH=/bin"],"Cmd":["/bin/sh"],"WorkingDir":"/"}},"rootfs":{{"type":"layers","diff_ids":[{}]}}}}"#,
        diff_ids.join(",")
    );
    let config_name = format!("{}.json", sha256(config.as_bytes()));
    let layer_names: Vec<String> = layers.iter().map(|l| format!("{}/layer.tar", sha256(l))).collect();
    let manifest = format!(
        r#"[{{"Config":"{config_name}","RepoTags":["{}"],"Layers":[{}]}}]"#,
        name.trim_start_matches("docker.io/library/"),
        layer_names.iter().map(|n| format!("\"{n}\"")).collect::<Vec<_>>().join(",")
    );
    let mut out = Layer::new().file("manifest.json", 0o644, 0, manifest.as_bytes()).file(
        &config_name,
        0o644,
        0,
        config.as_bytes(),
    );
    for (n, l) in layer_names.iter().zip(layers) {
        out = out.file(n, 0o644, 0, l);
    }
    std::fs::write(path, out.finish()).unwrap();
}

/// The test image: base layer and second layer.
pub fn write_test_image(path: &Path) {
    write_archive(path, IMAGE, &[base_layer(), second_layer()]);
}
