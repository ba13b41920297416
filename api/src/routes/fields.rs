//! Declared metadata fields (`[fields]`, see `lookalike_core::fields`): `GET /v1/fields` reports
//! them, `PATCH /v1/items/{id}` changes an item's metadata without re-embedding its image, and
//! [`filters`] reads the query parameters that narrow similarity results and the item listing.

use axum::extract::{Path, Request, State};
use axum::routing::get;
use axum::{Json, Router};
use lookalike_api_types::{self as types, FieldsReport, Item, ItemPatch};
use lookalike_catalogue::MetadataChange;
use lookalike_core::codes::{self, api};
use lookalike_core::fields::{self, FieldCondition, FieldError, FieldKind};
use serde_json::{Map, Value};

use crate::docs::{Forbidden, ItemNotFound, ItemPath, Unauthorized, Unavailable, errors};
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

/// The declared metadata fields, and the items whose value does not fit
///
/// Scope `read`. For each field of `[fields]`: its kind, how many items give it a value of that kind,
/// and how many (and the first of them) a value of another kind, which filters never match; mend
/// them with `PATCH /v1/items/{id}`.
#[utoipa::path(
    get, path = "/v1/fields", tag = "catalogue", operation_id = "listFields",
    responses(
        (status = 200, description = "The fields.", body = FieldsReport),
        Unauthorized, Forbidden, Unavailable,
    ),
)]
pub(crate) async fn report(State(state): State<AppState>) -> ApiResult<Json<FieldsReport>> {
    let reports = state.store.field_reports(&state.config.fields).await?;
    let fields = reports
        .into_iter()
        .map(|r| types::FieldReport {
            name: r.name,
            kind: match r.kind {
                FieldKind::Keyword => types::FieldKind::Keyword,
                FieldKind::Number => types::FieldKind::Number,
                FieldKind::Bool => types::FieldKind::Bool,
            },
            items_with_value: r.items_with_value,
            items_with_wrong_kind: r.items_with_wrong_kind,
            wrong_kind: r
                .wrong_kind
                .into_iter()
                .map(|w| types::WrongKind {
                    item_id: w.item_id,
                    external_id: w.external_id,
                    value: w.value,
                })
                .collect(),
        })
        .collect();
    Ok(Json(FieldsReport {
        fields,
        examples_per_field: lookalike_store::REPORT_EXAMPLES,
    }))
}

errors!(PatchErrors {
    400 => "An invalid id, or a body that is not `{\"metadata\": {...}}`.",
        [api::INVALID_ID, api::INVALID_JSON],
    413 => "The body is over 64 KiB.", [api::PAYLOAD_TOO_LARGE],
    422 => "A declared field given a value of another kind, or metadata over its size limit.",
        [codes::fields::INVALID_FIELD_VALUE, api::INVALID_METADATA],
});

/// Change an item's metadata (price, stock) without re-embedding its image
///
/// Scope `write`. The metadata given is merged into the item's: a key set to null is removed, others
/// replace their value. Postgres and the vector index (what filters and results read) change
/// together; the image, vector and category stay. The item's row stays locked across both writes,
/// like an ingest's commit.
#[utoipa::path(
    patch, path = "/v1/items/{id}", tag = "catalogue", operation_id = "patchItem", params(ItemPath),
    request_body = ItemPatch,
    responses(
        (status = 200, description = "The item as it is now.", body = Item),
        PatchErrors, Unauthorized, Forbidden, ItemNotFound, Unavailable,
    ),
)]
pub(crate) async fn patch_item(
    State(state): State<AppState>,
    Path(id): Path<String>,
    request: Request,
) -> ApiResult<Json<Item>> {
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
