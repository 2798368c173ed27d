//! Health and reflection: probes and tools such as grpcurl can use the server with no .proto
//! files at hand.

use base64::{Engine, engine::general_purpose::STANDARD as BASE64};
use tests::{
    StoreOptions, StoreProcess, grpcurl::grpcurl_ok, spawn_store, spawn_store_and_client,
    store_client::get,
};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};
use tonic_reflection::pb::{v1, v1alpha};

const STORE_SERVICE: &str = "store.v1.StoreService";
const HEALTH_SERVICE: &str = "grpc.health.v1.Health";

/// The services the server lists through reflection v1.
async fn services_via_reflection_v1(store: &StoreProcess) -> Vec<String> {
    use v1::{
        ServerReflectionRequest, server_reflection_request::MessageRequest,
        server_reflection_response::MessageResponse,
    };
    let mut client =
        v1::server_reflection_client::ServerReflectionClient::new(store.channel().await.unwrap());
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut replies = client
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .expect("reflection v1 answers")
        .into_inner();
    match replies
        .message()
        .await
        .unwrap()
        .and_then(|reply| reply.message_response)
    {
        Some(MessageResponse::ListServicesResponse(list)) => {
            list.service.into_iter().map(|s| s.name).collect()
        }
        other => panic!("reflection v1 ListServices answered {other:?}"),
    }
}

/// The services the server lists through reflection v1alpha (what grpcurl 1.8 speaks).
async fn services_via_reflection_v1alpha(store: &StoreProcess) -> Vec<String> {
    use v1alpha::{
        ServerReflectionRequest, server_reflection_request::MessageRequest,
        server_reflection_response::MessageResponse,
    };
    let mut client = v1alpha::server_reflection_client::ServerReflectionClient::new(
        store.channel().await.unwrap(),
    );
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut replies = client
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .expect("reflection v1alpha answers")
        .into_inner();
    match replies
        .message()
        .await
        .unwrap()
        .and_then(|reply| reply.message_response)
    {
        Some(MessageResponse::ListServicesResponse(list)) => {
            list.service.into_iter().map(|s| s.name).collect()
        }
        other => panic!("reflection v1alpha ListServices answered {other:?}"),
    }
}

/// A JSON uint64: proto3 JSON writes it as a string, but accept a number too.
fn json_u64(value: &serde_json::Value) -> Option<u64> {
    value.as_u64().or_else(|| value.as_str()?.parse().ok())
}

#[tokio::test]
async fn health_reports_serving_for_the_server_and_the_store_service() {
    let store = spawn_store().await;
    let mut health = HealthClient::new(store.channel().await.unwrap());

    for service in ["", STORE_SERVICE] {
        let request = HealthCheckRequest {
            service: service.to_owned(),
        };
        let status = health.check(request).await.unwrap().into_inner().status;
        assert_eq!(
            status,
            ServingStatus::Serving as i32,
            "health of {service:?}"
        );
    }
}

#[tokio::test]
async fn reflection_v1_and_v1alpha_list_the_store_and_health_services() {
    let store = spawn_store().await;

    for services in [
        services_via_reflection_v1(&store).await,
        services_via_reflection_v1alpha(&store).await,
    ] {
        assert!(
            services.iter().any(|s| s == STORE_SERVICE),
            "listed: {services:?}"
        );
        assert!(
            services.iter().any(|s| s == HEALTH_SERVICE),
            "listed: {services:?}"
        );
    }
}

#[tokio::test]
async fn grpcurl_lists_the_store_and_health_services() {
    let store = spawn_store().await;
    let addr = store.addr().to_string();

    let listed = grpcurl_ok(&["-plaintext", &addr, "list"]).await;

    let services: Vec<&str> = listed.lines().map(str::trim).collect();
    assert!(
        services.contains(&STORE_SERVICE),
        "grpcurl list printed:\n{listed}"
    );
    assert!(
        services.contains(&HEALTH_SERVICE),
        "grpcurl list printed:\n{listed}"
    );
}

#[tokio::test]
async fn grpcurl_can_put_and_get_through_reflection_alone() {
    let (store, mut client) = spawn_store_and_client(StoreOptions::new()).await;
    let addr = store.addr().to_string();
    let value = BASE64.encode("hello from grpcurl");

    let put_request = format!(
        r#"{{"namespace":"grpcurl","key":"greeting","value":"{value}","expected_version":0}}"#
    );
    let put_reply = grpcurl_ok(&[
        "-plaintext",
        "-d",
        &put_request,
        &addr,
        "store.v1.StoreService/Put",
    ])
    .await;
    let get_reply = grpcurl_ok(&[
        "-plaintext",
        "-d",
        r#"{"namespace":"grpcurl","key":"greeting"}"#,
        &addr,
        "store.v1.StoreService/Get",
    ])
    .await;

    let put_json: serde_json::Value = serde_json::from_str(&put_reply).expect("Put prints JSON");
    assert_eq!(
        json_u64(&put_json["version"]),
        Some(1),
        "Put printed {put_reply}"
    );
    let get_json: serde_json::Value = serde_json::from_str(&get_reply).expect("Get prints JSON");
    assert_eq!(
        get_json["value"].as_str(),
        Some(value.as_str()),
        "Get printed {get_reply}"
    );
    assert_eq!(
        json_u64(&get_json["version"]),
        Some(1),
        "Get printed {get_reply}"
    );
    // And the gRPC API agrees with what grpcurl wrote.
    assert_eq!(
        get(&mut client, "grpcurl", "greeting").await.unwrap().value,
        b"hello from grpcurl"
    );
}
