//! `GET /openapi.json`: the API's OpenAPI 3.1 description, so clients and tools can be generated from
//! the service they talk to. Hand-written in `api/openapi.json` and compiled in; `tests/openapi.rs`
//! checks it against the router (every documented route answers, every route and error code is
//! documented), so a change to the API that forgets the description fails there.

use axum::Router;
use axum::http::header;
use axum::routing::get;

use crate::AppState;

const SPEC: &str = include_str!("../../openapi.json");

pub fn router() -> Router<AppState> {
    Router::new().route(
        "/openapi.json",
        get(|| async { ([(header::CONTENT_TYPE, "application/json")], SPEC) }),
    )
}
