//! The lookalike worker: consumes image jobs and turns each into an indexed, categorised item.

pub mod batcher;
pub mod classify;
pub mod consumer;
pub mod error;
pub mod fetch;
pub mod guard;
pub mod pipeline;
pub mod prior;
pub mod republish;

pub use consumer::Consumer;
pub use error::JobError;
pub use pipeline::{Analysis, CategoryDecision, Exclude, Outcome, Pipeline};
