//! Several session-svc replicas on loopback, each told the others' addresses (`--peers`).

use std::{net::SocketAddr, time::Duration};

use tonic::Code;

use crate::{
    SessionOptions, SessionProcess, load::free_loopback_addr, session::CartClient,
    session_client::start, spawn_session,
};

/// Settings that make a test cluster settle and fail over in about a second: health checks
/// every 100 ms, 2 s leases, 100 ms of allowed clock skew (one machine, one clock).
pub fn fast_cluster_options() -> SessionOptions {
    SessionOptions::new()
        .flag("--peer-probe-interval", "100ms")
        .flag("--lease-ttl", "2s")
        .flag("--max-clock-skew", "100ms")
}

/// Replicas of one cluster. A stopped replica's slot is `None`.
#[derive(Debug)]
pub struct SessionCluster {
    /// The replicas, in the order of `addrs`.
    pub replicas: Vec<Option<SessionProcess>>,
    /// Their listen (and advertised) addresses.
    pub addrs: Vec<SocketAddr>,
    /// The store each writes through (the same store, perhaps through a proxy) and the
    /// options it was started with (before its own address flags).
    settings: Vec<(String, SessionOptions)>,
}

impl SessionCluster {
    /// Starts `n` replicas on free loopback ports against the store at `store_endpoint`,
    /// every one with `--peers` naming all of them.
    pub async fn spawn(store_endpoint: &str, n: usize, options: SessionOptions) -> Self {
        Self::spawn_each(vec![(store_endpoint.to_owned(), options); n]).await
    }

    /// Starts one replica per entry of `settings`: the store it writes through, its options.
    pub async fn spawn_each(settings: Vec<(String, SessionOptions)>) -> Self {
        let n = settings.len();
        Self::spawn_first(settings, n).await
    }

    /// Gives every entry of `settings` an address (each replica's `--peers` names all of
    /// them) but starts only the first `running`: the others join later ([`Self::start`]).
    pub async fn spawn_first(settings: Vec<(String, SessionOptions)>, running: usize) -> Self {
        let n = settings.len();
        let addrs: Vec<SocketAddr> = (0..n)
            .map(|_| free_loopback_addr().expect("a free port"))
            .collect();
        let mut cluster = Self {
            replicas: Vec::new(),
            addrs,
            settings,
        };
        for i in 0..n {
            let replica = match i < running {
                true => Some(cluster.start(i).await),
                false => None,
            };
            cluster.replicas.push(replica);
        }
        cluster
    }

    /// Starts replica `i` (again) at its address.
    pub async fn start(&self, i: usize) -> SessionProcess {
        let peers: Vec<String> = self.addrs.iter().map(ToString::to_string).collect();
        let (store_endpoint, options) = &self.settings[i];
        let options = options
            .clone()
            .listen(self.addrs[i])
            .flag("--advertise", self.addrs[i])
            .flag("--peers", peers.join(","));
        spawn_session(store_endpoint, options).await
    }

    /// The index of the replica placement gives `kind/key` to, with all of them live and the
    /// server's default of 64 shards.
    pub fn owner_of(&self, kind: &str, key: &str) -> usize {
        let members: Vec<std::sync::Arc<str>> =
            self.addrs.iter().map(|a| a.to_string().into()).collect();
        let shard = session_svc::cluster::shard_of(64, kind, key);
        let owner = session_svc::cluster::rendezvous(&members, shard).expect("members");
        members.iter().position(|m| m == owner).expect("a member")
    }

    /// Replica `i`, which must be running.
    pub fn replica(&self, i: usize) -> &SessionProcess {
        self.replicas[i].as_ref().expect("replica is running")
    }

    /// Replica `i`, mutably.
    pub fn replica_mut(&mut self, i: usize) -> &mut SessionProcess {
        self.replicas[i].as_mut().expect("replica is running")
    }

    /// A cart client of every running replica.
    pub async fn carts(&self) -> Vec<CartClient> {
        let mut out = Vec::new();
        for replica in self.replicas.iter().flatten() {
            out.push(replica.cart().await);
        }
        out
    }

    /// Waits until every running replica serves a start of each of `probes` keys (so each
    /// shard they fall in has an owner holding its lease), at most `within`.
    pub async fn settle(&self, probes: usize, within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        for mut cart in self.carts().await {
            for i in 0..probes {
                let key = format!("settle-{i}");
                loop {
                    match start(&mut cart, &key).await {
                        Ok(_) => break,
                        Err(status)
                            if matches!(
                                status.code(),
                                Code::Unavailable | Code::DeadlineExceeded
                            ) && tokio::time::Instant::now() < deadline =>
                        {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                        Err(status) => panic!("cluster did not settle: {status:?}"),
                    }
                }
            }
        }
    }
}
