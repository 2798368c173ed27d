//! store-svc as a child process: its flags, its data directory, its client.

use std::{
    ffi::OsString,
    ops::{Deref, DerefMut},
    path::{Path, PathBuf},
};

use anyhow::Context;
use proto::store::v1::store_service_client::StoreServiceClient;
use tempfile::TempDir;
use tonic::transport::Channel;

use crate::process::{ServiceCommand, ServiceProcess, locate_binary};

/// The binary's name in `target/<profile>/`.
pub const STORE_BINARY: &str = "store-svc";

/// Set this to run a store-svc binary from somewhere else.
pub const STORE_BINARY_ENV: &str = "STORE_SVC_BIN";

/// The store API client every test and tool uses.
pub type StoreClient = StoreServiceClient<Channel>;

/// The namespaces the store tests and tools write, served by every store the harness starts
/// besides the server's default ones (session-svc's): store-svc serves only what it is
/// configured with, and these tests predate that rule.
pub const TEST_NAMESPACES: &[&str] = &[
    "api",
    "backpressure",
    "bad-input",
    "batch",
    "carts",
    "cas",
    "commit-a",
    "commit-b",
    "deadlines",
    "durability",
    "grpcurl",
    "iso-a",
    "iso-b",
    "iso-one",
    "loadgen",
    "loadgen-events",
    "malformed",
    "never-written",
    "pair-a",
    "pair-b",
    "pair-c",
    "pair-one",
    "power-loss",
    "shutdown",
    "tenant-a",
    "tenant_b",
    "tls-test",
    "todos",
];

/// `--namespaces` for a store that serves store-svc's default namespaces plus `extra`.
pub fn namespaces_with(extra: &[&str]) -> String {
    let mut list = store_svc::namespaces::DEFAULT_NAMESPACES.to_owned();
    for namespace in extra {
        list.push(',');
        list.push_str(namespace);
    }
    list
}

/// Which namespaces a store the harness starts serves.
#[derive(Clone, Debug, Default)]
enum Served {
    /// The server's defaults and [`TEST_NAMESPACES`].
    #[default]
    WithTestNamespaces,
    /// The server's defaults alone: no `--namespaces` flag, as a deployment runs it.
    ServerDefault,
    /// Exactly this `--namespaces` value.
    Exactly(String),
}

/// How to start one store-svc. Unset settings keep the server's defaults.
#[derive(Clone, Debug, Default)]
pub struct StoreOptions {
    /// Reuse this data directory (to restart on the same data); a fresh temp dir otherwise.
    data_dir: Option<PathBuf>,
    /// `--queue-size`: how many writes may wait for the writer.
    queue_size: Option<usize>,
    /// `--max-batch`: writes per group-commit flush; 1 flushes once per write.
    max_batch: Option<usize>,
    /// `--max-value-bytes`: the largest value a Put may carry.
    max_value_bytes: Option<usize>,
    /// `--default-deadline`: the deadline of requests that carry none (`250ms`, `5s`, `1m`).
    default_deadline: Option<String>,
    /// `--grace-period`: how long a SIGTERMed server may drain.
    grace_period: Option<String>,
    /// `--namespaces`: what the store serves.
    namespaces: Served,
    /// Anything else, passed through as is.
    extra_args: Vec<OsString>,
    /// `--backend postgres --postgres-url URL`; `None`: sled, unless [`TEST_BACKEND_ENV`] says
    /// `postgres` (then a database on the shared test server, see [`crate::postgres`]).
    postgres_url: Option<String>,
}

/// Set to `postgres` to run every store the harness starts on the PostgreSQL backend, each on
/// its own database of one throwaway server per test process: the conformance run
/// (`STORE_TEST_BACKEND=postgres cargo test -p tests --test store_api ...`).
pub const TEST_BACKEND_ENV: &str = "STORE_TEST_BACKEND";

/// True when [`TEST_BACKEND_ENV`] asks for PostgreSQL.
pub fn postgres_requested() -> bool {
    std::env::var(TEST_BACKEND_ENV).is_ok_and(|v| v == "postgres")
}

impl StoreOptions {
    /// The server's defaults on a fresh temp data directory, serving [`TEST_NAMESPACES`] too.
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs on `dir` instead of a fresh temp dir; the caller keeps it alive across restarts.
    pub fn data_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.data_dir = Some(dir.into());
        self
    }

    /// Sets `--queue-size`.
    pub fn queue_size(mut self, size: usize) -> Self {
        self.queue_size = Some(size);
        self
    }

    /// Sets `--max-batch`.
    pub fn max_batch(mut self, writes: usize) -> Self {
        self.max_batch = Some(writes);
        self
    }

    /// Sets `--max-value-bytes`.
    pub fn max_value_bytes(mut self, bytes: usize) -> Self {
        self.max_value_bytes = Some(bytes);
        self
    }

    /// Sets `--default-deadline` (e.g. `"250ms"`).
    pub fn default_deadline(mut self, deadline: impl Into<String>) -> Self {
        self.default_deadline = Some(deadline.into());
        self
    }

    /// Sets `--grace-period` (e.g. `"10s"`).
    pub fn grace_period(mut self, period: impl Into<String>) -> Self {
        self.grace_period = Some(period.into());
        self
    }

    /// Sets `--tls-cert` and `--tls-key`: the port speaks TLS only.
    pub fn tls(self, cert: impl Into<OsString>, key: impl Into<OsString>) -> Self {
        self.arg("--tls-cert").arg(cert).arg("--tls-key").arg(key)
    }

    /// Sets `--tls-client-ca`: every client must present a certificate signed by this CA.
    pub fn tls_client_ca(self, ca: impl Into<OsString>) -> Self {
        self.arg("--tls-client-ca").arg(ca)
    }

    /// Sets `--namespaces` to exactly `namespaces` (no defaults, no test namespaces).
    pub fn namespaces(mut self, namespaces: &[&str]) -> Self {
        self.namespaces = Served::Exactly(namespaces.join(","));
        self
    }

    /// Passes no `--namespaces`: the store serves its defaults (session-svc's) and nothing else.
    pub fn default_namespaces(mut self) -> Self {
        self.namespaces = Served::ServerDefault;
        self
    }

    /// Runs on `--backend postgres` against the database at `url`.
    pub fn postgres(mut self, url: impl Into<String>) -> Self {
        self.postgres_url = Some(url.into());
        self
    }

    /// Passes one more flag or value through unchanged.
    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.extra_args.push(arg.into());
        self
    }

    /// The command line for `program` on `data_dir`.
    fn command(&self, program: PathBuf, data_dir: &Path) -> ServiceCommand {
        let mut command = ServiceCommand::new(program)
            // Every setting is also a STORE_* variable; ours must be the only ones in effect.
            .clear_env_prefix("STORE_")
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--data-dir")
            .arg(data_dir);
        let flags = [
            ("--queue-size", self.queue_size.map(|n| n.to_string())),
            ("--max-batch", self.max_batch.map(|n| n.to_string())),
            (
                "--max-value-bytes",
                self.max_value_bytes.map(|n| n.to_string()),
            ),
            ("--default-deadline", self.default_deadline.clone()),
            ("--grace-period", self.grace_period.clone()),
            (
                "--namespaces",
                match &self.namespaces {
                    Served::WithTestNamespaces => Some(namespaces_with(TEST_NAMESPACES)),
                    Served::ServerDefault => None,
                    Served::Exactly(list) => Some(list.clone()),
                },
            ),
        ];
        for (flag, value) in flags {
            if let Some(value) = value {
                command = command.arg(flag).arg(value);
            }
        }
        self.extra_args
            .iter()
            .fold(command, |command, arg| command.arg(arg.clone()))
    }
}

/// A running store-svc: a [`ServiceProcess`] (which it derefs to, for `kill`, `terminate`,
/// `wait`, `addr`, ...) plus its data directory.
#[derive(Debug)]
pub struct StoreProcess {
    /// The child; dropped (killed) before the data directory below.
    process: ServiceProcess,
    /// Where sled keeps its files.
    data_dir: PathBuf,
    /// Set when the directory is ours to remove; `None` when the caller passed it in.
    _owned_data_dir: Option<TempDir>,
}

impl StoreProcess {
    /// Starts store-svc on `127.0.0.1:0` and waits until it listens.
    pub async fn spawn(options: StoreOptions) -> anyhow::Result<Self> {
        let program = locate_binary(STORE_BINARY, STORE_BINARY_ENV)?;
        let (data_dir, owned) = match &options.data_dir {
            Some(dir) => (dir.clone(), None),
            None => {
                let dir = tempfile::Builder::new()
                    .prefix("store-data-")
                    .tempdir()
                    .context("creating a data directory")?;
                (dir.path().to_path_buf(), Some(dir))
            }
        };
        let mut command = options.command(program, &data_dir);
        let postgres_url = match &options.postgres_url {
            Some(url) => Some(url.clone()),
            None if postgres_requested() => {
                let dir = data_dir.clone();
                Some(
                    tokio::task::spawn_blocking(move || {
                        crate::postgres::shared_server()?
                            .create_database(&crate::postgres::database_for(&dir))
                    })
                    .await??,
                )
            }
            None => None,
        };
        if let Some(url) = postgres_url {
            command = command
                .arg("--backend")
                .arg("postgres")
                .arg("--postgres-url")
                .arg(url);
        }
        let process = ServiceProcess::spawn(&command).await?;
        Ok(Self {
            process,
            data_dir,
            _owned_data_dir: owned,
        })
    }

    /// A client on a new connection; clone it to share that connection between tasks.
    pub async fn client(&self) -> Result<StoreClient, tonic::transport::Error> {
        Ok(StoreServiceClient::new(self.process.channel().await?))
    }

    /// Where this store keeps its data.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The bare process, for a test that restarts the store itself on a data directory it
    /// passed in ([`StoreOptions::data_dir`]); a temp data directory of ours is removed here.
    pub fn into_process(self) -> ServiceProcess {
        self.process
    }
}

impl Deref for StoreProcess {
    type Target = ServiceProcess;

    fn deref(&self) -> &ServiceProcess {
        &self.process
    }
}

impl DerefMut for StoreProcess {
    fn deref_mut(&mut self) -> &mut ServiceProcess {
        &mut self.process
    }
}

/// Starts store-svc with its defaults on a fresh temp dir; panics (failing the test) if it
/// cannot, with the server's stderr in the message.
pub async fn spawn_store() -> StoreProcess {
    spawn_store_with(StoreOptions::new()).await
}

/// Starts store-svc with `options`; panics (failing the test) if it cannot.
pub async fn spawn_store_with(options: StoreOptions) -> StoreProcess {
    StoreProcess::spawn(options)
        .await
        .unwrap_or_else(|error| panic!("store-svc did not start: {error:#}"))
}

/// Starts store-svc and connects a client: the first two lines of most tests.
pub async fn spawn_store_and_client(options: StoreOptions) -> (StoreProcess, StoreClient) {
    let store = spawn_store_with(options).await;
    let client = store
        .client()
        .await
        .unwrap_or_else(|error| panic!("cannot connect to store-svc at {}: {error}", store.addr()));
    (store, client)
}
