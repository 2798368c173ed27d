//! The shopping session: who is shopping, from where, what is in the cart, and a
//! log of everything that happened.
//!
//! Operations take a [`Ctx`] instead of reading a clock, check everything before changing
//! anything, and log every change. Every change requires an active cart: once checked out,
//! ended or expired, a cart is a read-only record.

use std::collections::VecDeque;
use std::fmt;

use super::cart_error::CartError;
use super::discount::Discount;
use super::money::{Currency, Money};
use super::order::{Order, Totals};
use super::text::{self, MAX_DOMAIN_BYTES, MAX_IP_BYTES, MAX_KEY_BYTES, MAX_LANDING_BYTES};
use super::text::{MAX_MEMBER_ID_BYTES, MAX_NAME_BYTES, MAX_ORDER_ID_BYTES, MAX_SKU_BYTES};

/// Most distinct skus in one cart, so no cart grows without bound.
pub const MAX_LINES: usize = 500;
/// Most units on one line; also keeps `quantity` far inside the wire's `int32`.
pub const MAX_QUANTITY: u32 = 1_000_000;
/// Most discount codes on one cart.
pub const MAX_DISCOUNTS: usize = 32;

/// Converts the wire's `int32 quantity` into a domain quantity: zero and negatives are
/// refused here, so the edge and the domain agree on one rule and one message.
pub fn parse_quantity(wire: i32) -> Result<u32, CartError> {
    u32::try_from(wire)
        .ok()
        .filter(|q| *q > 0)
        .ok_or(CartError::QuantityTooSmall)
}

/// What an operation needs from the outside world, passed in so the domain stays pure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ctx {
    /// The time of the operation (Unix milliseconds), stamped on logs and `updated_at_ms`.
    pub now_ms: i64,
    /// How many log entries a cart keeps (oldest dropped first); configurable per service.
    pub log_limit: usize,
}

/// Where a cart is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CartStatus {
    /// Open: items and discounts can change.
    Active,
    /// Bought: the order exists.
    CheckedOut,
    /// Ended by the shopper without buying.
    Ended,
    /// Ended by the server after a long idle time.
    Expired,
}

impl fmt::Display for CartStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Active => "active",
            Self::CheckedOut => "checked out",
            Self::Ended => "ended",
            Self::Expired => "expired",
        })
    }
}

/// What a shopper brings to a new session (`StartSessionRequest` minus the key generation,
/// which needs randomness and so happens at the edge).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StartArgs {
    /// The session's key, already chosen.
    pub key: String,
    /// The shop's domain; may be empty.
    pub domain: String,
    /// The page the shopper landed on; may be empty.
    pub landing: String,
    /// The shopper's IP address; may be empty.
    pub ip: String,
    /// The shopper's member id; empty for guests.
    pub member_id: String,
}

/// One sku in the cart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineItem {
    /// The product's stock-keeping unit; unique within a cart.
    pub sku: String,
    /// The product's name as first shown to the shopper.
    pub name: String,
    /// Units in the cart, 1..=[`MAX_QUANTITY`].
    pub quantity: u32,
    /// Price of one unit, in the cart's currency.
    pub unit_price: Money,
}

/// One tracked event (track everything).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    /// When it happened (Unix milliseconds).
    pub at_ms: i64,
    /// What happened, snake_case: started, item_added, item_removed, discount_applied,
    /// checked_out, ended, expired. A `String` so stored logs from newer versions still load.
    pub event: String,
    /// `key=value` details, e.g. `sku=A1 quantity=2`.
    pub detail: String,
    /// Position in the cart's history: 1 for its first event.
    pub seq: u64,
}

/// A shopping session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cart {
    /// Identifies the session in the registry and in the store.
    pub key: String,
    /// The shop's domain: one store may run several.
    pub domain: String,
    /// The page the shopper landed on, for attribution.
    pub landing: String,
    /// The shopper's IP address as the shop saw it.
    pub ip: String,
    /// The shopper's member id, empty for guests.
    pub member_id: String,
    /// Lines in the order first added, so the cart reads the way it was filled.
    pub items: Vec<LineItem>,
    /// Applied codes, each at most once, in the order applied.
    pub discounts: Vec<Discount>,
    /// The last `log_limit` events, oldest first; a deque so trimming the front is O(1).
    pub logs: VecDeque<LogEntry>,
    /// Events logged since the cart started: the `seq` of the latest.
    pub event_count: u64,
    /// Where the session is in its life; only `Active` accepts changes.
    pub status: CartStatus,
    /// When the session started (Unix milliseconds).
    pub created_at_ms: i64,
    /// When anything last changed, for idle expiry.
    pub updated_at_ms: i64,
    /// The order made by checkout, so a retried checkout can find it.
    pub order_id: Option<String>,
    /// Fixed by the first item and kept even if the cart empties: one currency per cart.
    pub currency: Option<Currency>,
}

impl Cart {
    /// Opens an active, empty cart and logs `started`.
    ///
    /// The key must be 1..=256 bytes; the other fields may be empty but are bounded and free
    /// of control characters.
    pub fn start(args: StartArgs, ctx: &Ctx) -> Result<Self, CartError> {
        text::required("key", &args.key, MAX_KEY_BYTES)?;
        text::optional("domain", &args.domain, MAX_DOMAIN_BYTES)?;
        text::optional("landing", &args.landing, MAX_LANDING_BYTES)?;
        text::optional("ip", &args.ip, MAX_IP_BYTES)?;
        text::optional("member_id", &args.member_id, MAX_MEMBER_ID_BYTES)?;
        let detail = format!(
            "domain={} landing={} ip={} member_id={}",
            args.domain, args.landing, args.ip, args.member_id
        );
        let mut cart = Self {
            key: args.key,
            domain: args.domain,
            landing: args.landing,
            ip: args.ip,
            member_id: args.member_id,
            items: Vec::new(),
            discounts: Vec::new(),
            logs: VecDeque::new(),
            event_count: 0,
            status: CartStatus::Active,
            created_at_ms: ctx.now_ms,
            updated_at_ms: ctx.now_ms,
            order_id: None,
            currency: None,
        };
        cart.record("started", detail, ctx);
        Ok(cart)
    }

    /// Whether the cart still accepts changes.
    pub fn is_active(&self) -> bool {
        self.status == CartStatus::Active
    }

    /// The line holding `sku`, if any.
    pub fn line(&self, sku: &str) -> Option<&LineItem> {
        self.items.iter().find(|l| l.sku == sku)
    }

    /// How long the cart has been idle at `now_ms`, for the sweeper; never negative.
    pub fn idle_ms(&self, now_ms: i64) -> i64 {
        now_ms.saturating_sub(self.updated_at_ms).max(0)
    }

    /// Whether [`Cart::add_item`] would accept these units, and if so how many units of `sku`
    /// the cart would then hold: what a cart reserves before it adds them. Changes nothing.
    pub fn check_add(
        &self,
        sku: &str,
        name: &str,
        quantity: u32,
        unit_price: Money,
    ) -> Result<u32, CartError> {
        self.ensure_active()?;
        text::required("sku", sku, MAX_SKU_BYTES)?;
        text::required("name", name, MAX_NAME_BYTES)?;
        if quantity == 0 {
            return Err(CartError::QuantityTooSmall);
        }
        if unit_price.minor_units < 0 {
            return Err(CartError::NegativePrice);
        }
        if let Some(cart) = self.currency
            && cart != unit_price.currency
        {
            return Err(CartError::CurrencyMismatch {
                cart,
                item: unit_price.currency,
            });
        }
        let index = self.items.iter().position(|l| l.sku == sku);
        let held = index.map_or(0, |i| self.items[i].quantity);
        if let Some(i) = index
            && self.items[i].unit_price != unit_price
        {
            return Err(CartError::PriceMismatch {
                sku: sku.to_owned(),
                line: self.items[i].unit_price,
                item: unit_price,
            });
        }
        let total = u64::from(held) + u64::from(quantity);
        if total > u64::from(MAX_QUANTITY) {
            return Err(CartError::QuantityTooLarge { total });
        }
        if index.is_none() && self.items.len() >= MAX_LINES {
            return Err(CartError::TooManyLines);
        }
        // Prices are never negative, so if the new subtotal fits, every line total fits too,
        // and totals() cannot fail later.
        Totals::subtotal_of(unit_price.currency, &self.items)?
            .checked_add(unit_price.checked_mul(i64::from(quantity))?)?;
        Ok(u32::try_from(total).expect("total is at most MAX_QUANTITY"))
    }

    /// Puts `quantity` units of `sku` in the cart; the same sku adds up.
    ///
    /// The first item fixes the cart's currency. A sku already in the cart must come at the
    /// same unit price (a line has one price); its first name is kept. Refused: zero
    /// quantity, a negative price, more than [`MAX_QUANTITY`] units on the line, more than
    /// [`MAX_LINES`] lines, or a cart total that would overflow.
    pub fn add_item(
        &mut self,
        sku: String,
        name: String,
        quantity: u32,
        unit_price: Money,
        ctx: &Ctx,
    ) -> Result<(), CartError> {
        let total = self.check_add(&sku, &name, quantity, unit_price)?;
        let index = self.items.iter().position(|l| l.sku == sku);
        let detail = format!(
            "sku={sku} quantity={quantity} unit_price={} currency={} line_quantity={total}",
            unit_price.minor_units, unit_price.currency
        );
        match index {
            Some(i) => self.items[i].quantity += quantity,
            None => self.items.push(LineItem {
                sku,
                name,
                quantity,
                unit_price,
            }),
        }
        self.currency = Some(unit_price.currency);
        self.record("item_added", detail, ctx);
        Ok(())
    }

    /// Takes up to `quantity` units of `sku` out and returns how many were taken.
    ///
    /// Reaching zero removes the line. Asking for more than the line holds also removes the
    /// line rather than failing: the shopper wants those units gone, and a retry of a
    /// half-seen request must not turn into an error.
    pub fn remove_item(&mut self, sku: &str, quantity: u32, ctx: &Ctx) -> Result<u32, CartError> {
        self.ensure_active()?;
        text::required("sku", sku, MAX_SKU_BYTES)?;
        if quantity == 0 {
            return Err(CartError::QuantityTooSmall);
        }
        let i = self
            .items
            .iter()
            .position(|l| l.sku == sku)
            .ok_or_else(|| CartError::SkuNotInCart {
                sku: sku.to_owned(),
            })?;
        let removed = quantity.min(self.items[i].quantity);
        let left = self.items[i].quantity - removed;
        if left == 0 {
            // `remove`, not `swap_remove`: lines keep the order they were added in.
            self.items.remove(i);
        } else {
            self.items[i].quantity = left;
        }
        self.record(
            "item_removed",
            format!("sku={sku} quantity={removed} line_quantity={left}"),
            ctx,
        );
        Ok(removed)
    }

    /// Applies a discount; `Ok(false)` if its code is already applied, in which case nothing
    /// changes and nothing is logged (the first application wins, even if the catalog has
    /// changed the code's value since).
    pub fn apply_discount(&mut self, discount: Discount, ctx: &Ctx) -> Result<bool, CartError> {
        self.ensure_active()?;
        discount.validate()?;
        if self.discounts.iter().any(|d| d.code == discount.code) {
            return Ok(false);
        }
        if self.discounts.len() >= MAX_DISCOUNTS {
            return Err(CartError::TooManyDiscounts);
        }
        self.record("discount_applied", discount.to_string(), ctx);
        self.discounts.push(discount);
        Ok(true)
    }

    /// What the cart costs now, or `None` while no item has fixed its currency (the domain
    /// will not invent one; the edge leaves the wire's money fields unset).
    pub fn totals(&self) -> Result<Option<Totals>, CartError> {
        self.currency
            .map(|c| Totals::compute(c, &self.items, &self.discounts))
            .transpose()
    }

    /// Turns the cart into an order with the caller's `order_id` and closes it as checked out.
    /// An empty cart cannot be bought. The returned order's logs end with `checked_out`.
    pub fn checkout(&mut self, order_id: String, ctx: &Ctx) -> Result<Order, CartError> {
        self.ensure_active()?;
        text::required("order_id", &order_id, MAX_ORDER_ID_BYTES)?;
        if self.items.is_empty() {
            return Err(CartError::EmptyCart);
        }
        let Some(totals) = self.totals()? else {
            return Err(CartError::EmptyCart);
        };
        self.status = CartStatus::CheckedOut;
        self.order_id = Some(order_id.clone());
        self.record(
            "checked_out",
            format!(
                "order_id={order_id} total={} currency={}",
                totals.total.minor_units, totals.total.currency
            ),
            ctx,
        );
        Ok(Order {
            order_id,
            session_key: self.key.clone(),
            items: self.items.clone(),
            discounts: self.discounts.clone(),
            subtotal: totals.subtotal,
            discount_total: totals.discount_total,
            total: totals.total,
            domain: self.domain.clone(),
            landing: self.landing.clone(),
            ip: self.ip.clone(),
            member_id: self.member_id.clone(),
            logs: self.logs.iter().cloned().collect(),
            created_at_ms: ctx.now_ms,
        })
    }

    /// Ends the session without buying.
    pub fn end(&mut self, ctx: &Ctx) -> Result<(), CartError> {
        self.close(CartStatus::Ended, "ended", ctx)
    }

    /// Ends the session because it sat idle too long (the sweeper decides when).
    pub fn expire(&mut self, ctx: &Ctx) -> Result<(), CartError> {
        self.close(CartStatus::Expired, "expired", ctx)
    }

    fn close(&mut self, status: CartStatus, event: &str, ctx: &Ctx) -> Result<(), CartError> {
        self.ensure_active()?;
        self.status = status;
        self.record(event, String::new(), ctx);
        Ok(())
    }

    fn ensure_active(&self) -> Result<(), CartError> {
        if self.is_active() {
            Ok(())
        } else {
            Err(CartError::NotActive(self.status))
        }
    }

    /// The events logged after the first `since`, oldest first (those still in `logs`).
    pub fn events_since(&self, since: u64) -> impl Iterator<Item = &LogEntry> {
        self.logs.iter().filter(move |log| log.seq > since)
    }

    /// Logs a change, stamps it, and trims the log to the newest `ctx.log_limit` entries.
    fn record(&mut self, event: &str, detail: String, ctx: &Ctx) {
        self.updated_at_ms = ctx.now_ms;
        self.event_count += 1;
        self.logs.push_back(LogEntry {
            at_ms: ctx.now_ms,
            event: event.to_owned(),
            detail,
            seq: self.event_count,
        });
        while self.logs.len() > ctx.log_limit {
            self.logs.pop_front();
        }
    }
}

// The tests outgrow this file, so they live in cart/tests.rs, still a child module with
// access to private items.
#[cfg(test)]
mod tests;
