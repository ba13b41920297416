pub mod catalogue;
pub mod duplicates;
pub mod fields;
pub mod health;
pub mod images;
pub mod items;
pub mod jobs;
pub mod metrics;
pub mod openapi;
pub mod products;
pub mod search;
pub mod status;
pub mod web;

use axum::extract::Request;
use axum::http::header;
use lookalike_core::codes;
use uuid::Uuid;

use crate::{ApiError, ApiResult, AppState};

/// A path's id, or 400 `invalid_id` naming what it should have been (`job`, `item`).
pub(crate) fn parse_id(raw: &str, what: &'static str) -> ApiResult<Uuid> {
    Uuid::parse_str(raw).map_err(|_| {
        ApiError::bad_request(
            codes::api::INVALID_ID,
            format!("`{raw}` is not a valid {what} id"),
        )
    })
}

/// A multipart body that cannot be read: 413 `payload_too_large` over the body limit, else 400
/// `invalid_multipart` with the reason.
pub(crate) fn multipart_error(e: axum::extract::multipart::MultipartError) -> ApiError {
    if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::too_large(
            codes::api::PAYLOAD_TOO_LARGE,
            "the request body is over the size limit",
        )
    } else {
        ApiError::bad_request(codes::api::INVALID_MULTIPART, e.body_text())
    }
}

/// The request's media type, lower-cased (empty when absent).
pub(crate) fn content_type(request: &Request) -> String {
    request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase()
}

/// The stored item, or 404 `item_not_found`.
pub(crate) async fn load_item(state: &AppState, id: Uuid) -> ApiResult<lookalike_store::Item> {
    state
        .store
        .get_item(id)
        .await?
        .ok_or_else(|| ApiError::not_found(codes::api::ITEM_NOT_FOUND, format!("no item {id}")))
}

/// The job, or 404 `job_not_found`.
pub(crate) async fn load_job(state: &AppState, id: Uuid) -> ApiResult<lookalike_store::Job> {
    state
        .store
        .get_job(id)
        .await?
        .ok_or_else(|| ApiError::not_found(codes::api::JOB_NOT_FOUND, format!("no job {id}")))
}
