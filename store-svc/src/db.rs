//! The sled database: namespaces as trees, records as `version || value`.
//!
//! Reads may run on any thread. Writes ([`Db::apply`]) and [`Db::flush`] are called only by the
//! single writer thread (see `writer.rs`): that makes check-version-then-write atomic per key
//! without locks, and keeps to one flusher, which sled 0.34 needs (concurrent flushes deadlock).

use std::{
    collections::HashMap,
    ops::Bound,
    path::Path,
    sync::{Mutex, PoisonError, RwLock},
};

use sled::transaction::{ConflictableTransactionError, TransactionError, Transactional as _};

use crate::{durable::DirSync, error::Error};

/// sled tree names get this prefix so that no namespace can alias sled's own default tree.
const TREE_PREFIX: &str = "ns/";

/// Most bytes of keys and values in one scan page: under tonic's default 4 MiB message limit.
pub const MAX_PAGE_BYTES: usize = 3 * 1024 * 1024;

/// One stored key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The stored bytes.
    pub value: Vec<u8>,
    /// 1 for the first write, one more per write.
    pub version: u64,
}

impl Record {
    fn encode(version: u64, value: &[u8]) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(8 + value.len());
        bytes.extend_from_slice(&version.to_be_bytes());
        bytes.extend_from_slice(value);
        bytes
    }

    fn decode(bytes: &[u8]) -> Result<Self, Error> {
        let (version, value) = bytes
            .split_first_chunk::<8>()
            .ok_or_else(|| Error::Storage(sled::Error::Corruption { at: None, bt: () }))?;
        Ok(Self {
            version: u64::from_be_bytes(*version),
            value: value.to_vec(),
        })
    }
}

/// A keyed record, as a scan returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The key.
    pub key: String,
    /// Its value and version.
    pub record: Record,
}

/// A change the writer applies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Store this value.
    Put(Vec<u8>),
    /// Remove the key.
    Delete,
    /// Change nothing; only require the version (a fence inside a commit).
    Check,
}

/// A conditional write: `change` applies only if the key is at `expected_version`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Write {
    /// The namespace; validated.
    pub namespace: String,
    /// The key; validated.
    pub key: String,
    /// What to do.
    pub change: Change,
    /// The version the writer saw; 0 for "absent".
    pub expected_version: u64,
}

/// The database and its open namespaces.
pub struct Db {
    /// sled itself; its background flusher is off so that the writer is the only flusher.
    db: sled::Db,
    /// Open trees by namespace, so a request does not pay for `open_tree`.
    trees: RwLock<HashMap<String, sled::Tree>>,
    /// Cap on namespaces: namespace names come from clients and must not grow without bound.
    max_namespaces: usize,
    /// fsyncs what sled wrote; a mutex only to be `Sync`: the writer thread is its one user.
    sync: Mutex<DirSync>,
}

impl Db {
    /// Opens (or creates) the database in `dir`.
    pub fn open(dir: &Path, max_namespaces: usize) -> Result<Self, Error> {
        let db = sled::Config::new().path(dir).flush_every_ms(None).open()?;
        let mut trees = HashMap::new();
        for name in db.tree_names() {
            if let Some(namespace) = name.strip_prefix(TREE_PREFIX.as_bytes()) {
                let namespace = String::from_utf8_lossy(namespace).into_owned();
                trees.insert(namespace, db.open_tree(&name)?);
            }
        }
        let sync = DirSync::open(dir).map_err(sled::Error::Io)?;
        Ok(Self {
            db,
            trees: RwLock::new(trees),
            max_namespaces,
            sync: Mutex::new(sync),
        })
    }

    fn existing_tree(&self, namespace: &str) -> Option<sled::Tree> {
        let trees = self.trees.read().unwrap_or_else(PoisonError::into_inner);
        trees.get(namespace).cloned()
    }

    /// The tree of `namespace`, created on first write (within the namespace cap).
    fn tree_for_write(&self, namespace: &str) -> Result<sled::Tree, Error> {
        if let Some(tree) = self.existing_tree(namespace) {
            return Ok(tree);
        }
        let mut trees = self.trees.write().unwrap_or_else(PoisonError::into_inner);
        if trees.len() >= self.max_namespaces {
            return Err(Error::TooManyNamespaces {
                limit: self.max_namespaces,
            });
        }
        let tree = self.db.open_tree(format!("{TREE_PREFIX}{namespace}"))?;
        trees.insert(namespace.to_string(), tree.clone());
        Ok(tree)
    }

    /// The current record of a key, if any.
    pub fn get(&self, namespace: &str, key: &str) -> Result<Option<Record>, Error> {
        let Some(tree) = self.existing_tree(namespace) else {
            return Ok(None);
        };
        tree.get(key)?
            .map(|bytes| Record::decode(&bytes))
            .transpose()
    }

    /// Up to `limit` entries whose key starts with `prefix`, after `after` if given, in key
    /// order, and whether more follow. A page also ends once it holds [`MAX_PAGE_BYTES`] of
    /// values (but always has at least one entry), so that it fits a gRPC message.
    pub fn scan(
        &self,
        namespace: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<Entry>, bool), Error> {
        let Some(tree) = self.existing_tree(namespace) else {
            return Ok((Vec::new(), false));
        };
        let start = match after {
            Some(key) => Bound::Excluded(key.as_bytes().to_vec()),
            None => Bound::Included(prefix.as_bytes().to_vec()),
        };
        let mut entries = Vec::with_capacity(limit.min(128));
        let mut page_bytes = 0;
        for item in tree.range((start, Bound::Unbounded)) {
            let (key, bytes) = item?;
            if !key.starts_with(prefix.as_bytes()) {
                break;
            }
            if entries.len() == limit
                || (page_bytes > 0 && page_bytes + bytes.len() > MAX_PAGE_BYTES)
            {
                return Ok((entries, true));
            }
            page_bytes += key.len() + bytes.len();
            entries.push(Entry {
                key: String::from_utf8_lossy(&key).into_owned(),
                record: Record::decode(&bytes)?,
            });
        }
        Ok((entries, false))
    }

    /// Applies one conditional write and returns the new version (0 after a delete, the
    /// version for a check). Only the writer thread calls this, so nothing changes the key
    /// between the check and the write.
    pub fn apply(&self, write: &Write) -> Result<u64, Error> {
        let (tree, version) = self.checked(0, write)?;
        match (&write.change, tree) {
            (Change::Put(value), tree) => {
                // A namespace is created by its first write, never by a refused one.
                let tree = match tree {
                    Some(tree) => tree,
                    None => self.tree_for_write(&write.namespace)?,
                };
                tree.insert(&write.key, Record::encode(version, value))?;
            }
            (Change::Delete, Some(tree)) => {
                tree.remove(&write.key)?;
            }
            _ => {}
        }
        Ok(version)
    }

    /// Applies `writes` all or nothing and returns each one's version (as [`Db::apply`]).
    /// Every version is checked before anything is written; the writes then go to sled as one
    /// batch (one tree) or one transaction (several), which sled seals in its log as a unit,
    /// so a crash or power loss never leaves part of a commit. Only the writer thread calls
    /// this, so the versions read cannot change before the write.
    pub fn commit(&self, writes: &[Write]) -> Result<Vec<u64>, Error> {
        if let [write] = writes {
            return Ok(vec![self.apply(write)?]);
        }
        let mut versions = Vec::with_capacity(writes.len());
        // (tree index, write index, new version) of every write that changes something.
        let mut trees: Vec<sled::Tree> = Vec::new();
        let mut changes = Vec::with_capacity(writes.len());
        let mut checked = Vec::with_capacity(writes.len());
        for (index, write) in writes.iter().enumerate() {
            let (tree, version) = self.checked(index, write)?;
            versions.push(version);
            checked.push(tree);
        }
        // Every version matched: only now may a Put create its namespace.
        for (index, (write, tree)) in writes.iter().zip(checked).enumerate() {
            let version = versions[index];
            let tree = match (&write.change, tree) {
                (Change::Check, _) | (Change::Delete, None) => None,
                (Change::Put(_), None) => Some(self.tree_for_write(&write.namespace)?),
                (_, tree) => tree,
            };
            if let Some(tree) = tree {
                let slot = match trees.iter().position(|t| t.name() == tree.name()) {
                    Some(slot) => slot,
                    None => {
                        trees.push(tree);
                        trees.len() - 1
                    }
                };
                changes.push((slot, index, version));
            }
        }
        let record = |index: usize, version: u64| match &writes[index].change {
            Change::Put(value) => Some(Record::encode(version, value)),
            Change::Delete | Change::Check => None,
        };
        if let [tree] = trees.as_slice() {
            let mut batch = sled::Batch::default();
            for &(_, index, version) in &changes {
                match record(index, version) {
                    Some(bytes) => batch.insert(writes[index].key.as_bytes(), bytes),
                    None => batch.remove(writes[index].key.as_bytes()),
                }
            }
            tree.apply_batch(batch)?;
        } else if !trees.is_empty() {
            trees
                .as_slice()
                .transaction(|views| {
                    for &(slot, index, version) in &changes {
                        let key = writes[index].key.as_bytes();
                        match record(index, version) {
                            Some(bytes) => views[slot].insert(key, bytes)?,
                            None => views[slot].remove(key)?,
                        };
                    }
                    Ok::<_, ConflictableTransactionError<()>>(())
                })
                .map_err(|error| match error {
                    TransactionError::Storage(error) => Error::Storage(error),
                    TransactionError::Abort(()) => {
                        Error::Storage(sled::Error::ReportableBug("commit aborted".into()))
                    }
                })?;
        }
        Ok(versions)
    }

    /// Checks `write` (the `index`th of its commit) against the stored version, and returns
    /// the namespace's tree (`None`: it does not exist yet) and the version the key will have.
    /// Creates nothing: a refused write must leave no namespace behind.
    fn checked(&self, index: usize, write: &Write) -> Result<(Option<sled::Tree>, u64), Error> {
        let tree = self.existing_tree(&write.namespace);
        let current = match &tree {
            Some(tree) => match tree.get(&write.key)? {
                Some(bytes) => Record::decode(&bytes)?.version,
                None => 0,
            },
            None => 0,
        };
        if write.expected_version != current {
            return Err(Error::VersionConflict {
                index,
                namespace: write.namespace.clone(),
                key: write.key.clone(),
                expected: write.expected_version,
                current,
            });
        }
        let version = match write.change {
            Change::Put(_) => current + 1,
            Change::Delete => 0,
            Change::Check => current,
        };
        Ok((tree, version))
    }

    /// Makes every applied write durable: sled's flush writes its log, then the data
    /// directory's files are fsynced (sled's own flush stops at `sync_file_range`, which
    /// survives a process crash but not a power loss). Only the writer thread calls this.
    pub fn flush(&self) -> Result<(), Error> {
        self.db.flush()?;
        self.sync
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .sync()
            .map_err(sled::Error::Io)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(key: &str, value: &str, expected_version: u64) -> Write {
        Write {
            namespace: "ns".into(),
            key: key.into(),
            change: Change::Put(value.as_bytes().to_vec()),
            expected_version,
        }
    }

    fn delete(key: &str, expected_version: u64) -> Write {
        Write {
            change: Change::Delete,
            ..put(key, "", expected_version)
        }
    }

    fn open() -> (tempfile::TempDir, Db) {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path(), 4).unwrap();
        (dir, db)
    }

    #[test]
    fn versions_start_at_one_and_grow_by_one() {
        let (_dir, db) = open();
        assert_eq!(db.apply(&put("k", "a", 0)).unwrap(), 1);
        assert_eq!(db.apply(&put("k", "b", 1)).unwrap(), 2);
        let record = db.get("ns", "k").unwrap().unwrap();
        assert_eq!(
            (record.value.as_slice(), record.version),
            (b"b".as_slice(), 2)
        );
    }

    #[test]
    fn stale_or_premature_versions_conflict_and_change_nothing() {
        let (_dir, db) = open();
        db.apply(&put("k", "a", 0)).unwrap();
        for expected in [0, 2, 9] {
            match db.apply(&put("k", "x", expected)) {
                Err(Error::VersionConflict { current: 1, .. }) => {}
                other => panic!("expected conflict at 1, got {other:?}"),
            }
        }
        assert_eq!(db.get("ns", "k").unwrap().unwrap().value, b"a");
    }

    #[test]
    fn delete_follows_the_version_rule() {
        let (_dir, db) = open();
        assert_eq!(db.apply(&delete("missing", 0)).unwrap(), 0);
        assert!(matches!(
            db.apply(&delete("missing", 3)),
            Err(Error::VersionConflict { current: 0, .. })
        ));
        db.apply(&put("k", "a", 0)).unwrap();
        assert!(db.apply(&delete("k", 0)).is_err());
        db.apply(&delete("k", 1)).unwrap();
        assert_eq!(db.get("ns", "k").unwrap(), None);
        assert_eq!(db.apply(&put("k", "again", 0)).unwrap(), 1);
    }

    #[test]
    fn reads_and_deletes_do_not_create_namespaces() {
        let (_dir, db) = open();
        assert_eq!(db.get("nope", "k").unwrap(), None);
        assert_eq!(db.scan("nope", "", None, 10).unwrap(), (vec![], false));
        db.apply(&Write {
            namespace: "nope".into(),
            ..delete("k", 0)
        })
        .unwrap();
        assert!(db.trees.read().unwrap().is_empty());
    }

    #[test]
    fn namespace_count_is_capped() {
        let (_dir, db) = open();
        for ns in ["a", "b", "c", "d"] {
            db.apply(&Write {
                namespace: ns.into(),
                ..put("k", "v", 0)
            })
            .unwrap();
        }
        assert!(matches!(
            db.apply(&Write {
                namespace: "e".into(),
                ..put("k", "v", 0)
            }),
            Err(Error::TooManyNamespaces { limit: 4 })
        ));
    }

    #[test]
    fn scan_pages_through_a_prefix_in_key_order() {
        let (_dir, db) = open();
        for key in ["b:2", "a:1", "b:1", "b:3", "c:1"] {
            db.apply(&put(key, key, 0)).unwrap();
        }
        let keys = |entries: Vec<Entry>| entries.into_iter().map(|e| e.key).collect::<Vec<_>>();
        let (page, more) = db.scan("ns", "b:", None, 2).unwrap();
        assert!(more);
        assert_eq!(keys(page), ["b:1", "b:2"]);
        let (page, more) = db.scan("ns", "b:", Some("b:2"), 2).unwrap();
        assert!(!more);
        assert_eq!(keys(page), ["b:3"]);
        let (page, _) = db.scan("ns", "", None, 10).unwrap();
        assert_eq!(keys(page), ["a:1", "b:1", "b:2", "b:3", "c:1"]);
    }

    #[test]
    fn scan_pages_stop_at_the_byte_cap_but_never_empty() {
        let (_dir, db) = open();
        let big = "x".repeat(MAX_PAGE_BYTES / 2);
        for key in ["a", "b", "c"] {
            db.apply(&put(key, &big, 0)).unwrap();
        }
        let (page, more) = db.scan("ns", "", None, 100).unwrap();
        assert_eq!((page.len(), more), (1, true));
        let (page, more) = db.scan("ns", "", Some("b"), 100).unwrap();
        assert_eq!((page.len(), more), (1, false));
    }

    fn check(namespace: &str, key: &str, version: u64) -> Write {
        Write {
            namespace: namespace.into(),
            key: key.into(),
            change: Change::Check,
            expected_version: version,
        }
    }

    fn in_ns(namespace: &str, write: Write) -> Write {
        Write {
            namespace: namespace.into(),
            ..write
        }
    }

    #[test]
    fn a_commit_applies_every_write_across_namespaces_and_answers_each_version() {
        let (_dir, db) = open();
        db.apply(&put("old", "x", 0)).unwrap();
        db.apply(&put("k", "a", 0)).unwrap();
        let versions = db
            .commit(&[
                put("k", "b", 1),
                in_ns("events", put("k/1", "e", 0)),
                delete("old", 1),
                check("ns", "absent", 0),
            ])
            .unwrap();
        assert_eq!(versions, [2, 1, 0, 0]);
        assert_eq!(db.get("ns", "k").unwrap().unwrap().value, b"b");
        assert_eq!(db.get("events", "k/1").unwrap().unwrap().version, 1);
        assert_eq!(db.get("ns", "old").unwrap(), None);
    }

    #[test]
    fn a_commit_with_one_stale_version_applies_nothing_and_names_the_write() {
        let (_dir, db) = open();
        db.apply(&put("k", "a", 0)).unwrap();
        db.apply(&put("fence", "f", 0)).unwrap();
        for (stale, at) in [
            (
                vec![
                    put("k", "b", 1),
                    in_ns("events", put("e", "x", 0)),
                    check("ns", "fence", 2),
                ],
                2,
            ),
            (vec![in_ns("events", put("e", "x", 0)), put("k", "b", 0)], 1),
            (vec![put("new", "n", 0), delete("k", 7)], 1),
        ] {
            match db.commit(&stale) {
                Err(Error::VersionConflict { index, .. }) => assert_eq!(index, at),
                other => panic!("expected a conflict at {at}, got {other:?}"),
            }
        }
        assert_eq!(db.get("ns", "k").unwrap().unwrap().value, b"a");
        assert_eq!(db.get("events", "e").unwrap(), None);
        assert_eq!(db.get("ns", "new").unwrap(), None);
    }

    #[test]
    fn a_refused_write_creates_no_namespace() {
        let (_dir, db) = open();
        assert!(db.apply(&in_ns("new", put("k", "v", 1))).is_err());
        let stale = [in_ns("new", put("k", "v", 0)), check("ns", "absent", 1)];
        assert!(db.commit(&stale).is_err());
        assert!(db.trees.read().unwrap().is_empty());
    }

    #[test]
    fn a_check_writes_nothing_and_creates_no_namespace() {
        let (_dir, db) = open();
        assert_eq!(db.apply(&check("nope", "k", 0)).unwrap(), 0);
        assert!(db.trees.read().unwrap().is_empty());
        db.apply(&put("k", "a", 0)).unwrap();
        assert_eq!(db.commit(&[check("ns", "k", 1)]).unwrap(), [1]);
        assert_eq!(db.get("ns", "k").unwrap().unwrap().version, 1);
    }

    #[test]
    fn flushed_writes_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = Db::open(dir.path(), 4).unwrap();
            db.apply(&put("k", "durable", 0)).unwrap();
            db.commit(&[put("a", "1", 0), in_ns("other", put("b", "2", 0))])
                .unwrap();
            db.flush().unwrap();
        }
        let db = Db::open(dir.path(), 4).unwrap();
        assert_eq!(db.get("ns", "k").unwrap().unwrap().value, b"durable");
        assert_eq!(db.get("other", "b").unwrap().unwrap().value, b"2");
    }
}
