//! The store-svc binary: read the configuration, install logging, open the database, bind,
//! say where it listens, serve until SIGTERM or SIGINT.

use std::process::ExitCode;

use kit::cli;
use store_svc::{Config, StoreServer};

#[tokio::main]
async fn main() -> ExitCode {
    let config: Config = match cli::parse() {
        Ok(config) => config,
        Err(code) => return code,
    };
    let otlp_endpoint = kit::trace::endpoint(config.otlp_endpoint.as_deref());
    let telemetry = match kit::telemetry::init_with_traces(
        config.log_format,
        otlp_endpoint.as_deref(),
        "store-svc",
    ) {
        Ok(telemetry) => telemetry,
        Err(error) => {
            eprintln!("store-svc: {error}");
            return ExitCode::from(cli::EX_USAGE);
        }
    };
    let listen = config.listen;
    let server = match StoreServer::open(config).await {
        Ok(server) => server,
        // A TLS file that cannot be used is a bad setting, like any other bad value.
        Err(error) if error.is::<kit::tls::TlsError>() => {
            tracing::error!("TLS settings (--tls-cert, --tls-key, --tls-client-ca): {error:#}");
            return ExitCode::from(cli::EX_USAGE);
        }
        Err(error) => return cli::exit_code(Err(error)),
    };
    let (listener, shutdown) = match cli::bind_and_announce(listen).await {
        Ok(bound) => bound,
        Err(code) => return code,
    };
    let served = server.serve(listener, shutdown).await;
    // After the drain: the last requests' spans are flushed, for a second at most.
    telemetry.shutdown().await;
    cli::exit_code(served)
}
