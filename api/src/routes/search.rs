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
use lookalike_api_types::{
    Added, BoxParam, FilterParam, Grouping, PredictionView, QueryImage, Ranked, RecommendAnswer,
    RecommendParams, RecommendQuery, ScopeMode, SearchAnswer, SearchForm, SearchParams,
    SearchScope, SimilarAnswer, SimilarItem, SimilarQueryItem,
};
use lookalike_core::codes;
use lookalike_core::codes::{api, fields as field_codes, image, job, search as search_codes};
use lookalike_index::{CategoryFilter, FieldCondition, GroupBy, SearchRequest};
use lookalike_store::{CategorySource, NewJob, Source};
use lookalike_telemetry::{Stage, time_stage};
use lookalike_vision::Region;
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};
use utoipa::IntoParams;
use uuid::Uuid;

use crate::auth::{self, Caller};
use crate::docs::{
    Filters, Forbidden, InvalidId, ItemNotFound, ItemPath, Unauthorized, Unavailable, errors,
};
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

errors!(RecommendErrors {
    400 => "A body that is not a recommendation, or an example that is not an item id.",
        [api::INVALID_JSON, api::INVALID_ID],
    409 => "An example was embedded by another model than the one the service searches with: \
            re-index it first.",
        [api::ITEM_MODEL_MISMATCH],
    413 => "The body is over 64 KiB.", [api::PAYLOAD_TOO_LARGE],
    422 => "No positive example or more than 20 on a side, `k` out of range, or a filter that is not \
            a declared field or does not fit it.",
        [api::INVALID_PARAMETER, api::INVALID_K, field_codes::UNKNOWN_FILTER_FIELD,
         field_codes::INVALID_FILTER],
});

/// More like these stored items, less like those
///
/// Scope `read`. Ranks by the index's recommendation query (best score, the same in both index
/// backends, see `lookalike_index::Recommend`): a candidate nearer to some positive than to every
/// negative scores s(its best cosine to a positive), in (0, 1), with s(x) = (x / (1 + |x|) + 1) / 2;
/// any other scores -s(its best cosine to a negative), so it ranks last. The examples never appear
/// in the answer. `category=auto` (default) searches the positives' categories. Filters on declared
/// metadata fields are query parameters.
#[utoipa::path(
    post, path = "/v1/recommend", tag = "search", operation_id = "recommend", params(Filters),
    request_body = RecommendParams,
    responses(
        (status = 200, description = "The recommendations, best first.", body = RecommendAnswer),
        RecommendErrors, Unauthorized, Forbidden, ItemNotFound, Unavailable,
    ),
)]
pub(crate) async fn recommend(
    State(state): State<AppState>,
    Query(pairs): Query<Vec<(String, String)>>,
    request_body: Request,
) -> ApiResult<Json<RecommendAnswer>> {
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
                1 => Scope::one(ScopeMode::Auto, categories.remove(0)),
                _ => Scope {
                    mode: ScopeMode::Auto,
                    filter: CategoryFilter::AnyOf(categories.clone()),
                    categories: Some(categories),
                    low_confidence: false,
                },
            }
        }
        "any" => Scope::any(),
        name => Scope::one(ScopeMode::Category, name.to_string()),
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
        Grouping::None,
    )
    .await?;
    Ok(Json(RecommendAnswer {
        query: RecommendQuery {
            positive: params.positive,
            negative: params.negative,
        },
        search: scope.view(&pairs, &[], Grouping::None),
        results,
    }))
}

const MAX_K: usize = 100;
/// Deepest page of similar items: the index fetches `offset + k` candidates, so paging is bounded
/// like the depth of its search beam, not left to the caller.
const MAX_OFFSET: usize = 1000;

#[derive(Debug, Deserialize, Default, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SimilarQuery {
    /// How many results.
    #[param(minimum = 1, maximum = 100, default = 10)]
    k: Option<usize>,
    /// `auto`: the item's own category (everything if it has none); `any`: everything; otherwise
    /// that category.
    #[param(default = "auto")]
    category: Option<String>,
    /// Leave out results scoring below this (cosine).
    min_score: Option<f32>,
    /// Results to skip (paging); at most 1000 (422 invalid_parameter above).
    #[param(minimum = 0, maximum = 1000, default = 0)]
    offset: Option<usize>,
    /// `product`: one result per product (its best-matching image), `k` and `offset` count
    /// products, and the query item's own product is left out.
    #[param(default = "none")]
    group: Option<Grouping>,
    /// One result per near-duplicate group (its best-matching member), the query item's own group
    /// left out; not with `group=product`.
    #[param(default = false)]
    collapse: Option<bool>,
}

/// Which part of the catalogue a query searched, reported with every answer.
pub(crate) struct Scope {
    mode: ScopeMode,
    filter: CategoryFilter,
    categories: Option<Vec<String>>,
    low_confidence: bool,
}

impl Scope {
    pub(crate) fn any() -> Self {
        Scope {
            mode: ScopeMode::Any,
            filter: CategoryFilter::Any,
            categories: None,
            low_confidence: false,
        }
    }
    pub(crate) fn one(mode: ScopeMode, c: String) -> Self {
        Scope {
            mode,
            filter: CategoryFilter::One(c.clone()),
            categories: Some(vec![c]),
            low_confidence: false,
        }
    }
    /// The scope, with the filter parameters that narrowed the results (as the caller gave them:
    /// the query parameters other than the request's `own`).
    pub(crate) fn view(
        &self,
        pairs: &[(String, String)],
        own: &[&str],
        group: Grouping,
    ) -> SearchScope {
        SearchScope {
            group,
            mode: self.mode,
            categories: self.categories.clone(),
            low_confidence: self.low_confidence,
            filters: pairs
                .iter()
                .filter(|(k, _)| !own.contains(&k.as_str()))
                .map(|(k, v)| FilterParam {
                    param: k.clone(),
                    value: v.clone(),
                })
                .collect(),
        }
    }
}

/// `GET /v1/items/{id}/similar`'s own query parameters; the others are filters.
const SIMILAR_PARAMS: &[&str] = &["k", "category", "min_score", "offset", "group", "collapse"];

/// What one result stands for, from `group` and `collapse` (which cannot go together).
pub(crate) fn grouping(group: Option<Grouping>, collapse: bool) -> ApiResult<Grouping> {
    match (group.unwrap_or_default(), collapse) {
        (g, false) => Ok(g),
        (Grouping::None | Grouping::Duplicates, true) => Ok(Grouping::Duplicates),
        (Grouping::Product, true) => Err(ApiError::unprocessable(
            codes::api::INVALID_PARAMETER,
            "`collapse=true` cannot go with `group=product`: choose one result per product or per \
             duplicate group",
        )),
    }
}

pub(crate) fn check_k(k: Option<usize>) -> ApiResult<usize> {
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

errors!(SimilarErrors {
    409 => "The item was embedded by another model than the one the service searches with: re-index \
            it first.",
        [api::ITEM_MODEL_MISMATCH],
    422 => "`k` or `offset` out of range, or a filter that is not a declared field or does not fit it.",
        [api::INVALID_K, api::INVALID_PARAMETER, field_codes::UNKNOWN_FILTER_FIELD,
         field_codes::INVALID_FILTER],
});

/// The nearest stored items to a stored item, excluding itself
///
/// Scope `read`. Answered from the vector index alone.
#[utoipa::path(
    get, path = "/v1/items/{id}/similar", tag = "search", operation_id = "similarItems",
    params(ItemPath, SimilarQuery, Filters),
    responses(
        (status = 200, description = "The neighbours, best first.", body = SimilarAnswer),
        InvalidId, Unauthorized, Forbidden, ItemNotFound, SimilarErrors, Unavailable,
    ),
)]
pub(crate) async fn similar(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<SimilarQuery>,
    Query(pairs): Query<Vec<(String, String)>>,
) -> ApiResult<Json<SimilarAnswer>> {
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
            Some(c) => Scope::one(ScopeMode::Auto, c),
            None => Scope::any(),
        },
        "any" => Scope::any(),
        name => Scope::one(ScopeMode::Category, name.to_string()),
    };
    let group = grouping(q.group, q.collapse.unwrap_or(false))?;
    // Grouped, the item's own product (or duplicate group) is no answer to "more like this one":
    // its other images go too.
    let mut exclude = vec![id];
    let own = |by: GroupBy| {
        point
            .attrs
            .as_ref()
            .and_then(|a| a.get(by.attr()))
            .and_then(|p| p.as_str())
    };
    match group {
        Grouping::Product => {
            if let Some(product) = own(GroupBy::Product) {
                let items = state.store.product_items(product).await?;
                exclude.extend(items.iter().map(|i| i.id));
            }
        }
        Grouping::Duplicates => {
            if let Some(group) = own(GroupBy::Duplicate).and_then(|g| g.parse().ok()) {
                let members = state.store.duplicate_members(group).await?;
                exclude.extend(members.iter().map(|i| i.id));
            }
        }
        Grouping::None => {}
    }
    exclude.sort();
    exclude.dedup();
    let results = neighbours(
        &state,
        SearchRequest {
            vector: point.vector,
            offset,
            min_score: q.min_score,
            exclude,
            ..index_request(&state, &scope, &fields, k)
        },
        group,
    )
    .await?;
    Ok(Json(SimilarAnswer {
        query: SimilarQueryItem {
            item_id: id,
            category: point.category,
        },
        search: scope.view(&pairs, SIMILAR_PARAMS, group),
        results,
    }))
}

/// What every similarity query of the API asks the index: top `k` within the scope's categories,
/// among the vectors of the service's model, under the filters. Callers add the query itself.
pub(crate) fn index_request(
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

/// How many of a product's images a grouped result counts at most.
pub(crate) const MATCHED_PER_PRODUCT: usize = 10;

/// Runs the index query and renders each hit from what is stored with its vector. Points written
/// before vectors carried those attributes are joined with their rows in Postgres instead. Grouped
/// by product, each result is a product's best hit, with how many of its images matched and (one
/// Postgres query for the page) how many it has.
pub(crate) async fn neighbours(
    state: &AppState,
    request: SearchRequest,
    group: Grouping,
) -> ApiResult<Vec<SimilarItem>> {
    let _timed = time_stage(Stage::Search);
    let by = match group {
        Grouping::None => {
            let hits = state.index.search(request).await?;
            return render(state, &hits).await;
        }
        Grouping::Product => GroupBy::Product,
        Grouping::Duplicates => GroupBy::Duplicate,
    };
    let groups = state
        .index
        .search_groups(request, by, MATCHED_PER_PRODUCT)
        .await?;
    let best: Vec<_> = groups.iter().map(|g| g.hits[0].clone()).collect();
    let mut results = render(state, &best).await?;
    let matched: HashMap<Uuid, usize> = groups
        .iter()
        .map(|g| (g.hits[0].id, g.hits.len()))
        .collect();
    if by == GroupBy::Duplicate {
        for r in &mut results {
            r.duplicates_matched = matched.get(&r.item_id).copied();
        }
        return Ok(results);
    }
    let products: Vec<String> = groups.iter().filter_map(|g| g.key.clone()).collect();
    let sizes: HashMap<String, i64> = if products.is_empty() {
        HashMap::new()
    } else {
        state
            .store
            .product_summaries(&products)
            .await?
            .into_iter()
            .map(|p| (p.product_id, p.images))
            .collect()
    };
    for r in &mut results {
        r.matched_images = matched.get(&r.item_id).copied();
        r.product_images = r.product_id.as_ref().and_then(|p| sizes.get(p).copied());
    }
    Ok(results)
}

/// Each hit as a result, from its attrs (or its row, for points stored before attrs existed).
pub(crate) async fn render(
    state: &AppState,
    hits: &[lookalike_index::Hit],
) -> ApiResult<Vec<SimilarItem>> {
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

/// The region a `box` names: `"x,y,w,h"` (or `[x, y, w, h]` in JSON), fractions of the upright image.
fn region(param: &BoxParam) -> ApiResult<Region> {
    let parsed = match param {
        BoxParam::Text(text) => Region::parse(text),
        BoxParam::Numbers(v) => match v.as_slice() {
            &[x, y, w, h] => Region::new(x, y, w, h),
            _ => Err("box must be four numbers [x, y, w, h]".to_string()),
        },
    };
    parsed.map_err(|e| ApiError::unprocessable(search_codes::INVALID_BOX, e))
}

errors!(SearchErrors {
    400 => "Malformed body (unknown JSON fields are `invalid_json`).",
        [api::INVALID_JSON, api::INVALID_MULTIPART],
    403 => "The key lacks `read`, or `add=true` without `write`.",
        [lookalike_core::codes::auth::FORBIDDEN_SCOPE],
    404 => "`exclude` names no item.", [api::ITEM_NOT_FOUND],
    409 => "`add=true` conflicted with stored data.", [api::CONFLICT],
    413 => "A JSON body over 64 KiB, a form over `http.max_body_bytes` (25 MiB), or an image over \
            `http.max_upload_bytes` (20 MiB).",
        [api::PAYLOAD_TOO_LARGE, api::UPLOAD_TOO_LARGE],
    415 => "Neither multipart nor JSON.", [api::UNSUPPORTED_MEDIA_TYPE],
    422 => "Bad parameters, no image or both a file and a url, or an image that cannot be used (the \
            job failure codes: `url_*`, `fetch_*`, `image_*`).",
        [api::INVALID_K, api::INVALID_PARAMETER, api::NO_IMAGE, api::AMBIGUOUS_QUERY,
         api::UNKNOWN_FIELD, job::URL_INVALID, job::URL_FORBIDDEN, job::FETCH_HTTP_STATUS,
         job::FETCH_TOO_LARGE, job::FETCH_TOO_MANY_REDIRECTS, image::EMPTY,
         image::UNSUPPORTED_FORMAT, image::TRUNCATED, image::CORRUPT, image::TOO_LARGE,
         job::INFERENCE_FAILED, job::INDEX_REJECTED, field_codes::UNKNOWN_FILTER_FIELD,
         field_codes::INVALID_FILTER, search_codes::INVALID_BOX, search_codes::BOX_TOO_SMALL],
    503 => "Transient trouble: the image URL timed out, could not be reached or answered \
            5xx/408/429; the model, the database or the index failed.",
        [job::FETCH_TIMEOUT, job::FETCH_CONNECT, job::FETCH_HTTP_STATUS, job::INFERENCE_FAILED,
         job::DATABASE_UNAVAILABLE, job::INDEX_UNAVAILABLE, job::INDEX_MISCONFIGURED],
});

/// Search by image: uploaded (multipart) or by URL (JSON)
///
/// Scope `read`; with `add=true` also `write` (it stores the image as a new item). The image is
/// cleaned, embedded and classified on the spot. With `category=auto` the search covers the
/// predicted category; when the prediction is below `classify.min_confidence` (0.6) it covers the
/// best categories until they hold `classify.cover` (0.9) of the probability, at most
/// `classify.max_categories` (3), and says `low_confidence: true`. Filters on declared metadata fields
/// are query parameters (`POST /v1/search?brand=acme`); they narrow the results, never the
/// classification. The search's own settings (`k`, `category`, ...) go in the body. With `box`
/// (`x,y,w,h`, fractions of the upright image, after EXIF orientation) only that region is embedded
/// and classified: the image is decoded at a size that leaves the region's shorter side at the
/// model's input size or more; a region under 32 pixels on a side is 422 box_too_small.
#[utoipa::path(
    post, path = "/v1/search", tag = "search", operation_id = "searchByImage", params(Filters),
    request_body(content(
        (SearchForm = "multipart/form-data"),
        (SearchParams = "application/json"),
    )),
    responses(
        (status = 200, description = "The prediction, what was searched, the results and, with \
            `add=true`, the stored item.", body = SearchAnswer),
        Unauthorized, SearchErrors,
    ),
)]
pub(crate) async fn search(
    State(state): State<AppState>,
    Query(pairs): Query<Vec<(String, String)>>,
    request: Request,
) -> ApiResult<Json<SearchAnswer>> {
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
    let group = grouping(params.group, params.collapse)?;
    let region = params.region.as_ref().map(region).transpose()?;
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
    // Only an added image needs its hash (a megapixel JPEG's SHA-256 is a few milliseconds).
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
        .timed_classify(
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
                    mode: ScopeMode::Auto,
                    filter,
                    categories: Some(categories),
                    low_confidence: widened,
                }
            }
            None => Scope::any(),
        },
        "any" => Scope::any(),
        name => Scope::one(ScopeMode::Category, name.to_string()),
    };
    let results = neighbours(
        &state,
        SearchRequest {
            vector: analysis.embedding.clone(),
            min_score: params.min_score,
            exclude: params.exclude.into_iter().collect(),
            ..index_request(&state, &scope, &fields, k)
        },
        group,
    )
    .await?;

    let (width, height) = (analysis.width, analysis.height);
    let added = match (stored_bytes, &prediction) {
        (Some(bytes), p) => {
            let (sha, size) = (hex::encode(Sha256::digest(&bytes)), bytes.len());
            Some(add_query_image(&state, bytes, file_name, analysis, p.clone(), sha, size).await?)
        }
        (None, _) => None,
    };
    Ok(Json(SearchAnswer {
        prediction: prediction_view(prediction.as_ref()),
        query: QueryImage {
            region: region.map(|r| r.as_array()),
            width,
            height,
        },
        search: scope.view(&pairs, &[], group),
        results,
        added,
    }))
}

fn prediction_view(p: Option<&Prediction>) -> PredictionView {
    match p {
        None => PredictionView {
            category: None,
            confidence: None,
            top: Vec::new(),
            method: "none".into(),
            head_version: None,
        },
        Some(p) => PredictionView {
            category: Some(p.category.clone()),
            confidence: Some(p.confidence),
            top: p
                .ranking
                .iter()
                .take(3)
                .map(|(c, w)| Ranked {
                    category: c.clone(),
                    confidence: *w,
                })
                .collect(),
            method: method(p),
            head_version: p.head_version,
        },
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
) -> ApiResult<Added> {
    let job = NewJob {
        id: Uuid::now_v7(),
        source: Source::Upload {
            file_name,
            content_type: None,
            bytes,
        },
        external_id: None,
        product_id: None,
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
    Ok(Added {
        item_id: id,
        job_id: id,
        item_url: views::item_link(id),
    })
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
            "group" => {
                params.group = Some(match text.trim() {
                    "" | "none" => Grouping::None,
                    "product" => Grouping::Product,
                    _ => return Err(bad("`none` or `product`")),
                })
            }
            "collapse" => params.collapse = matches!(text.trim(), "true" | "1" | "on" | "yes"),
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
