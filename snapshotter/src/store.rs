//! [`Store`]: the snapshotter's metadata in one redb database (`DIR/metadata.redb`).
//!
//! Every change is one ACID write transaction, made durable before it returns, so a crash leaves either the state
//! before or the state after it. The snapshot directories on disk are made *before* the transaction that names them
//! and removed *after* the transaction that forgets them: a crash in between leaves a directory no record names,
//! which [`crate::reconcile`] removes on the next start.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::SystemTime;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Snapshot key → [`Record`] (JSON).
const SNAPSHOTS: TableDefinition<&str, &[u8]> = TableDefinition::new("snapshots");
/// Counters (`next_id`).
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// The kind of a snapshot, as containerd names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    /// A read-only view of a parent (`View`).
    View,
    /// A writable snapshot (`Prepare`).
    Active,
    /// An immutable snapshot usable as a parent (`Commit`).
    Committed,
}

impl Kind {
    /// The name containerd's filters use (`kind==active`).
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::View => "view",
            Kind::Active => "active",
            Kind::Committed => "committed",
        }
    }
}

/// The uid and gid maps of a user-namespaced snapshot, in containerd's `c:h:s[,c:h:s]` text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Idmapping {
    /// `containerd.io/snapshot/uidmapping`.
    pub uid: String,
    /// `containerd.io/snapshot/gidmapping`.
    pub gid: String,
}

/// What the store keeps per snapshot key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The directory `DIR/snapshots/<id>`; kept when an active snapshot is committed under a new name.
    pub id: u64,
    /// View, active or committed.
    pub kind: Kind,
    /// The parent's key (empty: none).
    pub parent: String,
    /// The labels containerd gave (Prepare/View/Commit/Update).
    pub labels: BTreeMap<String, String>,
    /// When the snapshot was made.
    pub created: SystemTime,
    /// When its record last changed.
    pub updated: SystemTime,
    /// Set for a user-namespaced snapshot: its root is composed by this snapshotter and handed out as a bind.
    pub idmap: Option<Idmapping>,
    /// Whether rootfs fixups are applied into the upper of a composed root.
    pub fixups: bool,
    /// The record of the composed root's mount (opaque bytes from the library), while it is mounted.
    pub root: Option<Vec<u8>>,
    /// `(bytes, inodes)` measured when the snapshot was committed.
    pub usage: Option<(i64, i64)>,
}

/// The metadata database.
#[derive(Debug)]
pub struct Store {
    db: Database,
}

fn decode(key: &str, bytes: &[u8]) -> Result<Record> {
    serde_json::from_slice(bytes).map_err(|e| Error::internal(format!("record of {key:?} unreadable: {e}")))
}

fn encode(record: &Record) -> Vec<u8> {
    serde_json::to_vec(record).expect("a record always serializes")
}

impl Store {
    /// Open (or create) the database at `path`.
    ///
    /// # Errors
    /// The file cannot be opened or created, or another process holds it.
    pub fn open(path: &Path) -> Result<Self> {
        let db = Database::create(path).map_err(|e| Error::db(format!("open {}", path.display()), e))?;
        let txn = db.begin_write().map_err(|e| Error::db("begin", e))?;
        txn.open_table(SNAPSHOTS).map_err(|e| Error::db("open table", e))?;
        txn.open_table(META).map_err(|e| Error::db("open table", e))?;
        txn.commit().map_err(|e| Error::db("commit", e))?;
        Ok(Self { db })
    }

    /// The record of `key`, if any.
    ///
    /// # Errors
    /// A database error.
    pub fn get(&self, key: &str) -> Result<Option<Record>> {
        let txn = self.db.begin_read().map_err(|e| Error::db("begin read", e))?;
        let table = txn.open_table(SNAPSHOTS).map_err(|e| Error::db("open table", e))?;
        let got = table.get(key).map_err(|e| Error::db("get", e))?;
        got.map(|v| decode(key, v.value())).transpose()
    }

    /// Every record, by key.
    ///
    /// # Errors
    /// A database error.
    pub fn all(&self) -> Result<Vec<(String, Record)>> {
        let txn = self.db.begin_read().map_err(|e| Error::db("begin read", e))?;
        let table = txn.open_table(SNAPSHOTS).map_err(|e| Error::db("open table", e))?;
        let mut out = Vec::new();
        for item in table.iter().map_err(|e| Error::db("iterate", e))? {
            let (k, v) = item.map_err(|e| Error::db("iterate", e))?;
            out.push((k.value().to_string(), decode(k.value(), v.value())?));
        }
        Ok(out)
    }

    /// Reserve a new snapshot id (ids are never reused).
    ///
    /// # Errors
    /// A database error.
    pub fn next_id(&self) -> Result<u64> {
        let txn = self.db.begin_write().map_err(|e| Error::db("begin", e))?;
        let id = {
            let mut meta = txn.open_table(META).map_err(|e| Error::db("open table", e))?;
            let id = meta.get("next_id").map_err(|e| Error::db("get", e))?.map_or(1, |v| v.value());
            meta.insert("next_id", id + 1).map_err(|e| Error::db("insert", e))?;
            id
        };
        txn.commit().map_err(|e| Error::db("commit", e))?;
        Ok(id)
    }

    /// Run `change` on the snapshot table in one write transaction, committed only if it returns `Ok`.
    fn write<T>(&self, change: impl FnOnce(&mut Table<'_>) -> Result<T>) -> Result<T> {
        let txn = self.db.begin_write().map_err(|e| Error::db("begin", e))?;
        let out = {
            let table = txn.open_table(SNAPSHOTS).map_err(|e| Error::db("open table", e))?;
            change(&mut Table(table))?
        };
        txn.commit().map_err(|e| Error::db("commit", e))?;
        Ok(out)
    }

    /// Insert `record` under `key`, which must be new; its parent, if named, must be committed.
    ///
    /// # Errors
    /// [`Error::AlreadyExists`], [`Error::NotFound`] (parent), [`Error::FailedPrecondition`] (parent not committed).
    pub fn insert(&self, key: &str, record: &Record) -> Result<()> {
        self.write(|t| {
            if t.get(key)?.is_some() {
                return Err(Error::AlreadyExists(format!("snapshot {key:?} already exists")));
            }
            if !record.parent.is_empty() {
                check_parent(t, &record.parent)?;
            }
            t.put(key, record)
        })
    }

    /// Replace the record of an existing `key` with what `change` makes of it; returns the new record.
    ///
    /// # Errors
    /// [`Error::NotFound`], or what `change` returns.
    pub fn update(&self, key: &str, change: impl FnOnce(&mut Record) -> Result<()>) -> Result<Record> {
        self.write(|t| {
            let mut rec = t.get(key)?.ok_or_else(|| Error::not_found(key))?;
            change(&mut rec)?;
            rec.updated = SystemTime::now();
            t.put(key, &rec)?;
            Ok(rec)
        })
    }

    /// Commit the active snapshot `key` as `name` (same directory), with `labels`, in one transaction.
    ///
    /// # Errors
    /// [`Error::NotFound`], [`Error::AlreadyExists`] (`name`), [`Error::FailedPrecondition`] (not active).
    pub fn commit(&self, key: &str, name: &str, labels: BTreeMap<String, String>, usage: (i64, i64)) -> Result<()> {
        self.write(|t| {
            let mut rec = t.get(key)?.ok_or_else(|| Error::not_found(key))?;
            if rec.kind != Kind::Active {
                return Err(Error::FailedPrecondition(format!("snapshot {key:?} is not active")));
            }
            if t.get(name)?.is_some() {
                return Err(Error::AlreadyExists(format!("snapshot {name:?} already exists")));
            }
            let now = SystemTime::now();
            rec.kind = Kind::Committed;
            rec.labels = labels;
            rec.created = now;
            rec.updated = now;
            rec.root = None;
            rec.usage = Some(usage);
            t.0.remove(key).map_err(|e| Error::db("remove", e))?;
            t.put(name, &rec)
        })
    }

    /// Forget `key`, which must have no children; returns its record.
    ///
    /// # Errors
    /// [`Error::NotFound`], [`Error::FailedPrecondition`] (it has children).
    pub fn remove(&self, key: &str) -> Result<Record> {
        self.write(|t| {
            let rec = t.get(key)?.ok_or_else(|| Error::not_found(key))?;
            for item in t.0.iter().map_err(|e| Error::db("iterate", e))? {
                let (k, v) = item.map_err(|e| Error::db("iterate", e))?;
                if decode(k.value(), v.value())?.parent == key {
                    return Err(Error::FailedPrecondition(format!(
                        "cannot remove snapshot {key:?}: {:?} is its child",
                        k.value()
                    )));
                }
            }
            t.0.remove(key).map_err(|e| Error::db("remove", e))?;
            Ok(rec)
        })
    }
}

struct Table<'t>(redb::Table<'t, &'static str, &'static [u8]>);

impl Table<'_> {
    fn get(&self, key: &str) -> Result<Option<Record>> {
        let got = self.0.get(key).map_err(|e| Error::db("get", e))?;
        got.map(|v| decode(key, v.value())).transpose()
    }

    fn put(&mut self, key: &str, record: &Record) -> Result<()> {
        self.0.insert(key, encode(record).as_slice()).map_err(|e| Error::db("insert", e))?;
        Ok(())
    }
}

fn check_parent(t: &Table<'_>, parent: &str) -> Result<()> {
    match t.get(parent)? {
        None => Err(Error::NotFound(format!("parent snapshot {parent:?} not found"))),
        Some(p) if p.kind != Kind::Committed => {
            Err(Error::FailedPrecondition(format!("parent snapshot {parent:?} is not committed")))
        }
        Some(_) => Ok(()),
    }
}
