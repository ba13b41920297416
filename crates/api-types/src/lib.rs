//! The bodies the lookalike HTTP API reads and writes, as types: the server builds its answers from
//! them, `lookalike`'s client commands read answers into them, and the OpenAPI document
//! (`GET /openapi.json`) is derived from them (`utoipa::ToSchema`), so the three cannot drift apart.
//!
//! This crate knows nothing of the database or the index: the server maps its rows into these
//! shapes (`api/src/views.rs`), so either side can change alone. Field order is the order of the
//! JSON a client sees.

mod catalogue;
mod error;
mod jobs;
mod ops;
mod search;

pub use catalogue::*;
pub use error::*;
pub use jobs::*;
pub use ops::*;
pub use search::*;

/// `/v1/jobs/{id}`
pub fn job_link(id: uuid::Uuid) -> String {
    format!("/v1/jobs/{id}")
}

/// `/v1/items/{id}`
pub fn item_link(id: uuid::Uuid) -> String {
    format!("/v1/items/{id}")
}

/// `/v1/items/{id}/thumbnail`
pub fn thumbnail_link(id: uuid::Uuid) -> String {
    format!("/v1/items/{id}/thumbnail")
}

/// `/v1/products/{id}` (the id percent-encoded as a path segment)
pub fn product_link(id: &str) -> String {
    let segment: String = id
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect();
    format!("/v1/products/{segment}")
}
