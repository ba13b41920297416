//! What every handler can reach.

use std::sync::Arc;

use lookalike_core::Config;
use lookalike_index::VectorIndex;
use lookalike_queue::Publisher;
use lookalike_store::Store;

#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub store: Store,
    pub publisher: Arc<Publisher>,
    pub index: Arc<dyn VectorIndex>,
}
