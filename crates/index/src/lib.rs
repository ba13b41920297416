//! Vector index for lookalike: stores one image embedding per product image and finds the
//! nearest ones, optionally restricted to a category and to the embedding model that made them.
//!
//! The service talks to the index only through the object-safe [`VectorIndex`] trait, so the
//! Qdrant *server* backend ([`QdrantIndex`], qdrant-client over gRPC) and the embedded one
//! (`EdgeIndex`, qdrant-edge, behind the `edge` feature) are interchangeable for callers. [`conformance`] holds the
//! behaviour tests every backend must pass.
//!
//! Both backends use the same engine, so the same data model holds for both: UUID point ids,
//! cosine distance (scores in `[-1, 1]`, higher is closer), and two keyword payload fields,
//! [`CATEGORY_KEY`] and [`MODEL_ID_KEY`], each with a payload index so filtered search stays fast.
//!
//! Two keys inside a point's attrs group results ([`VectorIndex::search_groups`], "one result per
//! product"): `attrs.product_id` ([`GroupBy::Product`]) and `attrs.duplicate_group`
//! ([`GroupBy::Duplicate`]), each a string, or absent (or null) when the item names none. Both
//! have keyword payload indexes too, so that the engine finds a group's points without a scan.

use async_trait::async_trait;
pub use lookalike_core::fields::{FieldCondition, FieldKind};
use uuid::Uuid;

pub mod conformance;
#[cfg(feature = "edge")]
pub mod edge;
pub mod server;

#[cfg(feature = "edge")]
pub use edge::{EdgeIndex, EdgeOptions, EdgeStats};
pub use server::{
    AliasSwitch, CLIENT_VERSION, QdrantIndex, Quantization, ServerOptions, check_versions,
    collection_for_model,
};

/// Payload key holding a point's category (absent when uncategorised).
pub const CATEGORY_KEY: &str = "category";
/// Payload key holding the id of the model that produced the vector.
pub const MODEL_ID_KEY: &str = "model_id";
/// Payload key holding a point's [`Point::attrs`].
pub const ATTRS_KEY: &str = "attrs";

/// Where a declared metadata field's value sits in a point's payload: inside the item's metadata,
/// which [`Point::attrs`] already carries. Filtering needs no copy of it, only a payload index.
pub fn field_path(field: &str) -> String {
    format!("{ATTRS_KEY}.metadata.{field}")
}

/// One stored embedding. Upserting a point replaces its vector *and* payload as a whole, so an
/// upsert with `category: None` clears a previously set category.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    pub id: Uuid,
    pub vector: Vec<f32>,
    pub category: Option<String>,
    pub model_id: String,
    /// Stored with the point and handed back with every hit, never filtered on. The service keeps
    /// what a search result shows here (external id, metadata), so answering a query needs no
    /// database round trip. `None` stores nothing.
    pub attrs: Option<serde_json::Value>,
}

impl Point {
    /// The stored payload: model id, category and attrs under their keys. Both backends write
    /// exactly this, and an upsert replaces the whole of it.
    pub fn payload(&self) -> serde_json::Map<String, serde_json::Value> {
        let mut payload = serde_json::Map::new();
        payload.insert(MODEL_ID_KEY.into(), self.model_id.clone().into());
        if let Some(category) = &self.category {
            payload.insert(CATEGORY_KEY.into(), category.clone().into());
        }
        if let Some(attrs) = &self.attrs {
            payload.insert(ATTRS_KEY.into(), attrs.clone());
        }
        payload
    }
}

/// One search result; `score` is the cosine similarity to the query vector.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    pub id: Uuid,
    pub score: f32,
    pub category: Option<String>,
    /// The point's [`Point::attrs`] (`None` for points stored without them).
    pub attrs: Option<serde_json::Value>,
}

/// Orders hits the way every search answers: best score first, equal scores by id. The engine
/// returns ties (the same image stored twice) in segment order, which can differ between calls, so
/// without the id pages could overlap or skip a point.
pub(crate) fn rank(hits: &mut [Hit]) {
    hits.sort_by(|a, b| b.score.total_cmp(&a.score).then_with(|| a.id.cmp(&b.id)));
}

/// What grouped searches ([`VectorIndex::search_groups`]) group by: a keyword in each point's
/// [`Point::attrs`]. The catalogue writes it there, so grouping needs no payload of its own and
/// a metadata change (`set_attrs`) moves a point between groups like any other attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GroupBy {
    /// `attrs.product_id`: one result per product, whatever number of images it has.
    Product,
    /// `attrs.duplicate_group`: one result per set of (near-)duplicate images.
    Duplicate,
}

impl GroupBy {
    /// Every key, for creating their payload indexes.
    pub const ALL: [GroupBy; 2] = [GroupBy::Product, GroupBy::Duplicate];

    /// The key's name inside a point's attrs.
    pub fn attr(self) -> &'static str {
        match self {
            GroupBy::Product => "product_id",
            GroupBy::Duplicate => "duplicate_group",
        }
    }

    /// The key's path in the stored payload (`attrs.product_id`, ...): what filters, payload
    /// indexes and the server's group query name.
    pub fn path(self) -> String {
        format!("{ATTRS_KEY}.{}", self.attr())
    }

    /// A hit's value for this key. Only a string is a value: with a missing key or null the hit
    /// is a group of its own. The catalogue writes nothing else there; other values (numbers,
    /// lists) are outside the contract, and there the backends differ: [`group_hits`] treats them
    /// as no value, the server's group query groups a number by value and a list by each element.
    pub fn key_of(self, hit: &Hit) -> Option<&str> {
        hit.attrs.as_ref()?.get(self.attr())?.as_str()
    }
}

/// One group of a grouped search: the points sharing a key, best first. A group stands for its
/// best hit, so a product is shown once, by its image nearest to the query, and ranks where that
/// image would rank in a plain search.
#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    /// The key the hits share; `None` for a point with no value, which is a group of its own
    /// (exactly one hit): an image that names no product is still a result.
    pub key: Option<String>,
    /// Up to the search's `per_group` best hits of the group, ordered like [`VectorIndex::search`]
    /// orders hits; never empty.
    pub hits: Vec<Hit>,
}

impl Group {
    /// The hit the group ranks by.
    pub fn best(&self) -> Option<&Hit> {
        self.hits.first()
    }
}

/// Groups already ranked hits by `by`: groups in the order of their best hit, each with its first
/// `per_group` hits (at least one), a hit without a value for the key a group of its own. Both
/// backends end up with this shape; the embedded one computes it with this very function.
pub fn group_hits(
    hits: impl IntoIterator<Item = Hit>,
    by: GroupBy,
    per_group: usize,
) -> Vec<Group> {
    use std::collections::hash_map::{Entry, HashMap};
    let per_group = per_group.max(1);
    let mut groups: Vec<Group> = Vec::new();
    let mut by_key: HashMap<String, usize> = HashMap::new();
    for hit in hits {
        let Some(key) = by.key_of(&hit).map(str::to_owned) else {
            groups.push(Group {
                key: None,
                hits: vec![hit],
            });
            continue;
        };
        match by_key.entry(key) {
            Entry::Occupied(at) => {
                let group = &mut groups[*at.get()];
                if group.hits.len() < per_group {
                    group.hits.push(hit);
                }
            }
            Entry::Vacant(slot) => {
                groups.push(Group {
                    key: Some(slot.key().clone()),
                    hits: vec![hit],
                });
                slot.insert(groups.len() - 1);
            }
        }
    }
    groups
}

/// Orders groups by their best hit, as [`rank`] orders hits.
pub(crate) fn rank_groups(groups: &mut [Group]) {
    groups.sort_by(|a, b| match (a.best(), b.best()) {
        (Some(a), Some(b)) => b.score.total_cmp(&a.score).then_with(|| a.id.cmp(&b.id)),
        (a, b) => b.is_some().cmp(&a.is_some()),
    });
}

/// The most hits per group a grouped search may ask for. A Qdrant server sets aside room for
/// `groups x hits per group` points before it searches, whatever the collection holds: one
/// request for 2 groups of 10^9 hits got a 1.18 server killed for lack of memory.
pub const MAX_PER_GROUP: usize = 100;

/// The request errors grouping adds to a search's: `per_group` must be 1 to [`MAX_PER_GROUP`].
pub(crate) fn check_per_group(per_group: usize) -> Result<(), IndexError> {
    if per_group == 0 {
        return Err(IndexError::Invalid(
            "a grouped search needs at least one hit per group".into(),
        ));
    }
    if per_group > MAX_PER_GROUP {
        return Err(IndexError::Invalid(format!(
            "a grouped search returns at most {MAX_PER_GROUP} hits per group, not {per_group}"
        )));
    }
    Ok(())
}

/// A stored point, as [`VectorIndex::get_point`] returns it. Cosine backends store the vector
/// normalised to unit length, so it is the upserted vector divided by its norm.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredPoint {
    pub id: Uuid,
    pub vector: Vec<f32>,
    pub category: Option<String>,
    pub model_id: Option<String>,
    pub attrs: Option<serde_json::Value>,
}

/// Which categories a search or count considers.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum CategoryFilter {
    /// No restriction.
    #[default]
    Any,
    /// Exactly this category.
    One(String),
    /// Any of these categories; an empty list matches nothing.
    AnyOf(Vec<String>),
    /// Points without a category (not yet classified).
    Uncategorised,
}

/// More like these, less like those: the engine's recommendation query with its best-score
/// strategy, the same in both backends. Each candidate is compared with every example; with
/// `s(x) = (x / (1 + |x|) + 1) / 2` (monotonic, into (0, 1)), one nearer to some positive than to
/// every negative scores `s(best cosine to a positive)`, any other `-s(best cosine to a negative)`,
/// so it ranks below every candidate that is nearer to a positive.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Recommend {
    pub positive: Vec<Vec<f32>>,
    pub negative: Vec<Vec<f32>>,
}

/// A similarity query. Results are ordered best first; `offset` skips that many of them.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchRequest {
    /// The query vector (unused, and may be empty, with [`SearchRequest::recommend`]).
    pub vector: Vec<f32>,
    pub filter: CategoryFilter,
    pub limit: usize,
    pub offset: usize,
    /// Leave these points out (the query image itself; a recommendation's examples).
    pub exclude: Vec<Uuid>,
    /// Drop hits scoring below this cosine similarity.
    pub min_score: Option<f32>,
    /// Only consider vectors produced by this model: vectors of different models are not
    /// comparable, and both can coexist while a model change is being rolled out.
    pub model_id: Option<String>,
    /// Conditions on declared metadata fields ([`field_path`]); all must hold. A point whose value
    /// is missing or of another kind does not match.
    pub fields: Vec<FieldCondition>,
    /// Score every matching point instead of walking the graph: the true top-k, slower. For
    /// measuring the approximate search against, not for serving.
    pub exact: bool,
    /// Rank by these examples instead of by `vector`.
    pub recommend: Option<Recommend>,
}

impl SearchRequest {
    /// An unfiltered top-`limit` query, to be refined with struct update syntax.
    pub fn new(vector: Vec<f32>, limit: usize) -> Self {
        Self {
            vector,
            filter: CategoryFilter::Any,
            limit,
            offset: 0,
            exclude: Vec::new(),
            min_score: None,
            model_id: None,
            fields: Vec::new(),
            exact: false,
            recommend: None,
        }
    }

    /// A top-`limit` recommendation from example vectors, to be refined with struct update syntax.
    pub fn recommend(positive: Vec<Vec<f32>>, negative: Vec<Vec<f32>>, limit: usize) -> Self {
        Self {
            recommend: Some(Recommend { positive, negative }),
            ..Self::new(Vec::new(), limit)
        }
    }

    /// Every vector the request carries: the query vector, or the recommendation's examples.
    pub fn vectors(&self) -> Vec<&[f32]> {
        match &self.recommend {
            None => vec![self.vector.as_slice()],
            Some(r) => r
                .positive
                .iter()
                .chain(&r.negative)
                .map(Vec::as_slice)
                .collect(),
        }
    }
}

/// Errors split by what the caller should do next: retry later, or give up on the request.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    /// The backend cannot serve right now (I/O trouble, server down, shutdown in progress).
    /// Retrying later may succeed, so a queue consumer should requeue rather than dead-letter.
    #[error("vector index unavailable: {0}")]
    Unavailable(String),
    /// The request can never succeed as sent (wrong dimension, non-finite values, ...).
    #[error("invalid vector index request: {0}")]
    Invalid(String),
    /// The point does not exist (only for operations on one given id, e.g. `set_category`).
    #[error("point {0} not found in the vector index")]
    NotFound(Uuid),
    /// The backend answers but refuses every request until an operator acts: its collection is
    /// missing, the API key is refused, or the server's version is one this client cannot use.
    /// Nothing about the request is wrong, so a queue consumer should neither fail the job nor
    /// spend its attempts: it stops consuming until [`VectorIndex::ping`] succeeds again.
    #[error("vector index misconfigured: {0}")]
    Misconfigured(String),
}

impl IndexError {
    /// True when the same request may succeed if retried later.
    pub fn is_transient(&self) -> bool {
        matches!(self, IndexError::Unavailable(_))
    }

    /// True when no request can succeed until the index's configuration is fixed.
    pub fn is_misconfigured(&self) -> bool {
        matches!(self, IndexError::Misconfigured(_))
    }
}

/// A store of image embeddings. Object safe: the service holds an `Arc<dyn VectorIndex>`.
///
/// Every write returns only once it is durable, so a queue consumer may ack its message as soon
/// as the call returns.
#[async_trait]
pub trait VectorIndex: Send + Sync + 'static {
    /// Insert or replace points by id (idempotent: repeating it changes nothing).
    async fn upsert(&self, points: Vec<Point>) -> Result<(), IndexError>;
    /// Nearest points to `req.vector`, best first.
    async fn search(&self, req: SearchRequest) -> Result<Vec<Hit>, IndexError>;
    /// The best `req.limit` groups after skipping `req.offset` groups, best first, a group ranked
    /// by its best hit; each group holds up to `per_group` of its best hits, best first. Points
    /// with no value for the key are each a group of their own. Every other part of `req`
    /// (filter, model, fields, exclude, min_score, recommend, exact) applies to the points as in
    /// [`VectorIndex::search`], so a product whose best image is excluded or filtered out is
    /// represented by its next one. Ties are ordered as `search` orders them (score, then id),
    /// groups by their best hit the same way. `per_group` 0 or above [`MAX_PER_GROUP`] is
    /// [`IndexError::Invalid`].
    async fn search_groups(
        &self,
        req: SearchRequest,
        by: GroupBy,
        per_group: usize,
    ) -> Result<Vec<Group>, IndexError>;
    /// One stored point with its vector and payload, or `None` when there is no such point.
    async fn get_point(&self, id: Uuid) -> Result<Option<StoredPoint>, IndexError>;
    /// The stored vector. Cosine backends store it normalised to unit length, so this is
    /// the upserted vector divided by its norm, not necessarily the exact input.
    async fn get_vector(&self, id: Uuid) -> Result<Option<Vec<f32>>, IndexError> {
        Ok(self.get_point(id).await?.map(|p| p.vector))
    }
    /// Remove points; unknown ids are ignored.
    async fn delete(&self, ids: &[Uuid]) -> Result<(), IndexError>;
    /// Exact number of points matching `filter`.
    async fn count(&self, filter: CategoryFilter) -> Result<u64, IndexError>;
    /// Number of points, cheap enough for every status page and metrics scrape: exact for the
    /// embedded index, the server's own estimate for a Qdrant server (it may briefly count points
    /// deleted or replaced moments ago, never misses stored ones).
    async fn approx_count(&self) -> Result<u64, IndexError> {
        self.count(CategoryFilter::Any).await
    }
    /// Replace only the [`Point::attrs`] of an existing point (an item's metadata changed), keeping
    /// its vector, category and model. Fails with [`IndexError::NotFound`] when there is no such point.
    async fn set_attrs(&self, id: Uuid, attrs: serde_json::Value) -> Result<(), IndexError>;
    /// Make sure each declared field has a payload index of its kind over [`field_path`], so that
    /// filtered searches stay fast and exact. Idempotent; a new index covers the points already
    /// stored.
    async fn index_fields(&self, fields: &[(String, FieldKind)]) -> Result<(), IndexError>;
    /// Change only the category of an existing point (reclassification); `None` removes it.
    /// Fails with [`IndexError::NotFound`] when the point does not exist.
    async fn set_category(&self, id: Uuid, category: Option<String>) -> Result<(), IndexError>;
    /// Readiness check: Ok when the backend can serve requests.
    async fn ping(&self) -> Result<(), IndexError>;
    /// Short backend name for logs and metrics.
    fn name(&self) -> &'static str;
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// A hit with this score and attrs; ids grow with `n`, so equal scores rank by `n`.
    fn hit(n: u128, score: f32, attrs: Option<serde_json::Value>) -> Hit {
        Hit {
            id: Uuid::from_u128(n),
            score,
            category: None,
            attrs,
        }
    }

    fn product(p: &str) -> Option<serde_json::Value> {
        Some(json!({"external_id": null, "product_id": p}))
    }

    fn shape(groups: &[Group]) -> Vec<(Option<&str>, Vec<u128>)> {
        groups
            .iter()
            .map(|g| {
                (
                    g.key.as_deref(),
                    g.hits.iter().map(|h| h.id.as_u128()).collect(),
                )
            })
            .collect()
    }

    #[test]
    fn keys_and_paths() {
        assert_eq!(GroupBy::Product.attr(), "product_id");
        assert_eq!(GroupBy::Product.path(), "attrs.product_id");
        assert_eq!(GroupBy::Duplicate.attr(), "duplicate_group");
        assert_eq!(GroupBy::Duplicate.path(), "attrs.duplicate_group");
    }

    #[test]
    fn groups_follow_their_best_hit_and_are_capped() {
        let hits = vec![
            hit(1, 0.9, product("a")),
            hit(2, 0.8, product("b")),
            hit(3, 0.7, product("a")),
            hit(4, 0.6, None),
            hit(5, 0.5, product("a")),
            hit(6, 0.4, product("b")),
            hit(7, 0.3, None),
        ];
        assert_eq!(
            shape(&group_hits(hits.clone(), GroupBy::Product, 2)),
            vec![
                (Some("a"), vec![1, 3]),
                (Some("b"), vec![2, 6]),
                (None, vec![4]),
                (None, vec![7]),
            ]
        );
        assert_eq!(
            shape(&group_hits(hits, GroupBy::Product, 1)),
            vec![
                (Some("a"), vec![1]),
                (Some("b"), vec![2]),
                (None, vec![4]),
                (None, vec![7]),
            ]
        );
    }

    #[test]
    fn only_a_string_is_a_key() {
        let hits = vec![
            hit(1, 0.9, Some(json!({"product_id": null}))),
            hit(2, 0.8, Some(json!({"product_id": 7}))),
            hit(3, 0.7, Some(json!({"product_id": ["a"]}))),
            hit(4, 0.6, Some(json!({}))),
            hit(5, 0.5, None),
            hit(6, 0.4, Some(json!({"product_id": ""}))),
            hit(7, 0.3, Some(json!({"product_id": ""}))),
        ];
        assert_eq!(
            shape(&group_hits(hits, GroupBy::Product, 3)),
            vec![
                (None, vec![1]),
                (None, vec![2]),
                (None, vec![3]),
                (None, vec![4]),
                (None, vec![5]),
                (Some(""), vec![6, 7]),
            ]
        );
    }

    #[test]
    fn each_key_reads_its_own_attr() {
        let attrs = Some(json!({"product_id": "p", "duplicate_group": "d"}));
        let hits = vec![
            hit(1, 0.9, attrs.clone()),
            hit(2, 0.8, Some(json!({"product_id": "p"}))),
            hit(3, 0.7, attrs),
        ];
        assert_eq!(
            shape(&group_hits(hits.clone(), GroupBy::Duplicate, 5)),
            vec![(Some("d"), vec![1, 3]), (None, vec![2])]
        );
        assert_eq!(
            shape(&group_hits(hits, GroupBy::Product, 5)),
            vec![(Some("p"), vec![1, 2, 3])]
        );
    }

    #[test]
    fn no_hits_no_groups_and_zero_per_group_keeps_one() {
        assert!(group_hits(Vec::new(), GroupBy::Product, 1).is_empty());
        let hits = vec![hit(1, 0.9, product("a")), hit(2, 0.8, product("a"))];
        assert_eq!(
            shape(&group_hits(hits, GroupBy::Product, 0)),
            vec![(Some("a"), vec![1])]
        );
        assert!(check_per_group(0).is_err());
        assert!(check_per_group(1).is_ok());
        assert!(check_per_group(MAX_PER_GROUP).is_ok());
        assert!(check_per_group(MAX_PER_GROUP + 1).is_err());
    }

    #[test]
    fn ranking_orders_ties_by_id() {
        let mut hits = vec![hit(3, 0.5, None), hit(2, 0.9, None), hit(1, 0.5, None)];
        rank(&mut hits);
        assert_eq!(
            hits.iter().map(|h| h.id.as_u128()).collect::<Vec<_>>(),
            vec![2, 1, 3]
        );
        let mut groups = vec![
            Group {
                key: Some("b".into()),
                hits: vec![hit(5, 0.7, None)],
            },
            Group {
                key: None,
                hits: vec![hit(4, 0.7, None)],
            },
            Group {
                key: Some("a".into()),
                hits: vec![hit(9, 0.8, None), hit(1, 0.1, None)],
            },
        ];
        rank_groups(&mut groups);
        assert_eq!(
            shape(&groups),
            vec![
                (Some("a"), vec![9, 1]),
                (None, vec![4]),
                (Some("b"), vec![5]),
            ]
        );
    }
}
