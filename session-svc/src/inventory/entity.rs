//! One sku's stock as an actor: units on hand and reserved, changed one command at a time.
//!
//! Carts reserve units here (cart → sku, never back). Each cart's hold is a record of its
//! own (namespace `reservations`, key `<escaped sku>/<cart key>`) holding the absolute number
//! of units the cart holds: setting it again is harmless, and a write costs one small record,
//! not the sku's whole list of holds.

use std::collections::HashMap;

use prost::Message;
use proto::session::v1 as pb;

use crate::{
    error::{Error, reason},
    runtime::{
        Child, Children, Ctx, Entity, RecordWrite, Replay, Request, RequestId, Step, escape_key,
    },
};

/// The most units a sku may have on hand, and the most one adjustment may move: far beyond
/// any warehouse, far below where `i64` arithmetic could overflow.
pub const MAX_UNITS: i64 = 1_000_000_000_000;

/// Store namespace of the carts' holds on stock, one record per (sku, cart).
pub const RESERVATIONS_NAMESPACE: &str = "reservations";

/// The prefix every hold on `sku` has, and no other sku's.
pub fn reservations_prefix(sku: &str) -> String {
    format!("{}/", escape_key(sku))
}

/// The store key of `cart`'s hold on `sku`.
pub fn reservation_key(sku: &str, cart: &str) -> String {
    format!("{}/{cart}", escape_key(sku))
}

/// The sku kind.
#[derive(Debug, Clone, Copy, Default)]
pub struct SkuEntity;

/// One cart's hold, as the sku's actor keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hold {
    /// Units held.
    pub quantity: i64,
    /// Store version of its record, the version its next write expects.
    pub version: u64,
}

/// A sku's stock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stock {
    /// The sku.
    pub sku: String,
    /// Units in the warehouse.
    pub on_hand: i64,
    /// Units held for carts: the sum of `holds`.
    pub reserved: i64,
    /// Cart key → its hold.
    pub holds: HashMap<String, Hold>,
}

impl Stock {
    /// A sku with nothing on hand and nothing held.
    fn empty(sku: &str) -> Self {
        Self {
            sku: sku.to_string(),
            on_hand: 0,
            reserved: 0,
            holds: HashMap::new(),
        }
    }

    /// Units that can still be sold.
    pub fn available(&self) -> i64 {
        self.on_hand - self.reserved
    }

    /// The wire form at store version `version`.
    fn wire(&self, version: u64) -> pb::Stock {
        pb::Stock {
            sku: self.sku.clone(),
            on_hand: self.on_hand,
            reserved: self.reserved,
            available: self.available(),
            version,
        }
    }

    /// Sets `cart`'s hold to `quantity` units (0 removes it), returning the write of its
    /// record. The caller has checked that the units are available.
    fn set_hold(&mut self, cart: &str, quantity: i64, now_ms: i64) -> RecordWrite {
        let key = reservation_key(&self.sku, cart);
        let held = self.holds.get(cart).copied();
        let old = held.map_or(0, |h| h.quantity);
        self.reserved += quantity - old;
        if quantity == 0 {
            self.holds.remove(cart);
            return RecordWrite {
                namespace: RESERVATIONS_NAMESPACE,
                key,
                value: None,
                expected_version: held.map_or(0, |h| h.version),
            };
        }
        let expected_version = held.map_or(0, |h| h.version);
        self.holds.insert(
            cart.to_string(),
            Hold {
                quantity,
                version: expected_version + 1,
            },
        );
        RecordWrite {
            namespace: RESERVATIONS_NAMESPACE,
            key,
            value: Some(
                pb::ReservationRecord {
                    cart: cart.to_string(),
                    quantity,
                    updated_ms: now_ms,
                }
                .encode_to_vec(),
            ),
            expected_version,
        }
    }
}

impl Entity for SkuEntity {
    const KIND: &'static str = "sku";
    const KEY_FIELD: &'static str = "sku";
    type State = Stock;
    type Snapshot = pb::Stock;
    /// Every AddItem asks its sku whether it is tracked: an untracked sku's actor stays live
    /// (until idle) to answer from memory, not from a store read per AddItem.
    const KEEP_WITHOUT_STATE: bool = true;

    fn decode_state(&self, bytes: &[u8]) -> Result<Stock, String> {
        let record = pb::StockRecord::decode(bytes).map_err(|e| e.to_string())?;
        Ok(Stock {
            sku: record.sku,
            on_hand: record.on_hand,
            reserved: record.reserved,
            holds: HashMap::new(),
        })
    }

    fn encode_state(&self, stock: &Stock) -> Vec<u8> {
        pb::StockRecord {
            sku: stock.sku.clone(),
            on_hand: stock.on_hand,
            reserved: stock.reserved,
        }
        .encode_to_vec()
    }

    fn children(&self, sku: &str) -> Option<Children> {
        Some(Children {
            namespace: RESERVATIONS_NAMESPACE,
            prefix: reservations_prefix(sku),
        })
    }

    /// The holds, whose sum is what the stock record says is reserved: they are written in
    /// the same commits, so a difference means damage, refused rather than guessed at.
    fn attach_children(&self, stock: &mut Stock, children: Vec<Child>) -> Result<(), String> {
        let mut sum = 0i64;
        for child in children {
            let hold = pb::ReservationRecord::decode(child.value.as_slice())
                .map_err(|e| format!("reservation {}: {e}", child.key))?;
            sum += hold.quantity;
            stock.holds.insert(
                hold.cart,
                Hold {
                    quantity: hold.quantity,
                    version: child.version,
                },
            );
        }
        if sum != stock.reserved {
            return Err(format!(
                "its reservations hold {sum} units but its record says {} are reserved",
                stock.reserved
            ));
        }
        Ok(())
    }

    fn snapshot(&self, stock: &Stock, version: u64) -> pb::Stock {
        stock.wire(version)
    }

    fn is_final(&self, _: &pb::Stock) -> bool {
        false
    }

    fn missing(&self, key: &str) -> Error {
        Error::NotFound(
            reason::SKU_NOT_FOUND,
            format!(
                "sku {} has no stock set; SetStock first (a sku without stock is untracked)",
                kit::echo::echo(key)
            ),
        )
    }
}

/// The reply of a change: the stock as it is after the write (whose version is the next).
fn written(stock: &Stock, ctx: Ctx) -> pb::Stock {
    stock.wire(ctx.version + 1)
}

/// `SetStock`: units on hand, as counted.
#[derive(Debug)]
pub struct SetStock {
    /// Units on hand, 0..=[`MAX_UNITS`] (checked at the edge).
    pub on_hand: i64,
}

impl Request<SkuEntity> for SetStock {
    type Reply = pb::Stock;

    fn name(&self) -> &'static str {
        "set_stock"
    }

    fn handle(
        self,
        _: &SkuEntity,
        key: &str,
        state: &mut Option<Stock>,
        ctx: Ctx,
    ) -> Result<Step<pb::Stock>, Error> {
        let stock = state.get_or_insert_with(|| Stock::empty(key));
        if self.on_hand < stock.reserved {
            return Err(Error::FailedPrecondition(
                reason::STOCK_RESERVED,
                format!(
                    "{} units of this sku are reserved by carts; on hand cannot be set below that \
                 (asked for {})",
                    stock.reserved, self.on_hand
                ),
            ));
        }
        if stock.on_hand == self.on_hand && ctx.version > 0 {
            return Ok(Step::Read(stock.wire(ctx.version)));
        }
        stock.on_hand = self.on_hand;
        Ok(Step::write(written(stock, ctx)))
    }
}

/// `GetStock`.
#[derive(Debug)]
pub struct GetStock;

impl Request<SkuEntity> for GetStock {
    type Reply = pb::Stock;

    fn name(&self) -> &'static str {
        "get_stock"
    }

    fn handle(
        self,
        entity: &SkuEntity,
        key: &str,
        state: &mut Option<Stock>,
        ctx: Ctx,
    ) -> Result<Step<pb::Stock>, Error> {
        let stock = state.as_ref().ok_or_else(|| entity.missing(key))?;
        Ok(Step::Read(stock.wire(ctx.version)))
    }
}

/// `AdjustStock`: a delivery (positive) or a correction (negative).
#[derive(Debug)]
pub struct AdjustStock {
    /// Units to add or remove, non-zero and within [`MAX_UNITS`] (checked at the edge).
    pub delta: i64,
    /// The caller's idempotency key.
    pub request_id: Option<RequestId>,
}

impl Request<SkuEntity> for AdjustStock {
    type Reply = pb::Stock;

    fn name(&self) -> &'static str {
        "adjust_stock"
    }

    fn request_id(&self) -> Option<&RequestId> {
        self.request_id.as_ref()
    }

    fn handle(
        self,
        entity: &SkuEntity,
        key: &str,
        state: &mut Option<Stock>,
        ctx: Ctx,
    ) -> Result<Step<pb::Stock>, Error> {
        let stock = state.as_mut().ok_or_else(|| entity.missing(key))?;
        let on_hand = stock.on_hand + self.delta;
        if on_hand < stock.reserved {
            return Err(Error::FailedPrecondition(
                reason::OUT_OF_STOCK,
                format!(
                    "cannot remove {} units: {} are available ({} on hand, {} reserved)",
                    -self.delta,
                    stock.available(),
                    stock.on_hand,
                    stock.reserved
                ),
            ));
        }
        if on_hand > MAX_UNITS {
            return Err(Error::FailedPrecondition(
                reason::STOCK_LIMIT,
                format!(
                    "cannot add {} units: on hand would pass the limit of {MAX_UNITS}",
                    self.delta
                ),
            ));
        }
        stock.on_hand = on_hand;
        Ok(Step::write(written(stock, ctx)))
    }

    fn replay(
        self,
        entity: &SkuEntity,
        key: &str,
        state: Option<&Stock>,
        version: u64,
        _: u64,
    ) -> Result<Replay<pb::Stock>, Error> {
        let stock = state.ok_or_else(|| entity.missing(key))?;
        Ok(Replay::Reply(stock.wire(version)))
    }
}

/// What a cart's reservation call found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Held {
    /// The sku has no stock set: it is untracked, and the cart may hold any number of units.
    Untracked,
    /// The hold is set (or was already).
    Set,
}

/// The write of a changed hold: the sku's record and the hold's, in one commit.
fn hold_written(record: RecordWrite) -> Step<Held> {
    Step::Write {
        reply: Held::Set,
        records: vec![record],
        outcome: 0,
        after: None,
    }
}

/// A cart holds `quantity` units of this sku from now on (0: none): the absolute count, so a
/// repeat is harmless. More than is available (beyond what the cart held) is refused.
#[derive(Debug)]
pub struct Reserve {
    /// The cart's key.
    pub cart: String,
    /// Units the cart holds, in all.
    pub quantity: i64,
}

impl Request<SkuEntity> for Reserve {
    type Reply = Held;

    fn name(&self) -> &'static str {
        "reserve"
    }

    fn handle(
        self,
        _: &SkuEntity,
        key: &str,
        state: &mut Option<Stock>,
        ctx: Ctx,
    ) -> Result<Step<Held>, Error> {
        let Some(stock) = state else {
            return Ok(Step::Read(Held::Untracked));
        };
        let old = stock.holds.get(&self.cart).map_or(0, |h| h.quantity);
        if self.quantity == old {
            return Ok(Step::Read(Held::Set));
        }
        let more = self.quantity - old;
        if more > stock.available() {
            return Err(Error::FailedPrecondition(
                reason::OUT_OF_STOCK,
                format!(
                    "not enough stock of sku {}: {} available, {more} more asked for",
                    kit::echo::echo(key),
                    stock.available().max(0),
                ),
            ));
        }
        let record = stock.set_hold(&self.cart, self.quantity, ctx.now_ms);
        Ok(hold_written(record))
    }
}

/// A cart checked out holding `quantity` units: they leave the warehouse (on hand and
/// reserved both decrease) and the cart's hold is gone. Idempotent: with no hold left there is
/// nothing to settle.
#[derive(Debug)]
pub struct Settle {
    /// The cart's key.
    pub cart: String,
    /// Units the cart bought.
    pub quantity: i64,
}

impl Request<SkuEntity> for Settle {
    type Reply = Held;

    fn name(&self) -> &'static str {
        "settle"
    }

    fn handle(
        self,
        _: &SkuEntity,
        _key: &str,
        state: &mut Option<Stock>,
        ctx: Ctx,
    ) -> Result<Step<Held>, Error> {
        let Some(stock) = state else {
            return Ok(Step::Read(Held::Untracked));
        };
        let Some(hold) = stock.holds.get(&self.cart).copied() else {
            return Ok(Step::Read(Held::Set));
        };
        // A cart never holds more than it reserved (reservations come first), so this takes
        // what it bought; the min keeps on hand ≥ reserved even if that were broken.
        let sold = self.quantity.clamp(0, hold.quantity);
        let record = stock.set_hold(&self.cart, 0, ctx.now_ms);
        stock.on_hand -= sold;
        Ok(hold_written(record))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(version: u64) -> Ctx {
        Ctx { now_ms: 0, version }
    }

    fn reply(step: Step<pb::Stock>) -> pb::Stock {
        match step {
            Step::Read(stock) | Step::Write { reply: stock, .. } => stock,
        }
    }

    #[test]
    fn set_creates_and_adjust_moves_on_hand_never_below_zero() {
        let mut state = None;
        let set = SetStock { on_hand: 3 }.handle(&SkuEntity, "A", &mut state, ctx(0));
        let stock = reply(set.unwrap());
        assert_eq!((stock.on_hand, stock.available, stock.version), (3, 3, 1));
        let adjust = |delta| AdjustStock {
            delta,
            request_id: None,
        };
        let down = adjust(-3)
            .handle(&SkuEntity, "A", &mut state, ctx(1))
            .unwrap();
        assert_eq!(reply(down).on_hand, 0);
        let refused = adjust(-1).handle(&SkuEntity, "A", &mut state, ctx(2));
        assert!(
            matches!(refused, Err(Error::FailedPrecondition(_, m)) if m.contains("0 are available"))
        );
        assert_eq!(
            state.as_ref().unwrap().on_hand,
            0,
            "a refused adjustment changes nothing"
        );
        let too_many = adjust(MAX_UNITS + 1).handle(&SkuEntity, "A", &mut state, ctx(2));
        assert!(matches!(too_many, Err(Error::FailedPrecondition(..))));
    }

    #[test]
    fn setting_the_same_count_again_writes_nothing_and_reserved_units_are_kept() {
        let mut state = Some(Stock {
            reserved: 2,
            on_hand: 5,
            ..Stock::empty("A")
        });
        let again = SetStock { on_hand: 5 }.handle(&SkuEntity, "A", &mut state, ctx(4));
        assert!(matches!(again, Ok(Step::Read(_))));
        let below = SetStock { on_hand: 1 }.handle(&SkuEntity, "A", &mut state, ctx(4));
        assert!(matches!(below, Err(Error::FailedPrecondition(_, m)) if m.contains("2 units")));
        let stock = SkuEntity.decode_state(&SkuEntity.encode_state(state.as_ref().unwrap()));
        assert_eq!(stock.unwrap().available(), 3);
    }

    #[test]
    fn stock_of_an_unknown_sku_is_not_found() {
        let mut state = None;
        let got = GetStock.handle(&SkuEntity, "nope", &mut state, ctx(0));
        assert!(matches!(got, Err(Error::NotFound(_, m)) if m.contains("SetStock first")));
        let adjusted = AdjustStock {
            delta: 1,
            request_id: None,
        }
        .handle(&SkuEntity, "nope", &mut state, ctx(0));
        assert!(matches!(adjusted, Err(Error::NotFound(..))));
        assert!(state.is_none());
    }

    fn reserve(cart: &str, quantity: i64) -> Reserve {
        Reserve {
            cart: cart.into(),
            quantity,
        }
    }

    #[test]
    fn holds_are_absolute_per_cart_and_never_exceed_what_is_available() {
        let mut state = Some(Stock {
            on_hand: 10,
            ..Stock::empty("A")
        });
        let held = reserve("c1", 4).handle(&SkuEntity, "A", &mut state, ctx(1));
        let Ok(Step::Write { records, .. }) = held else {
            panic!("a new hold is written: {held:?}");
        };
        assert_eq!(records[0].key, "A/c1");
        assert_eq!(records[0].expected_version, 0);
        // The same absolute quantity again is a read: a retry costs nothing and counts once.
        let again = reserve("c1", 4).handle(&SkuEntity, "A", &mut state, ctx(2));
        assert!(matches!(again, Ok(Step::Read(Held::Set))));
        assert_eq!(state.as_ref().unwrap().reserved, 4);
        // 6 are left: c2 may hold 6, not 7, and the refusal says how many are available.
        let refused = reserve("c2", 7).handle(&SkuEntity, "A", &mut state, ctx(2));
        assert!(
            matches!(&refused, Err(Error::FailedPrecondition(_, m)) if m.contains("6 available")),
            "{refused:?}"
        );
        assert!(
            reserve("c2", 6)
                .handle(&SkuEntity, "A", &mut state, ctx(2))
                .is_ok()
        );
        let stock = state.as_ref().unwrap();
        assert_eq!((stock.reserved, stock.available()), (10, 0));
        // Raising c1's hold needs more units; lowering it always works.
        assert!(
            reserve("c1", 5)
                .handle(&SkuEntity, "A", &mut state, ctx(3))
                .is_err()
        );
        let lowered = reserve("c1", 1).handle(&SkuEntity, "A", &mut state, ctx(3));
        let Ok(Step::Write { records, .. }) = lowered else {
            panic!("{lowered:?}");
        };
        assert_eq!(
            records[0].expected_version, 1,
            "c1's record is at version 1"
        );
        // Releasing deletes the record at its version.
        let released = reserve("c1", 0).handle(&SkuEntity, "A", &mut state, ctx(4));
        let Ok(Step::Write { records, .. }) = released else {
            panic!("{released:?}");
        };
        assert_eq!(
            (records[0].value.clone(), records[0].expected_version),
            (None, 2)
        );
        let stock = state.as_ref().unwrap();
        assert_eq!((stock.reserved, stock.holds.len()), (6, 1));
    }

    #[test]
    fn settling_takes_the_bought_units_out_once() {
        let mut state = Some(Stock {
            on_hand: 10,
            ..Stock::empty("A")
        });
        reserve("c1", 3)
            .handle(&SkuEntity, "A", &mut state, ctx(1))
            .unwrap();
        let settle = || Settle {
            cart: "c1".into(),
            quantity: 3,
        };
        assert!(matches!(
            settle().handle(&SkuEntity, "A", &mut state, ctx(2)),
            Ok(Step::Write { .. })
        ));
        let stock = state.as_ref().unwrap();
        assert_eq!(
            (stock.on_hand, stock.reserved, stock.available()),
            (7, 0, 7)
        );
        // A second settle (a retried checkout, the reconciler) finds no hold: nothing more.
        assert!(matches!(
            settle().handle(&SkuEntity, "A", &mut state, ctx(3)),
            Ok(Step::Read(_))
        ));
        assert_eq!(state.as_ref().unwrap().on_hand, 7);
    }

    #[test]
    fn an_untracked_sku_holds_anything_and_writes_nothing() {
        let mut state = None;
        let held = reserve("c1", 1_000).handle(&SkuEntity, "free", &mut state, ctx(0));
        assert!(matches!(held, Ok(Step::Read(Held::Untracked))));
        assert!(state.is_none());
    }

    #[test]
    fn holds_load_with_the_stock_and_must_sum_to_its_reserved_units() {
        let hold = |cart: &str, quantity| Child {
            key: reservation_key("A", cart),
            value: pb::ReservationRecord {
                cart: cart.into(),
                quantity,
                updated_ms: 1,
            }
            .encode_to_vec(),
            version: 3,
        };
        let mut stock = Stock {
            on_hand: 9,
            reserved: 5,
            ..Stock::empty("A")
        };
        let children = vec![hold("c1", 2), hold("c/2", 3)];
        SkuEntity
            .attach_children(&mut stock, children.clone())
            .unwrap();
        assert_eq!(
            stock.holds["c/2"],
            Hold {
                quantity: 3,
                version: 3
            }
        );
        let mut damaged = Stock {
            reserved: 4,
            ..Stock::empty("A")
        };
        let refused = SkuEntity.attach_children(&mut damaged, children);
        assert!(refused.unwrap_err().contains("hold 5 units"));
    }
}
