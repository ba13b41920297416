//! `POST /v1/images`: submit one or many images, by URL (JSON) or as uploaded files (multipart).
//!
//! Everything is validated before anything is stored or enqueued. Jobs (and upload bytes) are written
//! to Postgres first, then published with publisher confirms; the 202 goes out only after RabbitMQ
//! confirmed every message. If publishing fails the jobs are marked failed and the client gets 503,
//! so no job is ever left queued without a message.

use lookalike_core::codes;
use std::collections::HashSet;
use std::time::Duration;

use axum::extract::{FromRequest, Multipart, Request, State};
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use lookalike_api_types::{Submission, UploadForm, UrlBatch};
use lookalike_core::codes::api;
use lookalike_core::fields::Fields;
use lookalike_store::JobStatus;
use lookalike_store::{NewJob, Source};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::docs::{Forbidden, Unauthorized, errors};
use crate::routes::multipart_error;
use crate::{ApiError, ApiResult, AppState, views};

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/images", post(submit))
}

const MAX_CATEGORY_LEN: usize = 64;
const MAX_EXTERNAL_ID_LEN: usize = 256;
const MAX_METADATA_BYTES: usize = 16 * 1024;
const MAX_URL_LEN: usize = 4096;

errors!(SubmitErrors {
    400 => "Malformed request (unknown JSON fields are `invalid_json` too).",
        [api::INVALID_JSON, api::INVALID_MULTIPART, api::INVALID_IDEMPOTENCY_KEY],
    409 => "A concurrent request with the same `Idempotency-Key` is still being stored.", [api::CONFLICT],
    413 => "Over `http.max_body_bytes` (25 MiB), a file over `http.max_upload_bytes` (20 MiB), or more \
            than `http.max_items_per_request` (1000) items.",
        [api::PAYLOAD_TOO_LARGE, api::UPLOAD_TOO_LARGE, api::TOO_MANY_ITEMS],
    415 => "Neither JSON nor multipart; or an uploaded file that is not an image format lookalike reads \
            (JPEG, PNG, GIF, WebP, BMP, TIFF, ICO, PNM, AVIF).",
        [api::UNSUPPORTED_MEDIA_TYPE, api::UNSUPPORTED_IMAGE_TYPE],
    422 => "Valid syntax, unacceptable content; the message names the item (`items[i]:`) or file (`file i:`).",
        [api::NO_ITEMS, api::INVALID_URL, api::INVALID_CATEGORY, api::INVALID_EXTERNAL_ID,
         api::DUPLICATE_EXTERNAL_ID, api::INVALID_PRODUCT_ID, api::INVALID_METADATA, api::UNKNOWN_FIELD,
         api::FIELD_COUNT_MISMATCH, api::EMPTY_FILE, codes::fields::INVALID_FIELD_VALUE],
    503 => "The broker did not confirm the jobs (they are marked failed with `queue_unavailable`), or the \
            database is away.",
        [api::QUEUE_UNAVAILABLE, api::DATABASE_UNAVAILABLE],
});

/// Submit images by URL (JSON) or as uploaded files (multipart)
///
/// Scope `write`. Everything is validated before anything is stored or enqueued; the 202 goes out
/// only after the broker confirmed every job. With `Idempotency-Key`, a repeat of a key already used
/// answers 200 with the first request's jobs as they are now (`replayed: true`) and creates nothing; a
/// key whose first request got 503 keeps those failed jobs, so use a new key. Resubmitting an
/// `external_id` updates its item.
#[utoipa::path(
    post, path = "/v1/images", tag = "ingest", operation_id = "submitImages",
    params(("Idempotency-Key" = Option<String>, Header, description = "1 to 255 visible ASCII characters.",
            min_length = 1, max_length = 255, pattern = "^[!-~]+$")),
    request_body(
        description = "The whole body is at most `http.max_body_bytes` (25 MiB); at most \
                       `http.max_items_per_request` (1000) items or files.",
        content(
            (UrlBatch = "application/json"),
            (UploadForm = "multipart/form-data"),
        ),
    ),
    responses(
        (status = 202, description = "Jobs queued, in the order submitted.", body = Submission),
        (status = 200, description = "Replayed: the `Idempotency-Key` was used before; its jobs as they \
            are now, `replayed: true`.", body = Submission),
        Unauthorized, Forbidden, SubmitErrors,
    ),
)]
pub(crate) async fn submit(
    State(state): State<AppState>,
    request: Request,
) -> ApiResult<(StatusCode, Json<Submission>)> {
    let content_type = crate::routes::content_type(&request);
    let key = idempotency_key(&request)?;
    if let Some(key) = &key
        && let Some(replay) = replay(&state, key).await?
    {
        return Ok(replay);
    }
    let jobs = if content_type.starts_with("application/json") {
        from_json(&state, request).await?
    } else if content_type.starts_with("multipart/form-data") {
        let multipart = Multipart::from_request(request, &state)
            .await
            .map_err(|e| ApiError::bad_request(codes::api::INVALID_MULTIPART, e.body_text()))?;
        from_multipart(&state, multipart).await?
    } else {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            codes::api::UNSUPPORTED_MEDIA_TYPE,
            "send application/json with {\"items\": [...]} or multipart/form-data with image files",
        ));
    };
    enqueue(&state, jobs, key.as_deref()).await
}

/// The `Idempotency-Key` header, if any: 1 to 255 visible ASCII characters.
fn idempotency_key(request: &Request) -> ApiResult<Option<String>> {
    let Some(value) = request.headers().get("idempotency-key") else {
        return Ok(None);
    };
    match value.to_str() {
        Ok(k) if !k.is_empty() && k.len() <= 255 && k.bytes().all(|b| b.is_ascii_graphic()) => {
            Ok(Some(k.to_string()))
        }
        _ => Err(ApiError::bad_request(
            codes::api::INVALID_IDEMPOTENCY_KEY,
            "Idempotency-Key must be 1 to 255 visible ASCII characters",
        )),
    }
}

/// The answer to a repeated request: the first request's jobs, as they are now.
async fn replay(state: &AppState, key: &str) -> ApiResult<Option<(StatusCode, Json<Submission>)>> {
    let jobs = state.store.jobs_for_key(key).await?;
    if jobs.is_empty() {
        return Ok(None);
    }
    let jobs = jobs
        .into_iter()
        .map(|j| views::submitted(j.id, j.status, j.external_id))
        .collect();
    Ok(Some((
        StatusCode::OK,
        Json(Submission {
            jobs,
            replayed: Some(true),
        }),
    )))
}

async fn from_json(state: &AppState, request: Request) -> ApiResult<Vec<NewJob>> {
    let limit = state.config.http.max_body_bytes;
    let body = axum::body::to_bytes(request.into_body(), limit)
        .await
        .map_err(|_| {
            ApiError::too_large(
                codes::api::PAYLOAD_TOO_LARGE,
                format!("the request body is over {limit} bytes"),
            )
        })?;
    let batch: UrlBatch = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(
            codes::api::INVALID_JSON,
            format!("the body is not a valid submission: {e}"),
        )
    })?;
    check_count(state, batch.items.len())?;
    let mut seen = HashSet::new();
    batch
        .items
        .into_iter()
        .enumerate()
        .map(|(i, item)| {
            let at = |e: ApiError| ApiError {
                message: format!("items[{i}]: {}", e.message),
                ..e
            };
            let url = valid_url(&item.url).map_err(at)?;
            let external_id = valid_external_id(item.external_id, &mut seen).map_err(at)?;
            Ok(NewJob {
                id: Uuid::now_v7(),
                source: Source::Url(url),
                external_id,
                product_id: valid_product_id(item.product_id).map_err(at)?,
                category: valid_category(item.category).map_err(at)?,
                metadata: valid_metadata(item.metadata, &state.config.fields).map_err(at)?,
            })
        })
        .collect()
}

/// Multipart: one or more `file` parts, plus optional `external_id`, `product_id`, `category` and
/// `metadata` fields.
/// A field given once applies to every file; given once per file, the n-th value goes with the n-th file.
async fn from_multipart(state: &AppState, mut multipart: Multipart) -> ApiResult<Vec<NewJob>> {
    let max_file = state.config.http.max_upload_bytes;
    let mut files: Vec<(Option<String>, Option<String>, Vec<u8>)> = Vec::new();
    let (mut external_ids, mut product_ids) = (Vec::new(), Vec::new());
    let (mut categories, mut metadatas) = (Vec::new(), Vec::new());
    while let Some(field) = multipart.next_field().await.map_err(multipart_error)? {
        let name = field.name().unwrap_or("").to_string();
        match name.as_str() {
            "file" | "files" | "image" => {
                let file_name = field.file_name().map(str::to_string);
                let content_type = field.content_type().map(str::to_string);
                let bytes = read_capped(field, max_file).await?;
                files.push((file_name, content_type, bytes));
            }
            "external_id" => external_ids.push(field.text().await.map_err(multipart_error)?),
            "product_id" => product_ids.push(field.text().await.map_err(multipart_error)?),
            "category" => categories.push(field.text().await.map_err(multipart_error)?),
            "metadata" => metadatas.push(field.text().await.map_err(multipart_error)?),
            other => {
                return Err(ApiError::unprocessable(
                    codes::api::UNKNOWN_FIELD,
                    format!(
                        "unknown form field `{other}` (expected file, external_id, product_id, category, metadata)"
                    ),
                ));
            }
        }
    }
    if files.is_empty() {
        return Err(ApiError::unprocessable(
            codes::api::NO_ITEMS,
            "the form holds no `file` part",
        ));
    }
    check_count(state, files.len())?;
    let n = files.len();
    let pick = |values: &Vec<String>, field: &str, i: usize| -> ApiResult<Option<String>> {
        match values.len() {
            0 => Ok(None),
            1 => Ok(Some(values[0].clone())),
            len if len == n => Ok(Some(values[i].clone())),
            len => Err(ApiError::unprocessable(
                codes::api::FIELD_COUNT_MISMATCH,
                format!("{len} `{field}` fields for {n} files: give one for all, or one per file"),
            )),
        }
    };
    if n > 1 && external_ids.len() == 1 {
        return Err(ApiError::unprocessable(
            codes::api::DUPLICATE_EXTERNAL_ID,
            "one external_id cannot name several files",
        ));
    }
    let mut seen = HashSet::new();
    let mut jobs = Vec::with_capacity(n);
    for (i, (file_name, content_type, bytes)) in files.into_iter().enumerate() {
        let at = |e: ApiError| ApiError {
            message: format!("file {i}: {}", e.message),
            ..e
        };
        if bytes.is_empty() {
            return Err(at(ApiError::unprocessable(
                codes::api::EMPTY_FILE,
                "the uploaded file is empty",
            )));
        }
        if !lookalike_vision::looks_like_image(&bytes) {
            return Err(at(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                codes::api::UNSUPPORTED_IMAGE_TYPE,
                "the file is not an image format lookalike reads (JPEG, PNG, GIF, WebP, BMP, TIFF, ICO, PNM, AVIF)",
            )));
        }
        let metadata = match pick(&metadatas, "metadata", i)? {
            Some(text) => Some(serde_json::from_str(&text).map_err(|e| {
                at(ApiError::unprocessable(
                    codes::api::INVALID_METADATA,
                    format!("metadata is not JSON: {e}"),
                ))
            })?),
            None => None,
        };
        jobs.push(NewJob {
            id: Uuid::now_v7(),
            external_id: valid_external_id(pick(&external_ids, "external_id", i)?, &mut seen)
                .map_err(at)?,
            product_id: valid_product_id(pick(&product_ids, "product_id", i)?).map_err(at)?,
            category: valid_category(pick(&categories, "category", i)?).map_err(at)?,
            metadata: valid_metadata(metadata, &state.config.fields).map_err(at)?,
            source: Source::Upload {
                file_name,
                content_type,
                bytes,
            },
        });
    }
    Ok(jobs)
}

async fn read_capped(
    mut field: axum::extract::multipart::Field<'_>,
    cap: usize,
) -> ApiResult<Vec<u8>> {
    let mut bytes = Vec::new();
    while let Some(chunk) = field.chunk().await.map_err(multipart_error)? {
        if bytes.len() + chunk.len() > cap {
            return Err(ApiError::too_large(
                codes::api::UPLOAD_TOO_LARGE,
                format!("an uploaded file is over {cap} bytes"),
            ));
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes)
}

fn check_count(state: &AppState, n: usize) -> ApiResult<()> {
    let max = state.config.http.max_items_per_request;
    if n == 0 {
        return Err(ApiError::unprocessable(
            codes::api::NO_ITEMS,
            "`items` is empty",
        ));
    }
    if n > max {
        return Err(ApiError::too_large(
            codes::api::TOO_MANY_ITEMS,
            format!("{n} items; at most {max} per request"),
        ));
    }
    Ok(())
}

fn valid_url(raw: &str) -> ApiResult<String> {
    let raw = raw.trim();
    if raw.chars().count() > MAX_URL_LEN {
        return Err(ApiError::unprocessable(
            codes::api::INVALID_URL,
            format!("the URL is over {MAX_URL_LEN} characters"),
        ));
    }
    let parsed = url::Url::parse(raw).map_err(|e| {
        ApiError::unprocessable(
            codes::api::INVALID_URL,
            format!("`{raw}` is not a URL: {e}"),
        )
    })?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(ApiError::unprocessable(
            codes::api::INVALID_URL,
            format!("scheme `{}` is not allowed (http, https)", parsed.scheme()),
        ));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(ApiError::unprocessable(
            codes::api::INVALID_URL,
            "the URL has no host",
        ));
    }
    Ok(parsed.to_string())
}

fn valid_category(category: Option<String>) -> ApiResult<Option<String>> {
    let Some(c) = category
        .map(|c| c.trim().to_string())
        .filter(|c| !c.is_empty())
    else {
        return Ok(None);
    };
    // Characters, as the message says (a category in another script is as long as it looks).
    let ok = c.chars().count() <= MAX_CATEGORY_LEN
        && c.chars()
            .all(|ch| ch.is_alphanumeric() || matches!(ch, '_' | '-' | ' ' | '.' | '&' | '/'));
    if !ok {
        return Err(ApiError::unprocessable(
            codes::api::INVALID_CATEGORY,
            format!("category must be at most {MAX_CATEGORY_LEN} letters, digits, spaces or _-.&/"),
        ));
    }
    Ok(Some(c))
}

fn valid_external_id(id: Option<String>, seen: &mut HashSet<String>) -> ApiResult<Option<String>> {
    let Some(id) = id.map(|s| s.trim().to_string()).filter(|s| !s.is_empty()) else {
        return Ok(None);
    };
    if id.chars().count() > MAX_EXTERNAL_ID_LEN {
        return Err(ApiError::unprocessable(
            codes::api::INVALID_EXTERNAL_ID,
            format!("external_id is over {MAX_EXTERNAL_ID_LEN} characters"),
        ));
    }
    if !seen.insert(id.clone()) {
        return Err(ApiError::unprocessable(
            codes::api::DUPLICATE_EXTERNAL_ID,
            format!("external_id `{id}` appears twice"),
        ));
    }
    Ok(Some(id))
}

/// A product id names the product several images may show: trimmed, at most
/// `MAX_EXTERNAL_ID_LEN` characters like the ids it sits next to, and (unlike `external_id`) free to
/// repeat within a request.
fn valid_product_id(id: Option<String>) -> ApiResult<Option<String>> {
    let Some(id) = id.map(|s| s.trim().to_string()).filter(|s| !s.is_empty()) else {
        return Ok(None);
    };
    if id.chars().count() > MAX_EXTERNAL_ID_LEN {
        return Err(ApiError::unprocessable(
            codes::api::INVALID_PRODUCT_ID,
            format!("product_id is over {MAX_EXTERNAL_ID_LEN} characters"),
        ));
    }
    Ok(Some(id))
}

/// Submitted metadata: a JSON object of at most `MAX_METADATA_BYTES`, whose declared `[fields]`
/// hold values of their kinds.
fn valid_metadata(metadata: Option<Value>, declared: &Fields) -> ApiResult<Value> {
    match metadata {
        None | Some(Value::Null) => Ok(json!({})),
        Some(metadata @ Value::Object(_)) => {
            check_metadata_size(&metadata)?;
            lookalike_core::fields::check_metadata(&metadata, declared)
                .map_err(crate::routes::fields::field_error)?;
            Ok(metadata)
        }
        Some(_) => Err(ApiError::unprocessable(
            codes::api::INVALID_METADATA,
            "metadata must be a JSON object",
        )),
    }
}

pub(crate) fn check_metadata_size(metadata: &Value) -> ApiResult<()> {
    let size = serde_json::to_vec(metadata)
        .map(|v| v.len())
        .unwrap_or(usize::MAX);
    if size > MAX_METADATA_BYTES {
        return Err(ApiError::unprocessable(
            codes::api::INVALID_METADATA,
            format!("metadata is over {MAX_METADATA_BYTES} bytes"),
        ));
    }
    Ok(())
}

async fn enqueue(
    state: &AppState,
    jobs: Vec<NewJob>,
    key: Option<&str>,
) -> ApiResult<(StatusCode, Json<Submission>)> {
    match state.store.create_jobs(&jobs, key).await {
        Ok(()) => {}
        // The same key raced us and won: answer with its jobs.
        Err(lookalike_store::StoreError::Conflict(_)) if key.is_some() => {
            if let Some(replay) = replay(state, key.unwrap_or_default()).await? {
                return Ok(replay);
            }
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                codes::api::CONFLICT,
                "a concurrent request with this Idempotency-Key",
            ));
        }
        Err(e) => return Err(e.into()),
    }
    // One line per job, so that following a job id through the logs starts here; written before
    // publishing, since a worker may start the job before the broker's confirm comes back.
    for job in &jobs {
        tracing::info!(job_id = %job.id, source = source_kind(&job.source), external_id = job.external_id.as_deref(), "job accepted");
    }
    let ids: Vec<Uuid> = jobs.iter().map(|j| j.id).collect();
    if let Err(e) = state.publisher.publish_jobs(&ids).await {
        let message = format!("the job queue is not available: {e}");
        // Best effort: the jobs were never enqueued, so they must not look queued.
        let _ = tokio::time::timeout(
            Duration::from_secs(2),
            state
                .store
                .fail_jobs(&ids, codes::api::QUEUE_UNAVAILABLE, &message),
        )
        .await;
        for id in &ids {
            tracing::warn!(job_id = %id, code = codes::api::QUEUE_UNAVAILABLE, "job failed: the broker did not confirm its submission");
            lookalike_telemetry::job_finished(
                lookalike_telemetry::JobStatus::Failed,
                codes::api::QUEUE_UNAVAILABLE,
            );
        }
        return Err(ApiError::unavailable(
            codes::api::QUEUE_UNAVAILABLE,
            message,
        ));
    }
    // Best effort: a job left unmarked is published again by the worker's republisher, harmlessly.
    let _ = state.store.mark_published(&ids).await;
    for job in &jobs {
        lookalike_telemetry::jobs_submitted(source_kind(&job.source), 1);
    }
    tracing::info!(jobs = ids.len(), "jobs enqueued");
    let jobs = jobs
        .into_iter()
        .map(|j| views::submitted(j.id, JobStatus::Queued, j.external_id))
        .collect();
    Ok((
        StatusCode::ACCEPTED,
        Json(Submission {
            jobs,
            replayed: None,
        }),
    ))
}

fn source_kind(source: &Source) -> &'static str {
    match source {
        Source::Url(_) => "url",
        Source::Upload { .. } => "upload",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_must_be_http_or_https_with_a_host() {
        assert!(valid_url("https://example.com/a.jpg").is_ok());
        assert_eq!(
            valid_url("ftp://example.com/a.jpg").unwrap_err().code,
            "invalid_url"
        );
        assert_eq!(valid_url("not a url").unwrap_err().code, "invalid_url");
        assert_eq!(
            valid_url("file:///etc/passwd").unwrap_err().code,
            "invalid_url"
        );
    }

    #[test]
    fn categories_are_trimmed_and_checked() {
        assert_eq!(
            valid_category(Some(" coat ".into())).unwrap(),
            Some("coat".into())
        );
        assert_eq!(valid_category(Some("".into())).unwrap(), None);
        assert_eq!(
            valid_category(Some("<script>".into())).unwrap_err().code,
            "invalid_category"
        );
        assert_eq!(
            valid_category(Some("x".repeat(65))).unwrap_err().code,
            "invalid_category"
        );
    }

    #[test]
    fn metadata_must_be_a_small_object() {
        let none = Fields::new();
        assert_eq!(valid_metadata(None, &none).unwrap(), json!({}));
        assert_eq!(
            valid_metadata(Some(json!([1])), &none).unwrap_err().code,
            "invalid_metadata"
        );
        let big = json!({"k": "x".repeat(MAX_METADATA_BYTES)});
        assert_eq!(
            valid_metadata(Some(big), &none).unwrap_err().code,
            "invalid_metadata"
        );
    }

    #[test]
    fn declared_fields_must_hold_values_of_their_kind() {
        let declared: Fields = [(
            "price".to_string(),
            lookalike_core::fields::FieldKind::Number,
        )]
        .into();
        assert!(valid_metadata(Some(json!({"price": 3, "x": "y"})), &declared).is_ok());
        assert_eq!(
            valid_metadata(Some(json!({"price": "3"})), &declared)
                .unwrap_err()
                .code,
            "invalid_field_value"
        );
    }

    #[test]
    fn external_ids_must_be_unique_within_a_request() {
        let mut seen = HashSet::new();
        assert!(valid_external_id(Some("a".into()), &mut seen).is_ok());
        assert_eq!(
            valid_external_id(Some("a".into()), &mut seen)
                .unwrap_err()
                .code,
            "duplicate_external_id"
        );
    }

    #[test]
    fn product_ids_may_repeat_and_are_trimmed_and_bounded() {
        assert_eq!(
            valid_product_id(Some(" coat-7 ".into()))
                .unwrap()
                .as_deref(),
            Some("coat-7")
        );
        assert_eq!(
            valid_product_id(Some("coat-7".into())).unwrap().as_deref(),
            Some("coat-7")
        );
        assert_eq!(valid_product_id(Some("  ".into())).unwrap(), None);
        assert_eq!(
            valid_product_id(Some("x".repeat(MAX_EXTERNAL_ID_LEN + 1)))
                .unwrap_err()
                .code,
            "invalid_product_id"
        );
    }
}
