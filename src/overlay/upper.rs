//! The upper and work directories of an idmapped overlay, made ready for the container's root.
//!
//! With idmapped lower layers and a plain upper, the merged root directory *is* the upper's root directory: its
//! owner is what the container sees on `/`, and new files are created with the writer's host ids. A fresh upper
//! made by host root would show as `nobody` (unmapped) to the container and refuse its root's writes, so an empty
//! upper (and work) directory is handed to the map's root before mounting.

use std::os::fd::{AsFd, BorrowedFd};
use std::path::Path;

use rustix::fs::{AtFlags, Dir, OFlags, StatxFlags};

use super::layers::{Resolved, Role};
use crate::error::{Error, ErrorKind, OverlayProblem, Result};
use crate::userns::UserNamespace;

const OP: &str = "prepare upper";

/// Hand empty upper and work directories to the root of `ns`'s maps (host ids of container uid 0 and gid 0).
/// A non-empty upper owned by anyone else is refused: its files were written for another container.
pub(crate) fn prepare(all: &[Resolved], ns: &UserNamespace) -> Result<()> {
    let Some((uid, gid)) = root_of(ns) else {
        // A map without a container root: nobody to hand the upper to.
        return Ok(());
    };
    for r in all.iter().filter(|r| matches!(r.role, Role::Upper | Role::Work)) {
        prepare_dir(r.role, &r.given, r.open(OFlags::RDONLY)?.as_fd(), (uid, gid))?;
    }
    Ok(())
}

/// The container root's host ids `(uid, gid)` under `ns`, if it maps container root at all.
pub(crate) fn root_of(ns: &UserNamespace) -> Option<(u32, u32)> {
    Some((ns.uid_map().to_host(0)?, ns.gid_map().to_host(0)?))
}

/// [`prepare`] for one upper or work directory, open as `fd` (`O_PATH` will do), for the container root `root`.
pub(crate) fn prepare_dir(role: Role, given: &Path, fd: BorrowedFd<'_>, root: (u32, u32)) -> Result<()> {
    let (uid, gid) = root;
    let st = rustix::fs::statx(fd, "", AtFlags::EMPTY_PATH, StatxFlags::UID | StatxFlags::GID)
        .map_err(|e| Error::os(OP, e).with_path(given))?;
    if (st.stx_uid, st.stx_gid) == (uid, gid) {
        return Ok(());
    }
    // The fd may be O_PATH (the fast path opens it so): read and chown through a readable one, made only now.
    let fd =
        rustix::fs::openat(fd, ".", OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, rustix::fs::Mode::empty())
            .map_err(|e| Error::os(OP, e).with_path(given))?;
    let fd = fd.as_fd();
    if !is_empty(fd).map_err(|e| Error::os(OP, e).with_path(given))? {
        if role == Role::Work {
            // Overlay keeps its own `work/` subdirectory here after a first mount; it runs as the mounter.
            return Ok(());
        }
        return Err(Error::new(ErrorKind::InvalidOverlay(OverlayProblem::UpperOwner), OP)
            .with_path(given)
            .with_detail(format!(
                "it holds files and is owned by {}:{}, not by the container's root {uid}:{gid}",
                st.stx_uid, st.stx_gid
            )));
    }
    rustix::fs::fchown(fd, Some(rustix::fs::Uid::from_raw(uid)), Some(rustix::fs::Gid::from_raw(gid)))
        .map_err(|e| Error::os(OP, e).with_path(given))
}

fn is_empty(fd: std::os::fd::BorrowedFd<'_>) -> rustix::io::Result<bool> {
    for entry in Dir::read_from(fd)? {
        let name = entry?.file_name().to_bytes().to_vec();
        if name != b"." && name != b".." {
            return Ok(false);
        }
    }
    Ok(true)
}

/// An idmapped upper is written by overlay with the mounter's credentials, through the idmap: unless the map's host
/// side holds the mounter's uid and gid, the kernel mounts the overlay read-only without an error.
pub(crate) fn check_idmapped(ns: &UserNamespace) -> Result<()> {
    let uid = rustix::process::geteuid().as_raw();
    let gid = rustix::process::getegid().as_raw();
    if ns.uid_map().to_container(uid).is_none() || ns.gid_map().to_container(gid).is_none() {
        return Err(Error::new(ErrorKind::InvalidOverlay(OverlayProblem::UpperNotMapped), "compose overlay")
            .with_detail(format!(
                "the map {} does not hold the mounter's uid {uid} / gid {gid} on its host side, so overlay could \
                 not write the upper through it; leave the upper unmapped (it is then prepared for the container's \
                 root) or use a map that includes the mounter",
                ns.uid_map()
            )));
    }
    Ok(())
}
