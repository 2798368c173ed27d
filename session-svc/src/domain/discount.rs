//! Discount codes: what one does to a cart, and the configurable catalog they come from.
//!
//! Shoppers can only apply codes the server's [`Catalog`] knows; the catalog is read once from
//! configuration (`SAVE10=10%,FIVEOFF=500`). Lookup ignores ASCII case and always returns the
//! catalog's spelling, so `save10` and `SAVE10` are the same code and applying both changes
//! the cart once.

use std::collections::BTreeMap;
use std::fmt;

use super::cart_error::CartError;
use super::money::Money;
use super::text::{self, MAX_CODE_BYTES};

/// The largest percentage discount: 100 % in basis points.
pub const MAX_BASIS_POINTS: u32 = 10_000;

/// How a discount takes money off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DiscountKind {
    /// A share of the subtotal, in basis points (1000 = 10 %), rounded down to minor units.
    Percentage {
        /// 1..=10_000; basis points keep fractional percentages exact without floats.
        basis_points: u32,
    },
    /// A fixed amount in the cart's currency.
    Fixed {
        /// Minor units of whatever currency the cart is in, greater than zero.
        minor_units: i64,
    },
}

impl DiscountKind {
    /// The wire name of the kind, as logged and as `DiscountKind` on the wire names it.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Percentage { .. } => "percentage",
            Self::Fixed { .. } => "fixed",
        }
    }

    /// The wire `value`: basis points or minor units.
    pub fn value(&self) -> i64 {
        match *self {
            Self::Percentage { basis_points } => i64::from(basis_points),
            Self::Fixed { minor_units } => minor_units,
        }
    }
}

/// A code applied to a cart, with what it does.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Discount {
    /// The code as the catalog spells it; a cart applies each code at most once.
    pub code: String,
    /// What it takes off.
    pub kind: DiscountKind,
}

impl Discount {
    /// A checked discount: a sane code, a percentage of 1..=10_000 basis points or a positive
    /// fixed amount.
    pub fn new(code: impl Into<String>, kind: DiscountKind) -> Result<Self, CartError> {
        let discount = Self {
            code: code.into(),
            kind,
        };
        discount.validate()?;
        Ok(discount)
    }

    /// Re-checks a discount built field by field (e.g. restored from storage).
    pub fn validate(&self) -> Result<(), CartError> {
        text::required("code", &self.code, MAX_CODE_BYTES)?;
        match self.kind {
            DiscountKind::Percentage { basis_points }
                if (1..=MAX_BASIS_POINTS).contains(&basis_points) =>
            {
                Ok(())
            }
            DiscountKind::Percentage { .. } => Err(CartError::InvalidDiscount {
                reason: "a percentage must be 1 to 10000 basis points",
            }),
            DiscountKind::Fixed { minor_units } if minor_units > 0 => Ok(()),
            DiscountKind::Fixed { .. } => Err(CartError::InvalidDiscount {
                reason: "a fixed amount must be greater than zero",
            }),
        }
    }

    /// What this discount alone takes off `subtotal`, in its currency, before the cap at the
    /// subtotal. A percentage rounds down: the shop never gives away a fraction of a cent.
    pub fn amount_off(&self, subtotal: Money) -> Money {
        let minor_units = match self.kind {
            DiscountKind::Percentage { basis_points } => {
                let off = i128::from(subtotal.minor_units) * i128::from(basis_points);
                // |off / 10_000| <= |subtotal| because basis_points <= 10_000, so it fits.
                i64::try_from(off.div_euclid(i128::from(MAX_BASIS_POINTS))).unwrap_or(0)
            }
            DiscountKind::Fixed { minor_units } => minor_units,
        };
        Money::new(subtotal.currency, minor_units)
    }
}

/// `code=SAVE10 kind=percentage value=1000`: the log line of an applied discount.
impl fmt::Display for Discount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "code={} kind={} value={}",
            self.code,
            self.kind.name(),
            self.kind.value()
        )
    }
}

/// The codes a shopper may apply, read once from configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Catalog {
    /// Keyed by the upper-cased code so lookup ignores case; sorted so listings are stable.
    codes: BTreeMap<String, Discount>,
}

/// What the service offers when nothing is configured: enough to try every kind by hand.
pub const DEFAULT_CATALOG: &str = "SAVE10=10%,HALFOFF=50%,FIVEOFF=500";

impl Default for Catalog {
    /// [`DEFAULT_CATALOG`]: `SAVE10` (10 % off), `HALFOFF` (50 % off) and `FIVEOFF` (500 minor
    /// units off, i.e. 5.00 in a two-decimal currency).
    fn default() -> Self {
        Self::parse(DEFAULT_CATALOG).expect("the default catalog parses")
    }
}

impl Catalog {
    /// Parses `CODE=VALUE` entries separated by commas. `VALUE` is a percentage with at most
    /// two decimals (`10%`, `12.5%`, up to `100%`) or a positive whole number of minor units
    /// (`500`). Codes are 1 to 64 ASCII letters, digits, `-` or `_`, and must differ ignoring
    /// case. Spaces around entries, codes and values are ignored; a blank string is an empty
    /// catalog (no discounts), but an empty entry such as a trailing comma is an error.
    pub fn parse(spec: &str) -> Result<Self, String> {
        let mut codes = BTreeMap::new();
        if spec.trim().is_empty() {
            return Ok(Self { codes });
        }
        for (index, entry) in spec.split(',').enumerate() {
            let n = index + 1;
            let entry = entry.trim();
            let (code, value) = entry
                .split_once('=')
                .ok_or_else(|| format!("discount entry {n} {entry:?}: expected CODE=VALUE"))?;
            let (code, value) = (code.trim(), value.trim());
            parse_code(code).map_err(|e| format!("discount entry {n} {entry:?}: {e}"))?;
            let kind =
                parse_value(value).map_err(|e| format!("discount entry {n} {entry:?}: {e}"))?;
            let key = code.to_ascii_uppercase();
            let discount = Discount {
                code: key.clone(),
                kind,
            };
            if codes.insert(key, discount).is_some() {
                return Err(format!(
                    "discount entry {n} {entry:?}: code {code:?} repeats (codes ignore case)"
                ));
            }
        }
        Ok(Self { codes })
    }

    /// The discount for a shopper's `code`, ignoring ASCII case. A bad or unknown code is an
    /// invalid argument naming the `code` field.
    pub fn lookup(&self, code: &str) -> Result<Discount, CartError> {
        text::required("code", code, MAX_CODE_BYTES)?;
        self.codes
            .get(&code.to_ascii_uppercase())
            .cloned()
            .ok_or_else(|| CartError::UnknownDiscount {
                code: code.to_owned(),
            })
    }

    /// Every discount, ordered by code.
    pub fn iter(&self) -> impl Iterator<Item = &Discount> {
        self.codes.values()
    }

    /// How many codes there are.
    pub fn len(&self) -> usize {
        self.codes.len()
    }

    /// Whether no code is offered (discounts are switched off).
    pub fn is_empty(&self) -> bool {
        self.codes.is_empty()
    }
}

fn parse_code(code: &str) -> Result<(), String> {
    if code.is_empty() {
        return Err("the code is empty".into());
    }
    if code.len() > MAX_CODE_BYTES {
        return Err(format!("the code is longer than {MAX_CODE_BYTES} bytes"));
    }
    if let Some(c) = code
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
    {
        return Err(format!(
            "the code has {c:?}; only ASCII letters, digits, '-' and '_' are allowed"
        ));
    }
    Ok(())
}

fn parse_value(value: &str) -> Result<DiscountKind, String> {
    if let Some(percent) = value.strip_suffix('%') {
        return parse_percentage(percent.trim_end());
    }
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "value {value:?} is neither a percentage like 10% nor a whole number of minor units"
        ));
    }
    match value.parse::<i64>() {
        Ok(0) => Err("a fixed amount must be greater than zero".into()),
        Ok(minor_units) => Ok(DiscountKind::Fixed { minor_units }),
        Err(_) => Err(format!("fixed amount {value} does not fit in 64 bits")),
    }
}

fn parse_percentage(percent: &str) -> Result<DiscountKind, String> {
    let bad =
        || format!("percentage \"{percent}%\" must be a number like 10% or 12.5%, at most 100%");
    let (whole, fraction) = percent.split_once('.').unwrap_or((percent, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty()
        || whole.len() > 3
        || !digits(whole)
        || fraction.len() > 2
        || !digits(fraction)
    {
        return Err(bad());
    }
    if percent.ends_with('.') {
        return Err(bad());
    }
    let whole: u32 = whole.parse().map_err(|_| bad())?;
    // "12.5" is 12 % + 50 bp: pad the fraction to two digits.
    let fraction: u32 = format!("{fraction:0<2}").parse().map_err(|_| bad())?;
    let basis_points = whole * 100 + fraction;
    if basis_points == 0 {
        return Err("a percentage must be greater than zero".into());
    }
    if basis_points > MAX_BASIS_POINTS {
        return Err(format!("percentage {percent}% is more than 100%"));
    }
    Ok(DiscountKind::Percentage { basis_points })
}

#[cfg(test)]
mod tests {
    use super::super::money::Currency;
    use super::*;

    fn pct(basis_points: u32) -> DiscountKind {
        DiscountKind::Percentage { basis_points }
    }

    fn fixed(minor_units: i64) -> DiscountKind {
        DiscountKind::Fixed { minor_units }
    }

    fn usd(m: i64) -> Money {
        Money::new(Currency::parse("USD").unwrap(), m)
    }

    #[test]
    fn catalog_parses_percentages_and_fixed_amounts() {
        let c = Catalog::parse("SAVE10=10%,FIVEOFF=500").unwrap();
        assert_eq!(c.len(), 2);
        assert_eq!(c.lookup("SAVE10").unwrap().kind, pct(1000));
        assert_eq!(c.lookup("FIVEOFF").unwrap().kind, fixed(500));
    }

    #[test]
    fn percentages_may_have_two_decimals() {
        let c = Catalog::parse("A=12.5%, B=0.01% ,C=100%,D=7.25%,E=99.99%").unwrap();
        let bp: Vec<i64> = ["A", "B", "C", "D", "E"]
            .iter()
            .map(|code| c.lookup(code).unwrap().kind.value())
            .collect();
        assert_eq!(bp, [1250, 1, 10_000, 725, 9999]);
    }

    #[test]
    fn lookup_ignores_case_and_returns_the_catalog_spelling() {
        let c = Catalog::parse("save10=10%").unwrap();
        for code in ["SAVE10", "save10", "Save10"] {
            assert_eq!(c.lookup(code).unwrap().code, "SAVE10");
        }
    }

    #[test]
    fn unknown_code_is_an_invalid_code_argument() {
        let err = Catalog::default().lookup("NOPE").unwrap_err();
        assert_eq!(
            err,
            CartError::UnknownDiscount {
                code: "NOPE".into()
            }
        );
        assert_eq!(err.field(), Some("code"));
        assert_eq!(err.kind(), super::super::ErrorKind::InvalidArgument);
    }

    #[test]
    fn lookup_checks_the_code_text_first() {
        let c = Catalog::default();
        assert_eq!(c.lookup("").unwrap_err().field(), Some("code"));
        assert_eq!(c.lookup(&"A".repeat(65)).unwrap_err().field(), Some("code"));
        assert_eq!(c.lookup("SAVE\n10").unwrap_err().field(), Some("code"));
    }

    #[test]
    fn default_catalog_offers_documented_codes() {
        let c = Catalog::default();
        assert_eq!(c.len(), 3);
        assert_eq!(c.lookup("SAVE10").unwrap().kind, pct(1000));
        assert_eq!(c.lookup("HALFOFF").unwrap().kind, pct(5000));
        assert_eq!(c.lookup("FIVEOFF").unwrap().kind, fixed(500));
        let codes: Vec<&str> = c.iter().map(|d| d.code.as_str()).collect();
        assert_eq!(codes, ["FIVEOFF", "HALFOFF", "SAVE10"]);
    }

    #[test]
    fn blank_spec_is_an_empty_catalog() {
        assert!(Catalog::parse("").unwrap().is_empty());
        assert!(Catalog::parse("  ").unwrap().is_empty());
    }

    #[test]
    fn catalog_errors_say_which_entry_and_why() {
        let cases = [
            ("SAVE10", "discount entry 1 \"SAVE10\": expected CODE=VALUE"),
            ("A=1%,", "discount entry 2 \"\": expected CODE=VALUE"),
            ("=10%", "discount entry 1 \"=10%\": the code is empty"),
            (
                "A B=1%",
                "discount entry 1 \"A B=1%\": the code has ' '; only ASCII letters, digits, '-' and '_' are allowed",
            ),
            (
                "A=0",
                "discount entry 1 \"A=0\": a fixed amount must be greater than zero",
            ),
            (
                "A=0%",
                "discount entry 1 \"A=0%\": a percentage must be greater than zero",
            ),
            (
                "A=-5",
                "discount entry 1 \"A=-5\": value \"-5\" is neither a percentage like 10% nor a whole number of minor units",
            ),
            (
                "A=101%",
                "discount entry 1 \"A=101%\": percentage 101% is more than 100%",
            ),
            (
                "A=1.234%",
                "discount entry 1 \"A=1.234%\": percentage \"1.234%\" must be a number like 10% or 12.5%, at most 100%",
            ),
            (
                "A=99999999999999999999",
                "discount entry 1 \"A=99999999999999999999\": fixed amount 99999999999999999999 does not fit in 64 bits",
            ),
            (
                "A=1%,a=2%",
                "discount entry 2 \"a=2%\": code \"a\" repeats (codes ignore case)",
            ),
        ];
        for (spec, want) in cases {
            assert_eq!(Catalog::parse(spec).unwrap_err(), want, "{spec}");
        }
    }

    #[test]
    fn malformed_values_are_refused() {
        for value in [
            "", "%", "1.%", ".5%", "1,5%", "10 %x", "1e3", "+5", "5.5", "1000%", "abc",
        ] {
            assert!(Catalog::parse(&format!("A={value}")).is_err(), "{value:?}");
        }
    }

    #[test]
    fn overlong_code_is_refused_in_config() {
        let spec = format!("{}=1%", "A".repeat(65));
        assert!(
            Catalog::parse(&spec)
                .unwrap_err()
                .contains("longer than 64 bytes")
        );
    }

    #[test]
    fn percentage_rounds_down_to_minor_units() {
        let d = Discount::new("X", pct(1000)).unwrap();
        assert_eq!(d.amount_off(usd(1999)), usd(199));
        let d = Discount::new("X", pct(1)).unwrap();
        assert_eq!(d.amount_off(usd(9999)), usd(0));
    }

    #[test]
    fn full_percentage_of_the_largest_subtotal_does_not_overflow() {
        let d = Discount::new("X", pct(10_000)).unwrap();
        assert_eq!(d.amount_off(usd(i64::MAX)), usd(i64::MAX));
    }

    #[test]
    fn fixed_amount_is_taken_in_the_subtotal_currency() {
        let d = Discount::new("X", fixed(500)).unwrap();
        assert_eq!(d.amount_off(usd(100)), usd(500));
    }

    #[test]
    fn new_discount_refuses_out_of_range_values() {
        for kind in [pct(0), pct(10_001), fixed(0), fixed(-1)] {
            let err = Discount::new("X", kind).unwrap_err();
            assert!(matches!(err, CartError::InvalidDiscount { .. }), "{kind:?}");
            assert_eq!(err.field(), Some("code"));
        }
        assert!(Discount::new("", pct(1)).is_err());
    }

    #[test]
    fn discount_logs_like_the_wire_message() {
        let d = Discount::new("SAVE10", pct(1000)).unwrap();
        assert_eq!(d.to_string(), "code=SAVE10 kind=percentage value=1000");
        let d = Discount::new("FIVEOFF", fixed(500)).unwrap();
        assert_eq!(d.to_string(), "code=FIVEOFF kind=fixed value=500");
    }
}
