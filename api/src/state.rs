//! What every handler can reach.

use std::sync::Arc;

use lookalike_core::Config;
use lookalike_index::VectorIndex;
use lookalike_queue::Publisher;
use lookalike_store::Store;
use lookalike_worker::Pipeline;

#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub store: Store,
    pub publisher: Arc<Publisher>,
    pub index: Arc<dyn VectorIndex>,
    /// The image pipeline, for queries that analyse an image on the spot (`POST /v1/search`).
    pub pipeline: Arc<Pipeline>,
}
