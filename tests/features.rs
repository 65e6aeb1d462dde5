//! Features: the probe on the running kernel, forced levels, and fs-context messages in errors.

mod common;

use layermount::{ErrorKind, Features, FsContext, Strategy};

fn kernel_at_least(f: &Features, major: u32, minor: u32) -> bool {
    let mut it = f.kernel_release.split(|c: char| !c.is_ascii_digit()).filter_map(|s| s.parse::<u32>().ok());
    let (a, b) = (it.next().unwrap_or(0), it.next().unwrap_or(0));
    (a, b) >= (major, minor)
}

#[test]
fn probe_matches_this_kernel() {
    if !common::have_privilege("probe_matches_this_kernel") {
        return;
    }
    let f = Features::probe();
    assert!(f.privileged);
    assert!(f.new_mount_api && f.mount_setattr, "{f:?}");
    // The probe checked against the releases that added each feature (mainline; a distribution may backport, never
    // take away). This is what found 6.12 probed as `legacy`: the strings probe made an overlay of a detached tmpfs.
    let since = [
        (6, 3, f.idmap_tmpfs),
        (6, 5, f.overlay_context_messages && f.overlay_data_layers),
        (6, 6, f.tmpfs_user_xattrs),
        (6, 7, f.overlay_lowerdir_plus),
        (6, 13, f.overlay_lowerdir_fd),
    ];
    for (major, minor, has) in since {
        if kernel_at_least(&f, major, minor) {
            assert!(has, "{major}.{minor}: {f:?}");
        }
    }
    if kernel_at_least(&f, 6, 15) {
        assert!(f.open_tree_attr && f.statx_mnt_id_unique && f.idmap_tmpfs, "{f:?}");
        assert!(f.overlay_lowerdir_plus && f.overlay_lowerdir_fd && f.overlay_detached_layers, "{f:?}");
        assert_eq!(f.strategy(), Strategy::DetachedFds);
    }
    // The cached value equals a fresh probe when no strategy is forced.
    if std::env::var_os(layermount::STRATEGY_ENV).is_none() {
        assert_eq!(Features::get(), &f);
    }
}

#[test]
fn unprivileged_probe_reports_syscalls_but_no_mounts() {
    if !common::have_privilege("unprivileged_probe_reports_syscalls_but_no_mounts") {
        return;
    }
    let f = std::thread::spawn(|| {
        caps::drop(None, caps::CapSet::Effective, caps::Capability::CAP_SYS_ADMIN).unwrap();
        Features::probe()
    })
    .join()
    .unwrap();
    assert!(!f.privileged);
    assert!(f.mount_setattr && f.new_mount_api, "presence is probed without privilege: {f:?}");
    assert!(!f.overlay && !f.idmap_tmpfs && f.strategy() == Strategy::Legacy, "{f:?}");
}

#[test]
fn levels_can_be_forced_down() {
    let f = Features::probe();
    for strategy in [Strategy::Legacy, Strategy::Strings, Strategy::AttachedFds, Strategy::DetachedFds] {
        let limited = f.limited_to(strategy);
        assert!(limited.strategy() <= strategy);
        if f.strategy() >= strategy {
            assert_eq!(limited.strategy(), strategy);
        }
        assert_eq!(strategy.name().parse::<Strategy>().unwrap(), strategy);
    }
    let err = "newest".parse::<Strategy>().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert!(err.to_string().contains("\"newest\""), "{err}");
}

#[test]
fn fsconfig_errors_carry_kernel_messages() {
    const NAME: &str = "fsconfig_errors_carry_kernel_messages";
    if !common::have_privilege(NAME) || !common::has_feature(NAME, "overlay_context_messages") {
        return;
    }
    let mut ov = FsContext::open("overlay").unwrap();
    let err = ov.set_string("lowerdir+", "/nonexistent-layermount-layer").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(2), "{err}");
    let err = ov.set_flag("no-such-option").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(22), "{err}");
    assert_eq!(err.kernel_messages(), ["e overlay: Unknown parameter 'no-such-option'"]);
    assert!(
        FsContext::open("overlay")
            .unwrap()
            .set_string("lowerdir+", "/x")
            .unwrap_err()
            .to_string()
            .contains("lowerdir+=/x")
    );
    let err = FsContext::open("no-such-filesystem").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(19), "ENODEV: {err}");
    assert!(err.to_string().contains("no-such-filesystem"), "{err}");
}
