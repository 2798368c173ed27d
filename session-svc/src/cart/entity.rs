//! The cart kind: seed 001's shopping `Session` process, as an [`Entity`] of the runtime.

use bytes::Bytes;
use prost::Message;
use proto::session::v1 as pb;

use super::convert;
use crate::{
    domain::{Cart, Catalog, Ctx as DomainCtx, Money, StartArgs},
    error::Error,
    runtime::{Command, Ctx, Entity, RecordWrite, Replay, RequestId, Step, escape_key},
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

/// What a cart actor can be asked.
#[derive(Debug, Clone)]
pub enum CartCommand {
    /// Open the session (or return it unchanged if it exists).
    Start(StartArgs),
    /// Read it.
    Get,
    /// Add units of a sku.
    AddItem {
        /// Product id.
        sku: String,
        /// Product name.
        name: String,
        /// Units, at least 1.
        quantity: u32,
        /// Price of one unit.
        unit_price: Money,
        /// Idempotency key.
        request_id: Option<RequestId>,
    },
    /// Remove units of a sku.
    RemoveItem {
        /// Product id.
        sku: String,
        /// Units, at least 1.
        quantity: u32,
        /// Idempotency key.
        request_id: Option<RequestId>,
    },
    /// Apply a catalog code.
    ApplyDiscount {
        /// The code.
        code: String,
        /// Idempotency key.
        request_id: Option<RequestId>,
    },
    /// Buy.
    Checkout {
        /// Idempotency key.
        request_id: Option<RequestId>,
    },
    /// End without buying.
    End {
        /// Idempotency key.
        request_id: Option<RequestId>,
    },
}

impl Command for CartCommand {
    fn request_id(&self) -> Option<&RequestId> {
        match self {
            Self::Start(_) | Self::Get => None,
            Self::AddItem { request_id, .. }
            | Self::RemoveItem { request_id, .. }
            | Self::ApplyDiscount { request_id, .. }
            | Self::Checkout { request_id }
            | Self::End { request_id } => request_id.as_ref(),
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Self::Start(_) => "start_session",
            Self::Get => "get_session",
            Self::AddItem { .. } => "add_item",
            Self::RemoveItem { .. } => "remove_item",
            Self::ApplyDiscount { .. } => "apply_discount",
            Self::Checkout { .. } => "checkout",
            Self::End { .. } => "end_session",
        }
    }
}

/// What a cart actor answers.
#[derive(Debug, Clone, PartialEq)]
pub enum CartReply {
    /// The session after the command, and its exact encoding once the actor has written it
    /// to the store ([`Entity::keep_written`]): the server sends those bytes as they are.
    Session(pb::Session, Option<Bytes>),
    /// The order Checkout made.
    Order(pb::Order),
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
}

impl CartEntity {
    /// The event records of what changed since the cart had `before` events, and the
    /// deletions of those that fall out of the kept history.
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
}

impl Entity for CartEntity {
    const KIND: &'static str = "cart";
    const KEY_FIELD: &'static str = "key";
    type State = Cart;
    type Command = CartCommand;
    type Reply = CartReply;
    type Snapshot = pb::Session;

    fn decode_state(&self, bytes: &[u8]) -> Result<Cart, String> {
        let stored = pb::Session::decode(bytes).map_err(|e| e.to_string())?;
        convert::cart_from_stored(stored)
    }

    fn encode_state(&self, cart: &Cart) -> Vec<u8> {
        // The version lives in the store, not in the stored bytes.
        convert::session(cart, 0).encode_to_vec()
    }

    fn replay(
        &self,
        key: &str,
        state: Option<&Cart>,
        command: CartCommand,
        version: u64,
        _outcome: u64,
    ) -> Result<Replay<CartReply>, Error> {
        let Some(cart) = state else {
            return Err(self.missing(key));
        };
        Ok(match command {
            // The order the first attempt stored, which is the order it returned.
            CartCommand::Checkout { .. } => Replay::Fetch {
                namespace: ORDERS_NAMESPACE,
                key: key.to_string(),
                decode: |bytes| {
                    pb::Order::decode(bytes)
                        .map(CartReply::Order)
                        .map_err(|e| e.to_string())
                },
            },
            _ => Replay::Reply(CartReply::Session(convert::session(cart, version), None)),
        })
    }

    fn snapshot(&self, cart: &Cart, version: u64) -> pb::Session {
        convert::session(cart, version)
    }

    fn is_final(&self, session: &pb::Session) -> bool {
        session.status != pb::SessionStatus::Active as i32
    }

    fn missing(&self, key: &str) -> Error {
        Error::NotFound(format!(
            "no shopping session with key {key:?}; start one with StartSession"
        ))
    }

    fn encode_written(&self, cart: &Cart, reply: &CartReply) -> Vec<u8> {
        match reply {
            // The reply is the cart's stored form already (its version field is ignored on
            // load): encode it rather than convert the cart a second time.
            CartReply::Session(_, Some(encoded)) => encoded.to_vec(),
            CartReply::Session(session, None) => session.encode_to_vec(),
            CartReply::Order(_) => self.encode_state(cart),
        }
    }

    fn keep_written(&self, reply: CartReply, written: Bytes) -> CartReply {
        match reply {
            // encode_written encoded exactly this session: it can go to the client as is.
            CartReply::Session(session, _) => CartReply::Session(session, Some(written)),
            order => order,
        }
    }

    fn handle(
        &self,
        key: &str,
        state: &mut Option<Cart>,
        command: CartCommand,
        ctx: Ctx,
    ) -> Result<Step<CartReply>, Error> {
        let dctx = DomainCtx {
            now_ms: ctx.now_ms,
            log_limit: self.log_limit,
        };
        let next = ctx.version + 1;
        let session =
            |cart: &Cart, version| CartReply::Session(convert::session(cart, version), None);
        let before = state.as_ref().map_or(0, |cart| cart.event_count);
        let written = |cart: &Cart, records| Step::Write {
            reply: session(cart, next),
            records: self.event_writes(cart, before, records),
            outcome: 0,
        };
        if let CartCommand::Start(args) = command {
            return Ok(match state {
                Some(cart) => Step::Read(session(cart, ctx.version)),
                None => written(state.insert(Cart::start(args, &dctx)?), Vec::new()),
            });
        }
        let Some(cart) = state else {
            return Err(self.missing(key));
        };
        // Every domain operation leaves the cart unchanged when it fails (the contract that
        // lets the runtime skip copying the state).
        Ok(match command {
            CartCommand::Start(_) => unreachable!("handled above"),
            CartCommand::Get => Step::Read(session(cart, ctx.version)),
            CartCommand::AddItem {
                sku,
                name,
                quantity,
                unit_price,
                ..
            } => {
                cart.add_item(sku, name, quantity, unit_price, &dctx)?;
                written(cart, Vec::new())
            }
            CartCommand::RemoveItem { sku, quantity, .. } => {
                cart.remove_item(&sku, quantity, &dctx)?;
                written(cart, Vec::new())
            }
            CartCommand::ApplyDiscount { code, .. } => {
                let discount = self.catalog.lookup(&code)?;
                if cart.apply_discount(discount, &dctx)? {
                    written(cart, Vec::new())
                } else {
                    Step::Read(session(cart, ctx.version))
                }
            }
            CartCommand::Checkout { .. } => {
                // The order id is the session key: one order per session (checkout is final).
                // The order and the checked-out cart are one commit, so neither exists alone.
                let order = convert::order(&cart.checkout(cart.key.clone(), &dctx)?);
                let stored = RecordWrite {
                    namespace: ORDERS_NAMESPACE,
                    key: order.order_id.clone(),
                    value: Some(order.encode_to_vec()),
                    expected_version: 0,
                };
                Step::Write {
                    records: self.event_writes(cart, before, vec![stored]),
                    reply: CartReply::Order(order),
                    outcome: 0,
                }
            }
            CartCommand::End { .. } => {
                cart.end(&dctx)?;
                written(cart, Vec::new())
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use store_svc::kit::deadline::Deadline;

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
        };
        Kind::new(
            entity,
            Store::in_memory(),
            Settings::default(),
            Actors::new(8),
        )
    }

    fn add(request_id: &str) -> CartCommand {
        CartCommand::AddItem {
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
        let start = CartCommand::Start(StartArgs {
            key: "k".into(),
            domain: "shop.example".into(),
            landing: String::new(),
            ip: String::new(),
            member_id: String::new(),
        });
        carts.call("k", start, soon()).await.unwrap();

        let CartReply::Session(session, Some(encoded)) =
            carts.call("k", add("r-1"), soon()).await.unwrap()
        else {
            panic!("a write answers with the encoding it stored");
        };
        assert_eq!(encoded.as_ref(), session.encode_to_vec().as_slice());
        assert_eq!(session.version, 2);
        assert_eq!(session.items[0].quantity, 2);

        // A read encodes nothing ahead, and sees the same session.
        let read = carts.call("k", CartCommand::Get, soon()).await.unwrap();
        assert_eq!(read, CartReply::Session(session.clone(), None));
        // A retry is answered from the current state: the same session, not applied again.
        let retried = carts.call("k", add("r-1"), soon()).await.unwrap();
        assert_eq!(retried, CartReply::Session(session, None));
    }

    #[tokio::test]
    async fn events_are_records_of_their_own_and_only_the_newest_are_kept() {
        let store = Store::in_memory();
        let carts = Kind::new(
            CartEntity {
                catalog: Catalog::default(),
                log_limit: 2,
                events_per_cart: 3,
            },
            store.clone(),
            Settings::default(),
            Actors::new(8),
        );
        let start = CartCommand::Start(StartArgs {
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
        let CartReply::Session(session, _) =
            carts.call("a/b", CartCommand::Get, soon()).await.unwrap()
        else {
            panic!("a session");
        };
        assert_eq!(session.event_count, 5);
        let shown: Vec<u64> = session.logs.iter().map(|l| l.sequence).collect();
        assert_eq!(shown, [4, 5], "the session shows the log_limit newest");
    }
}
