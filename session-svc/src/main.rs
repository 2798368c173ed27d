//! The session-svc binary: read the configuration, install logging, build the runtime, bind,
//! say where it listens, serve until SIGTERM or SIGINT.

use std::process::ExitCode;

use clap::Parser;
use session_svc::{SessionServer, config::Config};
use store_svc::kit;

/// Exit code for a bad configuration (EX_USAGE), so orchestrators can tell it from a crash.
const EX_USAGE: u8 = 64;

#[tokio::main]
async fn main() -> ExitCode {
    let config = match Config::try_parse() {
        Ok(config) => config,
        Err(error) if !error.use_stderr() => {
            let _ = error.print(); // --help or --version
            return ExitCode::SUCCESS;
        }
        Err(error) => {
            let _ = error.print();
            return ExitCode::from(EX_USAGE);
        }
    };
    kit::telemetry::init(config.log_format);
    let listen = config.listen;
    let server = match SessionServer::new(config) {
        Ok(server) => server,
        Err(error) => {
            tracing::error!("{error:#}");
            return ExitCode::from(EX_USAGE);
        }
    };
    let listener = match tokio::net::TcpListener::bind(listen).await {
        Ok(listener) => listener,
        Err(error) => {
            tracing::error!(addr = %listen, %error, "cannot listen");
            return ExitCode::from(EX_USAGE);
        }
    };
    let shutdown = match kit::shutdown::signal_received() {
        Ok(shutdown) => shutdown,
        Err(error) => {
            tracing::error!(%error, "cannot install the signal handlers");
            return ExitCode::FAILURE;
        }
    };
    match listener.local_addr() {
        // Scripts and tests read this line to learn the port when --listen ends in :0.
        Ok(addr) => println!("listening on {addr}"),
        Err(error) => tracing::warn!(%error, "cannot read the bound address"),
    }
    match server.serve(listener, shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            ExitCode::FAILURE
        }
    }
}
