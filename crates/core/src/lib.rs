//! Pieces every lookalike crate shares: the configuration, the stable error codes a user sees, and the
//! backoff every retry loop uses.

pub mod backoff;
pub mod codes;
pub mod config;
pub mod fields;

pub use config::Config;
