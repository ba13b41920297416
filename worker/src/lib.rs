//! The lookalike worker: the queue side of ingest. It consumes image jobs from RabbitMQ and turns
//! each into an indexed, categorised item.
//!
//! | module | what it owns |
//! |---|---|
//! | [`consumer`] | deliveries in, acks out; reconnects, pauses on a misconfigured dependency, drains on shutdown |
//! | [`jobs`] | the job lifecycle: claim, attempts, outcome, retry with backoff, dead-lettering |
//! | [`ingest`] | the work of one job: bytes, analysis (`lookalike-analysis`), commit (`lookalike-catalogue`) |
//! | [`republish`] | the outbox sweep: publishes jobs whose submission was interrupted |

pub mod consumer;
pub mod ingest;
pub mod jobs;
pub mod republish;

pub use consumer::Consumer;
pub use ingest::Ingest;
pub use jobs::{Jobs, Outcome};
