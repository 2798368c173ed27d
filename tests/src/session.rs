//! session-svc as a child process: its flags, its clients, and the store it writes through to.

use std::{
    ffi::OsString,
    net::SocketAddr,
    ops::{Deref, DerefMut},
    path::Path,
};

use anyhow::Context;
use proto::session::v1::{
    admin_service_client::AdminServiceClient, cart_service_client::CartServiceClient,
    inventory_service_client::InventoryServiceClient, job_service_client::JobServiceClient,
    todo_service_client::TodoServiceClient,
};
use tonic::{
    Request, Status,
    metadata::MetadataValue,
    service::{Interceptor, interceptor::InterceptedService},
    transport::Channel,
};

use crate::{
    process::{ServiceCommand, ServiceProcess, locate_binary},
    raw_channel::RawChannel,
    store::{STORE_BINARY, STORE_BINARY_ENV, StoreOptions, StoreProcess, spawn_store_with},
};

/// The binary's name in `target/<profile>/`.
pub const SESSION_BINARY: &str = "session-svc";

/// Set this to run a session-svc binary from somewhere else.
pub const SESSION_BINARY_ENV: &str = "SESSION_SVC_BIN";

/// The admin token every test server is started with.
pub const ADMIN_TOKEN: &str = "e2e-admin-token";

/// The discount catalog every test server is started with, so tests do not depend on the
/// server's default catalog: two percentages and one fixed amount (in minor units).
pub const TEST_DISCOUNTS: &str = "SAVE10=10%,HALFOFF=50%,FIVEOFF=500";

/// The cart API client.
pub type CartClient = CartServiceClient<Channel>;

/// The to-do API client.
pub type TodoClient = TodoServiceClient<Channel>;

/// The InventoryService client the tests use.
pub type InventoryClient = InventoryServiceClient<Channel>;

/// The JobService client.
pub type JobClient = JobServiceClient<Channel>;

/// The admin API client: every call carries the bearer token.
pub type AdminClient = AdminServiceClient<InterceptedService<Channel, AdminToken>>;

/// A cart client whose deadlines only the server enforces (see [`crate::raw_channel`]).
pub type RawCartClient = CartServiceClient<RawChannel>;

/// Adds `authorization: Bearer <token>` to every admin call.
#[derive(Clone, Debug)]
pub struct AdminToken {
    /// The header value, parsed once.
    header: MetadataValue<tonic::metadata::Ascii>,
}

impl Interceptor for AdminToken {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        request
            .metadata_mut()
            .insert("authorization", self.header.clone());
        Ok(request)
    }
}

/// How to start one session-svc. Unset settings keep the server's defaults, except the admin
/// token ([`ADMIN_TOKEN`]) and the discount catalog ([`TEST_DISCOUNTS`]).
#[derive(Clone, Debug, Default)]
pub struct SessionOptions {
    /// `(flag, value)` pairs, in the order set.
    flags: Vec<(&'static str, String)>,
    /// The open-file limit to run it under (through `prlimit`), if not inherited.
    open_file_limit: Option<u64>,
    /// The address to listen on (default `127.0.0.1:0`, a free port).
    listen: Option<SocketAddr>,
}

impl SessionOptions {
    /// The server's defaults (plus the test admin token and catalog).
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets any `flag` to `value` (replacing an earlier value): for a flag without a setter
    /// of its own, such as one newer than this harness.
    pub fn flag(mut self, flag: &'static str, value: impl ToString) -> Self {
        self.flags.retain(|(set, _)| *set != flag);
        self.flags.push((flag, value.to_string()));
        self
    }

    /// Listens on exactly `addr` (a replica whose address its peers are given in advance).
    pub fn listen(mut self, addr: SocketAddr) -> Self {
        self.listen = Some(addr);
        self
    }

    /// Sets `--mailbox-capacity`.
    pub fn mailbox_capacity(self, messages: usize) -> Self {
        self.flag("--mailbox-capacity", messages)
    }

    /// Sets `--default-deadline` (e.g. `"2s"`).
    pub fn default_deadline(self, deadline: &str) -> Self {
        self.flag("--default-deadline", deadline)
    }

    /// Sets `--cart-idle-timeout` (e.g. `"1s"`).
    pub fn cart_idle_timeout(self, timeout: &str) -> Self {
        self.flag("--cart-idle-timeout", timeout)
    }

    /// Sets `--cart-ttl` (e.g. `"2s"`).
    pub fn cart_ttl(self, ttl: &str) -> Self {
        self.flag("--cart-ttl", ttl)
    }

    /// Sets `--sweep-interval` (e.g. `"1s"`): the sweeper's rest between passes.
    pub fn sweep_interval(self, interval: &str) -> Self {
        self.flag("--sweep-interval", interval)
    }

    /// Sets `--sweep-rate`: records the sweeper looks at per second.
    pub fn sweep_rate(self, records: u32) -> Self {
        self.flag("--sweep-rate", records)
    }

    /// Sets `--archive-after` (e.g. `"1s"`; `"0s"` never archives).
    pub fn archive_after(self, age: &str) -> Self {
        self.flag("--archive-after", age)
    }

    /// Sets `--todo-archive-after` (e.g. `"1s"`; `"0s"`, the default, keeps lists).
    pub fn todo_archive_after(self, age: &str) -> Self {
        self.flag("--todo-archive-after", age)
    }

    /// Sets `--archive` (`move` or `delete`).
    pub fn archive(self, mode: &str) -> Self {
        self.flag("--archive", mode)
    }

    /// Sets `--todo-idle-timeout`.
    pub fn todo_idle_timeout(self, timeout: &str) -> Self {
        self.flag("--todo-idle-timeout", timeout)
    }

    /// Sets `--max-actors`.
    pub fn max_actors(self, actors: usize) -> Self {
        self.flag("--max-actors", actors)
    }

    /// Sets `--max-restarts`.
    pub fn max_restarts(self, restarts: u32) -> Self {
        self.flag("--max-restarts", restarts)
    }

    /// Sets `--restart-window`.
    pub fn restart_window(self, window: &str) -> Self {
        self.flag("--restart-window", window)
    }

    /// Sets `--quarantine`.
    pub fn quarantine(self, period: &str) -> Self {
        self.flag("--quarantine", period)
    }

    /// Sets `--recent-requests`.
    pub fn recent_requests(self, requests: usize) -> Self {
        self.flag("--recent-requests", requests)
    }

    /// Sets `--log-limit`.
    pub fn log_limit(self, entries: usize) -> Self {
        self.flag("--log-limit", entries)
    }

    /// Sets `--events-per-cart`.
    pub fn events_per_cart(self, events: usize) -> Self {
        self.flag("--events-per-cart", events)
    }

    /// Sets `--discounts` (replacing [`TEST_DISCOUNTS`]).
    pub fn discounts(self, catalog: &str) -> Self {
        self.flag("--discounts", catalog)
    }

    /// Sets `--store-batch-writes` (1: every write its own Put).
    pub fn store_batch_writes(self, writes: usize) -> Self {
        self.flag("--store-batch-writes", writes)
    }

    /// Sets `--metrics-listen`.
    pub fn metrics_listen(self, addr: std::net::SocketAddr) -> Self {
        self.flag("--metrics-listen", addr)
    }

    /// Sets `--max-watchers`.
    pub fn max_watchers(self, streams: usize) -> Self {
        self.flag("--max-watchers", streams)
    }

    /// Sets `--max-watchers-per-key`.
    pub fn max_watchers_per_key(self, streams: usize) -> Self {
        self.flag("--max-watchers-per-key", streams)
    }

    /// Sets `--watch-max-lifetime`.
    pub fn watch_max_lifetime(self, lifetime: &str) -> Self {
        self.flag("--watch-max-lifetime", lifetime)
    }

    /// Sets `--grace-period`.
    pub fn grace_period(self, period: &str) -> Self {
        self.flag("--grace-period", period)
    }

    /// Sets `--tls-cert` and `--tls-key`: session-svc's own port speaks TLS only.
    pub fn tls(self, cert: &Path, key: &Path) -> Self {
        self.flag("--tls-cert", cert.display())
            .flag("--tls-key", key.display())
    }

    /// Sets `--store-tls-ca`, and with `identity` `--store-tls-cert` and `--store-tls-key`:
    /// TLS (mutual with `identity`) towards a store at an `https://` endpoint.
    pub fn store_tls(self, ca: &Path, identity: Option<(&Path, &Path)>) -> Self {
        let options = self.flag("--store-tls-ca", ca.display());
        match identity {
            Some((cert, key)) => options
                .flag("--store-tls-cert", cert.display())
                .flag("--store-tls-key", key.display()),
            None => options,
        }
    }

    /// Sets `--first-request-timeout` (e.g. `"2s"`).
    pub fn first_request_timeout(self, timeout: &str) -> Self {
        self.flag("--first-request-timeout", timeout)
    }

    /// Sets `--idle-connection-timeout` (e.g. `"2s"`).
    pub fn idle_connection_timeout(self, timeout: &str) -> Self {
        self.flag("--idle-connection-timeout", timeout)
    }

    /// Sets `--max-connections`.
    pub fn max_connections(self, connections: usize) -> Self {
        self.flag("--max-connections", connections)
    }

    /// Sets `--max-concurrent-streams`.
    pub fn max_concurrent_streams(self, streams: u32) -> Self {
        self.flag("--max-concurrent-streams", streams)
    }

    /// Runs the server under an open-file limit of `files` (soft and hard), with `prlimit`.
    pub fn open_file_limit(mut self, files: u64) -> Self {
        self.open_file_limit = Some(files);
        self
    }

    /// The command line for `program` writing through to the store at `store_endpoint`.
    fn command(&self, program: &Path, store_endpoint: &str) -> ServiceCommand {
        let defaults = [
            ("--admin-token", ADMIN_TOKEN.to_owned()),
            ("--discounts", TEST_DISCOUNTS.to_owned()),
        ];
        let unset_defaults = defaults
            .into_iter()
            .filter(|(flag, _)| !self.flags.iter().any(|(set, _)| set == flag));
        let command = match self.open_file_limit {
            None => ServiceCommand::new(program),
            Some(files) => ServiceCommand::new("prlimit")
                .arg(format!("--nofile={files}:{files}"))
                .arg("--")
                .arg(program),
        };
        let command = command
            // Every setting is also a SESSION_* variable; ours must be the only ones in effect.
            .clear_env_prefix("SESSION_")
            .arg("--listen")
            .arg(
                self.listen
                    .map_or_else(|| "127.0.0.1:0".to_owned(), |a| a.to_string()),
            )
            .arg("--store-addr")
            .arg(store_endpoint);
        unset_defaults
            .chain(self.flags.iter().cloned())
            .fold(command, |command, (flag, value)| {
                command.arg(flag).arg(value)
            })
    }
}

/// A running session-svc: a [`ServiceProcess`] (which it derefs to, for `kill`, `terminate`,
/// `wait`, `addr`, `rss_bytes`, ...) plus how it was started, so it can be started again.
#[derive(Debug)]
pub struct SessionProcess {
    /// The child.
    process: ServiceProcess,
    /// The `http://ADDR` of the store it writes through to.
    store_endpoint: String,
    /// Its settings.
    options: SessionOptions,
}

impl SessionProcess {
    /// Starts session-svc on `127.0.0.1:0` against `store_endpoint` and waits until it listens.
    pub async fn spawn(store_endpoint: &str, options: SessionOptions) -> anyhow::Result<Self> {
        let program = locate_binary(SESSION_BINARY, SESSION_BINARY_ENV)?;
        let process = ServiceProcess::spawn(&options.command(&program, store_endpoint)).await?;
        Ok(Self {
            process,
            store_endpoint: store_endpoint.to_owned(),
            options,
        })
    }

    /// Starts a second session-svc with the same settings and store (after this one was
    /// killed or stopped); panics if it cannot.
    pub async fn respawn(&self) -> SessionProcess {
        spawn_session(&self.store_endpoint, self.options.clone()).await
    }

    /// A cart client on a new connection; clone it to share that connection.
    pub async fn cart(&self) -> CartClient {
        CartServiceClient::new(self.connect().await)
    }

    /// A to-do client on a new connection.
    pub async fn todo(&self) -> TodoClient {
        TodoServiceClient::new(self.connect().await)
    }

    /// An inventory client on a new connection.
    pub async fn inventory(&self) -> InventoryClient {
        InventoryServiceClient::new(self.connect().await)
    }

    /// A JobService client on a new connection.
    pub async fn jobs(&self) -> JobClient {
        JobServiceClient::new(self.connect().await)
    }

    /// An admin client (with the token) on a new connection.
    pub async fn admin(&self) -> AdminClient {
        let header = format!("Bearer {ADMIN_TOKEN}")
            .parse()
            .expect("the token is ASCII");
        AdminServiceClient::with_interceptor(self.connect().await, AdminToken { header })
    }

    /// A cart client over a bare HTTP/2 connection: a deadline's outcome is the server's own.
    pub async fn raw_cart(&self) -> RawCartClient {
        let origin = self.endpoint().parse().expect("a valid URI");
        let channel = RawChannel::connect(self.addr())
            .await
            .unwrap_or_else(|error| panic!("raw connection to session-svc: {error:#}"));
        CartServiceClient::with_origin(channel, origin)
    }

    async fn connect(&self) -> Channel {
        self.channel().await.unwrap_or_else(|error| {
            panic!(
                "cannot connect to session-svc at {}: {error}\n--- stderr ---\n{}",
                self.addr(),
                self.stderr_tail(40)
            )
        })
    }
}

impl Deref for SessionProcess {
    type Target = ServiceProcess;

    fn deref(&self) -> &ServiceProcess {
        &self.process
    }
}

impl DerefMut for SessionProcess {
    fn deref_mut(&mut self) -> &mut ServiceProcess {
        &mut self.process
    }
}

/// Starts session-svc against the store at `store_endpoint`; panics (failing the test) if it
/// cannot, with the server's stderr in the message.
pub async fn spawn_session(store_endpoint: &str, options: SessionOptions) -> SessionProcess {
    SessionProcess::spawn(store_endpoint, options)
        .await
        .unwrap_or_else(|error| panic!("session-svc did not start: {error:#}"))
}

/// A store-svc on a fresh temp dir and a session-svc writing through to it.
#[derive(Debug)]
pub struct SessionStack {
    /// session-svc; declared first so it is killed before its store.
    pub session: SessionProcess,
    /// The store behind it.
    pub store: StoreProcess,
}

/// Starts store-svc (its defaults, namespaces included: so every session test checks that
/// they are the ones session-svc needs) and session-svc with `options` on top of it.
pub async fn spawn_session_stack(options: SessionOptions) -> SessionStack {
    let store = spawn_store_with(StoreOptions::new().default_namespaces()).await;
    let session = spawn_session(&store.endpoint(), options).await;
    SessionStack { session, store }
}

/// Starts store-svc on `data_dir` listening on exactly `addr`: how a store comes back where its
/// clients expect it (StoreOptions always asks for a free port, and the flag cannot repeat).
pub async fn spawn_store_at(addr: SocketAddr, data_dir: &Path) -> ServiceProcess {
    let started = async {
        let program = locate_binary(STORE_BINARY, STORE_BINARY_ENV)?;
        let command = ServiceCommand::new(program)
            .clear_env_prefix("STORE_")
            .arg("--listen")
            .arg(addr.to_string())
            .arg("--data-dir")
            .arg(OsString::from(data_dir));
        ServiceProcess::spawn(&command).await.context("store-svc")
    };
    started
        .await
        .unwrap_or_else(|error| panic!("store-svc did not start again on {addr}: {error:#}"))
}
