//! store-svc's settings: every one a flag and an environment variable, read once at start.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::Parser;
use tonic::transport::ServerTlsConfig;

use kit::{
    conn::ConnectionLimits,
    duration,
    telemetry::LogFormat,
    tls::{self, TlsError},
};

use crate::namespaces::{DEFAULT_NAMESPACES, Namespaces};

/// Versioned key/value over gRPC on sled: durable before it answers.
#[derive(Debug, Clone, Parser)]
#[command(name = "store-svc", version, about)]
pub struct Config {
    /// Address the gRPC server listens on (port 0 picks a free one).
    #[arg(long, env = "STORE_LISTEN", default_value = "127.0.0.1:50052")]
    pub listen: SocketAddr,

    /// Directory of the sled database; created if missing.
    #[arg(long, env = "STORE_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,

    /// Writes that may wait for the disk at once; more get RESOURCE_EXHAUSTED.
    #[arg(long, env = "STORE_QUEUE_SIZE", default_value_t = 1024,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub queue_size: u32,

    /// Most writes made durable by one flush (group commit); 1 flushes every write alone.
    #[arg(long, env = "STORE_MAX_BATCH", default_value_t = 512,
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub max_batch: u32,

    /// Largest value a Put may store, in bytes.
    #[arg(long, env = "STORE_MAX_VALUE_BYTES", default_value_t = 1024 * 1024,
          value_parser = clap::value_parser!(u32).range(1..=64 * 1024 * 1024))]
    pub max_value_bytes: u32,

    /// Namespaces served, comma-separated; a request naming any other is INVALID_ARGUMENT.
    /// Their trees are opened at start-up: nothing a caller sends creates one.
    #[arg(long, env = "STORE_NAMESPACES", default_value = DEFAULT_NAMESPACES)]
    pub namespaces: Namespaces,

    /// Deadline of requests that carry no grpc-timeout (e.g. 250ms, 5s).
    #[arg(long, env = "STORE_DEFAULT_DEADLINE", default_value = "5s", value_parser = duration::parse)]
    pub default_deadline: Duration,

    /// How long a SIGTERM may take: drain requests, final flush, exit.
    #[arg(long, env = "STORE_GRACE_PERIOD", default_value = "20s", value_parser = duration::parse)]
    pub grace_period: Duration,

    /// Address of the Prometheus `/metrics` endpoint; off when not set.
    #[arg(long, env = "STORE_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,

    /// Address of a plaintext gRPC port serving only `grpc.health.v1.Health`, for probes that
    /// cannot speak the main port's TLS (Kubernetes' gRPC probes); off when not set.
    #[arg(long, env = "STORE_HEALTH_LISTEN")]
    pub health_listen: Option<SocketAddr>,

    /// Log line format on stderr.
    #[arg(long, env = "STORE_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,

    /// Most client connections open at once (lowered to fit the open-file limit); beyond it
    /// new connections wait, and connections that never sent a request are closed for room.
    #[arg(long, env = "STORE_MAX_CONNECTIONS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_connections: u32,

    /// HTTP/2 streams (calls in progress) one connection may have open at once.
    #[arg(long, env = "STORE_MAX_CONCURRENT_STREAMS", default_value_t = 1024,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_concurrent_streams: u32,

    /// A connection that starts no request this long after connecting is closed.
    #[arg(long, env = "STORE_FIRST_REQUEST_TIMEOUT", default_value = "10s", value_parser = duration::parse)]
    pub first_request_timeout: Duration,

    /// A connection with no request in flight for this long is closed.
    #[arg(long, env = "STORE_IDLE_CONNECTION_TIMEOUT", default_value = "10m", value_parser = duration::parse)]
    pub idle_connection_timeout: Duration,

    /// How often an HTTP/2 ping checks a quiet client (closed if unanswered for 10 s).
    #[arg(long, env = "STORE_KEEPALIVE_INTERVAL", default_value = "30s", value_parser = duration::parse)]
    pub keepalive_interval: Duration,

    /// Certificate chain (PEM) the gRPC port presents; with `--tls-key` the port speaks TLS
    /// only. Off: plaintext.
    #[arg(long, env = "STORE_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// Private key (PEM) of `--tls-cert`.
    #[arg(long, env = "STORE_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// CA certificate (PEM) that must have signed every client's certificate (mutual TLS);
    /// needs `--tls-cert` and `--tls-key`. Off: any client that can connect is served.
    #[arg(long, env = "STORE_TLS_CLIENT_CA", requires_all = ["tls_cert", "tls_key"])]
    pub tls_client_ca: Option<PathBuf>,

    /// OTLP/gRPC receiver traces are exported to, `http://HOST:PORT` (an OpenTelemetry
    /// Collector, Jaeger on 4317); unset, the standard `OTEL_EXPORTER_OTLP_ENDPOINT` is used
    /// if set, else tracing is off.
    #[arg(long, env = "STORE_OTLP_ENDPOINT", value_parser = kit::trace::parse_endpoint)]
    pub otlp_endpoint: Option<String>,

    /// Where records live: `sled` (in `--data-dir`, this process only) or `postgres` (a
    /// PostgreSQL-compatible database at `--postgres-url`; store-svc then keeps no state and may
    /// run as several replicas).
    #[arg(long, env = "STORE_BACKEND", value_enum, default_value = "sled")]
    pub backend: BackendKind,

    /// The database of `--backend postgres`, `postgres://USER[:PASSWORD]@HOST:PORT/DATABASE`
    /// (no TLS yet). Required with that backend.
    #[arg(
        long,
        env = "STORE_POSTGRES_URL",
        required_if_eq("backend", "postgres")
    )]
    pub postgres_url: Option<String>,

    /// Most connections to the database of `--backend postgres`; calls beyond it wait (at most
    /// `--queue-size` of them, then RESOURCE_EXHAUSTED).
    #[arg(long, env = "STORE_POSTGRES_POOL_SIZE", default_value_t = 16,
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub postgres_pool_size: u32,
}

/// `--backend`: where the records live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BackendKind {
    /// sled in `--data-dir`: group commit and fsync by this process.
    Sled,
    /// A PostgreSQL-compatible database at `--postgres-url`.
    Postgres,
}

impl Config {
    /// The bounds on client connections these settings give.
    pub fn connection_limits(&self) -> ConnectionLimits {
        ConnectionLimits {
            max_connections: self.max_connections as usize,
            first_request_timeout: self.first_request_timeout,
            idle_timeout: self.idle_connection_timeout,
        }
    }

    /// A configuration for tests and embedding: defaults, with this data directory.
    pub fn for_data_dir(data_dir: impl Into<PathBuf>) -> Self {
        let mut config = Self::parse_from(["store-svc"]);
        config.data_dir = data_dir.into();
        config
    }

    /// The TLS configuration of the gRPC port, every file read and checked; `None` when the
    /// port is plaintext. (clap has already refused a certificate without its key, or a client
    /// CA without both.)
    pub fn server_tls(&self) -> Result<Option<ServerTlsConfig>, TlsError> {
        match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => {
                tls::server_config(cert, key, self.tls_client_ca.as_deref()).map(Some)
            }
            _ => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_documented_ones() {
        let config = Config::try_parse_from(["store-svc"]).unwrap();
        assert_eq!(config.listen, "127.0.0.1:50052".parse().unwrap());
        assert_eq!(config.data_dir, PathBuf::from("./data"));
        assert_eq!(config.default_deadline, Duration::from_secs(5));
        assert_eq!(config.max_value_bytes, 1024 * 1024);
        assert_eq!(config.metrics_listen, None);
        assert_eq!(config.tls_cert, None);
        assert_eq!(config.namespaces, Namespaces::default());
        assert!(config.server_tls().unwrap().is_none());
        assert_eq!(config.backend, BackendKind::Sled);
        assert_eq!(config.postgres_url, None);
    }

    #[test]
    fn the_postgres_backend_needs_a_url() {
        let error = Config::try_parse_from(["store-svc", "--backend", "postgres"]).unwrap_err();
        assert!(error.to_string().contains("--postgres-url"), "{error}");
        let config = Config::try_parse_from([
            "store-svc",
            "--backend",
            "postgres",
            "--postgres-url",
            "postgres://kv@127.0.0.1:5432/store",
        ])
        .unwrap();
        assert_eq!(config.backend, BackendKind::Postgres);
    }

    #[test]
    fn tls_flags_must_come_in_the_documented_combinations() {
        let refused = [
            vec!["--tls-cert", "c.pem"],
            vec!["--tls-key", "k.pem"],
            vec!["--tls-client-ca", "ca.pem"],
            vec!["--tls-cert", "c.pem", "--tls-client-ca", "ca.pem"],
        ];
        for flags in refused {
            let args = std::iter::once("store-svc").chain(flags.iter().copied());
            let error = Config::try_parse_from(args).unwrap_err().to_string();
            assert!(error.contains("--tls-"), "{flags:?}: {error}");
        }
        let accepted = [
            vec!["--tls-cert", "c.pem", "--tls-key", "k.pem"],
            vec![
                "--tls-cert",
                "c.pem",
                "--tls-key",
                "k.pem",
                "--tls-client-ca",
                "ca.pem",
            ],
        ];
        for flags in accepted {
            let args = std::iter::once("store-svc").chain(flags.iter().copied());
            assert!(Config::try_parse_from(args).is_ok(), "{flags:?}");
        }
    }

    #[test]
    fn flags_override_and_bad_values_are_refused() {
        let config = Config::try_parse_from([
            "store-svc",
            "--listen",
            "127.0.0.1:0",
            "--max-batch",
            "1",
            "--default-deadline",
            "250ms",
            "--log-format",
            "json",
            "--namespaces",
            "a,b-2",
        ])
        .unwrap();
        assert_eq!(config.max_batch, 1);
        assert_eq!(config.default_deadline, Duration::from_millis(250));
        assert_eq!(config.log_format, LogFormat::Json);
        assert_eq!(config.namespaces.iter().collect::<Vec<_>>(), ["a", "b-2"]);
        for bad in [
            ["--queue-size", "0"],
            ["--default-deadline", "5"],
            ["--listen", "nowhere"],
            ["--log-format", "xml"],
            ["--namespaces", "cart,Orders"],
            ["--namespaces", ""],
        ] {
            let args = ["store-svc", bad[0], bad[1]];
            assert!(Config::try_parse_from(args).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn a_bad_namespace_list_is_a_start_up_error_naming_the_flag() {
        let error = Config::try_parse_from(["store-svc", "--namespaces", "cart,a/b"]).unwrap_err();
        let message = error.to_string();
        assert!(message.contains("--namespaces"), "{message}");
        assert!(message.contains("[a-z0-9_-]"), "{message}");
    }
}
