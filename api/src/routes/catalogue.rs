//! The catalogue: categories with counts, item pages, deletion and re-classification.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use lookalike_analysis::Exclude;
use lookalike_analysis::heads::{self, Reason, TrainOutcome};
use lookalike_api_types::{Categories, CategoryCount, HeadSummary, ItemPage, Reclassified};
use lookalike_core::codes::{self, api, job};
use serde::Deserialize;
use utoipa::IntoParams;

use crate::docs::{
    BadFilter, Filters, Forbidden, InvalidId, ItemNotFound, ItemPath, Unauthorized, Unavailable,
    errors,
};
use crate::extract::Query;
use crate::routes::parse_id;
use crate::{ApiError, ApiResult, AppState, views};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/categories", get(categories))
        .route("/v1/items", get(list))
        .route("/v1/reclassify", post(reclassify))
        .route("/v1/classifier/train", post(train))
}

errors!(TrainErrors {
    409 => "Another process is training right now, or `classify.head` is false.",
        [api::TRAINING_IN_PROGRESS, api::HEAD_DISABLED],
    422 => "Fewer labelled items than `classify.head_min_labels`, or one category only.",
        [api::TOO_FEW_LABELS],
    503 => "The database is unavailable.", [job::DATABASE_UNAVAILABLE],
});

/// Train the classifier head on every labelled item now
///
/// Scope `write`. No body. A worker retrains by itself when the labels change enough
/// (`classify.head_retrain_min`, `head_retrain_share`); this trains at once, under the same database
/// lock, and every process loads the new version within `classify.head_check_ms`. Stored predictions
/// change only through `POST /v1/reclassify`.
#[utoipa::path(
    post, path = "/v1/classifier/train", tag = "catalogue", operation_id = "trainClassifier",
    responses(
        (status = 200, description = "The new head.", body = HeadSummary),
        Unauthorized, Forbidden, TrainErrors,
    ),
)]
pub(crate) async fn train(
    State(state): State<AppState>,
) -> ApiResult<(StatusCode, Json<HeadSummary>)> {
    let p = &state.analyser;
    if !p.classify.head {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            codes::api::HEAD_DISABLED,
            "classify.head is false: this service classifies with the neighbour vote alone and trains no head",
        ));
    }
    match heads::train_now(
        &p.store,
        &p.heads,
        p.model_id(),
        &p.classify,
        Reason::Requested,
    )
    .await?
    {
        TrainOutcome::Trained(head) => Ok((StatusCode::OK, Json(views::head(&head)))),
        TrainOutcome::Busy => Err(ApiError::new(
            StatusCode::CONFLICT,
            codes::api::TRAINING_IN_PROGRESS,
            "another process is training the classifier head right now; its result is loaded here within classify.head_check_ms",
        )),
        TrainOutcome::TooFewLabels {
            labelled,
            categories,
        } => Err(ApiError::unprocessable(
            codes::api::TOO_FEW_LABELS,
            format!(
                "a head needs at least classify.head_min_labels = {} labelled items in two categories or more; there are {labelled} in {categories}",
                p.classify.head_min_labels
            ),
        )),
    }
}

/// Every category with its item count and how many were labelled by hand
///
/// Scope `read`.
#[utoipa::path(
    get, path = "/v1/categories", tag = "catalogue", operation_id = "listCategories",
    responses(
        (status = 200, description = "The categories.", body = Categories),
        Unauthorized, Forbidden, Unavailable,
    ),
)]
pub(crate) async fn categories(State(state): State<AppState>) -> ApiResult<Json<Categories>> {
    let counts = state.store.category_counts().await?;
    let uncategorised = counts
        .iter()
        .filter(|c| c.name.is_none())
        .map(|c| c.items)
        .sum::<i64>();
    let categories = counts
        .iter()
        .filter_map(|c| {
            c.name.as_ref().map(|name| CategoryCount {
                name: name.clone(),
                items: c.items,
                labelled: c.labelled,
            })
        })
        .collect();
    Ok(Json(Categories {
        categories,
        uncategorised,
    }))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ListQuery {
    /// Only this category; empty means every item.
    category: Option<String>,
    /// Page size; values outside 1–200 are clamped.
    #[param(minimum = 1, maximum = 200, default = 24)]
    limit: Option<i64>,
    /// Items to skip; a negative value counts as 0.
    #[param(minimum = 0, default = 0)]
    offset: Option<i64>,
}

/// A page of the catalogue, newest first, with the total
///
/// Scope `read`.
#[utoipa::path(
    get, path = "/v1/items", tag = "catalogue", operation_id = "listItems", params(ListQuery, Filters),
    responses(
        (status = 200, description = "The page.", body = ItemPage),
        BadFilter, Unauthorized, Forbidden, Unavailable,
    ),
)]
pub(crate) async fn list(
    State(state): State<AppState>,
    Query(q): Query<ListQuery>,
    Query(pairs): Query<Vec<(String, String)>>,
) -> ApiResult<Json<ItemPage>> {
    let fields = crate::routes::fields::filters(&state, &pairs, &["category", "limit", "offset"])?;
    let limit = q.limit.unwrap_or(24).clamp(1, 200);
    let offset = q.offset.unwrap_or(0).max(0);
    let category = q.category.as_deref().filter(|c| !c.is_empty());
    let (items, total) = state
        .store
        .list_items(category, &fields, limit, offset)
        .await?;
    Ok(Json(ItemPage {
        items: items.iter().map(views::item).collect(),
        total,
        limit,
        offset,
    }))
}

/// Remove the item, its vector and its thumbnail
///
/// Scope `write`. The vector goes first (`Catalogue::delete`), so a failure leaves no result that
/// points at a missing item.
#[utoipa::path(
    delete, path = "/v1/items/{id}", tag = "catalogue", operation_id = "deleteItem", params(ItemPath),
    responses(
        (status = 204, description = "Removed."),
        InvalidId, Unauthorized, Forbidden, ItemNotFound, Unavailable,
    ),
)]
pub(crate) async fn delete(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let id = parse_id(&id, "item")?;
    if !state.catalogue.delete(id).await? {
        return Err(ApiError::not_found(
            codes::api::ITEM_NOT_FOUND,
            format!("no item {id}"),
        ));
    }
    Ok(StatusCode::NO_CONTENT)
}

errors!(ReclassifyErrors {
    503 => "A dependency or the model failed.",
        [job::DATABASE_UNAVAILABLE, job::INDEX_UNAVAILABLE, job::INFERENCE_FAILED],
});

/// Re-predict every predicted category from the labels as they are now
///
/// Scope `write`. No body. Provided categories are never touched; an item the cold-start prior placed
/// in a category that still has no labels keeps it. Runs on request, never by surprise.
#[utoipa::path(
    post, path = "/v1/reclassify", tag = "catalogue", operation_id = "reclassify",
    responses(
        (status = 200, description = "How many items were checked and changed.", body = Reclassified),
        Unauthorized, Forbidden, ReclassifyErrors,
    ),
)]
pub(crate) async fn reclassify(State(state): State<AppState>) -> ApiResult<Json<Reclassified>> {
    let ids = state
        .store
        .unlabelled_item_ids(&state.config.model.id)
        .await?;
    // Items the cold-start prior put in a category that still has no labels keep it: only the prior,
    // which needs the image, can speak for that category.
    let cold = match &state.analyser.prior {
        Some(prior) => state
            .analyser
            .cold_categories(prior, None)
            .await
            .map_err(|e| ApiError::unavailable(e.code, e.message))?,
        None => Default::default(),
    };
    let (mut changed, mut unchanged, mut missing) = (0, 0, 0);
    for id in &ids {
        let (Some(item), Some(vector)) = (
            state.store.get_item(*id).await?,
            state.index.get_vector(*id).await?,
        ) else {
            missing += 1;
            continue;
        };
        let exclude = Exclude {
            id: *id,
            labelled: None,
        };
        let features = state.store.item_features(*id).await?;
        let prediction = state
            .analyser
            .classify(&vector, features.as_deref(), None, Some(&exclude))
            .await
            .map_err(|e| ApiError::unavailable(e.code, e.message))?;
        let keep = item.category.as_ref().is_some_and(|c| cold.contains(c));
        let (Some(prediction), false) = (prediction, keep) else {
            unchanged += 1;
            continue;
        };
        let (category, confidence, head_version) = (
            Some(prediction.category),
            Some(prediction.confidence),
            prediction.head_version,
        );
        if category == item.category
            && confidence == item.category_confidence
            && head_version == item.head_version
        {
            unchanged += 1;
            continue;
        }
        state
            .catalogue
            .set_predicted_category(&item, category, confidence, head_version)
            .await?;
        changed += 1;
    }
    tracing::info!(checked = ids.len(), changed, "reclassified predicted items");
    Ok(Json(Reclassified {
        checked: ids.len(),
        changed,
        unchanged,
        missing,
    }))
}
