//! The proto messages as JSON, by hand (prost's types do not derive serde): every field, with
//! the proto's snake_case names and the conventions of [`crate::format`].

use proto::session::v1::{
    Actor, Discount, Entry, EntryFailure, Job, JobCounts, KindStats, LineItem, LogEntry, Session,
    Stats, Stock, StoreCalls, SweepJob,
};
use serde_json::{Value, json};

use crate::format::{
    actor_status_json, discount_kind_json, duration_json, job_state_json, money_json,
    session_status_json, timestamp_json,
};

/// An admin `Actor`.
pub fn actor(a: &Actor) -> Value {
    json!({
        "kind": a.kind,
        "key": a.key,
        "status": actor_status_json(a.status),
        "mailbox_len": a.mailbox_len,
        "idle": duration_json(a.idle.as_ref()),
        "restarts": a.restarts,
        "state_bytes": a.state_bytes,
        "version": a.version,
        "activated": timestamp_json(a.activated.as_ref()),
        "last_active": timestamp_json(a.last_active.as_ref()),
        "quarantined_until": timestamp_json(a.quarantined_until.as_ref()),
        "watchers": a.watchers,
        "reminder": timestamp_json(a.reminder.as_ref()),
        "timers": a.timers,
    })
}

/// The admin `Stats`.
pub fn stats(s: &Stats) -> Value {
    // A map, so ordered by kind for stable output.
    let live_by_kind: serde_json::Map<String, Value> = s
        .live_by_kind
        .iter()
        .collect::<std::collections::BTreeMap<_, _>>()
        .into_iter()
        .map(|(kind, live)| (kind.clone(), json!(live)))
        .collect();
    json!({
        "live_actors": s.live_actors,
        "max_actors": s.max_actors,
        "live_by_kind": live_by_kind,
        "quarantined": s.quarantined,
        "sweeper": s.sweeper.iter().map(sweep_job).collect::<Vec<_>>(),
        "kinds": s.kinds.iter().map(kind_stats).collect::<Vec<_>>(),
        "uptime": duration_json(s.uptime.as_ref()),
        "store_calls": s.store_calls.as_ref().map_or(Value::Null, store_calls),
        "jobs": s.jobs.as_ref().map_or(Value::Null, job_counts),
    })
}

fn sweep_job(j: &SweepJob) -> Value {
    json!({
        "job": j.job,
        "passes": j.passes,
        "pass_scanned": j.pass_scanned,
        "scanned": j.scanned,
        "acted": j.acted,
        "failed": j.failed,
    })
}

fn kind_stats(k: &KindStats) -> Value {
    json!({
        "kind": k.kind,
        "live": k.live,
        "quarantined": k.quarantined,
        "activations": k.activations,
        "passivations": k.passivations,
        "restarts": k.restarts,
        "quarantines": k.quarantines,
        "mailbox_rejections": k.mailbox_rejections,
        "deadline_drops": k.deadline_drops,
        "watchers": k.watchers,
        "reminders_fired": k.reminders_fired,
    })
}

fn store_calls(c: &StoreCalls) -> Value {
    json!({
        "calls": c.calls,
        "p50": duration_json(c.p50.as_ref()),
        "p99": duration_json(c.p99.as_ref()),
    })
}

fn job_counts(c: &JobCounts) -> Value {
    json!({
        "uploading": c.uploading,
        "pending": c.pending,
        "running": c.running,
        "succeeded": c.succeeded,
        "failed": c.failed,
        "cancelled": c.cancelled,
    })
}

/// A cart `Session`.
pub fn session(s: &Session) -> Value {
    json!({
        "key": s.key,
        "domain": s.domain,
        "landing": s.landing,
        "ip": s.ip,
        "member_id": s.member_id,
        "items": s.items.iter().map(line_item).collect::<Vec<_>>(),
        "discounts": s.discounts.iter().map(discount).collect::<Vec<_>>(),
        "logs": s.logs.iter().map(log_entry).collect::<Vec<_>>(),
        "status": session_status_json(s.status),
        "version": s.version,
        "create_time": timestamp_json(s.create_time.as_ref()),
        "update_time": timestamp_json(s.update_time.as_ref()),
        "subtotal": money_json(s.subtotal.as_ref()),
        "discount_total": money_json(s.discount_total.as_ref()),
        "total": money_json(s.total.as_ref()),
        "order_id": s.order_id,
        "event_count": s.event_count,
    })
}

fn line_item(i: &LineItem) -> Value {
    json!({
        "sku": i.sku,
        "name": i.name,
        "quantity": i.quantity,
        "unit_price": money_json(i.unit_price.as_ref()),
    })
}

fn discount(d: &Discount) -> Value {
    json!({
        "code": d.code,
        "kind": discount_kind_json(d.kind),
        "value": d.value,
    })
}

/// A cart's `LogEntry` (an event).
pub fn log_entry(e: &LogEntry) -> Value {
    json!({
        "time": timestamp_json(e.time.as_ref()),
        "event": e.event,
        "detail": e.detail,
        "sequence": e.sequence,
    })
}

/// A to-do `Entry`.
pub fn entry(e: &Entry) -> Value {
    json!({"id": e.id, "date": e.date, "title": e.title})
}

/// A sku's `Stock`.
pub fn stock(s: &Stock) -> Value {
    json!({
        "sku": s.sku,
        "on_hand": s.on_hand,
        "reserved": s.reserved,
        "available": s.available,
        "version": s.version,
    })
}

/// A `Job`, with its failures (empty where the server leaves them out, as ListJobs does).
pub fn job(j: &Job) -> Value {
    json!({
        "id": j.id,
        "state": job_state_json(j.state),
        "total": j.total,
        "processed": j.processed,
        "imported": j.imported,
        "failed": j.failed,
        "failures": j.failures.iter().map(failure).collect::<Vec<_>>(),
        "error": j.error,
        "created": timestamp_json(j.created.as_ref()),
        "updated": timestamp_json(j.updated.as_ref()),
        "resumes": j.resumes,
    })
}

fn failure(f: &EntryFailure) -> Value {
    json!({"line": f.line, "code": f.code, "message": f.message})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_actor_has_every_field_and_unset_ones_are_null() {
        let value = actor(&Actor {
            kind: "cart".into(),
            key: "k".into(),
            status: 1,
            restarts: 2,
            activated: Some(prost_types::Timestamp {
                seconds: 0,
                nanos: 0,
            }),
            ..Default::default()
        });
        let object = value.as_object().unwrap();
        assert_eq!(object.len(), 14, "{value}");
        assert_eq!(value["status"], "ACTOR_STATUS_LIVE");
        assert_eq!(value["restarts"], 2);
        assert_eq!(value["activated"], "1970-01-01T00:00:00Z");
        assert_eq!(value["reminder"], Value::Null);
        assert_eq!(value["idle"], Value::Null);
    }
}
