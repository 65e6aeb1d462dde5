//! The only `unsafe` in the crate: the few system calls rustix does not offer.
//!
//! * `mount_setattr(2)` with `struct mount_attr` (Linux 5.12),
//! * `open_tree_attr(2)` (Linux 6.15),
//! * the `clone(2)` that starts a process holding a user namespace (a new one, or one it joins with `setns(2)`),
//! * `ioctl(NS_GET_NSTYPE)` on a namespace fd,
//! * `listmount(2)` and `statmount(2)` (Linux 6.8), `getxattrat(2)` and `listxattrat(2)` (Linux 6.13).
//!
//! Everything else (fsopen, fsconfig, fsmount, move_mount, open_tree, statx, openat2, umount2) comes from rustix.
//! Each wrapper here is small, takes borrowed fds and C strings, and returns `rustix::io::Result`.
#![allow(unsafe_code)]

use std::ffi::CStr;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use rustix::io::{Errno, Result};
use rustix::process::Pid;

/// `struct mount_attr` from `<linux/mount.h>` (`MOUNT_ATTR_SIZE_VER0`, 32 bytes).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct MountAttr {
    pub attr_set: u64,
    pub attr_clr: u64,
    pub propagation: u64,
    pub userns_fd: u64,
}

/// `AT_RECURSIVE`, applied to `mount_setattr` and `open_tree`.
pub(crate) const AT_RECURSIVE: u32 = 0x8000;
/// `AT_EMPTY_PATH`.
pub(crate) const AT_EMPTY_PATH: u32 = 0x1000;

/// `__NR_open_tree_attr`: 467 in the unified syscall table every architecture shares since Linux 5.1
/// (libc 0.2 does not name it yet).
const SYS_OPEN_TREE_ATTR: libc::c_long = 467;

fn check(ret: libc::c_long) -> Result<libc::c_long> {
    if ret < 0 {
        Err(Errno::from_raw_os_error(std::io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO)))
    } else {
        Ok(ret)
    }
}

/// `mount_setattr(dfd, path, flags, &attr, sizeof(attr))`.
pub(crate) fn mount_setattr(dfd: BorrowedFd<'_>, path: &CStr, flags: u32, attr: &MountAttr) -> Result<()> {
    // SAFETY: `path` is a valid NUL-terminated string, `attr` points to a live `MountAttr` whose size we pass;
    // the kernel only reads it.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            dfd.as_raw_fd(),
            path.as_ptr(),
            flags as libc::c_uint,
            attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    check(ret).map(drop)
}

/// `open_tree_attr(dfd, path, flags, &attr, sizeof(attr))` (Linux 6.15): clone a tree and set its attributes
/// (an idmap included) in one call.
pub(crate) fn open_tree_attr(
    dfd: BorrowedFd<'_>,
    path: &CStr,
    flags: u32,
    attr: Option<&MountAttr>,
) -> Result<OwnedFd> {
    let (ptr, size) = match attr {
        Some(a) => (a as *const MountAttr, std::mem::size_of::<MountAttr>()),
        None => (std::ptr::null(), 0),
    };
    // SAFETY: as for `mount_setattr`; a null attr with size 0 is documented as "no attributes".
    let ret = unsafe { libc::syscall(SYS_OPEN_TREE_ATTR, dfd.as_raw_fd(), path.as_ptr(), flags, ptr, size) };
    let fd = check(ret)? as RawFd;
    // SAFETY: on success the kernel returned a new file descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Start a child process that holds a user namespace: a new one (`join` is `None`: `clone(CLONE_NEWUSER)`), or
/// the existing one `join` refers to (`setns(2)` in the child). The child does nothing but wait to be killed: it
/// exists only so that its parent can write or read `/proc/<pid>/{uid,gid}_map` and open `/proc/<pid>/ns/user`.
/// It is killed with `SIGKILL` when the thread that made it exits (`PR_SET_PDEATHSIG`), so it cannot outlive a
/// crashed caller.
///
/// When joining, this returns once the child has joined; if it could not, the child is reaped and its `setns`
/// errno returned (`EINVAL` for the caller's own namespace or an ancestor of it, `EPERM` without `CAP_SYS_ADMIN`
/// over it).
///
/// The caller must kill and reap it (see `userns.rs`).
pub(crate) fn spawn_userns_holder(join: Option<BorrowedFd<'_>>) -> Result<Pid> {
    let parent = rustix::process::getpid();
    // The joining child reports the outcome of `setns` (0 or an errno, 4 bytes) through this pipe.
    let report = match join {
        Some(_) => Some(rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?),
        None => None,
    };
    let join_raw = join.map(|ns| ns.as_raw_fd());
    let report_w_raw = report.as_ref().map(|(_, w)| w.as_raw_fd());
    let flags = if join.is_some() { libc::SIGCHLD } else { libc::CLONE_NEWUSER | libc::SIGCHLD };
    // SAFETY: `clone` without CLONE_VM and with a null stack behaves like `fork`: the child gets a copy of the
    // address space. In the child we only call async-signal-safe functions (prctl, getppid, setns, write, pause,
    // _exit) on fds it inherited, and never return into Rust code, so no lock or allocator state copied from
    // other threads is ever touched.
    let ret = unsafe { libc::syscall(libc::SYS_clone, flags as libc::c_ulong, 0usize, 0usize, 0usize, 0usize) };
    let pid = check(ret)?;
    if pid == 0 {
        // SAFETY: child side, see above.
        unsafe {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0);
            if libc::getppid() != parent.as_raw_nonzero().get() {
                libc::_exit(0);
            }
            if let (Some(ns), Some(w)) = (join_raw, report_w_raw) {
                let outcome: i32 =
                    if libc::setns(ns, libc::CLONE_NEWUSER) == 0 { 0 } else { *libc::__errno_location() };
                libc::write(w, (&outcome as *const i32).cast(), 4);
                if outcome != 0 {
                    libc::_exit(1);
                }
            }
            loop {
                libc::pause();
            }
        }
    }
    let pid = Pid::from_raw(pid as i32).expect("clone returned a positive pid");
    let Some((report_r, report_w)) = report else { return Ok(pid) };
    drop(report_w);
    let mut buf = [0u8; 4];
    let got = loop {
        match rustix::io::read(&report_r, &mut buf) {
            Err(Errno::INTR) => continue,
            other => break other,
        }
    };
    let outcome = match got {
        Ok(4) => i32::from_ne_bytes(buf),
        Ok(_) => libc::ECHILD,
        Err(e) => e.raw_os_error(),
    };
    if outcome == 0 {
        return Ok(pid);
    }
    let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
    while let Err(Errno::INTR) = rustix::process::waitpid(Some(pid), rustix::process::WaitOptions::empty()) {}
    Err(Errno::from_raw_os_error(outcome))
}

/// `NS_GET_NSTYPE`: `_IO(0xb7, 0x3)` from `<linux/nsfs.h>` (Linux 4.11).
const NS_GET_NSTYPE: libc::c_ulong = 0xb703;

/// The `CLONE_NEW*` type of the namespace `fd` refers to (`ioctl(NS_GET_NSTYPE)`). `ENOTTY` for an fd that is
/// not a namespace.
pub(crate) fn namespace_type(fd: BorrowedFd<'_>) -> Result<i32> {
    // SAFETY: NS_GET_NSTYPE takes no argument and only returns an int; a non-namespace fd gets ENOTTY.
    let ret = unsafe { libc::ioctl(fd.as_raw_fd(), NS_GET_NSTYPE) };
    check(libc::c_long::from(ret)).map(|t| t as i32)
}

/// The `CLONE_NEWUSER` namespace type, as [`namespace_type`] returns it.
pub(crate) const CLONE_NEWUSER: i32 = libc::CLONE_NEWUSER;

/// Run `f` in a new thread that first gives itself its own filesystem information (cwd, root, umask) with
/// `unshare(CLONE_FS)`, so `f` may `fchdir` (to hand the kernel relative paths) without any other thread seeing it.
/// The thread is joined before this returns; a panic in `f` is resumed here. `Err` if the `unshare` failed (and
/// then `f` did not run).
pub(crate) fn with_own_fs<T: Send>(f: impl FnOnce() -> T + Send) -> rustix::io::Result<T> {
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: rustix marks `unshare` unsafe because other threads sharing the fs_struct could observe the
            // change; this thread was made for it here, runs it before anything else, and shares nothing yet.
            unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::FS) }?;
            Ok(f())
        })
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
    })
}

/// `__NR_getxattrat` and `__NR_listxattrat` (Linux 6.13), the same on every architecture of the unified table.
const SYS_GETXATTRAT: libc::c_long = 464;
const SYS_LISTXATTRAT: libc::c_long = 465;

/// `struct xattr_args` of `getxattrat(2)`.
#[repr(C, align(8))]
struct XattrArgs {
    value: u64,
    size: u32,
    flags: u32,
}

/// `listxattrat(dfd, path, at_flags, list, size)` (Linux 6.13): the xattr names of `path` relative to `dfd`.
pub(crate) fn listxattrat(dfd: BorrowedFd<'_>, path: &CStr, at_flags: u32, list: &mut [u8]) -> Result<usize> {
    // SAFETY: `path` is NUL-terminated; the kernel writes at most `list.len()` bytes into `list`.
    let ret = unsafe {
        libc::syscall(SYS_LISTXATTRAT, dfd.as_raw_fd(), path.as_ptr(), at_flags, list.as_mut_ptr(), list.len())
    };
    check(ret).map(|n| n as usize)
}

/// `getxattrat(dfd, path, at_flags, name, &args, sizeof(args))` (Linux 6.13): one xattr value.
pub(crate) fn getxattrat(
    dfd: BorrowedFd<'_>,
    path: &CStr,
    at_flags: u32,
    name: &CStr,
    value: &mut [u8],
) -> Result<usize> {
    let args =
        XattrArgs { value: value.as_mut_ptr() as u64, size: value.len().try_into().unwrap_or(u32::MAX), flags: 0 };
    // SAFETY: `path` and `name` are NUL-terminated; `args` points at `value`, which outlives the call and whose
    // length bounds what the kernel writes; the struct size is passed.
    let ret = unsafe {
        libc::syscall(
            SYS_GETXATTRAT,
            dfd.as_raw_fd(),
            path.as_ptr(),
            at_flags,
            name.as_ptr(),
            &args as *const XattrArgs,
            size_of::<XattrArgs>(),
        )
    };
    check(ret).map(|n| n as usize)
}

/// `__NR_statmount` and `__NR_listmount` (Linux 6.8), the same on every architecture of the unified table.
const SYS_STATMOUNT: libc::c_long = 457;
const SYS_LISTMOUNT: libc::c_long = 458;

/// `LSMT_ROOT`: list every mount of the caller's mount namespace (below its root).
pub(crate) const LSMT_ROOT: u64 = u64::MAX;

/// `struct mnt_id_req` (`MNT_ID_REQ_SIZE_VER0`, 24 bytes).
#[repr(C)]
struct MntIdReq {
    size: u32,
    spare: u32,
    mnt_id: u64,
    param: u64,
}

/// `listmount(&req, ids, ids.len(), 0)` (Linux 6.8): the never-reused ids of the mounts below `mnt_id`
/// ([`LSMT_ROOT`]: all) in the calling thread's mount namespace, in ascending order, starting after `last` (0: from
/// the first). Returns how many were written.
pub(crate) fn listmount(mnt_id: u64, last: u64, ids: &mut [u64]) -> Result<usize> {
    let req = MntIdReq { size: size_of::<MntIdReq>() as u32, spare: 0, mnt_id, param: last };
    // SAFETY: `req` is a live `mnt_id_req` whose size is in it; the kernel writes at most `ids.len()` u64s.
    let ret = unsafe { libc::syscall(SYS_LISTMOUNT, &req as *const MntIdReq, ids.as_mut_ptr(), ids.len(), 0u32) };
    check(ret).map(|n| n as usize)
}

/// `statmount(&req, buf, size, 0)` (Linux 6.8): `struct statmount` of the mount `mnt_id` for the fields in `mask`,
/// written into `buf` (u64s, for the struct's alignment); returns the bytes the kernel filled in (`EOVERFLOW`: the
/// strings asked for do not fit). The fixed part is 512 bytes; strings follow it.
pub(crate) fn statmount(mnt_id: u64, mask: u64, buf: &mut [u64]) -> Result<&[u8]> {
    let req = MntIdReq { size: size_of::<MntIdReq>() as u32, spare: 0, mnt_id, param: mask };
    let bytes = std::mem::size_of_val(buf);
    // SAFETY: `req` is a live `mnt_id_req`; the kernel writes at most `bytes` bytes into `buf`.
    let ret = unsafe { libc::syscall(SYS_STATMOUNT, &req as *const MntIdReq, buf.as_mut_ptr(), bytes, 0u32) };
    check(ret)?;
    // SAFETY: `buf` is `bytes` long and initialised (u64s); viewing it as bytes is always valid, and the borrow
    // keeps `buf` alive and unaliased while the view lives.
    let all = unsafe { std::slice::from_raw_parts(buf.as_ptr().cast::<u8>(), bytes) };
    let size = u32::from_ne_bytes(all[..4].try_into().expect("4 bytes")) as usize;
    Ok(&all[..size.min(bytes)])
}
