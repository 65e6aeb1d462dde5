//! [`Error`]: what a snapshot operation reports, one variant per gRPC status containerd acts on.

use containerd_snapshots::tonic::{Code, Status};

/// An error of the snapshotter; converts into the gRPC status containerd expects (`NotFound` and `AlreadyExists`
/// are matched by containerd's clients, `FailedPrecondition` tells its garbage collector to try again later).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No snapshot has this key.
    #[error("{0}")]
    NotFound(String),
    /// The key is taken.
    #[error("{0}")]
    AlreadyExists(String),
    /// The snapshot is in a state that forbids the operation (in use, has children, not active, ...).
    #[error("{0}")]
    FailedPrecondition(String),
    /// The request itself is wrong (a bad label value, an unknown filter field, ...).
    #[error("{0}")]
    InvalidArgument(String),
    /// Anything else: a failed mount, a database error, an I/O error.
    #[error("{0}")]
    Internal(String),
}

/// Results of the snapshotter.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn not_found(key: &str) -> Self {
        Self::NotFound(format!("snapshot {key:?} not found"))
    }

    pub(crate) fn internal(msg: impl Into<String>) -> Self {
        Self::Internal(msg.into())
    }

    pub(crate) fn db(what: impl std::fmt::Display, e: impl Into<redb::Error>) -> Self {
        Self::Internal(format!("metadata database: {what}: {}", e.into()))
    }

    pub(crate) fn io(what: impl std::fmt::Display, path: &std::path::Path, e: std::io::Error) -> Self {
        Self::Internal(format!("{what} {}: {e}", path.display()))
    }

    /// The gRPC code this error is sent with.
    pub fn code(&self) -> Code {
        match self {
            Error::NotFound(_) => Code::NotFound,
            Error::AlreadyExists(_) => Code::AlreadyExists,
            Error::FailedPrecondition(_) => Code::FailedPrecondition,
            Error::InvalidArgument(_) => Code::InvalidArgument,
            Error::Internal(_) => Code::Internal,
        }
    }
}

impl From<layermount::Error> for Error {
    fn from(e: layermount::Error) -> Self {
        match e.kind() {
            layermount::ErrorKind::MountBoundary => Error::FailedPrecondition(e.to_string()),
            _ => Error::Internal(e.to_string()),
        }
    }
}

impl From<Error> for Status {
    fn from(e: Error) -> Self {
        Status::new(e.code(), e.to_string())
    }
}
