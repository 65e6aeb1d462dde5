//! A blocking gRPC client of the snapshots API over the snapshotter's unix socket (what containerd's proxy does).
#![allow(clippy::result_large_err)]

use std::path::{Path, PathBuf};

use containerd_snapshots::api::snapshots::v1::snapshots_client::SnapshotsClient;
use containerd_snapshots::api::snapshots::v1::*;
use containerd_snapshots::api::types::Mount;
use containerd_snapshots::tonic::transport::{Channel, Endpoint, Uri};
use containerd_snapshots::tonic::{Request, Status};

/// A client with its own single-threaded runtime.
pub struct Client {
    rt: tokio::runtime::Runtime,
    inner: SnapshotsClient<Channel>,
}

fn labels(l: &[(&str, &str)]) -> std::collections::HashMap<String, String> {
    l.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

impl Client {
    /// Connect to the socket at `path`.
    pub fn connect(path: &Path) -> Self {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let path: PathBuf = path.to_path_buf();
        let channel =
            rt.block_on(Endpoint::try_from("http://[::]:50051").unwrap().connect_with_connector(tower::service_fn(
                move |_: Uri| tokio::net::UnixStream::connect(path.clone()),
            )))
            .expect("connect to the snapshotter");
        Self { rt, inner: SnapshotsClient::new(channel) }
    }

    pub fn prepare(&mut self, key: &str, parent: &str, l: &[(&str, &str)]) -> Result<Vec<Mount>, Status> {
        let req = PrepareSnapshotRequest {
            snapshotter: String::new(),
            key: key.into(),
            parent: parent.into(),
            labels: labels(l),
        };
        self.rt.block_on(self.inner.prepare(Request::new(req))).map(|r| r.into_inner().mounts)
    }

    pub fn view(&mut self, key: &str, parent: &str, l: &[(&str, &str)]) -> Result<Vec<Mount>, Status> {
        let req = ViewSnapshotRequest {
            snapshotter: String::new(),
            key: key.into(),
            parent: parent.into(),
            labels: labels(l),
        };
        self.rt.block_on(self.inner.view(Request::new(req))).map(|r| r.into_inner().mounts)
    }

    pub fn mounts(&mut self, key: &str) -> Result<Vec<Mount>, Status> {
        let req = MountsRequest { snapshotter: String::new(), key: key.into() };
        self.rt.block_on(self.inner.mounts(Request::new(req))).map(|r| r.into_inner().mounts)
    }

    pub fn commit(&mut self, name: &str, key: &str) -> Result<(), Status> {
        let req = CommitSnapshotRequest {
            snapshotter: String::new(),
            name: name.into(),
            key: key.into(),
            labels: labels(&[]),
        };
        self.rt.block_on(self.inner.commit(Request::new(req))).map(|_| ())
    }

    pub fn remove(&mut self, key: &str) -> Result<(), Status> {
        let req = RemoveSnapshotRequest { snapshotter: String::new(), key: key.into() };
        self.rt.block_on(self.inner.remove(Request::new(req))).map(|_| ())
    }

    pub fn stat(&mut self, key: &str) -> Result<Info, Status> {
        let req = StatSnapshotRequest { snapshotter: String::new(), key: key.into() };
        self.rt.block_on(self.inner.stat(Request::new(req))).map(|r| r.into_inner().info.expect("info"))
    }

    pub fn update(&mut self, info: Info, paths: &[&str]) -> Result<Info, Status> {
        let mask = (!paths.is_empty())
            .then(|| prost_types::FieldMask { paths: paths.iter().map(|p| p.to_string()).collect() });
        let req = UpdateSnapshotRequest { snapshotter: String::new(), info: Some(info), update_mask: mask };
        self.rt.block_on(self.inner.update(Request::new(req))).map(|r| r.into_inner().info.expect("info"))
    }

    pub fn usage(&mut self, key: &str) -> Result<(i64, i64), Status> {
        let req = UsageRequest { snapshotter: String::new(), key: key.into() };
        self.rt.block_on(self.inner.usage(Request::new(req))).map(|r| (r.get_ref().size, r.get_ref().inodes))
    }

    /// Every snapshot matching `filters`, sorted by name.
    pub fn list(&mut self, filters: &[&str]) -> Result<Vec<Info>, Status> {
        let req = ListSnapshotsRequest {
            snapshotter: String::new(),
            filters: filters.iter().map(|f| f.to_string()).collect(),
        };
        let inner = &mut self.inner;
        let mut out = self.rt.block_on(async {
            let mut stream = inner.list(Request::new(req)).await?.into_inner();
            let mut out = Vec::new();
            while let Some(msg) = stream.message().await? {
                out.extend(msg.info);
            }
            Ok::<_, Status>(out)
        })?;
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }
}
