//! Liveness (`/healthz`: the process answers) and readiness (`/readyz`: its dependencies answer).

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};

use crate::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
}

async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// Checks Postgres, RabbitMQ and the vector index, each bounded in time, and says which one failed.
async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    let limit = Duration::from_secs(2);
    let (db, queue, index) = tokio::join!(
        tokio::time::timeout(limit, state.store.ping()),
        tokio::time::timeout(limit, state.publisher.ensure_connected()),
        tokio::time::timeout(limit, state.index.ping()),
    );
    fn verdict<E: std::fmt::Display>(
        r: Result<Result<(), E>, tokio::time::error::Elapsed>,
    ) -> String {
        match r {
            Ok(Ok(())) => "ok".into(),
            Ok(Err(e)) => format!("error: {e}"),
            Err(_) => "error: no answer within 2s".into(),
        }
    }
    let checks = json!({"database": verdict(db), "queue": verdict(queue), "index": verdict(index)});
    let ready = checks.as_object().unwrap().values().all(|v| v == "ok");
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(json!({"status": if ready { "ready" } else { "not_ready" }, "checks": checks})),
    )
}
