//! Liveness (`/healthz`: the process answers) and readiness (`/readyz`: its dependencies answer).

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use lookalike_api_types::{Health, Ready, ReadyChecks};

use crate::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
}

/// Liveness: the process answers
#[utoipa::path(
    get, path = "/healthz", tag = "operations", operation_id = "healthz", security(()),
    responses((status = 200, description = "Alive.", body = Health)),
)]
pub(crate) async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok".into(),
    })
}

/// Readiness: Postgres, RabbitMQ and the index answer (each within 2 s)
///
/// Checks each dependency, bounded in time, and says which one failed.
#[utoipa::path(
    get, path = "/readyz", tag = "operations", operation_id = "readyz", security(()),
    responses(
        (status = 200, description = "Ready.", body = Ready),
        (status = 503, description = "Not ready; `checks` says which dependency does not answer.", body = Ready),
    ),
)]
pub(crate) async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Ready>) {
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
    let checks = ReadyChecks {
        database: verdict(db),
        queue: verdict(queue),
        index: verdict(index),
    };
    let ready = [&checks.database, &checks.queue, &checks.index]
        .iter()
        .all(|v| *v == "ok");
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(Ready {
            status: if ready { "ready" } else { "not_ready" }.into(),
            checks,
        }),
    )
}
