//! JSON shapes the API returns (kept apart from the database rows so either can change alone).

use lookalike_store::{Item, Job};
use serde_json::{Value, json};
use uuid::Uuid;

pub fn job_link(id: Uuid) -> String {
    format!("/v1/jobs/{id}")
}

pub fn item_link(id: Uuid) -> String {
    format!("/v1/items/{id}")
}

pub fn thumbnail_link(id: Uuid) -> String {
    format!("/v1/items/{id}/thumbnail")
}

pub fn job(job: &Job) -> Value {
    let error = job
        .error_code
        .as_ref()
        .map(|code| json!({"code": code, "message": job.error_message}));
    json!({
        "id": job.id,
        "status": job.status,
        "attempts": job.attempts,
        "source": {"kind": job.source_kind, "url": job.source_url, "file_name": job.file_name},
        "external_id": job.external_id,
        "category": job.category,
        "metadata": job.metadata,
        "item_id": job.item_id,
        "item_url": job.item_id.map(item_link),
        // For a failed job this is why; for a queued or processing job it is the last transient error
        // that caused a retry.
        "error": error,
        "created_at": job.created_at,
        "updated_at": job.updated_at,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
    })
}

pub fn item(item: &Item) -> Value {
    json!({
        "id": item.id,
        "job_id": item.job_id,
        "external_id": item.external_id,
        "source": {"kind": item.source_kind, "url": item.source_url, "file_name": item.file_name},
        "content_sha256": item.content_sha256,
        "byte_size": item.byte_size,
        "format": item.format,
        "width": item.width,
        "height": item.height,
        "category": item.category,
        "category_source": item.category_source,
        "category_confidence": item.category_confidence,
        "head_version": item.head_version,
        "model_id": item.model_id,
        "metadata": item.metadata,
        "thumbnail_url": thumbnail_link(item.id),
        "created_at": item.created_at,
        "updated_at": item.updated_at,
    })
}

/// One similarity result, from the attributes stored with its vector
/// (`lookalike_catalogue::point_attrs`).
pub fn hit(hit: &lookalike_index::Hit, attrs: &Value) -> Value {
    let field = |key: &str| attrs.get(key).cloned().unwrap_or(Value::Null);
    similar(
        hit.id,
        &hit.category,
        hit.score,
        field("external_id"),
        field("metadata"),
    )
}

/// One similarity result, from the item's row (points stored before vectors carried attributes).
pub fn result(item: &Item, score: f32) -> Value {
    similar(
        item.id,
        &item.category,
        score,
        json!(item.external_id),
        item.metadata.clone(),
    )
}

/// The one shape of a similarity result, whichever store it is read from.
fn similar(
    id: Uuid,
    category: &Option<String>,
    score: f32,
    external_id: Value,
    metadata: Value,
) -> Value {
    json!({
        "item_id": id,
        "external_id": external_id,
        "category": category,
        "score": score,
        "thumbnail_url": thumbnail_link(id),
        "metadata": metadata,
    })
}
