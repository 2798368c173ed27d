//! Pricing a cart, and the order that checkout makes of it.

use super::cart::{LineItem, LogEntry};
use super::cart_error::CartError;
use super::discount::Discount;
use super::money::{Currency, Money};

/// What a cart costs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Totals {
    /// Sum of quantity × unit price over every line.
    pub subtotal: Money,
    /// What the discounts take off, never more than the subtotal.
    pub discount_total: Money,
    /// subtotal − discount_total, so never negative.
    pub total: Money,
}

impl Totals {
    /// Prices `items` and applies every discount, all in `currency`.
    ///
    /// Discounts stack and do not compound: each percentage is taken of the subtotal (rounded
    /// down to a minor unit), each fixed amount is taken as is, and their sum is capped at the
    /// subtotal so the shop never pays the shopper.
    pub fn compute(
        currency: Currency,
        items: &[LineItem],
        discounts: &[Discount],
    ) -> Result<Self, CartError> {
        let subtotal = Self::subtotal_of(currency, items)?;
        // i128: 32 discounts of up to i64::MAX each cannot overflow before the cap.
        let off: i128 = discounts
            .iter()
            .map(|d| i128::from(d.amount_off(subtotal).minor_units))
            .sum();
        let capped = off.clamp(0, i128::from(subtotal.minor_units.max(0)));
        let discount_total = Money::new(
            currency,
            i64::try_from(capped).map_err(|_| CartError::Overflow)?,
        );
        let total = subtotal.checked_sub(discount_total)?;
        Ok(Self {
            subtotal,
            discount_total,
            total,
        })
    }

    /// Sum of quantity × unit price, or an error if a price is in another currency or the sum
    /// overflows.
    pub fn subtotal_of(currency: Currency, items: &[LineItem]) -> Result<Money, CartError> {
        items.iter().try_fold(Money::zero(currency), |sum, item| {
            let line = item.unit_price.checked_mul(i64::from(item.quantity))?;
            Ok(sum.checked_add(line)?)
        })
    }
}

/// What checkout stores durably: everything the session tracked, priced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Order {
    /// Unique id of the order, made by the caller (the domain has no randomness).
    pub order_id: String,
    /// The session it came from, to trace an order back to the shopper's visit.
    pub session_key: String,
    /// What was bought, in the order first added.
    pub items: Vec<LineItem>,
    /// The codes applied, as they were at checkout.
    pub discounts: Vec<Discount>,
    /// Sum of quantity × unit price.
    pub subtotal: Money,
    /// What the discounts took off.
    pub discount_total: Money,
    /// What the shopper pays.
    pub total: Money,
    /// The shop's domain (one store may run several).
    pub domain: String,
    /// The page the shopper landed on, for attribution.
    pub landing: String,
    /// The shopper's IP address as the shop saw it.
    pub ip: String,
    /// The shopper's member id, empty for guests.
    pub member_id: String,
    /// Every logged event of the session, ending with `checked_out`.
    pub logs: Vec<LogEntry>,
    /// When the order was made (Unix milliseconds).
    pub created_at_ms: i64,
}

#[cfg(test)]
mod tests {
    use super::super::discount::DiscountKind;
    use super::*;

    fn usd() -> Currency {
        Currency::parse("USD").unwrap()
    }

    fn item(sku: &str, quantity: u32, minor_units: i64) -> LineItem {
        LineItem {
            sku: sku.into(),
            name: sku.into(),
            quantity,
            unit_price: Money::new(usd(), minor_units),
        }
    }

    fn pct(code: &str, basis_points: u32) -> Discount {
        Discount::new(code, DiscountKind::Percentage { basis_points }).unwrap()
    }

    fn fixed(code: &str, minor_units: i64) -> Discount {
        Discount::new(code, DiscountKind::Fixed { minor_units }).unwrap()
    }

    fn totals(items: &[LineItem], discounts: &[Discount]) -> (i64, i64, i64) {
        let t = Totals::compute(usd(), items, discounts).unwrap();
        (
            t.subtotal.minor_units,
            t.discount_total.minor_units,
            t.total.minor_units,
        )
    }

    #[test]
    fn subtotal_is_quantity_times_unit_price_summed() {
        assert_eq!(
            totals(&[item("A", 2, 1999), item("B", 1, 500)], &[]),
            (4498, 0, 4498)
        );
    }

    #[test]
    fn no_items_cost_nothing() {
        assert_eq!(totals(&[], &[pct("P", 1000), fixed("F", 500)]), (0, 0, 0));
    }

    #[test]
    fn percentage_discount_rounds_down() {
        // 10 % of 1999 is 199.9: the shopper gets 199 off.
        assert_eq!(
            totals(&[item("A", 1, 1999)], &[pct("P", 1000)]),
            (1999, 199, 1800)
        );
        // 12.5 % of 3 is 0.375: nothing off.
        assert_eq!(totals(&[item("A", 1, 3)], &[pct("P", 1250)]), (3, 0, 3));
    }

    #[test]
    fn fixed_discount_subtracts() {
        assert_eq!(
            totals(&[item("A", 3, 1000)], &[fixed("F", 500)]),
            (3000, 500, 2500)
        );
    }

    #[test]
    fn discounts_stack_without_compounding() {
        // 10 % + 20 % of 1000, both of the subtotal, plus 50 fixed.
        let d = [pct("A", 1000), pct("B", 2000), fixed("C", 50)];
        assert_eq!(totals(&[item("X", 1, 1000)], &d), (1000, 350, 650));
    }

    #[test]
    fn discount_never_exceeds_subtotal() {
        assert_eq!(
            totals(&[item("A", 1, 300)], &[fixed("F", 500)]),
            (300, 300, 0)
        );
        let d = [pct("A", 10_000), pct("B", 10_000), fixed("C", i64::MAX)];
        assert_eq!(
            totals(&[item("A", 1, i64::MAX)], &d),
            (i64::MAX, i64::MAX, 0)
        );
    }

    #[test]
    fn subtotal_overflow_is_an_error() {
        let items = [item("A", 2, i64::MAX / 2 + 1)];
        assert_eq!(
            Totals::compute(usd(), &items, &[]),
            Err(CartError::Overflow)
        );
        let items = [item("A", 1, i64::MAX), item("B", 1, 1)];
        assert_eq!(
            Totals::compute(usd(), &items, &[]),
            Err(CartError::Overflow)
        );
    }

    #[test]
    fn a_line_in_another_currency_cannot_be_priced() {
        let mut odd = item("B", 1, 1);
        odd.unit_price.currency = Currency::parse("EUR").unwrap();
        let err = Totals::compute(usd(), &[item("A", 1, 1), odd], &[]).unwrap_err();
        assert!(matches!(err, CartError::CurrencyMismatch { .. }));
    }
}
