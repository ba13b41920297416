//! How analysing an image (and the job or query around it) can fail, and whether trying again could
//! help. The worker turns a [`Failure`] into a job's outcome, the API into an HTTP error.

use lookalike_core::codes::job as code;

/// A failure with a stable code (what clients match on) and a message (what people read).
#[derive(Debug, Clone)]
pub struct Failure {
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

impl Failure {
    pub fn permanent(code: &'static str, message: impl Into<String>) -> Self {
        Failure {
            code,
            message: message.into(),
            transient: false,
            blocked: false,
        }
    }
    pub fn transient(code: &'static str, message: impl Into<String>) -> Self {
        Failure {
            code,
            message: message.into(),
            transient: true,
            blocked: false,
        }
    }
    pub fn blocked(code: &'static str, message: impl Into<String>) -> Self {
        Failure {
            code,
            message: message.into(),
            transient: false,
            blocked: true,
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl From<lookalike_store::StoreError> for Failure {
    fn from(e: lookalike_store::StoreError) -> Self {
        match e {
            lookalike_store::StoreError::Conflict(_) => Failure::permanent(
                code::EXTERNAL_ID_TAKEN,
                "another item already has this external_id",
            ),
            // Any other database error is retried: it is ours, not the submitter's fault.
            e => Failure::transient(code::DATABASE_UNAVAILABLE, e.to_string()),
        }
    }
}

impl From<lookalike_index::IndexError> for Failure {
    fn from(e: lookalike_index::IndexError) -> Self {
        if e.is_transient() {
            Failure::transient(code::INDEX_UNAVAILABLE, e.to_string())
        } else if e.is_misconfigured() {
            Failure::blocked(code::INDEX_MISCONFIGURED, e.to_string())
        } else {
            Failure::permanent(code::INDEX_REJECTED, e.to_string())
        }
    }
}

impl From<lookalike_catalogue::CatalogueError> for Failure {
    fn from(e: lookalike_catalogue::CatalogueError) -> Self {
        match e {
            lookalike_catalogue::CatalogueError::Store(e) => e.into(),
            lookalike_catalogue::CatalogueError::Index(e) => e.into(),
        }
    }
}

impl From<lookalike_vision::DecodeError> for Failure {
    fn from(e: lookalike_vision::DecodeError) -> Self {
        Failure::permanent(e.code(), e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lookalike_index::IndexError;

    #[test]
    fn index_errors_map_to_their_own_codes_and_kinds() {
        let e = Failure::from(IndexError::Unavailable("down".into()));
        assert!(e.transient && !e.blocked && e.code == code::INDEX_UNAVAILABLE);
        let e = Failure::from(IndexError::Misconfigured("collection missing".into()));
        assert!(!e.transient && e.blocked && e.code == code::INDEX_MISCONFIGURED);
        let e = Failure::from(IndexError::Invalid("dimension 65".into()));
        assert!(!e.transient && !e.blocked && e.code == code::INDEX_REJECTED);
    }
}
