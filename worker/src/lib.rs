//! The lookalike worker: consumes image jobs and turns each into an indexed, categorised item.

pub mod batcher;
pub mod consumer;
pub mod error;
pub mod fetch;
pub mod guard;
pub mod heads;
pub mod pipeline;
pub mod prior;
pub mod republish;

pub use consumer::Consumer;
pub use error::JobError;
/// The classifier's pure logic lives in its own crate; re-exported under the name the worker uses.
pub use lookalike_classifier as classify;
pub use pipeline::{Analysis, CategoryDecision, Exclude, Outcome, Pipeline};
