//! session-svc's settings: every one a flag and an environment variable, read once at start.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::{Parser, ValueEnum};
use kit::{
    conn::ConnectionLimits,
    duration,
    telemetry::LogFormat,
    tls::{self, TlsError},
};
use tonic::transport::{ClientTlsConfig, ServerTlsConfig};

use crate::{
    domain::discount::DEFAULT_CATALOG,
    runtime::{Settings, batcher::BatchSettings},
};

/// One live, supervised, persistent actor per (kind, key), over gRPC.
#[derive(Debug, Clone, Parser)]
#[command(name = "session-svc", version, about)]
pub struct Config {
    /// Address the gRPC server listens on (port 0 picks a free one).
    #[arg(long, env = "SESSION_LISTEN", default_value = "127.0.0.1:50051")]
    pub listen: SocketAddr,

    /// Where store-svc listens: `http://HOST:PORT`, or `https://HOST:PORT` with
    /// `--store-tls-ca` (the store's certificate must then name HOST).
    #[arg(
        long,
        env = "SESSION_STORE_ADDR",
        default_value = "http://127.0.0.1:50052"
    )]
    pub store_addr: String,

    /// Address of the Prometheus `/metrics` endpoint; off when not set.
    #[arg(long, env = "SESSION_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,

    /// Address of a plaintext gRPC port serving only `grpc.health.v1.Health`, for probes that
    /// cannot speak the main port's TLS (Kubernetes' gRPC probes); off when not set.
    #[arg(long, env = "SESSION_HEALTH_LISTEN")]
    pub health_listen: Option<SocketAddr>,

    /// Log line format on stderr.
    #[arg(long, env = "SESSION_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,

    /// Bearer token the AdminService requires; the admin API is refused when unset.
    #[arg(long, env = "SESSION_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,

    /// Messages that may wait in one actor's mailbox; more get RESOURCE_EXHAUSTED.
    #[arg(long, env = "SESSION_MAILBOX_CAPACITY", default_value_t = 64,
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub mailbox_capacity: u32,

    /// Deadline of requests that carry no grpc-timeout (GenServer.call's 5 s).
    #[arg(long, env = "SESSION_DEFAULT_DEADLINE", default_value = "5s", value_parser = duration::parse)]
    pub default_deadline: Duration,

    /// Idle time after which a cart actor passivates.
    #[arg(long, env = "SESSION_CART_IDLE_TIMEOUT", default_value = "30m", value_parser = duration::parse)]
    pub cart_idle_timeout: Duration,

    /// Idle time after which a to-do list actor passivates.
    #[arg(long, env = "SESSION_TODO_IDLE_TIMEOUT", default_value = "10m", value_parser = duration::parse)]
    pub todo_idle_timeout: Duration,

    /// How long an active cart may go untouched before it expires (its durable reminder fires
    /// even if its actor passivated or session-svc restarted meanwhile).
    #[arg(long, env = "SESSION_CART_TTL", default_value = "168h", value_parser = duration::parse)]
    pub cart_ttl: Duration,

    /// Checked-out, ended and expired carts untouched this long leave the live namespaces
    /// (moved to the `archive` namespace, or deleted with `--archive delete`); 0s: never.
    #[arg(long, env = "SESSION_ARCHIVE_AFTER", default_value = "720h", value_parser = duration::parse)]
    pub archive_after: Duration,

    /// To-do lists untouched this long leave the live namespaces like old sessions (moved to
    /// `archive`, or deleted with `--archive delete`); 0s, the default: lists are kept until
    /// deleted. A list has no closed state, so this is its TTL and its archive age at once.
    #[arg(long, env = "SESSION_TODO_ARCHIVE_AFTER", default_value = "0s", value_parser = duration::parse)]
    pub todo_archive_after: Duration,

    /// To-do entries one import job has in flight at once (JobService); lower keeps
    /// interactive requests quicker while a job runs, higher imports faster.
    #[arg(long, env = "SESSION_JOB_IN_FLIGHT", default_value_t = 8,
          value_parser = clap::value_parser!(u32).range(1..=1_000))]
    pub job_in_flight: u32,

    /// Entries per second one import job sends at most; 0: as fast as the lists take them.
    #[arg(long, env = "SESSION_JOB_RATE", default_value_t = 0)]
    pub job_rate: u32,

    /// Jobs importing at once; more wait, PENDING, for a slot.
    #[arg(long, env = "SESSION_MAX_RUNNING_JOBS", default_value_t = 2,
          value_parser = clap::value_parser!(u32).range(1..=64))]
    pub max_running_jobs: u32,

    /// Jobs not yet finished (uploading, pending, running) at once; another upload is refused
    /// RESOURCE_EXHAUSTED.
    #[arg(long, env = "SESSION_MAX_JOBS", default_value_t = 32,
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub max_jobs: u32,

    /// Entries one import may hold; a longer upload is refused INVALID_ARGUMENT.
    #[arg(long, env = "SESSION_MAX_IMPORT_ENTRIES", default_value_t = 1_000_000,
          value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    pub max_import_entries: u64,

    /// How long finished jobs (and their first failures) are kept for GetJob and ListJobs.
    #[arg(long, env = "SESSION_JOB_RETENTION", default_value = "168h", value_parser = duration::parse)]
    pub job_retention: Duration,

    /// What archiving does with old sessions: `move` them to the `archive` namespace, or
    /// `delete` them.
    #[arg(long, env = "SESSION_ARCHIVE", default_value = "move")]
    pub archive: ArchiveMode,

    /// How long the sweeper rests between passes (archiving old sessions, reconciling stock
    /// reservations); a pass that was cut short by a restart resumes where it was.
    #[arg(long, env = "SESSION_SWEEP_INTERVAL", default_value = "60s", value_parser = duration::parse)]
    pub sweep_interval: Duration,

    /// Most stored records the sweeper looks at per second, so upkeep never crowds out
    /// requests.
    #[arg(long, env = "SESSION_SWEEP_RATE", default_value_t = 1_000,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub sweep_rate: u32,

    /// Idle time after which a sku (stock) actor passivates.
    #[arg(long, env = "SESSION_SKU_IDLE_TIMEOUT", default_value = "30m", value_parser = duration::parse)]
    pub sku_idle_timeout: Duration,

    /// Most live actors of all kinds; at the cap the least recently used idle ones passivate.
    #[arg(long, env = "SESSION_MAX_ACTORS", default_value_t = 1_000_000,
          value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    pub max_actors: u64,

    /// Watch streams (WatchSession, WatchList) open at once in all; more are refused
    /// RESOURCE_EXHAUSTED. Measured at under 35 KB of RSS per open stream (its HTTP/2
    /// stream and buffers, a forwarding task, a few buffered states), so the default bounds
    /// watchers to about 350 MB at worst; lower it for small pods.
    #[arg(long, env = "SESSION_MAX_WATCHERS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_watchers: u32,

    /// Watch streams open at once on one key: a few screens per user, not one client
    /// taking every watcher slot with a single key.
    #[arg(long, env = "SESSION_MAX_WATCHERS_PER_KEY", default_value_t = 64,
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub max_watchers_per_key: u32,

    /// Longest life of a watch stream; it then ends UNAVAILABLE asking the client to
    /// re-subscribe, so forgotten streams do not hold their slots for ever.
    #[arg(long, env = "SESSION_WATCH_MAX_LIFETIME", default_value = "30m", value_parser = duration::parse)]
    pub watch_max_lifetime: Duration,

    /// Crashes of one key tolerated within the restart window before it is quarantined.
    #[arg(long, env = "SESSION_MAX_RESTARTS", default_value_t = 3)]
    pub max_restarts: u32,

    /// The window over which crashes are counted.
    #[arg(long, env = "SESSION_RESTART_WINDOW", default_value = "5s", value_parser = duration::parse)]
    pub restart_window: Duration,

    /// How long a crash-looping key is refused (UNAVAILABLE with RetryInfo).
    #[arg(long, env = "SESSION_QUARANTINE", default_value = "10s", value_parser = duration::parse)]
    pub quarantine: Duration,

    /// Request ids remembered per actor, at most (a retry within them is applied once).
    #[arg(long, env = "SESSION_RECENT_REQUESTS", default_value_t = 64,
          value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub recent_requests: u32,

    /// How long a request id is remembered.
    #[arg(long, env = "SESSION_REQUEST_ID_TTL", default_value = "10m", value_parser = duration::parse)]
    pub request_id_ttl: Duration,

    /// Latest events a Session shows in `logs` (ListSessionEvents pages them all).
    #[arg(long, env = "SESSION_LOG_LIMIT", default_value_t = 20,
          value_parser = clap::value_parser!(u32).range(1..=100))]
    pub log_limit: u32,

    /// Events kept per cart; appending beyond it deletes the oldest in the same commit.
    #[arg(long, env = "SESSION_EVENTS_PER_CART", default_value_t = 10_000,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub events_per_cart: u32,

    /// Discount catalog: CODE=N% or CODE=MINOR_UNITS, comma separated.
    #[arg(
        long,
        env = "SESSION_DISCOUNTS",
        default_value = DEFAULT_CATALOG
    )]
    pub discounts: String,

    /// Writes to store-svc sent together in one BatchWrite at most; 1 sends each write as
    /// its own Put (no batching).
    #[arg(long, env = "SESSION_STORE_BATCH_WRITES", default_value_t = 256,
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub store_batch_writes: u32,

    /// BatchWrite calls to store-svc outstanding at once; while all are out, the next batch
    /// gathers.
    #[arg(long, env = "SESSION_STORE_BATCHES_IN_FLIGHT", default_value_t = 4,
          value_parser = clap::value_parser!(u32).range(1..=64))]
    pub store_batches_in_flight: u32,

    /// How long a SIGTERM may take: drain requests and mailboxes, exit.
    #[arg(long, env = "SESSION_GRACE_PERIOD", default_value = "20s", value_parser = duration::parse)]
    pub grace_period: Duration,

    /// Most client connections open at once (lowered to fit the open-file limit); beyond it
    /// new connections wait, and connections that never sent a request are closed for room.
    #[arg(long, env = "SESSION_MAX_CONNECTIONS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_connections: u32,

    /// HTTP/2 streams (calls in progress) one connection may have open at once.
    #[arg(long, env = "SESSION_MAX_CONCURRENT_STREAMS", default_value_t = 1024,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_concurrent_streams: u32,

    /// A connection that starts no request this long after connecting is closed.
    #[arg(long, env = "SESSION_FIRST_REQUEST_TIMEOUT", default_value = "10s", value_parser = duration::parse)]
    pub first_request_timeout: Duration,

    /// A connection with no request in flight for this long is closed.
    #[arg(long, env = "SESSION_IDLE_CONNECTION_TIMEOUT", default_value = "10m", value_parser = duration::parse)]
    pub idle_connection_timeout: Duration,

    /// How often an HTTP/2 ping checks a quiet client (closed if unanswered for 10 s).
    #[arg(long, env = "SESSION_KEEPALIVE_INTERVAL", default_value = "30s", value_parser = duration::parse)]
    pub keepalive_interval: Duration,

    /// Certificate chain (PEM) session-svc's own gRPC port presents; with `--tls-key` the port
    /// speaks TLS only. Off: plaintext.
    #[arg(long, env = "SESSION_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// Private key (PEM) of `--tls-cert`.
    #[arg(long, env = "SESSION_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// CA certificate (PEM) that store-svc's certificate must be signed by; needed by, and
    /// only allowed with, an `https://` `--store-addr`.
    #[arg(long, env = "SESSION_STORE_TLS_CA")]
    pub store_tls_ca: Option<PathBuf>,

    /// Client certificate chain (PEM) presented to store-svc (mutual TLS); needs
    /// `--store-tls-key` and `--store-tls-ca`.
    #[arg(long, env = "SESSION_STORE_TLS_CERT", requires_all = ["store_tls_key", "store_tls_ca"])]
    pub store_tls_cert: Option<PathBuf>,

    /// Private key (PEM) of `--store-tls-cert`.
    #[arg(long, env = "SESSION_STORE_TLS_KEY", requires = "store_tls_cert")]
    pub store_tls_key: Option<PathBuf>,

    /// OTLP/gRPC receiver traces are exported to, `http://HOST:PORT` (an OpenTelemetry
    /// Collector, Jaeger on 4317); unset, the standard `OTEL_EXPORTER_OTLP_ENDPOINT` is used
    /// if set, else tracing is off.
    #[arg(long, env = "SESSION_OTLP_ENDPOINT", value_parser = kit::trace::parse_endpoint)]
    pub otlp_endpoint: Option<String>,

    /// The replicas of this cluster, `host:port` of their gRPC ports, comma-separated (this
    /// replica's own address may be among them): runs session-svc as one of several replicas
    /// with a static membership. Unset, with no --peers-dns: a single replica.
    #[arg(
        long,
        env = "SESSION_PEERS",
        value_delimiter = ',',
        conflicts_with = "peers_dns"
    )]
    pub peers: Vec<String>,

    /// A DNS name and port, `name:port`, whose addresses are the replicas (a Kubernetes
    /// headless Service): like --peers, with the membership resolved again every
    /// --peers-refresh.
    #[arg(long, env = "SESSION_PEERS_DNS")]
    pub peers_dns: Option<String>,

    /// How often --peers-dns is resolved again.
    #[arg(long, env = "SESSION_PEERS_REFRESH", default_value = "5s", value_parser = duration::parse)]
    pub peers_refresh: Duration,

    /// This replica's address as the other replicas reach it, `host:port` (with --peers-dns,
    /// one of the name's addresses: the pod IP). Required with --peers or --peers-dns.
    #[arg(long, env = "SESSION_ADVERTISE")]
    pub advertise: Option<String>,

    /// Shards the keys hash to; shards, not keys, are what replicas own. Every replica of a
    /// cluster must use the same number.
    #[arg(long, env = "SESSION_SHARDS", default_value_t = 64,
          value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub shards: u32,

    /// How long a replica's lease on a shard lasts unless renewed; it renews every third of
    /// it. A SIGKILLed replica's shards move after at most this plus --max-clock-skew.
    #[arg(long, env = "SESSION_LEASE_TTL", default_value = "10s", value_parser = duration::parse)]
    pub lease_ttl: Duration,

    /// The most two replicas' wall clocks may differ: an expired lease is taken over only this
    /// long after its holder's clock said it ended.
    #[arg(long, env = "SESSION_MAX_CLOCK_SKEW", default_value = "1s", value_parser = duration::parse)]
    pub max_clock_skew: Duration,

    /// How often each replica checks the others' health; three failed checks in a row (or a
    /// NOT_SERVING answer, as when draining) take a replica out of the membership.
    #[arg(long, env = "SESSION_PEER_PROBE_INTERVAL", default_value = "500ms", value_parser = duration::parse)]
    pub peer_probe_interval: Duration,
}

impl Config {
    /// The TLS configuration of session-svc's own port, every file read and checked; `None`
    /// when the port is plaintext.
    pub fn server_tls(&self) -> Result<Option<ServerTlsConfig>, TlsError> {
        match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => tls::server_config(cert, key, None).map(Some),
            _ => Ok(None),
        }
    }

    /// The TLS configuration towards store-svc, every file read and checked; `None` for an
    /// `http://` store. The scheme of `--store-addr` and the `--store-tls-*` flags must agree:
    /// TLS settings that would silently go unused, or an `https://` address with no CA to
    /// check the store against, are refused with a message naming the flags.
    pub fn store_tls(&self) -> Result<Option<ClientTlsConfig>, String> {
        let https = self
            .store_addr
            .get(..8)
            .is_some_and(|scheme| scheme.eq_ignore_ascii_case("https://"));
        let identity = self
            .store_tls_cert
            .as_deref()
            .zip(self.store_tls_key.as_deref());
        match &self.store_tls_ca {
            None if https => Err(format!(
                "--store-addr {} uses https:// but --store-tls-ca / SESSION_STORE_TLS_CA is not \
                 set: name the CA that signed store-svc's certificate",
                self.store_addr
            )),
            None => Ok(None),
            Some(_) if !https => Err(format!(
                "--store-tls-ca / SESSION_STORE_TLS_CA (and --store-tls-cert, --store-tls-key) \
                 need an https:// --store-addr, not {}",
                self.store_addr
            )),
            Some(ca) => tls::client_config(ca, identity)
                .map(Some)
                .map_err(|e| format!("--store-tls-ca / --store-tls-cert / --store-tls-key: {e}")),
        }
    }

    /// The cluster settings, when --peers or --peers-dns is set; `None` for a single
    /// replica. Refuses combinations that cannot work, naming the flags.
    pub fn cluster(&self) -> Result<Option<crate::cluster::ClusterSettings>, String> {
        use crate::cluster::{ClusterSettings, Peers};
        let peers = match (&self.peers_dns, self.peers.is_empty()) {
            (Some(name), _) => Peers::Dns(name.clone()),
            (None, false) => Peers::Static(self.peers.clone()),
            (None, true) => return Ok(None),
        };
        let Some(advertise) = self.advertise.clone() else {
            return Err(
                "--peers / --peers-dns need --advertise (SESSION_ADVERTISE): this \
                        replica's host:port as the others reach it"
                    .into(),
            );
        };
        if self.tls_cert.is_some() {
            return Err(
                "--peers / --peers-dns with --tls-cert: replicas forward to each other \
                        in plaintext, and TLS between replicas is not supported yet"
                    .into(),
            );
        }
        if self.lease_ttl < Duration::from_secs(1) {
            return Err(format!(
                "--lease-ttl {:?} is too short: at least 1s (renewals go every third of it)",
                self.lease_ttl
            ));
        }
        let settings = ClusterSettings {
            advertise,
            peers,
            shards: self.shards,
            lease_ttl: self.lease_ttl,
            max_clock_skew: self.max_clock_skew,
            probe_interval: self.peer_probe_interval,
            dns_refresh: self.peers_refresh,
        };
        settings.check().map(|()| Some(settings))
    }

    /// The bounds on client connections these settings give.
    pub fn connection_limits(&self) -> ConnectionLimits {
        ConnectionLimits {
            max_connections: self.max_connections as usize,
            first_request_timeout: self.first_request_timeout,
            idle_timeout: self.idle_connection_timeout,
        }
    }

    /// How writes to store-svc are batched; `None` when every write is its own call.
    pub fn store_batching(&self) -> Option<BatchSettings> {
        (self.store_batch_writes > 1).then_some(BatchSettings {
            max_writes: self.store_batch_writes as usize,
            in_flight: self.store_batches_in_flight as usize,
        })
    }

    /// How import jobs run.
    pub fn job_settings(&self) -> crate::jobs::JobSettings {
        crate::jobs::JobSettings {
            in_flight: self.job_in_flight as usize,
            max_running: self.max_running_jobs as usize,
            max_unfinished: self.max_jobs as usize,
            max_entries: self.max_import_entries,
            rate: (self.job_rate > 0).then_some(self.job_rate),
            retention: self.job_retention,
            // Half the lists' idempotency memory: see `jobs`.
            ahead_per_list: (self.recent_requests as usize / 2).max(1),
            ..crate::jobs::JobSettings::default()
        }
    }

    /// The runtime settings of a kind whose actors passivate after `idle_timeout`.
    /// How the sweeper runs.
    pub fn sweep_settings(&self) -> crate::sweeper::SweepSettings {
        crate::sweeper::SweepSettings {
            interval: self.sweep_interval,
            rate: self.sweep_rate,
            archive_after: (!self.archive_after.is_zero()).then_some(self.archive_after),
            todo_archive_after: (!self.todo_archive_after.is_zero())
                .then_some(self.todo_archive_after),
            archive: self.archive,
        }
    }

    /// The runtime settings of a kind whose actors passivate after `idle_timeout`.
    pub fn runtime_settings(&self, idle_timeout: Duration) -> Settings {
        Settings {
            mailbox_capacity: self.mailbox_capacity as usize,
            idle_timeout,
            max_restarts: self.max_restarts,
            restart_window: self.restart_window,
            quarantine: self.quarantine,
            recent_requests: self.recent_requests as usize,
            request_id_ttl: self.request_id_ttl,
            max_watchers_per_key: self.max_watchers_per_key as usize,
            watch_max_lifetime: self.watch_max_lifetime,
            ..Settings::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_documented_ones() {
        let config = Config::try_parse_from(["session-svc"]).unwrap();
        assert_eq!(config.listen, "127.0.0.1:50051".parse().unwrap());
        assert_eq!(config.store_addr, "http://127.0.0.1:50052");
        assert_eq!(config.mailbox_capacity, 64);
        assert_eq!(config.cart_idle_timeout, Duration::from_secs(1800));
        assert_eq!(config.todo_idle_timeout, Duration::from_secs(600));
        assert_eq!(config.default_deadline, Duration::from_secs(5));
        assert_eq!(config.admin_token, None);
        assert_eq!(config.max_watchers, 10_000);
        assert_eq!(config.max_watchers_per_key, 64);
        assert_eq!(config.watch_max_lifetime, Duration::from_secs(1800));
        assert_eq!(config.store_batching(), Some(BatchSettings::default()));
        let unbatched =
            Config::try_parse_from(["session-svc", "--store-batch-writes", "1"]).unwrap();
        assert_eq!(unbatched.store_batching(), None);
        assert!(config.server_tls().unwrap().is_none());
        assert!(config.store_tls().unwrap().is_none());
        assert_eq!(config.otlp_endpoint, None);
    }

    #[test]
    fn tls_flags_must_come_in_the_documented_combinations() {
        let refused_by_clap = [
            vec!["--tls-cert", "c.pem"],
            vec!["--tls-key", "k.pem"],
            vec!["--store-tls-cert", "c.pem", "--store-tls-key", "k.pem"],
            vec!["--store-tls-cert", "c.pem", "--store-tls-ca", "ca.pem"],
            vec!["--store-tls-key", "k.pem", "--store-tls-ca", "ca.pem"],
        ];
        for flags in refused_by_clap {
            let args = std::iter::once("session-svc").chain(flags.iter().copied());
            let error = Config::try_parse_from(args).unwrap_err().to_string();
            assert!(error.contains("tls-"), "{flags:?}: {error}");
        }
        let https_without_ca =
            Config::try_parse_from(["session-svc", "--store-addr", "https://store:50052"]).unwrap();
        let error = https_without_ca.store_tls().unwrap_err();
        assert!(error.contains("--store-tls-ca"), "{error}");
        let ca_with_http =
            Config::try_parse_from(["session-svc", "--store-tls-ca", "ca.pem"]).unwrap();
        let error = ca_with_http.store_tls().unwrap_err();
        assert!(error.contains("https://"), "{error}");
        let missing_ca = Config::try_parse_from([
            "session-svc",
            "--store-addr",
            "https://store:50052",
            "--store-tls-ca",
            "/nonexistent/ca.pem",
        ])
        .unwrap();
        let error = missing_ca.store_tls().unwrap_err();
        assert!(error.contains("/nonexistent/ca.pem"), "{error}");
    }

    #[test]
    fn bad_values_are_refused() {
        for bad in [
            ["--mailbox-capacity", "0"],
            ["--cart-idle-timeout", "30"],
            ["--listen", "localhost"],
            ["--max-actors", "0"],
            ["--store-batch-writes", "0"],
            ["--store-batch-writes", "1001"],
            ["--store-batches-in-flight", "0"],
            ["--max-watchers", "0"],
            ["--max-watchers-per-key", "0"],
            ["--watch-max-lifetime", "forever"],
            ["--otlp-endpoint", "https://collector:4317"],
            ["--otlp-endpoint", "collector:4317"],
        ] {
            assert!(
                Config::try_parse_from(["session-svc", bad[0], bad[1]]).is_err(),
                "{bad:?}"
            );
        }
    }
}

/// What archiving does with an old session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ArchiveMode {
    /// Move its records to the `archive` namespace.
    Move,
    /// Delete its records.
    Delete,
}
