//! Carts between the domain and the wire: `Cart` ↔ `session.v1.Session` (which is also the
//! stored form), `Order` → `session.v1.Order`, and request fields → domain values.

use kit::echo::echo;
use proto::session::v1 as pb;

use crate::{
    domain::{
        Cart, CartError, CartStatus, Currency, Discount, DiscountKind, ErrorKind, LineItem,
        LogEntry, Money, Order, TodoError,
    },
    error::{Error, reason},
};

/// A domain error as the error contract wants it: INVALID_ARGUMENT naming the field,
/// FAILED_PRECONDITION or NOT_FOUND with its stable `reason`.
pub fn domain_error(
    kind: ErrorKind,
    reason: &'static str,
    field: Option<&'static str>,
    message: String,
) -> Error {
    match kind {
        ErrorKind::InvalidArgument => Error::invalid(field.unwrap_or("request"), message),
        ErrorKind::FailedPrecondition => Error::FailedPrecondition(reason, message),
        ErrorKind::NotFound => Error::NotFound(reason, message),
    }
}

/// The `google.rpc.ErrorInfo` reason of a cart error.
fn cart_reason(error: &CartError) -> &'static str {
    match error {
        CartError::TooManyLines => reason::CART_FULL,
        CartError::TooManyDiscounts => reason::TOO_MANY_DISCOUNTS,
        CartError::EmptyCart => reason::CART_EMPTY,
        CartError::NotActive(CartStatus::CheckedOut) => reason::CART_CHECKED_OUT,
        CartError::NotActive(CartStatus::Expired) => reason::CART_EXPIRED,
        CartError::NotActive(_) => reason::CART_ENDED,
        CartError::SkuNotInCart { .. } => reason::ITEM_NOT_IN_CART,
        _ => reason::INVALID_FIELD,
    }
}

impl From<CartError> for Error {
    fn from(error: CartError) -> Self {
        domain_error(
            error.kind(),
            cart_reason(&error),
            error.field(),
            error.to_string(),
        )
    }
}

impl From<TodoError> for Error {
    fn from(error: TodoError) -> Self {
        let reason = match &error {
            TodoError::EntryNotFound { .. } => reason::ENTRY_NOT_FOUND,
            TodoError::ListFull => reason::LIST_FULL,
            TodoError::IdsExhausted => reason::LIST_IDS_EXHAUSTED,
            TodoError::Text(_) | TodoError::Date(_) => reason::INVALID_FIELD,
        };
        domain_error(error.kind(), reason, error.field(), error.to_string())
    }
}

/// Unix milliseconds as a protobuf timestamp.
pub fn timestamp(ms: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: (ms.rem_euclid(1000) * 1_000_000) as i32,
    }
}

fn millis(ts: Option<&prost_types::Timestamp>) -> i64 {
    ts.map_or(0, |t| t.seconds * 1000 + i64::from(t.nanos) / 1_000_000)
}

/// A wire price as domain money; `field` prefixes the sub-field names in errors.
pub fn money(field: &str, wire: Option<&pb::Money>) -> Result<Money, Error> {
    let wire = wire.ok_or_else(|| Error::invalid(field, "is required"))?;
    let currency = Currency::parse(&wire.currency_code).map_err(|_| {
        Error::invalid(
            format!("{field}.currency_code"),
            format!(
                "{} is not an ISO 4217 code: three upper-case letters, e.g. USD",
                echo(&wire.currency_code)
            ),
        )
    })?;
    if wire.minor_units < 0 {
        return Err(Error::invalid(
            format!("{field}.minor_units"),
            "must not be negative",
        ));
    }
    Ok(Money::new(currency, wire.minor_units))
}

fn wire_money(money: Money) -> pb::Money {
    pb::Money {
        currency_code: money.currency.as_str().to_string(),
        minor_units: money.minor_units,
    }
}

fn wire_items(items: &[LineItem]) -> Vec<pb::LineItem> {
    items
        .iter()
        .map(|item| pb::LineItem {
            sku: item.sku.clone(),
            name: item.name.clone(),
            quantity: i32::try_from(item.quantity).unwrap_or(i32::MAX),
            unit_price: Some(wire_money(item.unit_price)),
        })
        .collect()
}

fn wire_discounts(discounts: &[Discount]) -> Vec<pb::Discount> {
    discounts
        .iter()
        .map(|d| pb::Discount {
            code: d.code.clone(),
            kind: match d.kind {
                DiscountKind::Percentage { .. } => pb::DiscountKind::Percentage,
                DiscountKind::Fixed { .. } => pb::DiscountKind::Fixed,
            } as i32,
            value: d.kind.value(),
        })
        .collect()
}

fn wire_logs<'a>(logs: impl Iterator<Item = &'a LogEntry>) -> Vec<pb::LogEntry> {
    logs.map(wire_log).collect()
}

/// One event on the wire, as a Session shows it and as its own record stores it.
pub fn wire_log(log: &LogEntry) -> pb::LogEntry {
    pb::LogEntry {
        time: Some(timestamp(log.at_ms)),
        event: log.event.clone(),
        detail: log.detail.clone(),
        sequence: log.seq,
    }
}

fn wire_status(status: CartStatus) -> pb::SessionStatus {
    match status {
        CartStatus::Active => pb::SessionStatus::Active,
        CartStatus::CheckedOut => pb::SessionStatus::CheckedOut,
        CartStatus::Ended => pb::SessionStatus::Ended,
        CartStatus::Expired => pb::SessionStatus::Expired,
    }
}

/// The wire view of a cart at store `version`. Totals are set once a currency is known (zero
/// for an emptied cart), which is also how the stored form remembers the cart's currency.
pub fn session(cart: &Cart, version: u64) -> pb::Session {
    let totals = cart.totals().ok().flatten();
    pb::Session {
        key: cart.key.clone(),
        domain: cart.domain.clone(),
        landing: cart.landing.clone(),
        ip: cart.ip.clone(),
        member_id: cart.member_id.clone(),
        items: wire_items(&cart.items),
        discounts: wire_discounts(&cart.discounts),
        logs: wire_logs(cart.logs.iter()),
        status: wire_status(cart.status) as i32,
        version,
        create_time: Some(timestamp(cart.created_at_ms)),
        update_time: Some(timestamp(cart.updated_at_ms)),
        subtotal: totals.map(|t| wire_money(t.subtotal)),
        discount_total: totals.map(|t| wire_money(t.discount_total)),
        total: totals.map(|t| wire_money(t.total)),
        order_id: cart.order_id.clone().unwrap_or_default(),
        event_count: cart.event_count,
    }
}

/// The wire view of an order.
pub fn order(order: &Order) -> pb::Order {
    pb::Order {
        order_id: order.order_id.clone(),
        session_key: order.session_key.clone(),
        items: wire_items(&order.items),
        discounts: wire_discounts(&order.discounts),
        subtotal: Some(wire_money(order.subtotal)),
        discount_total: Some(wire_money(order.discount_total)),
        total: Some(wire_money(order.total)),
        domain: order.domain.clone(),
        landing: order.landing.clone(),
        ip: order.ip.clone(),
        member_id: order.member_id.clone(),
        logs: wire_logs(order.logs.iter()),
        create_time: Some(timestamp(order.created_at_ms)),
    }
}

/// Rebuilds a cart from its stored `Session`. Anything off is reported, never guessed.
pub fn cart_from_stored(stored: pb::Session) -> Result<Cart, String> {
    let status = match pb::SessionStatus::try_from(stored.status) {
        Ok(pb::SessionStatus::Active) => CartStatus::Active,
        Ok(pb::SessionStatus::CheckedOut) => CartStatus::CheckedOut,
        Ok(pb::SessionStatus::Ended) => CartStatus::Ended,
        Ok(pb::SessionStatus::Expired) => CartStatus::Expired,
        _ => return Err(format!("unknown session status {}", stored.status)),
    };
    let money = |m: &pb::Money| -> Result<Money, String> {
        Currency::parse(&m.currency_code)
            .map(|c| Money::new(c, m.minor_units))
            .map_err(|e| e.to_string())
    };
    let items = stored
        .items
        .iter()
        .map(|item| {
            let price = item
                .unit_price
                .as_ref()
                .ok_or("line without a unit price")?;
            Ok(LineItem {
                sku: item.sku.clone(),
                name: item.name.clone(),
                quantity: u32::try_from(item.quantity).map_err(|e| e.to_string())?,
                unit_price: money(price)?,
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    let discounts = stored
        .discounts
        .iter()
        .map(|d| {
            let kind = match pb::DiscountKind::try_from(d.kind) {
                Ok(pb::DiscountKind::Percentage) => DiscountKind::Percentage {
                    basis_points: u32::try_from(d.value).map_err(|e| e.to_string())?,
                },
                Ok(pb::DiscountKind::Fixed) => DiscountKind::Fixed {
                    minor_units: d.value,
                },
                _ => return Err(format!("unknown discount kind {}", d.kind)),
            };
            Discount::new(d.code.clone(), kind).map_err(|e| e.to_string())
        })
        .collect::<Result<Vec<_>, String>>()?;
    let currency = match &stored.subtotal {
        Some(subtotal) => Some(money(subtotal)?.currency),
        None => None,
    };
    // Records from before events were numbered: number the kept ones as the latest.
    let event_count = stored.event_count.max(stored.logs.len() as u64);
    let first = event_count + 1 - stored.logs.len() as u64;
    Ok(Cart {
        key: stored.key,
        domain: stored.domain,
        landing: stored.landing,
        ip: stored.ip,
        member_id: stored.member_id,
        items,
        discounts,
        logs: stored
            .logs
            .into_iter()
            .zip(first..)
            .map(|(log, seq)| LogEntry {
                at_ms: millis(log.time.as_ref()),
                event: log.event,
                detail: log.detail,
                seq: if log.sequence == 0 { seq } else { log.sequence },
            })
            .collect(),
        event_count,
        status,
        created_at_ms: millis(stored.create_time.as_ref()),
        updated_at_ms: millis(stored.update_time.as_ref()),
        order_id: (!stored.order_id.is_empty()).then_some(stored.order_id),
        currency,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Ctx, StartArgs};

    fn ctx(now_ms: i64) -> Ctx {
        Ctx {
            now_ms,
            log_limit: 10,
        }
    }

    fn usd(minor: i64) -> Money {
        Money::new(Currency::parse("USD").unwrap(), minor)
    }

    #[test]
    fn a_cart_survives_the_round_trip_through_its_stored_form() {
        let mut cart = Cart::start(
            StartArgs {
                key: "k".into(),
                domain: "shop.example".into(),
                landing: "/sale".into(),
                ip: "127.0.0.1".into(),
                member_id: "m-1".into(),
            },
            &ctx(1_700_000_000_123),
        )
        .unwrap();
        cart.add_item(
            "A1".into(),
            "Rocket".into(),
            2,
            usd(1999),
            &ctx(1_700_000_000_456),
        )
        .unwrap();
        cart.apply_discount(
            Discount::new("SAVE10", DiscountKind::Percentage { basis_points: 1000 }).unwrap(),
            &ctx(1_700_000_001_000),
        )
        .unwrap();
        let wire = session(&cart, 3);
        assert_eq!(wire.version, 3);
        assert_eq!(wire.subtotal.as_ref().unwrap().minor_units, 3998);
        assert_eq!(wire.discount_total.as_ref().unwrap().minor_units, 399);
        assert_eq!(wire.total.as_ref().unwrap().minor_units, 3599);
        assert_eq!(cart_from_stored(wire).unwrap(), cart);
    }

    #[test]
    fn an_emptied_cart_keeps_its_currency_through_storage() {
        let mut cart = Cart::start(
            StartArgs {
                key: "k".into(),
                ..Default::default()
            },
            &ctx(0),
        )
        .unwrap();
        cart.add_item("A1".into(), "Rocket".into(), 1, usd(5), &ctx(1))
            .unwrap();
        cart.remove_item("A1", 1, &ctx(2)).unwrap();
        let back = cart_from_stored(session(&cart, 1)).unwrap();
        assert_eq!(back.currency, cart.currency);
    }

    #[test]
    fn wire_money_is_validated_field_by_field() {
        let field_of = |wire: Option<pb::Money>| match money("unit_price", wire.as_ref()) {
            Err(Error::InvalidArgument { field, .. }) => field,
            other => panic!("expected invalid, got {other:?}"),
        };
        assert_eq!(field_of(None), "unit_price");
        let bad_code = pb::Money {
            currency_code: "usd".into(),
            minor_units: 1,
        };
        assert_eq!(field_of(Some(bad_code)), "unit_price.currency_code");
        let negative = pb::Money {
            currency_code: "USD".into(),
            minor_units: -1,
        };
        assert_eq!(field_of(Some(negative)), "unit_price.minor_units");
    }

    #[test]
    fn timestamps_keep_milliseconds_and_handle_negatives() {
        let ts = timestamp(-1);
        assert_eq!((ts.seconds, ts.nanos), (-1, 999_000_000));
        assert_eq!(millis(Some(&timestamp(1_234_567))), 1_234_567);
    }

    #[test]
    fn a_stored_session_with_an_unknown_status_is_refused() {
        let stored = pb::Session {
            status: 99,
            ..Default::default()
        };
        assert!(cart_from_stored(stored).unwrap_err().contains("status"));
    }
}
