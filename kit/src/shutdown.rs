//! The shutdown signal: SIGTERM (Kubernetes) or SIGINT (Ctrl-C), whichever comes first.

use std::future::Future;

use tokio::signal::unix::{SignalKind, signal};

/// Installs the SIGTERM and SIGINT handlers now and returns a future that resolves when either
/// signal arrives. Call it before announcing readiness: a signal that arrives before the
/// handlers exist takes the default action and kills the process without a drain.
pub fn signal_received() -> std::io::Result<impl Future<Output = ()> + Send> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        tracing::info!(signal = name, "shutdown requested");
    })
}
