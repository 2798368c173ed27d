//! Why a cart operation was refused, in terms the gRPC edge can map with one `match`.

use kit::echo::echo;
use thiserror::Error;

use super::ErrorKind;
use super::cart::{CartStatus, MAX_DISCOUNTS, MAX_LINES, MAX_QUANTITY};
use super::money::{Currency, Money, MoneyError};
use super::text::TextError;

/// A refused cart operation. A failed operation never changes the cart.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CartError {
    /// A text field (key, sku, name, code, ...) is blank, too long or has control characters.
    #[error(transparent)]
    Text(#[from] TextError),
    /// The unit price's currency code is not shaped like ISO 4217.
    #[error("unit_price.currency_code must be three upper-case ASCII letters, e.g. USD")]
    InvalidCurrency,
    /// A unit price below zero; free items (zero) are allowed.
    #[error("unit price must not be negative")]
    NegativePrice,
    /// Zero (or, on the wire, negative) units: adding or removing nothing is a client bug.
    #[error("quantity must be at least 1")]
    QuantityTooSmall,
    /// The line would hold more than [`MAX_QUANTITY`] units.
    #[error("quantity would reach {total}; a line holds at most {MAX_QUANTITY} units")]
    QuantityTooLarge {
        /// What the line would have held.
        total: u64,
    },
    /// The cart's currency is fixed by its first item.
    #[error("the cart is in {cart}; cannot add an item priced in {item}")]
    CurrencyMismatch {
        /// The cart's currency.
        cart: Currency,
        /// The refused item's currency.
        item: Currency,
    },
    /// The sku is already in the cart at another unit price; a line has one price.
    #[error("sku {} is in the cart at {line}; cannot add it at {item}", echo(.sku))]
    PriceMismatch {
        /// The sku of the line.
        sku: String,
        /// The line's unit price.
        line: Money,
        /// The refused unit price.
        item: Money,
    },
    /// The cart's totals would not fit in 64-bit minor units.
    #[error("the cart total would overflow 64-bit minor units")]
    Overflow,
    /// The cart already has [`MAX_LINES`] distinct skus.
    #[error("the cart already has {MAX_LINES} lines")]
    TooManyLines,
    /// The sku to remove is not in the cart.
    #[error("sku {} is not in the cart", echo(.sku))]
    SkuNotInCart {
        /// The sku asked for.
        sku: String,
    },
    /// A discount whose value is out of range.
    #[error("invalid discount: {reason}")]
    InvalidDiscount {
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A code the catalog does not offer.
    #[error("unknown discount code {}", echo(.code))]
    UnknownDiscount {
        /// The code asked for (already checked to be short and printable).
        code: String,
    },
    /// The cart already carries [`MAX_DISCOUNTS`] codes.
    #[error("the cart already has {MAX_DISCOUNTS} discount codes")]
    TooManyDiscounts,
    /// Checkout of a cart with nothing in it.
    #[error("the cart is empty")]
    EmptyCart,
    /// A change to a cart that is checked out, ended or expired.
    #[error("the session is {0}, not active")]
    NotActive(CartStatus),
}

impl CartError {
    /// The request field at fault, for `google.rpc.BadRequest` field violations; `None` when
    /// the request is fine and the cart's state is what refuses it.
    pub fn field(&self) -> Option<&'static str> {
        match self {
            Self::Text(e) => Some(e.field()),
            Self::InvalidCurrency | Self::CurrencyMismatch { .. } => {
                Some("unit_price.currency_code")
            }
            Self::NegativePrice | Self::PriceMismatch { .. } | Self::Overflow => {
                Some("unit_price.minor_units")
            }
            Self::QuantityTooSmall | Self::QuantityTooLarge { .. } => Some("quantity"),
            Self::SkuNotInCart { .. } => Some("sku"),
            Self::InvalidDiscount { .. } | Self::UnknownDiscount { .. } => Some("code"),
            Self::TooManyLines | Self::TooManyDiscounts | Self::EmptyCart | Self::NotActive(_) => {
                None
            }
        }
    }

    /// Which status code family this error belongs to (the README's error contract).
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::Text(_)
            | Self::InvalidCurrency
            | Self::NegativePrice
            | Self::QuantityTooSmall
            | Self::QuantityTooLarge { .. }
            | Self::CurrencyMismatch { .. }
            | Self::PriceMismatch { .. }
            | Self::Overflow
            | Self::InvalidDiscount { .. }
            | Self::UnknownDiscount { .. } => ErrorKind::InvalidArgument,
            Self::TooManyLines | Self::TooManyDiscounts | Self::EmptyCart | Self::NotActive(_) => {
                ErrorKind::FailedPrecondition
            }
            Self::SkuNotInCart { .. } => ErrorKind::NotFound,
        }
    }
}

impl From<MoneyError> for CartError {
    /// Money errors surface from the item's unit price: a bad code, or a sum that overflows.
    /// A currency mismatch inside arithmetic cannot happen in a valid cart (one currency per
    /// cart), so it reports as the same client-facing mismatch.
    fn from(e: MoneyError) -> Self {
        match e {
            MoneyError::InvalidCurrency => Self::InvalidCurrency,
            MoneyError::Overflow => Self::Overflow,
            MoneyError::CurrencyMismatch { left, right } => Self::CurrencyMismatch {
                cart: left,
                item: right,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usd(m: i64) -> Money {
        Money::new(Currency::parse("USD").unwrap(), m)
    }

    fn every_variant() -> Vec<CartError> {
        let eur = Currency::parse("EUR").unwrap();
        vec![
            CartError::Text(TextError::Blank { field: "sku" }),
            CartError::InvalidCurrency,
            CartError::NegativePrice,
            CartError::QuantityTooSmall,
            CartError::QuantityTooLarge { total: 2_000_000 },
            CartError::CurrencyMismatch {
                cart: usd(0).currency,
                item: eur,
            },
            CartError::PriceMismatch {
                sku: "A1".into(),
                line: usd(100),
                item: usd(200),
            },
            CartError::Overflow,
            CartError::TooManyLines,
            CartError::SkuNotInCart { sku: "A1".into() },
            CartError::InvalidDiscount { reason: "why" },
            CartError::UnknownDiscount { code: "X".into() },
            CartError::TooManyDiscounts,
            CartError::EmptyCart,
            CartError::NotActive(CartStatus::CheckedOut),
        ]
    }

    #[test]
    fn invalid_arguments_always_name_a_field() {
        for e in every_variant() {
            if e.kind() == ErrorKind::InvalidArgument {
                assert!(e.field().is_some(), "{e:?}");
            }
        }
    }

    #[test]
    fn state_errors_name_no_field() {
        for e in every_variant() {
            if e.kind() == ErrorKind::FailedPrecondition {
                assert_eq!(e.field(), None, "{e:?}");
            }
        }
    }

    #[test]
    fn fields_use_wire_names() {
        assert_eq!(
            CartError::InvalidCurrency.field(),
            Some("unit_price.currency_code")
        );
        assert_eq!(
            CartError::NegativePrice.field(),
            Some("unit_price.minor_units")
        );
        assert_eq!(CartError::QuantityTooSmall.field(), Some("quantity"));
        assert_eq!(
            CartError::Text(TextError::Blank { field: "name" }).field(),
            Some("name")
        );
        assert_eq!(
            CartError::UnknownDiscount { code: "X".into() }.field(),
            Some("code")
        );
    }

    #[test]
    fn missing_sku_is_not_found() {
        assert_eq!(
            CartError::SkuNotInCart { sku: "A".into() }.kind(),
            ErrorKind::NotFound
        );
    }

    #[test]
    fn changing_a_closed_cart_is_a_failed_precondition() {
        let e = CartError::NotActive(CartStatus::Ended);
        assert_eq!(e.kind(), ErrorKind::FailedPrecondition);
        assert_eq!(e.to_string(), "the session is ended, not active");
    }

    #[test]
    fn messages_are_lowercase_and_informative() {
        for e in every_variant() {
            let msg = e.to_string();
            assert!(msg.starts_with(|c: char| !c.is_uppercase()), "{msg}");
        }
        let e = every_variant().swap_remove(6);
        assert_eq!(
            e.to_string(),
            "sku \"A1\" is in the cart at USD 100; cannot add it at USD 200"
        );
    }

    #[test]
    fn money_errors_map_onto_the_unit_price() {
        assert_eq!(
            CartError::from(MoneyError::InvalidCurrency),
            CartError::InvalidCurrency
        );
        assert_eq!(CartError::from(MoneyError::Overflow), CartError::Overflow);
    }
}
