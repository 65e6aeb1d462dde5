//! [`serve`]: the gRPC server on a unix socket, stopped by SIGTERM or SIGINT.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use containerd_snapshots::tonic::transport::Server;
use tokio::net::UnixListener;
use tokio::signal::unix::{SignalKind, signal};
use tokio_stream::wrappers::UnixListenerStream;

use crate::error::{Error, Result};
use crate::snapshotter::{Service, Snapshotter};

/// How long open connections may take to close after SIGTERM before the server stops anyway.
const GRACE: Duration = Duration::from_secs(3);

/// Serve `snapshotter` on the unix socket `address` until SIGTERM or SIGINT, then return `Ok` (the socket file is
/// removed). A stale socket file at `address` is replaced; a socket someone listens on, or any other file, is an
/// error.
///
/// # Errors
/// The socket cannot be bound, or the server fails.
///
/// ```no_run
/// use layermount_snapshotter::{Options, Snapshotter, serve};
/// let s = Snapshotter::open("/var/lib/layermount-snapshotter", Options::default())?;
/// let rt = tokio::runtime::Runtime::new().expect("runtime");
/// rt.block_on(serve(s, "/run/layermount-snapshotter.sock".as_ref()))?; // until SIGTERM
/// # Ok::<(), layermount_snapshotter::Error>(())
/// ```
pub async fn serve(snapshotter: Snapshotter, address: &Path) -> Result<()> {
    use std::os::unix::fs::FileTypeExt;
    if let Ok(md) = std::fs::symlink_metadata(address) {
        if !md.file_type().is_socket() {
            return Err(Error::Internal(format!("{}: exists and is not a socket", address.display())));
        }
        if std::os::unix::net::UnixStream::connect(address).is_ok() {
            return Err(Error::Internal(format!("{}: another server is listening there", address.display())));
        }
        std::fs::remove_file(address).map_err(|e| Error::io("remove stale socket", address, e))?;
    }
    let listener = UnixListener::bind(address).map_err(|e| Error::io("bind", address, e))?;
    let mut term = signal(SignalKind::terminate()).map_err(|e| Error::io("signal handler", address, e))?;
    let mut int = signal(SignalKind::interrupt()).map_err(|e| Error::io("signal handler", address, e))?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let service = containerd_snapshots::server(Arc::new(Service(Arc::new(snapshotter))));
    let server = tokio::spawn(Server::builder().add_service(service).serve_with_incoming_shutdown(
        UnixListenerStream::new(listener),
        async {
            let _ = stop_rx.await;
        },
    ));
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    let _ = stop_tx.send(());
    // containerd keeps its connection open; past the grace period the server is dropped with it.
    let _ = tokio::time::timeout(GRACE, server).await;
    let _ = std::fs::remove_file(address);
    Ok(())
}
