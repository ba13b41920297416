//! One job, start to finish: claim -> bytes -> clean -> embed -> categorise -> index -> commit.
//!
//! Every step is idempotent, so a job redelivered after a crash at any point ends with exactly one item
//! and one vector: the item id and the vector id are the job id, the index upsert and the item insert
//! are keyed on it, and a job already finished is not run again.

use std::sync::Arc;
use std::time::Instant;

use lookalike_core::codes::job as code;
use lookalike_index::{CategoryFilter, Point, SearchRequest, VectorIndex};
use lookalike_store::{Claim, Job, NewItem, Store};
use lookalike_vision::{CleanImage, DecodeLimits};
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;
use uuid::Uuid;

use crate::batcher::Batcher;
use crate::classify;
use crate::error::JobError;
use crate::fetch::Fetcher;

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
    pub neighbours: usize,
    pub max_attempts: u32,
}

/// What the consumer should do with the message after a job ran.
#[derive(Debug)]
pub enum Outcome {
    /// Finished (succeeded or failed for good), or nothing to do: ack.
    Done,
    /// A transient failure on attempt `attempt`: schedule a retry (or give up past the limit).
    Retry { error: JobError, attempt: u32 },
}

/// The result of analysing one image: what both ingest and search need.
pub struct Analysis {
    pub image: CleanImage,
    pub embedding: Vec<f32>,
    pub thumbnail_jpeg: Vec<u8>,
}

impl Pipeline {
    pub fn model_id(&self) -> &str {
        &self.batcher.embedder().spec().id
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
            let last = job.error_message.clone().unwrap_or_else(|| "the worker stopped while processing it".into());
            let message = format!("gave up after {} attempts; last error: {last}", self.max_attempts);
            self.store.fail_job(job.id, code::ATTEMPTS_EXHAUSTED, &message).await?;
            tracing::warn!(attempts = job.attempts, "job failed: attempts exhausted");
            return Ok(Outcome::Done);
        }
        tracing::info!(attempt, source = job.source_kind, "job started");
        match self.ingest(&job).await {
            Ok(()) => Ok(Outcome::Done),
            Err(error) if error.transient => Ok(Outcome::Retry { error, attempt }),
            Err(error) => {
                self.store.fail_job(job.id, error.code, &error.message).await?;
                tracing::warn!(code = error.code, error = %error.message, "job failed");
                Ok(Outcome::Done)
            }
        }
    }

    async fn ingest(&self, job: &Job) -> Result<(), JobError> {
        let started = Instant::now();
        let bytes = self.source_bytes(job).await?;
        let downloaded = started.elapsed();
        let (content_sha256, byte_size) = (hex::encode(Sha256::digest(&bytes)), bytes.len());
        let analysis = self.analyse(bytes).await?;
        let (category, source, confidence) = match &job.category {
            Some(c) => (Some(c.clone()), "provided", None),
            None => match self.predict(&analysis.embedding, job.id).await? {
                Some(p) => (Some(p.category), "predicted", Some(p.confidence)),
                None => (None, "none", None),
            },
        };
        let point = Point {
            id: job.id,
            vector: analysis.embedding,
            category: category.clone(),
            model_id: self.model_id().to_string(),
        };
        self.index.upsert(vec![point]).await?;
        let item = NewItem {
            content_sha256,
            byte_size: byte_size as i64,
            format: analysis.image.format.to_string(),
            width: analysis.image.width as i32,
            height: analysis.image.height as i32,
            category: category.clone(),
            category_source: source,
            category_confidence: confidence,
            model_id: self.model_id().to_string(),
            thumbnail_jpeg: analysis.thumbnail_jpeg,
        };
        self.store.complete_job(job.id, &item).await?;
        tracing::info!(
            category = category.as_deref().unwrap_or("-"),
            category_source = source,
            bytes = byte_size,
            download_ms = downloaded.as_millis() as u64,
            total_ms = started.elapsed().as_millis() as u64,
            "job succeeded"
        );
        Ok(())
    }

    async fn source_bytes(&self, job: &Job) -> Result<Vec<u8>, JobError> {
        match job.source_url.as_deref() {
            Some(url) => self.fetcher.fetch(url).await,
            None => self.store.upload_bytes(job.id).await?.ok_or_else(|| {
                JobError::permanent(code::UPLOAD_MISSING, "the uploaded bytes of this job are gone")
            }),
        }
    }

    /// Decode, clean, thumbnail and embed one image. Used for ingest and for search queries.
    pub async fn analyse(&self, bytes: Vec<u8>) -> Result<Analysis, JobError> {
        let permit = self.decode_permits.clone().acquire_owned().await.expect("semaphore never closed");
        let limits = self.limits.clone();
        let spec = self.batcher.embedder().spec().clone();
        let thumb = self.thumbnail_size;
        let (image, tensor, thumbnail_jpeg) = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let image = lookalike_vision::clean(&bytes, &limits)?;
            let tensor = lookalike_vision::to_tensor(&image.rgb, &spec);
            let thumbnail = lookalike_vision::thumbnail_jpeg(&image.rgb, thumb);
            Ok::<_, JobError>((image, tensor, thumbnail))
        })
        .await
        .map_err(|e| JobError::permanent(code::INFERENCE_FAILED, format!("image worker crashed: {e}")))??;
        let output = self
            .batcher
            .embed(tensor)
            .await
            .map_err(|e| JobError::transient(code::INFERENCE_FAILED, e))?;
        Ok(Analysis { image, embedding: output.embedding, thumbnail_jpeg })
    }

    /// Nearest labelled neighbours vote on the category (see [`classify::vote`]).
    pub async fn predict(&self, embedding: &[f32], exclude: Uuid) -> Result<Option<classify::Prediction>, JobError> {
        let hits = self
            .index
            .search(SearchRequest {
                vector: embedding.to_vec(),
                filter: CategoryFilter::Any,
                limit: self.neighbours,
                offset: 0,
                exclude: Some(exclude),
                min_score: None,
                model_id: Some(self.model_id().to_string()),
            })
            .await?;
        let hit_scores: Vec<(Uuid, f32)> = hits.iter().map(|h| (h.id, h.score)).collect();
        let ids: Vec<Uuid> = hits.iter().map(|h| h.id).collect();
        let provided = self.store.provided_categories(&ids).await?;
        Ok(classify::vote(&classify::labelled(&hit_scores, &provided), 0.05))
    }
}
