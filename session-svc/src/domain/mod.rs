//! The pure domain of session-svc: shopping carts (a shop's `Session`) and to-do lists
//! (`Todo.List`).
//!
//! Everything here is plain data and plain functions: no I/O, no clocks, no async, no locks.
//! Time comes in through an explicit [`Ctx`], so every operation is deterministic and the
//! actors that wrap these types can be tested with paused time. The gRPC edge converts wire
//! messages into these types (`TryFrom<proto>`); this module does not know the `proto` crate.
//!
//! Every operation validates its input and leaves the state untouched when it fails, so an
//! actor can apply a request, and persist only if it succeeded.
//!
//! # Layout
//!
//! - [`text`]: field checks shared by carts and lists (blank, too long, control characters).
//! - [`money`]: [`Currency`] and [`Money`], integer minor units with checked arithmetic.
//! - [`discount`]: [`Discount`] and the configurable [`Catalog`] of codes.
//! - [`cart`]: [`Cart`], the shopping session, and its operations.
//! - [`order`]: [`Order`] made by checkout, and the [`Totals`] of a cart.
//! - [`cart_error`]: [`CartError`], with the request field at fault and its [`ErrorKind`].
//! - [`date`]: [`Date`], a validated calendar date (`YYYY-MM-DD`).
//! - [`mod@todo`]: [`TodoList`] and its [`Entry`] items, with [`TodoError`].
//!
//! # Errors
//!
//! Each error knows the request field it blames (`field()`, for `google.rpc.BadRequest`) and
//! its [`ErrorKind`] (`kind()`), so the gRPC edge maps any domain error to a status with one
//! `match` and never needs to inspect messages.

pub mod cart;
pub mod cart_error;
pub mod date;
pub mod discount;
pub mod money;
pub mod order;
pub mod text;
pub mod todo;

pub use cart::{
    Cart, CartStatus, Ctx, LineItem, LogEntry, MAX_DISCOUNTS, MAX_LINES, MAX_QUANTITY, StartArgs,
    parse_quantity,
};
pub use cart_error::CartError;
pub use date::{Date, DateError};
pub use discount::{Catalog, Discount, DiscountKind};
pub use money::{Currency, Money, MoneyError};
pub use order::{Order, Totals};
pub use text::TextError;
pub use todo::{Entry, MAX_ENTRIES, TodoError, TodoList};

/// How a domain error maps onto the error contract (the README's table); the gRPC edge turns each
/// into exactly one status code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The request itself is wrong, whatever the state (`INVALID_ARGUMENT`).
    InvalidArgument,
    /// The request is fine but the current state forbids it (`FAILED_PRECONDITION`).
    FailedPrecondition,
    /// The request names something inside the entity that does not exist (`NOT_FOUND`).
    NotFound,
}
