//! `cargo run -p tests --bin devcerts -- --out certs`: writes a development CA and the
//! certificates for mutual TLS between session-svc and store-svc (and TLS on session-svc's own
//! port) into a directory, as PEM files. Every server certificate names `localhost` and
//! `127.0.0.1`; `--store-name` and `--session-name` add the names clients dial in a cluster.
//!
//! For development and tests only: the CA's key is not kept, so rotate by generating again.

use std::{path::PathBuf, process::ExitCode};

use clap::Parser;
use tests::tls::{
    CA, DevCertNames, DevCerts, SESSION_CERT, SESSION_CLIENT_CERT, SESSION_CLIENT_KEY, SESSION_KEY,
    STORE_CERT, STORE_KEY,
};

/// Writes a development CA and the services' certificates.
#[derive(Debug, Parser)]
#[command(name = "devcerts", about)]
struct Args {
    /// Directory to write the PEM files into (created if missing; files are replaced).
    #[arg(long, default_value = "certs")]
    out: PathBuf,

    /// Another name (DNS or IP) for store-svc's certificate, e.g. its Kubernetes service
    /// name `store-svc-0.store-svc`; repeat for more.
    #[arg(long = "store-name")]
    store_names: Vec<String>,

    /// Another name for session-svc's server certificate; repeat for more.
    #[arg(long = "session-name")]
    session_names: Vec<String>,

    /// Days until the certificates expire.
    #[arg(long, default_value_t = 365, value_parser = clap::value_parser!(u64).range(1..=3650))]
    days: u64,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let names = DevCertNames {
        store: args.store_names,
        session: args.session_names,
        days: args.days,
    };
    match DevCerts::write(&args.out, &names) {
        Ok(certs) => {
            let dir = certs.dir().display();
            println!("wrote into {dir}:");
            for (file, what) in [
                (
                    CA,
                    "the CA: trusted by clients, and store-svc's --tls-client-ca",
                ),
                (STORE_CERT, "store-svc --tls-cert"),
                (STORE_KEY, "store-svc --tls-key"),
                (SESSION_CLIENT_CERT, "session-svc --store-tls-cert"),
                (SESSION_CLIENT_KEY, "session-svc --store-tls-key"),
                (SESSION_CERT, "session-svc --tls-cert (its own port)"),
                (SESSION_KEY, "session-svc --tls-key"),
            ] {
                println!("  {file:<24} {what}");
            }
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("devcerts: {error:#}");
            ExitCode::FAILURE
        }
    }
}
