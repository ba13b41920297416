//! Stored items and what the catalogue knows about itself: `/v1/items`, `/v1/categories`,
//! `/v1/fields`, `/v1/reclassify`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::Source;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum CategorySource {
    /// Given with the job (a label).
    Provided,
    /// Chosen by the classifier.
    Predicted,
    /// No category: the classifier had nothing to go on.
    None,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Item {
    pub id: Uuid,
    pub job_id: Uuid,
    #[schema(required = true)]
    pub external_id: Option<String>,
    /// The product the image shows (`/v1/products/{id}`).
    #[schema(required = true)]
    pub product_id: Option<String>,
    /// Its near-duplicate group (`/v1/items/{id}/duplicates`), if any.
    #[schema(required = true)]
    pub duplicate_group: Option<Uuid>,
    pub source: Source,
    #[schema(pattern = "^[0-9a-f]{64}$")]
    pub content_sha256: String,
    pub byte_size: i64,
    /// The decoded format, e.g. `jpeg`, `png`.
    pub format: String,
    pub width: i32,
    pub height: i32,
    #[schema(required = true)]
    pub category: Option<String>,
    pub category_source: CategorySource,
    /// For a predicted category.
    #[schema(required = true)]
    pub category_confidence: Option<f32>,
    /// For a predicted category: the trained head version that took part.
    #[schema(required = true)]
    pub head_version: Option<i32>,
    /// The embedding model that made its vector.
    pub model_id: String,
    #[schema(value_type = Object)]
    #[schema(required = true)]
    pub metadata: Value,
    /// `/v1/items/{id}/thumbnail`
    pub thumbnail_url: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Only with `?vector=true`: the stored embedding (null if the index has none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<f32>>)]
    pub vector: Option<Option<Vec<f32>>>,
    /// Only with `?vector=true`: the model's pooled tokens, what the classifier head reads (null when
    /// none are kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<f32>>)]
    pub features: Option<Option<Vec<f32>>>,
}

/// `GET /v1/items`
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ItemPage {
    pub items: Vec<Item>,
    /// Items in the category (or in all), not just this page.
    pub total: i64,
    pub limit: i64,
    pub offset: i64,
}

/// `PATCH /v1/items/{id}`
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"metadata": {"price": 79000, "in_stock": false}}))]
pub struct ItemPatch {
    /// Merged into the item's metadata: a key set to `null` is removed, others replace their value.
    #[schema(value_type = Object)]
    pub metadata: Map<String, Value>,
}

/// `GET /v1/categories`
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Categories {
    pub categories: Vec<CategoryCount>,
    pub uncategorised: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CategoryCount {
    pub name: String,
    pub items: i64,
    /// Items whose category was provided, not predicted.
    pub labelled: i64,
}

/// `POST /v1/reclassify`
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Reclassified {
    pub checked: usize,
    pub changed: usize,
    pub unchanged: usize,
    /// Items or vectors that went away during the run.
    pub missing: usize,
}

/// `GET /v1/fields`: how the stored metadata fits the declared fields.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct FieldsReport {
    pub fields: Vec<FieldReport>,
    /// How many wrongly typed items each field names at most.
    pub examples_per_field: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct FieldReport {
    pub name: String,
    pub kind: FieldKind,
    /// Items whose metadata gives the field a value of its kind (filters can find them).
    pub items_with_value: i64,
    /// Items whose value has another kind: filters never match them, so they are named here.
    pub items_with_wrong_kind: i64,
    /// The first of those, oldest first, with the value they hold.
    pub wrong_kind: Vec<WrongKind>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum FieldKind {
    Keyword,
    Number,
    Bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct WrongKind {
    pub item_id: Uuid,
    #[schema(required = true)]
    pub external_id: Option<String>,
    #[schema(required = true)]
    pub value: Value,
}

/// A product as `GET /v1/products` lists it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ProductSummary {
    pub product_id: String,
    /// The category most of its images have (ties: the one with more provided labels, then by
    /// name); null when most have none.
    #[schema(required = true)]
    pub category: Option<String>,
    /// How many different categories its images have: more than 1 means they disagree.
    pub categories: i64,
    pub images: i64,
    /// Its first submitted image, which a page shows for it.
    pub cover_item_id: Uuid,
    /// `/v1/items/{cover}/thumbnail`
    pub thumbnail_url: String,
    /// `/v1/products/{id}`
    pub product_url: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// `GET /v1/products`
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ProductPage {
    pub products: Vec<ProductSummary>,
    /// Products in the category (or in all), not just this page.
    pub total: i64,
    pub limit: i64,
    pub offset: i64,
}

/// `GET /v1/products/{id}`
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Product {
    #[serde(flatten)]
    pub summary: ProductSummary,
    /// Its images' metadata merged in the order they were submitted, so a later image's value wins.
    #[schema(value_type = Object)]
    pub metadata: Value,
    /// Its images, in the order they were first submitted.
    pub items: Vec<Item>,
}

/// `GET /v1/items/{id}/duplicates`
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Duplicates {
    pub item_id: Uuid,
    /// Null when the item is in no group.
    #[schema(required = true)]
    pub group: Option<Uuid>,
    /// The group's first submitted member still there.
    #[schema(required = true)]
    pub canonical_item_id: Option<Uuid>,
    /// The other members, first submitted first.
    pub duplicates: Vec<DuplicateMember>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DuplicateMember {
    pub item_id: Uuid,
    #[schema(required = true)]
    pub external_id: Option<String>,
    #[schema(required = true)]
    pub product_id: Option<String>,
    #[schema(required = true)]
    pub category: Option<String>,
    /// Cosine between this member and the item asked about (null when a vector is missing).
    #[schema(required = true)]
    pub score: Option<f32>,
    pub canonical: bool,
    /// `/v1/items/{id}/thumbnail`
    pub thumbnail_url: String,
}
