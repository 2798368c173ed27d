//! `session.v1.AdminService`: the observer. Lists, inspects and kills actors through the
//! cross-kind registry view; guarded by a bearer token checked in an interceptor.

use std::{
    collections::BTreeMap,
    sync::Arc,
    time::{Duration, SystemTime},
};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use kit::{deadline::Deadline, echo::echo, forward::FORWARDED_HEADER};
use proto::session::v1::{
    self as pb, admin_service_client::AdminServiceClient, admin_service_server::AdminService,
};
use subtle::ConstantTimeEq;
use tonic::{Code, Request, Response, Status, service::Interceptor};

use crate::{
    cluster::Cluster,
    error::{self, Error, reason},
    jobs::Jobs,
    runtime::{ActorDetail, ActorInfo, ActorStatus, Actors, latency::Latency, validate_key},
    sweeper::Progress,
};

/// Deadline of a GetActor that carries none (GenServer.call's 5 s): the server's deadline
/// layer normally stamps every request with its own default.
const DEFAULT_DEADLINE: Duration = Duration::from_secs(5);

/// How long a replica waits for another's answer to a fanned-out admin call, at most.
const FAN_OUT_BUDGET: Duration = Duration::from_secs(2);

/// Default and largest page of ListActors.
const DEFAULT_PAGE: usize = 100;
const MAX_PAGE: usize = 1000;

/// Checks `authorization: Bearer <token>` against the configured admin token.
#[derive(Clone)]
pub struct AdminAuth {
    /// The expected token; `None` refuses every admin call.
    token: Option<Arc<str>>,
}

impl AdminAuth {
    /// Guards the admin API with `token` (none: admin disabled).
    pub fn new(token: Option<String>) -> Self {
        Self {
            token: token.filter(|t| !t.is_empty()).map(Into::into),
        }
    }
}

impl Interceptor for AdminAuth {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let Some(expected) = &self.token else {
            return Err(error::status(
                Code::PermissionDenied,
                reason::ADMIN_API_DISABLED,
                "the admin API is disabled: start session-svc with --admin-token",
            ));
        };
        let presented = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if presented.is_some_and(|p| token_matches(p.as_bytes(), expected.as_bytes())) {
            Ok(request)
        } else {
            Err(error::status(
                Code::Unauthenticated,
                reason::ADMIN_TOKEN_REQUIRED,
                "send the header `authorization: Bearer <admin token>`",
            ))
        }
    }
}

/// True when `presented` is `expected`, in time that depends only on `expected`'s length:
/// the presented token is cut or zero-padded to that length and compared with `subtle`, and
/// the lengths are compared the same way, so neither a shared prefix nor a length match
/// shows in the timing.
fn token_matches(presented: &[u8], expected: &[u8]) -> bool {
    let mut padded = vec![0u8; expected.len()];
    let shared = presented.len().min(expected.len());
    padded[..shared].copy_from_slice(&presented[..shared]);
    let same_bytes = padded.ct_eq(expected);
    let same_len = (presented.len() as u64).ct_eq(&(expected.len() as u64));
    (same_bytes & same_len).into()
}

/// The admin service over every kind's actors.
#[derive(Clone)]
pub struct AdminApi {
    /// The cross-kind view.
    actors: Arc<Actors>,
    /// The sweeper's progress.
    sweep: Arc<Progress>,
    /// When it started, for the uptime.
    started: std::time::Instant,
    /// How long calls to store-svc take.
    store_latency: Arc<Latency>,
    /// The job supervisor, for the jobs by state.
    jobs: Jobs,
    /// Several replicas: listings and stats answer for all of them ([`AdminApi::in_cluster`]).
    cluster: Option<Arc<Cluster>>,
}

impl AdminApi {
    /// Admin over `actors`.
    pub fn new(
        actors: Arc<Actors>,
        sweep: Arc<Progress>,
        store_latency: Arc<Latency>,
        jobs: Jobs,
    ) -> Self {
        Self {
            actors,
            sweep,
            started: std::time::Instant::now(),
            store_latency,
            jobs,
            cluster: None,
        }
    }

    /// Admin of one replica of `cluster`: ListActors and GetStats ask every member and merge
    /// their answers; GetActor and KillActor reach the key's replica by forwarding.
    pub fn in_cluster(mut self, cluster: Option<Arc<Cluster>>) -> Self {
        self.cluster = cluster;
        self
    }

    /// This replica's name in answers ("" for a single replica).
    fn replica(&self) -> String {
        self.cluster
            .as_ref()
            .map_or_else(String::new, |c| c.me().to_string())
    }

    /// The other members to ask for a request that came from a client (none for a single
    /// replica, or for a request another replica fanned out: it answers for itself alone).
    fn others<T>(&self, request: &Request<T>) -> Vec<Arc<str>> {
        match &self.cluster {
            Some(cluster) if !request.metadata().contains_key(FORWARDED_HEADER) => cluster
                .members()
                .iter()
                .filter(|m| **m != *cluster.me())
                .cloned()
                .collect(),
            _ => Vec::new(),
        }
    }

    /// Asks each of `members` the same admin call as `request` asked this replica, for its
    /// own answer alone: with the caller's token, the remaining deadline, at most
    /// [`FAN_OUT_BUDGET`] each. Each member's answer, in order.
    async fn fan_out<Q, A, F, Fut>(
        &self,
        members: &[Arc<str>],
        request: &Request<Q>,
        call: F,
    ) -> Vec<(Arc<str>, Result<A, Status>)>
    where
        Q: Clone,
        F: Fn(AdminServiceClient<tonic::transport::Channel>, Request<Q>) -> Fut,
        Fut: std::future::Future<Output = Result<Response<A>, Status>>,
    {
        let Some(cluster) = &self.cluster else {
            return Vec::new();
        };
        let deadline = Deadline::accept(request, DEFAULT_DEADLINE);
        let budget = deadline.remaining().min(FAN_OUT_BUDGET);
        let calls = members.iter().map(|member| {
            let mut ask = Request::new(request.get_ref().clone());
            ask.set_timeout(budget);
            if let Some(token) = request.metadata().get("authorization") {
                ask.metadata_mut().insert("authorization", token.clone());
            }
            if let Ok(me) = tonic::metadata::MetadataValue::try_from(cluster.me().as_ref()) {
                ask.metadata_mut().insert(FORWARDED_HEADER, me);
            }
            let client = AdminServiceClient::new(cluster.channel(member));
            let answer = call(client, ask);
            async move {
                let answer = tokio::time::timeout(budget, answer)
                    .await
                    .unwrap_or_else(|_| Err(Status::deadline_exceeded("no answer in time")));
                (member.clone(), answer.map(Response::into_inner))
            }
        });
        futures_util::future::join_all(calls).await
    }
}

/// A duration on the wire.
fn wire_duration(duration: std::time::Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: i64::try_from(duration.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(duration.subsec_nanos()).unwrap_or(0),
    }
}

/// `earlier` before `now`, as a wall-clock time on the wire.
fn wire_before(now: SystemTime, earlier: Duration) -> Option<prost_types::Timestamp> {
    now.checked_sub(earlier).map(Into::into)
}

/// Milliseconds since the Unix epoch on the wire.
fn wire_unix_ms(ms: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: i32::try_from(ms.rem_euclid(1000) * 1_000_000).unwrap_or(0),
    }
}

/// An entry as ListActors shows it: the registry's fields (1 to 6, and the end of a
/// quarantine), `now` being the wall-clock time of the listing.
fn wire(info: &ActorInfo, now: SystemTime) -> pb::Actor {
    pb::Actor {
        kind: info.kind.to_string(),
        key: info.key.to_string(),
        status: match info.status {
            ActorStatus::Live => pb::ActorStatus::Live,
            ActorStatus::Quarantined => pb::ActorStatus::Quarantined,
        } as i32,
        mailbox_len: u32::try_from(info.mailbox_len).unwrap_or(u32::MAX),
        idle: prost_types::Duration::try_from(info.idle_for).ok(),
        restarts: info.restarts,
        quarantined_until: info
            .quarantined_for
            .and_then(|left| now.checked_add(left))
            .map(Into::into),
        ..Default::default()
    }
}

/// An actor as GetActor shows it: every field. The registry's come from its entry; those of
/// a live actor's task (state size, version, activation, reminder) only if it answered.
fn wire_detail(detail: &ActorDetail, now: SystemTime) -> pb::Actor {
    let mut actor = wire(&detail.info, now);
    if detail.info.status == ActorStatus::Live {
        actor.last_active = wire_before(now, detail.info.idle_for);
        actor.watchers = detail.watchers;
        actor.timers = detail.timers;
    }
    if let Some(described) = &detail.described {
        actor.state_bytes = described.state_bytes;
        actor.version = described.version;
        actor.activated = wire_before(now, described.active_for);
        actor.reminder = described.reminder_ms.map(wire_unix_ms);
    }
    actor
}

fn page_token(kind: &str, key: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("{kind}\0{key}"))
}

fn parse_page_token(token: &str) -> Result<Option<(String, String)>, Error> {
    if token.is_empty() {
        return Ok(None);
    }
    let bad = || Error::invalid("page_token", "is not a token this server issued");
    let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| bad())?;
    let text = String::from_utf8(bytes).map_err(|_| bad())?;
    let (kind, key) = text.split_once('\0').ok_or_else(bad)?;
    Ok(Some((kind.to_string(), key.to_string())))
}

impl AdminApi {
    /// `kind` names a kind this server runs (empty allowed when `optional`), else
    /// INVALID_ARGUMENT on `kind` listing them.
    fn check_kind(&self, kind: &str, optional: bool) -> Result<(), Error> {
        let kinds: Vec<&'static str> = self.actors.counts().into_iter().map(|(k, _)| k).collect();
        if (optional && kind.is_empty()) || kinds.contains(&kind) {
            return Ok(());
        }
        Err(Error::invalid(
            "kind",
            format!(
                "{} is not a kind; the kinds are {}",
                echo(kind),
                kinds.join(", ")
            ),
        ))
    }

    /// `kind` and `key` name an actor that could exist: a known kind and a valid key.
    fn check_actor(&self, kind: &str, key: &str) -> Result<(), Error> {
        self.check_kind(kind, false)?;
        validate_key("key", key)
    }
}

#[tonic::async_trait]
impl AdminService for AdminApi {
    async fn list_actors(
        &self,
        request: Request<pb::ListActorsRequest>,
    ) -> Result<Response<pb::ListActorsResponse>, Status> {
        let r = request.get_ref().clone();
        let request_meta = request;
        let size = match r.page_size {
            0 => DEFAULT_PAGE,
            n if n < 0 => return Err(Error::invalid("page_size", "must not be negative").into()),
            n => (n as usize).min(MAX_PAGE),
        };
        let status = pb::ActorStatus::try_from(r.status)
            .map_err(|_| Error::invalid("status", format!("unknown status {}", r.status)))?;
        self.check_kind(&r.kind, true)?;
        let after = parse_page_token(&r.page_token)?;
        let mut actors: Vec<ActorInfo> = self
            .actors
            .list()
            .into_iter()
            .filter(|a| r.kind.is_empty() || a.kind == r.kind)
            .filter(|a| match status {
                pb::ActorStatus::Unspecified => true,
                pb::ActorStatus::Live => a.status == ActorStatus::Live,
                pb::ActorStatus::Quarantined => a.status == ActorStatus::Quarantined,
            })
            .filter(|a| {
                after
                    .as_ref()
                    .is_none_or(|(kind, key)| (a.kind, &*a.key) > (kind.as_str(), key.as_str()))
            })
            .collect();
        actors.sort_unstable_by(|a, b| (a.kind, &a.key).cmp(&(b.kind, &b.key)));
        let more = actors.len() > size;
        actors.truncate(size);
        let next_page_token = match actors.last() {
            Some(last) if more => page_token(last.kind, &last.key),
            _ => String::new(),
        };
        let now = SystemTime::now();
        let replica = self.replica();
        let mut page: Vec<pb::Actor> = actors
            .iter()
            .map(|a| pb::Actor {
                replica: replica.clone(),
                ..wire(a, now)
            })
            .collect();
        let others = self.others(&request_meta);
        if others.is_empty() {
            return Ok(Response::new(pb::ListActorsResponse {
                actors: page,
                next_page_token,
            }));
        }
        // Every member's page after the same token, merged in (kind, key) order: the first
        // `size` of the union are the cluster's page, and the token stays "the last key".
        let answers = self
            .fan_out(&others, &request_meta, |mut client, ask| async move {
                client.list_actors(ask).await
            })
            .await;
        for (member, answer) in answers {
            let answer = answer.map_err(|status| {
                Status::unavailable(format!(
                    "replica {member} did not answer the listing ({}: {}); retry",
                    status.code(),
                    echo(status.message())
                ))
            })?;
            page.extend(answer.actors);
        }
        page.sort_unstable_by(|a, b| (&a.kind, &a.key).cmp(&(&b.kind, &b.key)));
        page.dedup_by(|a, b| a.kind == b.kind && a.key == b.key);
        let more = page.len() > size;
        page.truncate(size);
        let next_page_token = match page.last() {
            Some(last) if more => page_token(&last.kind, &last.key),
            _ => String::new(),
        };
        Ok(Response::new(pb::ListActorsResponse {
            actors: page,
            next_page_token,
        }))
    }

    async fn get_actor(
        &self,
        request: Request<pb::GetActorRequest>,
    ) -> Result<Response<pb::Actor>, Status> {
        let deadline = Deadline::accept(&request, DEFAULT_DEADLINE);
        let r = request.into_inner();
        self.check_actor(&r.kind, &r.key)?;
        match self.actors.describe(&r.kind, &r.key, deadline).await {
            Some(detail) => Ok(Response::new(pb::Actor {
                replica: self.replica(),
                ..wire_detail(&detail, SystemTime::now())
            })),
            None => Err(Error::NotFound(
                reason::ACTOR_NOT_FOUND,
                format!(
                    "no actor {}/{}: neither live nor quarantined (passivated, or never started)",
                    echo(&r.kind),
                    echo(&r.key)
                ),
            )
            .into()),
        }
    }

    async fn kill_actor(
        &self,
        request: Request<pb::KillActorRequest>,
    ) -> Result<Response<pb::KillActorResponse>, Status> {
        let r = request.into_inner();
        self.check_actor(&r.kind, &r.key)?;
        if self.actors.kill(&r.kind, &r.key) {
            tracing::warn!(kind = %echo(&r.kind), key = %echo(&r.key), "actor killed by admin");
            Ok(Response::new(pb::KillActorResponse {}))
        } else {
            Err(Error::NotFound(
                reason::ACTOR_NOT_FOUND,
                format!(
                    "{}/{} is not live (passivated, or never started), so there is no actor to \
                 kill; its next request activates it",
                    echo(&r.kind),
                    echo(&r.key)
                ),
            )
            .into())
        }
    }

    async fn get_stats(
        &self,
        request: Request<pb::GetStatsRequest>,
    ) -> Result<Response<pb::Stats>, Status> {
        // Counters, not a walk over every actor: GetStats is cheap however many are live.
        let mut live_by_kind = BTreeMap::<String, u64>::new();
        let mut quarantined = 0;
        let mut kinds = Vec::new();
        for (kind, counts) in self.actors.counts() {
            if counts.live > 0 {
                *live_by_kind.entry(kind.to_string()).or_default() += counts.live as u64;
            }
            quarantined += counts.quarantined as u64;
            kinds.push(pb::KindStats {
                kind: kind.to_string(),
                live: counts.live as u64,
                quarantined: counts.quarantined as u64,
                activations: counts.activations,
                passivations: counts.passivations,
                restarts: counts.crashes,
                quarantines: counts.quarantines,
                mailbox_rejections: counts.mailbox_rejections,
                deadline_drops: counts.deadline_drops,
                watchers: counts.watchers as u64,
                reminders_fired: counts.reminders_fired,
            });
        }
        let uptime = wire_duration(self.started.elapsed());
        let store = &self.store_latency;
        let store_calls = pb::StoreCalls {
            calls: store.count(),
            p50: store.quantile(0.5).map(wire_duration),
            p99: store.quantile(0.99).map(wire_duration),
        };
        let members = self.members(&request).await;
        Ok(Response::new(pb::Stats {
            replica: self.replica(),
            members,
            live_actors: self.actors.live() as u64,
            max_actors: self.actors.max() as u64,
            live_by_kind: live_by_kind.into_iter().collect(),
            quarantined,
            sweeper: self.sweep.wire(),
            kinds,
            uptime: Some(uptime),
            store_calls: Some(store_calls),
            jobs: Some(self.jobs.counts()),
        }))
    }
}

impl AdminApi {
    /// The members for GetStats: this replica's own entry, and for a client's request each
    /// other member's own entry as it answers (or placement's count alone when it does not).
    async fn members(&self, request: &Request<pb::GetStatsRequest>) -> Vec<pb::Member> {
        let Some(cluster) = &self.cluster else {
            return Vec::new();
        };
        let placed: BTreeMap<Arc<str>, u32> = cluster.shard_counts().into_iter().collect();
        let shards = |member: &Arc<str>| placed.get(member).copied().unwrap_or(0);
        let mut members = vec![pb::Member {
            address: cluster.me().to_string(),
            shards: shards(cluster.me()),
            shards_held: u32::try_from(cluster.held_count()).unwrap_or(u32::MAX),
            live_actors: self.actors.live() as u64,
            answered: true,
        }];
        let others = self.others(request);
        let answers = self
            .fan_out(&others, request, |mut client, ask| async move {
                client.get_stats(ask).await
            })
            .await;
        for (member, answer) in answers {
            let own = answer
                .ok()
                .and_then(|stats| stats.members.into_iter().find(|m| *m.address == *member));
            members.push(match own {
                Some(own) => pb::Member {
                    shards: shards(&member),
                    ..own
                },
                None => pb::Member {
                    address: member.to_string(),
                    shards: shards(&member),
                    ..Default::default()
                },
            });
        }
        members.sort_by(|a, b| a.address.cmp(&b.address));
        members
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(auth: &mut AdminAuth, header: Option<&str>) -> Result<(), tonic::Code> {
        let mut request = Request::new(());
        if let Some(value) = header {
            request
                .metadata_mut()
                .insert("authorization", value.parse().unwrap());
        }
        auth.call(request).map(drop).map_err(|s| s.code())
    }

    #[test]
    fn admin_calls_need_the_configured_bearer_token() {
        let mut auth = AdminAuth::new(Some("s3cret".into()));
        assert_eq!(call(&mut auth, Some("Bearer s3cret")), Ok(()));
        assert_eq!(
            call(&mut auth, Some("Bearer s3cre")),
            Err(tonic::Code::Unauthenticated)
        );
        assert_eq!(
            call(&mut auth, Some("s3cret")),
            Err(tonic::Code::Unauthenticated)
        );
        assert_eq!(call(&mut auth, None), Err(tonic::Code::Unauthenticated));
        assert_eq!(
            call(&mut auth, Some("Bearer s3cret-and-more")),
            Err(tonic::Code::Unauthenticated)
        );
        let mut disabled = AdminAuth::new(None);
        assert_eq!(
            call(&mut disabled, Some("Bearer x")),
            Err(tonic::Code::PermissionDenied)
        );
    }

    #[test]
    fn the_token_compare_needs_the_same_bytes_and_length() {
        assert!(token_matches(b"s3cret", b"s3cret"));
        for other in [
            &b""[..],
            b"s3cre",
            b"s3cret\0",
            b"s3cres",
            b"S3cret",
            b"s3cretX",
        ] {
            assert!(!token_matches(other, b"s3cret"), "{other:?}");
        }
    }

    #[test]
    fn page_tokens_round_trip_and_garbage_is_invalid() {
        let token = page_token("cart", "k1");
        assert_eq!(
            parse_page_token(&token).unwrap(),
            Some(("cart".into(), "k1".into()))
        );
        assert!(parse_page_token("!!!").is_err());
    }
}
