//! [`VectorIndex`](crate::VectorIndex) on a Qdrant server, through qdrant-client (gRPC, port
//! 6334 by default). Use it when several service processes share one index, or the index
//! outgrows one machine; the embedded [`EdgeIndex`](crate::EdgeIndex) needs no server.
//!
//! It behaves like the embedded backend (the conformance checks hold for both):
//!
//! * **Durability.** Every write is sent with `wait: true`, so it returns once the server has
//!   applied it and written it to its WAL; a queue consumer may ack right after.
//! * **Ordering and paging.** The server is asked for the first `offset + limit` hits; they are
//!   sorted by score, ties by id, and the first `offset` dropped here. Server-side `offset`
//!   would order equal scores however the segments happen to return them, so pages could
//!   overlap or skip the same image stored twice.
//! * **Filters.** Category, model, exclusion and declared metadata fields are the same conditions
//!   as the embedded ones (see `convert::build_filter`), on keyword payload indexes created with
//!   the collection and one index per declared field ([`VectorIndex::index_fields`](crate::VectorIndex::index_fields)).
//! * **Grouping.** `search_groups` uses the server's group query for the points that have a
//!   value for the key (it leaves the others out) and a plain query, at the same time, for those
//!   that have none; the two merge into one ranking. The group query gives up after a fixed
//!   number of internal rounds, so when it answers fewer groups than asked for it is asked again
//!   without the groups it found (see `GROUP_QUERIES`).
//! * **Optimisation.** The server builds its HNSW graphs itself, in the background; there is
//!   nothing like [`EdgeIndex::optimize_now`](crate::EdgeIndex::optimize_now) to call.
//!
//! Model changes without downtime go through aliases: the service uses an alias as its
//! collection name, a reindex fills a new collection ([`QdrantIndex::create_collection`],
//! [`QdrantIndex::with_collection`]) and then switches the alias over in one atomic step
//! ([`QdrantIndex::point_alias`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use qdrant_client::qdrant::r#match::MatchValue;
use qdrant_client::qdrant::with_payload_selector::SelectorOptions;
use qdrant_client::qdrant::{
    Condition, CountPointsBuilder, CreateFieldIndexCollectionBuilder, DeletePayloadPointsBuilder,
    DeletePointsBuilder, FieldType, Filter, GetPointsBuilder, PayloadIncludeSelector, PointStruct,
    QuantizationSearchParamsBuilder, Query, QueryPointGroupsBuilder, QueryPointsBuilder,
    RecommendInputBuilder, RecommendStrategy, RetrievedPoint, SearchParamsBuilder,
    SetPayloadPointsBuilder, UpsertPointsBuilder, VectorInput,
};
use qdrant_client::{Payload, Qdrant};
use tonic::Code;
use uuid::Uuid;

use crate::{
    ATTRS_KEY, CATEGORY_KEY, CategoryFilter, FieldKind, Group, GroupBy, Hit, IndexError, Point,
    SearchRequest, StoredPoint, check_per_group, field_path, rank, rank_groups,
};

mod admin;
mod convert;
pub use admin::{AliasSwitch, CLIENT_VERSION, check_versions, collection_for_model};
use convert::{build_filter, client_error, point_id, status_code};

/// Points per upsert request: keeps one gRPC message far below the server's size limit
/// (256 x 512-d f32 is about 0.5 MB) however large a batch the caller hands over.
const UPSERT_CHUNK: usize = 256;

/// How the server compresses vectors in RAM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Quantization {
    /// Full f32 vectors only.
    #[default]
    None,
    /// An int8 copy of every vector, kept in RAM (4x smaller) and searched first; hits are
    /// rescored with the full vectors, so scores stay exact. Pairs well with `on_disk`.
    Scalar,
}

/// Where the server is and how a collection it creates is laid out.
#[derive(Clone)]
pub struct ServerOptions {
    /// gRPC endpoint, e.g. `http://127.0.0.1:6334` (`https://` for TLS).
    pub url: String,
    pub api_key: Option<String>,
    /// Collection (or alias) holding the points; created on connect if neither exists. With
    /// `model_id` set, the name of the alias that points at the current model's collection,
    /// and the prefix of every model's collection name (see [`collection_for_model`]).
    pub collection: String,
    /// The model whose vectors this process reads and writes. When set, the process uses that
    /// model's own collection by its own name (made on first start, with the alias `collection`
    /// pointed at it if there was none), so processes of an old and a new model never query
    /// each other's vectors while a model change rolls out.
    pub model_id: Option<String>,
    /// Vector dimension; an existing collection must have it.
    pub dim: usize,
    /// Keep full vectors on disk (memory-mapped) instead of in RAM. Applies to collections
    /// created by this process; an existing collection keeps its layout.
    pub on_disk: bool,
    /// Applies to collections created by this process, like `on_disk`.
    pub quantization: Quantization,
    /// Per-request deadline, and the connect timeout.
    pub timeout: Duration,
    /// HNSW beam width at query time (raised to `offset + limit` when smaller).
    /// `None` uses the server default.
    pub search_ef: Option<usize>,
}

impl ServerOptions {
    /// Options for `collection` of dimension `dim` at `url`, with the defaults the service uses:
    /// vectors in RAM, no quantization, 10 s timeout, search ef 128 (as the embedded index).
    pub fn new(url: impl Into<String>, collection: impl Into<String>, dim: usize) -> Self {
        Self {
            url: url.into(),
            api_key: None,
            collection: collection.into(),
            model_id: None,
            dim,
            on_disk: false,
            quantization: Quantization::None,
            timeout: Duration::from_secs(10),
            search_ef: Some(128),
        }
    }
}

// By hand, so that logging the options never prints the API key.
impl std::fmt::Debug for ServerOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerOptions")
            .field("url", &self.url)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("collection", &self.collection)
            .field("model_id", &self.model_id)
            .field("dim", &self.dim)
            .field("on_disk", &self.on_disk)
            .field("quantization", &self.quantization)
            .field("timeout", &self.timeout)
            .field("search_ef", &self.search_ef)
            .finish()
    }
}

/// The Qdrant server backend. Cheap to clone through [`QdrantIndex::with_collection`]: the
/// gRPC connections are shared.
pub struct QdrantIndex {
    client: Qdrant,
    /// The collection (or alias) requests go to: decided when the server is first reached (it
    /// depends on what the server holds, see [`ServerOptions::model_id`]).
    collection: Arc<OnceLock<String>>,
    /// Dimension of `collection`, when known; `None` (from `with_collection`) leaves the check
    /// to the server, which rejects a wrong dimension just the same.
    dim: Option<usize>,
    opts: Arc<ServerOptions>,
    readiness: Arc<Readiness>,
}

/// Whether the server has been reached and the collection checked since this process started
/// (see [`QdrantIndex::open`]), and if not, why.
#[derive(Default)]
struct Readiness {
    ready: AtomicBool,
    problem: Mutex<Option<(bool, String)>>,
}

impl Readiness {
    fn set_ready(&self) {
        self.ready.store(true, Ordering::Release);
    }

    fn set_problem(&self, e: IndexError) {
        *self.problem.lock().expect("not poisoned") = Some((e.is_misconfigured(), e.to_string()));
    }

    /// `Ok` once ready; until then the last reason it is not, as the error every request gets.
    fn check(&self) -> Result<(), IndexError> {
        if self.ready.load(Ordering::Acquire) {
            return Ok(());
        }
        match self.problem.lock().expect("not poisoned").clone() {
            Some((true, why)) => Err(IndexError::Misconfigured(why)),
            Some((false, why)) => Err(IndexError::Unavailable(why)),
            None => Err(IndexError::Unavailable(
                "the Qdrant server has not been reached yet".into(),
            )),
        }
    }
}

impl QdrantIndex {
    /// The collection (or alias) this index reads and writes.
    pub fn collection(&self) -> &str {
        self.collection
            .get()
            .map_or(self.opts.collection.as_str(), String::as_str)
    }

    fn check_vector(&self, vector: &[f32]) -> Result<(), IndexError> {
        if let Some(dim) = self.dim
            && vector.len() != dim
        {
            return Err(IndexError::Invalid(format!(
                "vector has dimension {}, collection {} expects {dim}",
                vector.len(),
                self.collection()
            )));
        }
        if vector.iter().any(|x| !x.is_finite()) {
            return Err(IndexError::Invalid("vector has non-finite values".into()));
        }
        Ok(())
    }

    /// The point with its payload (and vector, if asked), or `None` when it does not exist.
    async fn retrieve(
        &self,
        id: Uuid,
        with_vector: bool,
    ) -> Result<Option<RetrievedPoint>, IndexError> {
        let request = GetPointsBuilder::new(self.collection(), vec![point_id(id)])
            .with_payload(true)
            .with_vectors(with_vector);
        let response = self
            .client
            .get_points(request)
            .await
            .map_err(client_error)?;
        Ok(response.result.into_iter().next())
    }
}

/// Group queries one grouped search may send. Qdrant's group query gives up after a fixed number
/// of internal rounds (five to find groups, five to fill them), each fetching `limit * group_size`
/// points; when a few groups own many points near the query it answers fewer groups than asked
/// for. Asking again without the groups already found continues the search from there.
const GROUP_QUERIES: usize = 4;

/// Equal scores a group's best hits are chosen among, when they cross the `per_group` cut. More
/// points than this with one score in one group (copies of one image) are cut in server order.
const GROUP_TIES: usize = 64;

/// A checked search request in the server's terms, which `search` and `search_groups` send with
/// the limits and extra conditions they need.
struct Prepared {
    query: Query,
    /// `None`: no filter.
    filter: Option<Filter>,
    min_score: Option<f32>,
    exact: bool,
    offset: usize,
    limit: usize,
}

impl Prepared {
    /// The request's filter with `and`'s conditions added.
    fn filter_and(&self, and: Option<Filter>) -> Option<Filter> {
        match (self.filter.clone(), and) {
            (filter, None) => filter,
            (None, and) => and,
            (Some(mut filter), Some(and)) => {
                filter.must.extend(and.must);
                filter.must_not.extend(and.must_not);
                filter.should.extend(and.should);
                Some(filter)
            }
        }
    }
}

impl QdrantIndex {
    /// Checks a search request and turns it into the server's terms; `None` when the answer is
    /// empty whatever the collection holds (an empty `AnyOf`, limit 0).
    fn prepare_search(&self, req: SearchRequest) -> Result<Option<Prepared>, IndexError> {
        for v in req.vectors() {
            self.check_vector(v)?;
        }
        if req
            .recommend
            .as_ref()
            .is_some_and(|r| r.positive.is_empty())
        {
            return Err(IndexError::Invalid(
                "a recommendation needs a positive example".into(),
            ));
        }
        let Some(filter) = build_filter(
            &req.filter,
            req.model_id.as_deref(),
            &req.exclude,
            &req.fields,
        ) else {
            return Ok(None); // AnyOf([]) matches nothing
        };
        if req.limit == 0 {
            return Ok(None);
        }
        let query = match req.recommend {
            None => Query::new_nearest(req.vector),
            Some(r) => Query::new_recommend(
                RecommendInputBuilder::default()
                    .positive(
                        r.positive
                            .into_iter()
                            .map(VectorInput::from)
                            .collect::<Vec<_>>(),
                    )
                    .negative(
                        r.negative
                            .into_iter()
                            .map(VectorInput::from)
                            .collect::<Vec<_>>(),
                    )
                    .strategy(RecommendStrategy::BestScore),
            ),
        };
        Ok(Some(Prepared {
            query,
            filter,
            min_score: req.min_score,
            exact: req.exact,
            offset: req.offset,
            limit: req.limit,
        }))
    }

    /// Search parameters for a query that needs the best `points` points.
    fn params(&self, exact: bool, points: usize) -> SearchParamsBuilder {
        let mut params = SearchParamsBuilder::default().exact(exact);
        if let Some(ef) = self.opts.search_ef {
            params = params.hnsw_ef(ef.max(points) as u64);
        }
        if self.opts.quantization == Quantization::Scalar {
            // Explicit, so exact scores never depend on a server default.
            params = params.quantization(QuantizationSearchParamsBuilder::default().rescore(true));
        }
        params
    }

    /// The payload every hit carries.
    fn hit_payload() -> SelectorOptions {
        SelectorOptions::Include(PayloadIncludeSelector::new(vec![
            CATEGORY_KEY.to_owned(),
            ATTRS_KEY.to_owned(),
        ]))
    }

    /// The best `limit` points of a prepared request, also meeting `and` when given, ranked.
    async fn query_hits(
        &self,
        prepared: &Prepared,
        limit: usize,
        and: Option<Filter>,
    ) -> Result<Vec<Hit>, IndexError> {
        let mut request = QueryPointsBuilder::new(self.collection())
            .query(prepared.query.clone())
            .limit(limit as u64)
            .params(self.params(prepared.exact, limit))
            .with_payload(Self::hit_payload());
        if let Some(filter) = prepared.filter_and(and) {
            request = request.filter(filter);
        }
        if let Some(min_score) = prepared.min_score {
            request = request.score_threshold(min_score);
        }
        let response = self.client.query(request).await.map_err(client_error)?;
        let mut hits = response
            .result
            .into_iter()
            .map(convert::hit)
            .collect::<Result<Vec<_>, _>>()?;
        rank(&mut hits);
        Ok(hits)
    }

    /// The best `wanted` groups of points that have a value for the key, through the server's
    /// group query (see [`GROUP_QUERIES`] for why it may take more than one).
    async fn keyed_groups(
        &self,
        prepared: &Prepared,
        by: GroupBy,
        per_group: usize,
        wanted: usize,
    ) -> Result<Vec<Group>, IndexError> {
        let path = by.path();
        let mut groups: Vec<Group> = Vec::new();
        let mut found = convert::GroupKeys::default();
        for _ in 0..GROUP_QUERIES {
            let asked = wanted - groups.len();
            // The server adds "has a value" itself; said here too, so that the split between
            // this query and the keyless one never rests on that.
            let mut must_not = vec![Condition::is_empty(path.clone())];
            must_not.extend(found.exclude(&path));
            let filter = prepared.filter_and(Some(Filter::must_not(must_not)));
            // One hit more than needed shows whether equal scores cross the cut (below).
            let mut request = QueryPointGroupsBuilder::new(self.collection(), path.clone())
                .query(prepared.query.clone())
                .limit(asked as u64)
                .group_size((per_group as u64).saturating_add(1))
                .params(self.params(prepared.exact, asked.saturating_mul(per_group)))
                .with_payload(Self::hit_payload());
            if let Some(filter) = filter {
                request = request.filter(filter);
            }
            if let Some(min_score) = prepared.min_score {
                request = request.score_threshold(min_score);
            }
            let response = self
                .client
                .query_groups(request)
                .await
                .map_err(client_error)?;
            let answered = response.result.map(|r| r.groups).unwrap_or_default();
            if answered.is_empty() {
                break;
            }
            groups.extend(
                answered
                    .into_iter()
                    .map(|group| found.group(group))
                    .filter_map(Result::transpose)
                    .collect::<Result<Vec<_>, _>>()?,
            );
            if groups.len() >= wanted {
                break;
            }
        }
        for group in &mut groups {
            // The server keeps whichever of equally scored points it met first (the same image
            // stored twice in one product), where a search keeps the lower id: when the cut falls
            // among equal scores, the group's best points come from a query on its key alone.
            let ties_cross_cut = group.hits.len() > per_group
                && group.hits[per_group].score == group.hits[per_group - 1].score;
            if let (true, Some(key)) = (ties_cross_cut, &group.key) {
                let same_key = Filter::must([Condition::matches(
                    path.clone(),
                    MatchValue::Keyword(key.clone()),
                )]);
                let hits = self
                    .query_hits(
                        prepared,
                        per_group.saturating_add(GROUP_TIES),
                        Some(same_key),
                    )
                    .await?;
                if !hits.is_empty() {
                    group.hits = hits; // (empty only for a number key, outside the contract)
                }
            }
            group.hits.truncate(per_group);
        }
        Ok(groups)
    }
}

#[async_trait]
impl crate::VectorIndex for QdrantIndex {
    async fn upsert(&self, points: Vec<Point>) -> Result<(), IndexError> {
        self.readiness.check()?;
        if points.is_empty() {
            return Ok(());
        }
        let mut records = Vec::with_capacity(points.len());
        for p in points {
            self.check_vector(&p.vector)?;
            // The whole payload is replaced, as in the embedded backend: an upsert without a
            // category or attrs removes the old ones.
            let payload = p.payload();
            records.push(PointStruct::new(
                point_id(p.id),
                p.vector,
                Payload::from(payload),
            ));
        }
        let request = UpsertPointsBuilder::new(self.collection(), records).wait(true);
        self.client
            .upsert_points_chunked(request, UPSERT_CHUNK)
            .await
            .map_err(client_error)?;
        Ok(())
    }

    async fn search(&self, req: SearchRequest) -> Result<Vec<Hit>, IndexError> {
        self.readiness.check()?;
        let Some(prepared) = self.prepare_search(req)? else {
            return Ok(Vec::new());
        };
        let fetch = prepared.offset + prepared.limit;
        let hits = self.query_hits(&prepared, fetch, None).await?;
        Ok(hits.into_iter().skip(prepared.offset).collect())
    }

    async fn search_groups(
        &self,
        req: SearchRequest,
        by: GroupBy,
        per_group: usize,
    ) -> Result<Vec<Group>, IndexError> {
        self.readiness.check()?;
        check_per_group(per_group)?;
        let Some(prepared) = self.prepare_search(req)? else {
            return Ok(Vec::new());
        };
        let wanted = prepared.offset + prepared.limit;
        // The server's group query leaves out every point without the key, so those (each a group
        // of its own) come from a plain query beside it; the best `wanted` of each kind hold the
        // best `wanted` groups.
        let keyless = self.query_hits(
            &prepared,
            wanted,
            Some(Filter::must([Condition::is_empty(by.path())])),
        );
        let keyed = self.keyed_groups(&prepared, by, per_group, wanted);
        let (keyless, keyed) = tokio::join!(keyless, keyed);
        let mut groups = keyed?;
        groups.extend(keyless?.into_iter().map(|hit| Group {
            key: None,
            hits: vec![hit],
        }));
        rank_groups(&mut groups);
        Ok(groups
            .into_iter()
            .skip(prepared.offset)
            .take(prepared.limit)
            .collect())
    }

    async fn get_point(&self, id: Uuid) -> Result<Option<StoredPoint>, IndexError> {
        self.readiness.check()?;
        self.retrieve(id, true)
            .await?
            .map(convert::stored_point)
            .transpose()
    }

    async fn delete(&self, ids: &[Uuid]) -> Result<(), IndexError> {
        self.readiness.check()?;
        if ids.is_empty() {
            return Ok(());
        }
        let ids: Vec<_> = ids.iter().copied().map(point_id).collect();
        let request = DeletePointsBuilder::new(self.collection())
            .points(ids)
            .wait(true);
        self.client
            .delete_points(request)
            .await
            .map_err(client_error)?;
        Ok(())
    }

    async fn count(&self, filter: CategoryFilter) -> Result<u64, IndexError> {
        self.readiness.check()?;
        let Some(filter) = build_filter(&filter, None, &[], &[]) else {
            return Ok(0);
        };
        let mut request = CountPointsBuilder::new(self.collection()).exact(true);
        if let Some(filter) = filter {
            request = request.filter(filter);
        }
        let response = self.client.count(request).await.map_err(client_error)?;
        Ok(response.result.map_or(0, |r| r.count))
    }

    async fn approx_count(&self) -> Result<u64, IndexError> {
        self.readiness.check()?;
        // The server's estimate from its segments' sizes: no scan, whatever the collection's
        // size (an exact count walks every point's id).
        let request = CountPointsBuilder::new(self.collection()).exact(false);
        let response = self.client.count(request).await.map_err(client_error)?;
        Ok(response.result.map_or(0, |r| r.count))
    }

    async fn set_attrs(&self, id: Uuid, attrs: serde_json::Value) -> Result<(), IndexError> {
        self.readiness.check()?;
        // Setting one top-level key replaces its whole value, leaving the other keys as they are.
        let mut payload = serde_json::Map::new();
        payload.insert(ATTRS_KEY.into(), attrs);
        let request = SetPayloadPointsBuilder::new(self.collection(), Payload::from(payload))
            .points_selector(vec![point_id(id)])
            .wait(true);
        match self.client.set_payload(request).await {
            Ok(_) => Ok(()),
            Err(e) if status_code(&e) == Some(Code::NotFound) => {
                match self.retrieve(id, false).await? {
                    None => Err(IndexError::NotFound(id)),
                    Some(_) => Err(client_error(e)),
                }
            }
            Err(e) => Err(client_error(e)),
        }
    }

    async fn index_fields(&self, fields: &[(String, FieldKind)]) -> Result<(), IndexError> {
        self.readiness.check()?;
        for (name, kind) in fields {
            let field_type = match kind {
                FieldKind::Keyword => FieldType::Keyword,
                FieldKind::Number => FieldType::Float,
                FieldKind::Bool => FieldType::Bool,
            };
            let request = CreateFieldIndexCollectionBuilder::new(
                self.collection(),
                field_path(name),
                field_type,
            )
            .wait(true);
            self.client
                .create_field_index(request)
                .await
                .map_err(client_error)?;
        }
        Ok(())
    }

    async fn set_category(&self, id: Uuid, category: Option<String>) -> Result<(), IndexError> {
        self.readiness.check()?;
        // Both calls touch only the category key, so the model id and attrs stay as they are.
        let result = match category {
            Some(category) => {
                let mut payload = Payload::new();
                payload.insert(CATEGORY_KEY, category);
                let request = SetPayloadPointsBuilder::new(self.collection(), payload)
                    .points_selector(vec![point_id(id)])
                    .wait(true);
                self.client.set_payload(request).await
            }
            None => {
                let request =
                    DeletePayloadPointsBuilder::new(self.collection(), vec![CATEGORY_KEY.into()])
                        .points_selector(vec![point_id(id)])
                        .wait(true);
                self.client.delete_payload(request).await
            }
        };
        match result {
            Ok(_) => Ok(()),
            // The server answers NotFound both for a missing point ("No point with id ...
            // found") and a missing collection; only a look tells which one it was.
            Err(e) if status_code(&e) == Some(Code::NotFound) => {
                match self.retrieve(id, false).await? {
                    None => Err(IndexError::NotFound(id)),
                    Some(_) => Err(client_error(e)),
                }
            }
            Err(e) => Err(client_error(e)),
        }
    }

    async fn ping(&self) -> Result<(), IndexError> {
        self.readiness.check()?;
        // A cheap approximate count: proves the server answers, the key is accepted and the
        // collection (or alias) exists, which a bare health check would not.
        let request = CountPointsBuilder::new(self.collection()).exact(false);
        self.client.count(request).await.map_err(client_error)?;
        Ok(())
    }

    fn name(&self) -> &'static str {
        "qdrant"
    }
}
