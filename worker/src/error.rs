//! How a job can fail, and whether trying again could help.

use lookalike_core::codes::job as code;

/// A job failure with a stable code (what clients match on) and a message (what people read).
#[derive(Debug, Clone)]
pub struct JobError {
    pub code: &'static str,
    pub message: String,
    /// Transient failures (network, broker, database, index) are retried with backoff; permanent
    /// ones (bad input) fail the job at once.
    pub transient: bool,
}

impl JobError {
    pub fn permanent(code: &'static str, message: impl Into<String>) -> Self {
        JobError {
            code,
            message: message.into(),
            transient: false,
        }
    }
    pub fn transient(code: &'static str, message: impl Into<String>) -> Self {
        JobError {
            code,
            message: message.into(),
            transient: true,
        }
    }
}

impl std::fmt::Display for JobError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl From<lookalike_store::StoreError> for JobError {
    fn from(e: lookalike_store::StoreError) -> Self {
        match e {
            lookalike_store::StoreError::Conflict(_) => JobError::permanent(
                code::EXTERNAL_ID_TAKEN,
                "another item already has this external_id",
            ),
            // Any other database error is retried: it is ours, not the submitter's fault.
            e => JobError::transient(code::DATABASE_UNAVAILABLE, e.to_string()),
        }
    }
}

impl From<lookalike_index::IndexError> for JobError {
    fn from(e: lookalike_index::IndexError) -> Self {
        if e.is_transient() {
            JobError::transient(code::INDEX_UNAVAILABLE, e.to_string())
        } else {
            JobError::permanent(code::INFERENCE_FAILED, e.to_string())
        }
    }
}

impl From<lookalike_vision::DecodeError> for JobError {
    fn from(e: lookalike_vision::DecodeError) -> Self {
        JobError::permanent(e.code(), e.to_string())
    }
}
