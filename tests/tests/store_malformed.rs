//! Malformed bodies: a request that does not decode as its protobuf message is the caller's
//! mistake, INVALID_ARGUMENT, never INTERNAL, and the server keeps serving.
//!
//! The generated client cannot send such bodies, so these tests send bytes through
//! `tests::raw_bytes`.

use prost::Message;
use proto::store::v1::{
    CommitRequest, GetRequest, PutRequest, PutResponse, ScanRequest, store_service_client,
};
use tests::{
    StoreClient, StoreOptions, StoreProcess,
    raw_bytes::call_raw,
    raw_bytes::length_delimited_field,
    spawn_store_and_client,
    status::expect_code,
    store_client::{get, lookup, put, put_mutation},
};
use tonic::{Code, transport::Channel};

const NS: &str = "malformed";

/// Every method of store.v1.StoreService.
const METHODS: [&str; 6] = ["Get", "Put", "Delete", "Scan", "BatchWrite", "Commit"];

/// `PutRequest.key`'s field number in store.proto.
const PUT_KEY_FIELD: u32 = 2;
/// `PutRequest.namespace`'s field number.
const PUT_NAMESPACE_FIELD: u32 = 1;
/// `PutRequest.expected_version`'s field number (a varint).
const PUT_EXPECTED_VERSION_FIELD: u32 = 4;

/// Bytes that are not UTF-8: a lone continuation byte, then a byte UTF-8 never uses.
const NOT_UTF8: &[u8] = b"k\x80\xff";

/// The gRPC path of `method` of the store service.
fn path(method: &str) -> String {
    format!("/store.v1.StoreService/{method}")
}

/// A valid Put of `key`, encoded.
fn put_body(key: &str) -> Vec<u8> {
    PutRequest {
        namespace: NS.to_owned(),
        key: key.to_owned(),
        value: b"v".to_vec(),
        expected_version: 0,
    }
    .encode_to_vec()
}

/// `body` followed by one more length-delimited field.
fn with_field(mut body: Vec<u8>, field_number: u32, bytes: &[u8]) -> Vec<u8> {
    body.extend(length_delimited_field(field_number, bytes));
    body
}

/// A new connection to `store`, for raw calls.
async fn channel(store: &StoreProcess) -> Channel {
    store.channel().await.expect("connecting to store-svc")
}

/// Sends `body` to `method` and asserts INVALID_ARGUMENT.
async fn assert_refused_as_invalid(store: &StoreProcess, method: &str, body: Vec<u8>, case: &str) {
    let outcome = call_raw(channel(store).await, &path(method), body).await;
    let status = expect_code(outcome, Code::InvalidArgument, &format!("{method}: {case}"));
    assert!(
        !status.message().is_empty(),
        "{method}: {case}: INVALID_ARGUMENT should say what did not decode"
    );
}

/// A valid write and read still work after the garbage.
async fn assert_still_serving(client: &mut StoreClient, key: &str) {
    assert_eq!(put(client, NS, key, "fine", 0).await.unwrap(), 1);
    assert_eq!(get(client, NS, key).await.unwrap().value, b"fine");
}

#[tokio::test]
async fn a_well_formed_body_sent_as_raw_bytes_is_served() {
    // The control for every other test here: the raw path itself works, so a refusal below is
    // the server's verdict on the bytes.
    let (store, mut client) = spawn_store_and_client(StoreOptions::new()).await;

    let answer = call_raw(channel(&store).await, &path("Put"), put_body("raw"))
        .await
        .expect("a valid PutRequest sent as raw bytes");

    let response = PutResponse::decode(answer.as_slice()).expect("the answer is a PutResponse");
    assert_eq!(response.version, 1);
    assert_eq!(get(&mut client, NS, "raw").await.unwrap().value, b"v");
}

#[tokio::test]
async fn unknown_fields_are_skipped_as_protobuf_requires() {
    let (store, mut client) = spawn_store_and_client(StoreOptions::new()).await;

    let body = with_field(put_body("extended"), 99, b"from a newer client");
    call_raw(channel(&store).await, &path("Put"), body)
        .await
        .expect("a Put with an unknown field");

    assert_eq!(get(&mut client, NS, "extended").await.unwrap().version, 1);
}

#[tokio::test]
async fn bytes_that_are_not_protobuf_are_invalid_argument_on_every_method() {
    let (store, mut client) = spawn_store_and_client(StoreOptions::new()).await;

    for method in METHODS {
        // 0xff 0xff 0xff: a varint tag that never ends.
        assert_refused_as_invalid(&store, method, b"\xff\xff\xff".to_vec(), "bytes ff ff ff").await;
    }

    assert_still_serving(&mut client, "after-garbage").await;
}

#[tokio::test]
async fn a_put_whose_key_is_not_utf8_is_invalid_argument_and_writes_nothing() {
    let (store, mut client) = spawn_store_and_client(StoreOptions::new()).await;
    // A valid Put of "k", whose key field is then replaced by bytes that are not UTF-8.
    let body = with_field(put_body("k"), PUT_KEY_FIELD, NOT_UTF8);

    assert_refused_as_invalid(&store, "Put", body, "a key that is not UTF-8").await;

    assert_eq!(
        lookup(&mut client, NS, "k").await.unwrap(),
        None,
        "the refused Put wrote its key before the bad one"
    );
    assert_still_serving(&mut client, "after-bad-key").await;
}

#[tokio::test]
async fn strings_that_are_not_utf8_are_invalid_argument_wherever_they_are() {
    let (store, mut client) = spawn_store_and_client(StoreOptions::new()).await;
    let get_body = GetRequest {
        namespace: NS.to_owned(),
        key: String::new(),
    }
    .encode_to_vec();
    let scan_body = ScanRequest {
        namespace: NS.to_owned(),
        ..ScanRequest::default()
    }
    .encode_to_vec();
    // A commit whose second mutation's put key is not UTF-8, two messages deep.
    let mut commit = CommitRequest {
        mutations: vec![put_mutation(NS, "first", "v", 0)],
    }
    .encode_to_vec();
    let bad_put = with_field(put_body("second"), PUT_KEY_FIELD, NOT_UTF8);
    let bad_mutation = length_delimited_field(1, &bad_put); // Mutation.put
    commit.extend(length_delimited_field(1, &bad_mutation)); // CommitRequest.mutations

    let cases = [
        (
            "Put",
            with_field(put_body("k"), PUT_NAMESPACE_FIELD, NOT_UTF8),
            "a namespace that is not UTF-8",
        ),
        (
            "Get",
            with_field(get_body, 2, NOT_UTF8),
            "a key that is not UTF-8",
        ),
        (
            "Scan",
            with_field(scan_body, 2, NOT_UTF8),
            "a prefix that is not UTF-8",
        ),
        ("Commit", commit, "a mutation's key that is not UTF-8"),
    ];
    for (method, body, case) in cases {
        assert_refused_as_invalid(&store, method, body, case).await;
    }

    assert_eq!(
        lookup(&mut client, NS, "first").await.unwrap(),
        None,
        "the refused commit applied its valid first mutation"
    );
    assert_still_serving(&mut client, "after-bad-strings").await;
}

#[tokio::test]
async fn truncated_bodies_and_wrong_wire_types_are_invalid_argument() {
    let (store, mut client) = spawn_store_and_client(StoreOptions::new()).await;
    let whole = put_body("truncated");
    let truncated = whole[..whole.len() - 1].to_vec();
    // expected_version is a varint; here it comes as a length-delimited field.
    let wrong_wire_type = with_field(put_body("wire"), PUT_EXPECTED_VERSION_FIELD, b"\x01");
    // A length that runs past the end of the body.
    let overlong = vec![0x12, 0x7f, b'k'];

    for (body, case) in [
        (truncated, "a Put cut off inside its last field"),
        (wrong_wire_type, "expected_version sent as bytes"),
        (overlong, "a key whose length runs past the body"),
    ] {
        assert_refused_as_invalid(&store, "Put", body, case).await;
    }

    for key in ["truncated", "wire", "k"] {
        assert_eq!(lookup(&mut client, NS, key).await.unwrap(), None, "{key}");
    }
    assert_still_serving(&mut client, "after-truncation").await;
}

#[tokio::test]
async fn garbage_does_not_break_the_connection_it_came_on() {
    // One HTTP/2 connection carries the garbage and then a valid call: a decode error must end
    // the one call, not the connection other calls share.
    let (store, _client) = spawn_store_and_client(StoreOptions::new()).await;
    let shared = channel(&store).await;

    let garbage = call_raw(shared.clone(), &path("Put"), b"\xff\xff\xff".to_vec()).await;
    expect_code(garbage, Code::InvalidArgument, "garbage Put");

    let mut client = store_service_client::StoreServiceClient::new(shared);
    assert_still_serving(&mut client, "same-connection").await;
}
