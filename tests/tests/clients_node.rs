//! session-svc and store-svc from Node, the way a user's service calls them: @grpc/grpc-js with
//! clients that @grpc/proto-loader builds from `proto/`, rich errors decoded from the
//! grpc-status-details-bin trailer with protobufjs. The suite is `tests/clients/node/test/`;
//! each test here starts the stack one of its files needs, does what the error case needs on
//! the server side (kill or freeze store-svc), and runs that file with `node --test`.
//! `.ci/clients.sh` installs the packages (`npm ci`).

use std::time::Duration;

use tests::{
    SessionOptions,
    clients::{ClientStack, Frozen},
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cart_and_a_to_do_list_from_node() {
    ClientStack::spawn(SessionOptions::new())
        .await
        .node("scenarios.test.mjs")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_reads_the_error_contract_of_a_healthy_stack() {
    // INVALID_ARGUMENT, NOT_FOUND, FAILED_PRECONDITION, ABORTED (store-svc), UNAUTHENTICATED.
    ClientStack::spawn(SessionOptions::new())
        .await
        .node("errors.test.mjs")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_sees_resource_exhausted_beyond_the_watchers_per_key() {
    ClientStack::spawn(SessionOptions::new().max_watchers_per_key(1))
        .await
        .node("watcher-limit.test.mjs")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_sees_permission_denied_with_the_admin_api_off() {
    ClientStack::spawn_with_token(SessionOptions::new(), "")
        .await
        .node("admin-off.test.mjs")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_sees_unavailable_with_the_store_down() {
    let mut stack = ClientStack::spawn(SessionOptions::new()).await;
    stack.store.kill().await.expect("SIGKILL store-svc");
    stack.node("store-down.test.mjs").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_sees_a_server_sent_deadline_exceeded_that_was_not_applied() {
    let stack = ClientStack::spawn(SessionOptions::new().default_deadline("1s")).await;
    stack.node("deadline-1-prepare.test.mjs").await;
    let frozen = Frozen::freeze(stack.store.pid());
    stack.node("deadline-2-server-deadline.test.mjs").await;
    frozen.thaw();
    // Let the store answer what waited for it while frozen before checking.
    tokio::time::sleep(Duration::from_millis(500)).await;
    stack.node("deadline-3-not-applied.test.mjs").await;
}
