//! Extractors whose rejections speak the API's JSON error shape (axum's own answer in plain text).

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use lookalike_core::codes;
use serde::de::DeserializeOwned;

use crate::ApiError;

/// `axum::extract::Query`, with a malformed query string (`?k=abc`, `?offset=-1`) answered as
/// 400 `invalid_query` and a JSON body naming the problem.
pub struct Query<T>(pub T);

impl<T, S> FromRequestParts<S> for Query<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(value)| Query(value))
            .map_err(|e| ApiError::bad_request(codes::api::INVALID_QUERY, e.body_text()))
    }
}
