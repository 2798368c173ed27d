//! Mutual TLS between session-svc and store-svc, and TLS on session-svc's own port, with real
//! processes on loopback: who store-svc refuses, who gets through, and which settings stop a
//! service at start-up.

use std::{path::Path, process::Stdio, time::Duration};

use prost::Message as _;
use proto::{
    session::v1::{GetSessionRequest, Session, cart_service_client::CartServiceClient},
    store::v1::store_service_client::StoreServiceClient,
};
use tests::{
    SessionOptions, StoreOptions, locate_binary,
    python::run_python_ok,
    session::{SESSION_BINARY, SESSION_BINARY_ENV},
    session_client::{add_item, get_session, quantity_of, start},
    spawn_session, spawn_store_with,
    store::{STORE_BINARY, STORE_BINARY_ENV},
    store_client::{lookup, put},
    tls::{DevCerts, tls_channel},
};
use tonic::transport::Channel;

/// The store namespace these tests write to directly.
const NAMESPACE: &str = "tls-test";

/// How long a service that should refuse to start may take to do so.
const START_UP_LIMIT: Duration = Duration::from_secs(30);

/// The exit code of a bad setting (EX_USAGE).
const EX_USAGE: i32 = 64;

/// Flags, environment variables, and what the error message must name.
type StartUpCase<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str);

/// A Put at `key` by a client that store-svc must refuse, through `channel` (or its failure
/// to connect): the refusal must be the connection failing, never an answer from the service.
/// The client's code varies with where the handshake broke: a plaintext client reads the
/// server's TLS alert as a malformed HTTP/2 frame (INTERNAL "h2 protocol error"); a TLS 1.3
/// client finishes its side of the handshake and learns of the refusal from the alert on its
/// first read (UNKNOWN "transport error", or CANCELLED when the connection closes first).
async fn assert_put_refused(
    channel: Result<Channel, tonic::transport::Error>,
    key: &str,
    case: &str,
) {
    let channel = match channel {
        // Refused during the handshake: nothing could be sent.
        Err(_) => return,
        Ok(channel) => channel,
    };
    let mut client = StoreServiceClient::new(channel);
    let status = put(&mut client, NAMESPACE, key, b"written".to_vec(), 0)
        .await
        .expect_err(&format!("{case}: the store accepted a Put"));
    assert!(
        is_connection_failure(&status),
        "{case}: not refused by the transport: {status:?}"
    );
}

/// Whether `status` was made by the client because its connection failed, rather than sent
/// by a server.
fn is_connection_failure(status: &tonic::Status) -> bool {
    std::error::Error::source(status).is_some_and(|source| source.is::<tonic::transport::Error>())
}

/// A store-svc with the server certificate of `certs` that admits only clients whose
/// certificate `certs`' CA signed.
async fn mutual_tls_store(certs: &DevCerts) -> tests::StoreProcess {
    let (cert, key) = certs.store_identity();
    spawn_store_with(
        StoreOptions::new()
            .tls(&cert, &key)
            .tls_client_ca(certs.ca()),
    )
    .await
}

#[tokio::test]
async fn store_with_a_client_ca_serves_only_clients_whose_certificate_that_ca_signed() {
    let certs = DevCerts::temp();
    let stranger = DevCerts::temp();
    let store = mutual_tls_store(&certs).await;
    let addr = store.addr();

    assert_put_refused(store.channel().await, "plaintext", "a plaintext client").await;
    assert_put_refused(
        tls_channel(addr, &certs.ca(), None).await,
        "no-certificate",
        "a TLS client without a certificate",
    )
    .await;
    let (other_cert, other_key) = stranger.session_client_identity();
    assert_put_refused(
        tls_channel(addr, &certs.ca(), Some((&other_cert, &other_key))).await,
        "other-ca",
        "a TLS client whose certificate another CA signed",
    )
    .await;

    let (client_cert, client_key) = certs.session_client_identity();
    let channel = tls_channel(addr, &certs.ca(), Some((&client_cert, &client_key)))
        .await
        .expect("the right certificate connects");
    let mut client = StoreServiceClient::new(channel);
    for refused in ["plaintext", "no-certificate", "other-ca"] {
        let found = lookup(&mut client, NAMESPACE, refused).await.unwrap();
        assert!(found.is_none(), "a refused client wrote {refused}");
    }
    let version = put(&mut client, NAMESPACE, "admitted", b"hello".to_vec(), 0)
        .await
        .expect("a client with the right certificate writes");
    let read = lookup(&mut client, NAMESPACE, "admitted").await.unwrap();
    let read = read.expect("the write is there");
    assert_eq!(
        (read.value.as_slice(), read.version),
        (&b"hello"[..], version)
    );

    // A client that trusts another CA does not accept the store's certificate either.
    assert!(
        tls_channel(addr, &stranger.ca(), Some((&client_cert, &client_key)))
            .await
            .is_err(),
        "a client trusted a store certificate its CA did not sign"
    );
    // Loopback only: nothing to warn about.
    assert!(
        !store.stderr_tail(200).contains("any client"),
        "{}",
        store.stderr_tail(20)
    );
}

#[tokio::test]
async fn session_svc_with_the_right_certificates_serves_carts_over_mutual_tls_to_the_store() {
    let certs = DevCerts::temp();
    let store = mutual_tls_store(&certs).await;
    let (client_cert, client_key) = certs.session_client_identity();
    let (session_cert, session_key) = certs.session_identity();
    let options = SessionOptions::new()
        .store_tls(&certs.ca(), Some((&client_cert, &client_key)))
        .tls(&session_cert, &session_key);
    let session = spawn_session(&format!("https://{}", store.addr()), options).await;

    let channel = tls_channel(session.addr(), &certs.ca(), None)
        .await
        .expect("session-svc's TLS port accepts a client that trusts the CA");
    let mut cart = CartServiceClient::new(channel);
    let key = "tls-cart";
    start(&mut cart, key).await.expect("StartSession");
    add_item(&mut cart, key, "A1", 2, 1999)
        .await
        .expect("AddItem (durable in the store, over mutual TLS)");
    let session_state = get_session(&mut cart, key).await.expect("GetSession");
    assert_eq!(quantity_of(&session_state, "A1"), 2);

    // The same port refuses plaintext.
    let plaintext = session.channel().await;
    if let Ok(channel) = plaintext {
        let status = get_session(&mut CartServiceClient::new(channel), key)
            .await
            .expect_err("session-svc's TLS port answered a plaintext call");
        assert!(is_connection_failure(&status), "{status:?}");
    }

    // A Python grpcio client given the CA reads the same cart over TLS; a plaintext one is
    // refused.
    let request = GetSessionRequest {
        key: key.to_owned(),
    }
    .encode_to_vec();
    let target = session.addr().to_string();
    let ca = certs.ca();
    let output = run_python_ok(
        PYTHON_GET_SESSION,
        &[&target, path_str(&ca), &hex(&request)],
    )
    .await;
    let mut lines = output.lines();
    let reply = lines.next().expect("the script prints the reply");
    let from_python = Session::decode(unhex(reply).as_slice()).expect("a Session");
    assert_eq!(from_python.key, key);
    assert_eq!(quantity_of(&from_python, "A1"), 2);
    assert_eq!(lines.next(), Some("plaintext: StatusCode.UNAVAILABLE"));
}

#[tokio::test]
async fn session_svc_with_a_certificate_from_another_ca_is_refused_by_the_store_and_says_unavailable()
 {
    let certs = DevCerts::temp();
    let stranger = DevCerts::temp();
    let store = mutual_tls_store(&certs).await;
    let (client_cert, client_key) = stranger.session_client_identity();
    let options = SessionOptions::new().store_tls(&certs.ca(), Some((&client_cert, &client_key)));
    let session = spawn_session(&format!("https://{}", store.addr()), options).await;
    let mut cart = session.cart().await;
    let status = start(&mut cart, "refused")
        .await
        .expect_err("StartSession succeeded although the store refused session-svc");
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
}

/// argv: target, CA file, GetSessionRequest as hex. Prints the Session as hex, then how a
/// plaintext call to the same port ends.
const PYTHON_GET_SESSION: &str = r#"
import sys, grpc
target, ca_path, request_hex = sys.argv[1:4]
with open(ca_path, 'rb') as f:
    credentials = grpc.ssl_channel_credentials(root_certificates=f.read())
method = '/session.v1.CartService/GetSession'
with grpc.secure_channel(target, credentials) as channel:
    reply = channel.unary_unary(method)(bytes.fromhex(request_hex), timeout=10)
    print(reply.hex())
with grpc.insecure_channel(target) as channel:
    try:
        channel.unary_unary(method)(bytes.fromhex(request_hex), timeout=10)
        print('plaintext: OK')
    except grpc.RpcError as error:
        print('plaintext:', error.code())
"#;

#[tokio::test]
async fn inconsistent_or_unusable_tls_settings_stop_store_svc_naming_the_setting() {
    let certs = DevCerts::temp();
    let stranger = DevCerts::temp();
    let (cert, key) = certs.store_identity();
    let (_, other_key) = stranger.store_identity();
    let junk = certs.dir().join("junk.pem");
    std::fs::write(&junk, "this is not PEM\n").unwrap();
    let missing = certs.dir().join("missing.pem");
    let (cert, key, ca) = (path_str(&cert), path_str(&key), certs.ca());
    let (ca, other_key, junk, missing) = (
        path_str(&ca),
        path_str(&other_key),
        path_str(&junk),
        path_str(&missing),
    );

    let cases: [StartUpCase; 8] = [
        (&["--tls-cert", cert], &[], "--tls-key"),
        (&["--tls-key", key], &[], "--tls-cert"),
        (&["--tls-client-ca", ca], &[], "--tls-cert"),
        (
            &["--tls-cert", cert, "--tls-client-ca", ca],
            &[],
            "--tls-key",
        ),
        (&[], &[("STORE_TLS_CERT", cert)], "--tls-key"),
        (&["--tls-cert", missing, "--tls-key", key], &[], missing),
        (&["--tls-cert", junk, "--tls-key", key], &[], junk),
        (
            &["--tls-cert", cert, "--tls-key", other_key],
            &[],
            other_key,
        ),
    ];
    let data = tempfile::tempdir().unwrap();
    for (args, envs, named) in cases {
        let mut all = vec!["--data-dir", path_str(data.path())];
        all.extend_from_slice(args);
        let (code, stderr) =
            start_up_failure(STORE_BINARY, STORE_BINARY_ENV, "STORE_", &all, envs).await;
        assert_eq!(code, EX_USAGE, "{args:?} {envs:?}: {stderr}");
        assert!(
            stderr.contains(named),
            "{args:?} {envs:?}: not naming {named}: {stderr}"
        );
    }
}

#[tokio::test]
async fn inconsistent_or_unusable_tls_settings_stop_session_svc_naming_the_setting() {
    let certs = DevCerts::temp();
    let (cert, key) = certs.session_client_identity();
    let (cert, key, ca) = (path_str(&cert), path_str(&key), certs.ca());
    let ca = path_str(&ca);
    let missing = certs.dir().join("missing-ca.pem");
    let missing = path_str(&missing);
    let stranger = DevCerts::temp();
    let (_, other_key) = stranger.session_client_identity();
    let other_key = path_str(&other_key);
    // Nothing listens on port 9 of loopback, and nothing is dialled before the check fails.
    let https = "https://127.0.0.1:9";

    let cases: [(&[&str], &str); 8] = [
        (&["--store-addr", https], "--store-tls-ca"),
        (&["--store-tls-ca", ca], "https://"),
        (
            &[
                "--store-addr",
                https,
                "--store-tls-cert",
                cert,
                "--store-tls-key",
                key,
            ],
            "--store-tls-ca",
        ),
        (
            &[
                "--store-addr",
                https,
                "--store-tls-ca",
                ca,
                "--store-tls-cert",
                cert,
            ],
            "--store-tls-key",
        ),
        (&["--store-addr", https, "--store-tls-ca", missing], missing),
        (
            &[
                "--store-addr",
                https,
                "--store-tls-ca",
                ca,
                "--store-tls-cert",
                cert,
                "--store-tls-key",
                other_key,
            ],
            other_key,
        ),
        (&["--tls-cert", cert], "--tls-key"),
        (&["--tls-key", key], "--tls-cert"),
    ];
    for (args, named) in cases {
        let (code, stderr) =
            start_up_failure(SESSION_BINARY, SESSION_BINARY_ENV, "SESSION_", args, &[]).await;
        assert_eq!(code, EX_USAGE, "{args:?}: {stderr}");
        assert!(
            stderr.contains(named),
            "{args:?}: not naming {named}: {stderr}"
        );
    }
}

/// Runs a service binary that must refuse to start (on `127.0.0.1:0`, should it start after
/// all) and returns its exit code and stderr.
async fn start_up_failure(
    binary: &str,
    override_var: &str,
    env_prefix: &str,
    args: &[&str],
    envs: &[(&str, &str)],
) -> (i32, String) {
    let program = locate_binary(binary, override_var).unwrap();
    let mut command = tokio::process::Command::new(program);
    for (name, _) in std::env::vars() {
        if name.starts_with(env_prefix) {
            command.env_remove(name);
        }
    }
    command
        .args(["--listen", "127.0.0.1:0"])
        .args(args)
        .envs(envs.iter().copied())
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let output = tokio::time::timeout(START_UP_LIMIT, command.output())
        .await
        .unwrap_or_else(|_| panic!("{binary} {args:?} did not exit: it should refuse to start"))
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        !stdout.contains("listening on"),
        "{binary} {args:?} started: {stdout}"
    );
    let code = output.status.code().expect("an exit code, not a signal");
    (code, String::from_utf8_lossy(&output.stderr).into_owned())
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("temp paths are UTF-8")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn unhex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|at| u8::from_str_radix(&text[at..at + 2], 16).expect("hex"))
        .collect()
}

#[tokio::test]
async fn a_mutual_tls_store_answers_probes_on_its_plaintext_health_port_and_nothing_else() {
    use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};
    let certs = DevCerts::temp();
    let (cert, key) = certs.store_identity();
    let health_addr = tests::load::free_loopback_addr().unwrap();
    let store = spawn_store_with(
        StoreOptions::new()
            .tls(&cert, &key)
            .tls_client_ca(certs.ca())
            .arg("--health-listen")
            .arg(health_addr.to_string()),
    )
    .await;
    // The health port opens just after the main port announced itself: wait for it.
    let endpoint = Channel::from_shared(format!("http://{health_addr}")).unwrap();
    let mut attempts = 0;
    let channel = loop {
        match endpoint.connect().await {
            Ok(channel) => break channel,
            Err(error) if attempts < 50 => {
                attempts += 1;
                eprintln!("health port not open yet: {error}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(error) => panic!("the health port never opened: {error}"),
        }
    };
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    for service in ["", "store.v1.StoreService"] {
        let status = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap_or_else(|e| panic!("health of {service:?}: {e:?}"))
            .into_inner()
            .status();
        assert_eq!(status, ServingStatus::Serving, "{service:?}");
    }
    // Only health: the store's API is not reachable through the plaintext port.
    let mut client = StoreServiceClient::new(channel);
    let refused = put(&mut client, NAMESPACE, "via-health-port", b"x".to_vec(), 0)
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unimplemented, "{refused:?}");
    // And the main port still refuses a client without a certificate.
    let plain = Channel::from_shared(format!("http://{}", store.addr()))
        .unwrap()
        .connect()
        .await;
    assert_put_refused(plain, "plaintext-main-port", "plaintext on the mTLS port").await;
}
