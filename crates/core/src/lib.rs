//! Pieces every lookalike crate shares: the configuration and the stable error codes a user sees.

pub mod codes;
pub mod config;
pub mod fields;

pub use config::Config;
