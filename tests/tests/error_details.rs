//! Every non-OK status carries `google.rpc.ErrorInfo` with a stable reason and the service's
//! domain: the services' own errors with a precise reason, and statuses made elsewhere (tonic's
//! UNIMPLEMENTED, the admin check) with theirs or the code's name. Details that were already
//! there (BadRequest, RetryInfo) are kept beside it.

use std::time::Duration;

use tests::{
    SessionOptions,
    raw_bytes::call_raw,
    session::ADMIN_TOKEN,
    session_client::{add_item, get_session, start},
    spawn_session_stack,
    store_client::put,
};
use tonic::{Code, Status};
use tonic_types::StatusExt;

/// The status's ErrorInfo as `(reason, domain)`; panics without one.
fn info(status: &Status) -> (String, String) {
    let info = status
        .get_details_error_info()
        .unwrap_or_else(|| panic!("no ErrorInfo in {status:?}"));
    (info.reason, info.domain)
}

fn pair(reason: &str, domain: &str) -> (String, String) {
    (reason.to_owned(), domain.to_owned())
}

#[tokio::test]
async fn every_failure_names_its_reason_and_domain() {
    let stack = spawn_session_stack(SessionOptions::new().max_watchers_per_key(1)).await;
    let mut cart = stack.session.cart().await;

    let missing = get_session(&mut cart, "details/none").await.unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    assert_eq!(info(&missing), pair("SESSION_NOT_FOUND", "session.v1"));

    start(&mut cart, "details/1").await.unwrap();
    let zero = add_item(&mut cart, "details/1", "A", 0, 100)
        .await
        .unwrap_err();
    assert_eq!(zero.code(), Code::InvalidArgument);
    assert_eq!(info(&zero), pair("INVALID_FIELD", "session.v1"));
    assert_eq!(
        zero.get_details_bad_request().unwrap().field_violations[0].field,
        "quantity"
    );

    add_item(&mut cart, "details/1", "A", 1, 100).await.unwrap();
    cart.checkout(proto::session::v1::CheckoutRequest {
        key: "details/1".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let closed = add_item(&mut cart, "details/1", "A", 1, 100)
        .await
        .unwrap_err();
    assert_eq!(closed.code(), Code::FailedPrecondition);
    assert_eq!(info(&closed), pair("CART_CHECKED_OUT", "session.v1"));

    // A second watcher of one key beyond --max-watchers-per-key 1: RetryInfo and ErrorInfo.
    start(&mut cart, "details/2").await.unwrap();
    let _first = cart
        .watch_session(proto::session::v1::WatchSessionRequest {
            key: "details/2".into(),
        })
        .await
        .unwrap();
    // The refusal may come as the call's status or as the stream's first item.
    let refused = match cart
        .watch_session(proto::session::v1::WatchSessionRequest {
            key: "details/2".into(),
        })
        .await
    {
        Err(status) => status,
        Ok(stream) => stream.into_inner().message().await.unwrap_err(),
    };
    assert_eq!(refused.code(), Code::ResourceExhausted);
    assert_eq!(info(&refused), pair("WATCHER_LIMIT", "session.v1"));
    assert!(refused.get_details_retry_info().unwrap().retry_delay > Some(Duration::ZERO));

    // The admin check is an interceptor, outside the error enum: its reason all the same.
    let mut admin = proto::session::v1::admin_service_client::AdminServiceClient::new(
        tonic::transport::Endpoint::from_shared(stack.session.endpoint())
            .unwrap()
            .connect()
            .await
            .unwrap(),
    );
    let anonymous = admin
        .get_stats(proto::session::v1::GetStatsRequest {})
        .await
        .unwrap_err();
    assert_eq!(anonymous.code(), Code::Unauthenticated);
    assert_eq!(info(&anonymous), pair("ADMIN_TOKEN_REQUIRED", "session.v1"));
    let mut request = tonic::Request::new(proto::session::v1::GetStatsRequest {});
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {ADMIN_TOKEN}").parse().unwrap(),
    );
    admin.get_stats(request).await.unwrap();

    // tonic's own UNIMPLEMENTED for a method no server has: the code's name, each domain.
    for (endpoint, domain) in [
        (stack.session.endpoint(), "session.v1"),
        (stack.store.endpoint(), "store.v1"),
    ] {
        let channel = tonic::transport::Endpoint::from_shared(endpoint)
            .unwrap()
            .connect()
            .await
            .unwrap();
        let status = call_raw(channel, "/nowhere.v1.Nothing/Nope", Vec::new())
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unimplemented);
        assert_eq!(info(&status), pair("UNIMPLEMENTED", domain));
    }

    // store-svc: a version conflict names the current version in the ErrorInfo's metadata.
    let mut store = stack.store.client().await.unwrap();
    let conflict = put(&mut store, "cart", "details/raw2", b"v".to_vec(), 7)
        .await
        .unwrap_err();
    assert_eq!(conflict.code(), Code::Aborted);
    let details = conflict.get_details_error_info().unwrap();
    assert_eq!(
        (details.reason.as_str(), details.domain.as_str()),
        ("VERSION_CONFLICT", "store.v1")
    );
    assert_eq!(
        details.metadata.get("current_version").map(String::as_str),
        Some("0")
    );
}
