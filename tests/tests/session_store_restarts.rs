//! store-svc restarting under load, as a rolling update does it: SIGTERM, exit, start again on
//! the same address and data. session-svc's clients must see only OK or UNAVAILABLE (the
//! outcome rule: retry with the same request id), never INTERNAL, and session-svc logs each
//! outage once when it starts and once when it ends, naming the store's address.

use std::{
    collections::BTreeMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use tests::{
    SessionOptions, StoreOptions,
    session_client::{add_request, start, with_timeout},
    spawn_session, spawn_store_at, spawn_store_with,
};
use tonic::Code;

/// Concurrent writers, each on its own cart, one AddItem in flight at a time.
const WRITERS: usize = 8;
/// Store restarts while they write.
const CYCLES: usize = 4;
/// Per-request deadline: long enough that a store restart never exhausts it.
const REQUEST_DEADLINE: Duration = Duration::from_secs(5);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_restarts_under_additem_load_answer_only_ok_or_unavailable() {
    let data = tempfile::tempdir().unwrap();
    let store = spawn_store_with(StoreOptions::new().data_dir(data.path())).await;
    let store_addr = store.addr();
    let mut store = Some(store.into_process());
    let session = spawn_session(&format!("http://{store_addr}"), SessionOptions::new()).await;
    let mut cart = session.cart().await;
    for writer in 0..WRITERS {
        start(&mut cart, &format!("restart-{writer}"))
            .await
            .unwrap();
    }

    let codes = Arc::new(Mutex::new(BTreeMap::<String, u64>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for writer in 0..WRITERS {
        let (mut cart, codes, stop) = (cart.clone(), codes.clone(), stop.clone());
        writers.push(tokio::spawn(async move {
            let key = format!("restart-{writer}");
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let mut request = add_request(&key, "SKU", 1, 100);
                request.request_id = format!("{key}-{n}");
                let code = match cart.add_item(with_timeout(request, REQUEST_DEADLINE)).await {
                    Ok(_) => Code::Ok,
                    Err(status) => {
                        if !matches!(status.code(), Code::Unavailable) {
                            eprintln!("writer {writer}: {status:?}");
                        }
                        // Back off a little, as a client retrying UNAVAILABLE would.
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        status.code()
                    }
                };
                *codes
                    .lock()
                    .unwrap()
                    .entry(format!("{code:?}"))
                    .or_default() += 1;
            }
        }));
    }

    for cycle in 0..CYCLES {
        tokio::time::sleep(Duration::from_millis(700)).await;
        let mut old = store.take().unwrap();
        old.terminate().await.unwrap();
        let exit = old.wait().await.unwrap();
        assert!(exit.success(), "store-svc exited {exit} in cycle {cycle}");
        tokio::time::sleep(Duration::from_millis(300)).await;
        store = Some(spawn_store_at(store_addr, data.path()).await);
    }
    let before_last = codes.lock().unwrap().get("Ok").copied().unwrap_or(0);
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    for writer in writers {
        writer.await.unwrap();
    }

    let codes = codes.lock().unwrap().clone();
    eprintln!("answers over {CYCLES} store restarts: {codes:?}");
    for code in codes.keys() {
        assert!(
            code == "Ok" || code == "Unavailable",
            "a client saw {code} during store restarts: {codes:?}"
        );
    }
    assert!(
        codes["Ok"] > before_last,
        "no write succeeded after the last restart: {codes:?}"
    );

    // Each outage is logged once when it starts and once when it ends, naming the store.
    let log = std::fs::read_to_string(session.stderr_path()).unwrap();
    let down: Vec<&str> = log
        .lines()
        .filter(|line| line.contains("store-svc is unreachable"))
        .collect();
    let up = log
        .lines()
        .filter(|line| line.contains("store-svc is reachable again"))
        .count();
    assert!(
        !down.is_empty() && down.len() <= CYCLES,
        "{} outage-start lines for {CYCLES} restarts:\n{}",
        down.len(),
        down.join("\n")
    );
    assert_eq!(up, down.len(), "every outage that started ended:\n{log}");
    let store_addr = store_addr.to_string();
    assert!(
        down.iter().all(|line| line.contains(&store_addr)),
        "outage lines name the store {store_addr}:\n{}",
        down.join("\n")
    );
}
