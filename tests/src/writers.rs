//! Concurrent writers that keep a [`KeyHistory`] of every write, for crash and shutdown tests.
//!
//! Each writer owns its keys, so no two writers ever race on a key: an ABORTED can only mean
//! the store forgot or invented a version.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio::task::JoinHandle;

use crate::{ledger::KeyHistory, status::is_semantic_error, store::StoreClient, store_client::put};

/// Upper bound on the writes of one writer in one run, so a server that never fails nor stops
/// cannot keep a test looping forever.
const MAX_WRITES_PER_RUN: u64 = 1_000_000;

/// Padding that makes values look like small records rather than a few bytes.
const VALUE_PADDING: usize = 64;

/// Switches shared by a test and its writers.
#[derive(Clone, Debug, Default)]
pub struct LoadControl {
    /// Set by the test to end the load.
    stop: Arc<AtomicBool>,
    /// Set by the test just before it kills or stops the server: from then on, transport
    /// errors are expected rather than bugs.
    disrupted: Arc<AtomicBool>,
    /// How many writes the server has acknowledged so far, across writers.
    acknowledged: Arc<AtomicU64>,
}

impl LoadControl {
    /// A fresh control: running, undisturbed, nothing acknowledged.
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks every writer to finish its current write and return.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }

    /// Declares that the server is about to go away on purpose.
    pub fn mark_disrupted(&self) {
        self.disrupted.store(true, Ordering::SeqCst);
    }

    /// Writes acknowledged so far.
    pub fn acknowledged(&self) -> u64 {
        self.acknowledged.load(Ordering::SeqCst)
    }

    /// Waits until at least `count` writes were acknowledged (polling; bounded by `limit`).
    /// `false` if the limit passed first.
    pub async fn wait_for_acknowledged(&self, count: u64, limit: Duration) -> bool {
        let poll = Duration::from_millis(5);
        let polls = (limit.as_millis() / poll.as_millis()).max(1);
        for _ in 0..polls {
            if self.acknowledged() >= count {
                return true;
            }
            tokio::time::sleep(poll).await;
        }
        self.acknowledged() >= count
    }
}

/// What one writer did.
#[derive(Debug)]
pub struct WriterReport {
    /// Its keys, with their updated histories.
    pub keys: Vec<KeyHistory>,
    /// Writes the server acknowledged.
    pub acknowledged: u64,
    /// Answers that break the contract (wrong version, semantic error, error while the server
    /// was not being disturbed); empty when all is well.
    pub unexpected: Vec<String>,
}

/// Writes the keys round-robin (one write in flight per key) until stopped, until the server
/// fails while disrupted, or until something unexpected happens.
pub async fn write_until_stopped(
    mut client: StoreClient,
    namespace: String,
    mut keys: Vec<KeyHistory>,
    control: LoadControl,
    tag: String,
) -> WriterReport {
    let mut acknowledged = 0;
    let mut unexpected = Vec::new();
    let mut writes = 0;
    'load: while writes < MAX_WRITES_PER_RUN && !control.stop.load(Ordering::SeqCst) {
        for history in &mut keys {
            writes += 1;
            let expected = history.expected_version();
            let value = record_value(history.key(), expected + 1, &tag);
            history.record_attempt(value.clone());
            let outcome = put(&mut client, &namespace, history.key(), value, expected).await;
            match outcome {
                Ok(version) => match history.acknowledge(version) {
                    Ok(()) => {
                        acknowledged += 1;
                        control.acknowledged.fetch_add(1, Ordering::SeqCst);
                    }
                    Err(violation) => {
                        unexpected.push(violation);
                        break 'load;
                    }
                },
                Err(status) => {
                    if is_semantic_error(status.code()) || !control.disrupted.load(Ordering::SeqCst)
                    {
                        unexpected.push(format!(
                            "{}: Put expecting {expected}: {status:?}",
                            history.key()
                        ));
                    }
                    // The server is gone or going: this write's fate is for reconcile to find.
                    break 'load;
                }
            }
        }
    }
    WriterReport {
        keys,
        acknowledged,
        unexpected,
    }
}

/// Starts one writer task per group of keys, all sharing `client`'s connection.
pub fn spawn_writers(
    client: &StoreClient,
    namespace: &str,
    groups: Vec<Vec<KeyHistory>>,
    control: &LoadControl,
    run: &str,
) -> Vec<JoinHandle<WriterReport>> {
    groups
        .into_iter()
        .enumerate()
        .map(|(index, keys)| {
            tokio::spawn(write_until_stopped(
                client.clone(),
                namespace.to_owned(),
                keys,
                control.clone(),
                format!("{run}/w{index}"),
            ))
        })
        .collect()
}

/// What a set of writers did, together.
#[derive(Debug)]
pub struct LoadReport {
    /// Every writer's keys, in the order the groups were given.
    pub groups: Vec<Vec<KeyHistory>>,
    /// Writes the server acknowledged, across writers.
    pub acknowledged: u64,
    /// Every contract breach any writer saw.
    pub unexpected: Vec<String>,
}

/// Waits for every writer and gathers their reports.
pub async fn join_writers(writers: Vec<JoinHandle<WriterReport>>) -> LoadReport {
    let mut report = LoadReport {
        groups: Vec::with_capacity(writers.len()),
        acknowledged: 0,
        unexpected: Vec::new(),
    };
    for writer in writers {
        let writer = writer.await.expect("writer task panicked");
        report.groups.push(writer.keys);
        report.acknowledged += writer.acknowledged;
        report.unexpected.extend(writer.unexpected);
    }
    report
}

/// `writers` groups of `keys_per_writer` fresh keys named `w{writer}/k{key}`.
pub fn key_groups(writers: usize, keys_per_writer: usize) -> Vec<Vec<KeyHistory>> {
    (0..writers)
        .map(|w| {
            (0..keys_per_writer)
                .map(|k| KeyHistory::new(format!("w{w}/k{k}")))
                .collect()
        })
        .collect()
}

/// A value that says who wrote it, so a foreign or misplaced value is recognisable.
fn record_value(key: &str, version: u64, tag: &str) -> Vec<u8> {
    let mut value = format!("{key}@{version}#{tag}|").into_bytes();
    value.resize(value.len() + VALUE_PADDING, b'.');
    value
}
