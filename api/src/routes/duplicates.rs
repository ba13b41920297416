//! Near-duplicate groups (`dedupe`): `GET /v1/items/{id}/duplicates` lists an item's group with each
//! member's cosine to it; `POST /v1/items/{id}/not-duplicate` takes it out, for good. The groups are
//! formed at ingest (`lookalike_catalogue`); `collapse=true` on similarity queries answers one result
//! per group.

use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use lookalike_api_types::{DuplicateMember, Duplicates};
use lookalike_core::codes;

use crate::docs::{Forbidden, InvalidId, ItemNotFound, ItemPath, Unauthorized, Unavailable};
use crate::routes::{load_item, parse_id};
use crate::{ApiError, ApiResult, AppState, views};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/items/{id}/duplicates", get(list))
        .route("/v1/items/{id}/not-duplicate", post(split))
}

/// The item's near-duplicate group
///
/// Scope `read`. The other members, first submitted first, each with its cosine to this item; the
/// canonical member is the group's first submitted one still there. An item in no group answers an
/// empty list.
#[utoipa::path(
    get, path = "/v1/items/{id}/duplicates", tag = "catalogue", operation_id = "itemDuplicates",
    params(ItemPath),
    responses(
        (status = 200, description = "The group.", body = Duplicates),
        InvalidId, Unauthorized, Forbidden, ItemNotFound, Unavailable,
    ),
)]
pub(crate) async fn list(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Duplicates>> {
    let id = parse_id(&id, "item")?;
    Ok(Json(group_of(&state, id).await?))
}

async fn group_of(state: &AppState, id: uuid::Uuid) -> ApiResult<Duplicates> {
    let item = load_item(state, id).await?;
    let Some(group) = item.duplicate_group else {
        return Ok(Duplicates {
            item_id: id,
            group: None,
            canonical_item_id: None,
            duplicates: Vec::new(),
        });
    };
    let members = state.store.duplicate_members(group).await?;
    let canonical = members.first().map(|m| m.id);
    let own = state.index.get_vector(id).await?;
    let mut duplicates = Vec::new();
    for m in members.iter().filter(|m| m.id != id) {
        let score = match (&own, state.index.get_vector(m.id).await?) {
            // Stored vectors are unit length: the dot product is the cosine.
            (Some(a), Some(b)) => Some(a.iter().zip(&b).map(|(x, y)| x * y).sum()),
            _ => None,
        };
        duplicates.push(DuplicateMember {
            item_id: m.id,
            external_id: m.external_id.clone(),
            product_id: m.product_id.clone(),
            category: m.category.clone(),
            score,
            canonical: Some(m.id) == canonical,
            thumbnail_url: views::thumbnail_link(m.id),
        });
    }
    Ok(Duplicates {
        item_id: id,
        group: Some(group),
        canonical_item_id: canonical,
        duplicates,
    })
}

/// "Not a duplicate": take the item out of its group
///
/// Scope `write`. The item leaves its group and is never grouped with its former members again (at
/// ingest, on resubmission, by `lookalike dedupe`); a group left with one member is dissolved.
/// Answers the item's (now empty) group.
#[utoipa::path(
    post, path = "/v1/items/{id}/not-duplicate", tag = "catalogue", operation_id = "splitDuplicate",
    params(ItemPath),
    responses(
        (status = 200, description = "The item, in no group.", body = Duplicates),
        InvalidId, Unauthorized, Forbidden, ItemNotFound, Unavailable,
    ),
)]
pub(crate) async fn split(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Duplicates>> {
    let id = parse_id(&id, "item")?;
    if !state.catalogue.split_duplicate(id).await? {
        return Err(ApiError::not_found(
            codes::api::ITEM_NOT_FOUND,
            format!("no item {id}"),
        ));
    }
    Ok(Json(group_of(&state, id).await?))
}
