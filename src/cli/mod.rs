//! The commands besides the service itself, one module each, its help beside its arguments.
//!
//! Clients of a running service's API (they share [`client`]: `--api`, `--api-key`, exit codes):
//! `import`, `status`, `jobs`, `eval`, `reclassify`. Commands of the service's own stores: `reindex`
//! (a model change), `dedupe` (near-duplicate groups of a stored catalogue), `keys` (API keys,
//! offline).

pub mod client;
pub mod dedupe;
pub mod eval;
pub mod folder;
pub mod import;
pub mod jobs;
pub mod keys;
pub mod progress;
pub mod reclassify;
pub mod reindex;
pub mod status;
