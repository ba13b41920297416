//! Stable, machine-readable error codes. Clients match on these strings, so they never change meaning;
//! new failure kinds get new codes. README.md lists them with what a user should do about each.

/// Why a job failed. Decode errors use the vision crate's own codes (`image_*`).
pub mod job {
    pub const URL_INVALID: &str = "url_invalid";
    pub const URL_FORBIDDEN: &str = "url_forbidden";
    pub const FETCH_HTTP_STATUS: &str = "fetch_http_status";
    pub const FETCH_TOO_LARGE: &str = "fetch_too_large";
    pub const FETCH_TIMEOUT: &str = "fetch_timeout";
    pub const FETCH_CONNECT: &str = "fetch_connect";
    pub const FETCH_TOO_MANY_REDIRECTS: &str = "fetch_too_many_redirects";
    pub const UPLOAD_MISSING: &str = "upload_missing";
    pub const EXTERNAL_ID_TAKEN: &str = "external_id_taken";
    pub const INFERENCE_FAILED: &str = "inference_failed";
    pub const INDEX_UNAVAILABLE: &str = "index_unavailable";
    /// The index refused the vector for good (e.g. a dimension its collection does not hold).
    pub const INDEX_REJECTED: &str = "index_rejected";
    /// Recorded (as the last error of a job waiting in the queue) while the index is
    /// misconfigured: workers stop consuming until it is fixed, so no job fails with it.
    pub const INDEX_MISCONFIGURED: &str = "index_misconfigured";
    pub const DATABASE_UNAVAILABLE: &str = "database_unavailable";
    pub const TIMEOUT: &str = "job_timeout";
    pub const ATTEMPTS_EXHAUSTED: &str = "attempts_exhausted";
    /// The broker never confirmed the submission: the job is failed at once and the client gets 503
    /// with the same code.
    pub const QUEUE_UNAVAILABLE: &str = "queue_unavailable";
}

/// Why an image could not be used (`lookalike_vision::DecodeError::code`): a job fails with these, and
/// `POST /v1/search` answers 422 with them.
pub mod image {
    pub const EMPTY: &str = "image_empty";
    pub const UNSUPPORTED_FORMAT: &str = "image_unsupported_format";
    pub const TOO_LARGE: &str = "image_too_large";
    pub const TRUNCATED: &str = "image_truncated";
    pub const CORRUPT: &str = "image_corrupt";
}

/// Why the API refused a request (answered at once; nothing stored or enqueued). The API sends no
/// other codes than the constants of this module, [`auth`], [`fields`], [`search`], the job codes a
/// search can meet and the decoder's `image_*` (`tests/openapi.rs` checks that none is written inline).
pub mod api {
    // 400: a malformed request.
    pub const INVALID_JSON: &str = "invalid_json";
    pub const INVALID_MULTIPART: &str = "invalid_multipart";
    pub const INVALID_ID: &str = "invalid_id";
    pub const INVALID_STATUS: &str = "invalid_status";
    pub const INVALID_IDEMPOTENCY_KEY: &str = "invalid_idempotency_key";
    /// A query parameter that does not parse (`k=abc`).
    pub const INVALID_QUERY: &str = "invalid_query";
    /// `GET /v1/jobs?ids=` with more ids than it takes.
    pub const TOO_MANY_IDS: &str = "too_many_ids";

    // 404 and 405: nothing there.
    pub const JOB_NOT_FOUND: &str = "job_not_found";
    pub const ITEM_NOT_FOUND: &str = "item_not_found";
    pub const PRODUCT_NOT_FOUND: &str = "product_not_found";
    pub const ROUTE_NOT_FOUND: &str = "route_not_found";
    pub const METHOD_NOT_ALLOWED: &str = "method_not_allowed";

    // 409: the request meets a state it cannot change.
    pub const JOB_NOT_FAILED: &str = "job_not_failed";
    pub const TRAINING_IN_PROGRESS: &str = "training_in_progress";
    pub const HEAD_DISABLED: &str = "head_disabled";
    /// Similar-by-id on an item whose vector another model made.
    pub const ITEM_MODEL_MISMATCH: &str = "item_model_mismatch";
    /// A write met stored data it cannot override (e.g. a concurrent request with the same
    /// `Idempotency-Key`): retry.
    pub const CONFLICT: &str = "conflict";

    // 413 and 415: too much, or not what the endpoint reads.
    pub const PAYLOAD_TOO_LARGE: &str = "payload_too_large";
    pub const UPLOAD_TOO_LARGE: &str = "upload_too_large";
    pub const TOO_MANY_ITEMS: &str = "too_many_items";
    pub const UNSUPPORTED_MEDIA_TYPE: &str = "unsupported_media_type";
    pub const UNSUPPORTED_IMAGE_TYPE: &str = "unsupported_image_type";

    // 422: valid syntax, unacceptable content.
    pub const INVALID_K: &str = "invalid_k";
    pub const INVALID_PARAMETER: &str = "invalid_parameter";
    pub const NO_IMAGE: &str = "no_image";
    pub const AMBIGUOUS_QUERY: &str = "ambiguous_query";
    pub const TOO_FEW_LABELS: &str = "too_few_labels";
    pub const NO_ITEMS: &str = "no_items";
    pub const INVALID_URL: &str = "invalid_url";
    pub const INVALID_CATEGORY: &str = "invalid_category";
    pub const INVALID_EXTERNAL_ID: &str = "invalid_external_id";
    pub const DUPLICATE_EXTERNAL_ID: &str = "duplicate_external_id";
    pub const INVALID_PRODUCT_ID: &str = "invalid_product_id";
    pub const INVALID_METADATA: &str = "invalid_metadata";
    pub const UNKNOWN_FIELD: &str = "unknown_field";
    pub const FIELD_COUNT_MISMATCH: &str = "field_count_mismatch";
    pub const EMPTY_FILE: &str = "empty_file";

    // 503: a dependency is down; retry later. The same codes as the job failures they cause.
    pub use super::job::{DATABASE_UNAVAILABLE, INDEX_UNAVAILABLE, QUEUE_UNAVAILABLE};
}

/// Why the API refused a caller (answered at once, in the API's error shape).
pub mod auth {
    /// 401: no API key was sent.
    pub const UNAUTHORIZED: &str = "unauthorized";
    /// 401: the key sent is not configured.
    pub const INVALID_API_KEY: &str = "invalid_api_key";
    /// 403: the key lacks the scope the request needs.
    pub const FORBIDDEN_SCOPE: &str = "forbidden_scope";
}

/// Refused filters and metadata values on declared fields (`[fields]`, 422).
pub mod fields {
    /// A query parameter that is neither the request's own nor a declared field (or a range of one).
    pub const UNKNOWN_FILTER_FIELD: &str = "unknown_filter_field";
    /// A filter value that does not fit its field (a word for a number, a range on a keyword).
    pub const INVALID_FILTER: &str = "invalid_filter";
    /// Submitted or patched metadata giving a declared field a value of the wrong kind.
    pub const INVALID_FIELD_VALUE: &str = "invalid_field_value";
}

/// Refused search regions (`POST /v1/search` with `box`, 422).
pub mod search {
    /// A `box` that is not four fractions `x,y,w,h` within the image, or given with `add=true`.
    pub const INVALID_BOX: &str = "invalid_box";
    /// A `box` whose shorter side covers fewer than 32 pixels of the image.
    pub const BOX_TOO_SMALL: &str = "box_too_small";
}
