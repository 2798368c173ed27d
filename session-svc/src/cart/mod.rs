//! The cart kind: a shopping session as a supervised actor per key.
//!
//! - [`entity`]: the [`Entity`](crate::runtime::Entity) implementation over the pure domain.
//! - [`convert`]: domain ↔ wire (`session.v1.Session` is also the stored form).
//! - [`service`]: the `session.v1.CartService` handlers.

pub mod convert;
pub mod entity;
pub mod service;

pub use entity::{Archive, CartEntity, Inventory, Reconcile, SessionReply};
pub use service::CartApi;
