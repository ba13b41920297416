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
    /// Nothing about this job is wrong, but no job can succeed until an operator fixes a
    /// dependency's configuration (the index's collection or key): the job goes back to the
    /// queue without spending an attempt, and the worker stops consuming until it is fixed.
    pub blocked: bool,
}

impl JobError {
    pub fn permanent(code: &'static str, message: impl Into<String>) -> Self {
        JobError {
            code,
            message: message.into(),
            transient: false,
            blocked: false,
        }
    }
    pub fn transient(code: &'static str, message: impl Into<String>) -> Self {
        JobError {
            code,
            message: message.into(),
            transient: true,
            blocked: false,
        }
    }
    pub fn blocked(code: &'static str, message: impl Into<String>) -> Self {
        JobError {
            code,
            message: message.into(),
            transient: false,
            blocked: true,
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
        } else if e.is_misconfigured() {
            JobError::blocked(code::INDEX_MISCONFIGURED, e.to_string())
        } else {
            JobError::permanent(code::INDEX_REJECTED, e.to_string())
        }
    }
}

impl From<lookalike_vision::DecodeError> for JobError {
    fn from(e: lookalike_vision::DecodeError) -> Self {
        JobError::permanent(e.code(), e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lookalike_index::IndexError;

    #[test]
    fn index_errors_map_to_their_own_codes_and_kinds() {
        let e = JobError::from(IndexError::Unavailable("down".into()));
        assert!(e.transient && !e.blocked && e.code == code::INDEX_UNAVAILABLE);
        let e = JobError::from(IndexError::Misconfigured("collection missing".into()));
        assert!(!e.transient && e.blocked && e.code == code::INDEX_MISCONFIGURED);
        let e = JobError::from(IndexError::Invalid("dimension 65".into()));
        assert!(!e.transient && !e.blocked && e.code == code::INDEX_REJECTED);
    }
}
