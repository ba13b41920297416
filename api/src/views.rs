//! The API's bodies (`lookalike_api_types`) made from the database rows and index hits, kept apart
//! from both so either side can change alone.

use lookalike_api_types as types;
use lookalike_store::{CategorySource, Item, Job, JobStatus};
use serde_json::Value;
use uuid::Uuid;

pub use types::{item_link, job_link, thumbnail_link};

pub fn job_status(status: JobStatus) -> types::JobStatus {
    match status {
        JobStatus::Queued => types::JobStatus::Queued,
        JobStatus::Processing => types::JobStatus::Processing,
        JobStatus::Succeeded => types::JobStatus::Succeeded,
        JobStatus::Failed => types::JobStatus::Failed,
    }
}

pub fn job(job: &Job) -> types::Job {
    types::Job {
        id: job.id,
        status: job_status(job.status),
        attempts: job.attempts,
        source: source(&job.source_kind, &job.source_url, &job.file_name),
        external_id: job.external_id.clone(),
        product_id: job.product_id.clone(),
        category: job.category.clone(),
        metadata: job.metadata.clone(),
        item_id: job.item_id,
        item_url: job.item_id.map(item_link),
        // For a failed job this is why; for a queued or processing job it is the last transient error
        // that caused a retry.
        error: job.error_code.as_ref().map(|code| types::JobError {
            code: code.clone(),
            message: job.error_message.clone(),
        }),
        created_at: job.created_at,
        updated_at: job.updated_at,
        started_at: job.started_at,
        finished_at: job.finished_at,
    }
}

/// Where a job's (and so its item's) image came from; both rows keep the same three columns.
fn source(kind: &str, url: &Option<String>, file_name: &Option<String>) -> types::Source {
    types::Source {
        kind: kind.to_string(),
        url: url.clone(),
        file_name: file_name.clone(),
    }
}

/// A submitted job as the submission answers it.
pub fn submitted(id: Uuid, status: JobStatus, external_id: Option<String>) -> types::SubmittedJob {
    types::SubmittedJob {
        job_id: id,
        status: job_status(status),
        external_id,
        status_url: job_link(id),
    }
}

pub fn item(item: &Item) -> types::Item {
    types::Item {
        id: item.id,
        job_id: item.job_id,
        external_id: item.external_id.clone(),
        product_id: item.product_id.clone(),
        duplicate_group: item.duplicate_group,
        source: source(&item.source_kind, &item.source_url, &item.file_name),
        content_sha256: item.content_sha256.clone(),
        byte_size: item.byte_size,
        format: item.format.clone(),
        width: item.width,
        height: item.height,
        category: item.category.clone(),
        category_source: match item.category_source {
            CategorySource::Provided => types::CategorySource::Provided,
            CategorySource::Predicted => types::CategorySource::Predicted,
            CategorySource::Unassigned => types::CategorySource::None,
        },
        category_confidence: item.category_confidence,
        head_version: item.head_version,
        model_id: item.model_id.clone(),
        metadata: item.metadata.clone(),
        thumbnail_url: thumbnail_link(item.id),
        created_at: item.created_at,
        updated_at: item.updated_at,
        vector: None,
        features: None,
    }
}

/// One similarity result, from the attributes stored with its vector
/// (`lookalike_catalogue::point_attrs`).
pub fn hit(hit: &lookalike_index::Hit, attrs: &Value) -> types::SimilarItem {
    let field = |key: &str| attrs.get(key).cloned().unwrap_or(Value::Null);
    types::SimilarItem {
        item_id: hit.id,
        external_id: field("external_id").as_str().map(str::to_string),
        product_id: field("product_id").as_str().map(str::to_string),
        category: hit.category.clone(),
        score: hit.score,
        thumbnail_url: thumbnail_link(hit.id),
        metadata: field("metadata"),
        matched_images: None,
        product_images: None,
        duplicates_matched: None,
    }
}

/// One similarity result, from the item's row (points stored before vectors carried attributes).
pub fn result(item: &Item, score: f32) -> types::SimilarItem {
    types::SimilarItem {
        item_id: item.id,
        external_id: item.external_id.clone(),
        product_id: item.product_id.clone(),
        category: item.category.clone(),
        score,
        thumbnail_url: thumbnail_link(item.id),
        metadata: item.metadata.clone(),
        matched_images: None,
        product_images: None,
        duplicates_matched: None,
    }
}

/// A product's summary, as the listing and the product page show it.
pub fn product_summary(p: &lookalike_store::ProductSummary) -> types::ProductSummary {
    types::ProductSummary {
        product_id: p.product_id.clone(),
        category: p.category.clone(),
        categories: p.categories,
        images: p.images,
        cover_item_id: p.cover,
        thumbnail_url: thumbnail_link(p.cover),
        product_url: types::product_link(&p.product_id),
        created_at: p.created_at,
        updated_at: p.updated_at,
    }
}

/// A trained head, for `/v1/status` and `POST /v1/classifier/train`.
pub fn head(head: &lookalike_analysis::heads::LoadedHead) -> types::HeadSummary {
    types::HeadSummary {
        version: head.version,
        categories: head.head.categories.len(),
        reads: match head.head.reads {
            lookalike_classifier::Reads::Features => types::HeadReads::Features,
            lookalike_classifier::Reads::Embedding => types::HeadReads::Embedding,
        },
        trained_on: head.trained_on,
        held_out: head.held_out,
        held_out_accuracy: head.held_out_accuracy,
        training_ms: head.training_ms,
        trained_at: head.created_at,
    }
}
