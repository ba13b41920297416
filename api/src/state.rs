//! What every handler can reach.

use std::sync::Arc;

use lookalike_analysis::Analyser;
use lookalike_catalogue::Catalogue;
use lookalike_core::Config;
use lookalike_index::VectorIndex;
use lookalike_queue::Publisher;
use lookalike_store::Store;

#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub store: Store,
    pub publisher: Arc<Publisher>,
    /// Read by queries; every write of an item goes through `catalogue`.
    pub index: Arc<dyn VectorIndex>,
    /// Item writes: deletion, re-classification, metadata changes, search with `add=true`.
    pub catalogue: Catalogue,
    /// Image analysis, for queries that analyse an image on the spot (`POST /v1/search`), and the
    /// classifier.
    pub analyser: Arc<Analyser>,
}
