//! `redis_cart`: the baseline for durable cart writes. A stateless tonic server for
//! `session.v1.CartService` that keeps every cart in Redis: no actor, no registry, no
//! store-svc. `loadgen session-add-item` and `session-get` drive it with the same clients as
//! session-svc, so the ratio says what the actor design buys (or costs) against the obvious
//! alternative.
//!
//! Each call is ONE Lua script (loaded once at start, then run with EVALSHA), so a change is
//! atomic in Redis without a lock or a retry loop:
//!
//! - StartSession: create the cart if its key is free (with a `started` event), else return it.
//! - AddItem: request-id dedup, then add to the sku's line or append one, log `item_added`
//!   (keeping the newest `--log-limit` events), bump the version, write the cart back.
//! - GetSession: read the cart.
//!
//! The cart is stored as one JSON document (`cjson`, which Redis's Lua ships) under
//! `cart:{key}`: the whole cart with its event log and its recent request ids, rewritten on
//! every change, like session-svc's record in store-svc. Each script returns the document it
//! left, and the `Session` reply (items, logs, totals, version, timestamps) is built here in the
//! same shape session-svc answers with, so clients decode messages of the same size.
//!
//! Durability is whatever the Redis server is configured for: with `appendonly yes` and
//! `appendfsync always` (as loadgen starts it) Redis fsyncs its log before it answers, so an OK
//! here means on disk. Only StartSession, GetSession and AddItem are served; every other RPC is
//! UNIMPLEMENTED. Like every server here it prints `listening on ADDR` when ready and exits on
//! SIGTERM or SIGINT.

use std::{
    fmt,
    marker::PhantomData,
    net::SocketAddr,
    process::ExitCode,
    sync::atomic::{AtomicUsize, Ordering},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::Context;
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use clap::Parser;
use kit::{cli, telemetry};
use proto::session::v1::{
    AddItemRequest, ApplyDiscountRequest, CheckoutRequest, EndSessionRequest, GetSessionRequest,
    LineItem, ListSessionEventsRequest, ListSessionEventsResponse, LogEntry, Money, Order,
    RemoveItemRequest, Session, StartSessionRequest, WatchSessionRequest,
    cart_service_server::{CartService, CartServiceServer},
};
use redis::{
    AsyncConnectionConfig, RedisError, Script, ScriptInvocation, aio::MultiplexedConnection,
};
use serde::{
    Deserialize, Deserializer,
    de::{MapAccess, SeqAccess, Visitor},
};
use session_svc::cart::convert::timestamp;
use tonic::{
    Request, Response, Status,
    transport::{Server, server::TcpIncoming},
};

/// The same allocator as session-svc, so the comparison is not about malloc.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// How long one script may take to answer before the call fails UNAVAILABLE. Well above the
/// redis crate's 500 ms default: with `appendfsync always` on a busy disk an fsync alone can
/// take that long, and a client's deadline (5 s by default) is the real bound.
const REDIS_RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Most distinct skus in one cart (session-svc's `MAX_LINES`).
const MAX_LINES: u32 = 500;
/// Most units on one line (session-svc's `MAX_QUANTITY`).
const MAX_QUANTITY: u32 = 1_000_000;

/// Events kept per cart in its history list (session-svc's `--events-per-cart` default).
const EVENTS_PER_CART: u32 = 10_000;

/// StartSession. KEYS[1]: the cart's Redis key, KEYS[2]: its event history list. ARGV: key,
/// domain, landing, ip, member_id, now (Unix ms). An existing cart is returned unchanged.
const START_SCRIPT: &str = r#"
local raw = redis.call('GET', KEYS[1])
if raw then return raw end
local now = tonumber(ARGV[6])
local detail = 'domain=' .. ARGV[2] .. ' landing=' .. ARGV[3] .. ' ip=' .. ARGV[4]
  .. ' member_id=' .. ARGV[5]
local cart = {
  k = ARGV[1], d = ARGV[2], la = ARGV[3], ip = ARGV[4], m = ARGV[5],
  s = 1, v = 1, c = now, u = now, cur = '',
  i = {}, l = {{t = now, e = 'started', x = detail}}, r = {},
}
redis.call('RPUSH', KEYS[2], cjson.encode(cart.l[1]))
raw = cjson.encode(cart)
redis.call('SET', KEYS[1], raw)
return raw
"#;

/// AddItem. KEYS[1]: the cart's Redis key, KEYS[2]: its event history list. ARGV:
/// request_id (may be empty), sku, name, quantity, currency, unit price (minor units), now
/// (Unix ms), log limit, recent-ids limit, max lines, max quantity, events kept. A request id
/// seen recently returns the cart as it is. Like session-svc, the cart shows its newest events
/// and the whole history (up to the events kept) is a list of its own, appended to.
const ADD_SCRIPT: &str = r#"
local raw = redis.call('GET', KEYS[1])
if not raw then return redis.error_reply('NOT_FOUND no session with this key') end
local cart = cjson.decode(raw)
local rid = ARGV[1]
if rid ~= '' then
  for _, seen in ipairs(cart.r) do
    if seen == rid then return raw end
  end
end
if cart.s ~= 1 then
  return redis.error_reply('FAILED_PRECONDITION the session is no longer active')
end
local sku, cur = ARGV[2], ARGV[5]
local qty, price, now = tonumber(ARGV[4]), tonumber(ARGV[6]), tonumber(ARGV[7])
if cart.cur ~= '' and cart.cur ~= cur then
  return redis.error_reply('FAILED_PRECONDITION the cart is in ' .. cart.cur
    .. ', the item in ' .. cur)
end
local line
for _, item in ipairs(cart.i) do
  if item.s == sku then line = item break end
end
local held = 0
if line then
  if line.p ~= price then
    return redis.error_reply('FAILED_PRECONDITION sku ' .. sku .. ' is in the cart at '
      .. line.p .. ', not ' .. ARGV[6])
  end
  held = line.q
elseif #cart.i >= tonumber(ARGV[10]) then
  return redis.error_reply('FAILED_PRECONDITION the cart has as many lines as it may')
end
local total = held + qty
if total > tonumber(ARGV[11]) then
  return redis.error_reply('INVALID_ARGUMENT quantity: the line would hold ' .. total
    .. ' units, more than ' .. ARGV[11])
end
if line then
  line.q = total
else
  cart.i[#cart.i + 1] = {s = sku, n = ARGV[3], q = qty, p = price}
end
cart.cur = cur
local logs = cart.l
logs[#logs + 1] = {t = now, e = 'item_added', x = 'sku=' .. sku .. ' quantity=' .. ARGV[4]
  .. ' unit_price=' .. ARGV[6] .. ' currency=' .. cur .. ' line_quantity=' .. total}
redis.call('RPUSH', KEYS[2], cjson.encode(logs[#logs]))
redis.call('LTRIM', KEYS[2], -tonumber(ARGV[12]), -1)
local limit = tonumber(ARGV[8])
while #logs > limit do table.remove(logs, 1) end
if rid ~= '' then
  local recent = cart.r
  recent[#recent + 1] = rid
  local keep = tonumber(ARGV[9])
  while #recent > keep do table.remove(recent, 1) end
end
cart.v = cart.v + 1
cart.u = now
raw = cjson.encode(cart)
redis.call('SET', KEYS[1], raw)
return raw
"#;

/// GetSession. KEYS[1]: the cart's Redis key. Nil when there is no such cart.
const GET_SCRIPT: &str = "return redis.call('GET', KEYS[1])";

/// A CartService whose carts live in Redis.
#[derive(Debug, Parser)]
#[command(name = "redis_cart", about)]
struct Config {
    /// Address to listen on (port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// The Redis server holding the carts.
    #[arg(long, default_value = "redis://127.0.0.1:6379")]
    redis: String,
    /// Multiplexed connections to Redis, used in turn (each pipelines many calls).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=64))]
    redis_connections: u32,
    /// Newest events each cart shows, oldest dropped first (session-svc's default).
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    log_limit: u32,
    /// Request ids remembered per cart for retries (session-svc's default).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=1024))]
    recent_requests: u32,
}

/// The service: connections to Redis and the three scripts.
struct RedisCart {
    connections: Vec<MultiplexedConnection>,
    /// Which connection the next call takes.
    next: AtomicUsize,
    start: Script,
    add: Script,
    get: Script,
    log_limit: u32,
    recent_requests: u32,
}

impl RedisCart {
    /// Connects and loads the scripts, so every call afterwards is one EVALSHA.
    async fn connect(config: &Config) -> anyhow::Result<Self> {
        let client = redis::Client::open(config.redis.as_str())
            .with_context(|| format!("--redis {:?}", config.redis))?;
        let settings =
            AsyncConnectionConfig::new().set_response_timeout(Some(REDIS_RESPONSE_TIMEOUT));
        let mut connections = Vec::new();
        for _ in 0..config.redis_connections {
            let connection = client
                .get_multiplexed_async_connection_with_config(&settings)
                .await
                .with_context(|| format!("connecting to Redis at {}", config.redis))?;
            connections.push(connection);
        }
        let service = Self {
            connections,
            next: AtomicUsize::new(0),
            start: Script::new(START_SCRIPT),
            add: Script::new(ADD_SCRIPT),
            get: Script::new(GET_SCRIPT),
            log_limit: config.log_limit,
            recent_requests: config.recent_requests,
        };
        let mut connection = service.connection();
        for script in [&service.start, &service.add, &service.get] {
            script
                .load_async(&mut connection)
                .await
                .context("SCRIPT LOAD")?;
        }
        Ok(service)
    }

    fn connection(&self) -> MultiplexedConnection {
        let index = self.next.fetch_add(1, Ordering::Relaxed) % self.connections.len();
        self.connections[index].clone()
    }

    /// Runs one script (EVALSHA; loaded again by the crate if Redis forgot it) and turns the
    /// cart it returns into the reply.
    async fn run(&self, invocation: &ScriptInvocation<'_>) -> Result<Response<Session>, Status> {
        let stored: Option<Vec<u8>> = invocation
            .invoke_async(&mut self.connection())
            .await
            .map_err(redis_status)?;
        let stored = stored.ok_or_else(|| Status::not_found("no session with this key"))?;
        session_of(&stored).map(Response::new)
    }
}

/// The Redis key of a session's cart.
fn cart_key(key: &str) -> String {
    format!("cart:{key}")
}

/// The Redis key of a session's event history list.
fn events_key(key: &str) -> String {
    format!("events:{key}")
}

/// A fresh session key like session-svc's: 128 random bits, URL-safe, unguessable.
fn new_key() -> String {
    URL_SAFE_NO_PAD.encode(rand::random::<[u8; 16]>())
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as i64)
}

/// A script's refusal (`CODE message`, from `redis.error_reply`) or Redis failing, as a status.
fn redis_status(error: RedisError) -> Status {
    let detail = error.detail().unwrap_or_default().to_owned();
    match error.code() {
        Some("NOT_FOUND") => Status::not_found(detail),
        Some("FAILED_PRECONDITION") => Status::failed_precondition(detail),
        Some("INVALID_ARGUMENT") => Status::invalid_argument(detail),
        _ => Status::unavailable(format!("redis: {error}")),
    }
}

fn invalid(field: &str, problem: &str) -> Status {
    Status::invalid_argument(format!("{field}: {problem}"))
}

/// What the scripts store and return: a cart as `cjson` writes it (short names: it is
/// rewritten on every change).
#[derive(Deserialize)]
struct StoredCart {
    /// Key, domain, landing, ip, member id.
    k: String,
    d: String,
    la: String,
    ip: String,
    m: String,
    /// `SessionStatus` as its number.
    s: i32,
    /// Version: 1 at start, one more per change.
    v: u64,
    /// Created and updated, Unix ms.
    c: i64,
    u: i64,
    /// The cart's currency, empty until the first item.
    cur: String,
    /// Lines in the order first added.
    #[serde(deserialize_with = "list")]
    i: Vec<StoredLine>,
    /// The newest events, oldest first.
    #[serde(deserialize_with = "list")]
    l: Vec<StoredLog>,
}

#[derive(Deserialize)]
struct StoredLine {
    /// Sku, name, quantity, unit price in minor units.
    s: String,
    n: String,
    q: i32,
    p: i64,
}

#[derive(Deserialize)]
struct StoredLog {
    /// When (Unix ms), event, detail.
    t: i64,
    e: String,
    x: String,
}

/// A JSON array, or `{}`: `cjson` cannot tell an empty Lua table from an empty object.
fn list<'de, D, T>(deserializer: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    struct List<T>(PhantomData<T>);

    impl<'de, T: Deserialize<'de>> Visitor<'de> for List<T> {
        type Value = Vec<T>;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("an array, or {} for an empty one")
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
            let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
            while let Some(item) = seq.next_element()? {
                items.push(item);
            }
            Ok(items)
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Vec<T>, A::Error> {
            match map.next_key::<serde::de::IgnoredAny>()? {
                None => Ok(Vec::new()),
                Some(_) => Err(serde::de::Error::custom("a non-empty object, not a list")),
            }
        }
    }

    deserializer.deserialize_any(List(PhantomData))
}

/// The reply for a stored cart: what session-svc's `convert::session` makes of the same cart
/// (no discounts here, so the total is the subtotal; totals only once a currency is known).
fn session_of(stored: &[u8]) -> Result<Session, Status> {
    let cart: StoredCart = serde_json::from_slice(stored)
        .map_err(|error| Status::internal(format!("a stored cart does not parse: {error}")))?;
    let money = |minor_units| Money {
        currency_code: cart.cur.clone(),
        minor_units,
    };
    let subtotal = cart.i.iter().fold(0i64, |sum, line| {
        sum.saturating_add(i64::from(line.q).saturating_mul(line.p))
    });
    let priced = !cart.cur.is_empty();
    // Every change logs one event and bumps the version, which starts at 1 with `started`.
    let first_shown = cart.v + 1 - cart.l.len() as u64;
    Ok(Session {
        event_count: cart.v,
        items: cart
            .i
            .iter()
            .map(|line| LineItem {
                sku: line.s.clone(),
                name: line.n.clone(),
                quantity: line.q,
                unit_price: Some(money(line.p)),
            })
            .collect(),
        discounts: Vec::new(),
        logs: cart
            .l
            .iter()
            .zip(first_shown..)
            .map(|(log, sequence)| LogEntry {
                time: Some(timestamp(log.t)),
                event: log.e.clone(),
                detail: log.x.clone(),
                sequence,
            })
            .collect(),
        status: cart.s,
        version: cart.v,
        create_time: Some(timestamp(cart.c)),
        update_time: Some(timestamp(cart.u)),
        subtotal: priced.then(|| money(subtotal)),
        discount_total: priced.then(|| money(0)),
        total: priced.then(|| money(subtotal)),
        order_id: String::new(),
        key: cart.k,
        domain: cart.d,
        landing: cart.la,
        ip: cart.ip,
        member_id: cart.m,
    })
}

#[tonic::async_trait]
impl CartService for RedisCart {
    async fn start_session(
        &self,
        request: Request<StartSessionRequest>,
    ) -> Result<Response<Session>, Status> {
        let r = request.into_inner();
        let key = if r.key.is_empty() { new_key() } else { r.key };
        self.run(
            self.start
                .key(cart_key(&key))
                .key(events_key(&key))
                .arg(&key)
                .arg(&r.domain)
                .arg(&r.landing)
                .arg(&r.ip)
                .arg(&r.member_id)
                .arg(now_ms()),
        )
        .await
    }

    async fn get_session(
        &self,
        request: Request<GetSessionRequest>,
    ) -> Result<Response<Session>, Status> {
        let key = request.into_inner().key;
        if key.is_empty() {
            return Err(invalid("key", "is required"));
        }
        self.run(&self.get.key(cart_key(&key))).await
    }

    async fn add_item(
        &self,
        request: Request<AddItemRequest>,
    ) -> Result<Response<Session>, Status> {
        let r = request.into_inner();
        for (field, value) in [("key", &r.key), ("sku", &r.sku), ("name", &r.name)] {
            if value.is_empty() {
                return Err(invalid(field, "is required"));
            }
        }
        if r.quantity < 1 {
            return Err(invalid("quantity", "must be at least 1"));
        }
        let price = r
            .unit_price
            .ok_or_else(|| invalid("unit_price", "is required"))?;
        let code = price.currency_code.as_bytes();
        if code.len() != 3 || !code.iter().all(u8::is_ascii_uppercase) {
            return Err(invalid(
                "unit_price.currency_code",
                "must be three upper-case letters, e.g. USD",
            ));
        }
        if price.minor_units < 0 {
            return Err(invalid("unit_price.minor_units", "must not be negative"));
        }
        self.run(
            self.add
                .key(cart_key(&r.key))
                .key(events_key(&r.key))
                .arg(&r.request_id)
                .arg(&r.sku)
                .arg(&r.name)
                .arg(r.quantity)
                .arg(&price.currency_code)
                .arg(price.minor_units)
                .arg(now_ms())
                .arg(self.log_limit)
                .arg(self.recent_requests)
                .arg(MAX_LINES)
                .arg(MAX_QUANTITY)
                .arg(EVENTS_PER_CART),
        )
        .await
    }

    async fn remove_item(
        &self,
        _request: Request<RemoveItemRequest>,
    ) -> Result<Response<Session>, Status> {
        Err(unimplemented())
    }

    async fn apply_discount(
        &self,
        _request: Request<ApplyDiscountRequest>,
    ) -> Result<Response<Session>, Status> {
        Err(unimplemented())
    }

    async fn checkout(
        &self,
        _request: Request<CheckoutRequest>,
    ) -> Result<Response<Order>, Status> {
        Err(unimplemented())
    }

    async fn end_session(
        &self,
        _request: Request<EndSessionRequest>,
    ) -> Result<Response<Session>, Status> {
        Err(unimplemented())
    }

    async fn list_session_events(
        &self,
        _request: Request<ListSessionEventsRequest>,
    ) -> Result<Response<ListSessionEventsResponse>, Status> {
        Err(unimplemented())
    }

    type WatchSessionStream = tokio_stream::Empty<Result<Session, Status>>;

    async fn watch_session(
        &self,
        _request: Request<WatchSessionRequest>,
    ) -> Result<Response<Self::WatchSessionStream>, Status> {
        Err(unimplemented())
    }
}

fn unimplemented() -> Status {
    Status::unimplemented("redis_cart answers StartSession, GetSession and AddItem only")
}

#[tokio::main]
async fn main() -> ExitCode {
    let config: Config = match cli::parse() {
        Ok(config) => config,
        Err(code) => return code,
    };
    telemetry::init(telemetry::LogFormat::Text);
    // Redis first: `listening on` must mean ready to serve.
    let service = match RedisCart::connect(&config).await {
        Ok(service) => service,
        Err(error) => return cli::exit_code(Err(error)),
    };
    let (listener, shutdown) = match cli::bind_and_announce(config.listen).await {
        Ok(bound) => bound,
        Err(code) => return code,
    };
    // As session-svc and echo_server: TCP_NODELAY on accepted connections.
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    let served = Server::builder()
        .add_service(CartServiceServer::new(service))
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await;
    cli::exit_code(served.map_err(anyhow::Error::from))
}

#[cfg(test)]
mod unit_tests {
    use super::*;

    #[test]
    fn a_stored_cart_becomes_a_session_with_totals() {
        let stored = br#"{"k":"abc","d":"shop.example","la":"\/p","ip":"203.0.113.7","m":"m-1",
            "s":1,"v":3,"c":1700000000123,"u":1700000001000,"cur":"USD","r":["r-1"],
            "i":[{"s":"A1","n":"Rocket","q":2,"p":1999},{"s":"B2","n":"Moon","q":1,"p":500}],
            "l":[{"t":1700000000123,"e":"started","x":"domain=shop.example"}]}"#;
        let session = session_of(stored).unwrap();
        assert_eq!(
            (session.key.as_str(), session.landing.as_str()),
            ("abc", "/p")
        );
        assert_eq!((session.version, session.status), (3, 1));
        assert_eq!(session.items.len(), 2);
        assert_eq!(session.subtotal.as_ref().unwrap().minor_units, 4498);
        assert_eq!(session.total, session.subtotal);
        assert_eq!(session.discount_total.as_ref().unwrap().minor_units, 0);
        assert_eq!(session.logs[0].event, "started");
        assert_eq!(session.create_time.unwrap().nanos, 123_000_000);
    }

    #[test]
    fn a_new_cart_has_no_totals_and_its_empty_lists_parse() {
        let stored = br#"{"k":"abc","d":"","la":"","ip":"","m":"","s":1,"v":1,"c":0,"u":0,
            "cur":"","i":{},"l":[{"t":0,"e":"started","x":""}],"r":{}}"#;
        let session = session_of(stored).unwrap();
        assert!(session.items.is_empty());
        assert_eq!(session.subtotal, None);
        assert!(session_of(br#"{"k":"a","i":{"x":1}}"#).is_err());
    }
}
