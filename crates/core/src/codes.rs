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
