//! The work of an ingest job: the image's bytes (downloaded, or the upload kept with the job), their
//! analysis (or the stored analysis of identical bytes), a category when none was given, and the
//! item committed to the catalogue. What happens to the job afterwards is [`crate::jobs`]' business.

use std::sync::Arc;
use std::time::Instant;

use lookalike_analysis::batcher::Priority;
use lookalike_analysis::{Analyser, Analysis, CategoryDecision, Exclude, Failure};
use lookalike_catalogue::Catalogue;
use lookalike_core::codes::job as code;
use lookalike_store::Job;
use lookalike_telemetry::{Stage, time_stage};
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// What an ingest job needs: the process's analyser and the catalogue it writes to.
pub struct Ingest {
    pub analyser: Arc<Analyser>,
    pub catalogue: Catalogue,
    /// Reuse the analysis of byte-identical images already stored (`worker.reuse_identical_images`).
    pub reuse_identical: bool,
}

impl Ingest {
    /// Runs one claimed job: its bytes, their analysis (or a stored one of the same bytes), its
    /// category, and the item committed to the catalogue.
    pub async fn run(&self, job: &Job) -> Result<(), Failure> {
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
            None => self.analyser.analyse(bytes, true, Priority::Ingest).await?,
        };
        let decision = match &job.category {
            Some(c) => CategoryDecision::Provided(c.clone()),
            None => match self
                .analyser
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
        let item = analysis.into_item(
            &decision,
            content_sha256,
            byte_size,
            self.analyser.model_id(),
        );
        self.catalogue.commit(job.id, item).await?;
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

    async fn source_bytes(&self, job: &Job) -> Result<Vec<u8>, Failure> {
        match job.source_url.as_deref() {
            Some(url) => self.analyser.fetcher.fetch(url).await,
            None => self
                .catalogue
                .store()
                .upload_bytes(job.id)
                .await?
                .ok_or_else(|| {
                    Failure::permanent(
                        code::UPLOAD_MISSING,
                        "the uploaded bytes of this job are gone",
                    )
                }),
        }
    }

    /// The analysis of identical bytes stored earlier with the same model, if any: catalogues repeat
    /// images a lot (eBay found a third of listing images were duplicates), and the model run is the
    /// expensive part. Content hashes are SHA-256, so equal hashes mean equal bytes.
    async fn reuse(&self, sha256: &str, job_id: Uuid) -> Result<Option<Analysis>, Failure> {
        if !self.reuse_identical {
            return Ok(None);
        }
        let Some(item) = self
            .catalogue
            .store()
            .item_with_content(sha256, self.analyser.model_id(), job_id)
            .await?
        else {
            return Ok(None);
        };
        let (Some(embedding), Some(thumbnail_jpeg)) = (
            self.catalogue.index().get_vector(item.id).await?,
            self.catalogue.store().thumbnail(item.id).await?,
        ) else {
            return Ok(None);
        };
        let features = self.catalogue.store().item_features(item.id).await?;
        if features.is_none() && self.analyser.makes_features() {
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
}
