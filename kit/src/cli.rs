//! What each binary's `main` does before serving: parse the configuration (exit 64 with a
//! clear message when it is bad), bind, install the signal handlers, announce readiness.

use std::{future::Future, net::SocketAddr, process::ExitCode};

use clap::Parser;
use tokio::net::TcpListener;

/// Exit code for a bad configuration (EX_USAGE), so orchestrators can tell it from a crash.
pub const EX_USAGE: u8 = 64;

/// The configuration from flags and environment, or the exit code to leave with: 0 after
/// `--help`/`--version`, 64 after a bad value (clap has printed why).
pub fn parse<C: Parser>() -> Result<C, ExitCode> {
    C::try_parse().map_err(|error| {
        let _ = error.print();
        if error.use_stderr() {
            ExitCode::from(EX_USAGE)
        } else {
            ExitCode::SUCCESS
        }
    })
}

/// Binds `listen`, installs the SIGTERM/SIGINT handlers, then prints `listening on ADDR` on
/// stdout: the one line scripts and tests wait for (it names the real port when `listen`
/// ends in `:0`). Handlers come first, so a signal right after the line drains properly.
pub async fn bind_and_announce(
    listen: SocketAddr,
) -> Result<(TcpListener, impl Future<Output = ()> + Send), ExitCode> {
    let listener = TcpListener::bind(listen).await.map_err(|error| {
        tracing::error!(addr = %listen, %error, "cannot listen");
        ExitCode::from(EX_USAGE)
    })?;
    let shutdown = super::shutdown::signal_received().map_err(|error| {
        tracing::error!(%error, "cannot install the signal handlers");
        ExitCode::FAILURE
    })?;
    let addr = listener.local_addr().map_err(|error| {
        tracing::error!(%error, "cannot read the bound address");
        ExitCode::FAILURE
    })?;
    println!("listening on {addr}");
    Ok((listener, shutdown))
}

/// The exit code of a server that stopped with `result`.
pub fn exit_code(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            ExitCode::FAILURE
        }
    }
}
