//! The to-do kind: to-do lists, one supervised actor per list name.
//!
//! - [`entity`]: the [`Entity`](crate::runtime::Entity) over the pure `TodoList`; stored as
//!   `session.v1.TodoList`.
//! - [`service`]: the `session.v1.TodoService` handlers.

pub mod entity;
pub mod service;

pub use entity::TodoEntity;
pub use service::TodoApi;
