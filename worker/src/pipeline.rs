//! One job, start to finish: claim -> bytes -> clean -> embed -> categorise -> index -> commit.
//!
//! Every step is idempotent, so a job redelivered after a crash at any point ends with exactly one item
//! and one vector: the item id and the vector id are the job id, the index upsert and the item insert
//! are keyed on it, and a job already finished is not run again.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

use lookalike_core::codes::job as code;
use lookalike_index::{CategoryFilter, Point, SearchRequest, VectorIndex};
use lookalike_store::{CategorySource, Claim, Job, NewItem, Store};
use lookalike_telemetry::{JobStatus, Stage, time_stage};
use lookalike_vision::{DecodeLimits, Region};
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;
use uuid::Uuid;

use crate::batcher::{Batcher, Priority};
use crate::classify;
use crate::error::JobError;
use crate::fetch::Fetcher;
use crate::heads::Heads;
use crate::prior::{self, Masses, Prior};

/// Everything a job needs, shared by all jobs of a worker.
pub struct Pipeline {
    pub store: Store,
    pub index: Arc<dyn VectorIndex>,
    pub batcher: Batcher,
    pub fetcher: Fetcher,
    pub limits: DecodeLimits,
    /// Bounds CPU-heavy decode and resize work so it never starves inference or the runtime.
    pub decode_permits: Arc<Semaphore>,
    pub thumbnail_size: u32,
    /// Reuse the analysis of byte-identical images already stored.
    pub reuse_identical: bool,
    pub classify: lookalike_core::config::Classify,
    /// Cold-start prior for categories without labelled items (`classify.categories` in config).
    pub prior: Option<Arc<Prior>>,
    /// The trained classifier head in use (shared with the rest of the process, kept current by
    /// [`crate::heads::maintain`]).
    pub heads: Arc<Heads>,
    pub max_attempts: u32,
}

/// How an item got its category.
#[derive(Debug, Clone, PartialEq)]
pub enum CategoryDecision {
    Provided(String),
    Predicted(classify::Prediction),
    None,
}

/// An item to leave out of a classification (leave-one-out evaluation, or re-classifying the item itself).
#[derive(Debug, Clone)]
pub struct Exclude {
    pub id: Uuid,
    /// Its provided category and vector, to take it back out of that category's prototype.
    pub labelled: Option<(String, Vec<f32>)>,
}

/// What the consumer should do with the message after a job ran.
#[derive(Debug)]
pub enum Outcome {
    /// Finished (succeeded or failed for good), or nothing to do: ack.
    Done,
    /// A transient failure on attempt `attempt`: schedule a retry (or give up past the limit).
    Retry { error: JobError, attempt: u32 },
    /// A dependency is misconfigured ([`JobError::blocked`]); the job is queued again with its
    /// attempt uncounted: hand the message back and stop consuming until it is fixed.
    Blocked { error: JobError },
}

/// The result of analysing one image: what both ingest and search need.
pub struct Analysis {
    pub format: String,
    pub width: u32,
    pub height: u32,
    pub embedding: Vec<f32>,
    /// The model's pooled tokens, what the classifier head reads (none for a model without a token
    /// output).
    pub features: Option<Vec<f32>>,
    pub thumbnail_jpeg: Vec<u8>,
    /// What the cold-start prior says, when some configured category has no labelled items yet.
    pub prior: Option<Masses>,
}

impl Pipeline {
    pub fn model_id(&self) -> &str {
        &self.batcher.embedder().spec().id
    }

    /// Whether the model makes features for the classifier head (a token output), which every item
    /// then keeps.
    pub fn makes_features(&self) -> bool {
        self.batcher.embedder().spec().features_output.is_some()
    }

    pub async fn run(&self, job_id: Uuid) -> Result<Outcome, JobError> {
        let job = match self.store.claim_job(job_id).await? {
            Claim::Run(job) => job,
            Claim::Finished(job) => {
                tracing::info!(status = ?job.status, "job already finished; redelivery ignored");
                return Ok(Outcome::Done);
            }
            Claim::Missing => {
                tracing::warn!("no such job; message dropped");
                return Ok(Outcome::Done);
            }
        };
        let attempt = job.attempts.max(1) as u32;
        if attempt > self.max_attempts {
            // Reached through crash loops: each delivery counts, even one that never finished.
            let last = job
                .error_message
                .clone()
                .unwrap_or_else(|| "the worker stopped while processing it".into());
            let message = format!(
                "gave up after {} attempts; last error: {last}",
                self.max_attempts
            );
            self.store
                .fail_job(job.id, code::ATTEMPTS_EXHAUSTED, &message)
                .await?;
            tracing::warn!(attempts = job.attempts, "job failed: attempts exhausted");
            lookalike_telemetry::job_finished(JobStatus::Failed, code::ATTEMPTS_EXHAUSTED);
            return Ok(Outcome::Done);
        }
        tracing::info!(attempt, source = job.source_kind, "job started");
        match self.ingest(&job).await {
            Ok(()) => {
                lookalike_telemetry::job_finished(
                    JobStatus::Succeeded,
                    lookalike_telemetry::NO_CODE,
                );
                Ok(Outcome::Done)
            }
            Err(error) if error.transient => Ok(Outcome::Retry { error, attempt }),
            Err(error) if error.blocked => {
                self.store
                    .release_job(job.id, error.code, &error.message)
                    .await?;
                tracing::warn!(code = error.code, error = %error.message, "job put back: a dependency is misconfigured");
                Ok(Outcome::Blocked { error })
            }
            Err(error) => {
                self.store
                    .fail_job(job.id, error.code, &error.message)
                    .await?;
                tracing::warn!(code = error.code, error = %error.message, "job failed");
                lookalike_telemetry::job_finished(JobStatus::Failed, error.code);
                Ok(Outcome::Done)
            }
        }
    }

    async fn ingest(&self, job: &Job) -> Result<(), JobError> {
        let started = Instant::now();
        let bytes = {
            let _timed = time_stage(Stage::Download);
            self.source_bytes(job).await?
        };
        let downloaded = started.elapsed();
        tracing::debug!(
            bytes = bytes.len(),
            ms = downloaded.as_millis() as u64,
            "image fetched"
        );
        let (content_sha256, byte_size) = (hex::encode(Sha256::digest(&bytes)), bytes.len());
        let analysis = match self.reuse(&content_sha256, job.id).await? {
            Some(stored) => stored,
            None => self.analyse(bytes, true, Priority::Ingest).await?,
        };
        let decision = match &job.category {
            Some(c) => CategoryDecision::Provided(c.clone()),
            None => match self
                .timed_classify(
                    &analysis.embedding,
                    analysis.features.as_deref(),
                    analysis.prior.as_ref(),
                    Some(&Exclude {
                        id: job.id,
                        labelled: None,
                    }),
                )
                .await?
            {
                Some(p) => CategoryDecision::Predicted(p),
                None => CategoryDecision::None,
            },
        };
        if let CategoryDecision::Predicted(p) = &decision {
            tracing::debug!(category = %p.category, confidence = p.confidence, "category predicted");
        }
        self.commit(job.id, analysis, &decision, content_sha256, byte_size)
            .await?;
        let (category, source) = decision.parts();
        tracing::info!(
            category = category.as_deref().unwrap_or("-"),
            category_source = source.as_str(),
            bytes = byte_size,
            download_ms = downloaded.as_millis() as u64,
            total_ms = started.elapsed().as_millis() as u64,
            "job succeeded"
        );
        Ok(())
    }

    /// Stores an analysed image as the job's item: vector first, then the item and job state in one
    /// transaction (so a crash in between leaves a vector that the redelivery overwrites, never an item
    /// without its vector). A job reusing an item's `external_id` updates that item; the database lock
    /// taken by `begin_item` is held across the index write, so concurrent updates of one item cannot
    /// leave the index holding a different vector than the database.
    pub async fn commit(
        &self,
        job_id: Uuid,
        analysis: Analysis,
        decision: &CategoryDecision,
        content_sha256: String,
        byte_size: usize,
    ) -> Result<(), JobError> {
        let (category, source) = decision.parts();
        let (confidence, head_version) = match decision {
            CategoryDecision::Predicted(p) => (Some(p.confidence), p.head_version),
            _ => (None, None),
        };
        let write = self.store.begin_item(job_id).await?;
        let item_id = write.item_id;
        let restore = write.replaces.as_ref().and_then(|old| {
            Some(Point {
                id: old.id,
                vector: old.embedding.clone()?,
                category: old.category.clone(),
                model_id: old.model_id.clone(),
                attrs: Some(point_attrs(write.external_id.as_deref(), &old.metadata)),
            })
        });
        let point = Point {
            id: item_id,
            vector: analysis.embedding.clone(),
            category: category.clone(),
            model_id: self.model_id().to_string(),
            attrs: Some(point_attrs(write.external_id.as_deref(), &write.metadata)),
        };
        {
            let _timed = time_stage(Stage::Index);
            self.index.upsert(vec![point]).await?;
        }
        let item = NewItem {
            content_sha256,
            byte_size: byte_size as i64,
            format: analysis.format,
            width: analysis.width as i32,
            height: analysis.height as i32,
            category,
            category_source: source,
            category_confidence: confidence,
            head_version,
            model_id: self.model_id().to_string(),
            thumbnail_jpeg: analysis.thumbnail_jpeg,
            vector: analysis.embedding,
            features: analysis.features,
        };
        let committed = {
            let _timed = time_stage(Stage::Commit);
            write.commit(&item).await
        };
        if let Err(e) = committed {
            // Put the index back the way the database still has it; a redelivery writes it again.
            match restore {
                Some(old) => {
                    let _ = self.index.upsert(vec![old]).await;
                }
                None if item_id == job_id => {
                    if matches!(e, lookalike_store::StoreError::Conflict(_)) {
                        // The item will never be stored: no ghost result.
                        self.index.delete(&[job_id]).await?;
                    }
                }
                None => {}
            }
            return Err(e.into());
        }
        if item_id != job_id {
            tracing::info!(item = %item_id, "external_id already in use: that item was updated");
        }
        Ok(())
    }

    async fn source_bytes(&self, job: &Job) -> Result<Vec<u8>, JobError> {
        match job.source_url.as_deref() {
            Some(url) => self.fetcher.fetch(url).await,
            None => self.store.upload_bytes(job.id).await?.ok_or_else(|| {
                JobError::permanent(
                    code::UPLOAD_MISSING,
                    "the uploaded bytes of this job are gone",
                )
            }),
        }
    }

    /// The analysis of identical bytes stored earlier with the same model, if any: catalogues repeat
    /// images a lot (eBay found a third of listing images were duplicates), and the model run is the
    /// expensive part. Content hashes are SHA-256, so equal hashes mean equal bytes.
    async fn reuse(&self, sha256: &str, job_id: Uuid) -> Result<Option<Analysis>, JobError> {
        if !self.reuse_identical {
            return Ok(None);
        }
        let Some(item) = self
            .store
            .item_with_content(sha256, self.model_id(), job_id)
            .await?
        else {
            return Ok(None);
        };
        let (Some(embedding), Some(thumbnail_jpeg)) = (
            self.index.get_vector(item.id).await?,
            self.store.thumbnail(item.id).await?,
        ) else {
            return Ok(None);
        };
        let features = self.store.item_features(item.id).await?;
        if features.is_none() && self.makes_features() {
            // Stored before features were kept: run the model, so this item gets them.
            return Ok(None);
        }
        tracing::info!(from_item = %item.id, "same bytes as a stored item: embedding reused");
        Ok(Some(Analysis {
            format: item.format,
            width: item.width as u32,
            height: item.height as u32,
            embedding,
            features,
            thumbnail_jpeg,
            prior: None,
        }))
    }

    /// Decode, clean, thumbnail and embed one image. Used for ingest and for search queries; a query
    /// that is not kept skips the thumbnail (a third of the image work around the model).
    pub async fn analyse(
        &self,
        bytes: Vec<u8>,
        thumbnail: bool,
        priority: Priority,
    ) -> Result<Analysis, JobError> {
        self.analyse_region(bytes, thumbnail, None, priority).await
    }

    /// [`Pipeline::analyse`] of one region of the image (a search on part of a photo): the image is
    /// decoded at a size that leaves the region's shorter side at the model's input size or more,
    /// cleaned (orientation first: the region is of the upright image), then only the region is
    /// embedded. `width` and `height` stay the whole image's.
    pub async fn analyse_region(
        &self,
        bytes: Vec<u8>,
        thumbnail: bool,
        region: Option<Region>,
        priority: Priority,
    ) -> Result<Analysis, JobError> {
        let permit = self
            .decode_permits
            .clone()
            .acquire_owned()
            .await
            .expect("semaphore never closed");
        let limits = self.limits.clone();
        let spec = self.batcher.embedder().spec().clone();
        let thumb = self.thumbnail_size;
        // The prior model runs only while it has something to say: some category is still cold.
        let prior = match &self.prior {
            Some(p) if !self.cold_categories(p, None).await?.is_empty() => Some(p.clone()),
            _ => None,
        };
        let (image, tensor, thumbnail_jpeg, prior) = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let decoding = time_stage(Stage::Decode);
            // In draft when the model's recipe says so: the DCT-scaled decode of a large JPEG
            // is the cheapest way to the pixels the model (and the thumbnail) needs.
            let draft = match (spec.draft_size(), region) {
                (Some(size), Some(r)) => Some(r.draft_size(size)),
                (draft, _) => draft,
            };
            let image = lookalike_vision::clean_for(&bytes, &limits, draft)?;
            let cropped = match region {
                Some(r) => {
                    r.check_size(image.width, image.height).map_err(|e| {
                        JobError::permanent(lookalike_core::codes::search::BOX_TOO_SMALL, e)
                    })?;
                    Some(r.crop(&image.rgb))
                }
                None => None,
            };
            let pixels = cropped.as_ref().unwrap_or(&image.rgb);
            let tensor = lookalike_vision::to_tensor(pixels, &spec);
            let thumbnail = if thumbnail {
                lookalike_vision::thumbnail_jpeg(pixels, thumb)
            } else {
                Vec::new()
            };
            drop(decoding);
            let prior = match prior {
                Some(p) => Some(p.masses(pixels).map_err(|e| {
                    JobError::transient(code::INFERENCE_FAILED, format!("prior model: {e:#}"))
                })?),
                None => None,
            };
            Ok::<_, JobError>((image, tensor, thumbnail, prior))
        })
        .await
        .map_err(|e| {
            JobError::permanent(code::INFERENCE_FAILED, format!("image worker crashed: {e}"))
        })??;
        let output = self
            .batcher
            .embed(tensor, priority)
            .await
            .map_err(|e| JobError::transient(code::INFERENCE_FAILED, e))?;
        tracing::debug!(
            format = image.format,
            width = image.width,
            height = image.height,
            "image decoded and embedded"
        );
        Ok(Analysis {
            format: image.format.to_string(),
            width: image.width,
            height: image.height,
            embedding: output.embedding,
            features: output.features,
            thumbnail_jpeg,
            prior,
        })
    }

    /// The configured categories that have no labelled item yet (leaving out `exclude`'s label).
    pub async fn cold_categories(
        &self,
        prior: &Prior,
        exclude: Option<&Exclude>,
    ) -> Result<HashSet<String>, JobError> {
        let warm: HashSet<String> = self
            .labelled_prototypes(exclude)
            .await?
            .into_iter()
            .map(|(c, _)| c)
            .collect();
        Ok(prior
            .categories()
            .iter()
            .filter(|c| !warm.contains(*c))
            .cloned()
            .collect())
    }

    /// Each labelled category's embedding sum, without `exclude`'s own contribution.
    async fn labelled_prototypes(
        &self,
        exclude: Option<&Exclude>,
    ) -> Result<Vec<(String, Vec<f32>)>, JobError> {
        let mut prototypes = Vec::new();
        for p in self.store.prototypes(self.model_id()).await? {
            let mut sum = p.vector_sum;
            let mut items = p.items;
            if let Some((category, vector)) = exclude.and_then(|e| e.labelled.as_ref())
                && *category == p.category
            {
                sum.iter_mut().zip(vector).for_each(|(s, v)| *s -= v);
                items -= 1;
            }
            if items > 0 {
                prototypes.push((p.category, sum));
            }
        }
        Ok(prototypes)
    }

    /// [`Pipeline::classify`], timed as the `classify` stage.
    async fn timed_classify(
        &self,
        embedding: &[f32],
        features: Option<&[f32]>,
        prior_masses: Option<&Masses>,
        exclude: Option<&Exclude>,
    ) -> Result<Option<classify::Prediction>, JobError> {
        let _timed = time_stage(Stage::Classify);
        self.classify(embedding, features, prior_masses, exclude)
            .await
    }

    /// Predicts a category from the labelled items: neighbours' vote and category prototypes mixed
    /// with the trained head (see [`classify::decide`]), plus the cold-start prior (see [`prior`]) for
    /// configured categories that have no labels yet. `None` when nothing is labelled and there is no
    /// prior. `features` are the image's pooled tokens, which a head trained on them reads (without
    /// them such a head stays out of the decision).
    pub async fn classify(
        &self,
        embedding: &[f32],
        features: Option<&[f32]>,
        prior_masses: Option<&Masses>,
        exclude: Option<&Exclude>,
    ) -> Result<Option<classify::Prediction>, JobError> {
        let c = &self.classify;
        // Ask for more than needed: neighbours with predicted categories do not vote.
        let hits = self
            .index
            .search(SearchRequest {
                vector: embedding.to_vec(),
                filter: CategoryFilter::Any,
                limit: c.neighbours * 3,
                offset: 0,
                exclude: exclude.map(|e| e.id).into_iter().collect(),
                min_score: None,
                model_id: Some(self.model_id().to_string()),
                fields: Vec::new(),
                exact: false,
                recommend: None,
            })
            .await?;
        let hit_scores: Vec<(Uuid, f32)> = hits.iter().map(|h| (h.id, h.score)).collect();
        let ids: Vec<Uuid> = hits.iter().map(|h| h.id).collect();
        let provided = self.store.provided_categories(&ids).await?;
        let mut voters = classify::labelled(&hit_scores, &provided);
        voters.truncate(c.neighbours);

        let prototypes = self.labelled_prototypes(exclude).await?;
        let warm: HashSet<&str> = prototypes.iter().map(|(c, _)| c.as_str()).collect();
        // A head cannot forget an item it was trained on: leaving a labelled item out (a
        // leave-one-out check) leaves the head out too.
        let head = self
            .heads
            .current()
            .filter(|_| c.head && exclude.is_none_or(|e| e.labelled.is_none()));
        let labelled = classify::decide(
            &classify::Evidence {
                embedding,
                features,
                voters: &voters,
                prototypes: &prototypes,
                head: head.as_deref().map(|h| h.input()),
            },
            &decision_settings(c),
        );
        Ok(match (&self.prior, prior_masses) {
            (Some(p), Some(masses)) => {
                let cold = p
                    .categories()
                    .iter()
                    .filter(|c| !warm.contains(c.as_str()))
                    .cloned()
                    .collect();
                prior::with_prior(labelled, masses, &cold)
            }
            _ => labelled,
        })
    }
}

/// The classifier settings of the configuration, as [`classify::decide`] takes them.
pub fn decision_settings(c: &lookalike_core::config::Classify) -> classify::Settings {
    classify::Settings {
        neighbour_temperature: c.neighbour_temperature,
        prototype_temperature: c.prototype_temperature,
        prototype_weight: c.prototype_weight,
        confidence_temperature: c.confidence_temperature,
        head_takeover: c.head_takeover,
    }
}

impl CategoryDecision {
    /// The stored category and its source.
    pub fn parts(&self) -> (Option<String>, CategorySource) {
        match self {
            CategoryDecision::Provided(c) => (Some(c.clone()), CategorySource::Provided),
            CategoryDecision::Predicted(p) => (Some(p.category.clone()), CategorySource::Predicted),
            CategoryDecision::None => (None, CategorySource::Unassigned),
        }
    }
}

/// What a search result shows besides id, score and category, kept with the vector so that
/// queries are answered from the index alone (see `lookalike_index::Point::attrs`).
pub fn point_attrs(external_id: Option<&str>, metadata: &serde_json::Value) -> serde_json::Value {
    serde_json::json!({"external_id": external_id, "metadata": metadata})
}
