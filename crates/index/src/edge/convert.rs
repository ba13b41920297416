//! Translation between the crate's types and qdrant-edge's.

use qdrant_edge::{
    Condition, FieldCondition, Filter, IsEmptyCondition, JsonPath, Match, OperationError, PointId,
};
use uuid::Uuid;

use crate::{CATEGORY_KEY, CategoryFilter, IndexError, MODEL_ID_KEY};

pub(super) fn json_path(key: &str) -> JsonPath {
    key.parse().expect("payload keys are plain identifiers")
}

/// The engine filter for a request, `Some(None)` meaning "no filter" and `None` meaning
/// "matches nothing" (an empty `AnyOf`), which callers answer without asking the engine.
pub(super) fn build_filter(
    category: &CategoryFilter,
    model_id: Option<&str>,
    exclude: Option<Uuid>,
) -> Option<Option<Filter>> {
    let mut must = Vec::new();
    match category {
        CategoryFilter::Any => {}
        CategoryFilter::One(c) => must.push(keyword(CATEGORY_KEY, Match::from(c.clone()))),
        CategoryFilter::AnyOf(cs) if cs.is_empty() => return None,
        CategoryFilter::AnyOf(cs) => must.push(keyword(CATEGORY_KEY, Match::from(cs.clone()))),
        CategoryFilter::Uncategorised => must.push(Condition::IsEmpty(IsEmptyCondition::from(
            json_path(CATEGORY_KEY),
        ))),
    }
    if let Some(model_id) = model_id {
        must.push(keyword(MODEL_ID_KEY, Match::from(model_id.to_owned())));
    }
    let must_not: Vec<Condition> = exclude
        .map(|id| Condition::HasId(std::iter::once(PointId::Uuid(id)).collect()))
        .into_iter()
        .collect();
    if must.is_empty() && must_not.is_empty() {
        return Some(None);
    }
    Some(Some(Filter {
        must: (!must.is_empty()).then_some(must),
        must_not: (!must_not.is_empty()).then_some(must_not),
        ..Filter::new()
    }))
}

fn keyword(key: &str, value: Match) -> Condition {
    Condition::Field(FieldCondition::new_match(json_path(key), value))
}

/// Engine errors split into the caller's two cases: bad request (permanent) or trouble on
/// our side (transient, worth a retry).
pub(super) fn engine_error(e: OperationError) -> IndexError {
    match e {
        OperationError::PointIdError {
            missed_point_id: PointId::Uuid(id),
        } => IndexError::NotFound(id),
        OperationError::WrongVectorDimension { .. }
        | OperationError::VectorNameNotExists { .. }
        | OperationError::PointIdError { .. }
        | OperationError::TypeError { .. }
        | OperationError::TypeInferenceError { .. }
        | OperationError::ValidationError { .. }
        | OperationError::WrongSparse
        | OperationError::WrongMulti
        | OperationError::MissingRangeIndexForOrderBy { .. }
        | OperationError::MissingMapIndexForFacet { .. }
        | OperationError::VariableTypeError { .. }
        | OperationError::NonFiniteNumber { .. } => IndexError::Invalid(e.to_string()),
        OperationError::ServiceError { .. }
        | OperationError::InconsistentStorage { .. }
        | OperationError::OutOfMemory { .. }
        | OperationError::Cancelled { .. }
        | OperationError::Timeout { .. } => IndexError::Unavailable(e.to_string()),
    }
}
