//! The observer's commands (actors, actor, kill, stats) and the cart, to-do and stock ones.

use std::{future::Future, time::Duration};

use proto::session::v1::{
    Actor, ActorStatus, AddEntryRequest, GetActorRequest, GetSessionRequest, GetStatsRequest,
    GetStockRequest, KillActorRequest, ListActorsRequest, ListEntriesRequest,
    ListSessionEventsRequest, Session, SetStockRequest, Stats, Stock,
};
use serde_json::Value;
use tonic::Status;

use crate::{
    cli::{CartCommand, StatusFilter, StockCommand, TodoCommand},
    client::{Conn, Failure, Outcome, ctrl_c, emit},
    format::{
        actor_status_cell, discount_cell, duration_cell, fields, money_cell, render,
        session_status_cell, table, timestamp_cell,
    },
    json,
};

/// Page asked for when following pages, unless --page-size says (the servers cap theirs at
/// 1000).
pub const PAGE_SIZE: i32 = 1000;

/// Prints `value` as indented JSON.
pub fn emit_json(value: &Value) -> Outcome {
    emit(&format!("{value:#}\n"))
}

/// Every item of a paged list: `fetch(token)` answers one page and the next token, empty on
/// the last page.
pub async fn all_pages<T, F, Fut>(mut fetch: F) -> Outcome<Vec<T>>
where
    F: FnMut(String) -> Fut,
    Fut: Future<Output = Result<(Vec<T>, String), Status>>,
{
    let mut items = Vec::new();
    let mut token = String::new();
    loop {
        let (page, next) = fetch(token.clone()).await?;
        items.extend(page);
        if next.is_empty() {
            return Ok(items);
        }
        if next == token {
            return Err(Failure::Other(format!(
                "the server answered the page token {next:?} with itself as the next one"
            )));
        }
        token = next;
    }
}

/// `actors`.
pub async fn actors(
    conn: &Conn,
    kind: Option<String>,
    status: Option<StatusFilter>,
    as_json: bool,
) -> Outcome {
    let admin = conn.admin();
    let kind = kind.unwrap_or_default();
    let status = status.map_or(ActorStatus::Unspecified, StatusFilter::wire) as i32;
    let actors: Vec<Actor> = all_pages(|page_token| {
        let mut admin = admin.clone();
        let request = conn.unary(ListActorsRequest {
            kind: kind.clone(),
            status,
            page_size: conn.page_size(PAGE_SIZE),
            page_token,
        });
        async move {
            let page = admin.list_actors(request).await?.into_inner();
            Ok((page.actors, page.next_page_token))
        }
    })
    .await?;
    if as_json {
        return emit_json(&actors.iter().map(json::actor).collect());
    }
    let mut rows = table([
        "KIND",
        "KEY",
        "STATUS",
        "MAILBOX",
        "IDLE",
        "RESTARTS",
        "QUARANTINED UNTIL",
    ]);
    for a in &actors {
        rows.add_row(vec![
            a.kind.clone(),
            a.key.clone(),
            actor_status_cell(a.status),
            a.mailbox_len.to_string(),
            duration_cell(a.idle.as_ref()),
            a.restarts.to_string(),
            timestamp_cell(a.quarantined_until.as_ref()),
        ]);
    }
    emit(&render(&rows))
}

/// `actor KIND KEY`.
pub async fn actor(conn: &Conn, kind: String, key: String, as_json: bool) -> Outcome {
    let a = conn
        .admin()
        .get_actor(conn.unary(GetActorRequest { kind, key }))
        .await?
        .into_inner();
    if as_json {
        return emit_json(&json::actor(&a));
    }
    emit(&render(&fields(vec![
        ("kind", a.kind.clone()),
        ("key", a.key.clone()),
        ("status", actor_status_cell(a.status)),
        ("mailbox_len", a.mailbox_len.to_string()),
        ("idle", duration_cell(a.idle.as_ref())),
        ("restarts", a.restarts.to_string()),
        ("state_bytes", a.state_bytes.to_string()),
        ("version", a.version.to_string()),
        ("activated", timestamp_cell(a.activated.as_ref())),
        ("last_active", timestamp_cell(a.last_active.as_ref())),
        (
            "quarantined_until",
            timestamp_cell(a.quarantined_until.as_ref()),
        ),
        ("watchers", a.watchers.to_string()),
        ("reminder", timestamp_cell(a.reminder.as_ref())),
        ("timers", a.timers.to_string()),
    ])))
}

/// `kill KIND KEY`.
pub async fn kill(conn: &Conn, kind: String, key: String, as_json: bool) -> Outcome {
    conn.admin()
        .kill_actor(conn.unary(KillActorRequest {
            kind: kind.clone(),
            key: key.clone(),
        }))
        .await?;
    if as_json {
        return emit_json(&serde_json::json!({"kind": kind, "key": key, "killed": true}));
    }
    emit(&format!(
        "killed {kind}/{key}: its supervisor restarts it from durable state on its next request\n"
    ))
}

/// `stats`, once or every `interval` until Ctrl-C.
pub async fn stats(conn: &Conn, watch: bool, interval: Duration, as_json: bool) -> Outcome {
    let admin = conn.admin();
    let fetch = || {
        let mut admin = admin.clone();
        let request = conn.unary(GetStatsRequest {});
        async move { Ok::<_, Failure>(admin.get_stats(request).await?.into_inner()) }
    };
    if !watch {
        let stats = fetch().await?;
        return if as_json {
            emit_json(&json::stats(&stats))
        } else {
            emit(&stats_text(&stats))
        };
    }
    let mut interrupted = ctrl_c()?;
    let refresh = async {
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let stats = fetch().await?;
            if as_json {
                emit(&format!("{}\n", json::stats(&stats)))?;
            } else {
                // Home, clear the screen, then draw: one frame per refresh, like `watch`.
                emit(&format!(
                    "\x1b[H\x1b[2Jsessionctl stats: {} every {} (Ctrl-C to stop)\n\n{}",
                    conn.addr(),
                    duration_cell(prost_types::Duration::try_from(interval).ok().as_ref()),
                    stats_text(&stats)
                ))?;
            }
        }
    };
    tokio::select! {
        failed = refresh => failed,
        _ = interrupted.recv() => Ok(()),
    }
}

/// GetStats as three tables: totals, per kind, the sweeper.
fn stats_text(s: &Stats) -> String {
    let store = s.store_calls.as_ref().map_or_else(
        || "-".to_owned(),
        |c| {
            format!(
                "{} calls, p50 {}, p99 {}",
                c.calls,
                duration_cell(c.p50.as_ref()),
                duration_cell(c.p99.as_ref())
            )
        },
    );
    let jobs = s.jobs.as_ref().map_or_else(
        || "-".to_owned(),
        |j| {
            format!(
                "uploading {}, pending {}, running {}, succeeded {}, failed {}, cancelled {}",
                j.uploading, j.pending, j.running, j.succeeded, j.failed, j.cancelled
            )
        },
    );
    let mut text = render(&fields(vec![
        (
            "live actors",
            format!("{} of {} at most", s.live_actors, s.max_actors),
        ),
        ("quarantined", s.quarantined.to_string()),
        ("uptime", duration_cell(s.uptime.as_ref())),
        ("store calls", store),
        ("jobs", jobs),
    ]));
    let mut kinds = table([
        "KIND",
        "LIVE",
        "QUARANTINED",
        "ACTIVATIONS",
        "PASSIVATIONS",
        "RESTARTS",
        "QUARANTINES",
        "MAILBOX FULL",
        "DEADLINE DROPS",
        "WATCHERS",
        "REMINDERS",
    ]);
    for k in &s.kinds {
        kinds.add_row(vec![
            k.kind.clone(),
            k.live.to_string(),
            k.quarantined.to_string(),
            k.activations.to_string(),
            k.passivations.to_string(),
            k.restarts.to_string(),
            k.quarantines.to_string(),
            k.mailbox_rejections.to_string(),
            k.deadline_drops.to_string(),
            k.watchers.to_string(),
            k.reminders_fired.to_string(),
        ]);
    }
    // A kind the server counts live but does not describe in `kinds` (an older server).
    for (kind, live) in &s.live_by_kind {
        if !s.kinds.iter().any(|k| &k.kind == kind) {
            let mut row = vec![kind.clone(), live.to_string()];
            row.resize(11, "-".to_owned());
            kinds.add_row(row);
        }
    }
    text.push('\n');
    text.push_str(&render(&kinds));
    if !s.sweeper.is_empty() {
        let mut sweeper = table([
            "SWEEPER JOB",
            "PASSES",
            "PASS SCANNED",
            "SCANNED",
            "ACTED",
            "FAILED",
        ]);
        for j in &s.sweeper {
            sweeper.add_row(vec![
                j.job.clone(),
                j.passes.to_string(),
                j.pass_scanned.to_string(),
                j.scanned.to_string(),
                j.acted.to_string(),
                j.failed.to_string(),
            ]);
        }
        text.push('\n');
        text.push_str(&render(&sweeper));
    }
    text
}

/// `cart show` and `cart events`.
pub async fn cart(conn: &Conn, command: CartCommand, as_json: bool) -> Outcome {
    let cart = conn.cart();
    match command {
        CartCommand::Show { key } => {
            let session = cart
                .clone()
                .get_session(conn.unary(GetSessionRequest { key }))
                .await?
                .into_inner();
            if as_json {
                emit_json(&json::session(&session))
            } else {
                emit(&session_text(&session))
            }
        }
        CartCommand::Events { key } => {
            let events = all_pages(|page_token| {
                let mut cart = cart.clone();
                let request = conn.unary(ListSessionEventsRequest {
                    key: key.clone(),
                    page_size: conn.page_size(PAGE_SIZE),
                    page_token,
                });
                async move {
                    let page = cart.list_session_events(request).await?.into_inner();
                    Ok((page.events, page.next_page_token))
                }
            })
            .await?;
            if as_json {
                return emit_json(&events.iter().map(json::log_entry).collect());
            }
            let mut rows = table(["SEQUENCE", "TIME", "EVENT", "DETAIL"]);
            for e in &events {
                rows.add_row(vec![
                    e.sequence.to_string(),
                    timestamp_cell(e.time.as_ref()),
                    e.event.clone(),
                    e.detail.clone(),
                ]);
            }
            emit(&render(&rows))
        }
    }
}

/// A session: its fields, then its items, discounts and latest events.
fn session_text(s: &Session) -> String {
    let or_dash = |text: &str| {
        if text.is_empty() {
            "-".to_owned()
        } else {
            text.to_owned()
        }
    };
    let mut text = render(&fields(vec![
        ("key", s.key.clone()),
        ("status", session_status_cell(s.status)),
        ("version", s.version.to_string()),
        ("domain", or_dash(&s.domain)),
        ("landing", or_dash(&s.landing)),
        ("ip", or_dash(&s.ip)),
        ("member_id", or_dash(&s.member_id)),
        ("create_time", timestamp_cell(s.create_time.as_ref())),
        ("update_time", timestamp_cell(s.update_time.as_ref())),
        ("subtotal", money_cell(s.subtotal.as_ref())),
        ("discount_total", money_cell(s.discount_total.as_ref())),
        ("total", money_cell(s.total.as_ref())),
        ("order_id", or_dash(&s.order_id)),
        ("event_count", s.event_count.to_string()),
    ]));
    let mut items = table(["SKU", "NAME", "QUANTITY", "UNIT PRICE"]);
    for i in &s.items {
        items.add_row(vec![
            i.sku.clone(),
            i.name.clone(),
            i.quantity.to_string(),
            money_cell(i.unit_price.as_ref()),
        ]);
    }
    text.push('\n');
    text.push_str(&render(&items));
    if !s.discounts.is_empty() {
        let currency = s.subtotal.as_ref().map_or("", |m| m.currency_code.as_str());
        let mut discounts = table(["DISCOUNT", "VALUE"]);
        for d in &s.discounts {
            discounts.add_row(vec![
                d.code.clone(),
                discount_cell(d.kind, d.value, currency),
            ]);
        }
        text.push('\n');
        text.push_str(&render(&discounts));
    }
    if !s.logs.is_empty() {
        let mut logs = table(["SEQUENCE", "TIME", "EVENT", "DETAIL"]);
        for e in &s.logs {
            logs.add_row(vec![
                e.sequence.to_string(),
                timestamp_cell(e.time.as_ref()),
                e.event.clone(),
                e.detail.clone(),
            ]);
        }
        text.push_str(&format!(
            "\nlatest {} of {} events (`sessionctl cart events {}` lists them all):\n",
            s.logs.len(),
            s.event_count,
            s.key
        ));
        text.push_str(&render(&logs));
    }
    text
}

/// `todo add` and `todo list`.
pub async fn todo(conn: &Conn, command: TodoCommand, as_json: bool) -> Outcome {
    let todo = conn.todo();
    match command {
        TodoCommand::Add { list, date, title } => {
            let entry = todo
                .clone()
                .add_entry(conn.unary(AddEntryRequest {
                    list: list.clone(),
                    date,
                    title,
                    request_id: request_id(),
                }))
                .await?
                .into_inner();
            if as_json {
                emit_json(&json::entry(&entry))
            } else {
                emit(&format!(
                    "added entry {} to {list}: {} {}\n",
                    entry.id, entry.date, entry.title
                ))
            }
        }
        TodoCommand::List { list, date } => {
            let date = date.unwrap_or_default();
            let entries = all_pages(|page_token| {
                let mut todo = todo.clone();
                let request = conn.unary(ListEntriesRequest {
                    list: list.clone(),
                    date: date.clone(),
                    page_size: conn.page_size(0),
                    page_token,
                });
                async move {
                    let page = todo.list_entries(request).await?.into_inner();
                    Ok((page.entries, page.next_page_token))
                }
            })
            .await?;
            if as_json {
                return emit_json(&entries.iter().map(json::entry).collect());
            }
            let mut rows = table(["ID", "DATE", "TITLE"]);
            for e in &entries {
                rows.add_row(vec![e.id.to_string(), e.date.clone(), e.title.clone()]);
            }
            emit(&render(&rows))
        }
    }
}

/// `stock set` and `stock show`.
pub async fn stock(conn: &Conn, command: StockCommand, as_json: bool) -> Outcome {
    let mut inventory = conn.inventory();
    let stock = match command {
        StockCommand::Set { sku, on_hand } => {
            inventory
                .set_stock(conn.unary(SetStockRequest { sku, on_hand }))
                .await?
        }
        StockCommand::Show { sku } => {
            inventory
                .get_stock(conn.unary(GetStockRequest { sku }))
                .await?
        }
    }
    .into_inner();
    if as_json {
        emit_json(&json::stock(&stock))
    } else {
        emit(&stock_text(&stock))
    }
}

fn stock_text(s: &Stock) -> String {
    render(&fields(vec![
        ("sku", s.sku.clone()),
        ("on_hand", s.on_hand.to_string()),
        ("reserved", s.reserved.to_string()),
        ("available", s.available.to_string()),
        ("version", s.version.to_string()),
    ]))
}

/// A fresh request id shaped like a random (version 4) UUID, so that a retried call is
/// applied once.
pub fn request_id() -> String {
    let random: u128 = rand::random();
    let id = (random & !(0xf << 76) & !(0x3 << 62)) | (0x4 << 76) | (0x2 << 62);
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        id >> 96,
        (id >> 80) & 0xffff,
        (id >> 64) & 0xffff,
        (id >> 48) & 0xffff,
        id & 0xffff_ffff_ffff
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_look_like_uuids_and_differ() {
        let a = request_id();
        let b = request_id();
        assert_ne!(a, b);
        assert_eq!(a.len(), 36, "{a}");
        let groups: Vec<&str> = a.split('-').collect();
        assert_eq!(
            groups.iter().map(|g| g.len()).collect::<Vec<_>>(),
            [8, 4, 4, 4, 12]
        );
        assert!(groups[2].starts_with('4'), "{a}");
        assert!("89ab".contains(&groups[3][..1]), "{a}");
    }
}
