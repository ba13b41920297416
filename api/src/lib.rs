//! The lookalike HTTP API (axum): submit image jobs, follow them, read items.

pub mod auth;
mod docs;
mod error;
mod extract;
mod routes;
mod state;
mod views;

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use axum::middleware;
use tower_http::trace::TraceLayer;

pub use error::{ApiError, ApiResult};
pub use state::AppState;

/// The OpenAPI document `GET /openapi.json` serves (for tests and tools that want it without a server).
pub fn openapi() -> utoipa::openapi::OpenApi {
    routes::openapi::document()
}

/// What a worker process serves: liveness, readiness and metrics, no API.
pub fn ops_router(state: AppState) -> Router {
    Router::new()
        .merge(routes::health::router())
        .merge(routes::metrics::router(state.config.metrics.enabled))
        .fallback(error::not_found_fallback)
        .with_state(state)
}

pub fn router(state: AppState) -> Router {
    let body_limit = state.config.http.max_body_bytes;
    let keys = Arc::new(auth::Keys::from_config(&state.config.auth));
    Router::new()
        .merge(routes::health::router())
        .merge(routes::metrics::router(state.config.metrics.enabled))
        .merge(routes::images::router())
        .merge(routes::jobs::router())
        .merge(routes::items::router())
        .merge(routes::products::router())
        .merge(routes::duplicates::router())
        .merge(routes::status::router())
        .merge(routes::search::router())
        .merge(routes::catalogue::router())
        .merge(routes::fields::router())
        .merge(routes::web::router())
        .merge(routes::openapi::router())
        .fallback(error::not_found_fallback)
        .method_not_allowed_fallback(error::method_not_allowed_fallback)
        .layer(middleware::from_fn_with_state(keys, auth::authenticate))
        .layer(DefaultBodyLimit::max(body_limit))
        // An info span, so the key's name (filled in by the auth middleware) is on every line a
        // request logs at the default level.
        .layer(
            TraceLayer::new_for_http().make_span_with(|request: &Request| {
                tracing::info_span!(
                    "request",
                    method = %request.method(),
                    path = %request.uri().path(),
                    api_key = tracing::field::Empty,
                )
            }),
        )
        // Every route's time by its template; `Router::layer` runs after routing, so the matched
        // path is known here.
        .layer(middleware::from_fn(routes::metrics::observe))
        .with_state(state)
}
