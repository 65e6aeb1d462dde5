//! [`audit`]: a read-only check of layer directories for the damage old unpackers left behind.

use std::ffi::OsStr;
use std::fmt;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, Dir, FileType, Mode, OFlags, ResolveFlags, StatxFlags};

use super::options::WhiteoutMode;
use super::record::read_marker;
use super::xattr;
use crate::error::{Error, ErrorKind, LayerProblem, Result};

const OP: &str = "audit layer";

/// What [`audit`] found wrong at one path of one layer.
///
/// ```
/// let p = layermount::AuditProblem::UnlistedOpaque { xattr: "trusted.overlay.opaque".into() };
/// assert!(p.to_string().starts_with("stray opaque directory"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum AuditProblem {
    /// A directory carries an opaque xattr that the layer's commit record does not list: the symptom of a layer
    /// unpacked through an overlay mount, or copied from an upper. It hides whatever the lower layers have there.
    UnlistedOpaque {
        /// The xattr (`trusted.overlay.opaque` or `user.overlay.opaque`).
        xattr: String,
    },
    /// An overlay xattr of the namespace the layer was not made for (`trusted.overlay.*` in a `userxattr` layer,
    /// or the reverse, or either in an OCI-format layer): overlay either ignores it or, on copy-up, copies it as a
    /// plain xattr.
    ForeignNamespace {
        /// The xattr name.
        xattr: String,
    },
    /// An overlay xattr that applying a layer never writes (`origin`, `redirect`, `metacopy`, `whiteout`, ...):
    /// the layer holds an overlay upper's internal state.
    UnexpectedOverlayXattr {
        /// The xattr name.
        xattr: String,
    },
    /// A whiteout or an opaque marker where overlay ignores it; the text says which and why.
    Ignored(&'static str),
    /// The layer has no readable commit record, so its own opaque directories cannot be told from stray ones.
    NoRecord(LayerProblem),
}

impl fmt::Display for AuditProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnlistedOpaque { xattr } => {
                write!(f, "stray opaque directory: {xattr}=y not listed in the layer's commit record")
            }
            Self::ForeignNamespace { xattr } => {
                write!(f, "overlay xattr {xattr} of a namespace this layer was not made for")
            }
            Self::UnexpectedOverlayXattr { xattr } => write!(f, "overlay xattr {xattr}, which apply never writes"),
            Self::Ignored(why) => f.write_str(why),
            Self::NoRecord(p) => write!(f, "{p}; opaque directories cannot be checked"),
        }
    }
}

/// One finding of [`audit`]: the layer, the path inside it, and what is wrong. Displays as one line.
///
/// ```
/// use layermount::{AuditFinding, AuditProblem};
/// let f = AuditFinding {
///     layer: "/store/2".into(),
///     path: "/".into(),
///     problem: AuditProblem::Ignored("opaque xattr on a layer's root directory: overlay ignores it"),
/// };
/// assert_eq!(f.to_string(), "/store/2: /: opaque xattr on a layer's root directory: overlay ignores it");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditFinding {
    /// The layer directory, as given.
    pub layer: PathBuf,
    /// The path inside the layer, absolute (`/usr/lib`; `/` for the layer root).
    pub path: PathBuf,
    /// What is wrong.
    pub problem: AuditProblem,
}

impl fmt::Display for AuditFinding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}: {}", self.layer.display(), self.path.display(), self.problem)
    }
}

/// The xattr namespaces a layer may hold overlay metadata in.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Namespaces {
    Trusted,
    User,
    /// An OCI-format layer: none.
    None,
    /// The record does not say: either.
    Unknown,
}

impl Namespaces {
    fn allows(self, prefix: &[u8]) -> bool {
        match self {
            Self::Trusted => prefix == b"trusted",
            Self::User => prefix == b"user",
            Self::None => false,
            Self::Unknown => true,
        }
    }
}

/// Check layer directories, read-only, for what overlay would get wrong: one [`AuditFinding`] per problem.
///
/// For each layer:
/// * every directory with an opaque xattr that the layer's commit record (see [`marker_path`](crate::marker_path))
///   does not list as one the layer itself made opaque ([`AuditProblem::UnlistedOpaque`]); for a record written
///   before the list existed, opaque directories beyond the count the record holds are reported;
/// * overlay xattrs of the namespace the layer was not made for ([`AuditProblem::ForeignNamespace`]) and overlay
///   xattrs other than `opaque` ([`AuditProblem::UnexpectedOverlayXattr`]);
/// * whiteouts and opaque markers overlay ignores ([`AuditProblem::Ignored`]): an opaque xattr on the layer's root
///   directory or on a non-directory, an opaque value other than `y`/`x`, an OCI `.wh.` file left in a layer made for
///   overlay, an overlay whiteout (0/0 character device) in an OCI-format layer;
/// * a layer without a readable commit record ([`AuditProblem::NoRecord`]), whose other checks still run.
///
/// Nothing is changed. Symlinks are never followed; the walk goes through directory fds.
///
/// # Errors
///
/// A layer directory cannot be opened or read (`Error::path` names it). Reading `trusted.*` xattrs needs
/// `CAP_SYS_ADMIN`: without it they are invisible and not reported.
///
/// # Kernel
/// Any; `listxattrat` (6.13) is used when present.
///
/// ```no_run
/// for finding in layermount::audit(["/var/lib/layers/1", "/var/lib/layers/2"])? {
///     println!("{finding}"); // /var/lib/layers/2: /usr/lib: stray opaque directory: ...
/// }
/// # Ok::<(), layermount::Error>(())
/// ```
pub fn audit<P: AsRef<Path>>(layers: impl IntoIterator<Item = P>) -> Result<Vec<AuditFinding>> {
    let mut findings = Vec::new();
    for layer in layers {
        audit_one(layer.as_ref(), &mut findings)?;
    }
    Ok(findings)
}

struct Walk<'a> {
    layer: &'a Path,
    namespaces: Namespaces,
    listed: Option<Vec<PathBuf>>,
    /// Opaque directories found that the record cannot vouch for, when it predates the list: (count recorded).
    old_count: Option<u64>,
    unverified: Vec<(PathBuf, String)>,
    findings: &'a mut Vec<AuditFinding>,
}

fn audit_one(layer: &Path, findings: &mut Vec<AuditFinding>) -> Result<()> {
    let root = rustix::fs::open(layer, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
        .map_err(|e| Error::os(OP, e).with_path(layer))?;
    let mut walk = Walk {
        layer,
        namespaces: Namespaces::Unknown,
        listed: None,
        old_count: None,
        unverified: Vec::new(),
        findings,
    };
    match read_marker(layer, OP) {
        Ok(record) => {
            walk.namespaces = match record.whiteouts {
                Some(WhiteoutMode::Overlay) => Namespaces::Trusted,
                Some(WhiteoutMode::OverlayUserXattr) => Namespaces::User,
                Some(WhiteoutMode::Oci) => Namespaces::None,
                None => Namespaces::Unknown,
            };
            match record.opaque_dirs {
                Some(list) => walk.listed = Some(list),
                None => walk.old_count = Some(record.stats.opaque_dirs),
            }
        }
        Err(e) => match e.kind() {
            ErrorKind::InvalidLayer(p) => walk.add(Path::new(""), AuditProblem::NoRecord(p)),
            _ => return Err(e),
        },
    }
    walk.entry(root.as_fd(), OsStr::new(""), Path::new(""), FileType::Directory)?;
    walk.dir(root, PathBuf::new())?;
    if let Some(count) = walk.old_count
        && walk.unverified.len() as u64 > count
    {
        for (path, xattr) in std::mem::take(&mut walk.unverified) {
            walk.add(&path, AuditProblem::UnlistedOpaque { xattr });
        }
    }
    Ok(())
}

impl Walk<'_> {
    fn add(&mut self, rel: &Path, problem: AuditProblem) {
        self.findings.push(AuditFinding { layer: self.layer.to_path_buf(), path: Path::new("/").join(rel), problem });
    }

    fn err(&self, e: rustix::io::Errno, rel: &Path) -> Error {
        Error::os(OP, e).with_path(self.layer.join(rel))
    }

    /// Walk the directory `fd` (at `rel`), depth first; child directories are opened beneath the parent without
    /// following symlinks.
    fn dir(&mut self, fd: OwnedFd, rel: PathBuf) -> Result<()> {
        let mut names = Vec::new();
        let mut reader = Dir::read_from(&fd).map_err(|e| self.err(e, &rel))?;
        while let Some(entry) = reader.read() {
            let entry = entry.map_err(|e| self.err(e, &rel))?;
            let name = OsStr::from_bytes(entry.file_name().to_bytes());
            if name != "." && name != ".." {
                names.push(name.to_os_string());
            }
        }
        names.sort();
        for name in names {
            let child = rel.join(&name);
            let st = rustix::fs::statx(&fd, &name, AtFlags::SYMLINK_NOFOLLOW, StatxFlags::TYPE)
                .map_err(|e| self.err(e, &child))?;
            let kind = FileType::from_raw_mode(st.stx_mode.into());
            self.entry(fd.as_fd(), &name, &child, kind)?;
            if kind == FileType::CharacterDevice && st.stx_rdev_major == 0 && st.stx_rdev_minor == 0 {
                if self.namespaces == Namespaces::None {
                    self.add(&child, AuditProblem::Ignored("overlay whiteout (0/0 device) in an OCI-format layer"));
                }
            } else if name.as_bytes().starts_with(b".wh.") && self.namespaces != Namespaces::None {
                self.add(&child, AuditProblem::Ignored("OCI whiteout file left as a file: overlay shows it"));
            }
            if kind == FileType::Directory {
                let sub = crate::fd::open_beneath(
                    &fd,
                    Path::new(&name),
                    OFlags::RDONLY | OFlags::NOFOLLOW,
                    ResolveFlags::NO_SYMLINKS,
                )
                .map_err(|e| self.err(e, &child))?;
                self.dir(sub, child)?;
            }
        }
        Ok(())
    }

    /// The overlay xattrs of one entry (`name` in `dir`; the directory itself when `name` is empty).
    fn entry(&mut self, dir: BorrowedFd<'_>, name: &OsStr, rel: &Path, kind: FileType) -> Result<()> {
        let xattrs = match xattr::list(dir, name) {
            Ok(x) => x,
            Err(rustix::io::Errno::PERM | rustix::io::Errno::ACCESS) => return Ok(()),
            Err(e) => return Err(self.err(e, rel)),
        };
        for (key, value) in xattrs.iter().filter(|(k, _)| xattr::is_overlay(k)) {
            let text = String::from_utf8_lossy(key).into_owned();
            let (prefix, what) = key.split_at(key.iter().position(|&b| b == b'.').unwrap_or(0));
            if !self.namespaces.allows(prefix) {
                self.add(rel, AuditProblem::ForeignNamespace { xattr: text });
                continue;
            }
            if what != b".overlay.opaque" {
                self.add(rel, AuditProblem::UnexpectedOverlayXattr { xattr: text });
                continue;
            }
            if rel.as_os_str().is_empty() {
                self.add(rel, AuditProblem::Ignored("opaque xattr on a layer's root directory: overlay ignores it"));
            } else if kind != FileType::Directory {
                self.add(rel, AuditProblem::Ignored("opaque xattr on a non-directory: overlay ignores it"));
            } else if value.as_slice() != b"y" && value.as_slice() != b"x" {
                self.add(rel, AuditProblem::Ignored("opaque xattr with a value other than y: overlay ignores it"));
            } else if value.as_slice() == b"y" {
                match &self.listed {
                    Some(list) if list.iter().any(|p| p == rel) => {}
                    Some(_) => self.add(rel, AuditProblem::UnlistedOpaque { xattr: text }),
                    None if self.old_count.is_some() => self.unverified.push((rel.to_path_buf(), text)),
                    None => {}
                }
            }
        }
        Ok(())
    }
}
