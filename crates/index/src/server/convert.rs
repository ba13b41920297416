//! Translation between the crate's types and qdrant-client's gRPC types. Pure functions, so the
//! unit tests below cover them without a server.

use std::collections::HashMap;

use qdrant_client::QdrantError;
use qdrant_client::qdrant::group_id::Kind;
use qdrant_client::qdrant::r#match::MatchValue;
use qdrant_client::qdrant::point_id::PointIdOptions;
use qdrant_client::qdrant::vector_output::Vector;
use qdrant_client::qdrant::{
    Condition, Filter, PointGroup, PointId, Range, RepeatedIntegers, RepeatedStrings,
    RetrievedPoint, ScoredPoint, Value,
};
use tonic::Code;
use uuid::Uuid;

use lookalike_core::fields::{FieldCondition, FieldValue, Test};

use crate::{
    ATTRS_KEY, CATEGORY_KEY, CategoryFilter, Group, Hit, IndexError, MODEL_ID_KEY, StoredPoint,
    field_path, rank,
};

/// The server filter for a request, `Some(None)` meaning "no filter" and `None` meaning
/// "matches nothing" (an empty `AnyOf`), which callers answer without asking the server.
/// Same shape as the embedded backend's, so both select exactly the same points.
pub(super) fn build_filter(
    category: &CategoryFilter,
    model_id: Option<&str>,
    exclude: &[Uuid],
    fields: &[FieldCondition],
) -> Option<Option<Filter>> {
    let mut must: Vec<Condition> = fields.iter().map(field_condition).collect();
    match category {
        CategoryFilter::Any => {}
        CategoryFilter::One(c) => must.push(keyword(CATEGORY_KEY, c)),
        CategoryFilter::AnyOf(cs) if cs.is_empty() => return None,
        CategoryFilter::AnyOf(cs) => must.push(Condition::matches(
            CATEGORY_KEY,
            MatchValue::Keywords(RepeatedStrings {
                strings: cs.clone(),
            }),
        )),
        // Matches a missing key, null and [] alike: exactly what "no category" means here.
        CategoryFilter::Uncategorised => must.push(Condition::is_empty(CATEGORY_KEY)),
    }
    if let Some(model_id) = model_id {
        must.push(keyword(MODEL_ID_KEY, model_id));
    }
    let must_not: Vec<Condition> = if exclude.is_empty() {
        Vec::new()
    } else {
        vec![Condition::has_id(exclude.iter().copied().map(point_id))]
    };
    if must.is_empty() && must_not.is_empty() {
        return Some(None);
    }
    Some(Some(Filter {
        must,
        must_not,
        ..Filter::default()
    }))
}

/// A condition on a declared metadata field; the same shape as the embedded backend's.
fn field_condition(c: &FieldCondition) -> Condition {
    let path = field_path(&c.field);
    match &c.test {
        Test::Range(r) => Condition::range(
            path,
            Range {
                lt: r.lt,
                gt: r.gt,
                gte: r.gte,
                lte: r.lte,
            },
        ),
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
                    FieldValue::Bool(b) => Some(Condition::matches(&path, MatchValue::Boolean(*b))),
                    FieldValue::Keyword(_) => None,
                })
                .collect();
            if !keywords.is_empty() {
                any.push(Condition::matches(
                    &path,
                    MatchValue::Keywords(RepeatedStrings { strings: keywords }),
                ));
            }
            match any.len() {
                1 => any.pop().expect("one"),
                _ => Condition::from(Filter::should(any)),
            }
        }
    }
}

/// An exact keyword match. Built by hand because qdrant-client turns a `String` containing
/// whitespace into a *full-text* match (`MatchValue::from`), which would make a category such as
/// "winter coat" match "coat" too.
fn keyword(key: &str, value: &str) -> Condition {
    Condition::matches(key, MatchValue::Keyword(value.to_owned()))
}

pub(super) fn point_id(id: Uuid) -> PointId {
    PointId::from(id.to_string())
}

fn uuid_of(id: Option<PointId>) -> Result<Uuid, IndexError> {
    match id.and_then(|id| id.point_id_options) {
        Some(PointIdOptions::Uuid(s)) => Uuid::parse_str(&s)
            .map_err(|e| IndexError::Unavailable(format!("server returned point id {s:?}: {e}"))),
        Some(PointIdOptions::Num(n)) => Err(IndexError::Unavailable(format!(
            "collection holds a numeric point id {n}; only UUIDs are written"
        ))),
        None => Err(IndexError::Unavailable(
            "server returned a point without id".into(),
        )),
    }
}

/// A scored point as the crate's [`Hit`].
pub(super) fn hit(point: ScoredPoint) -> Result<Hit, IndexError> {
    let mut payload = point.payload;
    Ok(Hit {
        id: uuid_of(point.id)?,
        score: point.score,
        category: string_field(&payload, CATEGORY_KEY),
        attrs: payload.remove(ATTRS_KEY).map(Value::into_json),
    })
}

/// The keys of the groups a grouped search has found so far, so that the next group query can
/// leave them out.
#[derive(Debug, Default)]
pub(super) struct GroupKeys {
    strings: Vec<String>,
    integers: Vec<i64>,
}

impl GroupKeys {
    /// A group of the server's answer as the crate's [`Group`] (hits ranked), its key noted;
    /// `None` for a group without hits. The catalogue writes only strings; the server also groups
    /// numbers, by value, and such a group's key is the number written out.
    pub(super) fn group(&mut self, group: PointGroup) -> Result<Option<Group>, IndexError> {
        let key = match group.id.and_then(|id| id.kind) {
            Some(Kind::StringValue(s)) => {
                self.strings.push(s.clone());
                s
            }
            Some(Kind::IntegerValue(n)) => {
                self.integers.push(n);
                n.to_string()
            }
            Some(Kind::UnsignedValue(n)) => {
                if let Ok(n) = i64::try_from(n) {
                    self.integers.push(n);
                }
                n.to_string()
            }
            None => {
                return Err(IndexError::Unavailable(
                    "server returned a group without a key".into(),
                ));
            }
        };
        let mut hits = group
            .hits
            .into_iter()
            .map(hit)
            .collect::<Result<Vec<_>, _>>()?;
        if hits.is_empty() {
            return Ok(None);
        }
        rank(&mut hits);
        Ok(Some(Group {
            key: Some(key),
            hits,
        }))
    }

    /// Conditions (for `must_not`) matching every point of the groups found so far.
    pub(super) fn exclude(&self, path: &str) -> Vec<Condition> {
        let mut conditions = Vec::new();
        if !self.strings.is_empty() {
            conditions.push(Condition::matches(
                path,
                MatchValue::Keywords(RepeatedStrings {
                    strings: self.strings.clone(),
                }),
            ));
        }
        if !self.integers.is_empty() {
            conditions.push(Condition::matches(
                path,
                MatchValue::Integers(RepeatedIntegers {
                    integers: self.integers.clone(),
                }),
            ));
        }
        conditions
    }
}

/// A retrieved point (with vector and payload) as the crate's [`StoredPoint`].
pub(super) fn stored_point(point: RetrievedPoint) -> Result<StoredPoint, IndexError> {
    let id = uuid_of(point.id)?;
    let vector = match point.vectors.as_ref().and_then(|v| v.get_vector()) {
        Some(Vector::Dense(dense)) => dense.data,
        _ => {
            return Err(IndexError::Unavailable(format!(
                "point {id} has no single dense vector; the collection was not made by lookalike"
            )));
        }
    };
    let mut payload = point.payload;
    Ok(StoredPoint {
        id,
        vector,
        category: string_field(&payload, CATEGORY_KEY),
        model_id: string_field(&payload, MODEL_ID_KEY),
        attrs: payload.remove(ATTRS_KEY).map(Value::into_json),
    })
}

fn string_field(payload: &HashMap<String, Value>, key: &str) -> Option<String> {
    payload.get(key)?.as_str().cloned()
}

/// Client errors split into the caller's two cases: a request that can never succeed as sent
/// (permanent), or trouble reaching or inside the server (transient, worth a retry).
pub(super) fn client_error(e: QdrantError) -> IndexError {
    match e {
        QdrantError::ResponseError { status } => status_error(&status),
        QdrantError::ResourceExhaustedError {
            status,
            retry_after_seconds,
        } => IndexError::Unavailable(format!(
            "qdrant is rate limiting (retry after {retry_after_seconds} s): {}",
            status.message()
        )),
        e @ (QdrantError::ConversionError(_)
        | QdrantError::JsonToPayload(_)
        | QdrantError::PayloadDeserialization(_)) => IndexError::Invalid(e.to_string()),
        // I/O and anything else on the way to the server.
        e => IndexError::Unavailable(e.to_string()),
    }
}

/// gRPC status codes by what the caller should do. The client reports a failed connection as
/// `Internal` ("Failed to connect to ..."), and a client-side timeout as `Cancelled`; Qdrant
/// answers `FailedPrecondition` while writes are locked (e.g. disk full): all of these may pass
/// by themselves, so they are transient. A missing collection (`NotFound`: operations on one
/// missing *point* answer differently, see `set_category`) and a refused API key
/// (`Unauthenticated`, `PermissionDenied`) will not pass until an operator acts: misconfigured,
/// so that a worker pauses instead of spending every job's attempts on them.
pub(super) fn status_error(status: &tonic::Status) -> IndexError {
    let message = format!("qdrant: {:?}: {}", status.code(), status.message());
    match status.code() {
        Code::InvalidArgument | Code::OutOfRange | Code::AlreadyExists | Code::Unimplemented => {
            IndexError::Invalid(message)
        }
        Code::NotFound | Code::Unauthenticated | Code::PermissionDenied => {
            IndexError::Misconfigured(message)
        }
        _ => IndexError::Unavailable(message),
    }
}

/// The gRPC status code behind a client error, if the server (or the transport) answered one.
pub(super) fn status_code(e: &QdrantError) -> Option<Code> {
    match e {
        QdrantError::ResponseError { status }
        | QdrantError::ResourceExhaustedError { status, .. } => Some(status.code()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use qdrant_client::qdrant::condition::ConditionOneOf;
    use qdrant_client::qdrant::{
        DenseVector, HasIdCondition, VectorOutput, VectorsOutput, vectors_output,
    };
    use serde_json::json;

    use super::*;

    fn keyword_of(c: &Condition) -> (&str, &MatchValue) {
        match &c.condition_one_of {
            Some(ConditionOneOf::Field(f)) => (
                f.key.as_str(),
                f.r#match
                    .as_ref()
                    .and_then(|m| m.match_value.as_ref())
                    .expect("a match condition"),
            ),
            other => panic!("not a field condition: {other:?}"),
        }
    }

    #[test]
    fn no_restriction_means_no_filter() {
        assert_eq!(
            build_filter(&CategoryFilter::Any, None, &[], &[]),
            Some(None)
        );
    }

    #[test]
    fn empty_any_of_matches_nothing() {
        let any_of = CategoryFilter::AnyOf(Vec::new());
        assert_eq!(build_filter(&any_of, Some("m"), &[], &[]), None);
    }

    #[test]
    fn one_category_and_model_are_exact_keyword_matches() {
        let filter = build_filter(
            &CategoryFilter::One("winter coat".into()),
            Some("clip b32"),
            &[],
            &[],
        )
        .expect("matches something")
        .expect("a filter");
        assert!(filter.must_not.is_empty() && filter.should.is_empty());
        assert_eq!(filter.must.len(), 2);
        // Whitespace must not turn them into full-text matches.
        assert_eq!(
            keyword_of(&filter.must[0]),
            (CATEGORY_KEY, &MatchValue::Keyword("winter coat".into()))
        );
        assert_eq!(
            keyword_of(&filter.must[1]),
            (MODEL_ID_KEY, &MatchValue::Keyword("clip b32".into()))
        );
    }

    #[test]
    fn any_of_is_one_keywords_match() {
        let cats = vec!["coat".to_owned(), "rain jacket".to_owned()];
        let filter = build_filter(&CategoryFilter::AnyOf(cats.clone()), None, &[], &[])
            .expect("matches something")
            .expect("a filter");
        assert_eq!(filter.must.len(), 1);
        assert_eq!(
            keyword_of(&filter.must[0]),
            (
                CATEGORY_KEY,
                &MatchValue::Keywords(RepeatedStrings { strings: cats })
            )
        );
    }

    #[test]
    fn uncategorised_is_an_is_empty_condition() {
        let filter = build_filter(&CategoryFilter::Uncategorised, None, &[], &[])
            .expect("matches something")
            .expect("a filter");
        match &filter.must[..] {
            [
                Condition {
                    condition_one_of: Some(ConditionOneOf::IsEmpty(c)),
                },
            ] => assert_eq!(c.key, CATEGORY_KEY),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn exclude_is_a_must_not_has_id() {
        let id = Uuid::new_v4();
        let filter = build_filter(&CategoryFilter::Any, None, &[id], &[])
            .expect("matches something")
            .expect("a filter");
        assert!(filter.must.is_empty());
        match &filter.must_not[..] {
            [
                Condition {
                    condition_one_of: Some(ConditionOneOf::HasId(HasIdCondition { has_id })),
                },
            ] => assert_eq!(has_id, &vec![point_id(id)]),
            other => panic!("{other:?}"),
        }
    }

    fn payload(value: serde_json::Value) -> HashMap<String, Value> {
        qdrant_client::Payload::try_from(value)
            .expect("an object")
            .into()
    }

    #[test]
    fn hit_carries_category_and_attrs() {
        let id = Uuid::new_v4();
        let attrs =
            json!({"external_id": "sku-1", "metadata": {"title": "coat", "n": [1, 2], "p": 9.5}});
        let point = ScoredPoint {
            id: Some(point_id(id)),
            score: 0.75,
            payload: payload(json!({"category": "coat", "attrs": attrs.clone()})),
            ..ScoredPoint::default()
        };
        let hit = hit(point).expect("valid");
        assert_eq!(
            hit,
            Hit {
                id,
                score: 0.75,
                category: Some("coat".into()),
                attrs: Some(attrs),
            }
        );
    }

    #[test]
    fn hit_without_payload_has_no_category_or_attrs() {
        let id = Uuid::new_v4();
        let point = ScoredPoint {
            id: Some(point_id(id)),
            score: 0.5,
            ..ScoredPoint::default()
        };
        let hit = hit(point).expect("valid");
        assert_eq!((hit.id, hit.category, hit.attrs), (id, None, None));
    }

    #[test]
    fn numeric_or_missing_ids_are_reported() {
        let numeric = ScoredPoint {
            id: Some(PointId::from(7u64)),
            ..ScoredPoint::default()
        };
        assert!(matches!(hit(numeric), Err(IndexError::Unavailable(_))));
        assert!(matches!(
            hit(ScoredPoint::default()),
            Err(IndexError::Unavailable(_))
        ));
    }

    #[test]
    fn stored_point_has_vector_and_payload() {
        let id = Uuid::new_v4();
        let point = RetrievedPoint {
            id: Some(point_id(id)),
            payload: payload(json!({"category": "coat", "model_id": "m1", "attrs": {"a": 1}})),
            vectors: Some(VectorsOutput {
                vectors_options: Some(vectors_output::VectorsOptions::Vector(VectorOutput {
                    vector: Some(Vector::Dense(DenseVector {
                        data: vec![0.6, 0.8],
                    })),
                    ..VectorOutput::default()
                })),
            }),
            ..RetrievedPoint::default()
        };
        assert_eq!(
            stored_point(point).expect("valid"),
            StoredPoint {
                id,
                vector: vec![0.6, 0.8],
                category: Some("coat".into()),
                model_id: Some("m1".into()),
                attrs: Some(json!({"a": 1})),
            }
        );
        let without_vector = RetrievedPoint {
            id: Some(point_id(id)),
            ..RetrievedPoint::default()
        };
        assert!(stored_point(without_vector).is_err());
    }

    #[test]
    fn server_groups_become_ranked_groups_and_exclusions() {
        use qdrant_client::qdrant::GroupId;
        let scored = |id: Uuid, score: f32| ScoredPoint {
            id: Some(point_id(id)),
            score,
            ..ScoredPoint::default()
        };
        let (a, b) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let mut keys = GroupKeys::default();
        assert!(keys.exclude("attrs.product_id").is_empty());
        let group = keys
            .group(PointGroup {
                id: Some(GroupId {
                    kind: Some(Kind::StringValue("p1".into())),
                }),
                // Equal scores, answered in the wrong order: ranked by id.
                hits: vec![scored(b, 0.5), scored(a, 0.5)],
                lookup: None,
            })
            .expect("valid")
            .expect("has hits");
        assert_eq!(group.key.as_deref(), Some("p1"));
        assert_eq!(group.hits.iter().map(|h| h.id).collect::<Vec<_>>(), [a, b]);
        let numbered = keys
            .group(PointGroup {
                id: Some(GroupId {
                    kind: Some(Kind::IntegerValue(-7)),
                }),
                hits: vec![scored(a, 0.1)],
                lookup: None,
            })
            .expect("valid")
            .expect("has hits");
        assert_eq!(numbered.key.as_deref(), Some("-7"));
        let exclude = keys.exclude("attrs.product_id");
        assert_eq!(exclude.len(), 2);
        assert_eq!(
            keyword_of(&exclude[0]),
            (
                "attrs.product_id",
                &MatchValue::Keywords(RepeatedStrings {
                    strings: vec!["p1".into()]
                })
            )
        );
        assert_eq!(
            keyword_of(&exclude[1]).1,
            &MatchValue::Integers(RepeatedIntegers { integers: vec![-7] })
        );
        assert!(
            keys.group(PointGroup::default()).is_err(),
            "a group without a key"
        );
    }

    #[test]
    fn status_codes_split_into_transient_misconfigured_and_permanent() {
        use tonic::Status;
        let transient = [
            Status::unavailable("down"),
            Status::deadline_exceeded("slow"),
            Status::internal("Failed to connect to http://127.0.0.1:6334"),
            Status::cancelled("Timeout expired"),
            Status::failed_precondition("writes locked"),
        ];
        for status in transient {
            let e = client_error(QdrantError::ResponseError { status });
            assert!(e.is_transient(), "{e:?}");
        }
        let misconfigured = [
            Status::not_found("Collection `lookalike` doesn't exist!"),
            Status::unauthenticated("Must provide an API key"),
            Status::permission_denied("read-only key"),
        ];
        for status in misconfigured {
            let e = client_error(QdrantError::ResponseError { status });
            assert!(e.is_misconfigured() && !e.is_transient(), "{e:?}");
        }
        let permanent = [
            Status::invalid_argument("Vector dimension error: expected dim: 64, got 65"),
            Status::out_of_range("limit"),
        ];
        for status in permanent {
            let e = client_error(QdrantError::ResponseError { status });
            assert!(matches!(e, IndexError::Invalid(_)), "{e:?}");
        }
        let e = client_error(QdrantError::ConversionError("sparse".into()));
        assert!(matches!(e, IndexError::Invalid(_)));
    }
}
