//! `audit`: layers applied by the crate pass; planted damage is found, one finding a line.

mod common;

use std::fs;
use std::path::Path;

use common::archive::{E, tar_of};
use common::privileged;
use layermount::{ApplyOptions, AuditProblem, SyncMode, WhiteoutMode, apply, audit, marker_path};

fn set_xattr(path: &Path, key: &str, value: &[u8]) {
    rustix::fs::lsetxattr(path, key, value, rustix::fs::XattrFlags::empty()).expect("setxattr");
}

/// A lower layer and a layer on it with a whiteout and an opaque directory, as the crate applies them.
fn two_layers(store: &Path, mode: WhiteoutMode) -> (std::path::PathBuf, std::path::PathBuf) {
    fs::create_dir_all(store).unwrap();
    let (l1, l2) = (store.join("1"), store.join("2"));
    let opts = ApplyOptions::new().sync(SyncMode::None).whiteouts(mode);
    let base =
        tar_of(&[E::Dir("etc/"), E::File("etc/gone", "x"), E::Dir("opt/"), E::File("opt/old", "x"), E::Dir("b/")]);
    apply(&base[..], &l1, &opts).unwrap();
    let top = tar_of(&[
        E::File("etc/.wh.gone", ""),
        E::Dir("opt/"),
        E::File("opt/.wh..wh..opq", ""),
        E::File("opt/new", "y"),
    ]);
    let layer = apply(&top[..], &l2, &opts.clone().parent(&l1)).unwrap();
    let expected: &[&str] = if mode == WhiteoutMode::Oci { &[] } else { &["opt"] };
    let listed: Vec<&Path> = layer.opaque_dirs.iter().flatten().map(|p| p.as_path()).collect();
    assert_eq!(listed, expected.iter().map(Path::new).collect::<Vec<_>>());
    (l1, l2)
}

#[test]
fn clean_layers_pass() {
    privileged("clean_layers_pass", |scratch| {
        for (i, mode) in
            [WhiteoutMode::Overlay, WhiteoutMode::OverlayUserXattr, WhiteoutMode::Oci].into_iter().enumerate()
        {
            let (l1, l2) = two_layers(&scratch.join(i.to_string()), mode);
            let findings = audit([&l1, &l2]).unwrap();
            assert!(findings.is_empty(), "{mode:?}: {findings:#?}");
        }
    });
}

#[test]
fn planted_damage_is_found() {
    privileged("planted_damage_is_found", |scratch| {
        let (l1, l2) = two_layers(scratch, WhiteoutMode::Overlay);
        // The unpack-through-overlay symptom: a stray opaque directory hiding the lower /b.
        fs::create_dir(l2.join("b")).unwrap();
        set_xattr(&l2.join("b"), "trusted.overlay.opaque", b"y");
        // The other namespace, an upper's internal state, an opaque marker on the root, an OCI whiteout left as a file.
        set_xattr(&l1.join("etc"), "user.overlay.opaque", b"y");
        set_xattr(&l1.join("opt/old"), "trusted.overlay.origin", b"\0");
        set_xattr(&l1, "trusted.overlay.opaque", b"y");
        fs::write(l1.join("etc/.wh.passwd"), "").unwrap();
        let findings = audit([&l1, &l2]).unwrap();
        let lines: Vec<String> = findings.iter().map(|f| f.to_string()).collect();
        assert_eq!(findings.len(), 5, "{lines:#?}");
        let at = |layer: &Path, path: &str| findings.iter().find(|f| f.layer == layer && f.path == Path::new(path));
        assert!(matches!(at(&l2, "/b").unwrap().problem, AuditProblem::UnlistedOpaque { .. }), "{lines:#?}");
        assert!(matches!(at(&l1, "/etc").unwrap().problem, AuditProblem::ForeignNamespace { .. }), "{lines:#?}");
        assert!(matches!(at(&l1, "/opt/old").unwrap().problem, AuditProblem::UnexpectedOverlayXattr { .. }));
        assert!(matches!(at(&l1, "/").unwrap().problem, AuditProblem::Ignored(_)), "{lines:#?}");
        assert!(matches!(at(&l1, "/etc/.wh.passwd").unwrap().problem, AuditProblem::Ignored(_)), "{lines:#?}");
        assert_eq!(
            at(&l2, "/b").unwrap().to_string(),
            format!(
                "{}: /b: stray opaque directory: trusted.overlay.opaque=y not listed in the layer's commit record",
                l2.display()
            )
        );
        // The layer's own opaque directory is not reported.
        assert!(at(&l2, "/opt").is_none());
    });
}

#[test]
fn a_layer_without_a_record_is_reported() {
    privileged("a_layer_without_a_record_is_reported", |scratch| {
        let (_, l2) = two_layers(scratch, WhiteoutMode::Overlay);
        fs::remove_file(marker_path(&l2)).unwrap();
        let findings = audit([&l2]).unwrap();
        assert_eq!(findings.len(), 1, "{findings:#?}");
        assert!(matches!(findings[0].problem, AuditProblem::NoRecord(_)));
        assert!(audit([scratch.join("missing")]).is_err());
    });
}

/// A record of format 1 has no list, only a count of opaque directories: audit passes a layer that matches it and
/// reports every opaque directory (it cannot tell which is stray) when there are more.
#[test]
fn a_format_1_record_is_checked_by_its_count() {
    privileged("a_format_1_record_is_checked_by_its_count", |scratch| {
        let (_, l2) = two_layers(scratch, WhiteoutMode::Overlay);
        let marker = marker_path(&l2);
        let v2 = fs::read_to_string(&marker).unwrap();
        assert!(v2.starts_with("layermount-layer-commit 2\n") && v2.contains("\nopaque opt\n"), "{v2}");
        let v1: String = v2
            .replacen("layermount-layer-commit 2", "layermount-layer-commit 1", 1)
            .lines()
            .filter(|l| !l.starts_with("opaque ") && !l.starts_with("whiteouts "))
            .map(|l| format!("{l}\n"))
            .collect();
        fs::write(&marker, v1).unwrap();
        assert_eq!(layermount::verify(&l2).unwrap().opaque_dirs, None);
        assert!(audit([&l2]).unwrap().is_empty());
        fs::create_dir(l2.join("b")).unwrap();
        set_xattr(&l2.join("b"), "trusted.overlay.opaque", b"y");
        let findings = audit([&l2]).unwrap();
        let paths: Vec<&Path> = findings.iter().map(|f| f.path.as_path()).collect();
        assert_eq!(paths, [Path::new("/b"), Path::new("/opt")], "{findings:#?}");
        assert!(findings.iter().all(|f| matches!(f.problem, AuditProblem::UnlistedOpaque { .. })));
    });
}
