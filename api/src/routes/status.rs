//! `GET /v1/status`: counts that tell an operator (and the tests) where the work stands.

use std::time::Duration;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Map, Value, json};

use crate::{ApiResult, AppState};

const QUEUE_DEPTH_TIMEOUT: Duration = Duration::from_secs(2);

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
    let points = state.index.approx_count().await?;
    Ok(Json(json!({
        "jobs": jobs,
        "queue": queue_depth(&state).await,
        "items": items,
        "index": {"backend": state.index.name(), "points": points},
        "model": {"id": state.config.model.id, "dim": state.config.model.dim},
    })))
}

/// Whatever the broker says within a short bound: a status page must answer even while RabbitMQ is
/// away, and then says why the counts are missing.
async fn queue_depth(state: &AppState) -> Value {
    match tokio::time::timeout(QUEUE_DEPTH_TIMEOUT, state.publisher.depth()).await {
        Ok(Ok(d)) => json!({
            "available": true,
            "ready": d.ready,
            "retrying": d.retrying,
            "dead": d.dead,
            "consumers": d.consumers,
        }),
        Ok(Err(e)) => json!({"available": false, "error": e.to_string()}),
        Err(_) => json!({
            "available": false,
            "error": format!("the message broker did not answer within {QUEUE_DEPTH_TIMEOUT:?}"),
        }),
    }
}
