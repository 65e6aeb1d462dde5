//! [`FsContext`]: a filesystem being configured with `fsopen(2)`/`fsconfig(2)`, whose errors carry the messages
//! the kernel wrote to the context fd.

use std::ffi::CStr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::mount::{FsMountFlags, FsOpenFlags, MountAttrFlags};

use crate::error::{Error, Result};
use crate::tree::{DetachedTree, Origin};

/// A filesystem context from `fsopen(2)`: set parameters, create the superblock, mount it detached.
///
/// Every failure drains the context's message queue into [`Error::kernel_messages`], so an overlay error reads
/// `overlayfs: failed to resolve 'l9': -2` rather than a bare `EINVAL`.
///
/// Needs `CAP_SYS_ADMIN` (in the user namespace owning the mount namespace, for filesystems that allow it).
///
/// # References
/// - [`fsopen(2)`](https://man7.org/linux/man-pages/man2/fsopen.2.html),
///   [`fsconfig(2)`](https://man7.org/linux/man-pages/man2/fsconfig.2.html),
///   [`fsmount(2)`](https://man7.org/linux/man-pages/man2/fsmount.2.html)
///
/// ```no_run
/// use layermount::FsContext;
/// let mut fs = FsContext::open("tmpfs")?;
/// fs.set_string("size", "16m")?;
/// fs.create()?;
/// let tree = fs.mount()?; // detached: not visible anywhere until attached
/// # Ok::<(), layermount::Error>(())
/// ```
#[derive(Debug)]
#[doc(alias = "fsopen")]
pub struct FsContext {
    fd: OwnedFd,
    fs_type: String,
}

impl FsContext {
    /// `fsopen(fs_type, FSOPEN_CLOEXEC)`.
    pub fn open(fs_type: &str) -> Result<Self> {
        let fd = rustix::mount::fsopen(fs_type, FsOpenFlags::FSOPEN_CLOEXEC)
            .map_err(|e| Error::os("fsopen", e).with_detail(format!("filesystem type \"{fs_type}\"")))?;
        Ok(Self { fd, fs_type: fs_type.to_string() })
    }

    /// The filesystem type this context was opened for.
    pub fn fs_type(&self) -> &str {
        &self.fs_type
    }

    /// Read and clear the messages the kernel queued on the context (`e ...`, `w ...`, `i ...` lines).
    pub fn take_messages(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut buf = [0u8; 1024];
        // Each read returns one message; ENODATA when the queue is empty. The queue holds at most 8.
        for _ in 0..16 {
            match rustix::io::read(&self.fd, &mut buf) {
                Ok(n) if n > 0 => out.push(String::from_utf8_lossy(&buf[..n]).trim_end().to_string()),
                _ => break,
            }
        }
        out
    }

    fn fail(&self, operation: &'static str, key: &str, e: rustix::io::Errno) -> Error {
        let err = Error::os(operation, e).with_kernel_messages(self.take_messages());
        if key.is_empty() {
            err.with_detail(self.fs_type.clone())
        } else {
            err.with_detail(format!("{} {key}", self.fs_type))
        }
    }

    /// `fsconfig(FSCONFIG_SET_FLAG, key)`, e.g. `"ro"`, `"userxattr"`.
    #[doc(alias = "fsconfig")]
    pub fn set_flag(&mut self, key: &str) -> Result<()> {
        rustix::mount::fsconfig_set_flag(&self.fd, key).map_err(|e| self.fail("fsconfig set flag", key, e))
    }

    /// `fsconfig(FSCONFIG_SET_STRING, key, value)`. The kernel caps a value at 255 bytes.
    #[doc(alias = "fsconfig")]
    pub fn set_string(&mut self, key: &str, value: &str) -> Result<()> {
        rustix::mount::fsconfig_set_string(&self.fd, key, value)
            .map_err(|e| self.fail("fsconfig set string", &format!("{key}={value}"), e))
    }

    /// `fsconfig(FSCONFIG_SET_STRING, key, value)` with a C string, for paths that are not UTF-8.
    pub fn set_cstring(&mut self, key: &str, value: &CStr) -> Result<()> {
        rustix::mount::fsconfig_set_string(&self.fd, key, value)
            .map_err(|e| self.fail("fsconfig set string", &format!("{key}={}", value.to_string_lossy()), e))
    }

    /// `fsconfig(FSCONFIG_SET_FD, key, fd)`, e.g. overlay's `"lowerdir+"` with a directory fd (Linux 6.13).
    #[doc(alias = "fsconfig")]
    pub fn set_fd(&mut self, key: &str, fd: BorrowedFd<'_>) -> Result<()> {
        rustix::mount::fsconfig_set_fd(&self.fd, key, fd).map_err(|e| self.fail("fsconfig set fd", key, e))
    }

    /// `fsconfig(FSCONFIG_CMD_CREATE)`: make the superblock.
    #[doc(alias = "fsconfig")]
    pub fn create(&mut self) -> Result<()> {
        rustix::mount::fsconfig_create(&self.fd).map_err(|e| self.fail("fsconfig create", "", e))
    }

    /// `fsmount(fd, FSMOUNT_CLOEXEC, 0)`: a detached mount of the created superblock.
    pub fn mount(&self) -> Result<DetachedTree> {
        self.mount_with(MountAttrFlags::empty())
    }

    pub(crate) fn mount_with(&self, attrs: MountAttrFlags) -> Result<DetachedTree> {
        let fd = rustix::mount::fsmount(&self.fd, FsMountFlags::FSMOUNT_CLOEXEC, attrs)
            .map_err(|e| self.fail("fsmount", "", e))?;
        Ok(DetachedTree::from_owned(fd, Origin::FsMount, false))
    }
}

impl AsFd for FsContext {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}
