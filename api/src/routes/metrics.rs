//! `GET /metrics` (Prometheus text format) and the middleware that times every API request.
//!
//! The counters and histograms come from the process's recorder (`lookalike_telemetry`); the gauges
//! are read at scrape time, each source bounded in time, so a scrape always answers and a gauge whose
//! source is down is left out (with `lookalike_dependency_up` at 0) instead of shown stale. Open
//! without an API key like `/healthz`: scrapers sit inside the network. `metrics.enabled = false`
//! leaves the route out (404).

use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use lookalike_store::JobStatus;
use lookalike_telemetry::exposition::{CONTENT_TYPE, Gauges};
use lookalike_telemetry::{
    BUILD_INFO, DEPENDENCY_UP, INDEX_POINTS, JOBS_BY_STATUS, QUEUE_CONSUMERS, QUEUE_MESSAGES,
};

use crate::AppState;
use crate::docs::errors;
use lookalike_core::codes::api;

/// Each dependency gets this long to answer a scrape (Prometheus' default scrape timeout is 10 s).
const SOURCE_TIMEOUT: Duration = Duration::from_secs(2);

pub fn router(enabled: bool) -> Router<AppState> {
    if enabled {
        Router::new().route("/metrics", get(metrics))
    } else {
        Router::new()
    }
}

errors!(MetricsOff {
    404 => "`metrics.enabled = false`: the route is not there.", [api::ROUTE_NOT_FOUND],
});

/// Prometheus metrics (text exposition format)
///
/// Open without a key: scrape from inside the network. `metrics.enabled = false` removes the route
/// (404). README.md, "Metrics and logs", lists the metrics.
#[utoipa::path(
    get, path = "/metrics", tag = "operations", operation_id = "metrics", security(()),
    responses(
        (status = 200, description = "The metrics.", content_type = "text/plain; version=0.0.4", body = String),
        MetricsOff,
    ),
)]
pub(crate) async fn metrics(State(state): State<AppState>) -> Response {
    let recorded = lookalike_telemetry::render();
    let gauges = scrape(&state).await;
    (
        [(header::CONTENT_TYPE, CONTENT_TYPE)],
        format!("{recorded}{gauges}"),
    )
        .into_response()
}

/// Reads the queue, Postgres and the index at once, each within [`SOURCE_TIMEOUT`].
async fn scrape(state: &AppState) -> String {
    let (queue, jobs, points) = tokio::join!(
        tokio::time::timeout(SOURCE_TIMEOUT, state.publisher.depth()),
        tokio::time::timeout(SOURCE_TIMEOUT, state.store.job_counts()),
        tokio::time::timeout(SOURCE_TIMEOUT, state.index.approx_count()),
    );
    let mut g = Gauges::new();
    let mut up = Vec::new();

    up.push(("queue", matches!(queue, Ok(Ok(_)))));
    if let Ok(Ok(d)) = queue {
        g.sample(&QUEUE_MESSAGES, &["jobs"], d.ready.into())
            .sample(&QUEUE_MESSAGES, &["retry"], d.retrying.into())
            .sample(&QUEUE_MESSAGES, &["dead"], d.dead.into())
            .sample(&QUEUE_CONSUMERS, &[], d.consumers.into());
    }

    up.push(("database", matches!(jobs, Ok(Ok(_)))));
    if let Ok(Ok(counts)) = jobs {
        // Every status, zeros included, so a rate or an alert never sees a series vanish.
        for status in [
            JobStatus::Queued,
            JobStatus::Processing,
            JobStatus::Succeeded,
            JobStatus::Failed,
        ] {
            let n = counts
                .iter()
                .find(|(s, _)| *s == status)
                .map_or(0, |(_, n)| *n);
            g.sample(&JOBS_BY_STATUS, &[status_name(status)], n as f64);
        }
    }

    up.push(("index", matches!(points, Ok(Ok(_)))));
    if let Ok(Ok(n)) = points {
        g.sample(&INDEX_POINTS, &[], n as f64);
    }

    for (dependency, ok) in up {
        g.sample(&DEPENDENCY_UP, &[dependency], if ok { 1.0 } else { 0.0 });
    }
    g.sample(
        &BUILD_INFO,
        &[env!("CARGO_PKG_VERSION"), &state.config.model.id],
        1.0,
    );
    g.finish()
}

fn status_name(status: JobStatus) -> &'static str {
    match status {
        JobStatus::Queued => "queued",
        JobStatus::Processing => "processing",
        JobStatus::Succeeded => "succeeded",
        JobStatus::Failed => "failed",
    }
}

/// Times each request under its route template (`/v1/jobs/{id}`), never its raw path: ids in paths
/// would make a new series per job. Requests no route matched share `unmatched`.
pub async fn observe(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let method = request.method().clone();
    let started = Instant::now();
    let response = next.run(request).await;
    lookalike_telemetry::http_request(
        &route,
        method.as_str(),
        response.status().as_u16(),
        started.elapsed(),
    );
    response
}
