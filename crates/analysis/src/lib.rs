//! Analysing an image, for the worker's ingest jobs and the API's searches by image alike: fetch a
//! URL behind the SSRF guard, decode and clean via `lookalike-vision`, embed in the process's model
//! pool (the batcher), and categorise (the labelled neighbours, the prototypes, the trained head and
//! the cold-start prior).
//!
//! | module | what it owns |
//! |---|---|
//! | [`analyser`] | [`Analyser`]: bytes → [`Analysis`] (embedding, features, thumbnail); embedding → category |
//! | [`batcher`] | the model session pool every job and search of a process shares |
//! | [`fetch`], [`guard`] | downloading image URLs, and refusing private and otherwise forbidden addresses |
//! | [`heads`] | the trained classifier head each process uses, and its retraining |
//! | [`prior`] | the cold-start prior for categories without labels |
//! | [`failure`] | [`Failure`]: a stable code, a message, and whether trying again could help |

pub mod analyser;
pub mod batcher;
pub mod failure;
pub mod fetch;
pub mod guard;
pub mod heads;
pub mod prior;

pub use analyser::{Analyser, Analysis, CategoryDecision, Exclude, decision_settings};
pub use failure::Failure;
/// The classifier's pure logic lives in its own crate; re-exported under the name analysis uses.
pub use lookalike_classifier as classify;
