//! Similarity queries, always within a category unless asked otherwise:
//! - `GET /v1/items/{id}/similar`: neighbours of a stored item;
//! - `POST /v1/search`: an uploaded image (or a URL; or a `box` of it) is cleaned, embedded and
//!   classified on the spot, then searched within its predicted category (or the best few when the
//!   prediction is unsure);
//! - `POST /v1/recommend`: more like these stored items, less like those.
//!
//! All of them take filters on declared metadata fields as query parameters (`routes::fields`).

use std::collections::HashMap;

use axum::extract::{FromRequest, Multipart, Path, Request, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use lookalike_analysis::batcher::Priority;
use lookalike_analysis::classify::{Prediction, categories_to_search};
use lookalike_analysis::{Analysis, CategoryDecision, Exclude};
use lookalike_core::codes;
use lookalike_index::{CategoryFilter, FieldCondition, SearchRequest};
use lookalike_store::{CategorySource, NewJob, Source};
use lookalike_vision::Region;
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::auth::{self, Caller};
use crate::extract::Query;
use crate::routes::fields::filters;
use crate::routes::{multipart_error, parse_id};
use crate::{ApiError, ApiResult, AppState, views};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/items/{id}/similar", get(similar))
        .route("/v1/search", post(search))
        .route("/v1/recommend", post(recommend))
}

/// Examples one recommendation may name, each side.
const MAX_EXAMPLES: usize = 20;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RecommendParams {
    positive: Vec<String>,
    #[serde(default)]
    negative: Vec<String>,
    k: Option<usize>,
    /// `auto` (default): the positives' categories; `any`; or a category name.
    category: Option<String>,
}

/// `POST /v1/recommend`: more like these stored items, less like those, through the index's own
/// recommendation query (best score, see `lookalike_index::Recommend`). The examples never appear
/// in the answer. Filters are query parameters, as for every similarity query.
async fn recommend(
    State(state): State<AppState>,
    Query(pairs): Query<Vec<(String, String)>>,
    request_body: Request,
) -> ApiResult<Json<Value>> {
    let fields = filters(&state, &pairs, &[])?;
    let body = axum::body::to_bytes(request_body.into_body(), 64 * 1024)
        .await
        .map_err(|_| {
            ApiError::too_large(
                codes::api::PAYLOAD_TOO_LARGE,
                "the JSON body is over 64 KiB",
            )
        })?;
    let params: RecommendParams = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(
            codes::api::INVALID_JSON,
            format!("the body is not a recommendation ({{\"positive\": [ids], \"negative\": [ids]}}): {e}"),
        )
    })?;
    let k = check_k(params.k)?;
    if params.positive.is_empty()
        || params.positive.len() > MAX_EXAMPLES
        || params.negative.len() > MAX_EXAMPLES
    {
        return Err(ApiError::unprocessable(
            codes::api::INVALID_PARAMETER,
            format!(
                "give 1 to {MAX_EXAMPLES} `positive` item ids and at most {MAX_EXAMPLES} `negative` ones"
            ),
        ));
    }
    let model = &state.config.model.id;
    let mut examples = Vec::new();
    for (side, ids) in [
        ("positive", &params.positive),
        ("negative", &params.negative),
    ] {
        for raw in ids {
            let id = parse_id(raw, "item")?;
            let point = state.index.get_point(id).await?.ok_or_else(|| {
                ApiError::not_found(
                    codes::api::ITEM_NOT_FOUND,
                    format!("no item {id} (in `{side}`)"),
                )
            })?;
            if point.model_id.as_deref().is_some_and(|m| m != model) {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    codes::api::ITEM_MODEL_MISMATCH,
                    format!(
                        "item {id} was embedded by another model than {model}: re-index it first"
                    ),
                ));
            }
            examples.push((side, id, point));
        }
    }
    let scope = match params.category.as_deref().unwrap_or("auto") {
        "auto" => {
            let mut categories: Vec<String> = examples
                .iter()
                .filter(|(side, _, _)| *side == "positive")
                .filter_map(|(_, _, p)| p.category.clone())
                .collect();
            categories.sort();
            categories.dedup();
            match categories.len() {
                0 => Scope::any(),
                1 => Scope::one("auto", categories.remove(0)),
                _ => Scope {
                    mode: "auto",
                    filter: CategoryFilter::AnyOf(categories.clone()),
                    categories: Some(categories),
                    low_confidence: false,
                },
            }
        }
        "any" => Scope::any(),
        name => Scope::one("category", name.to_string()),
    };
    let ids: Vec<Uuid> = examples.iter().map(|(_, id, _)| *id).collect();
    let (mut positive, mut negative) = (Vec::new(), Vec::new());
    for (side, _, point) in examples {
        if side == "positive" {
            positive.push(point.vector);
        } else {
            negative.push(point.vector);
        }
    }
    let results = neighbours(
        &state,
        SearchRequest {
            exclude: ids,
            recommend: Some(lookalike_index::Recommend { positive, negative }),
            ..index_request(&state, &scope, &fields, k)
        },
    )
    .await?;
    Ok(Json(json!({
        "query": {"positive": params.positive, "negative": params.negative},
        "search": scope.json_with(&pairs, &[]),
        "results": results,
    })))
}

const MAX_K: usize = 100;
/// Deepest page of similar items: the index fetches `offset + k` candidates, so paging is bounded
/// like the depth of its search beam, not left to the caller.
const MAX_OFFSET: usize = 1000;

#[derive(Debug, Deserialize, Default)]
pub struct SimilarQuery {
    k: Option<usize>,
    /// `auto` (default), `any`, or a category name.
    category: Option<String>,
    min_score: Option<f32>,
    offset: Option<usize>,
}

/// Which part of the catalogue a query searched, reported with every answer.
struct Scope {
    mode: &'static str,
    filter: CategoryFilter,
    categories: Option<Vec<String>>,
    low_confidence: bool,
}

impl Scope {
    fn any() -> Self {
        Scope {
            mode: "any",
            filter: CategoryFilter::Any,
            categories: None,
            low_confidence: false,
        }
    }
    fn one(mode: &'static str, c: String) -> Self {
        Scope {
            mode,
            filter: CategoryFilter::One(c.clone()),
            categories: Some(vec![c]),
            low_confidence: false,
        }
    }
    /// The scope, with the filter parameters that narrowed the results (as the caller gave them:
    /// the query parameters other than the request's `own`).
    fn json_with(&self, pairs: &[(String, String)], own: &[&str]) -> Value {
        let filters: Vec<Value> = pairs
            .iter()
            .filter(|(k, _)| !own.contains(&k.as_str()))
            .map(|(k, v)| json!({"param": k, "value": v}))
            .collect();
        json!({
            "mode": self.mode,
            "categories": self.categories,
            "low_confidence": self.low_confidence,
            "filters": filters,
        })
    }
}

/// `GET /v1/items/{id}/similar`'s own query parameters; the others are filters.
const SIMILAR_PARAMS: &[&str] = &["k", "category", "min_score", "offset"];

fn check_k(k: Option<usize>) -> ApiResult<usize> {
    match k.unwrap_or(10) {
        0 => Err(ApiError::unprocessable(
            codes::api::INVALID_K,
            "k must be at least 1",
        )),
        k if k > MAX_K => Err(ApiError::unprocessable(
            codes::api::INVALID_K,
            format!("k must be at most {MAX_K}"),
        )),
        k => Ok(k),
    }
}

async fn similar(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<SimilarQuery>,
    Query(pairs): Query<Vec<(String, String)>>,
) -> ApiResult<Json<Value>> {
    let id = parse_id(&id, "item")?;
    let fields = filters(&state, &pairs, SIMILAR_PARAMS)?;
    let k = check_k(q.k)?;
    let offset = q.offset.unwrap_or(0);
    if offset > MAX_OFFSET {
        return Err(ApiError::unprocessable(
            codes::api::INVALID_PARAMETER,
            format!("offset must be at most {MAX_OFFSET}"),
        ));
    }
    // The index alone answers: the query item's vector and category, then its neighbours with what a
    // result shows (kept with each vector), so the hot path never waits for Postgres.
    let point =
        state.index.get_point(id).await?.ok_or_else(|| {
            ApiError::not_found(codes::api::ITEM_NOT_FOUND, format!("no item {id}"))
        })?;
    let model = &state.config.model.id;
    if point.model_id.as_deref().is_some_and(|m| m != model) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            codes::api::ITEM_MODEL_MISMATCH,
            format!(
                "item {id} was embedded by model {:?}, the service searches with {model}: \
                 re-index it first",
                point.model_id.as_deref().unwrap_or("-")
            ),
        ));
    }
    let scope = match q.category.as_deref().unwrap_or("auto") {
        "auto" => match point.category.clone() {
            Some(c) => Scope::one("auto", c),
            None => Scope::any(),
        },
        "any" => Scope::any(),
        name => Scope::one("category", name.to_string()),
    };
    let results = neighbours(
        &state,
        SearchRequest {
            vector: point.vector,
            offset,
            min_score: q.min_score,
            exclude: vec![id],
            ..index_request(&state, &scope, &fields, k)
        },
    )
    .await?;
    Ok(Json(json!({
        "query": {"item_id": id, "category": point.category},
        "search": scope.json_with(&pairs, SIMILAR_PARAMS),
        "results": results,
    })))
}

/// What every similarity query of the API asks the index: top `k` within the scope's categories,
/// among the vectors of the service's model, under the filters. Callers add the query itself.
fn index_request(
    state: &AppState,
    scope: &Scope,
    fields: &[FieldCondition],
    k: usize,
) -> SearchRequest {
    SearchRequest {
        filter: scope.filter.clone(),
        model_id: Some(state.config.model.id.clone()),
        fields: fields.to_vec(),
        ..SearchRequest::new(Vec::new(), k)
    }
}

/// Runs the index query and renders each hit from what is stored with its vector. Points written
/// before vectors carried those attributes are joined with their rows in Postgres instead.
async fn neighbours(state: &AppState, request: SearchRequest) -> ApiResult<Vec<Value>> {
    let hits = state.index.search(request).await?;
    let missing: Vec<Uuid> = hits
        .iter()
        .filter(|h| h.attrs.is_none())
        .map(|h| h.id)
        .collect();
    let rows: HashMap<Uuid, lookalike_store::Item> = if missing.is_empty() {
        HashMap::new()
    } else {
        state
            .store
            .get_items(&missing)
            .await?
            .into_iter()
            .map(|i| (i.id, i))
            .collect()
    };
    // A hit whose row was deleted a moment ago is skipped rather than shown half-empty.
    Ok(hits
        .iter()
        .filter_map(|h| match &h.attrs {
            Some(attrs) => Some(views::hit(h, attrs)),
            None => rows.get(&h.id).map(|item| views::result(item, h.score)),
        })
        .collect())
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct SearchParams {
    url: Option<String>,
    k: Option<usize>,
    category: Option<String>,
    min_score: Option<f32>,
    #[serde(default)]
    add: bool,
    /// Leave this stored item out of the classification and the results (leave-one-out evaluation).
    exclude: Option<Uuid>,
    /// Search with this region of the photo only: `"x,y,w,h"` (or `[x, y, w, h]` in JSON), fractions
    /// of the upright image.
    #[serde(rename = "box")]
    region: Option<BoxParam>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum BoxParam {
    Text(String),
    Numbers(Vec<f32>),
}

impl BoxParam {
    fn region(&self) -> ApiResult<Region> {
        let parsed = match self {
            BoxParam::Text(text) => Region::parse(text),
            BoxParam::Numbers(v) => match v.as_slice() {
                &[x, y, w, h] => Region::new(x, y, w, h),
                _ => Err("box must be four numbers [x, y, w, h]".to_string()),
            },
        };
        parsed.map_err(|e| ApiError::unprocessable(codes::search::INVALID_BOX, e))
    }
}

async fn search(
    State(state): State<AppState>,
    Query(pairs): Query<Vec<(String, String)>>,
    request: Request,
) -> ApiResult<Json<Value>> {
    // Filters are query parameters here too (the body holds the image and the search's own
    // settings), so every parameter of the query string must be a declared field.
    let fields = filters(&state, &pairs, &[])?;
    let caller = request.extensions().get::<Caller>().cloned();
    let content_type = crate::routes::content_type(&request);
    let (params, upload) = if content_type.starts_with("multipart/form-data") {
        let multipart = Multipart::from_request(request, &state)
            .await
            .map_err(|e| ApiError::bad_request(codes::api::INVALID_MULTIPART, e.body_text()))?;
        read_form(&state, multipart).await?
    } else if content_type.starts_with("application/json") {
        let body = axum::body::to_bytes(request.into_body(), 64 * 1024)
            .await
            .map_err(|_| {
                ApiError::too_large(
                    codes::api::PAYLOAD_TOO_LARGE,
                    "the JSON body is over 64 KiB",
                )
            })?;
        let params: SearchParams = serde_json::from_slice(&body).map_err(|e| {
            ApiError::bad_request(
                codes::api::INVALID_JSON,
                format!("the body is not a valid search: {e}"),
            )
        })?;
        (params, None)
    } else {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            codes::api::UNSUPPORTED_MEDIA_TYPE,
            "send multipart/form-data with a `file`, or application/json with {\"url\": ...}",
        ));
    };
    if params.add {
        // Only the body says whether this query also ingests, so the middleware could only check `read`.
        auth::require(
            caller.as_ref(),
            lookalike_core::config::Scope::Write,
            "POST /v1/search with `add=true`",
        )?;
    }
    let k = check_k(params.k)?;
    let region = params.region.as_ref().map(BoxParam::region).transpose()?;
    if region.is_some() && params.add {
        return Err(ApiError::unprocessable(
            codes::search::INVALID_BOX,
            "`box` cannot go with `add=true`: the catalogue stores whole images",
        ));
    }
    let (bytes, file_name) = match (upload, &params.url) {
        (Some((bytes, name)), None) => (bytes, name),
        (None, Some(url)) => (state.analyser.fetcher.fetch(url).await?, None),
        (Some(_), Some(_)) => {
            return Err(ApiError::unprocessable(
                codes::api::AMBIGUOUS_QUERY,
                "give a file or a url, not both",
            ));
        }
        (None, None) => {
            return Err(ApiError::unprocessable(
                codes::api::NO_IMAGE,
                "give a `file` part or a `url`",
            ));
        }
    };
    let (sha, size) = (hex::encode(Sha256::digest(&bytes)), bytes.len());
    let stored_bytes = params.add.then(|| bytes.clone());
    let analysis = state
        .analyser
        .analyse_region(bytes, params.add, region, Priority::Search)
        .await?;

    let exclude = match params.exclude {
        Some(id) => Some(exclusion(&state, id).await?),
        None => None,
    };
    let prediction = state
        .analyser
        .classify(
            &analysis.embedding,
            analysis.features.as_deref(),
            analysis.prior.as_ref(),
            exclude.as_ref(),
        )
        .await?;
    let c = &state.config.classify;
    let scope = match params.category.as_deref().unwrap_or("auto") {
        "auto" => match &prediction {
            Some(p) => {
                let (categories, widened) =
                    categories_to_search(p, c.min_confidence, c.cover, c.max_categories);
                let filter = if widened {
                    CategoryFilter::AnyOf(categories.clone())
                } else {
                    CategoryFilter::One(categories[0].clone())
                };
                Scope {
                    mode: "auto",
                    filter,
                    categories: Some(categories),
                    low_confidence: widened,
                }
            }
            None => Scope::any(),
        },
        "any" => Scope::any(),
        name => Scope::one("category", name.to_string()),
    };
    let results = neighbours(
        &state,
        SearchRequest {
            vector: analysis.embedding.clone(),
            min_score: params.min_score,
            exclude: params.exclude.into_iter().collect(),
            ..index_request(&state, &scope, &fields, k)
        },
    )
    .await?;

    let (width, height) = (analysis.width, analysis.height);
    let added = match (stored_bytes, &prediction) {
        (Some(bytes), p) => {
            Some(add_query_image(&state, bytes, file_name, analysis, p.clone(), sha, size).await?)
        }
        (None, _) => None,
    };
    Ok(Json(json!({
        "prediction": prediction_json(prediction.as_ref()),
        "query": {
            "box": region.map(|r| r.as_array()),
            "width": width,
            "height": height,
        },
        "search": scope.json_with(&pairs, &[]),
        "results": results,
        "added": added,
    })))
}

fn prediction_json(p: Option<&Prediction>) -> Value {
    match p {
        None => {
            json!({"category": null, "confidence": null, "top": [], "method": "none", "head_version": null})
        }
        Some(p) => json!({
            "category": p.category,
            "confidence": p.confidence,
            "top": p.ranking.iter().take(3).map(|(c, w)| json!({"category": c, "confidence": w})).collect::<Vec<_>>(),
            "method": method(p),
            "head_version": p.head_version,
        }),
    }
}

/// Which parts of the classifier spoke: the trained head (when there is one and it may be used),
/// always the neighbours and prototypes, and the cold-start prior when it did.
fn method(p: &Prediction) -> String {
    let mut parts = Vec::new();
    if p.head_version.is_some() {
        parts.push("head");
    }
    parts.push("neighbours+prototypes");
    if p.used_prior {
        parts.push("prior");
    }
    parts.join("+")
}

async fn exclusion(state: &AppState, id: Uuid) -> ApiResult<Exclude> {
    let item = crate::routes::load_item(state, id).await?;
    let labelled = match (item.category_source, item.category) {
        (CategorySource::Provided, Some(category)) => {
            state.index.get_vector(id).await?.map(|v| (category, v))
        }
        _ => None,
    };
    Ok(Exclude { id, labelled })
}

/// `add=true`: the query image joins the catalogue with its predicted category (queries grow it).
async fn add_query_image(
    state: &AppState,
    bytes: Vec<u8>,
    file_name: Option<String>,
    analysis: Analysis,
    prediction: Option<Prediction>,
    sha: String,
    size: usize,
) -> ApiResult<Value> {
    let job = NewJob {
        id: Uuid::now_v7(),
        source: Source::Upload {
            file_name,
            content_type: None,
            bytes,
        },
        external_id: None,
        category: None,
        metadata: json!({"added_by": "search"}),
    };
    let id = job.id;
    let decision = prediction.map_or(CategoryDecision::None, CategoryDecision::Predicted);
    let item = analysis.into_item(&decision, sha, size, state.analyser.model_id());
    state
        .catalogue
        .add_finished(job, item)
        .await
        .map_err(lookalike_analysis::Failure::from)?;
    Ok(json!({"item_id": id, "job_id": id, "item_url": views::item_link(id)}))
}

async fn read_form(
    state: &AppState,
    mut multipart: Multipart,
) -> ApiResult<(SearchParams, Option<(Vec<u8>, Option<String>)>)> {
    let mut params = SearchParams::default();
    let mut upload = None;
    let cap = state.config.http.max_upload_bytes;
    while let Some(mut field) = multipart.next_field().await.map_err(multipart_error)? {
        let name = field.name().unwrap_or("").to_string();
        if matches!(name.as_str(), "file" | "image") {
            let file_name = field.file_name().map(str::to_string);
            let mut bytes = Vec::new();
            while let Some(chunk) = field.chunk().await.map_err(multipart_error)? {
                if bytes.len() + chunk.len() > cap {
                    return Err(ApiError::too_large(
                        codes::api::UPLOAD_TOO_LARGE,
                        format!("the image is over {cap} bytes"),
                    ));
                }
                bytes.extend_from_slice(&chunk);
            }
            upload = Some((bytes, file_name));
            continue;
        }
        let text = field.text().await.map_err(multipart_error)?;
        let bad = |what: &str| {
            ApiError::unprocessable(
                codes::api::INVALID_PARAMETER,
                format!("`{name}` must be {what}"),
            )
        };
        match name.as_str() {
            "url" => params.url = Some(text),
            "k" => params.k = Some(text.trim().parse().map_err(|_| bad("a whole number"))?),
            "category" => params.category = Some(text.trim().to_string()).filter(|c| !c.is_empty()),
            "min_score" => {
                params.min_score = Some(text.trim().parse().map_err(|_| bad("a number"))?)
            }
            "add" => params.add = matches!(text.trim(), "true" | "1" | "on" | "yes"),
            "exclude" => params.exclude = Some(text.trim().parse().map_err(|_| bad("an item id"))?),
            // An empty field is what a form sends when no box was drawn.
            "box" if text.trim().is_empty() => {}
            "box" => params.region = Some(BoxParam::Text(text)),
            other => {
                return Err(ApiError::unprocessable(
                    codes::api::UNKNOWN_FIELD,
                    format!("unknown form field `{other}`"),
                ));
            }
        }
    }
    Ok((params, upload))
}
