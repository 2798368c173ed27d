//! Development certificates and TLS clients: what the `devcerts` binary writes, and what the
//! TLS tests generate into temp directories (one set per CA, so a second set is the
//! "unrelated CA" of the negative tests).
//!
//! One set is a CA and three leaf certificates signed by it, each with its private key, as PEM
//! files in one directory (see [`DevCerts`] for the names). The CA's own key is not written:
//! nothing needs it after signing, and a directory that is copied into a Secret must not let
//! its readers mint certificates. To rotate, generate a new set.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::Context;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, date_time_ymd,
};
use tempfile::TempDir;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// The CA certificate: what clients trust, and what store-svc's `--tls-client-ca` names.
pub const CA: &str = "ca.pem";
/// store-svc's server certificate (`--tls-cert`) and key (`--tls-key`).
pub const STORE_CERT: &str = "store.pem";
/// The key of [`STORE_CERT`].
pub const STORE_KEY: &str = "store-key.pem";
/// session-svc's client certificate towards store-svc (`--store-tls-cert`).
pub const SESSION_CLIENT_CERT: &str = "session-client.pem";
/// The key of [`SESSION_CLIENT_CERT`] (`--store-tls-key`).
pub const SESSION_CLIENT_KEY: &str = "session-client-key.pem";
/// session-svc's server certificate for its own port (`--tls-cert`).
pub const SESSION_CERT: &str = "session.pem";
/// The key of [`SESSION_CERT`] (`--tls-key`).
pub const SESSION_KEY: &str = "session-key.pem";

/// Names every server certificate carries, so loopback tests and a laptop work unchanged.
pub const LOOPBACK_NAMES: [&str; 2] = ["localhost", "127.0.0.1"];

/// How long a test set is valid; `devcerts` takes `--days`.
const TEST_VALIDITY_DAYS: u64 = 2;

/// One generated set of development certificates, as files in one directory.
#[derive(Debug)]
pub struct DevCerts {
    /// Where the PEM files are.
    dir: PathBuf,
    /// Set when the directory is a temp dir of ours, removed on drop.
    _temp: Option<TempDir>,
}

/// What to put in one set of certificates.
#[derive(Clone, Debug)]
pub struct DevCertNames {
    /// Extra names (DNS names or IP addresses) of store-svc's certificate, beyond
    /// [`LOOPBACK_NAMES`]: the names session-svc dials it by (Kubernetes service DNS names).
    pub store: Vec<String>,
    /// Extra names of session-svc's server certificate, beyond [`LOOPBACK_NAMES`].
    pub session: Vec<String>,
    /// Days from now until the certificates expire (they start a day in the past, so a clock
    /// a little behind still accepts them).
    pub days: u64,
}

impl Default for DevCertNames {
    fn default() -> Self {
        Self {
            store: Vec::new(),
            session: Vec::new(),
            days: TEST_VALIDITY_DAYS,
        }
    }
}

impl DevCerts {
    /// Generates a new CA and its certificates into `dir` (created if missing; files of the
    /// same names are replaced).
    pub fn write(dir: &Path, names: &DevCertNames) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let days = names.days;
        let ca = new_ca(days).context("generating the CA")?;
        let leaves = [
            (
                "store-svc",
                &names.store,
                ExtendedKeyUsagePurpose::ServerAuth,
                STORE_CERT,
                STORE_KEY,
            ),
            (
                "session-svc",
                &names.session,
                ExtendedKeyUsagePurpose::ServerAuth,
                SESSION_CERT,
                SESSION_KEY,
            ),
        ];
        let write = |name: &str, contents: &str| {
            let path = dir.join(name);
            write_private(&path, contents).with_context(|| format!("writing {}", path.display()))
        };
        write(CA, &ca.pem())?;
        for (common_name, extra, usage, cert_file, key_file) in leaves {
            let sans: Vec<String> = LOOPBACK_NAMES
                .iter()
                .map(|name| (*name).to_owned())
                .chain(extra.iter().cloned())
                .collect();
            let (cert, key) = new_leaf(&ca, common_name, sans, usage, days)
                .with_context(|| format!("generating {cert_file}"))?;
            write(cert_file, &cert)?;
            write(key_file, &key)?;
        }
        // The client certificate names no host: store-svc checks only who signed it.
        let (cert, key) = new_leaf(
            &ca,
            "session-svc client",
            Vec::new(),
            ExtendedKeyUsagePurpose::ClientAuth,
            days,
        )
        .context("generating the session-svc client certificate")?;
        write(SESSION_CLIENT_CERT, &cert)?;
        write(SESSION_CLIENT_KEY, &key)?;
        Ok(Self {
            dir: dir.to_path_buf(),
            _temp: None,
        })
    }

    /// A new set with loopback names only, in a temp dir removed when this is dropped; panics
    /// (failing the test) if it cannot be made.
    pub fn temp() -> Self {
        let temp = tempfile::Builder::new()
            .prefix("devcerts-")
            .tempdir()
            .expect("creating a temp dir for certificates");
        let mut certs = Self::write(temp.path(), &DevCertNames::default())
            .unwrap_or_else(|error| panic!("generating certificates: {error:#}"));
        certs._temp = Some(temp);
        certs
    }

    /// The directory holding the files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The path of one of the files (`CA`, `STORE_CERT`, ...).
    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }

    /// The CA certificate.
    pub fn ca(&self) -> PathBuf {
        self.path(CA)
    }

    /// store-svc's server certificate and key.
    pub fn store_identity(&self) -> (PathBuf, PathBuf) {
        (self.path(STORE_CERT), self.path(STORE_KEY))
    }

    /// session-svc's client certificate and key, for store-svc.
    pub fn session_client_identity(&self) -> (PathBuf, PathBuf) {
        (
            self.path(SESSION_CLIENT_CERT),
            self.path(SESSION_CLIENT_KEY),
        )
    }

    /// session-svc's server certificate and key, for its own port.
    pub fn session_identity(&self) -> (PathBuf, PathBuf) {
        (self.path(SESSION_CERT), self.path(SESSION_KEY))
    }
}

/// Opens a TLS connection to `addr` (server name: its IP address), trusting the CA in `ca`
/// and presenting `identity` (certificate, key) if given. The connection, HTTP/2 included, is
/// made before this returns, so a refused handshake may show here or on the first call.
pub async fn tls_channel(
    addr: SocketAddr,
    ca: &Path,
    identity: Option<(&Path, &Path)>,
) -> Result<Channel, tonic::transport::Error> {
    let mut config = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read(ca)));
    if let Some((cert, key)) = identity {
        config = config.identity(Identity::from_pem(read(cert), read(key)));
    }
    Endpoint::from_shared(format!("https://{addr}"))?
        .tls_config(config)?
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(10))
        .connect()
        .await
}

/// Writes `contents` to `path` readable by its owner only: keys among them are secrets, and
/// certificates lose nothing by it.
fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::{io::Write, os::unix::fs::OpenOptionsExt};
    // Replaced, not rewritten in place, so an older file's wider mode does not survive.
    match std::fs::remove_file(path) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => return Err(error),
        _ => {}
    }
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?
        .write_all(contents.as_bytes())
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|error| panic!("reading {}: {error}", path.display()))
}

/// Makes `params` valid from a day ago until `days` from now.
fn set_validity(params: &mut CertificateParams, days: u64) {
    const DAY: Duration = Duration::from_secs(24 * 3600);
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970");
    // rcgen's own date helper, so the `time` crate need not be named here.
    let now = date_time_ymd(1970, 1, 1) + since_epoch;
    params.not_before = now - DAY;
    params.not_after = now + DAY * u32::try_from(days).unwrap_or(u32::MAX);
}

/// A new self-signed CA that may sign leaf certificates only.
fn new_ca(days: u64) -> Result<CertifiedIssuer<'static, KeyPair>, rcgen::Error> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params
        .distinguished_name
        .push(DnType::CommonName, "session-platform development CA");
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    set_validity(&mut params, days);
    CertifiedIssuer::self_signed(params, KeyPair::generate()?)
}

/// A certificate for `sans` signed by `ca`, and its new key, both PEM.
fn new_leaf(
    ca: &CertifiedIssuer<'static, KeyPair>,
    common_name: &str,
    sans: Vec<String>,
    usage: ExtendedKeyUsagePurpose,
    days: u64,
) -> Result<(String, String), rcgen::Error> {
    let mut params = CertificateParams::new(sans)?;
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.use_authority_key_identifier_extension = true;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![usage];
    set_validity(&mut params, days);
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, ca)?;
    Ok((cert.pem(), key.serialize_pem()))
}
