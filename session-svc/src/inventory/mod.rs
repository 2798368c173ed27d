//! The sku kind: one supervised actor per sku holds its stock (shared data without
//! races: every change to one sku goes through its one mailbox).
//!
//! - [`entity`]: the [`Entity`](crate::runtime::Entity); stored as `session.v1.StockRecord`.
//! - [`service`]: the `session.v1.InventoryService` handlers.

pub mod entity;
pub mod service;

pub use entity::{Held, Reserve, Settle, SkuEntity};
pub use service::InventoryApi;
