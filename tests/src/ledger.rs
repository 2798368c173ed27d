//! What a test knows about the keys it wrote, and the durability check that knowledge allows.
//!
//! The contract: OK from Put means the write is on disk. So after any crash, a key must hold
//! the last acknowledged version, or a later one the test itself sent (a write that landed but
//! whose answer was lost with the server). Anything else (older, missing, foreign bytes) is a
//! lost or corrupted acknowledged write.

use proto::store::v1::GetResponse;
use tonic::Status;

use crate::{store::StoreClient, store_client::lookup};

/// The history of one key that a single writer owns.
#[derive(Clone, Debug)]
pub struct KeyHistory {
    /// The key.
    key: String,
    /// Version of the last write known durable (acknowledged, or read back after a restart);
    /// 0 while the key has never existed.
    durable_version: u64,
    /// The bytes of that write.
    durable_value: Vec<u8>,
    /// Writes sent since, not acknowledged, by the version each would create; any may have
    /// landed.
    unacknowledged: Vec<(u64, Vec<u8>)>,
}

impl KeyHistory {
    /// A key that was never written.
    pub fn new(key: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            durable_version: 0,
            durable_value: Vec::new(),
            unacknowledged: Vec::new(),
        }
    }

    /// The key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The version the next write must expect.
    pub fn expected_version(&self) -> u64 {
        self.durable_version
    }

    /// Notes that `value` is about to be sent as the next version; call before sending, so a
    /// write whose answer is lost is still known.
    pub fn record_attempt(&mut self, value: Vec<u8>) {
        self.unacknowledged.push((self.durable_version + 1, value));
    }

    /// Notes the server's OK for the last attempt, which it says created `version`.
    pub fn acknowledge(&mut self, version: u64) -> Result<(), String> {
        let expected = self.durable_version + 1;
        let Some(position) = self.unacknowledged.iter().position(|(v, _)| *v == expected) else {
            return Err(format!(
                "{}: acknowledged with no write in flight",
                self.key
            ));
        };
        if version != expected {
            return Err(format!(
                "{}: Put expecting version {} answered version {version}, not {expected}",
                self.key, self.durable_version
            ));
        }
        let (_, value) = self.unacknowledged.swap_remove(position);
        self.durable_version = version;
        self.durable_value = value;
        self.unacknowledged.clear();
        Ok(())
    }

    /// Checks what the server holds after a restart against what it acknowledged, then adopts
    /// it (it was read from disk, so it is durable now).
    pub fn reconcile(&mut self, observed: Option<GetResponse>) -> Result<(), String> {
        let (version, value) =
            observed.map_or((0, Vec::new()), |found| (found.version, found.value));
        let verdict = if version == self.durable_version {
            if value == self.durable_value {
                Ok(())
            } else {
                Err(format!(
                    "{}: version {version} holds {:?}, but the acknowledged value was {:?}",
                    self.key,
                    lossy(&value),
                    lossy(&self.durable_value)
                ))
            }
        } else if version < self.durable_version {
            Err(format!(
                "{}: acknowledged version {} was lost; the store holds {}",
                self.key,
                self.durable_version,
                if version == 0 {
                    "nothing".to_owned()
                } else {
                    format!("version {version}")
                }
            ))
        } else if self.unacknowledged.contains(&(version, value.clone())) {
            Ok(())
        } else {
            Err(format!(
                "{}: the store holds version {version} = {:?}, which the test never wrote \
                 (last acknowledged: version {})",
                self.key,
                lossy(&value),
                self.durable_version
            ))
        };
        self.durable_version = version;
        self.durable_value = value;
        self.unacknowledged.clear();
        verdict
    }
}

/// Reads every key back and reconciles it; the violations found, one line each.
pub async fn reconcile_all<'a>(
    client: &mut StoreClient,
    namespace: &str,
    keys: impl IntoIterator<Item = &'a mut KeyHistory>,
) -> Result<Vec<String>, Status> {
    let mut violations = Vec::new();
    for history in keys {
        let observed = lookup(client, namespace, history.key()).await?;
        if let Err(violation) = history.reconcile(observed) {
            violations.push(violation);
        }
    }
    Ok(violations)
}

/// Test values are UTF-8; show them as text in messages.
fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(version: u64, value: &str) -> Option<GetResponse> {
        Some(GetResponse {
            value: value.as_bytes().to_vec(),
            version,
        })
    }

    fn history_acknowledged_at_two() -> KeyHistory {
        let mut history = KeyHistory::new("k");
        history.record_attempt(b"one".to_vec());
        history.acknowledge(1).unwrap();
        history.record_attempt(b"two".to_vec());
        history.acknowledge(2).unwrap();
        history
    }

    #[test]
    fn the_acknowledged_version_reconciles() {
        assert!(
            history_acknowledged_at_two()
                .reconcile(found(2, "two"))
                .is_ok()
        );
    }

    #[test]
    fn an_older_version_or_a_missing_key_is_a_lost_write() {
        assert!(
            history_acknowledged_at_two()
                .reconcile(found(1, "one"))
                .is_err()
        );
        assert!(history_acknowledged_at_two().reconcile(None).is_err());
    }

    #[test]
    fn a_later_version_must_be_one_the_test_sent() {
        let mut sent = history_acknowledged_at_two();
        sent.record_attempt(b"three".to_vec());
        assert!(sent.clone().reconcile(found(3, "three")).is_ok());
        assert!(sent.clone().reconcile(found(3, "forged")).is_err());
        assert!(sent.reconcile(found(4, "three")).is_err());
    }

    #[test]
    fn reconciling_adopts_what_the_store_holds() {
        let mut history = history_acknowledged_at_two();
        history.record_attempt(b"three".to_vec());
        history.reconcile(found(3, "three")).unwrap();
        assert_eq!(history.expected_version(), 3);
    }
}
