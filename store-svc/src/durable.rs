//! Power-loss durability for what sled wrote: fsync after sled's flush.
//!
//! sled 0.34's flush ends in `sync_file_range`, which pushes dirty pages to the device but
//! neither flushes the drive's cache nor persists file metadata (sizes, new files, renames). A
//! killed process loses nothing with it; a machine that loses power can lose everything since
//! the last real fsync (LazyFS showed 0 of 200 acknowledged writes surviving). So after every
//! flush, [`DirSync::sync`] fdatasyncs the log file, fsyncs any blob file sled created since
//! (sled writes large pages to `blobs/` without syncing them), and fsyncs a directory whose
//! entries changed (new blobs, a renamed snapshot). It runs once per group commit, never once
//! per write, so its cost is shared by every write of the batch.

use std::{
    collections::HashSet,
    ffi::OsString,
    fs::File,
    io,
    path::{Path, PathBuf},
};

/// sled's log, where every write lands first.
const LOG_FILE: &str = "db";
/// Where sled puts pages too large for a log segment.
const BLOB_DIR: &str = "blobs";

/// Syncs one sled data directory; owned by the writer thread, the only flusher.
pub struct DirSync {
    /// The log file, kept open: fsync reaches the file's data through any descriptor.
    log: File,
    /// The data directory's path.
    dir: PathBuf,
    /// Entry names of the data directory at the last sync, to notice creations and renames.
    dir_entries: HashSet<OsString>,
    /// Blob files known to be synced (sled never rewrites a blob, it writes a new one).
    synced_blobs: HashSet<OsString>,
}

impl DirSync {
    /// Opens the log of the sled database in `dir` and syncs everything once, so that files
    /// sled created before this process (or in `open`) are durable too.
    pub fn open(dir: &Path) -> io::Result<Self> {
        let mut sync = Self {
            log: File::open(dir.join(LOG_FILE))?,
            dir: dir.to_path_buf(),
            dir_entries: HashSet::new(),
            synced_blobs: HashSet::new(),
        };
        for name in entries(dir)? {
            let path = dir.join(&name);
            if path.is_file() {
                File::open(&path)?.sync_all()?;
            }
        }
        sync.sync()?;
        File::open(dir)?.sync_all()?;
        Ok(sync)
    }

    /// Makes everything sled has flushed durable. Called after every flush.
    pub fn sync(&mut self) -> io::Result<()> {
        self.log.sync_data()?;
        let blob_dir = self.dir.join(BLOB_DIR);
        let blobs = entries(&blob_dir)?;
        let mut new_blobs = false;
        for name in &blobs {
            if !self.synced_blobs.contains(name) {
                // A blob GC'd between listing and opening was not needed any more.
                match File::open(blob_dir.join(name)) {
                    Ok(file) => file.sync_all()?,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(e),
                }
                new_blobs = true;
            }
        }
        if new_blobs || blobs.len() != self.synced_blobs.len() {
            File::open(&blob_dir)?.sync_all()?;
            self.synced_blobs = blobs;
        }
        let dir_entries = entries(&self.dir)?;
        if dir_entries != self.dir_entries {
            File::open(&self.dir)?.sync_all()?;
            self.dir_entries = dir_entries;
        }
        Ok(())
    }
}

/// The names in `dir`; none when it does not exist (sled creates `blobs/` lazily).
fn entries(dir: &Path) -> io::Result<HashSet<OsString>> {
    match std::fs::read_dir(dir) {
        Ok(read) => read
            .map(|entry| entry.map(|e| e.file_name()))
            .collect::<io::Result<_>>(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(HashSet::new()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_blobs_and_directory_entries_are_noticed_and_synced_once() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(LOG_FILE), b"log").unwrap();
        let mut sync = DirSync::open(dir.path()).unwrap();
        assert!(sync.synced_blobs.is_empty());
        assert!(sync.dir_entries.contains(&OsString::from(LOG_FILE)));

        std::fs::create_dir(dir.path().join(BLOB_DIR)).unwrap();
        std::fs::write(dir.path().join(BLOB_DIR).join("17"), b"blob").unwrap();
        sync.sync().unwrap();
        assert!(sync.synced_blobs.contains(&OsString::from("17")));
        assert!(sync.dir_entries.contains(&OsString::from(BLOB_DIR)));

        std::fs::remove_file(dir.path().join(BLOB_DIR).join("17")).unwrap();
        sync.sync().unwrap();
        assert!(
            sync.synced_blobs.is_empty(),
            "a collected blob is forgotten"
        );
    }
}
