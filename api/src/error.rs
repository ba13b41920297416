//! API errors: an HTTP status plus a stable machine-readable code, always as
//! `{"error": {"code": "...", "message": "..."}}`.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use lookalike_core::codes;
use serde_json::json;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }
    pub fn unprocessable(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
    }
    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, message)
    }
    pub fn unavailable(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, code, message)
    }
    pub fn too_large(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, code, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::warn!(code = self.code, message = %self.message, "request failed");
        }
        let body = Json(json!({"error": {"code": self.code, "message": self.message}}));
        let mut response = (self.status, body).into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert("retry-after", axum::http::HeaderValue::from_static("5"));
        }
        response
    }
}

impl From<lookalike_store::StoreError> for ApiError {
    fn from(e: lookalike_store::StoreError) -> Self {
        match e {
            lookalike_store::StoreError::Conflict(_) => ApiError::new(
                StatusCode::CONFLICT,
                codes::api::CONFLICT,
                format!("the change conflicts with stored data: {e}"),
            ),
            e => ApiError::unavailable(
                codes::api::DATABASE_UNAVAILABLE,
                format!("the database is not reachable: {e}"),
            ),
        }
    }
}

impl From<lookalike_index::IndexError> for ApiError {
    fn from(e: lookalike_index::IndexError) -> Self {
        ApiError::unavailable(
            codes::api::INDEX_UNAVAILABLE,
            format!("the vector index failed: {e}"),
        )
    }
}

impl From<lookalike_catalogue::CatalogueError> for ApiError {
    fn from(e: lookalike_catalogue::CatalogueError) -> Self {
        match e {
            lookalike_catalogue::CatalogueError::Store(e) => e.into(),
            lookalike_catalogue::CatalogueError::Index(e) => e.into(),
        }
    }
}

/// A query image that cannot be used is the caller's problem (422) unless the failure is ours (503).
impl From<lookalike_analysis::Failure> for ApiError {
    fn from(e: lookalike_analysis::Failure) -> Self {
        if e.transient || e.blocked {
            ApiError::unavailable(e.code, e.message)
        } else {
            ApiError::unprocessable(e.code, e.message)
        }
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

/// Answers unknown paths in the same JSON shape as every other error.
/// A known path with a method it does not serve: 405 in the JSON error shape.
pub async fn method_not_allowed_fallback() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        codes::api::METHOD_NOT_ALLOWED,
        "this endpoint does not take that method; see GET /openapi.json",
    )
}

pub async fn not_found_fallback() -> ApiError {
    ApiError::not_found(
        codes::api::ROUTE_NOT_FOUND,
        "no such endpoint; see README.md for the API",
    )
}
