//! One sku's stock as an actor: units on hand and reserved, changed one command at a time.

use prost::Message;
use proto::session::v1 as pb;

use crate::{
    error::Error,
    runtime::{Ctx, Entity, Replay, Request, RequestId, Step},
};

/// The most units a sku may have on hand, and the most one adjustment may move: far beyond
/// any warehouse, far below where `i64` arithmetic could overflow.
pub const MAX_UNITS: i64 = 1_000_000_000_000;

/// The sku kind.
#[derive(Debug, Clone, Copy, Default)]
pub struct SkuEntity;

/// A sku's stock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stock {
    /// The sku.
    pub sku: String,
    /// Units in the warehouse.
    pub on_hand: i64,
    /// Units held for carts.
    pub reserved: i64,
}

impl Stock {
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
}

impl Entity for SkuEntity {
    const KIND: &'static str = "sku";
    const KEY_FIELD: &'static str = "sku";
    type State = Stock;
    type Snapshot = pb::Stock;

    fn decode_state(&self, bytes: &[u8]) -> Result<Stock, String> {
        let record = pb::StockRecord::decode(bytes).map_err(|e| e.to_string())?;
        Ok(Stock {
            sku: record.sku,
            on_hand: record.on_hand,
            reserved: record.reserved,
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

    fn snapshot(&self, stock: &Stock, version: u64) -> pb::Stock {
        stock.wire(version)
    }

    fn is_final(&self, _: &pb::Stock) -> bool {
        false
    }

    fn missing(&self, key: &str) -> Error {
        Error::NotFound(format!(
            "sku {} has no stock set; SetStock first (a sku without stock is untracked)",
            store_svc::kit::echo::echo(key)
        ))
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
        let stock = state.get_or_insert_with(|| Stock {
            sku: key.to_string(),
            on_hand: 0,
            reserved: 0,
        });
        if self.on_hand < stock.reserved {
            return Err(Error::FailedPrecondition(format!(
                "{} units of this sku are reserved by carts; on hand cannot be set below that \
                 (asked for {})",
                stock.reserved, self.on_hand
            )));
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
            return Err(Error::FailedPrecondition(format!(
                "cannot remove {} units: {} are available ({} on hand, {} reserved)",
                -self.delta,
                stock.available(),
                stock.on_hand,
                stock.reserved
            )));
        }
        if on_hand > MAX_UNITS {
            return Err(Error::FailedPrecondition(format!(
                "cannot add {} units: on hand would pass the limit of {MAX_UNITS}",
                self.delta
            )));
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
            matches!(refused, Err(Error::FailedPrecondition(m)) if m.contains("0 are available"))
        );
        assert_eq!(
            state.as_ref().unwrap().on_hand,
            0,
            "a refused adjustment changes nothing"
        );
        let too_many = adjust(MAX_UNITS + 1).handle(&SkuEntity, "A", &mut state, ctx(2));
        assert!(matches!(too_many, Err(Error::FailedPrecondition(_))));
    }

    #[test]
    fn setting_the_same_count_again_writes_nothing_and_reserved_units_are_kept() {
        let mut state = Some(Stock {
            sku: "A".into(),
            on_hand: 5,
            reserved: 2,
        });
        let again = SetStock { on_hand: 5 }.handle(&SkuEntity, "A", &mut state, ctx(4));
        assert!(matches!(again, Ok(Step::Read(_))));
        let below = SetStock { on_hand: 1 }.handle(&SkuEntity, "A", &mut state, ctx(4));
        assert!(matches!(below, Err(Error::FailedPrecondition(m)) if m.contains("2 units")));
        let stock = SkuEntity.decode_state(&SkuEntity.encode_state(state.as_ref().unwrap()));
        assert_eq!(stock.unwrap().available(), 3);
    }

    #[test]
    fn stock_of_an_unknown_sku_is_not_found() {
        let mut state = None;
        let got = GetStock.handle(&SkuEntity, "nope", &mut state, ctx(0));
        assert!(matches!(got, Err(Error::NotFound(m)) if m.contains("SetStock first")));
        let adjusted = AdjustStock {
            delta: 1,
            request_id: None,
        }
        .handle(&SkuEntity, "nope", &mut state, ctx(0));
        assert!(matches!(adjusted, Err(Error::NotFound(_))));
        assert!(state.is_none());
    }
}
