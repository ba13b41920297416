//! Submitting images (`POST /v1/images`) and following their jobs (`/v1/jobs`).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

/// `POST /v1/images` as JSON: images by URL.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UrlBatch {
    /// At most `http.max_items_per_request` (1000).
    #[schema(min_items = 1, max_items = 1000)]
    pub items: Vec<UrlItem>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UrlItem {
    /// http or https, with a host. Internal addresses are refused when the job runs (`url_forbidden`).
    #[schema(max_length = 4096)]
    pub url: String,
    /// Your id for the item, trimmed; at most 256 bytes, unique within a request. Resubmitting one
    /// updates its item.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 256)]
    pub external_id: Option<String>,
    /// The product this image shows, trimmed; at most 256 characters. Several images (in one request
    /// or over time) may name one product: similarity queries with `group=product` answer one result
    /// per product, and `/v1/products` lists them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 256)]
    pub product_id: Option<String>,
    /// Trimmed; at most 64 bytes of letters, digits, spaces or `_-.&/`. Empty or absent: predicted
    /// from the labelled items.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 64)]
    pub category: Option<String>,
    /// Any JSON object, at most 16 KiB serialised; kept with the item and shown with its results.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Value>,
}

/// `POST /v1/images` as a multipart form (documentation only: the server reads the parts one by one).
/// Unknown fields are refused (`unknown_field`). `external_id`, `product_id`, `category`, `metadata`:
/// given once, the
/// value goes with every file (but one `external_id` cannot name several files); given once per file,
/// the n-th value goes with the n-th file; any other count is `field_count_mismatch`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct UploadForm {
    /// One part per image, each at most `http.max_upload_bytes` (20 MiB). `files` and `image` are
    /// accepted as the part name too.
    #[schema(value_type = Vec<String>, format = Binary, min_items = 1)]
    file: Vec<Vec<u8>>,
    external_id: Option<Vec<String>>,
    product_id: Option<Vec<String>>,
    category: Option<Vec<String>>,
    /// Each a JSON object, as text.
    metadata: Option<Vec<String>>,
}

/// The answer to a submission: one job per image, in the order given.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Submission {
    pub jobs: Vec<SubmittedJob>,
    /// Only on a 200 replay of an `Idempotency-Key`: always `true`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replayed: Option<bool>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SubmittedJob {
    pub job_id: Uuid,
    pub status: JobStatus,
    #[schema(required = true)]
    pub external_id: Option<String>,
    /// `/v1/jobs/{job_id}`
    pub status_url: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum JobStatus {
    Queued,
    Processing,
    Succeeded,
    Failed,
}

impl JobStatus {
    pub const ALL: [JobStatus; 4] = [
        JobStatus::Queued,
        JobStatus::Processing,
        JobStatus::Succeeded,
        JobStatus::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Processing => "processing",
            JobStatus::Succeeded => "succeeded",
            JobStatus::Failed => "failed",
        }
    }
}

/// Where an image came from.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Source {
    /// `url` or `upload`.
    #[schema(pattern = "^(url|upload)$")]
    pub kind: String,
    #[schema(required = true)]
    pub url: Option<String>,
    #[schema(required = true)]
    pub file_name: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Job {
    pub id: Uuid,
    pub status: JobStatus,
    #[schema(minimum = 0)]
    pub attempts: i32,
    pub source: Source,
    #[schema(required = true)]
    pub external_id: Option<String>,
    #[schema(required = true)]
    pub product_id: Option<String>,
    /// The category given at submission.
    #[schema(required = true)]
    pub category: Option<String>,
    #[schema(value_type = Object)]
    #[schema(required = true)]
    pub metadata: Value,
    /// Set once the job succeeded.
    #[schema(required = true)]
    pub item_id: Option<Uuid>,
    #[schema(required = true)]
    pub item_url: Option<String>,
    /// On a failed job: why. On a queued or processing job: the transient error it is waiting to
    /// retry.
    #[schema(required = true)]
    pub error: Option<JobError>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    #[schema(required = true)]
    pub started_at: Option<DateTime<Utc>>,
    #[schema(required = true)]
    pub finished_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct JobError {
    /// A job failure code (README, Error codes). Retried: `fetch_http_status` (5xx, 408, 429 only),
    /// `fetch_timeout`, `fetch_connect`, `inference_failed`, `database_unavailable`,
    /// `index_unavailable`, `job_timeout`. `index_misconfigured` is only ever the last error of a job
    /// waiting in the queue (workers pause until the index is fixed).
    pub code: String,
    #[schema(required = true)]
    pub message: Option<String>,
}

/// `GET /v1/jobs`
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct JobList {
    pub jobs: Vec<Job>,
    /// With `ids` only: the ids that name no job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub missing: Option<Vec<Uuid>>,
}
