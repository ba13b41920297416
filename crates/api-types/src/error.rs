use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Every error the API answers: `{"error": {"code", "message"}}` with a fitting status.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(as = Error)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable and machine-readable; match on this. Besides each endpoint's own codes, any endpoint
    /// may answer 400 invalid_query (a query parameter that does not parse), 404 route_not_found and
    /// 405 method_not_allowed.
    #[schema(examples("invalid_query", "route_not_found", "method_not_allowed"))]
    pub code: String,
    /// For people; may change.
    pub message: String,
}
