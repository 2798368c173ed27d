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
    kit::telemetry::init(config.log_format);
    let listen = config.listen;
    let server = match StoreServer::open(config) {
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
    cli::exit_code(server.serve(listener, shutdown).await)
}
