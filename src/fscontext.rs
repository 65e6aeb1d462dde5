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
/// # Kernel
/// Linux 5.2 (`fsopen`, `fsconfig`, `fsmount`); what a filesystem accepts as parameters depends on the filesystem and
/// its version (overlay's `lowerdir+`: 6.7 as a string, 6.13 as an fd).
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
    ///
    /// # Errors
    /// [`ErrorKind::NotSupported`](crate::ErrorKind::NotSupported) when the kernel has no `fsopen` (before 5.2);
    /// [`ErrorKind::PermissionDenied`](crate::ErrorKind::PermissionDenied) without `CAP_SYS_ADMIN`;
    /// [`ErrorKind::Os`](crate::ErrorKind::Os) (`ENODEV`) for an unknown filesystem type.
    ///
    /// # Kernel
    /// Linux 5.2.
    ///
    /// ```no_run
    /// let fs = layermount::FsContext::open("overlay")?;
    /// assert_eq!(fs.fs_type(), "overlay");
    /// # Ok::<(), layermount::Error>(())
    /// ```
    pub fn open(fs_type: &str) -> Result<Self> {
        let fd = rustix::mount::fsopen(fs_type, FsOpenFlags::FSOPEN_CLOEXEC)
            .map_err(|e| Error::os("fsopen", e).with_detail(format!("filesystem type \"{fs_type}\"")))?;
        Ok(Self { fd, fs_type: fs_type.to_string() })
    }

    /// The filesystem type this context was opened for.
    ///
    /// ```no_run
    /// let fs = layermount::FsContext::open("tmpfs")?;
    /// println!("configuring {}", fs.fs_type());
    /// # Ok::<(), layermount::Error>(())
    /// ```
    pub fn fs_type(&self) -> &str {
        &self.fs_type
    }

    /// Read and clear the messages the kernel queued on the context (`e ...`, `w ...`, `i ...` lines).
    ///
    /// Every failing call of this type already does this and puts them in [`Error::kernel_messages`](crate::Error::kernel_messages);
    /// this is for the warnings (`w ...`) and information (`i ...`) a call that succeeded left.
    ///
    /// ```no_run
    /// let mut fs = layermount::FsContext::open("overlay")?;
    /// fs.set_string("lowerdir+", "/var/lib/layers/2")?;
    /// fs.set_string("lowerdir+", "/var/lib/layers/1")?;
    /// fs.create()?;
    /// for line in fs.take_messages() {
    ///     eprintln!("overlay says: {line}");
    /// }
    /// # Ok::<(), layermount::Error>(())
    /// ```
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
    ///
    /// # Errors
    /// [`ErrorKind::Os`](crate::ErrorKind::Os) (usually `EINVAL`) when the filesystem does not know the flag, with the
    /// kernel's messages attached.
    ///
    /// # Kernel
    /// Linux 5.2.
    ///
    /// ```no_run
    /// let mut fs = layermount::FsContext::open("overlay")?;
    /// fs.set_flag("userxattr")?;
    /// # Ok::<(), layermount::Error>(())
    /// ```
    #[doc(alias = "fsconfig")]
    pub fn set_flag(&mut self, key: &str) -> Result<()> {
        rustix::mount::fsconfig_set_flag(&self.fd, key).map_err(|e| self.fail("fsconfig set flag", key, e))
    }

    /// `fsconfig(FSCONFIG_SET_STRING, key, value)`. The kernel caps a value at 255 bytes.
    ///
    /// # Errors
    /// [`ErrorKind::Os`](crate::ErrorKind::Os) when the filesystem refuses the parameter (an unknown key, a bad value, a
    /// path that does not resolve, a value over 255 bytes), with the kernel's messages attached.
    ///
    /// # Kernel
    /// Linux 5.2.
    ///
    /// ```no_run
    /// let mut fs = layermount::FsContext::open("tmpfs")?;
    /// fs.set_string("mode", "0755")?;
    /// # Ok::<(), layermount::Error>(())
    /// ```
    #[doc(alias = "fsconfig")]
    pub fn set_string(&mut self, key: &str, value: &str) -> Result<()> {
        rustix::mount::fsconfig_set_string(&self.fd, key, value)
            .map_err(|e| self.fail("fsconfig set string", &format!("{key}={value}"), e))
    }

    /// `fsconfig(FSCONFIG_SET_STRING, key, value)` with a C string, for paths that are not UTF-8.
    ///
    /// # Errors
    /// As [`set_string`](Self::set_string).
    ///
    /// # Kernel
    /// Linux 5.2.
    ///
    /// ```no_run
    /// use std::ffi::CString;
    /// use std::os::unix::ffi::OsStrExt;
    /// let path = std::ffi::OsStr::from_bytes(b"/var/lib/layers/caf\xe9");
    /// let mut fs = layermount::FsContext::open("overlay")?;
    /// fs.set_cstring("lowerdir+", &CString::new(path.as_bytes()).unwrap())?;
    /// # Ok::<(), layermount::Error>(())
    /// ```
    pub fn set_cstring(&mut self, key: &str, value: &CStr) -> Result<()> {
        rustix::mount::fsconfig_set_string(&self.fd, key, value)
            .map_err(|e| self.fail("fsconfig set string", &format!("{key}={}", value.to_string_lossy()), e))
    }

    /// `fsconfig(FSCONFIG_SET_FD, key, fd)`, e.g. overlay's `"lowerdir+"` with a directory fd (Linux 6.13).
    ///
    /// # Errors
    /// [`ErrorKind::Os`](crate::ErrorKind::Os) when the filesystem refuses the fd for that key, with the kernel's
    /// messages attached (before 6.15 overlay refuses a directory of a detached mount: `failed to clone lowerpath`).
    ///
    /// # Kernel
    /// Linux 5.2 for the call; overlay takes layer fds from 6.13 (`O_PATH` fds and fds inside detached mounts from 6.15,
    /// and 6.13.10/6.14.2).
    ///
    /// ```no_run
    /// use std::os::fd::AsFd;
    /// let layer = std::fs::File::open("/var/lib/layers/1")?;
    /// let mut fs = layermount::FsContext::open("overlay")?;
    /// fs.set_fd("lowerdir+", layer.as_fd())?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[doc(alias = "fsconfig")]
    pub fn set_fd(&mut self, key: &str, fd: BorrowedFd<'_>) -> Result<()> {
        rustix::mount::fsconfig_set_fd(&self.fd, key, fd).map_err(|e| self.fail("fsconfig set fd", key, e))
    }

    /// `fsconfig(FSCONFIG_CMD_CREATE)`: make the superblock.
    ///
    /// # Errors
    /// [`ErrorKind::Os`](crate::ErrorKind::Os) when the filesystem cannot be made from the parameters given (for overlay:
    /// a missing layer, nested layers, a work directory on another filesystem, ...), with the kernel's messages attached;
    /// [`ErrorKind::PermissionDenied`](crate::ErrorKind::PermissionDenied) without the privilege the filesystem asks.
    ///
    /// # Kernel
    /// Linux 5.2.
    ///
    /// ```no_run
    /// let mut fs = layermount::FsContext::open("tmpfs")?;
    /// fs.create()?;
    /// let tree = fs.mount()?;
    /// # Ok::<(), layermount::Error>(())
    /// ```
    #[doc(alias = "fsconfig")]
    pub fn create(&mut self) -> Result<()> {
        rustix::mount::fsconfig_create(&self.fd).map_err(|e| self.fail("fsconfig create", "", e))
    }

    /// `fsmount(fd, FSMOUNT_CLOEXEC, 0)`: a detached mount of the created superblock.
    ///
    /// # Errors
    /// [`ErrorKind::Os`](crate::ErrorKind::Os) when the superblock was not created ([`create`](Self::create) first) or
    /// the kernel cannot make the mount, with the kernel's messages attached.
    ///
    /// # Kernel
    /// Linux 5.2.
    ///
    /// ```no_run
    /// let mut fs = layermount::FsContext::open("tmpfs")?;
    /// fs.create()?;
    /// let guard = fs.mount()?.attach("/run/scratch")?;
    /// # Ok::<(), layermount::Error>(())
    /// ```
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
