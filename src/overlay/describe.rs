//! [`Overlay::to_spec`]: the overlay described as containerd's `Mount`, for a caller that mounts elsewhere (a
//! snapshotter returns mounts; containerd performs them).

use std::ffi::OsString;
use std::path::PathBuf;

use super::{Overlay, Source, layers, upper};
use crate::error::{Error, ErrorKind, Result};
use crate::options;
use crate::spec::MountSpec;
use crate::tree::MountAttrs;

const OP: &str = "describe overlay";

impl Overlay {
    /// Describe this overlay as a [`MountSpec`] (containerd's `Mount`: type `overlay`, source `overlay`, options)
    /// instead of mounting it. The target is left empty for the caller to set.
    ///
    /// The options are, in order: `lowerdir=` (top-most first, `::` before data-only layers), `upperdir=` and
    /// `workdir=` with every path absolute and escaped as overlay's parser expects; the overlay options as given;
    /// the mount attributes (`ro`, `nosuid`, `nodev`, `noexec`, `nodiratime`, `nosymfollow`); and with an
    /// [`idmap`](Self::idmap), `uidmap=`/`gidmap=` (containerd 2's form: idmap every lower layer).
    /// [`MountSpec::mount`] performs it exactly as [`mount`](Self::mount) would. Nothing on disk is touched: call
    /// [`prepare`](Self::prepare) first when the consumer of the spec will not prepare the upper itself.
    ///
    /// # Errors
    /// The validation errors of [`mount`](Self::mount) ([`ErrorKind::InvalidOverlay`]), and
    /// [`ErrorKind::InvalidInput`] for what a spec cannot say: a layer given as an fd or a tree, or an idmapped
    /// upper.
    ///
    /// # Kernel
    /// Any (nothing is mounted); a `statx` per directory.
    ///
    /// ```no_run
    /// use layermount::{IdMap, Overlay, UserNamespace};
    /// let map: IdMap = "0:100000:65536".parse()?;
    /// let spec = Overlay::new()
    ///     .lowers(["/var/lib/snap/2/fs", "/var/lib/snap/1/fs"])
    ///     .upper("/var/lib/snap/3/fs", "/var/lib/snap/3/work")
    ///     .idmap(UserNamespace::cached(&map, &map)?)
    ///     .to_spec()?;
    /// assert_eq!(
    ///     spec.options_text(),
    ///     "lowerdir=/var/lib/snap/2/fs:/var/lib/snap/1/fs,upperdir=/var/lib/snap/3/fs,\
    ///      workdir=/var/lib/snap/3/work,uidmap=0:100000:65536,gidmap=0:100000:65536"
    /// );
    /// # Ok::<(), layermount::Error>(())
    /// ```
    pub fn to_spec(&self) -> Result<MountSpec> {
        if self.idmap_upper && self.upper.is_some() {
            return Err(Error::new(ErrorKind::InvalidInput, OP)
                .with_detail("an idmapped upper cannot be described as a mount spec (containerd idmaps lowers only)"));
        }
        let resolved = self.resolve()?;
        layers::validate(&resolved)?;
        let path = |s: &Source| -> Result<PathBuf> {
            match s {
                Source::Path(p) => layers::lexical_absolute(p)
                    .map_or_else(|| std::fs::canonicalize(p), Ok)
                    .map_err(|e| Error::io(OP, &e).with_path(p)),
                Source::Fd(_) | Source::Stack(_) => Err(Error::new(ErrorKind::InvalidInput, OP).with_detail(
                    "a layer given as an fd, a tree or an image stack cannot be described as a mount spec",
                )),
            }
        };
        let lowers = self.lowers.iter().map(path).collect::<Result<Vec<_>>>()?;
        let data = self.data.iter().map(path).collect::<Result<Vec<_>>>()?;
        let mut spec = MountSpec::new("overlay", "overlay", "");
        let mut lowerdir = b"lowerdir=".to_vec();
        lowerdir.extend(options::join_layers(lowers.iter().map(|p| p.as_os_str()), data.iter().map(|p| p.as_os_str())));
        spec.options.push(std::os::unix::ffi::OsStringExt::from_vec(lowerdir));
        if let Some((u, w)) = &self.upper {
            spec.options.push(options::path_option("upperdir", path(u)?.as_os_str()));
            spec.options.push(options::path_option("workdir", path(w)?.as_os_str()));
        }
        spec.options.extend(self.options.iter().map(|o| OsString::from(o.to_string())));
        for (attr, name) in [
            (MountAttrs::RDONLY, "ro"),
            (MountAttrs::NOSUID, "nosuid"),
            (MountAttrs::NODEV, "nodev"),
            (MountAttrs::NOEXEC, "noexec"),
            (MountAttrs::NODIRATIME, "nodiratime"),
            (MountAttrs::NOSYMFOLLOW, "nosymfollow"),
        ] {
            if self.attrs.contains(attr) {
                spec.options.push(name.into());
            }
        }
        if let Some(ns) = &self.userns {
            spec.set_idmap(ns.uid_map(), ns.gid_map());
        }
        Ok(spec)
    }

    /// Everything [`mount`](Self::mount) does before mounting, without mounting: validate the layers, and with an
    /// [`idmap`](Self::idmap) prepare the upper for the container's root (see
    /// [`prepare_upper`](Self::prepare_upper)). For a caller that hands [`to_spec`](Self::to_spec) to another
    /// mounter.
    ///
    /// # Errors
    /// As [`mount`](Self::mount) before it mounts: [`ErrorKind::InvalidOverlay`] (including
    /// [`UpperOwner`](crate::OverlayProblem::UpperOwner)), and [`ErrorKind::Os`] when a directory cannot be read or
    /// handed over.
    ///
    /// # Kernel
    /// Any.
    ///
    /// ```no_run
    /// use layermount::{IdMap, Overlay, UserNamespace};
    /// let map: IdMap = "0:100000:65536".parse()?;
    /// let overlay = Overlay::new()
    ///     .lowers(["/var/lib/snap/2/fs", "/var/lib/snap/1/fs"])
    ///     .upper("/var/lib/snap/3/fs", "/var/lib/snap/3/work")
    ///     .idmap(UserNamespace::cached(&map, &map)?);
    /// overlay.prepare()?; // the upper now belongs to 100000:100000
    /// let spec = overlay.to_spec()?;
    /// # Ok::<(), layermount::Error>(())
    /// ```
    pub fn prepare(&self) -> Result<()> {
        if let (Some(ns), true, true) = (&self.userns, self.upper.is_some(), self.idmap_upper) {
            upper::check_idmapped(ns)?;
        }
        self.resolve_checked().map(drop)
    }
}
