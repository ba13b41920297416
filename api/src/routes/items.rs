//! Stored items: `GET /v1/items/{id}` and its thumbnail (`DELETE` in `catalogue`, `PATCH` in `fields`).

use axum::extract::{Path, State};
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use lookalike_api_types::Item;
use lookalike_core::codes;
use serde::Deserialize;
use utoipa::IntoParams;

use crate::docs::{Forbidden, InvalidId, ItemNotFound, ItemPath, Unauthorized, Unavailable};
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

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ShowQuery {
    /// `true` adds the stored embedding as `vector` (for export and for checking the model's output)
    /// and the features the classifier head reads as `features` (`null` when none are kept).
    #[serde(default)]
    #[param(default = false)]
    vector: bool,
}

/// One stored item
///
/// Scope `read`.
#[utoipa::path(
    get, path = "/v1/items/{id}", tag = "catalogue", operation_id = "getItem",
    params(ItemPath, ShowQuery),
    responses(
        (status = 200, description = "The item.", body = Item),
        InvalidId, Unauthorized, Forbidden, ItemNotFound, Unavailable,
    ),
)]
pub(crate) async fn show(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<ShowQuery>,
) -> ApiResult<Json<Item>> {
    let id = parse_id(&id, "item")?;
    let item = crate::routes::load_item(&state, id).await?;
    let mut body = views::item(&item);
    if q.vector {
        body.vector = Some(state.index.get_vector(id).await?);
        body.features = Some(state.store.item_features(id).await?);
    }
    Ok(Json(body))
}

/// The JPEG thumbnail made at ingest (`worker.thumbnail_size`)
///
/// Scope `read`. Never changes for an item id: `Cache-Control: private, max-age=86400, immutable`.
#[utoipa::path(
    get, path = "/v1/items/{id}/thumbnail", tag = "catalogue", operation_id = "getThumbnail",
    params(ItemPath),
    responses(
        (status = 200, description = "The thumbnail.", content_type = "image/jpeg", body = Vec<u8>),
        InvalidId, Unauthorized, Forbidden, ItemNotFound, Unavailable,
    ),
)]
pub(crate) async fn thumbnail(
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
