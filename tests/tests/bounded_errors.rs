//! No error repeats more than 128 bytes of client input (DESIGN.md, error contract), on either
//! server, for every RPC and every string and bytes field of its request, nested ones included
//! (BatchWrite's writes, Commit's mutations). The cases come from the descriptor set the
//! servers are built from, so a new RPC or field is covered without touching this file.
//!
//! Each case sends 1 MiB in one field (the others left empty) and measures the reply's status
//! as sent: `grpc-message` plus `grpc-status-details-bin` stay under 2 KiB, and neither quotes
//! more than 128 bytes of the field. A default grpcio client, which refuses trailers over
//! 8 KiB with RESOURCE_EXHAUSTED, then sees the real error for every case.

use std::{collections::HashMap, net::SocketAddr};

use prost::Message;
use prost_types::{DescriptorProto, FileDescriptorSet, field_descriptor_proto::Type};
use proto::{session::v1::Job, store::v1::BatchWriteResponse};
use tests::{
    SessionOptions, SessionStack, python::run_python_ok, raw_bytes::length_delimited_field,
    session::ADMIN_TOKEN, session_client::start, spawn_session_stack, store_client::lookup,
    trailers::call_measured,
};
use tonic::Code;
use tonic_types::StatusExt;

/// The size of the field each case fills.
const FIELD_BYTES: usize = 1 << 20;
/// The most bytes `grpc-message` and `grpc-status-details-bin` may take together.
const MAX_STATUS_BYTES: usize = 2048;
/// The most bytes of client input a reply may quote.
const ECHO_LIMIT: usize = 128;
/// The byte a case's field is filled with, so that a quote of it is easy to find.
const FILLER: u8 = b'q';
/// How many message fields deep the cases go (BatchWrite → writes → commit → mutations → put).
const MAX_DEPTH: usize = 4;

/// One RPC with one field filled.
#[derive(Clone, Debug)]
struct Case {
    /// `/package.Service/Method`.
    path: String,
    /// The field's path in the request, by name (`writes.commit.mutations.put.namespace`).
    field: String,
    /// The same path by field number, for encoding.
    numbers: Vec<u32>,
    /// Whether the server answers with a stream.
    server_streaming: bool,
}

impl Case {
    /// The request: the field holding `payload`, inside one element of each message on the way.
    fn request(&self, payload: &[u8]) -> Vec<u8> {
        let (last, outer) = self.numbers.split_last().expect("a field path");
        let mut bytes = length_delimited_field(*last, payload);
        for number in outer.iter().rev() {
            bytes = length_delimited_field(*number, &bytes);
        }
        bytes
    }

    /// `session.v1` or `store.v1`: which server answers it.
    fn is_store(&self) -> bool {
        self.path.starts_with("/store.v1.")
    }

    fn is_admin(&self) -> bool {
        self.path.starts_with("/session.v1.AdminService/")
    }

    /// What the server must answer.
    fn expected(&self) -> Expect {
        if self.path == "/store.v1.StoreService/BatchWrite" {
            return Expect::OkWithInvalidResult;
        }
        if self.path == "/session.v1.JobService/ImportEntries" {
            return Expect::OkWithFailedEntry;
        }
        Expect::InvalidArgument
    }

    fn metadata(&self) -> Vec<(&'static str, String)> {
        if self.is_admin() {
            vec![("authorization", format!("Bearer {ADMIN_TOKEN}"))]
        } else {
            Vec::new()
        }
    }
}

/// What a case must be answered with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    /// INVALID_ARGUMENT: some field is wrong (the filled one, or an empty required one).
    InvalidArgument,
    /// BatchWrite: OK, with the write's own result INVALID_ARGUMENT.
    OkWithInvalidResult,
    /// ImportEntries (one entry): OK, a job whose one failure is that entry, INVALID_ARGUMENT.
    /// A bad record fails that record, not the import.
    OkWithFailedEntry,
}

/// Every message type of the descriptor set by full name (`.store.v1.PutRequest`).
fn message_types(set: &FileDescriptorSet) -> HashMap<String, &DescriptorProto> {
    fn add<'a>(
        scope: &str,
        messages: &'a [DescriptorProto],
        out: &mut HashMap<String, &'a DescriptorProto>,
    ) {
        for message in messages {
            let name = format!("{scope}.{}", message.name());
            add(&name, &message.nested_type, out);
            out.insert(name, message);
        }
    }
    let mut out = HashMap::new();
    for file in &set.file {
        add(
            &format!(".{}", file.package()),
            &file.message_type,
            &mut out,
        );
    }
    out
}

/// Every RPC of every service, each string and bytes field of its request to [`MAX_DEPTH`].
fn cases() -> Vec<Case> {
    let set = FileDescriptorSet::decode(proto::FILE_DESCRIPTOR_SET).expect("the descriptor set");
    let types = message_types(&set);
    let mut cases = Vec::new();
    for file in &set.file {
        for service in &file.service {
            for method in &service.method {
                let path = format!("/{}.{}/{}", file.package(), service.name(), method.name());
                let input = types[method.input_type()];
                let mut fields = Vec::new();
                string_fields(&types, input, &mut Vec::new(), &mut fields);
                assert!(
                    !fields.is_empty() || input.field.is_empty(),
                    "{path}: no string field found"
                );
                for (names, numbers) in fields {
                    cases.push(Case {
                        path: path.clone(),
                        field: names.join("."),
                        numbers,
                        server_streaming: method.server_streaming(),
                    });
                }
            }
        }
    }
    cases
}

/// The string and bytes fields of `message`, as (names, numbers) paths from the request.
fn string_fields(
    types: &HashMap<String, &DescriptorProto>,
    message: &DescriptorProto,
    outer: &mut Vec<(String, u32)>,
    out: &mut Vec<(Vec<String>, Vec<u32>)>,
) {
    for field in &message.field {
        outer.push((field.name().to_owned(), field.number() as u32));
        match field.r#type() {
            Type::String | Type::Bytes => out.push((
                outer.iter().map(|(name, _)| name.clone()).collect(),
                outer.iter().map(|(_, number)| *number).collect(),
            )),
            Type::Message if outer.len() < MAX_DEPTH => {
                if let Some(nested) = types.get(field.type_name()) {
                    string_fields(types, nested, outer, out);
                }
            }
            _ => {}
        }
        outer.pop();
    }
}

/// True when `bytes` hold a run of more than [`ECHO_LIMIT`] filler bytes: a quote too long.
fn quotes_too_much(bytes: &[u8]) -> bool {
    bytes
        .windows(ECHO_LIMIT + 1)
        .any(|window| window.iter().all(|&b| b == FILLER))
}

/// Both servers; session-svc as a cluster of one (its own only peer), so that it serves every
/// RPC of the descriptor set, the replicas' PeerService included, and every call passes the
/// layer that places calls by their first message.
async fn stack() -> (SessionStack, SocketAddr, SocketAddr) {
    let addr = tests::load::free_loopback_addr().expect("a free port");
    let options = SessionOptions::new()
        .listen(addr)
        .flag("--advertise", addr)
        .flag("--peers", addr);
    let stack = spawn_session_stack(options).await;
    let (store, session) = (stack.store.addr(), stack.session.addr());
    (stack, store, session)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mebibyte_in_any_field_of_any_rpc_gets_a_small_error_that_quotes_at_most_128_bytes() {
    let (_stack, store, session) = stack().await;
    let cases = cases();
    assert!(cases.len() > 40, "only {} cases: {cases:?}", cases.len());
    let filled = vec![FILLER; FIELD_BYTES];
    // Control characters: the input that once came back as a 26.7 MB trailer, escaped.
    let control = vec![1u8; FIELD_BYTES];
    let mut failures = Vec::new();
    let mut largest = (0, String::new());
    for case in &cases {
        let addr = if case.is_store() { store } else { session };
        let metadata = case.metadata();
        let metadata: Vec<(&str, &str)> = metadata.iter().map(|(k, v)| (*k, v.as_str())).collect();
        for payload in [&filled, &control] {
            let what = format!("{} {} ({:#04x})", case.path, case.field, payload[0]);
            let reply = call_measured(addr, &case.path, &case.request(payload), &metadata)
                .await
                .unwrap_or_else(|error| panic!("{what}: {error:#}"));
            let status = &reply.status;
            if reply.status_bytes > largest.0 {
                largest = (reply.status_bytes, what.clone());
            }
            if reply.status_bytes >= MAX_STATUS_BYTES {
                failures.push(format!("{what}: {} bytes of status", reply.status_bytes));
            }
            let expected = case.expected();
            if quotes_too_much(status.message().as_bytes()) || quotes_too_much(status.details()) {
                failures.push(format!(
                    "{what}: quotes over {ECHO_LIMIT} bytes: {status:?}"
                ));
            }
            match expected {
                Expect::InvalidArgument if status.code() != Code::InvalidArgument => {
                    failures.push(format!(
                        "{what}: {:?} {:?}",
                        status.code(),
                        status.message()
                    ));
                }
                Expect::InvalidArgument => {
                    // The details a client switches on: which field, and a stable reason.
                    let domain = if case.is_store() {
                        "store.v1"
                    } else {
                        "session.v1"
                    };
                    let info = status.get_details_error_info();
                    let field = status.get_details_bad_request();
                    if info
                        .as_ref()
                        .map(|i| (i.reason.as_str(), i.domain.as_str()))
                        != Some(("INVALID_FIELD", domain))
                        || field.is_none_or(|f| f.field_violations.is_empty())
                    {
                        failures.push(format!(
                            "{what}: details lack ErrorInfo or BadRequest: {status:?}"
                        ));
                    }
                }
                Expect::OkWithInvalidResult => {
                    let results = BatchWriteResponse::decode(reply.first_message())
                        .map(|response| response.results)
                        .unwrap_or_default();
                    match results.as_slice() {
                        [result]
                            if result.code == Code::InvalidArgument as i32
                                && result.message.len() < MAX_STATUS_BYTES
                                && !quotes_too_much(result.message.as_bytes()) => {}
                        other => failures.push(format!("{what}: {status:?}, results {other:?}")),
                    }
                }
                Expect::OkWithFailedEntry => {
                    let job = Job::decode(reply.first_message()).unwrap_or_default();
                    match job.failures.as_slice() {
                        [failure]
                            if status.code() == Code::Ok
                                && failure.code == "INVALID_ARGUMENT"
                                && failure.message.len() < MAX_STATUS_BYTES
                                && !quotes_too_much(failure.message.as_bytes()) => {}
                        other => failures.push(format!("{what}: {status:?}, failures {other:?}")),
                    }
                }
            }
        }
    }
    eprintln!("largest status: {} bytes ({})", largest.0, largest.1);
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len() * 2,
        failures.join("\n")
    );
}

/// Calls every case with a default grpcio client (generic calls on raw bytes) and prints one
/// status code name per case.
const PYTHON_CLIENT: &str = r#"
import json, sys, grpc
target, manifest = sys.argv[1], sys.argv[2]
with open(manifest) as f:
    cases = json.load(f)
channels = {}
for case in cases:
    channel = channels.setdefault(case["addr"], grpc.insecure_channel(case["addr"]))
    with open(case["file"], "rb") as f:
        body = f.read()
    metadata = [tuple(pair) for pair in case["metadata"]]
    try:
        if case["stream"]:
            for _ in channel.unary_stream(case["path"])(body, metadata=metadata, timeout=30):
                pass
        else:
            channel.unary_unary(case["path"])(body, metadata=metadata, timeout=30)
        print("OK")
    except grpc.RpcError as error:
        print(error.code().name)
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_default_grpcio_client_sees_the_real_error_for_a_mebibyte_in_any_field() {
    let (_stack, store, session) = stack().await;
    let cases = cases();
    let dir = tempfile::tempdir().unwrap();
    let filled = vec![FILLER; FIELD_BYTES];
    let mut manifest = Vec::new();
    for (index, case) in cases.iter().enumerate() {
        let file = dir.path().join(format!("case-{index}.bin"));
        std::fs::write(&file, case.request(&filled)).unwrap();
        let addr = if case.is_store() { store } else { session };
        manifest.push(serde_json::json!({
            "addr": addr.to_string(),
            "path": case.path,
            "file": file,
            "stream": case.server_streaming,
            "metadata": case.metadata(),
        }));
    }
    let manifest_path = dir.path().join("cases.json");
    std::fs::write(&manifest_path, serde_json::to_vec(&manifest).unwrap()).unwrap();

    let printed = run_python_ok(
        PYTHON_CLIENT,
        &["unused", manifest_path.to_str().expect("a UTF-8 temp path")],
    )
    .await;
    let codes: Vec<&str> = printed.lines().collect();
    assert_eq!(codes.len(), cases.len(), "{printed}");
    let mut failures = Vec::new();
    for (case, code) in cases.iter().zip(codes) {
        let fine = match case.expected() {
            Expect::InvalidArgument => code == "INVALID_ARGUMENT",
            Expect::OkWithInvalidResult | Expect::OkWithFailedEntry => code == "OK",
        };
        if !fine {
            failures.push(format!("{} {}: {code}", case.path, case.field));
        }
    }
    assert!(failures.is_empty(), "grpcio saw:\n{}", failures.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_that_do_not_decode_are_invalid_argument_on_every_rpc_of_both_servers() {
    let (_stack, store, session) = stack().await;
    let set = FileDescriptorSet::decode(proto::FILE_DESCRIPTOR_SET).unwrap();
    let mut checked = 0;
    for file in &set.file {
        for service in &file.service {
            for method in &service.method {
                let case = Case {
                    path: format!("/{}.{}/{}", file.package(), service.name(), method.name()),
                    field: String::new(),
                    numbers: Vec::new(),
                    server_streaming: method.server_streaming(),
                };
                let addr = if case.is_store() { store } else { session };
                let metadata = case.metadata();
                let metadata: Vec<(&str, &str)> =
                    metadata.iter().map(|(k, v)| (*k, v.as_str())).collect();
                for garbage in [&b"\xff\xff\xff"[..], b"\x0a\x05ab"] {
                    let reply = call_measured(addr, &case.path, garbage, &metadata)
                        .await
                        .unwrap();
                    assert_eq!(
                        reply.status.code(),
                        Code::InvalidArgument,
                        "{} with {garbage:?}: {:?}",
                        case.path,
                        reply.status
                    );
                    checked += 1;
                }
            }
        }
    }
    assert!(checked > 20, "only {checked} calls");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_key_is_quoted_in_part() {
    let (stack, _, _) = stack().await;
    let long_key = "q".repeat(250);
    let mut cart = stack.session.cart().await;
    let missing = cart
        .get_session(proto::session::v1::GetSessionRequest {
            key: long_key.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound, "{missing:?}");
    assert!(
        !quotes_too_much(missing.message().as_bytes()),
        "{missing:?}"
    );
    assert!(missing.message().contains("…(250 bytes)"), "{missing:?}");

    let mut store = stack.store.client().await.unwrap();
    let store_key = "q".repeat(1000);
    let missing = proto::store::v1::GetRequest {
        namespace: "cart".into(),
        key: store_key.clone(),
    };
    let missing = store.get(missing).await.unwrap_err();
    assert_eq!(missing.code(), Code::NotFound, "{missing:?}");
    assert!(
        !quotes_too_much(missing.message().as_bytes()),
        "{missing:?}"
    );
    assert_eq!(lookup(&mut store, "cart", &store_key).await.unwrap(), None);
    start(&mut cart, "still-serving").await.unwrap();
}
