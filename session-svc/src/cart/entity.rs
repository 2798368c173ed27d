//! The cart kind: seed 001's shopping `Session` process, as an [`Entity`] of the runtime.

use bytes::Bytes;
use prost::Message;
use proto::session::v1 as pb;

use super::convert;
use crate::{
    domain::{Cart, Catalog, Ctx as DomainCtx, Money, StartArgs},
    error::Error,
    runtime::{Command, Ctx, Entity, SideWrite, Step},
};

/// Store namespace of orders written by Checkout.
pub const ORDERS_NAMESPACE: &str = "orders";

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
        request_id: Option<String>,
    },
    /// Remove units of a sku.
    RemoveItem {
        /// Product id.
        sku: String,
        /// Units, at least 1.
        quantity: u32,
        /// Idempotency key.
        request_id: Option<String>,
    },
    /// Apply a catalog code.
    ApplyDiscount {
        /// The code.
        code: String,
        /// Idempotency key.
        request_id: Option<String>,
    },
    /// Buy.
    Checkout {
        /// Idempotency key.
        request_id: Option<String>,
    },
    /// End without buying.
    End {
        /// Idempotency key.
        request_id: Option<String>,
    },
}

impl Command for CartCommand {
    fn request_id(&self) -> Option<&str> {
        match self {
            Self::Start(_) | Self::Get => None,
            Self::AddItem { request_id, .. }
            | Self::RemoveItem { request_id, .. }
            | Self::ApplyDiscount { request_id, .. }
            | Self::Checkout { request_id }
            | Self::End { request_id } => request_id.as_deref(),
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

/// The cart kind's configuration: its discount catalog and log length.
#[derive(Debug, Clone)]
pub struct CartEntity {
    /// Codes ApplyDiscount accepts.
    pub catalog: Catalog,
    /// Events kept per cart.
    pub log_limit: usize,
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

    fn encode_reply(&self, reply: &CartReply) -> Vec<u8> {
        // One tag byte tells the two reply messages apart.
        let (tag, body) = match reply {
            CartReply::Session(_, Some(encoded)) => (1u8, encoded.to_vec()),
            CartReply::Session(session, None) => (1u8, session.encode_to_vec()),
            CartReply::Order(order) => (2u8, order.encode_to_vec()),
        };
        let mut bytes = Vec::with_capacity(body.len() + 1);
        bytes.push(tag);
        bytes.extend(body);
        bytes
    }

    fn decode_reply(&self, bytes: &[u8]) -> Result<CartReply, String> {
        match bytes.split_first() {
            Some((1, body)) => {
                pb::Session::decode(body).map(|session| CartReply::Session(session, None))
            }
            Some((2, body)) => pb::Order::decode(body).map(CartReply::Order),
            _ => return Err("unknown reply tag".into()),
        }
        .map_err(|e| e.to_string())
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
        let written = |cart: &Cart| Step::Write {
            reply: session(cart, next),
            side_writes: vec![],
        };
        if let CartCommand::Start(args) = command {
            return Ok(match state {
                Some(cart) => Step::Read(session(cart, ctx.version)),
                None => written(state.insert(Cart::start(args, &dctx)?)),
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
                written(cart)
            }
            CartCommand::RemoveItem { sku, quantity, .. } => {
                cart.remove_item(&sku, quantity, &dctx)?;
                written(cart)
            }
            CartCommand::ApplyDiscount { code, .. } => {
                let discount = self.catalog.lookup(&code)?;
                if cart.apply_discount(discount, &dctx)? {
                    written(cart)
                } else {
                    Step::Read(session(cart, ctx.version))
                }
            }
            CartCommand::Checkout { .. } => {
                // The order id is the session key: one order per session (checkout is final),
                // and a retry after a crash between the two writes finds the same record.
                let order = convert::order(&cart.checkout(cart.key.clone(), &dctx)?);
                Step::Write {
                    side_writes: vec![SideWrite {
                        namespace: ORDERS_NAMESPACE.into(),
                        key: order.order_id.clone(),
                        value: order.encode_to_vec(),
                    }],
                    reply: CartReply::Order(order),
                }
            }
            CartCommand::End { .. } => {
                cart.end(&dctx)?;
                written(cart)
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
            request_id: Some(request_id.into()),
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
        // A retry is answered from the remembered reply: the same session.
        let retried = carts.call("k", add("r-1"), soon()).await.unwrap();
        assert_eq!(retried, CartReply::Session(session, None));
    }
}
