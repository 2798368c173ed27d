//! grpcurl through reflection alone: an operator with no .proto files can list the services and
//! walk a cart.

use serde_json::Value;
use tests::{
    SessionOptions,
    grpcurl::grpcurl_ok,
    session_client::{get_session, quantity_of},
    spawn_session_stack,
};

const SERVICES: [&str; 5] = [
    "session.v1.CartService",
    "session.v1.TodoService",
    "session.v1.InventoryService",
    "session.v1.AdminService",
    "grpc.health.v1.Health",
];

/// A JSON uint64: proto3 JSON writes it as a string, but accept a number too.
fn json_u64(value: &Value) -> Option<u64> {
    value.as_u64().or_else(|| value.as_str()?.parse().ok())
}

/// A field by its proto name or its lowerCamelCase JSON name (grpcurl versions differ).
fn field<'a>(object: &'a Value, proto_name: &str, json_name: &str) -> &'a Value {
    let by_proto = &object[proto_name];
    if by_proto.is_null() {
        &object[json_name]
    } else {
        by_proto
    }
}

#[tokio::test]
async fn grpcurl_lists_the_session_services_and_health() {
    let stack = spawn_session_stack(SessionOptions::new()).await;
    let addr = stack.session.addr().to_string();

    let listed = grpcurl_ok(&["-plaintext", &addr, "list"]).await;

    let services: Vec<&str> = listed.lines().map(str::trim).collect();
    for service in SERVICES {
        assert!(
            services.contains(&service),
            "grpcurl list should show {service}; it printed:\n{listed}"
        );
    }
}

#[tokio::test]
async fn grpcurl_can_start_a_session_add_an_item_and_read_it_back() {
    let stack = spawn_session_stack(SessionOptions::new()).await;
    let addr = stack.session.addr().to_string();
    let call = |method: &'static str, body: String| {
        let addr = addr.clone();
        async move {
            let printed = grpcurl_ok(&[
                "-plaintext",
                "-d",
                &body,
                &addr,
                &format!("session.v1.CartService/{method}"),
            ])
            .await;
            serde_json::from_str::<Value>(&printed)
                .unwrap_or_else(|e| panic!("{method} printed non-JSON ({e}):\n{printed}"))
        }
    };

    let started = call(
        "StartSession",
        r#"{"domain":"shop.example","member_id":"m-1"}"#.to_owned(),
    )
    .await;
    let key = started["key"]
        .as_str()
        .unwrap_or_else(|| panic!("StartSession printed no key: {started}"))
        .to_owned();
    let added = call(
        "AddItem",
        format!(
            r#"{{"key":"{key}","sku":"GRPCURL-1","name":"Curl","quantity":2,
                "unit_price":{{"currency_code":"USD","minor_units":"1250"}}}}"#
        ),
    )
    .await;
    let read = call("GetSession", format!(r#"{{"key":"{key}"}}"#)).await;

    assert_eq!(json_u64(&started["version"]), Some(1), "{started}");
    assert_eq!(json_u64(&added["version"]), Some(2), "{added}");
    assert_eq!(read, added, "GetSession shows what AddItem answered");
    let item = &read["items"][0];
    assert_eq!(item["sku"], "GRPCURL-1", "{read}");
    assert_eq!(item["quantity"], 2, "{read}");
    let price = field(item, "unit_price", "unitPrice");
    assert_eq!(field(price, "currency_code", "currencyCode"), "USD");
    assert_eq!(
        json_u64(field(price, "minor_units", "minorUnits")),
        Some(1250)
    );
    // The gRPC API agrees with what grpcurl did.
    let mut cart = stack.session.cart().await;
    let session = get_session(&mut cart, &key).await.unwrap();
    assert_eq!(quantity_of(&session, "GRPCURL-1"), 2);
    assert_eq!(session.member_id, "m-1");
}
