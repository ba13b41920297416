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
        "classifier": classifier(&state).await?,
    })))
}

/// The trained head in use (null until one is trained) and how many labels there are now.
async fn classifier(state: &AppState) -> ApiResult<Value> {
    let labelled = state
        .store
        .labelled_count(state.analyser.model_id())
        .await?;
    let head = state.analyser.heads.current().map(|h| h.summary());
    let c = &state.config.classify;
    Ok(json!({
        "head_enabled": c.head,
        "labelled_items": labelled,
        "head": head,
        // What `lookalike eval` needs to run its folds exactly as this service classifies.
        "settings": {
            "neighbours": c.neighbours,
            "neighbour_temperature": c.neighbour_temperature,
            "prototype_temperature": c.prototype_temperature,
            "prototype_weight": c.prototype_weight,
            "confidence_temperature": c.confidence_temperature,
            "head": c.head,
            "head_l2": c.head_l2,
            "head_shrinkage": c.head_shrinkage,
            "head_takeover": c.head_takeover,
            "head_min_labels": c.head_min_labels,
            "min_confidence": c.min_confidence,
            "cover": c.cover,
            "max_categories": c.max_categories,
        },
    }))
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
