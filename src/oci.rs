//! OCI runtime-spec interop (feature `oci-spec`): [`IdMap`] from and to a `LinuxIdMapping` list (a config's
//! `linux.uidMappings`, a mount's `uidMappings`), and [`MountSpec`] from and to `oci_spec::runtime::Mount`.
//!
//! A runtime-spec mount and a containerd mount say the same things in two shapes. The OCI mount keeps its maps in
//! `uidMappings`/`gidMappings` and asks for them with the `idmap` (top mount only) or `ridmap` (every mount of an
//! `rbind`) option; a [`MountSpec`] keeps them as `uidmap=`/`gidmap=` options. Converting moves the maps between
//! those places and copies everything else (type, source, destination, the other options in order) as written.

use std::path::PathBuf;

use oci_spec::runtime::{LinuxIdMapping, LinuxIdMappingBuilder, Mount};

use crate::error::{Error, ErrorKind, Result};
use crate::idmap::{IdMap, IdRange};
use crate::spec::MountSpec;

impl IdMap {
    /// The map an OCI `LinuxIDMapping` list describes (`containerID`, `hostID`, `size` are a range's
    /// `container`, `host`, `size`), checked like any other map.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidIdMap`] for an empty list, a range of size 0, overlapping or overflowing ranges, or
    /// more than 340 ranges.
    ///
    /// # Kernel
    /// Any: no system call.
    ///
    /// ```
    /// use oci_spec::runtime::LinuxIdMappingBuilder;
    /// let m = LinuxIdMappingBuilder::default().container_id(0u32).host_id(100000u32).size(65536u32).build().unwrap();
    /// let map = layermount::IdMap::from_oci(&[m])?;
    /// assert_eq!(map.to_string(), "0:100000:65536");
    /// # Ok::<(), layermount::Error>(())
    /// ```
    pub fn from_oci(mappings: &[LinuxIdMapping]) -> Result<Self> {
        Self::new(
            mappings
                .iter()
                .map(|m| IdRange { container: m.container_id(), host: m.host_id(), size: m.size() })
                .collect(),
        )
    }

    /// The map as an OCI `LinuxIDMapping` list, range by range in order.
    ///
    /// # Kernel
    /// Any: no system call.
    ///
    /// # Panics
    /// Never: the builder's one `expect` has every field set and nothing to validate.
    ///
    /// ```
    /// let map: layermount::IdMap = "0:100000:65536".parse()?;
    /// let oci = map.to_oci();
    /// assert_eq!((oci[0].container_id(), oci[0].host_id(), oci[0].size()), (0, 100000, 65536));
    /// assert_eq!(layermount::IdMap::from_oci(&oci)?, map);
    /// # Ok::<(), layermount::Error>(())
    /// ```
    pub fn to_oci(&self) -> Vec<LinuxIdMapping> {
        self.ranges()
            .iter()
            .map(|r| {
                LinuxIdMappingBuilder::default()
                    .container_id(r.container)
                    .host_id(r.host)
                    .size(r.size)
                    .build()
                    // Every field is set and the builder has no validation step.
                    .expect("LinuxIdMapping builder cannot fail")
            })
            .collect()
    }
}

impl TryFrom<&[LinuxIdMapping]> for IdMap {
    type Error = Error;
    /// As [`IdMap::from_oci`].
    fn try_from(mappings: &[LinuxIdMapping]) -> Result<Self> {
        Self::from_oci(mappings)
    }
}

impl From<&IdMap> for Vec<LinuxIdMapping> {
    /// As [`IdMap::to_oci`].
    fn from(map: &IdMap) -> Self {
        map.to_oci()
    }
}

fn oci_error(mount: &Mount, detail: impl Into<String>) -> Error {
    Error::new(ErrorKind::InvalidMountSpec, "convert OCI mount").with_path(mount.destination()).with_detail(detail)
}

/// `None` and an empty list both mean "no maps" (runc reads them so).
fn mappings(list: &Option<Vec<LinuxIdMapping>>) -> Option<&[LinuxIdMapping]> {
    list.as_deref().filter(|l| !l.is_empty())
}

fn is_map_option(o: &str) -> bool {
    o.starts_with("uidmap=") || o.starts_with("gidmap=")
}

impl MountSpec {
    /// The spec for a runtime-spec mount: `type` → [`kind`](MountSpec#structfield.kind) (absent: empty), `source` →
    /// [`source`](MountSpec#structfield.source) (absent: empty), `destination` → [`target`](MountSpec#structfield.target), the options copied in
    /// order, and `uidMappings`/`gidMappings` appended as `uidmap=`/`gidmap=`.
    ///
    /// The target is the destination as the config writes it, a path inside the container: resolve it beneath
    /// the container's root before mounting. `idmap` and `ridmap` are kept and honoured by
    /// [`mount`](Self::mount) (`idmap` idmaps the top mount of an `rbind` only, `ridmap` every mount; on an
    /// overlay both idmap its layers, since an overlay cannot itself be idmapped).
    ///
    /// # Errors
    /// [`ErrorKind::InvalidMountSpec`] when only one of `uidMappings`/`gidMappings` is given, when `uidmap=`/
    /// `gidmap=` options clash with them, when `idmap`/`ridmap` come without maps (the runtime-spec lets a runtime
    /// use the container's own maps then: see [`from_oci_with_maps`](Self::from_oci_with_maps));
    /// [`ErrorKind::InvalidIdMap`] for a bad map. The source is kept as bytes, UTF-8 or not.
    ///
    /// # Kernel
    /// Any: no system call ([`mount`](Self::mount) needs Linux 5.12 for `idmap`/`ridmap`).
    ///
    /// ```
    /// let mount: oci_spec::runtime::Mount = serde_json::from_str(r#"{
    ///     "destination": "/data", "type": "bind", "source": "/srv/data",
    ///     "options": ["rbind", "idmap", "ro"],
    ///     "uidMappings": [{"containerID": 0, "hostID": 100000, "size": 65536}],
    ///     "gidMappings": [{"containerID": 0, "hostID": 100000, "size": 65536}]
    /// }"#).unwrap();
    /// let spec = layermount::MountSpec::from_oci(&mount)?;
    /// assert_eq!(spec.options_text(), "rbind,idmap,ro,uidmap=0:100000:65536,gidmap=0:100000:65536");
    /// assert_eq!(spec.to_oci()?, mount);
    /// # Ok::<(), layermount::Error>(())
    /// ```
    pub fn from_oci(mount: &Mount) -> Result<Self> {
        Self::convert_oci(mount, None)
    }

    /// [`from_oci`](Self::from_oci) for a runtime whose container has its own user namespace: a mount that asks
    /// for `idmap`/`ridmap` without maps of its own gets the container's maps, as the runtime-spec allows.
    /// A mount with maps of its own keeps them.
    ///
    /// # Errors
    /// As [`from_oci`](Self::from_oci).
    ///
    /// # Kernel
    /// Any: no system call.
    ///
    /// ```
    /// let mount: oci_spec::runtime::Mount = serde_json::from_str(
    ///     r#"{"destination": "/data", "type": "bind", "source": "/srv/data", "options": ["bind", "idmap"]}"#,
    /// ).unwrap();
    /// let container: layermount::IdMap = "0:100000:65536".parse()?;
    /// let spec = layermount::MountSpec::from_oci_with_maps(&mount, &container, &container)?;
    /// assert_eq!(spec.options_text(), "bind,idmap,uidmap=0:100000:65536,gidmap=0:100000:65536");
    /// # Ok::<(), layermount::Error>(())
    /// ```
    pub fn from_oci_with_maps(mount: &Mount, container_uid_map: &IdMap, container_gid_map: &IdMap) -> Result<Self> {
        Self::convert_oci(mount, Some((container_uid_map, container_gid_map)))
    }

    fn convert_oci(mount: &Mount, container_maps: Option<(&IdMap, &IdMap)>) -> Result<Self> {
        let source = mount.source().as_ref().map(|p| p.as_os_str().to_os_string()).unwrap_or_default();
        let mut spec = MountSpec::new(mount.typ().clone().unwrap_or_default(), source, mount.destination());
        let options = mount.options().as_deref().unwrap_or_default();
        spec.options.extend(options.iter().map(std::ffi::OsString::from));
        let own_maps = match (mappings(mount.uid_mappings()), mappings(mount.gid_mappings())) {
            (Some(u), Some(g)) => Some((IdMap::from_oci(u)?, IdMap::from_oci(g)?)),
            (None, None) => None,
            _ => return Err(oci_error(mount, "uidMappings and gidMappings must be given together")),
        };
        let asks = options.iter().any(|o| o == "idmap" || o == "ridmap");
        let has_map_options = options.iter().any(|o| is_map_option(o));
        match own_maps {
            Some(_) if has_map_options => {
                return Err(oci_error(mount, "uidmap=/gidmap= options and uidMappings/gidMappings both given"));
            }
            Some((u, g)) => spec.set_idmap(&u, &g),
            None if asks && !has_map_options => match container_maps {
                Some((u, g)) => spec.set_idmap(u, g),
                None => {
                    return Err(oci_error(
                        mount,
                        "idmap/ridmap without uidMappings/gidMappings: give the container's maps \
                         (MountSpec::from_oci_with_maps)",
                    ));
                }
            },
            None => {}
        }
        spec.validate()?;
        Ok(spec)
    }

    /// The runtime-spec mount for this spec: the inverse of [`from_oci`](Self::from_oci). `uidmap=`/`gidmap=`
    /// become `uidMappings`/`gidMappings`; when the options do not already say `idmap` or `ridmap`, one is
    /// added (as the runtime-spec asks, so an older runtime does not silently ignore the maps): `ridmap` for an
    /// `rbind`, since [`mount`](Self::mount) idmaps every mount of it, `idmap` otherwise. An empty kind or source
    /// is left out.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidMountSpec`] when the spec is not valid ([`validate`](Self::validate)) or an option is
    /// not UTF-8 (the runtime-spec's options are strings; a non-UTF-8 source is kept, as a path).
    ///
    /// # Kernel
    /// Any: no system call.
    ///
    /// ```
    /// let spec = layermount::MountSpec::new("bind", "/srv/data", "/data")
    ///     .with_options("rbind,ro,uidmap=0:100000:65536,gidmap=0:100000:65536");
    /// let mount = spec.to_oci()?;
    /// assert_eq!(mount.options().as_deref().unwrap(), ["rbind", "ro", "ridmap"]);
    /// assert_eq!(mount.uid_mappings().as_ref().unwrap()[0].host_id(), 100000);
    /// # Ok::<(), layermount::Error>(())
    /// ```
    pub fn to_oci(&self) -> Result<Mount> {
        self.validate()?;
        let mut mount = Mount::default();
        mount.set_destination(self.target.clone());
        mount.set_typ(Some(self.kind.clone()).filter(|k| !k.is_empty()));
        mount.set_source(Some(PathBuf::from(&self.source)).filter(|s| !s.as_os_str().is_empty()));
        let mut options = Vec::new();
        let (mut uid_map, mut gid_map) = (None, None);
        for o in &self.options {
            // The runtime spec's options are strings; ours are bytes (layer paths need not be UTF-8).
            let o = o.to_str().ok_or_else(|| {
                Error::new(ErrorKind::InvalidMountSpec, "convert mount to OCI")
                    .with_path(&self.target)
                    .with_detail(format!("option {} is not UTF-8", o.to_string_lossy()))
            })?;
            match (o.strip_prefix("uidmap="), o.strip_prefix("gidmap=")) {
                (Some(m), _) => uid_map = Some(IdMap::parse(m)?),
                (_, Some(m)) => gid_map = Some(IdMap::parse(m)?),
                _ => options.push(o.to_string()),
            }
        }
        if let (Some(u), Some(g)) = (uid_map, gid_map) {
            if !options.iter().any(|o| o == "idmap" || o == "ridmap") {
                let recursive = options.iter().any(|o| o == "rbind");
                options.push(if recursive { "ridmap" } else { "idmap" }.to_string());
            }
            mount.set_uid_mappings(Some(u.to_oci()));
            mount.set_gid_mappings(Some(g.to_oci()));
        }
        mount.set_options(Some(options).filter(|o| !o.is_empty()));
        Ok(mount)
    }
}

impl TryFrom<&Mount> for MountSpec {
    type Error = Error;
    /// As [`MountSpec::from_oci`].
    fn try_from(mount: &Mount) -> Result<Self> {
        Self::from_oci(mount)
    }
}

impl TryFrom<&MountSpec> for Mount {
    type Error = Error;
    /// As [`MountSpec::to_oci`].
    fn try_from(spec: &MountSpec) -> Result<Self> {
        spec.to_oci()
    }
}
