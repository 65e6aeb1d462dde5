//! Building test archives entry by entry, including the hostile ones the tar crate's builder would refuse.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

/// One archive entry.
#[derive(Debug, Clone)]
pub enum E {
    Dir(&'static str),
    File(&'static str, &'static str),
    Symlink(&'static str, &'static str),
    Hardlink(&'static str, &'static str),
    Fifo(&'static str),
    Char(&'static str, u32, u32),
}

/// Entry options beyond the name: owner, mode, mtime, PAX records.
#[derive(Debug, Clone)]
pub struct Opt {
    pub uid: u64,
    pub gid: u64,
    pub mode: u32,
    pub mtime: u64,
    pub pax: Vec<(String, Vec<u8>)>,
}

impl Default for Opt {
    fn default() -> Self {
        Self { uid: 0, gid: 0, mode: 0, mtime: 1_600_000_000, pax: Vec::new() }
    }
}

/// A tar stream under construction. Names are written raw (GNU long-name records when over 100 bytes), so `..`
/// and absolute names get through.
#[derive(Default)]
pub struct Tar {
    out: Vec<u8>,
}

fn raw_header(name: &[u8], kind: tar::EntryType, size: u64, link: &[u8], o: &Opt, default_mode: u32) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    {
        let old = h.as_old_mut();
        let n = name.len().min(100);
        old.name[..n].copy_from_slice(&name[..n]);
        let l = link.len().min(100);
        old.linkname[..l].copy_from_slice(&link[..l]);
    }
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(if o.mode == 0 { default_mode } else { o.mode });
    h.set_uid(o.uid);
    h.set_gid(o.gid);
    h.set_mtime(o.mtime);
    h.set_cksum();
    h
}

impl Tar {
    pub fn new() -> Self {
        Self::default()
    }

    fn push(&mut self, h: &tar::Header, data: &[u8]) {
        self.out.extend_from_slice(h.as_bytes());
        self.out.extend_from_slice(data);
        let pad = (512 - data.len() % 512) % 512;
        self.out.extend(std::iter::repeat_n(0u8, pad));
    }

    /// A GNU long-name ('L') or long-link ('K') record for `name`.
    fn long(&mut self, kind: u8, name: &[u8]) {
        let mut data = name.to_vec();
        data.push(0);
        let mut h =
            raw_header(b"././@LongLink", tar::EntryType::new(kind), data.len() as u64, b"", &Opt::default(), 0o644);
        h.set_cksum();
        self.push(&h, &data);
    }

    /// A PAX global header (which appliers must ignore).
    pub fn pax_global(&mut self, records: &[(&str, &str)]) -> &mut Self {
        let data = pax_records(records.iter().map(|(k, v)| (k.to_string(), v.as_bytes().to_vec())));
        let h = raw_header(
            b"pax_global_header",
            tar::EntryType::XGlobalHeader,
            data.len() as u64,
            b"",
            &Opt::default(),
            0o644,
        );
        self.push(&h, &data);
        self
    }

    pub fn add(&mut self, e: &E) -> &mut Self {
        self.add_with(e, &Opt::default())
    }

    pub fn add_with(&mut self, e: &E, o: &Opt) -> &mut Self {
        type Parts<'e> = (&'e str, tar::EntryType, &'e [u8], &'e str, u32);
        let (name, kind, data, link, mode): Parts<'_> = match e {
            E::Dir(n) => (n, tar::EntryType::Directory, b"", "", 0o755),
            E::File(n, d) => (n, tar::EntryType::Regular, d.as_bytes(), "", 0o644),
            E::Symlink(n, t) => (n, tar::EntryType::Symlink, b"", t, 0o777),
            E::Hardlink(n, t) => (n, tar::EntryType::Link, b"", t, 0o644),
            E::Fifo(n) => (n, tar::EntryType::Fifo, b"", "", 0o644),
            E::Char(n, _, _) => (n, tar::EntryType::Char, b"", "", 0o644),
        };
        let dev = match e {
            E::Char(_, ma, mi) => Some((*ma, *mi)),
            _ => None,
        };
        if !o.pax.is_empty() {
            let data = pax_records(o.pax.iter().cloned());
            let h = raw_header(b"PaxHeader", tar::EntryType::XHeader, data.len() as u64, b"", &Opt::default(), 0o644);
            self.push(&h, &data);
        }
        if name.len() > 100 {
            self.long(b'L', name.as_bytes());
        }
        if link.len() > 100 {
            self.long(b'K', link.as_bytes());
        }
        let mut h = raw_header(name.as_bytes(), kind, data.len() as u64, link.as_bytes(), o, mode);
        if let Some((ma, mi)) = dev {
            h.set_device_major(ma).unwrap();
            h.set_device_minor(mi).unwrap();
            h.set_cksum();
        }
        self.push(&h, data);
        self
    }

    /// A block (or character) device whose numbers are written as Go's archive/tar writes any int64: octal when it
    /// fits the 8-byte field, base-256 otherwise (so out-of-range and negative numbers reach the reader as they are).
    pub fn device(&mut self, name: &str, block: bool, major: i64, minor: i64) -> &mut Self {
        let kind = if block { tar::EntryType::Block } else { tar::EntryType::Char };
        let mut h = raw_header(name.as_bytes(), kind, 0, b"", &Opt::default(), 0o644);
        for (at, v) in [(329, major), (337, minor)] {
            let field: [u8; 8] = if (0..0o7777777).contains(&v) {
                let text = format!("{v:07o}\0");
                text.as_bytes().try_into().unwrap()
            } else {
                let mut b = v.to_be_bytes();
                b[0] |= 0x80;
                b
            };
            h.as_mut_bytes()[at..at + 8].copy_from_slice(&field);
        }
        h.set_cksum();
        self.push(&h, b"");
        self
    }

    /// A raw 512-byte header of type `kind` declaring `size` bytes of data (for records whose data is streamed
    /// separately, such as oversized metadata).
    pub fn record_header(name: &[u8], kind: u8, size: u64) -> [u8; 512] {
        let mut h = raw_header(name, tar::EntryType::new(kind), 0, b"", &Opt::default(), 0o644);
        h.set_size(size);
        h.set_cksum();
        *h.as_bytes()
    }

    /// A GNU sparse file (type `S`) of `real_size` bytes holding `blocks` (offset, data; offsets and lengths
    /// multiples of 512 except the last length) and holes elsewhere.
    pub fn sparse(&mut self, name: &str, real_size: u64, blocks: &[(u64, &[u8])]) -> &mut Self {
        assert!(blocks.len() < 4, "one header holds four map entries; the end marker takes one");
        let stored: u64 = blocks.iter().map(|(_, d)| d.len() as u64).sum();
        let mut h = raw_header(name.as_bytes(), tar::EntryType::GNUSparse, stored, b"", &Opt::default(), 0o644);
        let octal = |field: &mut [u8], v: u64| {
            let s = format!("{v:0width$o}", width = field.len() - 1);
            field[..s.len()].copy_from_slice(s.as_bytes());
            field[s.len()] = 0;
        };
        {
            let g = h.as_gnu_mut().unwrap();
            for (i, (off, d)) in blocks.iter().enumerate() {
                octal(&mut g.sparse[i].offset, *off);
                octal(&mut g.sparse[i].numbytes, d.len() as u64);
            }
            // The end of the file: a zero-length block at the real size.
            octal(&mut g.sparse[blocks.len()].offset, real_size);
            octal(&mut g.sparse[blocks.len()].numbytes, 0);
            octal(&mut g.realsize, real_size);
        }
        h.set_cksum();
        let data: Vec<u8> = blocks.iter().flat_map(|(_, d)| d.iter().copied()).collect();
        self.push(&h, &data);
        self
    }

    pub fn all(&mut self, entries: &[E]) -> &mut Self {
        for e in entries {
            self.add(e);
        }
        self
    }

    pub fn finish(&mut self) -> Vec<u8> {
        let mut out = std::mem::take(&mut self.out);
        out.extend(std::iter::repeat_n(0u8, 1024));
        out
    }
}

fn pax_records(records: impl Iterator<Item = (String, Vec<u8>)>) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, v) in records {
        // "<len> <key>=<value>\n" where <len> counts itself.
        let body = k.len() + v.len() + 3;
        let mut len = body + 1;
        while (len.to_string().len() + body) != len {
            len = len.to_string().len() + body;
        }
        out.extend_from_slice(format!("{len} {k}=").as_bytes());
        out.extend_from_slice(&v);
        out.push(b'\n');
    }
    out
}

/// A build of entries as a tar stream.
pub fn tar_of(entries: &[E]) -> Vec<u8> {
    Tar::new().all(entries).finish()
}

/// What a tree looks like: path -> description (`d`, `f:<content>`, `l:<target>`, `c:<maj>,<min>`, `p`).
pub fn tree(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            let ft = m.file_type();
            let desc = if ft.is_dir() {
                stack.push(p.clone());
                "d".to_string()
            } else if ft.is_symlink() {
                format!("l:{}", std::fs::read_link(&p).unwrap().display())
            } else if ft.is_file() {
                format!("f:{}", String::from_utf8_lossy(&std::fs::read(&p).unwrap()))
            } else if ft.is_char_device() {
                format!("c:{},{}", rustix::fs::major(m.rdev()), rustix::fs::minor(m.rdev()))
            } else {
                "p".to_string()
            };
            out.insert(rel, desc);
        }
    }
    out
}

/// Expected tree from `(path, description)` pairs.
pub fn expect(items: &[(&str, &str)]) -> BTreeMap<String, String> {
    items.iter().map(|(p, d)| (p.to_string(), d.to_string())).collect()
}
