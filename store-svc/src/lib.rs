//! store-svc: versioned key/value over gRPC on sled, and the only process that touches disk.
//!
//! OK from a write means the write is on stable storage: flushed and fsynced. Many concurrent writes share one flush
//! (group commit), so durability costs latency, not throughput. The path to disk is bounded:
//! a full write queue answers RESOURCE_EXHAUSTED at once, and a write whose deadline passed
//! while queued is dropped unexecuted.
//!
//! # Layout
//!
//! - [`config`]: every setting, a flag and an environment variable.
//! - [`validate`]: field limits and page tokens; nothing invalid gets past a handler's first lines.
//! - [`namespaces`]: the namespaces served: configured, never created by a request.
//! - [`db`]: sled trees per namespace, `version || value` records, the version check.
//! - [`writer`]: the single writer thread: bounded queue → batch → one flush → answers.
//! - [`durable`]: the fsync after each flush that makes "flushed" survive a power loss.
//! - [`backend`]: sled (the above) or [`pg`], a PostgreSQL-compatible database
//!   (`--backend postgres`), behind one enum.
//! - [`service`]: the `store.v1.StoreService` handlers.
//! - [`error`]: the error enum and its one mapping to gRPC codes.
//! - [`metrics`]: what `/metrics` shows.
//!
//! Server plumbing shared with session-svc (deadlines, health, reflection, drain, logs,
//! connections, TLS) is the `kit` crate.
//!
//! [`StoreServer::open`] opens the database; [`StoreServer::serve`] serves it on a listener the
//! caller bound (so tests can use port 0) until a shutdown future resolves.

#![forbid(unsafe_code)]

pub mod backend;
pub mod config;
pub mod db;
pub mod durable;
pub mod error;
pub mod metrics;
pub mod namespaces;
pub mod pg;
pub mod service;
pub mod validate;
pub mod writer;

use std::{future::Future, sync::Arc};

use proto::store::v1::store_service_server::StoreServiceServer;
use tokio::net::TcpListener;
use tonic::transport::ServerTlsConfig;

pub use crate::config::Config;
use crate::{
    backend::Backend,
    config::BackendKind,
    db::Db,
    pg::PgStore,
    service::StoreApi,
    writer::{Writer, WriterGauge, WriterThread},
};

/// How long store-svc may take at start-up to reach the database and create its table.
const POSTGRES_STARTUP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// The full name of the store service, as health checks and reflection know it.
pub const SERVICE_NAME: &str = "store.v1.StoreService";

/// Room for the other fields of a Put or Commit besides its values, when sizing the decode
/// limit (a full commit's keys alone may take 100 KiB).
const ENVELOPE_BYTES: usize = 256 * 1024;

/// An opened store, ready to serve: the database is open and the writer thread running.
pub struct StoreServer {
    /// The settings it was opened with.
    config: Config,
    /// sled with its writer, or PostgreSQL.
    backend: Backend,
    /// The sled writer, joined after the drain for the final flush (`None` with PostgreSQL).
    writer_thread: Option<WriterThread>,
    /// TLS on the gRPC port, checked at open (`None`: plaintext).
    tls: Option<ServerTlsConfig>,
}

impl StoreServer {
    /// Reads the TLS files, opens the database in `config.data_dir` with the trees of the
    /// configured namespaces and starts the writer; on PostgreSQL, connects, creates the table
    /// when missing and checks the database's settings instead.
    /// Fails with a message naming the file when a TLS file is missing or malformed (the
    /// error is then a [`kit::tls::TlsError`]), and naming the directory when sled cannot open
    /// it (missing permissions, held by another store-svc).
    pub async fn open(config: Config) -> anyhow::Result<Self> {
        // Before the database: a bad certificate must not even take sled's lock.
        let tls = config.server_tls()?;
        let (backend, writer_thread) = match config.backend {
            BackendKind::Sled => {
                let db = Db::open(&config.data_dir, config.namespaces.clone()).map_err(|e| {
                    anyhow::anyhow!(
                        "cannot open the database in {}: {e}",
                        config.data_dir.display()
                    )
                })?;
                let db = Arc::new(db);
                let (writer, writer_thread) = Writer::start(
                    db.clone(),
                    config.queue_size as usize,
                    config.max_batch as usize,
                );
                (Backend::Sled { db, writer }, Some(writer_thread))
            }
            BackendKind::Postgres => {
                let url = config
                    .postgres_url
                    .as_deref()
                    .ok_or_else(|| anyhow::anyhow!("--backend postgres needs --postgres-url"))?;
                let pg = PgStore::new(
                    url,
                    config.postgres_pool_size as usize,
                    config.queue_size as usize,
                )?;
                // Reach the database and create the table before the address is announced,
                // as sled opens its files: a store that says where it listens is ready.
                tokio::time::timeout(
                    POSTGRES_STARTUP_TIMEOUT,
                    pg.prepare(POSTGRES_STARTUP_TIMEOUT, &config.namespaces),
                )
                .await
                .map_err(|_| {
                    anyhow::anyhow!(
                        "the database did not answer within {POSTGRES_STARTUP_TIMEOUT:?}"
                    )
                })??;
                (Backend::Postgres(Arc::new(pg)), None)
            }
        };
        Ok(Self {
            config,
            backend,
            writer_thread,
            tls,
        })
    }

    /// Serves on `listener` until `shutdown` resolves, then drains: health NOT_SERVING, stop
    /// accepting, finish in-flight requests, final flush, return. Bounded by the grace period.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send,
    ) -> anyhow::Result<()> {
        let Self {
            config,
            backend,
            writer_thread,
            tls,
        } = self;
        let gauge = match &backend {
            Backend::Sled { writer, .. } => writer.gauge(),
            Backend::Postgres(pg) => {
                let (permits, capacity) = pg.queue_gauge();
                WriterGauge::of_permits(pg.stats().clone(), permits, capacity)
            }
        };
        let pg = match &backend {
            Backend::Postgres(pg) => Some(pg.clone()),
            Backend::Sled { .. } => None,
        };
        let max_value = config.max_value_bytes as usize;
        let api = StoreApi::new(
            backend,
            config.namespaces.clone(),
            max_value,
            config.default_deadline,
        );
        // A value up to twice the limit still decodes, so that it gets our precise
        // INVALID_ARGUMENT naming `value` rather than the transport's generic size error; a
        // commit may carry two values' worth.
        let decode_limit = (2 * max_value + ENVELOPE_BYTES).max(4 * 1024 * 1024);
        let store = StoreServiceServer::new(api).max_decoding_message_size(decode_limit);

        let kit::grpc::Base {
            routes,
            health,
            health_only,
        } = kit::grpc::base_routes(&[proto::FILE_DESCRIPTOR_SET], &[SERVICE_NAME])?;
        let _health_port = kit::grpc::spawn_health_port(config.health_listen, health_only).await?;
        health
            .set_service_status(SERVICE_NAME, tonic_health::ServingStatus::Serving)
            .await;
        let routes = routes.add_service(store);

        let connections = kit::conn::Connections::new(config.connection_limits().within_fd_limit());
        let mut registry = prometheus_client::registry::Registry::default();
        let rpc_metrics =
            kit::metrics::RpcMetrics::register(&mut registry, &[proto::FILE_DESCRIPTOR_SET]);
        registry.register_collector(Box::new(metrics::StoreMetrics::new(
            gauge,
            connections.clone(),
            pg.as_ref().map(Arc::downgrade),
        )));
        let _metrics = kit::metrics::spawn(config.metrics_listen, Arc::new(registry)).await?;

        let addr = listener.local_addr()?;
        if kit::tls::open_to_anyone(addr, config.tls_client_ca.is_some()) {
            tracing::warn!(
                %addr,
                "listening beyond loopback without --tls-client-ca: any client that can reach \
                 this port can read and write every record; require client certificates \
                 (--tls-client-ca) or restrict who can connect"
            );
        }
        tracing::info!(
            %addr,
            tls = tls.is_some(),
            mutual_tls = config.tls_client_ca.is_some(),
            backend = ?config.backend,
            data_dir = %config.data_dir.display(),
            namespaces = %config.namespaces,
            "store-svc serving"
        );
        let grace = config.grace_period;
        let options = kit::grpc::ServeOptions {
            service_names: &[SERVICE_NAME],
            error_domain: error::ERROR_DOMAIN,
            rpc_metrics,
            default_deadline: config.default_deadline,
            grace,
            tls,
            connections,
            max_concurrent_streams: config.max_concurrent_streams,
            keepalive_interval: config.keepalive_interval,
            forward: Default::default(),
        };
        // One grace period covers the whole drain: the writer's final flush gets what the
        // gRPC drain left of it, not a second one.
        let signalled = Arc::new(std::sync::OnceLock::new());
        let shutdown = {
            let signalled = signalled.clone();
            async move {
                shutdown.await;
                let _ = signalled.set(tokio::time::Instant::now());
            }
        };
        let served = kit::grpc::serve(routes, listener, health, &options, shutdown).await;
        let cutoff = signalled
            .get()
            .copied()
            .unwrap_or_else(tokio::time::Instant::now)
            + grace;
        // The router (and with it every queue sender) is gone: the writer drains and flushes.
        if let Some(writer_thread) = writer_thread
            && tokio::time::timeout_at(cutoff, writer_thread.join())
                .await
                .is_err()
        {
            tracing::error!("the writer did not finish within the grace period");
        }
        if let Some(pg) = pg {
            pg.close();
        }
        served?;
        tracing::info!("store-svc stopped");
        Ok(())
    }
}

/// Opens the store and serves it on `listener` until `shutdown` resolves (see [`StoreServer`]).
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    StoreServer::open(config)
        .await?
        .serve(listener, shutdown)
        .await
}
