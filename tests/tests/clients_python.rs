//! session-svc and store-svc from Python, the way a user's service calls them: grpcio with
//! stubs generated from `proto/` by grpcio-tools, rich errors decoded with grpcio-status. The
//! suite is `tests/clients/python/clients_test.py`; each test here starts the stack one of its
//! classes needs, does what the error case needs on the server side (kill or freeze
//! store-svc), and runs that class. `.ci/clients.sh` installs the packages and the stubs.

use std::time::Duration;

use tests::{
    SessionOptions,
    clients::{ClientStack, Frozen},
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cart_and_a_to_do_list_from_python() {
    ClientStack::spawn(SessionOptions::new())
        .await
        .python(&["Scenarios"])
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_reads_the_error_contract_of_a_healthy_stack() {
    // INVALID_ARGUMENT, NOT_FOUND, FAILED_PRECONDITION, ABORTED (store-svc), UNAUTHENTICATED.
    ClientStack::spawn(SessionOptions::new())
        .await
        .python(&["Errors"])
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sees_resource_exhausted_beyond_the_watchers_per_key() {
    ClientStack::spawn(SessionOptions::new().max_watchers_per_key(1))
        .await
        .python(&["WatcherLimit"])
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sees_permission_denied_with_the_admin_api_off() {
    ClientStack::spawn_with_token(SessionOptions::new(), "")
        .await
        .python(&["AdminOff"])
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sees_unavailable_with_the_store_down() {
    let mut stack = ClientStack::spawn(SessionOptions::new()).await;
    stack.store.kill().await.expect("SIGKILL store-svc");
    stack.python(&["StoreDown"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sees_a_server_sent_deadline_exceeded_that_was_not_applied() {
    let stack = ClientStack::spawn(SessionOptions::new().default_deadline("1s")).await;
    stack.python(&["ServerDeadline.test_1_prepare"]).await;
    let frozen = Frozen::freeze(stack.store.pid());
    stack
        .python(&["ServerDeadline.test_2_server_deadline"])
        .await;
    frozen.thaw();
    // Let the store answer what waited for it while frozen before checking.
    tokio::time::sleep(Duration::from_millis(500)).await;
    stack.python(&["ServerDeadline.test_3_not_applied"]).await;
}
