//! `GET /v1/status`: counts that tell an operator (and the tests) where the work stands.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use lookalike_index::CategoryFilter;
use serde_json::{Map, Value, json};

use crate::{ApiResult, AppState};

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/status", get(status))
}

async fn status(State(state): State<AppState>) -> ApiResult<Json<Value>> {
    let mut jobs = Map::new();
    for s in ["queued", "processing", "succeeded", "failed"] {
        jobs.insert(s.into(), json!(0));
    }
    for (status, n) in state.store.job_counts().await? {
        jobs.insert(
            serde_json::to_value(status)
                .unwrap()
                .as_str()
                .unwrap()
                .to_string(),
            json!(n),
        );
    }
    let items = state.store.item_count().await?;
    let points = state.index.count(CategoryFilter::Any).await?;
    Ok(Json(json!({
        "jobs": jobs,
        "items": items,
        "index": {"backend": state.index.name(), "points": points},
        "model": {"id": state.config.model.id, "dim": state.config.model.dim},
    })))
}
