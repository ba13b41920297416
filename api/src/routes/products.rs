//! Products: the images that name one `product_id`, listed, shown, deleted and searched from as a
//! whole. A product exists while one of its images does (`lookalike_store::products`).

use std::collections::HashMap;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use lookalike_api_types::{
    Combine, Grouping, Product, ProductPage, ProductQuery, ProductSimilarAnswer, ScopeMode,
};
use lookalike_core::codes::{self, api, fields as field_codes};
use lookalike_index::{GroupBy, Hit, SearchRequest};
use serde::Deserialize;
use serde_json::{Map, Value};
use utoipa::IntoParams;

use crate::docs::{Filters, Forbidden, Unauthorized, Unavailable, errors};
use crate::extract::Query;
use crate::routes::fields::filters;
use crate::routes::search::{Scope, check_k, index_request, neighbours};
use crate::{ApiError, ApiResult, AppState, views};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/products", get(list))
        .route("/v1/products/{id}", get(show).delete(delete))
        .route("/v1/products/{id}/similar", get(similar))
}

errors!(ProductNotFound { 404 => "No item names this product.", [api::PRODUCT_NOT_FOUND] });

/// `params(ProductPath)`: the `{id}` of a product path, as submitted in `product_id`.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub(crate) struct ProductPath {
    /// A product id (percent-encode characters that are not allowed in a path segment).
    #[allow(dead_code)]
    id: String,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ListQuery {
    /// Only products of this category (their own, decided by most of their images); empty means all.
    category: Option<String>,
    /// Page size; values outside 1–200 are clamped.
    #[param(minimum = 1, maximum = 200, default = 24)]
    limit: Option<i64>,
    /// Products to skip; a negative value counts as 0.
    #[param(minimum = 0, default = 0)]
    offset: Option<i64>,
}

/// A page of products, newest first, with the total
///
/// Scope `read`. A product's category is the one most of its images have (a tie goes to the one with
/// more provided labels, then by name); `categories` above 1 says its images disagree. Images that
/// name no product are not listed here (`GET /v1/items` lists every image).
#[utoipa::path(
    get, path = "/v1/products", tag = "catalogue", operation_id = "listProducts", params(ListQuery),
    responses(
        (status = 200, description = "The page.", body = ProductPage),
        Unauthorized, Forbidden, Unavailable,
    ),
)]
pub(crate) async fn list(
    State(state): State<AppState>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<ProductPage>> {
    let limit = q.limit.unwrap_or(24).clamp(1, 200);
    let offset = q.offset.unwrap_or(0).max(0);
    let category = q.category.as_deref().filter(|c| !c.is_empty());
    let (products, total) = state.store.list_products(category, limit, offset).await?;
    Ok(Json(ProductPage {
        products: products.iter().map(views::product_summary).collect(),
        total,
        limit,
        offset,
    }))
}

/// One product: its category, its images and their metadata merged
///
/// Scope `read`. Its images come in the order they were first submitted; `metadata` merges theirs in
/// that order, so a later image's value wins.
#[utoipa::path(
    get, path = "/v1/products/{id}", tag = "catalogue", operation_id = "getProduct",
    params(ProductPath),
    responses(
        (status = 200, description = "The product.", body = Product),
        Unauthorized, Forbidden, ProductNotFound, Unavailable,
    ),
)]
pub(crate) async fn show(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Product>> {
    let (summary, items) = load(&state, &id).await?;
    let mut metadata = Map::new();
    for item in &items {
        if let Value::Object(m) = &item.metadata {
            metadata.extend(m.clone());
        }
    }
    Ok(Json(Product {
        summary: views::product_summary(&summary),
        metadata: Value::Object(metadata),
        items: items.iter().map(views::item).collect(),
    }))
}

/// The product's summary and images, or 404 `product_not_found`.
async fn load(
    state: &AppState,
    id: &str,
) -> ApiResult<(lookalike_store::ProductSummary, Vec<lookalike_store::Item>)> {
    let not_found = || {
        ApiError::not_found(
            codes::api::PRODUCT_NOT_FOUND,
            format!("no item names product `{id}`"),
        )
    };
    let items = state.store.product_items(id).await?;
    if items.is_empty() {
        return Err(not_found());
    }
    let summary = state
        .store
        .product_summaries(&[id.to_string()])
        .await?
        .pop()
        .ok_or_else(not_found)?;
    Ok((summary, items))
}

/// Remove every image of the product (items, vectors, thumbnails)
///
/// Scope `write`. Each image goes as `DELETE /v1/items/{id}` removes it (vector first); an image
/// submitted for the product while this runs is not removed.
#[utoipa::path(
    delete, path = "/v1/products/{id}", tag = "catalogue", operation_id = "deleteProduct",
    params(ProductPath),
    responses(
        (status = 204, description = "Removed."),
        Unauthorized, Forbidden, ProductNotFound, Unavailable,
    ),
)]
pub(crate) async fn delete(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let items = state.store.product_items(&id).await?;
    let mut deleted = 0;
    for item in &items {
        if state.catalogue.delete(item.id).await? {
            deleted += 1;
        }
    }
    if deleted == 0 {
        return Err(ApiError::not_found(
            codes::api::PRODUCT_NOT_FOUND,
            format!("no item names product `{id}`"),
        ));
    }
    tracing::info!(product_id = %id, images = deleted, "product deleted");
    Ok(StatusCode::NO_CONTENT)
}

/// Images of one product a similarity query reads at most (the first submitted).
const MAX_QUERY_IMAGES: usize = 50;

#[derive(Debug, Deserialize, Default, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SimilarQuery {
    /// How many results (products, unless `group=none`).
    #[param(minimum = 1, maximum = 100, default = 10)]
    k: Option<usize>,
    /// `auto`: the product's own category (everything if it has none); `any`: everything; otherwise
    /// that category.
    #[param(default = "auto")]
    category: Option<String>,
    /// Leave out results scoring below this (cosine).
    min_score: Option<f32>,
    /// `product` (default): one result per product; `none`: one per image.
    #[param(default = "product")]
    group: Option<Grouping>,
    /// How the product's images make one query: `mean` (default) or `max`.
    #[param(default = "mean")]
    combine: Option<Combine>,
}

const SIMILAR_PARAMS: &[&str] = &["k", "category", "min_score", "group", "combine"];

errors!(SimilarErrors {
    409 => "None of the product's images has a vector of the service's model: re-index first.",
        [api::ITEM_MODEL_MISMATCH],
    422 => "`k` out of range, or a filter that is not a declared field or does not fit it.",
        [api::INVALID_K, api::INVALID_PARAMETER, field_codes::UNKNOWN_FILTER_FIELD,
         field_codes::INVALID_FILTER],
});

/// Products like this one, searched with all of its images
///
/// Scope `read`. The product's own images never appear. `combine=mean` (default) searches once with
/// the mean of its images' unit vectors; `combine=max` searches once per image and scores a
/// candidate by its best cosine to any of them. Images embedded by another model than the service's
/// are left out of the query. Filters on declared metadata fields are query parameters.
#[utoipa::path(
    get, path = "/v1/products/{id}/similar", tag = "search", operation_id = "similarProducts",
    params(ProductPath, SimilarQuery, Filters),
    responses(
        (status = 200, description = "The neighbours, best first.", body = ProductSimilarAnswer),
        Unauthorized, Forbidden, ProductNotFound, SimilarErrors, Unavailable,
    ),
)]
pub(crate) async fn similar(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<SimilarQuery>,
    Query(pairs): Query<Vec<(String, String)>>,
) -> ApiResult<Json<ProductSimilarAnswer>> {
    let fields = filters(&state, &pairs, SIMILAR_PARAMS)?;
    let k = check_k(q.k)?;
    let (group, combine) = (
        q.group.unwrap_or(Grouping::Product),
        q.combine.unwrap_or_default(),
    );
    if group == Grouping::Duplicates {
        return Err(ApiError::unprocessable(
            codes::api::INVALID_PARAMETER,
            "products are grouped by product (`group=product`) or not at all (`group=none`)",
        ));
    }
    let (summary, items) = load(&state, &id).await?;
    let model = &state.config.model.id;
    let mut vectors = Vec::new();
    for item in items.iter().take(MAX_QUERY_IMAGES) {
        if let Some(point) = state.index.get_point(item.id).await?
            && point.model_id.as_deref().is_none_or(|m| m == model)
        {
            vectors.push(point.vector);
        }
    }
    if vectors.is_empty() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            codes::api::ITEM_MODEL_MISMATCH,
            format!("no image of product `{id}` has a vector of {model}: re-index it first"),
        ));
    }
    let scope = match q.category.as_deref().unwrap_or("auto") {
        "auto" => match summary.category.clone() {
            Some(c) => Scope::one(ScopeMode::Auto, c),
            None => Scope::any(),
        },
        "any" => Scope::any(),
        name => Scope::one(ScopeMode::Category, name.to_string()),
    };
    let request = SearchRequest {
        min_score: q.min_score,
        exclude: items.iter().map(|i| i.id).collect(),
        ..index_request(&state, &scope, &fields, k)
    };
    let images = vectors.len();
    let results = match combine {
        Combine::Mean => {
            let request = SearchRequest {
                vector: mean_direction(&vectors),
                ..request
            };
            neighbours(&state, request, group).await?
        }
        Combine::Max => best_of_each(&state, request, vectors, group, k).await?,
    };
    Ok(Json(ProductSimilarAnswer {
        query: ProductQuery {
            product_id: summary.product_id.clone(),
            category: summary.category.clone(),
            images,
            combine,
        },
        search: scope.view(&pairs, SIMILAR_PARAMS, group),
        results,
    }))
}

/// The mean of unit vectors (the index compares by cosine, so only the direction matters and each
/// image weighs the same whatever its norm).
pub fn mean_direction(vectors: &[Vec<f32>]) -> Vec<f32> {
    let mut sum = vec![0f32; vectors[0].len()];
    for v in vectors {
        let norm = v
            .iter()
            .map(|x| x * x)
            .sum::<f32>()
            .sqrt()
            .max(f32::MIN_POSITIVE);
        for (s, x) in sum.iter_mut().zip(v) {
            *s += x / norm;
        }
    }
    sum
}

/// `combine=max`: one search per image, each candidate keeping its best score; grouped, a product
/// keeps its best image and the images any search matched.
async fn best_of_each(
    state: &AppState,
    request: SearchRequest,
    vectors: Vec<Vec<f32>>,
    group: Grouping,
    k: usize,
) -> ApiResult<Vec<lookalike_api_types::SimilarItem>> {
    let mut best: HashMap<uuid::Uuid, Hit> = HashMap::new();
    let mut matched: HashMap<String, Vec<uuid::Uuid>> = HashMap::new();
    for vector in vectors {
        let request = SearchRequest {
            vector,
            ..request.clone()
        };
        let hits: Vec<Hit> = match group {
            Grouping::None | Grouping::Duplicates => state.index.search(request).await?,
            Grouping::Product => {
                let groups = state
                    .index
                    .search_groups(
                        request,
                        GroupBy::Product,
                        super::search::MATCHED_PER_PRODUCT,
                    )
                    .await?;
                for g in &groups {
                    if let Some(key) = &g.key {
                        matched
                            .entry(key.clone())
                            .or_default()
                            .extend(g.hits.iter().map(|h| h.id));
                    }
                }
                groups.into_iter().map(|g| g.hits[0].clone()).collect()
            }
        };
        for hit in hits {
            match best.get(&hit.id) {
                Some(b) if b.score >= hit.score => {}
                _ => {
                    best.insert(hit.id, hit);
                }
            }
        }
    }
    let mut hits: Vec<Hit> = best.into_values().collect();
    hits.sort_by(|a, b| b.score.total_cmp(&a.score).then_with(|| a.id.cmp(&b.id)));
    if group == Grouping::Product {
        // Different images' searches may each have picked another image of one product.
        let mut seen = std::collections::HashSet::new();
        hits.retain(|h| match GroupBy::Product.key_of(h) {
            Some(key) => seen.insert(key.to_string()),
            None => true,
        });
    }
    hits.truncate(k);
    let mut results = super::search::render(state, &hits).await?;
    if group == Grouping::Product {
        let products: Vec<String> = results
            .iter()
            .filter_map(|r| r.product_id.clone())
            .collect();
        let sizes: HashMap<String, i64> = state
            .store
            .product_summaries(&products)
            .await?
            .into_iter()
            .map(|p| (p.product_id, p.images))
            .collect();
        for r in &mut results {
            r.matched_images = Some(match &r.product_id {
                Some(p) => {
                    let mut ids = matched.get(p).cloned().unwrap_or_default();
                    ids.sort();
                    ids.dedup();
                    ids.len().min(super::search::MATCHED_PER_PRODUCT)
                }
                None => 1,
            });
            r.product_images = r.product_id.as_ref().and_then(|p| sizes.get(p).copied());
        }
    }
    Ok(results)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mean_direction_weighs_every_image_the_same_whatever_its_norm() {
        let m = mean_direction(&[vec![10.0, 0.0], vec![0.0, 0.5]]);
        assert!((m[0] - m[1]).abs() < 1e-6, "{m:?}");
    }
}
