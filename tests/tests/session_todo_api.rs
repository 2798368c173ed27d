//! The to-do API, end to end: lists made on first use, entries listed by date, ids never reused.

use proto::session::v1::{DeleteEntryRequest, Entry, UpdateEntryRequest, WatchListRequest};
use tests::{
    SessionOptions,
    session_client::{add_entry, list_entries},
    spawn_session_stack,
    status::{assert_invalid_argument_naming, expect_code},
};
use tonic::Code;

fn entry(id: u64, date: &str, title: &str) -> Entry {
    Entry {
        id,
        date: date.to_owned(),
        title: title.to_owned(),
    }
}

#[tokio::test]
async fn entries_are_added_listed_by_date_updated_and_deleted() {
    let stack = spawn_session_stack(SessionOptions::new()).await;
    let mut todo = stack.session.todo().await;
    let list = "alice";

    // The first AddEntry creates the list; ids start at 1.
    let dentist = add_entry(&mut todo, list, "2026-03-02", "Dentist")
        .await
        .unwrap();
    let shopping = add_entry(&mut todo, list, "2026-03-01", "Shopping")
        .await
        .unwrap();
    let movies = add_entry(&mut todo, list, "2026-03-02", "Movies")
        .await
        .unwrap();
    assert_eq!(dentist, entry(1, "2026-03-02", "Dentist"));
    assert_eq!(shopping, entry(2, "2026-03-01", "Shopping"));
    assert_eq!(movies, entry(3, "2026-03-02", "Movies"));

    // All, ordered by date then id; or one date.
    assert_eq!(
        list_entries(&mut todo, list, "").await.unwrap(),
        vec![shopping.clone(), dentist.clone(), movies.clone()]
    );
    assert_eq!(
        list_entries(&mut todo, list, "2026-03-02").await.unwrap(),
        vec![dentist.clone(), movies.clone()]
    );
    assert_eq!(
        list_entries(&mut todo, list, "2026-04-01").await.unwrap(),
        vec![]
    );

    // Update the title only, then the date only: empty fields keep their value.
    let renamed = todo
        .update_entry(UpdateEntryRequest {
            list: list.into(),
            id: 1,
            date: String::new(),
            title: "Dentist at 9".into(),
            request_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(renamed, entry(1, "2026-03-02", "Dentist at 9"));
    let moved = todo
        .update_entry(UpdateEntryRequest {
            list: list.into(),
            id: 1,
            date: "2026-03-01".into(),
            title: String::new(),
            request_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(moved, entry(1, "2026-03-01", "Dentist at 9"));
    assert_eq!(
        list_entries(&mut todo, list, "2026-03-01").await.unwrap(),
        vec![moved.clone(), shopping.clone()]
    );

    todo.delete_entry(DeleteEntryRequest {
        list: list.into(),
        id: 2,
        request_id: String::new(),
    })
    .await
    .unwrap();
    assert_eq!(
        list_entries(&mut todo, list, "").await.unwrap(),
        vec![moved, movies]
    );
    expect_code(
        todo.delete_entry(DeleteEntryRequest {
            list: list.into(),
            id: 2,
            request_id: String::new(),
        })
        .await,
        Code::NotFound,
        "deleting an entry twice",
    );
    expect_code(
        todo.update_entry(UpdateEntryRequest {
            list: list.into(),
            id: 99,
            date: String::new(),
            title: "ghost".into(),
            request_id: String::new(),
        })
        .await,
        Code::NotFound,
        "updating an entry that never existed",
    );
}

#[tokio::test]
async fn entry_ids_are_never_reused_after_a_delete() {
    let stack = spawn_session_stack(SessionOptions::new()).await;
    let mut todo = stack.session.todo().await;
    let list = "bob";
    for title in ["one", "two", "three"] {
        add_entry(&mut todo, list, "2026-01-01", title)
            .await
            .unwrap();
    }

    // Deleting the newest entry must not hand its id out again.
    todo.delete_entry(DeleteEntryRequest {
        list: list.into(),
        id: 3,
        request_id: String::new(),
    })
    .await
    .unwrap();
    let next = add_entry(&mut todo, list, "2026-01-01", "four")
        .await
        .unwrap();

    assert_eq!(next.id, 4);
    let ids: Vec<u64> = list_entries(&mut todo, list, "")
        .await
        .unwrap()
        .iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(ids, vec![1, 2, 4]);
}

#[tokio::test]
async fn invalid_calendar_dates_are_invalid_argument_naming_date() {
    let stack = spawn_session_stack(SessionOptions::new()).await;
    let mut todo = stack.session.todo().await;
    let list = "carol";
    add_entry(&mut todo, list, "2028-02-29", "leap day exists")
        .await
        .unwrap();

    for bad in [
        "2026-02-30",
        "2026-02-29",
        "2026-13-01",
        "2026-00-10",
        "2026-04-31",
        "2026-1-1",
        "26-01-01",
        "2026/01/01",
        "tomorrow",
        "2026-01-01T00:00:00Z",
    ] {
        assert_invalid_argument_naming(
            add_entry(&mut todo, list, bad, "x").await,
            "date",
            &format!("AddEntry date {bad:?}"),
        );
        assert_invalid_argument_naming(
            list_entries(&mut todo, list, bad).await,
            "date",
            &format!("ListEntries date {bad:?}"),
        );
        assert_invalid_argument_naming(
            todo.update_entry(UpdateEntryRequest {
                list: list.into(),
                id: 1,
                date: bad.into(),
                title: String::new(),
                request_id: String::new(),
            })
            .await,
            "date",
            &format!("UpdateEntry date {bad:?}"),
        );
    }
    // Nothing was added or changed by the refused calls.
    assert_eq!(
        list_entries(&mut todo, list, "").await.unwrap(),
        vec![entry(1, "2028-02-29", "leap day exists")]
    );
}

#[tokio::test]
async fn a_never_used_list_is_not_found() {
    let stack = spawn_session_stack(SessionOptions::new()).await;
    let mut todo = stack.session.todo().await;
    let list = "never-used";

    expect_code(
        list_entries(&mut todo, list, "").await,
        Code::NotFound,
        "ListEntries on a never-used list",
    );
    expect_code(
        todo.update_entry(UpdateEntryRequest {
            list: list.into(),
            id: 1,
            date: String::new(),
            title: "x".into(),
            request_id: String::new(),
        })
        .await,
        Code::NotFound,
        "UpdateEntry on a never-used list",
    );
    expect_code(
        todo.delete_entry(DeleteEntryRequest {
            list: list.into(),
            id: 1,
            request_id: String::new(),
        })
        .await,
        Code::NotFound,
        "DeleteEntry on a never-used list",
    );
    expect_code(
        todo.watch_list(WatchListRequest { list: list.into() })
            .await
            .map(|_| ()),
        Code::NotFound,
        "WatchList on a never-used list",
    );
    // Reads did not create it.
    expect_code(
        list_entries(&mut todo, list, "").await,
        Code::NotFound,
        "ListEntries after the refused calls",
    );
}

#[tokio::test]
async fn watch_list_streams_the_list_now_and_after_every_change() {
    let stack = spawn_session_stack(SessionOptions::new()).await;
    let mut todo = stack.session.todo().await;
    let list = "watched";
    add_entry(&mut todo, list, "2026-05-01", "first")
        .await
        .unwrap();
    let mut watch = todo
        .watch_list(WatchListRequest { list: list.into() })
        .await
        .unwrap()
        .into_inner();

    let now = watch.message().await.unwrap().expect("the current list");
    add_entry(&mut todo, list, "2026-05-02", "second")
        .await
        .unwrap();
    let changed = watch
        .message()
        .await
        .unwrap()
        .expect("the list after a change");

    assert_eq!(now.entries, vec![entry(1, "2026-05-01", "first")]);
    assert_eq!(changed.version, now.version + 1);
    assert_eq!(
        changed.entries,
        vec![
            entry(1, "2026-05-01", "first"),
            entry(2, "2026-05-02", "second")
        ]
    );
}
