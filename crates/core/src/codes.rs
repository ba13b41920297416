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
