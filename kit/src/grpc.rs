//! What every gRPC server here serves besides its own API, and how it drains.

use std::{future::Future, time::Duration};

use tokio::net::TcpListener;
use tonic::{
    service::Routes,
    transport::{Server, ServerTlsConfig},
};
use tonic_health::{ServingStatus, server::HealthReporter};

use super::{
    conn::{ConnectionLimits, Connections, TrackLayer},
    deadline::DeadlineLayer,
    error_info::StatusLayer,
    metrics::RpcMetrics,
    trace::TraceLayer,
    wire::PreEncodedLayer,
};

/// What [`base_routes`] builds.
pub struct Base {
    /// Health and reflection, to which the server adds its own services.
    pub routes: Routes,
    /// Sets each service's health (the overall service `""` starts SERVING).
    pub health: HealthReporter,
    /// The same health service alone, for a plaintext probe port ([`spawn_health_port`]).
    pub health_only: Routes,
}

/// Health (`grpc.health.v1`) and reflection (`grpc.reflection.v1` and `v1alpha`, so grpcurl of
/// any age can list and call) over the given encoded descriptor sets and `google/rpc/*.proto`
/// (so a client resolves the error details, `google.rpc.BadRequest` and the rest), listing only
/// `service_names` and the health service: the descriptor sets describe both servers, and a
/// client must not be shown a service this server does not run. Callers add their own
/// services' health status.
pub fn base_routes(
    descriptor_sets: &[&'static [u8]],
    service_names: &[&str],
) -> Result<Base, tonic_reflection::server::Error> {
    let reflection = || {
        let builder = descriptor_sets.iter().fold(
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
                .with_service_name("grpc.health.v1.Health"),
            |builder, set| builder.register_encoded_file_descriptor_set(set),
        );
        service_names
            .iter()
            .fold(builder, |builder, name| builder.with_service_name(*name))
    };
    let (health, service) = tonic_health::server::health_reporter();
    let health_only = Routes::new(service.clone());
    let routes = Routes::new(service)
        .add_service(reflection().build_v1()?)
        .add_service(reflection().build_v1alpha()?);
    Ok(Base {
        routes,
        health,
        health_only,
    })
}

/// Stops the health port when dropped.
pub struct HealthPort(Option<tokio::task::JoinHandle<()>>);

impl Drop for HealthPort {
    fn drop(&mut self) {
        if let Some(task) = self.0.take() {
            task.abort();
        }
    }
}

/// Connections the health port serves at once: probes, not clients.
const HEALTH_PORT_CONNECTIONS: usize = 16;

/// Serves `health_only` ([`Base::health_only`]) in plaintext on `addr`, when set, until the
/// returned handle is dropped: for probes that cannot speak the main port's TLS (the
/// kubelet's gRPC probe presents no client certificate). It answers the same statuses as the
/// main port, NOT_SERVING through the drain included, and nothing but health. Its connections
/// are bounded like the main port's: a few at once, closed when silent or idle.
pub async fn spawn_health_port(
    addr: Option<std::net::SocketAddr>,
    health_only: Routes,
) -> anyhow::Result<HealthPort> {
    let Some(addr) = addr else {
        return Ok(HealthPort(None));
    };
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen for health checks on {addr}: {e}"))?;
    let connections = Connections::new(ConnectionLimits {
        max_connections: HEALTH_PORT_CONNECTIONS,
        first_request_timeout: Duration::from_secs(5),
        idle_timeout: Duration::from_secs(60),
    });
    let incoming = connections.incoming(listener, TCP_KEEPALIVE);
    let task = tokio::spawn(async move {
        let served = Server::builder()
            .layer(TrackLayer)
            .add_routes(health_only)
            .serve_with_incoming(incoming)
            .await;
        if let Err(error) = served {
            tracing::warn!(%error, "the health port stopped");
        }
    });
    Ok(HealthPort(Some(task)))
}

/// How a server is exposed: its names, deadlines, drain, and transport security.
#[derive(Clone)]
pub struct ServeOptions {
    /// The services it runs (health turns them all NOT_SERVING on drain).
    pub service_names: &'static [&'static str],
    /// The `google.rpc.ErrorInfo` domain of this server's errors ([`StatusLayer`]).
    pub error_domain: &'static str,
    /// Where every RPC is counted and timed ([`RpcMetrics::register`]).
    pub rpc_metrics: RpcMetrics,
    /// Deadline of requests that carry no `grpc-timeout`.
    pub default_deadline: Duration,
    /// How long the drain may take from the shutdown signal.
    pub grace: Duration,
    /// TLS on the port (`None`: plaintext).
    pub tls: Option<ServerTlsConfig>,
    /// The connections it serves and their bounds ([`Connections::new`]); the caller keeps
    /// a clone for its metrics.
    pub connections: Connections,
    /// HTTP/2 streams (requests, watch streams) one connection may have open at once.
    pub max_concurrent_streams: u32,
    /// How often an HTTP/2 ping checks that a quiet client is still there.
    pub keepalive_interval: Duration,
    /// Calls placed on other replicas by their first message ([`crate::forward`]); the
    /// default forwards nothing.
    pub forward: crate::forward::ForwardLayer,
}

/// How long a keepalive ping may go unanswered before the connection is closed.
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a drain leaves connections open after their last request ended, so that its final
/// frames reach the client before the connection is closed.
const DRAIN_LINGER: Duration = Duration::from_millis(250);

/// How often the kernel probes a TCP connection that has gone quiet, below HTTP/2 pings.
const TCP_KEEPALIVE: Duration = Duration::from_secs(60);

/// Serves `routes` on `listener` until `shutdown` resolves, then drains: health turns
/// NOT_SERVING (for every service, `""` included), the listener closes, in-flight requests
/// finish, and then every connection still open (idle, or silent since it connected) is
/// closed at once. Whatever is still in flight `grace` after the signal is cut off.
pub async fn serve(
    routes: Routes,
    listener: TcpListener,
    health: HealthReporter,
    options: &ServeOptions,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    let grace = options.grace;
    let (draining_tx, draining_rx) = tokio::sync::oneshot::channel::<()>();
    let names = options.service_names;
    let signal = async move {
        shutdown.await;
        health
            .set_service_status("", ServingStatus::NotServing)
            .await;
        for name in names {
            health
                .set_service_status(*name, ServingStatus::NotServing)
                .await;
        }
        tracing::info!(grace = ?grace, "draining: health NOT_SERVING, listener closed");
        let _ = draining_tx.send(());
    };
    let connections = options.connections.clone();
    let incoming = connections.incoming(listener, TCP_KEEPALIVE);
    let mut builder = Server::builder();
    if let Some(tls) = options.tls.clone() {
        builder = builder.tls_config(tls)?;
    }
    let server = builder
        .max_concurrent_streams(Some(options.max_concurrent_streams))
        .http2_keepalive_interval(Some(options.keepalive_interval))
        .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT.min(options.keepalive_interval)))
        .layer(TrackLayer)
        // Outside the layers that may answer themselves, so their statuses are on the span too.
        .layer(TraceLayer)
        .layer(StatusLayer::new(
            options.error_domain,
            options.rpc_metrics.clone(),
        ))
        .layer(DeadlineLayer::new(options.default_deadline))
        .layer(PreEncodedLayer)
        // Innermost: a forwarded call is answered by its owner, deadline and all.
        .layer(options.forward.clone())
        .add_routes(routes)
        .serve_with_incoming_shutdown(incoming, signal);
    let drain = async move {
        if draining_rx.await.is_err() {
            std::future::pending::<()>().await;
        }
        let cutoff = tokio::time::Instant::now() + grace;
        if tokio::time::timeout_at(cutoff, connections.quiet())
            .await
            .is_err()
        {
            tracing::warn!(
                in_flight = connections.in_flight(),
                "grace period over: closing the connections still open"
            );
        } else {
            // The last responses' final frames (a stream's trailers) may still be on their way
            // to the socket: closing now could cut them off. Connections the clients close
            // after the GOAWAY go by themselves; the rest are closed after a short linger.
            let linger = cutoff.min(tokio::time::Instant::now() + DRAIN_LINGER);
            let _ = tokio::time::timeout_at(linger, connections.all_closed()).await;
            tracing::info!(
                open = connections.open(),
                "no request in flight: closing the idle connections"
            );
        }
        connections.close_all();
        // Closed connections end their tasks and the server returns; this is the backstop.
        tokio::time::sleep_until(
            cutoff.max(tokio::time::Instant::now() + Duration::from_millis(100)),
        )
        .await;
    };
    tokio::select! {
        result = server => result,
        () = drain => {
            tracing::warn!("connections did not close after the drain; leaving them");
            Ok(())
        }
    }
}
