//! Money as integer minor units in a currency: never floats, never silent overflow.
//!
//! The domain keeps no table of currencies or their exponents: `minor_units` is whatever the
//! currency's smallest unit is (cents for USD, yen for JPY), and nothing here divides by 100.

use std::fmt;
use std::str::FromStr;

use thiserror::Error;

/// Why a money value or operation was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum MoneyError {
    /// The code is not shaped like ISO 4217. The text is not echoed: it may be huge.
    #[error("currency code must be three upper-case ASCII letters, e.g. USD")]
    InvalidCurrency,
    /// Adding amounts of two currencies has no meaning.
    #[error("cannot combine {left} with {right}")]
    CurrencyMismatch {
        /// The currency of the left operand.
        left: Currency,
        /// The currency of the right operand.
        right: Currency,
    },
    /// The result does not fit in 64 bits of minor units.
    #[error("amount overflows 64-bit minor units")]
    Overflow,
}

/// An ISO 4217-shaped currency code: exactly three ASCII upper-case letters.
///
/// Only the shape is checked, not membership in the ISO list, so a new currency needs no
/// release. Stored inline as three bytes: `Copy`, no allocation per price.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Currency([u8; 3]);

impl Currency {
    /// Parses a code such as `"USD"`; lower case, other lengths and non-letters are refused.
    pub fn parse(code: &str) -> Result<Self, MoneyError> {
        match code.as_bytes() {
            &[a, b, c] if [a, b, c].iter().all(u8::is_ascii_uppercase) => Ok(Self([a, b, c])),
            _ => Err(MoneyError::InvalidCurrency),
        }
    }

    /// The code as text, e.g. `"USD"`.
    pub fn as_str(&self) -> &str {
        // Only `parse` builds a Currency, and it admits ASCII letters alone.
        std::str::from_utf8(&self.0).expect("currency codes are ASCII by construction")
    }
}

impl FromStr for Currency {
    type Err = MoneyError;

    fn from_str(code: &str) -> Result<Self, Self::Err> {
        Self::parse(code)
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Currency({})", self.as_str())
    }
}

/// An amount of money: a whole number of a currency's minor units.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Money {
    /// Which currency; amounts in different currencies never combine.
    pub currency: Currency,
    /// The amount in minor units (1999 USD is $19.99); an integer so sums are exact.
    pub minor_units: i64,
}

impl Money {
    /// An amount in minor units of `currency`.
    pub fn new(currency: Currency, minor_units: i64) -> Self {
        Self {
            currency,
            minor_units,
        }
    }

    /// Nothing, in `currency`: the start of a sum.
    pub fn zero(currency: Currency) -> Self {
        Self::new(currency, 0)
    }

    /// The sum, or an error on a currency mismatch or overflow (never a panic or a wrap).
    pub fn checked_add(self, other: Money) -> Result<Money, MoneyError> {
        self.same_currency(other)?;
        self.minor_units
            .checked_add(other.minor_units)
            .map(|m| Money::new(self.currency, m))
            .ok_or(MoneyError::Overflow)
    }

    /// The difference, or an error on a currency mismatch or overflow.
    pub fn checked_sub(self, other: Money) -> Result<Money, MoneyError> {
        self.same_currency(other)?;
        self.minor_units
            .checked_sub(other.minor_units)
            .map(|m| Money::new(self.currency, m))
            .ok_or(MoneyError::Overflow)
    }

    /// This amount times `factor` (e.g. a unit price times a quantity), or an overflow error.
    pub fn checked_mul(self, factor: i64) -> Result<Money, MoneyError> {
        self.minor_units
            .checked_mul(factor)
            .map(|m| Money::new(self.currency, m))
            .ok_or(MoneyError::Overflow)
    }

    fn same_currency(self, other: Money) -> Result<(), MoneyError> {
        if self.currency == other.currency {
            Ok(())
        } else {
            Err(MoneyError::CurrencyMismatch {
                left: self.currency,
                right: other.currency,
            })
        }
    }
}

/// `USD 1999`: the currency, then minor units, because the domain knows no exponents.
impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.currency, self.minor_units)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usd(m: i64) -> Money {
        Money::new(Currency::parse("USD").unwrap(), m)
    }

    fn eur(m: i64) -> Money {
        Money::new(Currency::parse("EUR").unwrap(), m)
    }

    #[test]
    fn three_upper_case_letters_make_a_currency() {
        for code in ["USD", "EUR", "JPY", "XAU", "ZZZ"] {
            assert_eq!(Currency::parse(code).unwrap().as_str(), code);
        }
    }

    #[test]
    fn anything_else_is_not_a_currency() {
        for code in [
            "",
            "US",
            "USDD",
            "usd",
            "Usd",
            "US1",
            "U D",
            "ÉUR",
            "US\u{0}",
            "ＵＳＤ",
            " USD",
        ] {
            assert_eq!(
                Currency::parse(code),
                Err(MoneyError::InvalidCurrency),
                "{code:?}"
            );
        }
    }

    #[test]
    fn currency_parses_with_from_str_and_displays_as_its_code() {
        let c: Currency = "GBP".parse().unwrap();
        assert_eq!(c.to_string(), "GBP");
        assert_eq!(format!("{c:?}"), "Currency(GBP)");
    }

    #[test]
    fn money_displays_currency_then_minor_units() {
        assert_eq!(usd(1999).to_string(), "USD 1999");
        assert_eq!(usd(-5).to_string(), "USD -5");
    }

    #[test]
    fn same_currency_adds_and_subtracts_exactly() {
        assert_eq!(usd(1999).checked_add(usd(1)), Ok(usd(2000)));
        assert_eq!(usd(1999).checked_sub(usd(2000)), Ok(usd(-1)));
        assert_eq!(Money::zero(usd(0).currency), usd(0));
    }

    #[test]
    fn different_currencies_never_combine() {
        let err = MoneyError::CurrencyMismatch {
            left: usd(0).currency,
            right: eur(0).currency,
        };
        assert_eq!(usd(1).checked_add(eur(1)), Err(err));
        assert_eq!(usd(1).checked_sub(eur(1)), Err(err));
        assert_eq!(err.to_string(), "cannot combine USD with EUR");
    }

    #[test]
    fn overflow_is_an_error_not_a_panic() {
        assert_eq!(usd(i64::MAX).checked_add(usd(1)), Err(MoneyError::Overflow));
        assert_eq!(usd(i64::MIN).checked_sub(usd(1)), Err(MoneyError::Overflow));
        assert_eq!(
            usd(i64::MAX / 2 + 1).checked_mul(2),
            Err(MoneyError::Overflow)
        );
        assert_eq!(usd(i64::MIN).checked_mul(-1), Err(MoneyError::Overflow));
    }

    #[test]
    fn multiplying_scales_minor_units() {
        assert_eq!(usd(1999).checked_mul(3), Ok(usd(5997)));
        assert_eq!(usd(1999).checked_mul(0), Ok(usd(0)));
        assert_eq!(usd(i64::MAX).checked_mul(1), Ok(usd(i64::MAX)));
    }

    #[test]
    fn error_messages_are_lowercase() {
        for e in [MoneyError::InvalidCurrency, MoneyError::Overflow] {
            let msg = e.to_string();
            assert!(msg.starts_with(|c: char| c.is_lowercase()), "{msg}");
        }
    }
}
