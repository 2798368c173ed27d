//! TLS for both servers and for session-svc's client of the store, through rustls (tonic's
//! `tls-ring`; no OpenSSL).
//!
//! Every PEM file is read and parsed at start-up, and the whole configuration is built once
//! there too, so a missing, unreadable or malformed file stops the process with a message
//! naming it. Otherwise tonic would only parse the files when the server starts or the first
//! connection opens: after `listening on` was printed, or as a string of failed calls.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity, Server, ServerTlsConfig};

/// How long a TLS handshake may take, on either side. A peer that connects and then sends
/// nothing must not hold a half-open handshake for ever.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a TLS setting cannot be used. Each message names the file at fault.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The file cannot be read (missing, permissions).
    #[error("cannot read {}: {error}", path.display())]
    Read {
        /// The file named by the setting.
        path: PathBuf,
        /// What the operating system said (in the message, so not also a `source`).
        error: std::io::Error,
    },
    /// The file is not PEM holding what the setting needs.
    #[error("{} holds no usable {what}: {reason}", path.display())]
    Pem {
        /// The file named by the setting.
        path: PathBuf,
        /// What it should hold: `certificate` or `private key`.
        what: &'static str,
        /// What the parser said.
        reason: String,
    },
    /// Each file parses, but together they do not make a working configuration (for
    /// example a key that does not belong to the certificate).
    #[error("{files} do not work together: {reason}")]
    Combination {
        /// The files involved, for the message.
        files: String,
        /// What rustls said.
        reason: String,
    },
}

/// The configuration of a server port that speaks TLS only: it presents the certificate
/// chain in `cert` with the private key in `key`. With `client_ca`, every client must present
/// a certificate signed by that CA (mutual TLS); without it, any client may connect.
pub fn server_config(
    cert: &Path,
    key: &Path,
    client_ca: Option<&Path>,
) -> Result<ServerTlsConfig, TlsError> {
    let mut config = ServerTlsConfig::new()
        .identity(identity(cert, key)?)
        .timeout(HANDSHAKE_TIMEOUT);
    let mut files = format!("{} and {}", cert.display(), key.display());
    if let Some(ca) = client_ca {
        config = config.client_ca_root(certificates(ca)?);
        files = format!("{files} with client CA {}", ca.display());
    }
    // Builds the rustls configuration once now: this is where a key that does not match its
    // certificate shows, and it must show before the process says it is listening.
    Server::builder()
        .tls_config(config.clone())
        .map_err(|error| TlsError::Combination {
            files,
            reason: error_chain(&error),
        })?;
    Ok(config)
}

/// The configuration of a client of a TLS server: it trusts the server certificates signed by
/// the CA in `ca`, and presents `identity` (certificate chain, private key) when the server
/// asks for one (mutual TLS). The server's name is checked against the host of the address it
/// is used with.
pub fn client_config(
    ca: &Path,
    identity_files: Option<(&Path, &Path)>,
) -> Result<ClientTlsConfig, TlsError> {
    let mut config = ClientTlsConfig::new()
        .ca_certificate(certificates(ca)?)
        .timeout(HANDSHAKE_TIMEOUT);
    let mut files = format!("CA {}", ca.display());
    if let Some((cert, key)) = identity_files {
        config = config.identity(identity(cert, key)?);
        files = format!("{} and {} with {files}", cert.display(), key.display());
    }
    // Built once now, as for the server: a client key that does not match its certificate
    // shows here, naming the files, rather than later as a bad store address.
    apply_client(Endpoint::from_static("https://localhost"), config.clone()).map_err(|error| {
        match error {
            TlsError::Combination { reason, .. } => TlsError::Combination { files, reason },
            other => other,
        }
    })?;
    Ok(config)
}

/// Whether a server listening on `listen` lets in every client that can reach it: it listens
/// beyond loopback and does not require client certificates.
pub fn open_to_anyone(listen: SocketAddr, requires_client_certificates: bool) -> bool {
    !listen.ip().is_loopback() && !requires_client_certificates
}

/// `endpoint` with TLS on; fails with rustls's reason when it cannot build a client from
/// `config`.
pub fn apply_client(endpoint: Endpoint, config: ClientTlsConfig) -> Result<Endpoint, TlsError> {
    let uri = endpoint.uri().to_string();
    endpoint
        .tls_config(config)
        .map_err(|error| TlsError::Combination {
            files: format!("the TLS settings for {uri}"),
            reason: error_chain(&error),
        })
}

/// The certificate chain and private key in `cert` and `key`, each checked to parse.
fn identity(cert: &Path, key: &Path) -> Result<Identity, TlsError> {
    let cert_pem = certificates(cert)?;
    let key_pem = read(key)?;
    PrivateKeyDer::from_pem_slice(&key_pem).map_err(|error| TlsError::Pem {
        path: key.to_path_buf(),
        what: "private key",
        reason: error.to_string(),
    })?;
    Ok(Identity::from_pem(cert_pem, key_pem))
}

/// The certificates in `path`: at least one, each of which parses.
fn certificates(path: &Path) -> Result<Certificate, TlsError> {
    let pem = read(path)?;
    let bad = |reason: String| TlsError::Pem {
        path: path.to_path_buf(),
        what: "certificate",
        reason,
    };
    let mut found = 0;
    for parsed in CertificateDer::pem_slice_iter(&pem) {
        parsed.map_err(|error| bad(error.to_string()))?;
        found += 1;
    }
    if found == 0 {
        return Err(bad("no `BEGIN CERTIFICATE` section".to_owned()));
    }
    Ok(Certificate::from_pem(pem))
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|error| TlsError::Read {
        path: path.to_path_buf(),
        error,
    })
}

/// An error and its sources on one line: tonic's transport error says only "transport
/// error" at the top.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text = format!("{text}: {cause}");
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_non_loopback_listener_without_client_certificates_is_open_to_anyone() {
        let loopback: SocketAddr = "127.0.0.1:50052".parse().unwrap();
        let loopback6: SocketAddr = "[::1]:50052".parse().unwrap();
        let everywhere: SocketAddr = "0.0.0.0:50052".parse().unwrap();
        let everywhere6: SocketAddr = "[::]:50052".parse().unwrap();
        let pod_ip: SocketAddr = "10.1.2.3:50052".parse().unwrap();
        assert!(!open_to_anyone(loopback, false));
        assert!(!open_to_anyone(loopback6, false));
        for addr in [everywhere, everywhere6, pod_ip] {
            assert!(open_to_anyone(addr, false), "{addr}");
            assert!(!open_to_anyone(addr, true), "{addr}");
        }
    }

    #[test]
    fn a_missing_file_is_named() {
        let missing = Path::new("/nonexistent/cert.pem");
        let error = client_config(missing, None).unwrap_err();
        assert!(matches!(error, TlsError::Read { .. }));
        assert!(
            error.to_string().contains("/nonexistent/cert.pem"),
            "{error}"
        );
    }

    #[test]
    fn a_file_without_pem_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not a certificate\n").unwrap();
        let error = client_config(&junk, None).unwrap_err();
        assert!(error.to_string().contains("junk.pem"), "{error}");
        assert!(error.to_string().contains("certificate"), "{error}");
        let error = server_config(&junk, &junk, None).unwrap_err();
        assert!(error.to_string().contains("junk.pem"), "{error}");
    }
}
