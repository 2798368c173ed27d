//! Membership: the candidate replicas (a static list, or a DNS name's addresses resolved again
//! and again) and which of them are live, by gRPC health checks of their main ports.
//!
//! A candidate becomes a member at its first SERVING answer and stops being one after three
//! failed checks in a row, or at once when it answers NOT_SERVING (it is draining). This
//! replica is always a member of its own view until it drains.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::Duration,
};

use futures_util::{StreamExt as _, stream};
use tokio::{sync::watch, time::Instant};
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use super::{Cluster, Peers};

/// Failed health checks in a row after which a member is considered gone.
const MISSES: u32 = 3;

/// A lazily connecting plaintext channel to the replica at `addr` (`host:port`).
pub fn connect_lazy(addr: &str) -> Channel {
    // `host:port` was checked at start-up (or came from DNS), so the URI parses; a bad one
    // would fail every call to it, which membership then treats as a dead member.
    let uri = format!("http://{addr}");
    let endpoint = Endpoint::from_shared(uri)
        .unwrap_or_else(|_| Endpoint::from_static("http://0.0.0.0:1"))
        .connect_timeout(Duration::from_secs(1))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(5));
    endpoint.connect_lazy()
}

/// What is known of one candidate.
#[derive(Debug, Default, Clone, Copy)]
struct Seen {
    /// Answered SERVING at least once since it was last considered gone.
    up: bool,
    /// Failed checks in a row.
    misses: u32,
}

impl Cluster {
    /// Keeps the membership up to date until `stop` turns true.
    pub async fn run_membership(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let mut seen: HashMap<Arc<str>, Seen> = HashMap::new();
        let mut candidates: Vec<Arc<str>> = Vec::new();
        let mut resolved_at: Option<Instant> = None;
        let mut rounds = 0u32;
        let mut ticks = tokio::time::interval(self.settings.probe_interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            let stale = resolved_at.is_none_or(|at| at.elapsed() >= self.settings.dns_refresh);
            if stale {
                if let Some(list) = self.candidates().await {
                    candidates = list;
                    seen.retain(|addr, _| candidates.contains(addr));
                }
                resolved_at = Some(Instant::now());
            }
            let timeout = self.settings.probe_interval.max(Duration::from_millis(200));
            let this = &self;
            let answers: Vec<(Arc<str>, Option<bool>)> = stream::iter(candidates.iter().cloned())
                .map(|addr| async move {
                    let serving = this.probe(&addr, timeout).await;
                    (addr, serving)
                })
                .buffer_unordered(32)
                .collect()
                .await;
            for (addr, answer) in answers {
                let entry = seen.entry(addr).or_default();
                match answer {
                    Some(true) => {
                        *entry = Seen {
                            up: true,
                            misses: 0,
                        }
                    }
                    Some(false) => *entry = Seen::default(),
                    None => {
                        entry.misses += 1;
                        if entry.misses >= MISSES {
                            entry.up = false;
                        }
                    }
                }
            }
            // This replica stays in its own view while draining: it keeps (and renews) its
            // shards until its in-flight work is done, then releases them all at once.
            let members: Vec<Arc<str>> = seen
                .iter()
                .filter(|(_, s)| s.up)
                .map(|(addr, _)| addr.clone())
                .chain([self.me.clone()])
                .collect();
            self.set_members(members);
            rounds += 1;
            if rounds == MISSES {
                self.mark_settled();
            }
        }
    }

    /// The other replicas' addresses; `None` when DNS failed this time (the last answer stands).
    async fn candidates(&self) -> Option<Vec<Arc<str>>> {
        let list: Vec<String> = match &self.settings.peers {
            Peers::Static(list) => list.clone(),
            Peers::Dns(name) => match tokio::net::lookup_host(name.as_str()).await {
                Ok(addrs) => addrs.map(|a| a.to_string()).collect(),
                Err(error) => {
                    tracing::warn!(name = %name, %error, "peer DNS lookup failed");
                    return None;
                }
            },
        };
        let unique: HashSet<String> = list.into_iter().filter(|a| *a != *self.me).collect();
        let mut list: Vec<Arc<str>> = unique.into_iter().map(Arc::from).collect();
        list.sort();
        Some(list)
    }

    /// One health check of `addr`: `Some(true)` SERVING, `Some(false)` any other answer,
    /// `None` no answer in time.
    async fn probe(&self, addr: &Arc<str>, timeout: Duration) -> Option<bool> {
        let mut client = HealthClient::new(self.channel(addr));
        let mut request = tonic::Request::new(HealthCheckRequest {
            service: String::new(),
        });
        request.set_timeout(timeout);
        match tokio::time::timeout(timeout, client.check(request)).await {
            Ok(Ok(answer)) => Some(answer.into_inner().status == ServingStatus::Serving as i32),
            Ok(Err(status)) if status.code() == tonic::Code::Unavailable => None,
            Ok(Err(_)) => Some(false),
            Err(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::{cluster::ClusterSettings, runtime::Store};

    fn cluster(advertise: &str, peers: Peers) -> Arc<Cluster> {
        let settings = ClusterSettings {
            advertise: advertise.into(),
            peers,
            shards: 8,
            lease_ttl: Duration::from_secs(10),
            max_clock_skew: Duration::from_secs(1),
            probe_interval: Duration::from_millis(100),
            dns_refresh: Duration::from_secs(5),
        };
        Cluster::new(settings, Store::in_memory())
    }

    #[tokio::test]
    async fn candidates_leave_out_this_replica_and_repeats() {
        let list = [
            "10.0.0.1:50051",
            "10.0.0.2:50051",
            "10.0.0.2:50051",
            "10.0.0.3:50051",
        ];
        let peers = Peers::Static(list.iter().map(ToString::to_string).collect());
        let found = cluster("10.0.0.1:50051", peers).candidates().await.unwrap();
        let found: Vec<&str> = found.iter().map(AsRef::as_ref).collect();
        assert_eq!(found, ["10.0.0.2:50051", "10.0.0.3:50051"]);
    }

    #[tokio::test]
    async fn a_dns_name_gives_its_addresses_with_the_port_and_never_this_replica() {
        // `localhost` resolves without a network: 127.0.0.1 (and ::1 where configured).
        let found = cluster("127.0.0.1:50051", Peers::Dns("localhost:50051".into()))
            .candidates()
            .await
            .unwrap();
        assert!(found.iter().all(|a| a.ends_with(":50051")), "{found:?}");
        assert!(
            !found.iter().any(|a| a.as_ref() == "127.0.0.1:50051"),
            "{found:?}"
        );
        let other = cluster("10.9.9.9:50051", Peers::Dns("localhost:50051".into()))
            .candidates()
            .await
            .unwrap();
        assert!(
            other.iter().any(|a| a.as_ref() == "127.0.0.1:50051"),
            "{other:?}"
        );
    }

    #[tokio::test]
    async fn a_replica_that_does_not_answer_is_not_a_member() {
        // A port nothing listens on: the replica stays alone in its view.
        let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = dead.local_addr().unwrap().to_string();
        drop(dead);
        let alone = cluster("127.0.0.1:1", Peers::Static(vec![addr.clone()]));
        let answer = alone
            .probe(&Arc::from(addr.as_str()), Duration::from_millis(300))
            .await;
        assert_ne!(answer, Some(true));
        let (_stop, stopped) = watch::channel(false);
        let running = tokio::spawn(alone.clone().run_membership(stopped));
        alone.settled().await;
        assert_eq!(alone.members().len(), 1);
        running.abort();
    }
}
