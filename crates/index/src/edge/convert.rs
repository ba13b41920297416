//! Translation between the crate's types and qdrant-edge's.

use lookalike_core::fields::{self, FieldValue, Test};
use qdrant_edge::external::ordered_float::OrderedFloat;
use qdrant_edge::{
    Condition, FieldCondition, Filter, IsEmptyCondition, JsonPath, Match, OperationError, PointId,
    Range,
};
use uuid::Uuid;

use crate::{CATEGORY_KEY, CategoryFilter, IndexError, MODEL_ID_KEY, field_path};

pub(super) fn json_path(key: &str) -> JsonPath {
    key.parse()
        .expect("payload keys are plain identifiers, field names checked at load")
}

/// The engine filter for a request, `Some(None)` meaning "no filter" and `None` meaning
/// "matches nothing" (an empty `AnyOf`), which callers answer without asking the engine.
pub(super) fn build_filter(
    category: &CategoryFilter,
    model_id: Option<&str>,
    exclude: &[Uuid],
    fields: &[fields::FieldCondition],
) -> Option<Option<Filter>> {
    let mut must: Vec<Condition> = fields.iter().map(field_condition).collect();
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
    let must_not: Vec<Condition> = if exclude.is_empty() {
        Vec::new()
    } else {
        vec![Condition::HasId(
            exclude.iter().map(|id| PointId::Uuid(*id)).collect(),
        )]
    };
    if must.is_empty() && must_not.is_empty() {
        return Some(None);
    }
    Some(Some(Filter {
        must: (!must.is_empty()).then_some(must),
        must_not: (!must_not.is_empty()).then_some(must_not),
        ..Filter::new()
    }))
}

/// A condition on a declared metadata field; the same shape as the server backend's.
fn field_condition(c: &fields::FieldCondition) -> Condition {
    let path = json_path(&field_path(&c.field));
    match &c.test {
        Test::Range(r) => Condition::Field(FieldCondition::new_range(
            path,
            Range {
                lt: r.lt.map(OrderedFloat),
                gt: r.gt.map(OrderedFloat),
                gte: r.gte.map(OrderedFloat),
                lte: r.lte.map(OrderedFloat),
            },
        )),
        Test::AnyOf(values) => {
            let keywords: Vec<String> = values
                .iter()
                .filter_map(|v| match v {
                    FieldValue::Keyword(k) => Some(k.clone()),
                    FieldValue::Bool(_) => None,
                })
                .collect();
            let mut any: Vec<Condition> = values
                .iter()
                .filter_map(|v| match v {
                    FieldValue::Bool(b) => Some(Condition::Field(FieldCondition::new_match(
                        path.clone(),
                        Match::from(*b),
                    ))),
                    FieldValue::Keyword(_) => None,
                })
                .collect();
            if !keywords.is_empty() {
                any.push(Condition::Field(FieldCondition::new_match(
                    path.clone(),
                    Match::from(keywords),
                )));
            }
            match any.len() {
                1 => any.pop().expect("one"),
                _ => Condition::Filter(Filter {
                    should: Some(any),
                    ..Filter::new()
                }),
            }
        }
    }
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
