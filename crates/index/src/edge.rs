//! [`VectorIndex`](crate::VectorIndex) on embedded Qdrant (qdrant-edge 0.7.2): the whole
//! index lives in one data directory of this process, no server needed.
//!
//! What the engine does and does not guarantee, read from its 0.7.2 source, drives the design:
//!
//! * **Durability.** `EdgeShard::update` appends the operation to a WAL held in a memory map
//!   without syncing it, and 0.7.2 never replays or truncates that WAL on load (replay arrived
//!   in later versions, which need Rust 1.97). Only `flush()` (segment flush with fsync) makes
//!   a write durable. So every write here returns only after a `flush()` that covers it;
//!   concurrent writes share flushes (group commit, see `EdgeIndex::write`).
//! * **Flush panics on contention.** `flush()` `try_lock`s the WAL mutex and `try_read`s the
//!   segment holder and panics when either is taken. Updates take the WAL mutex and the
//!   optimizer write-locks the holder briefly when it swaps segments. One writer lock here
//!   serialises update+flush and optimize, so flush never meets a contended lock.
//! * **Optimize and queries.** `optimize()` wraps the segments in proxies, builds the new
//!   (HNSW) segment without holding the holder lock, and write-locks it only for the short swap.
//!   Queries take read locks only, so they keep running during an optimize (they may wait for
//!   the few milliseconds of the swap). Writes do wait for the whole optimize here, because of
//!   the writer lock above: ingest stalls while an index is built (about 100 s for 100k x 512 on
//!   2 cores when the whole collection is re-indexed); searches do not.
//! * **WAL growth.** Since 0.7.2 never acknowledges WAL entries, the WAL would keep every write
//!   forever. On open, before the engine loads, closed WAL files other than the newest are
//!   removed — exactly what the engine's own truncation keeps — which bounds it across restarts.
//!   The newest closed file and the open one stay so operation numbers keep growing: segments
//!   ignore operations numbered below a point's version.
//! * **The model condition.** The engine checks every filter condition on every point it scores,
//!   and a keyword match is a string comparison: the `model_id` condition cost about a third of a
//!   category-filtered top-10 at 100k points (`cargo bench --bench query`), and more where the
//!   engine scans a category exactly. Nearly always every point has the model searched for, so
//!   once the shard is known to hold that model only, searches leave the condition out (see
//!   `Models`).
//! * **Grouping.** 0.7.2 has no group-by (the server's lives a layer above the shard), so
//!   `search_groups` fetches more hits than it needs, groups them with [`group_hits`], and
//!   fetches more (doubling, up to a cap) while they hold too few groups. A group on the page
//!   whose hits were cut off by the fetch is completed by a query on its key alone.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use anyhow::Context as _;
use async_trait::async_trait;
use qdrant_edge::external::ordered_float::OrderedFloat;
use qdrant_edge::{
    Condition, CountRequest, CreateIndex, DEFAULT_VECTOR_NAME, DeletePayloadOp, EdgeConfig,
    EdgeShard, FieldCondition, FieldIndexOperations, Filter, Match, NamedQuery, Payload,
    PayloadFieldSchema, PayloadOps, PayloadSchemaType, PointId, PointInsertOperations,
    PointOperations, PointStruct, QueryEnum, QueryRequest, RecommendQuery, ScoringQuery,
    SearchParams, SetPayloadOp, UpdateOperation, VectorInternal, VectorStructInternal,
    WithPayloadInterface, WithVector,
};
use tokio::sync::Mutex;
use uuid::Uuid;

use crate::{
    ATTRS_KEY, CATEGORY_KEY, CategoryFilter, FieldKind, Group, GroupBy, Hit, IndexError,
    MODEL_ID_KEY, Point, SearchRequest, StoredPoint, check_per_group, field_path, group_hits, rank,
    rank_groups,
};

mod convert;
mod storage;
use convert::{build_filter, engine_error, json_path};
use storage::{edge_config, has_segments, trim_wal};

/// Tuning of the embedded index. `Default` suits the service; tests shrink the thresholds.
#[derive(Debug, Clone)]
pub struct EdgeOptions {
    /// Start a background optimize once this many points were upserted since the last one
    /// (0 = only when [`EdgeIndex::optimize_now`] is called). Until then new points sit in a
    /// plain segment that every query scans by brute force.
    pub optimize_after_points: usize,
    /// Segments with more vector data than this (KB) get an HNSW graph when optimized.
    /// `None` keeps the engine default of 10 000 KB (about 4 900 vectors of 512-d f32).
    pub indexing_threshold_kb: Option<usize>,
    /// Number of segments the merge optimizer aims for. `None` keeps the engine default
    /// (CPUs / 2, at least 2). More segments mean fewer full re-indexes when merging.
    pub target_segments: Option<usize>,
    /// A segment (or the filtered part of it) with less vector data than this (KB) is
    /// searched exactly instead of through its graph. `None` keeps the engine default of
    /// 10 000 KB, i.e. about 5 000 vectors of 512-d. Changing it on an existing index makes
    /// the next optimize rebuild every graph.
    pub full_scan_threshold_kb: Option<usize>,
    /// HNSW beam width at query time (raised to `offset + limit` when smaller).
    /// `None` uses the engine default (ef_construct, 100).
    pub search_ef: Option<usize>,
    /// Size of one WAL file. `None` keeps the engine default (32 MiB). Only tests shrink it.
    pub wal_segment_bytes: Option<usize>,
}

impl Default for EdgeOptions {
    fn default() -> Self {
        Self {
            optimize_after_points: 5_000,
            indexing_threshold_kb: None,
            target_segments: None,
            full_scan_threshold_kb: None,
            search_ef: Some(128),
            wal_segment_bytes: None,
        }
    }
}

/// Counters for tests and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EdgeStats {
    pub segments: usize,
    /// Approximate: counts deleted points until the segment holding them is optimized.
    pub points: usize,
    /// Vectors reachable through an HNSW graph; the rest are brute-forced.
    pub indexed_vectors: usize,
}

struct Inner {
    shard: EdgeShard,
    dim: usize,
    opts: EdgeOptions,
    /// Points upserted since the last optimize started.
    since_optimize: AtomicUsize,
    optimizing: AtomicBool,
    /// Group commit: number of updates applied, and how many of them a flush has covered.
    /// Both only change under the writer lock.
    applied: AtomicU64,
    flushed: AtomicU64,
    models: std::sync::Mutex<Models>,
}

/// What is known about the model ids in the shard. A write that may add another model holds
/// this lock across the engine update and forgets the state, so no search can find the new
/// point without the model condition, and a check that counted before the update is not kept.
#[derive(Default)]
struct Models {
    state: ModelState,
    /// Bumped by every such write.
    epoch: u64,
}

#[derive(Default, Clone, PartialEq)]
enum ModelState {
    #[default]
    Unknown,
    /// Every point has this model id.
    Sole(String),
    /// Some point has another model id than the one last checked.
    Mixed,
}

impl Models {
    fn forget(&mut self) {
        self.state = ModelState::Unknown;
        self.epoch += 1;
    }
}

/// The embedded backend. Blocking engine calls run on tokio's blocking pool.
pub struct EdgeIndex {
    inner: Arc<Inner>,
    /// Held across update+flush and across optimize (see module docs). Reads never take it.
    /// An async mutex, so writers queued behind a long optimize do not pin blocking threads.
    writer: Arc<Mutex<()>>,
    background: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl EdgeIndex {
    /// Create the shard in `dir` (created if missing) or load the one already there.
    /// Fails if an existing shard has another dimension, or if another `EdgeIndex` (in this or
    /// another process) has the directory open: the engine holds an exclusive lock on it.
    /// Blocking: call it before serving, or inside `spawn_blocking`.
    pub fn open(dir: &Path, dim: usize, opts: EdgeOptions) -> anyhow::Result<Self> {
        anyhow::ensure!(dim > 0, "vector dimension must be positive");
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating index directory {}", dir.display()))?;
        let config = edge_config(dim, &opts);
        let existing = dir.join(storage::EDGE_CONFIG_FILE).exists() || has_segments(dir)?;
        let shard = if existing {
            if let Some(Ok(old)) = EdgeConfig::load(dir) {
                let old_dim = old.vectors.get(DEFAULT_VECTOR_NAME).map(|v| v.size);
                anyhow::ensure!(
                    old_dim == Some(dim),
                    "index in {} holds vectors of dimension {old_dim:?}, not {dim}; \
                     re-embedding into a new directory is needed",
                    dir.display()
                );
            }
            trim_wal(dir)?;
            // Passing the config re-applies the current optimizer options to an old shard.
            EdgeShard::load(dir, Some(config))
        } else {
            EdgeShard::new(dir, config)
        }
        .map_err(|e| anyhow::anyhow!("opening qdrant-edge shard in {}: {e}", dir.display()))?;

        // Idempotent: segments that already have the index skip it. Re-issued on every open
        // because a fresh appendable segment made at load time would lack it (and so that an
        // index made before grouped search gains the group keys' indexes).
        let group_keys = GroupBy::ALL.map(GroupBy::path);
        let keys = [CATEGORY_KEY, MODEL_ID_KEY]
            .into_iter()
            .chain(group_keys.iter().map(String::as_str));
        for key in keys {
            shard
                .update(UpdateOperation::FieldIndexOperation(
                    FieldIndexOperations::CreateIndex(CreateIndex {
                        field_name: json_path(key),
                        field_schema: Some(PayloadFieldSchema::FieldType(
                            PayloadSchemaType::Keyword,
                        )),
                    }),
                ))
                .map_err(|e| anyhow::anyhow!("creating payload index on {key}: {e}"))?;
        }
        shard.flush();
        // Points not reachable through a graph were written since the last optimize (or were
        // too few to index): count them toward the next one, so that points ingested before a
        // restart do not wait for another `optimize_after_points` new ones.
        let info = shard.info();
        let unindexed = info.points_count.saturating_sub(info.indexed_vectors_count);

        Ok(Self {
            inner: Arc::new(Inner {
                shard,
                dim,
                opts,
                since_optimize: AtomicUsize::new(unindexed),
                optimizing: AtomicBool::new(false),
                applied: AtomicU64::new(0),
                flushed: AtomicU64::new(0),
                models: std::sync::Mutex::default(),
            }),
            writer: Arc::new(Mutex::new(())),
            background: std::sync::Mutex::new(None),
        })
    }

    /// Build HNSW graphs / merge / vacuum segments now and wait for it. Returns whether the
    /// engine changed anything. Searches keep running meanwhile; writes wait.
    pub async fn optimize_now(&self) -> Result<bool, IndexError> {
        run_optimize(self.inner.clone(), self.writer.clone()).await
    }

    /// Start a background optimize if enough unindexed points are waiting, e.g. those found on
    /// open. Call once the service runs (it needs a tokio runtime); writes do this themselves.
    pub fn optimize_if_due(&self) {
        self.maybe_schedule_optimize(0);
    }

    /// Points upserted since the last optimize started (on open: the points without a graph).
    pub fn pending_points(&self) -> usize {
        self.inner.since_optimize.load(Ordering::Acquire)
    }

    /// Segment and point counters.
    pub async fn stats(&self) -> Result<EdgeStats, IndexError> {
        self.read(|shard| {
            let info = shard.info();
            Ok(EdgeStats {
                segments: info.segments_count,
                points: info.points_count,
                indexed_vectors: info.indexed_vectors_count,
            })
        })
        .await
    }

    /// Wait for a running background optimize, then release the shard (flushing it) so the
    /// directory can be opened again. Dropping the index without `close` also flushes, but
    /// on the dropping thread, and a running optimize keeps the shard alive until it ends.
    pub async fn close(self) -> Result<(), IndexError> {
        let pending = self.background.lock().expect("not poisoned").take();
        if let Some(handle) = pending {
            let _ = handle.await;
        }
        let writes_done = self.writer.clone().lock_owned().await;
        let inner = self.inner.clone();
        drop(self);
        tokio::task::spawn_blocking(move || {
            let _writes_done = writes_done;
            // A cancelled caller's blocking task may still hold a clone for a moment.
            let mut inner = inner;
            for _ in 0..1000 {
                match Arc::try_unwrap(inner) {
                    Ok(owned) => return drop(owned),
                    Err(shared) => inner = shared,
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            tracing::warn!("index still referenced after close; it flushes when released");
        })
        .await
        .map_err(join_error)
    }

    /// A point lookup by id takes microseconds: run it on the calling thread rather than pay a
    /// hand-off to the blocking pool and back (measured: a visible share of a similar-by-id request
    /// at 10,000 items). Queries and counts, which scan, still go through [`Self::read`].
    fn read_now<T>(
        &self,
        f: impl FnOnce(&EdgeShard) -> Result<T, IndexError>,
    ) -> Result<T, IndexError> {
        f(&self.inner.shard)
    }

    async fn read<T, F>(&self, f: F) -> Result<T, IndexError>
    where
        T: Send + 'static,
        F: FnOnce(&EdgeShard) -> Result<T, IndexError> + Send + 'static,
    {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || f(&inner.shard))
            .await
            .map_err(join_error)?
    }

    /// Apply one engine update and return once a flush has covered it (see module docs).
    ///
    /// A flush costs tens of milliseconds (it fsyncs every segment), so concurrent writers
    /// share one: each applies its update under the writer lock, then queues for the lock
    /// again; the first to get it flushes everything applied so far, and the others find
    /// their update already covered. Sequential callers still pay one flush per call.
    async fn write(&self, op: UpdateOperation, new_model: bool) -> Result<(), IndexError> {
        let guard = self.writer.clone().lock_owned().await;
        let inner = self.inner.clone();
        // The guard moves into the blocking task: if the caller is cancelled, the task still
        // finishes before the next writer (or a flush) gets the lock.
        let seq = tokio::task::spawn_blocking(move || {
            let _guard = guard;
            let _models = new_model.then(|| {
                let mut models = lock_models(&inner);
                models.forget();
                models
            });
            inner.shard.update(op).map_err(engine_error)?;
            Ok::<_, IndexError>(inner.applied.fetch_add(1, Ordering::AcqRel) + 1)
        })
        .await
        .map_err(join_error)??;

        if self.inner.flushed.load(Ordering::Acquire) >= seq {
            return Ok(());
        }
        let guard = self.writer.clone().lock_owned().await;
        if self.inner.flushed.load(Ordering::Acquire) >= seq {
            return Ok(());
        }
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let _guard = guard;
            flush(&inner);
        })
        .await
        .map_err(join_error)
    }

    fn check_vector(&self, vector: &[f32]) -> Result<(), IndexError> {
        if vector.len() != self.inner.dim {
            return Err(IndexError::Invalid(format!(
                "vector has dimension {}, index expects {}",
                vector.len(),
                self.inner.dim
            )));
        }
        if vector.iter().any(|x| !x.is_finite()) {
            return Err(IndexError::Invalid("vector has non-finite values".into()));
        }
        Ok(())
    }

    /// Checks a search request and turns it into the engine's terms, ready to run at any limit;
    /// `None` when the answer is empty whatever the index holds (an empty `AnyOf`, limit 0).
    async fn prepare_search(&self, req: SearchRequest) -> Result<Option<Prepared>, IndexError> {
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
        let model_id = match req.model_id {
            Some(m) if self.only_model(&m).await? => None,
            other => other,
        };
        let Some(filter) =
            build_filter(&req.filter, model_id.as_deref(), &req.exclude, &req.fields)
        else {
            return Ok(None); // AnyOf([]) matches nothing
        };
        if req.limit == 0 {
            return Ok(None);
        }
        let query = ScoringQuery::Vector(match req.recommend {
            None => QueryEnum::Nearest(NamedQuery::default_dense(req.vector)),
            Some(r) => QueryEnum::RecommendBestScore(NamedQuery {
                query: RecommendQuery::new(
                    r.positive.into_iter().map(VectorInternal::from).collect(),
                    r.negative.into_iter().map(VectorInternal::from).collect(),
                ),
                using: None,
            }),
        });
        Ok(Some(Prepared {
            query,
            filter,
            min_score: req.min_score,
            exact: req.exact,
            search_ef: self.inner.opts.search_ef,
            offset: req.offset,
            limit: req.limit,
        }))
    }

    /// The hits of one engine query, ranked.
    async fn run(&self, request: QueryRequest) -> Result<Vec<Hit>, IndexError> {
        let mut all = self.run_all(vec![request]).await?;
        Ok(all.pop().unwrap_or_default())
    }

    /// The hits of several engine queries, each ranked, in one trip to the blocking pool.
    async fn run_all(&self, requests: Vec<QueryRequest>) -> Result<Vec<Vec<Hit>>, IndexError> {
        self.read(move |shard| {
            requests
                .into_iter()
                .map(|request| {
                    let points = shard.query(request).map_err(engine_error)?;
                    let mut hits = points
                        .into_iter()
                        .map(|p| {
                            Ok(Hit {
                                id: uuid_of(p.id)?,
                                score: p.score,
                                category: category_of(p.payload.as_ref()),
                                attrs: payload_field(p.payload.as_ref(), ATTRS_KEY).cloned(),
                            })
                        })
                        .collect::<Result<Vec<_>, IndexError>>()?;
                    rank(&mut hits);
                    Ok(hits)
                })
                .collect()
        })
        .await
    }

    fn models(&self) -> std::sync::MutexGuard<'_, Models> {
        lock_models(&self.inner)
    }

    /// Whether every point in the shard has model id `model` (then a search for it needs no
    /// model condition). Counted once and cached until a write of another model.
    async fn only_model(&self, model: &str) -> Result<bool, IndexError> {
        let epoch = {
            let models = self.models();
            match &models.state {
                ModelState::Sole(m) => return Ok(m == model),
                ModelState::Mixed => return Ok(false),
                ModelState::Unknown => models.epoch,
            }
        };
        let Some(of_model) = build_filter(&CategoryFilter::Any, Some(model), &[], &[]) else {
            return Ok(false);
        };
        let sole = self
            .read(move |shard| {
                let count = |filter| {
                    shard
                        .count(CountRequest {
                            filter,
                            exact: true,
                        })
                        .map_err(engine_error)
                };
                Ok(count(None)? == count(of_model)?)
            })
            .await?;
        let mut models = self.models();
        if models.epoch == epoch && models.state == ModelState::Unknown {
            models.state = if sole {
                ModelState::Sole(model.to_owned())
            } else {
                ModelState::Mixed
            };
        }
        Ok(sole)
    }

    fn maybe_schedule_optimize(&self, added: usize) {
        let threshold = self.inner.opts.optimize_after_points;
        let pending = self.inner.since_optimize.fetch_add(added, Ordering::AcqRel) + added;
        if threshold == 0 || pending < threshold {
            return;
        }
        if self.inner.optimizing.swap(true, Ordering::AcqRel) {
            return; // one at a time; the points keep counting toward the next run
        }
        let (inner, writer) = (self.inner.clone(), self.writer.clone());
        let handle = tokio::spawn(async move {
            if let Err(e) = run_optimize(inner.clone(), writer).await {
                tracing::error!(error = %e, "background optimize failed");
            }
            inner.optimizing.store(false, Ordering::Release);
        });
        *self.background.lock().expect("not poisoned") = Some(handle);
    }
}

/// Hits fetched at first by a grouped search: four per group wanted, at least this many, so that
/// a product with a few images near the query rarely needs a second fetch.
const GROUP_FETCH_START: usize = 64;
/// The most hits a grouped search fetches (doubling from the start). Past it the answer holds
/// fewer groups than asked for, which takes a few products owning thousands of images nearer to
/// the query than any other product's.
const GROUP_FETCH_CAP: usize = 10_000;

/// Extra hits a group's completing query fetches, so that equal scores at the `per_group` cut
/// (copies of one image) are chosen by id, as a search chooses them.
const GROUP_TIES: usize = 16;

/// A checked search request in the engine's terms, which `search` and `search_groups` run at the
/// limits (and with the extra conditions) they need.
struct Prepared {
    query: ScoringQuery,
    /// `None`: no filter.
    filter: Option<Filter>,
    min_score: Option<f32>,
    exact: bool,
    search_ef: Option<usize>,
    offset: usize,
    limit: usize,
}

impl Prepared {
    /// The engine query for the top `limit` points, also meeting `and` when given.
    fn request(&self, limit: usize, and: Option<Condition>) -> QueryRequest {
        let ef = self.search_ef.map(|ef| ef.max(limit));
        QueryRequest {
            prefetches: Vec::new(),
            query: Some(self.query.clone()),
            filter: Filter::merge_opts(self.filter.clone(), and.map(Filter::new_must)),
            score_threshold: self.min_score.map(OrderedFloat),
            // 0.7.2's query() fetches offset + limit hits but never drops the first `offset`
            // (the server does that a layer above the shard), so callers page themselves.
            limit,
            offset: 0,
            params: (ef.is_some() || self.exact).then(|| SearchParams {
                hnsw_ef: ef,
                exact: self.exact,
                ..SearchParams::default()
            }),
            with_vector: WithVector::Bool(false),
            with_payload: WithPayloadInterface::Fields(vec![
                json_path(CATEGORY_KEY),
                json_path(ATTRS_KEY),
            ]),
        }
    }
}

async fn run_optimize(inner: Arc<Inner>, writer: Arc<Mutex<()>>) -> Result<bool, IndexError> {
    let guard = writer.lock_owned().await;
    tokio::task::spawn_blocking(move || {
        let _guard = guard;
        let pending = inner.since_optimize.swap(0, Ordering::AcqRel);
        let started = Instant::now();
        let changed = inner.shard.optimize().map_err(engine_error);
        flush(&inner);
        let info = inner.shard.info();
        tracing::info!(
            changed = ?changed.as_ref().ok(),
            new_points = pending,
            points = info.points_count,
            indexed = info.indexed_vectors_count,
            segments = info.segments_count,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "qdrant-edge optimize finished"
        );
        changed
    })
    .await
    .map_err(join_error)?
}

#[async_trait]
impl crate::VectorIndex for EdgeIndex {
    async fn upsert(&self, points: Vec<Point>) -> Result<(), IndexError> {
        if points.is_empty() {
            return Ok(());
        }
        let new_model = !matches!(
            &self.models().state,
            ModelState::Sole(m) if points.iter().all(|p| p.model_id == *m)
        );
        let mut records = Vec::with_capacity(points.len());
        for p in points {
            self.check_vector(&p.vector)?;
            let payload = p.payload();
            let point = PointStruct::new(PointId::Uuid(p.id), p.vector, payload.into());
            records.push(point.into());
        }
        let added = records.len();
        self.write(
            UpdateOperation::PointOperation(PointOperations::UpsertPoints(
                PointInsertOperations::PointsList(records),
            )),
            new_model,
        )
        .await?;
        self.maybe_schedule_optimize(added);
        Ok(())
    }

    async fn search(&self, req: SearchRequest) -> Result<Vec<Hit>, IndexError> {
        let Some(prepared) = self.prepare_search(req).await? else {
            return Ok(Vec::new());
        };
        let (offset, limit) = (prepared.offset, prepared.limit);
        let hits = self.run(prepared.request(offset + limit, None)).await?;
        Ok(hits.into_iter().skip(offset).collect())
    }

    async fn search_groups(
        &self,
        req: SearchRequest,
        by: GroupBy,
        per_group: usize,
    ) -> Result<Vec<Group>, IndexError> {
        check_per_group(per_group)?;
        let Some(prepared) = self.prepare_search(req).await? else {
            return Ok(Vec::new());
        };
        let (offset, limit) = (prepared.offset, prepared.limit);
        let wanted = offset + limit;
        // The engine has no group-by: fetch the top hits and group them, fetching more while the
        // hits seen so far hold too few groups.
        let mut fetch = wanted
            .saturating_mul(4)
            .clamp(GROUP_FETCH_START, GROUP_FETCH_CAP);
        let (groups, exhausted) = loop {
            let hits = self.run(prepared.request(fetch, None)).await?;
            let exhausted = hits.len() < fetch;
            let groups = group_hits(hits, by, per_group);
            if groups.len() >= wanted || exhausted || fetch >= GROUP_FETCH_CAP {
                break (groups, exhausted);
            }
            fetch = fetch.saturating_mul(2).min(GROUP_FETCH_CAP);
        };
        let mut page: Vec<Group> = groups.into_iter().skip(offset).take(limit).collect();
        if exhausted || per_group == 1 {
            return Ok(page);
        }
        // A group with fewer than `per_group` hits among those fetched may have more just below
        // them (a product with images near the query and others far from it): one query per such
        // group, restricted to its key, finds its best ones. On the keyword index that is a
        // lookup of the group's few points, not a scan.
        let short: Vec<usize> = (0..page.len())
            .filter(|&i| page[i].key.is_some() && page[i].hits.len() < per_group)
            .collect();
        if short.is_empty() {
            return Ok(page);
        }
        let path = json_path(&by.path());
        let requests = short
            .iter()
            .map(|&i| {
                let key = page[i].key.clone().expect("only keyed groups are filled");
                let same_key =
                    Condition::Field(FieldCondition::new_match(path.clone(), Match::from(key)));
                // A few more than needed, so that equal scores at the cut go by id.
                prepared.request(per_group.saturating_add(GROUP_TIES), Some(same_key))
            })
            .collect();
        let filled = self.run_all(requests).await?;
        for (i, more) in short.into_iter().zip(filled) {
            let group = &mut page[i];
            let mut hits = std::mem::take(&mut group.hits);
            hits.extend(more);
            rank(&mut hits);
            hits.dedup_by_key(|h| h.id);
            hits.truncate(per_group);
            group.hits = hits;
        }
        // Only an approximate search can find a better best hit this way; keep the page ordered.
        rank_groups(&mut page);
        Ok(page)
    }

    async fn get_point(&self, id: Uuid) -> Result<Option<StoredPoint>, IndexError> {
        let records = self.read_now(|shard| {
            shard
                .retrieve(
                    &[PointId::Uuid(id)],
                    Some(WithPayloadInterface::Bool(true)),
                    Some(WithVector::Bool(true)),
                )
                .map_err(engine_error)
        })?;
        let Some(record) = records.into_iter().next() else {
            return Ok(None);
        };
        let vector = match record.vector {
            Some(VectorStructInternal::Single(v)) => v,
            Some(VectorStructInternal::Named(mut named)) => {
                match named.remove(DEFAULT_VECTOR_NAME) {
                    Some(VectorInternal::Dense(v)) => v,
                    _ => return Ok(None),
                }
            }
            _ => return Ok(None),
        };
        let payload = record.payload.as_ref();
        Ok(Some(StoredPoint {
            id,
            vector,
            category: category_of(payload),
            model_id: payload_field(payload, MODEL_ID_KEY)
                .and_then(|v| v.as_str())
                .map(str::to_owned),
            attrs: payload_field(payload, ATTRS_KEY).cloned(),
        }))
    }

    async fn delete(&self, ids: &[Uuid]) -> Result<(), IndexError> {
        if ids.is_empty() {
            return Ok(());
        }
        let ids = ids.iter().copied().map(PointId::Uuid).collect();
        self.write(
            UpdateOperation::PointOperation(PointOperations::DeletePoints { ids }),
            false,
        )
        .await?;
        // Deleting may have removed the last point of another model: check again when asked.
        let mut models = self.models();
        if models.state == ModelState::Mixed {
            models.state = ModelState::Unknown;
        }
        Ok(())
    }

    async fn count(&self, filter: CategoryFilter) -> Result<u64, IndexError> {
        let Some(filter) = build_filter(&filter, None, &[], &[]) else {
            return Ok(0);
        };
        let request = CountRequest {
            filter,
            exact: true,
        };
        let n = self
            .read(move |shard| shard.count(request).map_err(engine_error))
            .await?;
        Ok(n as u64)
    }

    async fn set_attrs(&self, id: Uuid, attrs: serde_json::Value) -> Result<(), IndexError> {
        // Setting one top-level key replaces its whole value, leaving the other keys as they are.
        let mut payload = serde_json::Map::new();
        payload.insert(ATTRS_KEY.into(), attrs);
        let op = PayloadOps::SetPayload(SetPayloadOp {
            payload: Payload(payload),
            points: Some(vec![PointId::Uuid(id)]),
            filter: None,
            key: None,
        });
        self.write(UpdateOperation::PayloadOperation(op), false)
            .await
    }

    async fn index_fields(&self, fields: &[(String, FieldKind)]) -> Result<(), IndexError> {
        for (name, kind) in fields {
            let schema = match kind {
                FieldKind::Keyword => PayloadSchemaType::Keyword,
                FieldKind::Number => PayloadSchemaType::Float,
                FieldKind::Bool => PayloadSchemaType::Bool,
            };
            let op = UpdateOperation::FieldIndexOperation(FieldIndexOperations::CreateIndex(
                CreateIndex {
                    field_name: json_path(&field_path(name)),
                    field_schema: Some(PayloadFieldSchema::FieldType(schema)),
                },
            ));
            self.write(op, false).await?;
        }
        Ok(())
    }

    async fn set_category(&self, id: Uuid, category: Option<String>) -> Result<(), IndexError> {
        let points = Some(vec![PointId::Uuid(id)]);
        let op = match category {
            Some(category) => {
                let mut payload = serde_json::Map::new();
                payload.insert(CATEGORY_KEY.into(), category.into());
                PayloadOps::SetPayload(SetPayloadOp {
                    payload: Payload(payload),
                    points,
                    filter: None,
                    key: None,
                })
            }
            None => PayloadOps::DeletePayload(DeletePayloadOp {
                keys: vec![json_path(CATEGORY_KEY)],
                points,
                filter: None,
            }),
        };
        self.write(UpdateOperation::PayloadOperation(op), false)
            .await
    }

    async fn ping(&self) -> Result<(), IndexError> {
        // Embedded: the engine cannot be "down", but its directory can vanish (unmounted volume).
        let path = self.inner.shard.path().to_path_buf();
        match tokio::fs::metadata(&path).await {
            Ok(meta) if meta.is_dir() => Ok(()),
            _ => Err(IndexError::Unavailable(format!(
                "index directory {} is gone",
                path.display()
            ))),
        }
    }

    fn name(&self) -> &'static str {
        "qdrant-edge"
    }
}

/// Flush everything applied so far. Call only under the writer lock: `EdgeShard::flush`
/// panics if an update (or an optimizer segment swap) holds the engine's locks.
fn flush(inner: &Inner) {
    let upto = inner.applied.load(Ordering::Acquire);
    inner.shard.flush();
    inner.flushed.store(upto, Ordering::Release);
}

fn lock_models(inner: &Inner) -> std::sync::MutexGuard<'_, Models> {
    inner
        .models
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn join_error(e: tokio::task::JoinError) -> IndexError {
    // A panic inside the engine (e.g. flush on a full disk `expect`s success) lands here.
    IndexError::Unavailable(format!("index task failed: {e}"))
}

fn uuid_of(id: PointId) -> Result<Uuid, IndexError> {
    match id {
        PointId::Uuid(u) => Ok(u),
        PointId::NumId(n) => Err(IndexError::Unavailable(format!(
            "index holds a numeric point id {n}; only UUIDs are written"
        ))),
    }
}

fn category_of(payload: Option<&Payload>) -> Option<String> {
    payload_field(payload, CATEGORY_KEY)?
        .as_str()
        .map(str::to_owned)
}

fn payload_field<'a>(payload: Option<&'a Payload>, key: &str) -> Option<&'a serde_json::Value> {
    payload?.0.get(key)
}
