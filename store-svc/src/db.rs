//! The sled database: namespaces as trees, records as `version || value`.
//!
//! The trees are those of the configured namespaces, opened once at start-up: a request can
//! name only those, so nothing a caller sends creates a tree (sled never drops one).
//!
//! Reads may run on any thread. Writes ([`Db::apply`]) and [`Db::flush`] are called only by the
//! single writer thread (see `writer.rs`): that makes check-version-then-write atomic per key
//! without locks, and keeps to one flusher, which sled 0.34 needs (concurrent flushes deadlock).

use std::{
    collections::HashMap,
    ops::Bound,
    path::Path,
    sync::{Mutex, PoisonError},
};

use sled::transaction::{ConflictableTransactionError, TransactionError, Transactional as _};

use crate::{durable::DirSync, error::Error, namespaces::Namespaces};

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
        let (version, value) = Self::split(bytes)?;
        Ok(Self {
            version,
            value: value.to_vec(),
        })
    }

    /// The version and the value of stored `bytes`, borrowed: checking a version copies no
    /// value.
    fn split(bytes: &[u8]) -> Result<(u64, &[u8]), Error> {
        let (version, value) = bytes
            .split_first_chunk::<8>()
            .ok_or_else(|| Error::Storage(sled::Error::Corruption { at: None, bt: () }))?;
        Ok((u64::from_be_bytes(*version), value))
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

/// Commits checked and waiting to be written together ([`Db::stage`], [`Db::apply_group`]).
#[derive(Default)]
pub struct Group {
    /// The trees they change.
    trees: Vec<sled::Tree>,
    /// (index in `trees`, key, new record or `None` to delete), in staging order.
    changes: Vec<(usize, sled::IVec, Option<sled::IVec>)>,
    /// Namespace → key → the version each staged key will be at, so that later commits of
    /// the group check against it (nested so that lookups borrow, never allocate).
    staged: HashMap<String, HashMap<String, u64>>,
}

impl Group {
    /// True when nothing is staged.
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }
}

/// The database and its open namespaces.
pub struct Db {
    /// sled itself; its background flusher is off so that the writer is the only flusher.
    db: sled::Db,
    /// The namespaces served, for checking requests and for saying which are served.
    namespaces: Namespaces,
    /// The tree of every namespace served, opened at start-up and never added to, so a lookup
    /// needs no lock and no request pays for (or causes) an `open_tree`.
    trees: HashMap<String, sled::Tree>,
    /// fsyncs what sled wrote; a mutex only to be `Sync`: the writer thread is its one user.
    sync: Mutex<DirSync>,
    /// The versions of keys written recently, so that checking a commit rarely reads sled (a
    /// sled get was a sixth of store-svc's CPU per commit). The writer is the only writer, so
    /// it is always exact; it is filled only after a group reached sled, and dropped whole
    /// when it grows past [`MAX_CACHED_VERSIONS`] or a group fails.
    versions: Mutex<VersionCache>,
}

/// Most keys whose versions [`Db`] keeps in memory (a few MiB).
const MAX_CACHED_VERSIONS: usize = 100_000;

/// Namespace → key → version; nested so that lookups borrow, never allocate.
#[derive(Default)]
struct VersionCache {
    /// The versions.
    keys: HashMap<String, HashMap<String, u64>>,
    /// How many keys `keys` holds.
    len: usize,
}

impl VersionCache {
    fn get(&self, namespace: &str, key: &str) -> Option<u64> {
        self.keys.get(namespace)?.get(key).copied()
    }

    /// Takes in what a group wrote.
    fn merge(&mut self, staged: HashMap<String, HashMap<String, u64>>) {
        let added: usize = staged.values().map(HashMap::len).sum();
        if self.len + added > MAX_CACHED_VERSIONS {
            *self = Self::default();
        }
        for (namespace, keys) in staged {
            let cached = self.keys.entry(namespace).or_default();
            for (key, version) in keys {
                if cached.insert(key, version).is_none() {
                    self.len += 1;
                }
            }
        }
    }
}

impl Db {
    /// Opens (or creates) the database in `dir` and the trees of `namespaces` (creating those
    /// that are new). Trees on disk of namespaces no longer configured are left as they are,
    /// unserved, and named in a warning: their data stays until an operator lists them again.
    pub fn open(dir: &Path, namespaces: Namespaces) -> Result<Self, Error> {
        let db = sled::Config::new().path(dir).flush_every_ms(None).open()?;
        let mut trees = HashMap::new();
        for namespace in namespaces.iter() {
            let tree = db.open_tree(format!("{TREE_PREFIX}{namespace}"))?;
            trees.insert(namespace.to_owned(), tree);
        }
        namespaces.warn_unserved(
            db.tree_names()
                .iter()
                .filter_map(|name| name.strip_prefix(TREE_PREFIX.as_bytes()))
                .map(|namespace| String::from_utf8_lossy(namespace).into_owned()),
            "the data directory",
        );
        let sync = DirSync::open(dir).map_err(sled::Error::Io)?;
        Ok(Self {
            db,
            namespaces,
            trees,
            sync: Mutex::new(sync),
            versions: Mutex::default(),
        })
    }

    /// The namespaces served.
    pub fn namespaces(&self) -> &Namespaces {
        &self.namespaces
    }

    /// The tree of `namespace`; INVALID_ARGUMENT naming `namespace` when it is not served (the
    /// handlers check first, so this is the last line, not the first).
    fn tree(&self, namespace: &str) -> Result<&sled::Tree, Error> {
        match self.trees.get(namespace) {
            Some(tree) => Ok(tree),
            None => Err(self
                .namespaces
                .check(namespace)
                .err()
                .unwrap_or_else(|| Error::invalid("namespace", "is not served"))),
        }
    }

    /// The current record of a key, if any.
    pub fn get(&self, namespace: &str, key: &str) -> Result<Option<Record>, Error> {
        self.tree(namespace)?
            .get(key)?
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
        let tree = self.tree(namespace)?;
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
    /// version for a check), as a commit of one.
    pub fn apply(&self, write: &Write) -> Result<u64, Error> {
        Ok(self.commit(std::slice::from_ref(write))?[0])
    }

    /// Applies `writes` all or nothing and returns each one's version (as [`Db::apply`]): a
    /// group of one commit.
    pub fn commit(&self, writes: &[Write]) -> Result<Vec<u64>, Error> {
        let mut group = Group::default();
        let versions = self.stage(&mut group, writes)?;
        self.apply_group(group)?;
        Ok(versions)
    }

    /// Checks `writes` against the store as `group` leaves it (the stored versions, changed
    /// by the commits staged before) and, if every version matches, stages them into `group`
    /// and returns each one's version; otherwise stages nothing. Nothing reaches sled before
    /// [`Db::apply_group`]. Only the writer thread calls this, so the stored versions cannot
    /// change in between.
    pub fn stage(&self, group: &mut Group, writes: &[Write]) -> Result<Vec<u64>, Error> {
        let mut versions = Vec::with_capacity(writes.len());
        for (index, write) in writes.iter().enumerate() {
            self.tree(&write.namespace)?;
            let staged = group
                .staged
                .get(write.namespace.as_str())
                .and_then(|keys| keys.get(write.key.as_str()));
            let current = match staged {
                Some(version) => *version,
                None => self.stored_version(write)?,
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
            versions.push(match write.change {
                Change::Put(_) => current + 1,
                Change::Delete => 0,
                Change::Check => current,
            });
        }
        // Every namespace is served and every version matched: stage them all.
        for (write, &version) in writes.iter().zip(&versions) {
            let value = match &write.change {
                Change::Check => continue,
                Change::Put(value) => Some(sled::IVec::from(Record::encode(version, value))),
                Change::Delete => None,
            };
            let tree = self.tree(&write.namespace)?;
            let slot = match group.trees.iter().position(|t| t.name() == tree.name()) {
                Some(slot) => slot,
                None => {
                    group.trees.push(tree.clone());
                    group.trees.len() - 1
                }
            };
            group
                .changes
                .push((slot, sled::IVec::from(write.key.as_bytes()), value));
            group
                .staged
                .entry(write.namespace.clone())
                .or_default()
                .insert(write.key.clone(), version);
        }
        Ok(versions)
    }

    /// Writes everything `group` staged to sled as one unit: a batch when it touches one tree,
    /// a transaction when several. sled seals either in its log as a whole, so no crash or
    /// power loss ever shows part of it, and one unit per group keeps sled's per-batch cost
    /// (it rolls its log buffer for each) to one per flush rather than one per commit.
    pub fn apply_group(&self, group: Group) -> Result<(), Error> {
        let Group {
            trees,
            changes,
            staged,
        } = group;
        let written = self.write_group(trees, changes);
        let mut versions = self.versions.lock().unwrap_or_else(PoisonError::into_inner);
        match &written {
            Ok(()) => versions.merge(staged),
            // What sled holds now is unknown: read it again.
            Err(_) => *versions = VersionCache::default(),
        }
        written
    }

    fn write_group(
        &self,
        trees: Vec<sled::Tree>,
        changes: Vec<(usize, sled::IVec, Option<sled::IVec>)>,
    ) -> Result<(), Error> {
        match trees.as_slice() {
            [] => Ok(()),
            [tree] => {
                let mut batch = sled::Batch::default();
                for (_, key, value) in changes {
                    match value {
                        Some(value) => batch.insert(key, value),
                        None => batch.remove(key),
                    }
                }
                Ok(tree.apply_batch(batch)?)
            }
            trees => trees
                .transaction(|views| {
                    for (slot, key, value) in &changes {
                        match value {
                            Some(value) => views[*slot].insert(key.clone(), value.clone())?,
                            None => views[*slot].remove(key.clone())?,
                        };
                    }
                    Ok::<_, ConflictableTransactionError<()>>(())
                })
                .map_err(|error| match error {
                    TransactionError::Storage(error) => Error::Storage(error),
                    TransactionError::Abort(()) => {
                        Error::Storage(sled::Error::ReportableBug("commit aborted".into()))
                    }
                }),
        }
    }

    /// The version `write`'s key is at in sled (0: absent).
    fn stored_version(&self, write: &Write) -> Result<u64, Error> {
        let cached = self
            .versions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&write.namespace, &write.key);
        if let Some(version) = cached {
            return Ok(version);
        }
        Ok(match self.tree(&write.namespace)?.get(&write.key)? {
            Some(bytes) => Record::split(&bytes)?.0,
            None => 0,
        })
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

    /// The namespaces the tests' databases serve.
    const SERVED: &str = "ns,events,ev,other";

    fn open_with(dir: &Path, namespaces: &str) -> Db {
        Db::open(dir, Namespaces::parse(namespaces).unwrap()).unwrap()
    }

    /// Opens `dir` again after a `Db` on it was dropped. sled's flusher thread lets go of the
    /// directory's file lock a moment after the drop, so on a busy machine the first tries
    /// can find it still locked: retried for up to 5 s, then the error is the failure.
    fn reopen(dir: &Path, namespaces: &str) -> Db {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            match Db::open(dir, Namespaces::parse(namespaces).unwrap()) {
                Ok(db) => return db,
                Err(_) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(error) => panic!("reopening {}: {error}", dir.display()),
            }
        }
    }

    fn open() -> (tempfile::TempDir, Db) {
        let dir = tempfile::tempdir().unwrap();
        let db = open_with(dir.path(), SERVED);
        (dir, db)
    }

    /// The namespaces that have a tree in sled.
    fn trees_on_disk(db: &Db) -> Vec<String> {
        let mut names: Vec<String> = db
            .db
            .tree_names()
            .iter()
            .filter_map(|name| name.strip_prefix(TREE_PREFIX.as_bytes()))
            .map(|name| String::from_utf8_lossy(name).into_owned())
            .collect();
        names.sort();
        names
    }

    fn refused_naming_namespace<T: std::fmt::Debug>(result: Result<T, Error>) {
        match result {
            Err(Error::InvalidArgument { field, description }) => {
                assert_eq!(field, "namespace");
                assert!(description.contains("not served"), "{description}");
            }
            other => panic!("expected INVALID_ARGUMENT naming namespace, got {other:?}"),
        }
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
    fn the_configured_namespaces_have_trees_from_the_start() {
        let (_dir, db) = open();
        assert_eq!(trees_on_disk(&db), ["ev", "events", "ns", "other"]);
        assert_eq!(db.get("events", "k").unwrap(), None);
        assert_eq!(db.scan("ev", "", None, 10).unwrap(), (vec![], false));
    }

    #[test]
    fn no_read_or_write_of_an_unserved_namespace_runs_or_creates_a_tree() {
        let (_dir, db) = open();
        refused_naming_namespace(db.get("nope", "k"));
        refused_naming_namespace(db.scan("nope", "", None, 10));
        refused_naming_namespace(db.apply(&in_ns("nope", put("k", "v", 0))));
        refused_naming_namespace(db.apply(&in_ns("nope", delete("k", 0))));
        refused_naming_namespace(db.apply(&check("nope", "k", 0)));
        assert_eq!(trees_on_disk(&db), ["ev", "events", "ns", "other"]);
    }

    #[test]
    fn trees_of_namespaces_no_longer_configured_keep_their_data_unserved() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = open_with(dir.path(), "ns,other");
            db.apply(&in_ns("other", put("k", "kept", 0))).unwrap();
            db.flush().unwrap();
        }
        {
            let db = reopen(dir.path(), "ns");
            refused_naming_namespace(db.get("other", "k"));
            assert_eq!(trees_on_disk(&db), ["ns", "other"], "the tree is kept");
        }
        let db = reopen(dir.path(), "ns,other");
        assert_eq!(db.get("other", "k").unwrap().unwrap().value, b"kept");
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
    fn commits_staged_in_one_group_see_each_other_and_a_refused_one_stages_nothing() {
        let (_dir, db) = open();
        let mut group = Group::default();
        assert_eq!(db.stage(&mut group, &[put("k", "a", 0)]).unwrap(), [1]);
        assert_eq!(
            db.stage(
                &mut group,
                &[put("k", "b", 1), in_ns("ev", put("e1", "x", 0))]
            )
            .unwrap(),
            [2, 1]
        );
        let stale = [in_ns("ev", put("e2", "y", 0)), put("k", "c", 1)];
        assert!(matches!(
            db.stage(&mut group, &stale),
            Err(Error::VersionConflict {
                index: 1,
                current: 2,
                ..
            })
        ));
        assert_eq!(
            db.get("ns", "k").unwrap(),
            None,
            "nothing reaches sled before apply"
        );
        db.apply_group(group).unwrap();
        assert_eq!(db.get("ns", "k").unwrap().unwrap().value, b"b");
        assert_eq!(db.get("ev", "e1").unwrap().unwrap().version, 1);
        assert_eq!(
            db.get("ev", "e2").unwrap(),
            None,
            "the refused commit staged nothing"
        );
        // The next group checks against what the last one wrote (now from the cache).
        assert!(db.commit(&[put("k", "c", 1)]).is_err());
        assert_eq!(
            db.commit(&[put("k", "c", 2), delete("k2", 0)]).unwrap(),
            [3, 0]
        );
        assert_eq!(db.commit(&[in_ns("ev", delete("e1", 1))]).unwrap(), [0]);
        assert_eq!(
            db.commit(&[in_ns("ev", put("e1", "again", 0))]).unwrap(),
            [1]
        );
        assert_eq!(db.get("ev", "e1").unwrap().unwrap().value, b"again");
    }

    #[test]
    fn the_version_cache_forgets_everything_past_its_bound() {
        let mut cache = VersionCache::default();
        let group = |n: usize| {
            let keys = (0..n).map(|i| (format!("k{i}"), 1)).collect();
            HashMap::from([("ns".to_string(), keys)])
        };
        cache.merge(group(MAX_CACHED_VERSIONS));
        assert_eq!(cache.len, MAX_CACHED_VERSIONS);
        assert_eq!(cache.get("ns", "k1"), Some(1));
        let mut more = group(0);
        more.get_mut("ns").unwrap().insert("new".into(), 4);
        cache.merge(more);
        assert_eq!((cache.len, cache.get("ns", "new")), (1, Some(4)));
        assert_eq!(cache.get("ns", "k1"), None);
    }

    #[test]
    fn a_commit_naming_an_unserved_namespace_applies_nothing() {
        let (_dir, db) = open();
        let mixed = [put("k", "v", 0), in_ns("new", put("k", "v", 0))];
        refused_naming_namespace(db.commit(&mixed));
        assert_eq!(db.get("ns", "k").unwrap(), None);
        let mut group = Group::default();
        refused_naming_namespace(db.stage(&mut group, &mixed));
        assert!(group.is_empty(), "a refused commit stages nothing");
    }

    #[test]
    fn a_check_writes_nothing() {
        let (_dir, db) = open();
        assert_eq!(db.apply(&check("ns", "k", 0)).unwrap(), 0);
        assert_eq!(db.get("ns", "k").unwrap(), None);
        db.apply(&put("k", "a", 0)).unwrap();
        assert_eq!(db.commit(&[check("ns", "k", 1)]).unwrap(), [1]);
        assert_eq!(db.get("ns", "k").unwrap().unwrap().version, 1);
    }

    #[test]
    fn flushed_writes_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = open_with(dir.path(), SERVED);
            db.apply(&put("k", "durable", 0)).unwrap();
            db.commit(&[put("a", "1", 0), in_ns("other", put("b", "2", 0))])
                .unwrap();
            db.flush().unwrap();
        }
        let db = reopen(dir.path(), SERVED);
        assert_eq!(db.get("ns", "k").unwrap().unwrap().value, b"durable");
        assert_eq!(db.get("other", "b").unwrap().unwrap().value, b"2");
    }
}
