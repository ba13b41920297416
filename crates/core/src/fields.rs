//! Filterable metadata fields. The catalogue declares them in configuration (`[fields]`, name and
//! kind); a submitted item's metadata must give each declared field a value of its kind (checked at
//! submit); similarity queries and the item listing narrow their results by them.
//!
//! The values themselves stay where they already are, in the item's `metadata` (Postgres, and the
//! copy kept with each vector in the index), so declaring a field on an existing catalogue copies
//! nothing: the index builds a payload index over the values it already holds, and items whose value
//! has the wrong kind are listed (`GET /v1/fields`) rather than silently left out.
//!
//! One shape on every endpoint: query parameters. `brand=acme` (repeat it for any of several
//! values), `in_stock=true`, `price=100` and the ranges `price_lt`, `price_lte`, `price_gt`,
//! `price_gte` on number fields. Conditions on different parameters must all hold.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The kind of a declared field, which decides how it is indexed and which filters it takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FieldKind {
    /// Text compared whole (a brand, a colour, a seller); a list of texts matches any of them.
    Keyword,
    /// A number (a price, a rating): equality and ranges.
    Number,
    /// `true` or `false` (in stock).
    Bool,
}

impl FieldKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FieldKind::Keyword => "keyword",
            FieldKind::Number => "number",
            FieldKind::Bool => "bool",
        }
    }

    /// Whether a metadata value is of this kind. `null` is "no value", which every kind accepts.
    pub fn accepts(self, value: &Value) -> bool {
        match (self, value) {
            (_, Value::Null) => true,
            (FieldKind::Keyword, Value::String(_)) => true,
            (FieldKind::Keyword, Value::Array(values)) => values.iter().all(Value::is_string),
            (FieldKind::Number, Value::Number(_)) => true,
            (FieldKind::Bool, Value::Bool(_)) => true,
            _ => false,
        }
    }
}

/// The declared fields, by name (`[fields]` in the configuration).
pub type Fields = BTreeMap<String, FieldKind>;

/// Query parameters no field may be named after: every endpoint's own parameters, present and
/// planned, so that a declared field never shadows one.
pub const RESERVED: &[&str] = &[
    "k",
    "category",
    "min_score",
    "offset",
    "limit",
    "url",
    "add",
    "exclude",
    "file",
    "image",
    "box",
    "group",
    "collapse",
    "positive",
    "negative",
    "external_id",
    "metadata",
    "product_id",
    "status",
    "cursor",
];

/// Range suffixes of number fields, longest first so `_lte` is not read as `_lt` + "e".
const RANGES: [(&str, RangeOp); 4] = [
    ("_gte", RangeOp::Gte),
    ("_lte", RangeOp::Lte),
    ("_gt", RangeOp::Gt),
    ("_lt", RangeOp::Lt),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RangeOp {
    Gt,
    Gte,
    Lt,
    Lte,
}

/// Checks a declared field's name: lower-case letters, digits and `_`, starting with a letter, at
/// most 64 characters, not a reserved parameter and not ending like a range parameter.
pub fn check_name(name: &str) -> Result<(), String> {
    let well_formed = (1..=64).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if !well_formed {
        return Err(format!(
            "field name `{name}` must be 1 to 64 lower-case letters, digits or `_`, starting with a letter"
        ));
    }
    if RESERVED.contains(&name) {
        return Err(format!(
            "field name `{name}` is a query parameter of the API; choose another"
        ));
    }
    if let Some((suffix, _)) = RANGES.iter().find(|(s, _)| name.ends_with(s)) {
        return Err(format!(
            "field name `{name}` ends with `{suffix}`, which filters read as a range; choose another"
        ));
    }
    Ok(())
}

/// A value a keyword or bool condition compares with.
#[derive(Debug, Clone, PartialEq)]
pub enum FieldValue {
    Keyword(String),
    Bool(bool),
}

/// Bounds of a number condition; at least one is set.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Range {
    pub gt: Option<f64>,
    pub gte: Option<f64>,
    pub lt: Option<f64>,
    pub lte: Option<f64>,
}

impl Range {
    pub fn contains(&self, x: f64) -> bool {
        self.gt.is_none_or(|b| x > b)
            && self.gte.is_none_or(|b| x >= b)
            && self.lt.is_none_or(|b| x < b)
            && self.lte.is_none_or(|b| x <= b)
    }
}

/// What one field must satisfy.
#[derive(Debug, Clone, PartialEq)]
pub enum Test {
    /// Equal to one of these (a keyword list in the metadata matches when any of its values does).
    AnyOf(Vec<FieldValue>),
    /// A number within these bounds (`price=100` is the range `[100, 100]`).
    Range(Range),
}

/// One filter condition on a declared field.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldCondition {
    pub field: String,
    pub kind: FieldKind,
    pub test: Test,
}

impl FieldCondition {
    /// Whether an item's metadata satisfies the condition, the same way the index decides it: a
    /// value of the wrong kind, or none, never matches.
    pub fn matches(&self, metadata: &Value) -> bool {
        let value = metadata.get(&self.field).unwrap_or(&Value::Null);
        match (&self.test, value) {
            (Test::Range(r), Value::Number(n)) => n.as_f64().is_some_and(|x| r.contains(x)),
            (Test::AnyOf(wanted), Value::String(s)) => {
                wanted.contains(&FieldValue::Keyword(s.clone()))
            }
            (Test::AnyOf(wanted), Value::Array(values)) => values.iter().any(|v| {
                v.as_str()
                    .is_some_and(|s| wanted.contains(&FieldValue::Keyword(s.into())))
            }),
            (Test::AnyOf(wanted), Value::Bool(b)) => wanted.contains(&FieldValue::Bool(*b)),
            _ => false,
        }
    }
}

/// A refused filter or metadata value, with the stable code the API answers (422).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub code: &'static str,
    pub message: String,
}

pub use crate::codes::fields::{INVALID_FIELD_VALUE, INVALID_FILTER, UNKNOWN_FILTER_FIELD};

/// Reads the filter conditions from a request's query parameters. `own` are the request's own
/// parameters, skipped here; every other parameter must name a declared field (or a range of a
/// number field), otherwise the request is refused rather than answered unfiltered.
pub fn parse_query<'a>(
    pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
    declared: &Fields,
    own: &[&str],
) -> Result<Vec<FieldCondition>, FieldError> {
    let mut conditions: Vec<FieldCondition> = Vec::new();
    for (name, raw) in pairs {
        if own.contains(&name) {
            continue;
        }
        let (field, op) = match declared.get(name) {
            Some(_) => (name, None),
            None => match RANGES
                .iter()
                .find_map(|(s, op)| name.strip_suffix(s).map(|f| (f, Some(*op))))
            {
                Some((field, op)) if declared.contains_key(field) => (field, op),
                _ => {
                    let names: Vec<&str> = declared.keys().map(String::as_str).collect();
                    return Err(FieldError {
                        code: UNKNOWN_FILTER_FIELD,
                        message: format!(
                            "`{name}` is neither a parameter of this request nor a declared filter field \
                             (declared in [fields]: {})",
                            if names.is_empty() {
                                "none".to_string()
                            } else {
                                names.join(", ")
                            }
                        ),
                    });
                }
            },
        };
        let kind = declared[field];
        let bad = |what: &str| FieldError {
            code: INVALID_FILTER,
            message: format!("`{name}={raw}`: {what}"),
        };
        let test = match (kind, op) {
            (FieldKind::Number, op) => {
                let x: f64 = raw
                    .trim()
                    .parse()
                    .ok()
                    .filter(|x: &f64| x.is_finite())
                    .ok_or_else(|| bad(&format!("`{field}` is a number field")))?;
                let mut r = Range::default();
                match op {
                    None => (r.gte, r.lte) = (Some(x), Some(x)),
                    Some(RangeOp::Gt) => r.gt = Some(x),
                    Some(RangeOp::Gte) => r.gte = Some(x),
                    Some(RangeOp::Lt) => r.lt = Some(x),
                    Some(RangeOp::Lte) => r.lte = Some(x),
                }
                Test::Range(r)
            }
            (_, Some(_)) => {
                return Err(bad(&format!(
                    "ranges apply to number fields; `{field}` is a {} field",
                    kind.as_str()
                )));
            }
            (FieldKind::Keyword, None) => Test::AnyOf(vec![FieldValue::Keyword(raw.to_string())]),
            (FieldKind::Bool, None) => match raw.trim() {
                "true" => Test::AnyOf(vec![FieldValue::Bool(true)]),
                "false" => Test::AnyOf(vec![FieldValue::Bool(false)]),
                _ => return Err(bad(&format!("`{field}` is a bool field: true or false"))),
            },
        };
        // Repeating an equality widens it (any of the values); bounds on one number field combine.
        let same = conditions.iter_mut().find(|c| {
            c.field == field
                && matches!(
                    (&c.test, &test, op),
                    (Test::AnyOf(_), Test::AnyOf(_), None)
                        | (Test::Range(_), Test::Range(_), Some(_))
                )
        });
        match (same, test) {
            (Some(c), Test::AnyOf(more)) => {
                if let Test::AnyOf(values) = &mut c.test {
                    values.extend(more);
                }
            }
            (Some(c), Test::Range(more)) => {
                if let Test::Range(r) = &mut c.test {
                    r.gt = more.gt.or(r.gt);
                    r.gte = more.gte.or(r.gte);
                    r.lt = more.lt.or(r.lt);
                    r.lte = more.lte.or(r.lte);
                }
            }
            (None, test) => conditions.push(FieldCondition {
                field: field.to_string(),
                kind,
                test,
            }),
        }
    }
    Ok(conditions)
}

/// Checks submitted metadata against the declared fields: each declared field it holds must be of
/// the field's kind. Undeclared keys are the catalogue's own business and pass.
pub fn check_metadata(metadata: &Value, declared: &Fields) -> Result<(), FieldError> {
    for (field, kind) in declared {
        if let Some(value) = metadata.get(field)
            && !kind.accepts(value)
        {
            let expected = match kind {
                FieldKind::Keyword => "a text (or a list of texts)",
                FieldKind::Number => "a number",
                FieldKind::Bool => "true or false",
            };
            return Err(FieldError {
                code: INVALID_FIELD_VALUE,
                message: format!(
                    "metadata.{field} is declared as a {} field and must be {expected}, not {value}",
                    kind.as_str()
                ),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn declared() -> Fields {
        [
            ("brand".to_string(), FieldKind::Keyword),
            ("price".to_string(), FieldKind::Number),
            ("in_stock".to_string(), FieldKind::Bool),
        ]
        .into()
    }

    fn parse(q: &[(&str, &str)]) -> Result<Vec<FieldCondition>, FieldError> {
        parse_query(q.iter().copied(), &declared(), &["k", "category"])
    }

    #[test]
    fn equality_ranges_and_own_parameters() {
        let c = parse(&[
            ("k", "5"),
            ("brand", "acme"),
            ("brand", "zeta"),
            ("price_gte", "10"),
            ("price_lt", "100"),
            ("in_stock", "true"),
        ])
        .unwrap();
        assert_eq!(c.len(), 3, "{c:?}");
        assert_eq!(
            c[0].test,
            Test::AnyOf(vec![
                FieldValue::Keyword("acme".into()),
                FieldValue::Keyword("zeta".into())
            ])
        );
        assert_eq!(
            c[1].test,
            Test::Range(Range {
                gte: Some(10.0),
                lt: Some(100.0),
                ..Range::default()
            })
        );
        assert_eq!(c[2].test, Test::AnyOf(vec![FieldValue::Bool(true)]));
        assert_eq!(
            parse(&[("price", "100")]).unwrap()[0].test,
            Test::Range(Range {
                gte: Some(100.0),
                lte: Some(100.0),
                ..Range::default()
            })
        );
    }

    #[test]
    fn undeclared_fields_and_bad_values_are_refused_with_their_codes() {
        let code = |q: &[(&str, &str)]| parse(q).unwrap_err().code;
        assert_eq!(code(&[("colour", "red")]), UNKNOWN_FILTER_FIELD);
        assert_eq!(code(&[("colour_lt", "3")]), UNKNOWN_FILTER_FIELD);
        assert_eq!(code(&[("price", "cheap")]), INVALID_FILTER);
        assert_eq!(code(&[("price_lt", "NaN")]), INVALID_FILTER);
        assert_eq!(code(&[("brand_lt", "b")]), INVALID_FILTER);
        assert_eq!(code(&[("in_stock", "maybe")]), INVALID_FILTER);
    }

    #[test]
    fn conditions_match_like_the_index() {
        let c = parse(&[("brand", "acme"), ("price_lt", "100"), ("in_stock", "true")]).unwrap();
        let all = |m: Value| c.iter().all(|c| c.matches(&m));
        assert!(all(
            json!({"brand": "acme", "price": 99.5, "in_stock": true})
        ));
        assert!(all(
            json!({"brand": ["x", "acme"], "price": 1, "in_stock": true})
        ));
        assert!(!all(
            json!({"brand": "acme", "price": 100, "in_stock": true})
        ));
        assert!(!all(
            json!({"brand": "acme", "price": "99", "in_stock": true})
        ));
        assert!(!all(json!({"brand": "acme", "price": 5})));
    }

    #[test]
    fn metadata_of_the_wrong_kind_is_refused() {
        let d = declared();
        assert!(check_metadata(&json!({"brand": "a", "price": 3, "other": [1]}), &d).is_ok());
        assert!(check_metadata(&json!({"brand": null}), &d).is_ok());
        let e = check_metadata(&json!({"price": "3"}), &d).unwrap_err();
        assert_eq!(e.code, INVALID_FIELD_VALUE);
        assert!(e.message.contains("metadata.price"), "{}", e.message);
        assert!(check_metadata(&json!({"in_stock": 1}), &d).is_err());
        assert!(check_metadata(&json!({"brand": ["a", 2]}), &d).is_err());
    }

    #[test]
    fn names_that_would_shadow_a_parameter_are_refused() {
        assert!(check_name("brand").is_ok());
        assert!(check_name("k").is_err());
        assert!(check_name("price_lt").is_err());
        assert!(check_name("Brand").is_err());
        assert!(check_name("2x").is_err());
    }
}
