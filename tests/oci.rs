//! `oci-spec` interop: id maps and runtime-spec mounts convert both ways without losing anything, and the
//! runtime-spec's `idmap`/`ridmap` mean what they say on a real `rbind` with a mount beneath it.
#![cfg(feature = "oci-spec")]

mod common;

use std::fs;

use common::{chown, owner, privileged};
use layermount::{ErrorKind, IdMap, IdMapProblem, MountSpec};
use oci_spec::runtime::{LinuxIdMapping, Mount, Spec};

fn mount(json: &str) -> Mount {
    serde_json::from_str(json).unwrap()
}

fn map(text: &str) -> IdMap {
    text.parse().unwrap()
}

#[test]
fn id_maps_convert_both_ways_and_are_checked() {
    let m = map("0:100000:65536,65536:1000:1");
    let oci: Vec<LinuxIdMapping> = (&m).into();
    assert_eq!(oci.len(), 2);
    assert_eq!((oci[1].container_id(), oci[1].host_id(), oci[1].size()), (65536, 1000, 1));
    assert_eq!(IdMap::try_from(&oci[..]).unwrap(), m);
    // The JSON a config carries, read by oci-spec, straight into a map.
    let from_json: Vec<LinuxIdMapping> =
        serde_json::from_str(r#"[{"containerID": 0, "hostID": 100000, "size": 65536}]"#).unwrap();
    assert_eq!(IdMap::from_oci(&from_json).unwrap(), map("0:100000:65536"));
    let bad: Vec<LinuxIdMapping> = serde_json::from_str(
        r#"[{"containerID": 0, "hostID": 100000, "size": 10}, {"containerID": 5, "hostID": 200000, "size": 10}]"#,
    )
    .unwrap();
    assert_eq!(IdMap::from_oci(&bad).unwrap_err().kind(), ErrorKind::InvalidIdMap(IdMapProblem::OverlappingContainer));
    assert_eq!(IdMap::from_oci(&[]).unwrap_err().kind(), ErrorKind::InvalidIdMap(IdMapProblem::Empty));
}

/// The mounts of `runc spec`'s default config, plus idmapped binds.
const MOUNTS: &str = r#"[
    {"destination": "/proc", "type": "proc", "source": "proc"},
    {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
    {"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
    {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]},
    {"destination": "/data", "type": "bind", "source": "/srv/data", "options": ["rbind", "idmap", "ro"],
     "uidMappings": [{"containerID": 0, "hostID": 100000, "size": 65536}],
     "gidMappings": [{"containerID": 0, "hostID": 200000, "size": 65536}]},
    {"destination": "/cache", "source": "/srv/cache", "options": ["rbind", "ridmap"],
     "uidMappings": [{"containerID": 0, "hostID": 100000, "size": 1000}, {"containerID": 1000, "hostID": 1000, "size": 1}],
     "gidMappings": [{"containerID": 0, "hostID": 100000, "size": 1000}]}
]"#;

#[test]
fn runtime_spec_mounts_round_trip() {
    let mounts: Vec<Mount> = serde_json::from_str(MOUNTS).unwrap();
    for m in &mounts {
        let spec = MountSpec::from_oci(m).unwrap_or_else(|e| panic!("{m:?}: {e}"));
        assert_eq!(spec.target, m.destination().clone());
        assert_eq!(&spec.to_oci().unwrap(), m, "{spec:?}");
    }
    let data = MountSpec::try_from(&mounts[4]).unwrap();
    assert_eq!((data.kind.as_str(), data.source.to_str().unwrap()), ("bind", "/srv/data"));
    assert_eq!(data.options_text(), "rbind,idmap,ro,uidmap=0:100000:65536,gidmap=0:200000:65536");
    let cache = MountSpec::try_from(&mounts[5]).unwrap();
    assert_eq!(cache.kind, "", "an absent type stays absent");
    assert_eq!(cache.options_text(), "rbind,ridmap,uidmap=0:100000:1000,1000:1000:1,gidmap=0:100000:1000");
}

#[test]
fn containerd_specs_gain_the_idmap_option_they_mean() {
    let rbind = MountSpec::new("bind", "/srv", "/t").with_options("rbind,nodev,uidmap=0:1:2,gidmap=0:3:4");
    let m = Mount::try_from(&rbind).unwrap();
    assert_eq!(m.options().as_deref().unwrap(), ["rbind", "nodev", "ridmap"]);
    assert_eq!(IdMap::from_oci(m.gid_mappings().as_deref().unwrap()).unwrap(), map("0:3:4"));
    let back = MountSpec::from_oci(&m).unwrap();
    assert_eq!(back.options_text(), "rbind,nodev,ridmap,uidmap=0:1:2,gidmap=0:3:4");
    let overlay = MountSpec::new("overlay", "overlay", "/t").with_options("lowerdir=/a:/b,uidmap=0:1:2,gidmap=0:1:2");
    assert_eq!(overlay.to_oci().unwrap().options().as_deref().unwrap(), ["lowerdir=/a:/b", "idmap"]);
    let plain = MountSpec::new("tmpfs", "", "/t");
    let m = plain.to_oci().unwrap();
    assert_eq!((m.typ().as_deref(), m.source(), m.options()), (Some("tmpfs"), &None, &None));
}

#[test]
fn runtime_spec_options_are_accepted_with_their_maps_and_refused_without() {
    let with = MountSpec::new("bind", "/srv", "/t").with_options("rbind,idmap,ro,uidmap=0:1:2,gidmap=0:1:2");
    with.validate().unwrap();
    MountSpec::new("bind", "/srv", "/t").with_options("bind,ridmap,uidmap=0:1:2,gidmap=0:1:2").validate().unwrap();
    let err = MountSpec::new("bind", "/srv", "/t").with_options("rbind,idmap,ro").validate().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidMountSpec);
    assert!(err.to_string().contains("uidmap="), "{err}");
}

#[test]
fn oci_mounts_that_cannot_be_converted_say_why() {
    let cases = [
        (
            r#"{"destination": "/d", "type": "bind", "source": "/s", "options": ["rbind", "idmap"]}"#,
            "idmap/ridmap without uidMappings/gidMappings",
        ),
        (
            r#"{"destination": "/d", "type": "bind", "source": "/s", "options": ["bind", "idmap"],
                "uidMappings": [{"containerID": 0, "hostID": 1, "size": 1}]}"#,
            "given together",
        ),
        (
            r#"{"destination": "/d", "type": "bind", "source": "/s", "options": ["bind", "idmap", "uidmap=0:1:1", "gidmap=0:1:1"],
                "uidMappings": [{"containerID": 0, "hostID": 1, "size": 1}], "gidMappings": [{"containerID": 0, "hostID": 1, "size": 1}]}"#,
            "both given",
        ),
    ];
    for (json, says) in cases {
        let err = MountSpec::from_oci(&mount(json)).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidMountSpec, "{json}: {err}");
        assert!(err.to_string().contains(says), "{json}: {err}");
        assert_eq!(err.path(), Some(std::path::Path::new("/d")));
    }
    let bad_map = r#"{"destination": "/d", "type": "bind", "source": "/s", "options": ["bind", "idmap"],
        "uidMappings": [{"containerID": 0, "hostID": 1, "size": 0}], "gidMappings": [{"containerID": 0, "hostID": 1, "size": 1}]}"#;
    assert_eq!(
        MountSpec::from_oci(&mount(bad_map)).unwrap_err().kind(),
        ErrorKind::InvalidIdMap(IdMapProblem::ZeroSize)
    );
    // With the container's maps, a bare idmap takes them; a mount's own maps still win.
    let container = map("0:300000:65536");
    let bare = mount(r#"{"destination": "/d", "type": "bind", "source": "/s", "options": ["rbind", "idmap"]}"#);
    let spec = MountSpec::from_oci_with_maps(&bare, &container, &container).unwrap();
    assert_eq!(spec.options_text(), "rbind,idmap,uidmap=0:300000:65536,gidmap=0:300000:65536");
    let own = mount(
        r#"{"destination": "/d", "type": "bind", "source": "/s", "options": ["rbind", "idmap"],
        "uidMappings": [{"containerID": 0, "hostID": 1, "size": 1}], "gidMappings": [{"containerID": 0, "hostID": 2, "size": 1}]}"#,
    );
    let spec = MountSpec::from_oci_with_maps(&own, &container, &container).unwrap();
    assert_eq!(spec.options_text(), "rbind,idmap,uidmap=0:1:1,gidmap=0:2:1");
}

#[test]
fn a_config_json_linux_maps_become_id_maps() {
    let spec: Spec = serde_json::from_str(
        r#"{"ociVersion": "1.2.0", "root": {"path": "rootfs"},
            "linux": {"uidMappings": [{"containerID": 0, "hostID": 100000, "size": 65536}],
                      "gidMappings": [{"containerID": 0, "hostID": 100000, "size": 65536}]}}"#,
    )
    .unwrap();
    let linux = spec.linux().as_ref().unwrap();
    let uids = IdMap::from_oci(linux.uid_mappings().as_deref().unwrap()).unwrap();
    assert_eq!(uids.to_host(0), Some(100000));
}

/// `idmap` on an `rbind` maps the top mount only; `ridmap` maps the mount beneath it too; `ro` holds on both.
#[test]
fn idmap_maps_the_top_mount_and_ridmap_every_mount() {
    privileged("idmap_maps_the_top_mount_and_ridmap_every_mount", |scratch| {
        const NAME: &str = "idmap_maps_the_top_mount_and_ridmap_every_mount";
        // The scratch directory and the tmpfs mounted beneath it are both idmapped.
        if !common::scratch_idmaps(NAME, scratch) || !common::has_feature(NAME, "idmap_tmpfs") {
            return;
        }
        let src = scratch.join("src");
        let sub = src.join("sub");
        fs::create_dir_all(&sub).unwrap();
        fs::write(src.join("top-file"), "t").unwrap();
        common::mount_tmpfs(&sub);
        fs::write(sub.join("sub-file"), "s").unwrap();
        chown(&sub.join("sub-file"), 0, 0);
        for (option, sub_owner) in [("idmap", (0, 0)), ("ridmap", (100000, 100000))] {
            let target = scratch.join(option);
            let json = format!(
                r#"{{"destination": "{}", "type": "bind", "source": "{}", "options": ["rbind", "{option}", "ro"],
                   "uidMappings": [{{"containerID": 0, "hostID": 100000, "size": 65536}}],
                   "gidMappings": [{{"containerID": 0, "hostID": 100000, "size": 65536}}]}}"#,
                target.display(),
                src.display()
            );
            // The destination exists, as a runtime makes it before mounting (MountSpec, like mount(8), never does
            // unless asked with X-mount.mkdir).
            fs::create_dir(&target).unwrap();
            let guard = MountSpec::from_oci(&mount(&json)).unwrap().mount().unwrap();
            assert_eq!(owner(&target.join("top-file")), (100000, 100000), "{option}: top mount");
            assert_eq!(owner(&target.join("sub/sub-file")), sub_owner, "{option}: the mount beneath");
            for dir in [target.clone(), target.join("sub")] {
                let err = fs::write(dir.join("new"), "x").unwrap_err();
                assert_eq!(err.raw_os_error(), Some(30), "{option}: {} is read-only (EROFS): {err}", dir.display());
            }
            guard.unmount().unwrap();
        }
        common::umount(&sub);
    });
}

#[test]
fn a_non_utf8_source_survives_both_ways() {
    use std::os::unix::ffi::OsStrExt;
    let source = std::path::PathBuf::from(std::ffi::OsStr::from_bytes(b"/srv/layer-\xff,:\\x"));
    let mut m = mount(r#"{"destination": "/d", "type": "bind", "options": ["rbind", "ro"]}"#);
    m.set_source(Some(source.clone()));
    let spec = MountSpec::from_oci(&m).unwrap();
    assert_eq!(spec.source.as_bytes(), source.as_os_str().as_bytes());
    assert_eq!(spec.to_oci().unwrap(), m);
}
