//! The processes a benchmark drives: finding their binaries, starting them, connecting.

use std::net::SocketAddr;

use anyhow::Context;
use tests::{
    ServiceCommand, ServiceProcess, StoreOptions, StoreProcess, load::free_loopback_addr,
    locate_binary,
};
use tonic::transport::Channel;

use crate::{BUILD_FIRST, redis_server::RedisServer};

/// session-svc's binary in `target/<profile>/`, and the variable that overrides where it is.
pub const SESSION_BINARY: (&str, &str) = ("session-svc", "SESSION_SVC_BIN");

/// The bare tonic server `session-get` compares session-svc with.
pub const ECHO_BINARY: (&str, &str) = ("echo_server", "ECHO_SERVER_BIN");

/// The stateless CartService over Redis that the session benchmarks compare session-svc with.
pub const REDIS_CART_BINARY: (&str, &str) = ("redis_cart", "REDIS_CART_BIN");

/// Fails early, with the fix, when a binary the benchmark starts has not been built.
pub fn require_binaries(binaries: &[(&str, &str)]) -> anyhow::Result<()> {
    for (name, env) in binaries {
        locate_binary(name, env)
            .with_context(|| format!("{name} release binary missing: run `{BUILD_FIRST}` first"))?;
    }
    Ok(())
}

/// Starts session-svc in front of `store`: its defaults (no inherited `SESSION_*` setting),
/// but `--log-limit` when `log_limit` is given, and then `extra_args`.
pub async fn spawn_session_svc(
    store: &StoreProcess,
    log_limit: Option<u32>,
    extra_args: &[String],
) -> anyhow::Result<ServiceProcess> {
    let program = locate_binary(SESSION_BINARY.0, SESSION_BINARY.1)?;
    let command = ServiceCommand::new(program)
        .clear_env_prefix("SESSION_")
        .arg("--listen")
        .arg("127.0.0.1:0")
        .arg("--store-addr")
        .arg(store.endpoint());
    let command = match log_limit {
        Some(entries) => command.arg("--log-limit").arg(entries.to_string()),
        None => command,
    };
    let command = extra_args
        .iter()
        .fold(command, |command, arg| command.arg(arg));
    ServiceProcess::spawn(&command)
        .await
        .context("starting session-svc")
}

/// Starts `redis_cart` in front of `redis`, keeping `log_limit` events per cart (its default,
/// session-svc's, when not given).
pub async fn spawn_redis_cart(
    redis: &RedisServer,
    log_limit: Option<u32>,
) -> anyhow::Result<ServiceProcess> {
    let program = locate_binary(REDIS_CART_BINARY.0, REDIS_CART_BINARY.1)?;
    let command = ServiceCommand::new(program)
        .arg("--listen")
        .arg("127.0.0.1:0")
        .arg("--redis")
        .arg(redis.url());
    let command = match log_limit {
        Some(entries) => command.arg("--log-limit").arg(entries.to_string()),
        None => command,
    };
    ServiceProcess::spawn(&command)
        .await
        .context("starting redis_cart")
}

/// `count` independent HTTP/2 connections to `service`.
pub async fn connect(service: &ServiceProcess, count: u32) -> anyhow::Result<Vec<Channel>> {
    let mut channels = Vec::new();
    for _ in 0..count {
        let channel = service
            .channel()
            .await
            .with_context(|| format!("connecting to {} at {}", service.label(), service.addr()))?;
        channels.push(channel);
    }
    Ok(channels)
}

/// store-svc on its defaults with `/metrics` on a free loopback port, and that port.
pub async fn spawn_metered_store() -> anyhow::Result<(StoreProcess, SocketAddr)> {
    let store_metrics = free_loopback_addr()?;
    let store = StoreProcess::spawn(
        StoreOptions::new()
            .arg("--metrics-listen")
            .arg(store_metrics.to_string()),
    )
    .await
    .context("starting store-svc")?;
    Ok((store, store_metrics))
}

/// A fresh store-svc (defaults) and a session-svc in front of it ([`spawn_session_svc`] with
/// `log_limit` and `extra_args`), each with a `/metrics` endpoint; the endpoints come back
/// store's first.
pub async fn spawn_metered_stack(
    log_limit: Option<u32>,
    extra_args: &[String],
) -> anyhow::Result<(StoreProcess, ServiceProcess, [SocketAddr; 2])> {
    let (store, store_metrics) = spawn_metered_store().await?;
    let session_metrics = free_loopback_addr()?;
    let mut args = vec![format!("--metrics-listen={session_metrics}")];
    args.extend_from_slice(extra_args);
    let session = spawn_session_svc(&store, log_limit, &args).await?;
    Ok((store, session, [store_metrics, session_metrics]))
}

/// Starts session-svc in front of `store` as one replica of a cluster: listening on and
/// advertising `listen`, with `--peers` naming every one of `peers` (`listen` among them), its
/// defaults otherwise (no inherited `SESSION_*` setting), and then `extra_args`.
pub async fn spawn_session_replica(
    store: &StoreProcess,
    listen: SocketAddr,
    peers: &[SocketAddr],
    extra_args: &[String],
) -> anyhow::Result<ServiceProcess> {
    let program = locate_binary(SESSION_BINARY.0, SESSION_BINARY.1)?;
    let peers: Vec<String> = peers.iter().map(ToString::to_string).collect();
    let command = ServiceCommand::new(program)
        .clear_env_prefix("SESSION_")
        .arg("--listen")
        .arg(listen.to_string())
        .arg("--advertise")
        .arg(listen.to_string())
        .arg("--peers")
        .arg(peers.join(","))
        .arg("--store-addr")
        .arg(store.endpoint());
    let command = extra_args
        .iter()
        .fold(command, |command, arg| command.arg(arg));
    ServiceProcess::spawn(&command)
        .await
        .with_context(|| format!("starting session-svc replica {listen}"))
}
