//! The cart kind: a shopping `Session` process, as an [`Entity`] of the runtime.

use bytes::Bytes;
use kit::echo::echo;
use prost::Message;
use proto::session::v1 as pb;

use super::convert;
use crate::{
    cluster::Placement,
    domain::{Cart, CartStatus, Catalog, Ctx as DomainCtx, Money, StartArgs},
    error::{Error, reason},
    inventory::{Held, Reserve, Settle, SkuEntity},
    runtime::{
        After, Ctx, Effect, Entity, Env, Kind, RecordWrite, Replay, Request, RequestId, Step,
        escape_key,
    },
};

/// Store namespace of orders written by Checkout.
pub const ORDERS_NAMESPACE: &str = "orders";
/// Store namespace of the carts' events, one record each.
pub const EVENTS_NAMESPACE: &str = "cart_events";

/// The prefix every event record of cart `key` has, and no other cart's.
pub fn events_prefix(key: &str) -> String {
    format!("{}/", escape_key(key))
}

/// The store key of event `seq` of cart `key`: zero-padded so keys sort in sequence order.
pub fn event_key(key: &str, seq: u64) -> String {
    format!("{}/{seq:020}", escape_key(key))
}

/// A session as an answer: the message, and its exact encoding once the actor has written it
/// to the store ([`Request::keep_written`]): the server then sends those bytes as they are.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionReply {
    /// The session after the request.
    pub session: pb::Session,
    /// Its encoding, when it is what the store now holds.
    pub encoded: Option<Bytes>,
}

/// Open the session (or return it unchanged if it exists).
#[derive(Debug, Clone)]
pub struct Start(pub StartArgs);

/// Read the session.
#[derive(Debug, Clone)]
pub struct Get;

/// Add units of a sku.
#[derive(Debug, Clone)]
pub struct AddItem {
    /// Product id.
    pub sku: String,
    /// Product name.
    pub name: String,
    /// Units, at least 1.
    pub quantity: u32,
    /// Price of one unit.
    pub unit_price: Money,
    /// Idempotency key.
    pub request_id: Option<RequestId>,
}

/// Remove units of a sku.
#[derive(Debug, Clone)]
pub struct RemoveItem {
    /// Product id.
    pub sku: String,
    /// Units, at least 1.
    pub quantity: u32,
    /// Idempotency key.
    pub request_id: Option<RequestId>,
}

/// Apply a catalog code.
#[derive(Debug, Clone)]
pub struct ApplyDiscount {
    /// The code.
    pub code: String,
    /// Idempotency key.
    pub request_id: Option<RequestId>,
}

/// Buy: answered with the order.
#[derive(Debug, Clone)]
pub struct Checkout {
    /// Idempotency key.
    pub request_id: Option<RequestId>,
}

/// End without buying.
#[derive(Debug, Clone)]
pub struct End {
    /// Idempotency key.
    pub request_id: Option<RequestId>,
}

/// The sku actors carts hold stock at. Carts call skus, never the other way round, so no
/// two actors can wait on each other.
#[derive(Clone)]
pub struct Inventory(pub Kind<SkuEntity>);

impl std::fmt::Debug for Inventory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Inventory")
    }
}

/// What a cart's hold on one sku must become.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HoldChange {
    /// Hold this many units (0: release).
    Reserve(i64),
    /// The cart checked out with this many units: take them out of stock.
    Settle(i64),
}

/// The hold `cart` (`None`: no cart) should have on `sku`: what an active cart holds, what a
/// checked-out cart bought, nothing for any other.
fn hold_of(cart: Option<&Cart>, sku: &str) -> HoldChange {
    let quantity = |cart: &Cart| cart.line(sku).map_or(0, |l| i64::from(l.quantity));
    match cart {
        Some(cart) if cart.status == CartStatus::CheckedOut => HoldChange::Settle(quantity(cart)),
        Some(cart) if cart.is_active() => HoldChange::Reserve(quantity(cart)),
        _ => HoldChange::Reserve(0),
    }
}

impl From<HoldChange> for (i64, bool) {
    /// Units and whether they settle, as a peer call carries them.
    fn from(change: HoldChange) -> Self {
        match change {
            HoldChange::Reserve(quantity) => (quantity, false),
            HoldChange::Settle(quantity) => (quantity, true),
        }
    }
}

impl Inventory {
    /// Sets `cart`'s hold on `sku`; untracked skus take any number of units. With several
    /// replicas, at the replica serving the sku.
    async fn hold(
        &self,
        sku: &str,
        cart: &str,
        change: HoldChange,
        deadline: kit::deadline::Deadline,
    ) -> Result<Held, Error> {
        if let Some(cluster) = self.0.cluster()
            && let Placement::Remote(owner) = cluster.placement(SkuEntity::KIND, sku)
        {
            return crate::cluster::peer::hold(cluster, &owner, sku, cart, change.into(), deadline)
                .await;
        }
        let cart = cart.to_string();
        match change {
            HoldChange::Reserve(quantity) => {
                self.0.call(sku, Reserve { cart, quantity }, deadline).await
            }
            HoldChange::Settle(quantity) => {
                self.0.call(sku, Settle { cart, quantity }, deadline).await
            }
        }
    }

    /// Sets every hold of `plan` at once (different skus are different actors); the first
    /// failure is returned after all have been tried.
    async fn hold_all(
        self,
        cart: String,
        plan: Vec<(String, HoldChange)>,
        deadline: kit::deadline::Deadline,
    ) -> Result<(), Error> {
        let mut calls = tokio::task::JoinSet::new();
        for (sku, change) in plan {
            let (inventory, cart) = (self.clone(), cart.clone());
            calls.spawn(async move { inventory.hold(&sku, &cart, change, deadline).await });
        }
        let mut first = Ok(());
        while let Some(done) = calls.join_next().await {
            let result = done.map_err(|e| Error::Corrupt(format!("a stock call panicked: {e}")));
            if let Err(error) = result.and_then(|held| held.map(drop))
                && first.is_ok()
            {
                first = Err(error);
            }
        }
        first
    }
}

/// The cart kind's configuration: its discount catalog and how many events it keeps.
#[derive(Debug, Clone)]
pub struct CartEntity {
    /// Codes ApplyDiscount accepts.
    pub catalog: Catalog,
    /// Latest events a Session shows (kept in the cart's own record).
    pub log_limit: usize,
    /// Events kept per cart as records of their own; the oldest beyond it are deleted.
    pub events_per_cart: u64,
    /// How long an active cart may go untouched before its durable reminder expires it
    /// (`None`: carts never expire).
    pub ttl: Option<std::time::Duration>,
    /// Where tracked skus are reserved (`None`: stock is not checked, as in benchmarks of
    /// the cart alone).
    pub inventory: Option<Inventory>,
}

impl CartEntity {
    /// After a write of `cart`: sets its holds on `skus` to what it holds now (releases what
    /// it let go of, settles what it bought). Run after the commit, so a crash in between
    /// leaves a hold larger than the cart, never smaller: stock is never oversold, and the
    /// sweeper's reconciler returns what is over.
    fn sync_holds(&self, cart: &Cart, skus: Vec<String>) -> Option<After> {
        let inventory = self.inventory.clone()?;
        if skus.is_empty() {
            return None;
        }
        let plan: Vec<_> = skus
            .into_iter()
            .map(|sku| {
                let change = hold_of(Some(cart), &sku);
                (sku, change)
            })
            .collect();
        let key = cart.key.clone();
        Some(After(Box::new(move |deadline| {
            Box::pin(inventory.hold_all(key, plan, deadline))
        })))
    }

    fn domain_ctx(&self, ctx: Ctx) -> DomainCtx {
        DomainCtx {
            now_ms: ctx.now_ms,
            log_limit: self.log_limit,
        }
    }

    /// The event records of what changed since the cart had `before` events, and the
    /// deletions of those that fall out of the kept history, after `records`.
    fn event_writes(
        &self,
        cart: &Cart,
        before: u64,
        mut records: Vec<RecordWrite>,
    ) -> Vec<RecordWrite> {
        for log in cart.events_since(before) {
            records.push(RecordWrite {
                namespace: EVENTS_NAMESPACE,
                key: event_key(&cart.key, log.seq),
                value: Some(convert::wire_log(log).encode_to_vec()),
                expected_version: 0,
            });
            if let Some(dropped) = log.seq.checked_sub(self.events_per_cart)
                && dropped > 0
            {
                // Events are written once, so the oldest is at version 1.
                records.push(RecordWrite {
                    namespace: EVENTS_NAMESPACE,
                    key: event_key(&cart.key, dropped),
                    value: None,
                    expected_version: 1,
                });
            }
        }
        records
    }

    /// The write of `cart`, changed from `before` events, answered with the session.
    fn written(&self, cart: &Cart, before: u64, ctx: Ctx) -> Step<SessionReply> {
        Step::Write {
            reply: session(cart, ctx.version + 1),
            records: self.event_writes(cart, before, Vec::new()),
            outcome: 0,
            after: None,
        }
    }
}

/// The session `cart` is at store `version`, not yet encoded.
fn session(cart: &Cart, version: u64) -> SessionReply {
    SessionReply {
        session: convert::session(cart, version),
        encoded: None,
    }
}

/// A request answered with the session, that changes the cart by one domain operation, which
/// leaves the cart unchanged when it fails (the contract that lets the runtime skip copying
/// the state). Every such request shares one way to handle, replay and write.
trait SessionChange: Send + 'static {
    /// Its name, for logs and the idempotency memory.
    const NAME: &'static str;
    /// Its idempotency key.
    fn request_id(&self) -> Option<&RequestId>;
    /// Applies it to `cart`; false when nothing changed (nothing to write).
    fn apply(self, entity: &CartEntity, cart: &mut Cart, ctx: &DomainCtx) -> Result<bool, Error>;
    /// Reserves stock before the change ([`Request::prepare`]).
    fn prepare<'a>(&'a mut self, _env: Env<'a, CartEntity>) -> Option<Effect<'a>> {
        None
    }
    /// The skus whose holds must follow the change once it is durable (released or
    /// settled), as the cart is before it.
    fn releases(&self, _cart: &Cart) -> Vec<String> {
        Vec::new()
    }
}

/// Every sku the cart holds.
fn all_skus(cart: &Cart) -> Vec<String> {
    cart.items.iter().map(|l| l.sku.clone()).collect()
}

impl<T: SessionChange> Request<CartEntity> for T {
    type Reply = SessionReply;

    fn name(&self) -> &'static str {
        T::NAME
    }

    fn request_id(&self) -> Option<&RequestId> {
        SessionChange::request_id(self)
    }

    fn handle(
        self,
        entity: &CartEntity,
        key: &str,
        state: &mut Option<Cart>,
        ctx: Ctx,
    ) -> Result<Step<SessionReply>, Error> {
        let Some(cart) = state else {
            return Err(entity.missing(key));
        };
        let before = cart.event_count;
        let releases = self.releases(cart);
        Ok(if self.apply(entity, cart, &entity.domain_ctx(ctx))? {
            let mut step = entity.written(cart, before, ctx);
            if let Step::Write { after, .. } = &mut step {
                *after = entity.sync_holds(cart, releases);
            }
            step
        } else {
            Step::Read(session(cart, ctx.version))
        })
    }

    fn prepare<'a>(&'a mut self, env: Env<'a, CartEntity>) -> Option<Effect<'a>> {
        SessionChange::prepare(self, env)
    }

    fn replay(
        self,
        entity: &CartEntity,
        key: &str,
        state: Option<&Cart>,
        version: u64,
        _outcome: u64,
    ) -> Result<Replay<SessionReply>, Error> {
        let cart = state.ok_or_else(|| entity.missing(key))?;
        Ok(Replay::Reply(session(cart, version)))
    }

    fn encode_written(_: &CartEntity, _: &Cart, reply: &SessionReply) -> Vec<u8> {
        encode_session(reply)
    }

    fn keep_written(reply: SessionReply, written: Bytes) -> SessionReply {
        keep_session(reply, written)
    }
}

/// A written session's stored form: the reply itself (its version field is ignored on load),
/// rather than converting the cart a second time.
fn encode_session(reply: &SessionReply) -> Vec<u8> {
    match &reply.encoded {
        Some(encoded) => encoded.to_vec(),
        None => reply.session.encode_to_vec(),
    }
}

/// `encode_session` encoded exactly this session: it can go to the client as is.
fn keep_session(reply: SessionReply, written: Bytes) -> SessionReply {
    SessionReply {
        encoded: Some(written),
        ..reply
    }
}

impl SessionChange for Get {
    const NAME: &'static str = "get_session";

    fn request_id(&self) -> Option<&RequestId> {
        None
    }

    fn apply(self, _: &CartEntity, _: &mut Cart, _: &DomainCtx) -> Result<bool, Error> {
        Ok(false)
    }
}

impl SessionChange for AddItem {
    const NAME: &'static str = "add_item";

    fn request_id(&self) -> Option<&RequestId> {
        self.request_id.as_ref()
    }

    fn apply(self, _: &CartEntity, cart: &mut Cart, ctx: &DomainCtx) -> Result<bool, Error> {
        cart.add_item(self.sku, self.name, self.quantity, self.unit_price, ctx)?;
        Ok(true)
    }

    /// Reserves what the line will hold before adding to it, so the cart never holds a unit
    /// its sku has not set aside. An add the cart would refuse reserves nothing: the handler
    /// answers it.
    fn prepare<'a>(&'a mut self, env: Env<'a, CartEntity>) -> Option<Effect<'a>> {
        let inventory = env.entity.inventory.as_ref()?;
        let total = env
            .state?
            .check_add(&self.sku, &self.name, self.quantity, self.unit_price)
            .ok()?;
        let change = HoldChange::Reserve(i64::from(total));
        Some(Box::pin(async move {
            inventory
                .hold(&self.sku, env.key, change, env.deadline)
                .await
                .map(drop)
        }))
    }
}

impl SessionChange for RemoveItem {
    const NAME: &'static str = "remove_item";

    fn request_id(&self) -> Option<&RequestId> {
        self.request_id.as_ref()
    }

    fn apply(self, _: &CartEntity, cart: &mut Cart, ctx: &DomainCtx) -> Result<bool, Error> {
        cart.remove_item(&self.sku, self.quantity, ctx)?;
        Ok(true)
    }

    fn releases(&self, _: &Cart) -> Vec<String> {
        vec![self.sku.clone()]
    }
}

impl SessionChange for ApplyDiscount {
    const NAME: &'static str = "apply_discount";

    fn request_id(&self) -> Option<&RequestId> {
        self.request_id.as_ref()
    }

    fn apply(self, entity: &CartEntity, cart: &mut Cart, ctx: &DomainCtx) -> Result<bool, Error> {
        let discount = entity.catalog.lookup(&self.code)?;
        Ok(cart.apply_discount(discount, ctx)?)
    }
}

impl SessionChange for End {
    const NAME: &'static str = "end_session";

    fn request_id(&self) -> Option<&RequestId> {
        self.request_id.as_ref()
    }

    fn apply(self, _: &CartEntity, cart: &mut Cart, ctx: &DomainCtx) -> Result<bool, Error> {
        cart.end(ctx)?;
        Ok(true)
    }

    fn releases(&self, cart: &Cart) -> Vec<String> {
        all_skus(cart)
    }
}

impl Request<CartEntity> for Start {
    type Reply = SessionReply;

    fn name(&self) -> &'static str {
        "start_session"
    }

    fn handle(
        self,
        entity: &CartEntity,
        _key: &str,
        state: &mut Option<Cart>,
        ctx: Ctx,
    ) -> Result<Step<SessionReply>, Error> {
        Ok(match state {
            Some(cart) => Step::Read(session(cart, ctx.version)),
            None => {
                let cart = state.insert(Cart::start(self.0, &entity.domain_ctx(ctx))?);
                entity.written(cart, 0, ctx)
            }
        })
    }

    fn encode_written(_: &CartEntity, _: &Cart, reply: &SessionReply) -> Vec<u8> {
        encode_session(reply)
    }

    fn keep_written(reply: SessionReply, written: Bytes) -> SessionReply {
        keep_session(reply, written)
    }
}

impl Request<CartEntity> for Checkout {
    type Reply = pb::Order;

    fn name(&self) -> &'static str {
        "checkout"
    }

    fn request_id(&self) -> Option<&RequestId> {
        self.request_id.as_ref()
    }

    fn handle(
        self,
        entity: &CartEntity,
        key: &str,
        state: &mut Option<Cart>,
        ctx: Ctx,
    ) -> Result<Step<pb::Order>, Error> {
        let Some(cart) = state else {
            return Err(entity.missing(key));
        };
        let before = cart.event_count;
        let bought = all_skus(cart);
        // The order id is the session key: one order per session (checkout is final). The
        // order and the checked-out cart are one commit, so neither exists alone.
        let order = convert::order(&cart.checkout(cart.key.clone(), &entity.domain_ctx(ctx))?);
        let stored = RecordWrite {
            namespace: ORDERS_NAMESPACE,
            key: order.order_id.clone(),
            value: Some(order.encode_to_vec()),
            expected_version: 0,
        };
        Ok(Step::Write {
            records: entity.event_writes(cart, before, vec![stored]),
            reply: order,
            outcome: 0,
            after: entity.sync_holds(cart, bought),
        })
    }

    /// The order the first attempt stored, which is the order it returned.
    fn replay(
        self,
        _: &CartEntity,
        key: &str,
        _: Option<&Cart>,
        _: u64,
        _: u64,
    ) -> Result<Replay<pb::Order>, Error> {
        Ok(Replay::Fetch {
            namespace: ORDERS_NAMESPACE,
            key: key.to_string(),
            decode: |bytes| pb::Order::decode(bytes).map_err(|e| e.to_string()),
        })
    }
}

/// The name a cart's records take in the archive: its escaped key and its start time, so a
/// key used again by a later session is archived beside the earlier one, not over it.
pub fn archive_id(cart: &Cart) -> String {
    format!(
        "{}@{:020}",
        escape_key(&cart.key),
        cart.created_at_ms.max(0)
    )
}

/// Moves a closed cart out of the live namespaces (the sweeper sends it, once the cart's
/// events are moved): its record and its order go to the archive namespace, or nowhere when
/// the archive is off, and the actor's record is deleted in the same commit. Through the
/// actor, so a live actor never keeps serving a session that is gone. A cart that is still
/// active, or was touched after `cutoff_ms`, is left alone (the answer is false).
#[derive(Debug, Clone)]
pub struct Archive {
    /// Only carts last changed at or before this time (Unix milliseconds) go.
    pub cutoff_ms: i64,
    /// Where the records go: `Some(namespace)` to keep them there, `None` to delete them.
    pub archive: Option<&'static str>,
    /// The cart's order and its version, read by `prepare`.
    order: Option<(Vec<u8>, u64)>,
}

impl Archive {
    /// Archives carts closed and untouched since `cutoff_ms` into `archive` (`None`: delete).
    pub fn new(cutoff_ms: i64, archive: Option<&'static str>) -> Self {
        Self {
            cutoff_ms,
            archive,
            order: None,
        }
    }

    fn wanted(&self, cart: &Cart) -> bool {
        !cart.is_active() && cart.updated_at_ms <= self.cutoff_ms
    }
}

impl Request<CartEntity> for Archive {
    type Reply = bool;

    fn name(&self) -> &'static str {
        "archive"
    }

    fn prepare<'a>(&'a mut self, env: Env<'a, CartEntity>) -> Option<Effect<'a>> {
        let cart = env.state?;
        if !self.wanted(cart) || cart.order_id.is_none() {
            return None;
        }
        Some(Box::pin(async move {
            let stored = env
                .store
                .get(ORDERS_NAMESPACE, env.key, env.deadline)
                .await?;
            self.order = stored.map(|s| (s.value, s.version));
            Ok(())
        }))
    }

    fn handle(
        self,
        entity: &CartEntity,
        key: &str,
        state: &mut Option<Cart>,
        _: Ctx,
    ) -> Result<Step<bool>, Error> {
        let Some(cart) = state.as_ref().filter(|cart| self.wanted(cart)) else {
            return Ok(Step::Read(false));
        };
        let id = archive_id(cart);
        let mut records = Vec::with_capacity(3);
        if let Some(archive) = self.archive {
            records.push(RecordWrite {
                namespace: archive,
                key: format!("{}/{id}", CartEntity::KIND),
                value: Some(entity.encode_state(cart)),
                expected_version: 0,
            });
        }
        if let Some((order, version)) = self.order {
            if let Some(archive) = self.archive {
                records.push(RecordWrite {
                    namespace: archive,
                    key: format!("{ORDERS_NAMESPACE}/{id}"),
                    value: Some(order),
                    expected_version: 0,
                });
            }
            records.push(RecordWrite {
                namespace: ORDERS_NAMESPACE,
                key: key.to_string(),
                value: None,
                expected_version: version,
            });
        }
        // No state: the runtime deletes the cart's record and its reminder in this commit.
        *state = None;
        Ok(Step::Write {
            reply: true,
            records,
            outcome: 0,
            after: None,
        })
    }
}

/// Sets the cart's hold on `sku` to what the cart holds now: sent by the sweeper's
/// reconciler for a hold that does not match the cart's stored record (a crash between the
/// sku's write and the cart's, or a release that failed). Through the cart's mailbox, so it
/// sees the cart as its own requests leave it. Writes nothing to the cart.
#[derive(Debug, Clone)]
pub struct Reconcile {
    /// The sku whose hold to set.
    pub sku: String,
}

impl Request<CartEntity> for Reconcile {
    type Reply = ();

    fn name(&self) -> &'static str {
        "reconcile"
    }

    fn prepare<'a>(&'a mut self, env: Env<'a, CartEntity>) -> Option<Effect<'a>> {
        let inventory = env.entity.inventory.as_ref()?;
        let change = hold_of(env.state, &self.sku);
        Some(Box::pin(async move {
            inventory
                .hold(&self.sku, env.key, change, env.deadline)
                .await
                .map(drop)
        }))
    }

    fn handle(
        self,
        _: &CartEntity,
        _: &str,
        _: &mut Option<Cart>,
        _: Ctx,
    ) -> Result<Step<()>, Error> {
        Ok(Step::Read(()))
    }
}

impl Entity for CartEntity {
    const KIND: &'static str = "cart";
    const KEY_FIELD: &'static str = "key";
    type State = Cart;
    type Snapshot = pb::Session;
    const REMINDERS: bool = true;

    /// An active cart wants its reminder when it will have been untouched for the TTL.
    fn reminder_due(&self, cart: &Cart) -> Option<i64> {
        let ttl = i64::try_from(self.ttl?.as_millis()).unwrap_or(i64::MAX);
        cart.is_active()
            .then(|| cart.updated_at_ms.saturating_add(ttl))
    }

    /// Expires an active cart untouched for the TTL: status `expired`, an `expired` event.
    /// A cart touched since the reminder was set is left alone (its next reminder is due at
    /// its new TTL); a closed cart needs nothing. Idempotent.
    fn on_reminder(
        &self,
        _key: &str,
        cart: &mut Cart,
        ctx: Ctx,
        records: &mut Vec<RecordWrite>,
    ) -> Result<Option<After>, Error> {
        let Some(ttl) = self.ttl else {
            return Ok(None);
        };
        let ttl = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
        if !cart.is_active() || cart.idle_ms(ctx.now_ms) < ttl {
            return Ok(None);
        }
        let before = cart.event_count;
        let held = all_skus(cart);
        cart.expire(&self.domain_ctx(ctx))?;
        records.extend(self.event_writes(cart, before, Vec::new()));
        Ok(self.sync_holds(cart, held))
    }

    fn decode_state(&self, bytes: &[u8]) -> Result<Cart, String> {
        let stored = pb::Session::decode(bytes).map_err(|e| e.to_string())?;
        convert::cart_from_stored(stored)
    }

    fn encode_state(&self, cart: &Cart) -> Vec<u8> {
        // The version lives in the store, not in the stored bytes.
        convert::session(cart, 0).encode_to_vec()
    }

    fn snapshot(&self, cart: &Cart, version: u64) -> pb::Session {
        convert::session(cart, version)
    }

    fn is_final(&self, session: &pb::Session) -> bool {
        session.status != pb::SessionStatus::Active as i32
    }

    fn missing(&self, key: &str) -> Error {
        Error::NotFound(
            reason::SESSION_NOT_FOUND,
            format!(
                "no shopping session with key {}; start one with StartSession",
                echo(key)
            ),
        )
    }
}

/// A session reply not yet encoded (as reads answer).
#[cfg(test)]
fn session_of(session: pb::Session) -> SessionReply {
    SessionReply {
        session,
        encoded: None,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use kit::deadline::Deadline;

    use super::*;
    use crate::{
        domain::{Catalog, Currency, Money},
        runtime::{Actors, Kind, Settings, Store},
    };

    fn carts() -> Kind<CartEntity> {
        let entity = CartEntity {
            catalog: Catalog::default(),
            log_limit: 10,
            events_per_cart: 3,
            ttl: None,
            inventory: None,
        };
        Kind::new(
            entity,
            Store::in_memory(),
            Settings::default(),
            Actors::new(8),
        )
    }

    fn add(request_id: &str) -> AddItem {
        AddItem {
            sku: "A1".into(),
            name: "Rocket".into(),
            quantity: 2,
            unit_price: Money::new(Currency::parse("USD").unwrap(), 1999),
            request_id: Some(RequestId {
                id: request_id.into(),
                fingerprint: 1,
            }),
        }
    }

    fn soon() -> Deadline {
        Deadline::after(Duration::from_secs(5))
    }

    #[tokio::test]
    async fn a_written_session_comes_back_with_exactly_its_encoding_and_a_read_without() {
        let carts = carts();
        let start = Start(StartArgs {
            key: "k".into(),
            domain: "shop.example".into(),
            landing: String::new(),
            ip: String::new(),
            member_id: String::new(),
        });
        carts.call("k", start, soon()).await.unwrap();

        let SessionReply {
            session,
            encoded: Some(encoded),
        } = carts.call("k", add("r-1"), soon()).await.unwrap()
        else {
            panic!("a write answers with the encoding it stored");
        };
        assert_eq!(encoded.as_ref(), session.encode_to_vec().as_slice());
        assert_eq!(session.version, 2);
        assert_eq!(session.items[0].quantity, 2);

        // A read encodes nothing ahead, and sees the same session.
        let read = carts.call("k", Get, soon()).await.unwrap();
        assert_eq!(read, super::session_of(session.clone()));
        // A retry is answered from the current state: the same session, not applied again.
        let retried = carts.call("k", add("r-1"), soon()).await.unwrap();
        assert_eq!(retried, super::session_of(session));
    }

    #[tokio::test]
    async fn events_are_records_of_their_own_and_only_the_newest_are_kept() {
        let store = Store::in_memory();
        let carts = Kind::new(
            CartEntity {
                catalog: Catalog::default(),
                log_limit: 2,
                events_per_cart: 3,
                ttl: None,
                inventory: None,
            },
            store.clone(),
            Settings::default(),
            Actors::new(8),
        );
        let start = Start(StartArgs {
            key: "a/b".into(),
            ..StartArgs::default()
        });
        carts.call("a/b", start, soon()).await.unwrap();
        for i in 0..4 {
            carts
                .call("a/b", add(&format!("r-{i}")), soon())
                .await
                .unwrap();
        }
        let (events, next) = store
            .scan(
                EVENTS_NAMESPACE,
                &events_prefix("a/b"),
                0,
                String::new(),
                soon(),
            )
            .await
            .unwrap();
        assert!(next.is_empty());
        let sequences: Vec<u64> = events
            .iter()
            .map(|e| pb::LogEntry::decode(e.value.as_slice()).unwrap().sequence)
            .collect();
        assert_eq!(sequences, [3, 4, 5], "5 events, the 3 newest kept");
        assert_eq!(events[0].key, "a%2Fb/00000000000000000003");
        let session = carts.call("a/b", Get, soon()).await.unwrap().session;
        assert_eq!(session.event_count, 5);
        let shown: Vec<u64> = session.logs.iter().map(|l| l.sequence).collect();
        assert_eq!(shown, [4, 5], "the session shows the log_limit newest");
    }
}
