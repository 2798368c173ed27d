//! session-svc's settings: every one a flag and an environment variable, read once at start.

use std::{net::SocketAddr, time::Duration};

use clap::Parser;
use store_svc::kit::{duration, telemetry::LogFormat};

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

    /// Where store-svc listens.
    #[arg(
        long,
        env = "SESSION_STORE_ADDR",
        default_value = "http://127.0.0.1:50052"
    )]
    pub store_addr: String,

    /// Address of the Prometheus `/metrics` endpoint; off when not set.
    #[arg(long, env = "SESSION_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,

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
}

impl Config {
    /// How writes to store-svc are batched; `None` when every write is its own call.
    pub fn store_batching(&self) -> Option<BatchSettings> {
        (self.store_batch_writes > 1).then_some(BatchSettings {
            max_writes: self.store_batch_writes as usize,
            in_flight: self.store_batches_in_flight as usize,
        })
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
        ] {
            assert!(
                Config::try_parse_from(["session-svc", bad[0], bad[1]]).is_err(),
                "{bad:?}"
            );
        }
    }
}
