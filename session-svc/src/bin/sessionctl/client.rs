//! The connection to session-svc: address, TLS, the bearer token on every call, per-call
//! deadlines, and what a failure prints and exits with.

use std::{fmt, io::Write, path::Path, time::Duration};

use kit::tls;
use proto::session::v1::{
    admin_service_client::AdminServiceClient, cart_service_client::CartServiceClient,
    inventory_service_client::InventoryServiceClient, job_service_client::JobServiceClient,
    todo_service_client::TodoServiceClient,
};
use tonic::{
    Code, Request, Status,
    metadata::{Ascii, MetadataValue},
    service::{Interceptor, interceptor::InterceptedService},
    transport::{Channel, Endpoint},
};

use crate::cli::Global;

/// Exit code of a usage error (EX_USAGE), as the servers use for bad settings.
pub const EX_USAGE: u8 = 64;

/// Why a command failed; each maps to an exit code and one line on stderr.
#[derive(Debug)]
pub enum Failure {
    /// The command line or settings cannot be used: exit 64.
    Usage(String),
    /// The server answered an error status: exit 1, `error: CODE: message`.
    Rpc(Status),
    /// session-svc could not be reached at all: exit 1.
    Connect {
        /// The address tried.
        addr: String,
        /// Why, with the transport error's causes.
        reason: String,
    },
    /// Anything else that stops the command (a file that cannot be read, a job that did not
    /// succeed): exit 1 with this message.
    Other(String),
    /// stdout was closed under us (`sessionctl ... | head`): exit 1 without a message.
    Quiet,
}

impl Failure {
    /// The process exit code.
    pub fn exit_code(&self) -> u8 {
        match self {
            Failure::Usage(_) => EX_USAGE,
            _ => 1,
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Usage(message) | Failure::Other(message) => f.write_str(message),
            Failure::Rpc(status) => {
                let message = match status.message() {
                    "" if status.code() == Code::Unimplemented => {
                        "session-svc does not serve this method (an older version?)"
                    }
                    "" => "(no message)",
                    message => message,
                };
                write!(f, "{}: {message}", code_name(status.code()))
            }
            Failure::Connect { addr, reason } => {
                write!(f, "cannot reach session-svc at {addr}: {reason}")
            }
            Failure::Quiet => Ok(()),
        }
    }
}

impl From<Status> for Failure {
    fn from(status: Status) -> Self {
        Failure::Rpc(status)
    }
}

/// The result of a command.
pub type Outcome<T = ()> = Result<T, Failure>;

/// A gRPC code as its name in the gRPC specification: `NOT_FOUND`, `UNAUTHENTICATED`.
pub fn code_name(code: Code) -> &'static str {
    kit::error_info::code_reason(code)
}

/// Writes `text` to stdout at once (a watch must show each refresh as it comes).
pub fn emit(text: &str) -> Outcome {
    let mut stdout = std::io::stdout().lock();
    let written = stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush());
    match written {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => Err(Failure::Quiet),
        Err(error) => Err(Failure::Other(format!("cannot write to stdout: {error}"))),
    }
}

/// Ctrl-C from now on: SIGINT no longer ends the process, and each one is a `recv()` of the
/// answer. Registered at once, so a Ctrl-C right after this call is never lost.
pub fn ctrl_c() -> Outcome<tokio::signal::unix::Signal> {
    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .map_err(|error| Failure::Other(format!("cannot handle Ctrl-C: {error}")))
}

/// Adds `authorization: Bearer <token>` to every call when a token was given.
#[derive(Clone, Debug)]
pub struct Bearer(Option<MetadataValue<Ascii>>);

impl Interceptor for Bearer {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(header) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", header.clone());
        }
        Ok(request)
    }
}

/// The channel every client uses: the connection plus the token.
pub type Chan = InterceptedService<Channel, Bearer>;

/// An open connection to session-svc and the per-call deadline.
#[derive(Clone)]
pub struct Conn {
    addr: String,
    channel: Channel,
    bearer: Bearer,
    timeout: Duration,
    page_size: Option<i32>,
}

impl Conn {
    /// Checks the settings (exit 64 when they cannot work), then connects (exit 1 when
    /// session-svc cannot be reached within --timeout).
    pub async fn open(global: &Global) -> Outcome<Self> {
        let bearer = match global.token.as_deref().filter(|t| !t.is_empty()) {
            None => Bearer(None),
            Some(token) => Bearer(Some(format!("Bearer {token}").parse().map_err(|_| {
                Failure::Usage(
                    "--token / SESSIONCTL_TOKEN must be printable ASCII (it is sent as an HTTP \
                     header)"
                        .to_owned(),
                )
            })?)),
        };
        let endpoint = endpoint(global)?;
        let channel = endpoint.connect().await.map_err(|error| Failure::Connect {
            addr: global.addr.clone(),
            reason: error_chain(&error),
        })?;
        Ok(Self {
            addr: global.addr.clone(),
            channel,
            bearer,
            timeout: global.timeout,
            page_size: global.page_size,
        })
    }

    /// The address connected to, as given.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The page size to ask for: --page-size, else `default`.
    pub fn page_size(&self, default: i32) -> i32 {
        self.page_size.unwrap_or(default)
    }

    /// `message` as a request with the per-call deadline.
    pub fn unary<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        request.set_timeout(self.timeout);
        request
    }

    fn chan(&self) -> Chan {
        InterceptedService::new(self.channel.clone(), self.bearer.clone())
    }

    /// An AdminService client.
    pub fn admin(&self) -> AdminServiceClient<Chan> {
        AdminServiceClient::new(self.chan())
    }

    /// A CartService client.
    pub fn cart(&self) -> CartServiceClient<Chan> {
        CartServiceClient::new(self.chan())
    }

    /// A TodoService client.
    pub fn todo(&self) -> TodoServiceClient<Chan> {
        TodoServiceClient::new(self.chan())
    }

    /// An InventoryService client.
    pub fn inventory(&self) -> InventoryServiceClient<Chan> {
        InventoryServiceClient::new(self.chan())
    }

    /// A JobService client.
    pub fn jobs(&self) -> JobServiceClient<Chan> {
        JobServiceClient::new(self.chan())
    }
}

/// The endpoint for --addr with its TLS settings. The scheme and the --tls-* options must
/// agree, as session-svc's own --store-addr and --store-tls-* must.
fn endpoint(global: &Global) -> Outcome<Endpoint> {
    let addr = &global.addr;
    let scheme = addr.split_once("://").map(|(scheme, _)| scheme);
    let https = match scheme {
        Some(s) if s.eq_ignore_ascii_case("https") => true,
        Some(s) if s.eq_ignore_ascii_case("http") => false,
        _ => {
            return Err(Failure::Usage(format!(
                "--addr {addr:?} must start with http:// or https://"
            )));
        }
    };
    let endpoint = Endpoint::from_shared(addr.clone())
        .map_err(|error| Failure::Usage(format!("--addr {addr:?} is not a URI: {error}")))?
        .connect_timeout(global.timeout);
    if global.tls_cert.is_some() != global.tls_key.is_some() {
        return Err(Failure::Usage(
            "--tls-cert and --tls-key go together: give both or neither".to_owned(),
        ));
    }
    match (https, &global.tls_ca) {
        (false, None) if global.tls_cert.is_none() => Ok(endpoint),
        (false, _) => Err(Failure::Usage(format!(
            "--tls-ca, --tls-cert and --tls-key need an https:// --addr, not {addr}"
        ))),
        (true, None) => Err(Failure::Usage(format!(
            "--addr {addr} uses https:// but --tls-ca / SESSIONCTL_TLS_CA is not set: name the \
             CA that signed session-svc's certificate"
        ))),
        (true, Some(ca)) => {
            let identity = global.tls_cert.as_deref().zip(global.tls_key.as_deref());
            let config = tls_config(ca, identity)?;
            tls::apply_client(endpoint, config).map_err(|error| Failure::Usage(error.to_string()))
        }
    }
}

fn tls_config(
    ca: &Path,
    identity: Option<(&Path, &Path)>,
) -> Outcome<tonic::transport::ClientTlsConfig> {
    tls::client_config(ca, identity)
        .map_err(|error| Failure::Usage(format!("--tls-ca / --tls-cert / --tls-key: {error}")))
}

/// An error and its causes on one line: tonic's transport error says only "transport error".
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.ends_with(&cause_text) {
            text = format!("{text}: {cause_text}");
        }
        source = cause.source();
    }
    text
}
