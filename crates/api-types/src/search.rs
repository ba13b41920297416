//! Similarity queries: `GET /v1/items/{id}/similar`, `POST /v1/search`, `POST /v1/recommend`.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

/// One similarity result.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SimilarItem {
    pub item_id: Uuid,
    #[schema(required = true)]
    pub external_id: Option<String>,
    /// The product the image shows, if it names one.
    #[schema(required = true)]
    pub product_id: Option<String>,
    #[schema(required = true)]
    pub category: Option<String>,
    /// Cosine similarity (for `/v1/recommend`, its recommendation score).
    pub score: f32,
    /// `/v1/items/{id}/thumbnail`
    pub thumbnail_url: String,
    #[schema(value_type = Option<Object>)]
    #[schema(required = true)]
    pub metadata: Value,
    /// Only with `group=product`: how many of this product's images were among the matches (at most
    /// 10); the result is its best-matching image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matched_images: Option<usize>,
    /// Only with `group=product`, for a result that names a product: how many images it has.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub product_images: Option<i64>,
    /// Only with `collapse=true`: how many members of this result's duplicate group matched (at most
    /// 10); the result is the best-matching one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duplicates_matched: Option<usize>,
}

/// What one result stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Grouping {
    /// Each image is a result.
    #[default]
    None,
    /// One result per product (its best-matching image); `k` counts products, and an image that
    /// names no product is a product of its own.
    Product,
    /// One result per near-duplicate group (`collapse=true`).
    Duplicates,
}

/// How a query chose the categories it searched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ScopeMode {
    /// The predicted category (or the query item's own, or the positives').
    Auto,
    /// Everything.
    Any,
    /// The category the caller named.
    Category,
}

/// What the query searched.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SearchScope {
    pub mode: ScopeMode,
    /// The categories searched; null for everything.
    #[schema(required = true)]
    pub categories: Option<Vec<String>>,
    /// The prediction was unsure, so the search was widened to the best few categories.
    pub low_confidence: bool,
    /// The filter parameters that narrowed the results, as given.
    pub filters: Vec<FilterParam>,
    /// What one result stands for.
    pub group: Grouping,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct FilterParam {
    pub param: String,
    pub value: String,
}

/// `GET /v1/items/{id}/similar`
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SimilarAnswer {
    pub query: SimilarQueryItem,
    pub search: SearchScope,
    pub results: Vec<SimilarItem>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SimilarQueryItem {
    pub item_id: Uuid,
    #[schema(required = true)]
    pub category: Option<String>,
}

/// `POST /v1/search` as JSON. Give `url` here; to upload, use the multipart form. The body is at
/// most 64 KiB.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SearchParams {
    /// The query image, fetched under the same rules as ingest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// How many results (1 to 100; 10 when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 100, default = 10)]
    pub k: Option<usize>,
    /// `auto`: the predicted category (or the best few when unsure); `any`: everything; otherwise
    /// that category.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(default = "auto")]
    pub category: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_score: Option<f32>,
    /// Also store the image as a new item with its predicted category (needs `write`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub add: bool,
    /// Leave this stored item out of the classification and the results (leave-one-out evaluation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exclude: Option<Uuid>,
    /// Search with this region of the photo only: `x,y,w,h` as fractions of the upright image (e.g.
    /// `0.5,0,0.5,1`, its right half). Not with `add=true`.
    #[serde(rename = "box", default, skip_serializing_if = "Option::is_none")]
    pub region: Option<BoxParam>,
    /// `product`: one result per product, and `k` counts products.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(default = "none")]
    pub group: Option<Grouping>,
    /// One result per near-duplicate group (not with `group=product`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub collapse: bool,
}

/// A region as `"x,y,w,h"` or `[x, y, w, h]`, fractions of the upright image.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum BoxParam {
    /// `x,y,w,h`
    Text(String),
    /// `[x, y, w, h]`
    Numbers(Vec<f32>),
}

/// `POST /v1/search` as a multipart form (documentation only). A `file` (or `image`) part, or a
/// `url` field, not both. Unknown fields are refused (`unknown_field`); a field that does not parse
/// is `invalid_parameter`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct SearchForm {
    /// At most `http.max_upload_bytes` (20 MiB).
    #[schema(value_type = Option<String>, format = Binary)]
    file: Option<Vec<u8>>,
    url: Option<String>,
    #[schema(minimum = 1, maximum = 100, default = 10)]
    k: Option<u32>,
    #[schema(default = "auto")]
    category: Option<String>,
    min_score: Option<f32>,
    /// `true`, `1`, `on` or `yes` turn it on; anything else is off.
    add: Option<String>,
    exclude: Option<Uuid>,
    /// Search with this region of the photo only: `x,y,w,h` as fractions of the upright image (e.g.
    /// `0.5,0,0.5,1`, its right half). Not with `add=true`.
    #[serde(rename = "box")]
    region: Option<String>,
    /// `none` (default) or `product`.
    group: Option<String>,
    /// `true`, `1`, `on` or `yes`: one result per near-duplicate group.
    collapse: Option<String>,
}

/// `POST /v1/search`: the prediction, what was searched, the results and, with `add=true`, the
/// stored item.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SearchAnswer {
    pub prediction: PredictionView,
    pub query: QueryImage,
    pub search: SearchScope,
    pub results: Vec<SimilarItem>,
    /// With `add=true`: the new item (its job id is the same id).
    #[schema(required = true)]
    pub added: Option<Added>,
}

/// The query image: its upright size, and the region searched (`box`, null for the whole image).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct QueryImage {
    #[serde(rename = "box")]
    #[schema(value_type = Option<Vec<f32>>)]
    #[schema(required = true)]
    pub region: Option<[f32; 4]>,
    pub width: u32,
    pub height: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Added {
    pub item_id: Uuid,
    pub job_id: Uuid,
    pub item_url: String,
}

/// The classifier's answer for a query image.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(as = Prediction)]
pub struct PredictionView {
    /// Null when nothing could be predicted (no labels, no prior).
    #[schema(required = true)]
    pub category: Option<String>,
    #[schema(required = true)]
    pub confidence: Option<f32>,
    #[schema(max_items = 3)]
    pub top: Vec<Ranked>,
    /// Which parts of the classifier spoke, joined by `+`: the trained head (when there is one),
    /// the labelled neighbours and category prototypes, the cold-start prior; `none` when nothing
    /// could be predicted.
    #[schema(pattern = "^(none|(head\\+)?neighbours\\+prototypes(\\+prior)?)$")]
    pub method: String,
    /// The trained head version that took part.
    #[schema(required = true)]
    pub head_version: Option<i32>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Ranked {
    pub category: String,
    pub confidence: f32,
}

/// `POST /v1/recommend`
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"positive": ["0193…"], "negative": ["0194…"], "k": 10}))]
pub struct RecommendParams {
    /// Item ids to find more like (1 to 20).
    #[schema(min_items = 1, max_items = 20)]
    pub positive: Vec<String>,
    /// Item ids to find less like (at most 20).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(max_items = 20)]
    pub negative: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 100, default = 10)]
    pub k: Option<usize>,
    /// `auto`: the positives' categories (everything if none has one); `any`; otherwise that
    /// category.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(default = "auto")]
    pub category: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RecommendAnswer {
    pub query: RecommendQuery,
    pub search: SearchScope,
    /// `score` is the recommendation score, not a cosine.
    pub results: Vec<SimilarItem>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RecommendQuery {
    pub positive: Vec<String>,
    pub negative: Vec<String>,
}

/// How `GET /v1/products/{id}/similar` makes one query of a product's images.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Combine {
    /// One search with the mean of its images' unit vectors (the default: see the README's Products
    /// section for how it compares).
    #[default]
    Mean,
    /// One search per image; a candidate scores its best cosine to any of them.
    Max,
}

/// `GET /v1/products/{id}/similar`
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ProductSimilarAnswer {
    pub query: ProductQuery,
    pub search: SearchScope,
    /// One per product (its best-matching image, with `matched_images` and `product_images`) unless
    /// `group=none`; the product's own images never appear.
    pub results: Vec<SimilarItem>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ProductQuery {
    pub product_id: String,
    #[schema(required = true)]
    pub category: Option<String>,
    /// How many of its images the query used.
    pub images: usize,
    pub combine: Combine,
}
