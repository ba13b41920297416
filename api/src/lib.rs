//! The lookalike HTTP API (axum): submit image jobs, follow them, read items.

mod error;
mod routes;
mod state;
mod views;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use tower_http::trace::TraceLayer;

pub use error::{ApiError, ApiResult};
pub use state::AppState;

pub fn router(state: AppState) -> Router {
    let body_limit = state.config.http.max_body_bytes;
    Router::new()
        .merge(routes::health::router())
        .merge(routes::images::router())
        .merge(routes::jobs::router())
        .merge(routes::items::router())
        .merge(routes::status::router())
        .merge(routes::search::router())
        .merge(routes::catalogue::router())
        .merge(routes::web::router())
        .fallback(error::not_found_fallback)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}
