//! The catalogue: categories with counts, item pages, deletion and re-classification.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use lookalike_analysis::Exclude;
use lookalike_analysis::heads::{self, Reason, TrainOutcome};
use lookalike_core::codes;
use serde::Deserialize;
use serde_json::{Value, json};

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

/// Trains the classifier head on every labelled item now (normally a worker does it when the labels
/// changed enough). Stored predictions stay as they are until `POST /v1/reclassify`.
async fn train(State(state): State<AppState>) -> ApiResult<(StatusCode, Json<Value>)> {
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
        TrainOutcome::Trained(head) => Ok((StatusCode::OK, Json(head.summary()))),
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

async fn categories(State(state): State<AppState>) -> ApiResult<Json<Value>> {
    let counts = state.store.category_counts().await?;
    let uncategorised = counts
        .iter()
        .filter(|c| c.name.is_none())
        .map(|c| c.items)
        .sum::<i64>();
    let categories: Vec<Value> = counts
        .iter()
        .filter_map(|c| {
            c.name
                .as_ref()
                .map(|n| json!({"name": n, "items": c.items, "labelled": c.labelled}))
        })
        .collect();
    Ok(Json(
        json!({"categories": categories, "uncategorised": uncategorised}),
    ))
}

#[derive(Deserialize)]
struct ListQuery {
    category: Option<String>,
    limit: Option<i64>,
    offset: Option<i64>,
}

async fn list(
    State(state): State<AppState>,
    Query(q): Query<ListQuery>,
    Query(pairs): Query<Vec<(String, String)>>,
) -> ApiResult<Json<Value>> {
    let fields = crate::routes::fields::filters(&state, &pairs, &["category", "limit", "offset"])?;
    let limit = q.limit.unwrap_or(24).clamp(1, 200);
    let offset = q.offset.unwrap_or(0).max(0);
    let category = q.category.as_deref().filter(|c| !c.is_empty());
    let (items, total) = state
        .store
        .list_items(category, &fields, limit, offset)
        .await?;
    Ok(Json(json!({
        "items": items.iter().map(views::item).collect::<Vec<_>>(),
        "total": total,
        "limit": limit,
        "offset": offset,
    })))
}

/// Removes the item, its vector and its thumbnail (`Catalogue::delete`: the vector first).
pub async fn delete(
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

/// Re-predicts the category of every item whose category was predicted (or missing), from the labels
/// as they are now. Provided categories are never touched. Runs on request, never by surprise.
async fn reclassify(State(state): State<AppState>) -> ApiResult<Json<Value>> {
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
    Ok(Json(
        json!({"checked": ids.len(), "changed": changed, "unchanged": unchanged, "missing": missing}),
    ))
}
