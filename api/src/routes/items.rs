//! Stored items: `GET /v1/items/{id}` and its thumbnail (`DELETE` in `catalogue`, `PATCH` in `fields`).

use axum::extract::{Path, State};
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use lookalike_core::codes;
use serde::Deserialize;
use serde_json::Value;

use crate::extract::Query;
use crate::routes::parse_id;
use crate::{ApiError, ApiResult, AppState, views};

pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/v1/items/{id}",
            get(show)
                .delete(crate::routes::catalogue::delete)
                .patch(crate::routes::fields::patch_item),
        )
        .route("/v1/items/{id}/thumbnail", get(thumbnail))
}

#[derive(Deserialize)]
struct ShowQuery {
    /// `?vector=true` adds the stored embedding (for export and for checking the model's output) and
    /// the features the classifier head reads (`null` when none are kept).
    #[serde(default)]
    vector: bool,
}

async fn show(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<ShowQuery>,
) -> ApiResult<Json<Value>> {
    let id = parse_id(&id, "item")?;
    let item = crate::routes::load_item(&state, id).await?;
    let mut body = views::item(&item);
    if q.vector {
        body["vector"] =
            serde_json::to_value(state.index.get_vector(id).await?).unwrap_or_default();
        body["features"] =
            serde_json::to_value(state.store.item_features(id).await?).unwrap_or_default();
    }
    Ok(Json(body))
}

async fn thumbnail(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    let id = parse_id(&id, "item")?;
    let jpeg =
        state.store.thumbnail(id).await?.ok_or_else(|| {
            ApiError::not_found(codes::api::ITEM_NOT_FOUND, format!("no item {id}"))
        })?;
    // Thumbnails never change for an item id, so the browser may keep them; only the browser, since
    // they are read with an API key and a shared cache would hand them to callers without one.
    Ok((
        [
            (header::CONTENT_TYPE, "image/jpeg"),
            (header::CACHE_CONTROL, "private, max-age=86400, immutable"),
        ],
        jpeg,
    ))
}
