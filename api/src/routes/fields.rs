//! Declared metadata fields (`[fields]`, see `lookalike_core::fields`): `GET /v1/fields` reports
//! them, `PATCH /v1/items/{id}` changes an item's metadata without re-embedding its image, and
//! [`filters`] reads the query parameters that narrow similarity results and the item listing.

use axum::extract::{Path, Request, State};
use axum::routing::get;
use axum::{Json, Router};
use lookalike_catalogue::MetadataChange;
use lookalike_core::codes;
use lookalike_core::fields::{self, FieldCondition, FieldError};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::routes::parse_id;
use crate::{ApiError, ApiResult, AppState, views};

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/fields", get(report))
}

/// The filter conditions among a request's query parameters: every parameter that is not one of
/// the request's `own` must name a declared field, so a typo is a 422, never an unfiltered answer.
pub(crate) fn filters(
    state: &AppState,
    pairs: &[(String, String)],
    own: &[&str],
) -> ApiResult<Vec<FieldCondition>> {
    fields::parse_query(
        pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        &state.config.fields,
        own,
    )
    .map_err(field_error)
}

pub(crate) fn field_error(e: FieldError) -> ApiError {
    ApiError::unprocessable(e.code, e.message)
}

/// Each declared field: its kind, how many items give it a value of that kind, and the items whose
/// value has another kind (filters never match those; fix them with `PATCH /v1/items/{id}`).
async fn report(State(state): State<AppState>) -> ApiResult<Json<Value>> {
    let reports = state.store.field_reports(&state.config.fields).await?;
    Ok(Json(json!({
        "fields": reports,
        "examples_per_field": lookalike_store::REPORT_EXAMPLES,
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ItemPatch {
    /// Merged into the item's metadata: a key set to `null` is removed, others replace their value.
    metadata: Map<String, Value>,
}

/// `PATCH /v1/items/{id}` with `{"metadata": {"price": 79000, "in_stock": false}}`: changes the
/// metadata in Postgres and in the index (what filters and results read), keeps the image, vector
/// and category. The item's row stays locked across both writes, like an ingest's commit.
pub async fn patch_item(
    State(state): State<AppState>,
    Path(id): Path<String>,
    request: Request,
) -> ApiResult<Json<Value>> {
    let id = parse_id(&id, "item")?;
    let body = axum::body::to_bytes(request.into_body(), 64 * 1024)
        .await
        .map_err(|_| {
            ApiError::too_large(
                codes::api::PAYLOAD_TOO_LARGE,
                "the JSON body is over 64 KiB",
            )
        })?;
    let patch: ItemPatch = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(
            codes::api::INVALID_JSON,
            format!("the body is not an item change ({{\"metadata\": {{...}}}}): {e}"),
        )
    })?;
    // Only the keys this change sets are checked: an old wrongly typed value elsewhere does not
    // block an unrelated change (GET /v1/fields lists it).
    fields::check_metadata(&Value::Object(patch.metadata.clone()), &state.config.fields)
        .map_err(field_error)?;
    let not_found = || ApiError::not_found(codes::api::ITEM_NOT_FOUND, format!("no item {id}"));
    let merge = |before: &Value| {
        let mut metadata = match before {
            Value::Object(m) => m.clone(),
            _ => Map::new(),
        };
        for (key, value) in patch.metadata {
            if value.is_null() {
                metadata.remove(&key);
            } else {
                metadata.insert(key, value);
            }
        }
        let metadata = Value::Object(metadata);
        crate::routes::images::check_metadata_size(&metadata)?;
        Ok::<_, ApiError>(metadata)
    };
    match state.catalogue.change_metadata(id, merge).await? {
        MetadataChange::Changed => {}
        MetadataChange::NotFound => return Err(not_found()),
        MetadataChange::Rejected(e) => return Err(e),
    }
    let item = crate::routes::load_item(&state, id).await?;
    Ok(Json(views::item(&item)))
}
