//! Every answer the end-to-end tests receive through [`super::Service::send`] is checked against the
//! OpenAPI document the service serves (`lookalike_api::openapi()`, derived from the code): the
//! operation is found by method and path template, and a JSON body must fit the schema documented
//! for its status (an error status the operation does not list must still be the `Error` shape).
//! So a response that drifts from its type, or a code a response does not document, fails the test
//! that met it.
//!
//! The validator covers what the document uses: `$ref`, `type` (one or several), `properties`,
//! `required`, `additionalProperties: false`, `items`, `minItems`/`maxItems`, `enum`, `const`,
//! `allOf`, `oneOf`, `anyOf`, `pattern` (only `^…$` anchors and literal text are not interpreted:
//! patterns are left to the unit tests of the types).

use std::sync::OnceLock;

use serde_json::Value;

fn document() -> &'static Value {
    static DOC: OnceLock<Value> = OnceLock::new();
    DOC.get_or_init(|| {
        serde_json::to_value(lookalike_api::openapi()).expect("the document is JSON")
    })
}

/// The operation for `method` and a concrete `path`, with the template it matched.
fn operation(method: &str, path: &str) -> Option<(String, &'static Value)> {
    let paths = document()["paths"].as_object()?;
    let segments: Vec<&str> = path.split('/').collect();
    for (template, item) in paths {
        let parts: Vec<&str> = template.split('/').collect();
        let fits = parts.len() == segments.len()
            && parts
                .iter()
                .zip(&segments)
                .all(|(t, s)| t == s || (t.starts_with('{') && t.ends_with('}')));
        if fits && let Some(op) = item.get(method.to_ascii_lowercase()) {
            return Some((template.clone(), op));
        }
    }
    None
}

/// Checks one answer; panics with what does not fit.
pub fn check_response(method: &str, path: &str, status: u16, content_type: &str, body: &Value) {
    if !content_type.starts_with("application/json") {
        return;
    }
    let Some((template, op)) = operation(method, path) else {
        // Not a documented route (a test of the not-found fallback): the error shape still holds.
        if status >= 400 {
            expect(body, &error_shape(), &format!("{method} {path} {status}"));
        }
        return;
    };
    let what = format!("{method} {template} → {status}");
    if universal_error(body) {
        // The codes any endpoint may answer (`invalid_query`, `route_not_found`,
        // `method_not_allowed`), documented once on the error shape rather than on every operation.
        expect(body, &error_shape(), &what);
        return;
    }
    let documented = &op["responses"][status.to_string()];
    let schema = documented
        .pointer("/content/application~1json/schema")
        .cloned()
        .or_else(|| (documented.is_null() && status >= 400).then(error_shape));
    match schema {
        Some(schema) => expect(body, &schema, &what),
        None => panic!("{what}: the answer's status is not documented for this operation: {body}"),
    }
}

/// An error whose code is one the document lists as possible on any endpoint (the examples of the
/// error shape's `code`).
fn universal_error(body: &Value) -> bool {
    let code = &body["error"]["code"];
    document()
        .pointer("/components/schemas/ErrorDetail/properties/code/examples")
        .and_then(Value::as_array)
        .is_some_and(|codes| codes.contains(code))
}

/// The error shape every error answer has, whatever its operation documents.
fn error_shape() -> Value {
    serde_json::json!({"$ref": "#/components/schemas/Error"})
}

fn expect(value: &Value, schema: &Value, what: &str) {
    let mut errors = Vec::new();
    validate(value, schema, "$", &mut errors);
    assert!(
        errors.is_empty(),
        "{what}: the answer does not fit the OpenAPI document:\n{}\nbody: {value}",
        errors.join("\n")
    );
}

fn resolve(schema: &Value) -> &Value {
    match schema.get("$ref").and_then(Value::as_str) {
        Some(r) => {
            let target = document()
                .pointer(r.trim_start_matches('#'))
                .unwrap_or_else(|| panic!("unresolved reference {r}"));
            resolve(target)
        }
        None => schema,
    }
}

fn type_fits(value: &Value, ty: &str) -> bool {
    match ty {
        "null" => value.is_null(),
        "boolean" => value.is_boolean(),
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "number" => value.is_number(),
        "integer" => value.as_i64().is_some() || value.as_u64().is_some(),
        _ => true,
    }
}

/// Appends to `errors` every way `value` breaks `schema`, naming where (`$.results[0].score`).
pub fn validate(value: &Value, schema: &Value, at: &str, errors: &mut Vec<String>) {
    let schema = resolve(schema);
    if let Some(ty) = schema.get("type") {
        let fits = match ty {
            Value::String(t) => type_fits(value, t),
            Value::Array(ts) => ts
                .iter()
                .filter_map(Value::as_str)
                .any(|t| type_fits(value, t)),
            _ => true,
        };
        if !fits {
            errors.push(format!("{at}: {value} is not of type {ty}"));
            return;
        }
    }
    if let Some(options) = schema.get("enum").and_then(Value::as_array)
        && !value.is_null()
        && !options.contains(value)
    {
        errors.push(format!("{at}: {value} is not one of {options:?}"));
    }
    if let Some(constant) = schema.get("const")
        && constant != value
    {
        errors.push(format!("{at}: {value} is not {constant}"));
    }
    for part in schema
        .get("allOf")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        validate(value, part, at, errors);
    }
    for (key, exactly_one) in [("oneOf", true), ("anyOf", false)] {
        if let Some(options) = schema.get(key).and_then(Value::as_array) {
            let fitting = options
                .iter()
                .filter(|o| {
                    let mut e = Vec::new();
                    validate(value, o, at, &mut e);
                    e.is_empty()
                })
                .count();
            if fitting == 0 || (exactly_one && fitting > 1) {
                errors.push(format!("{at}: {value} fits {fitting} of the {key} options"));
            }
        }
    }
    if let Value::Object(map) = value {
        let properties = schema.get("properties").and_then(Value::as_object);
        for name in schema
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let name = name.as_str().unwrap_or_default();
            if !map.contains_key(name) {
                errors.push(format!("{at}: `{name}` is missing"));
            }
        }
        for (name, v) in map {
            match properties.and_then(|p| p.get(name)) {
                Some(s) => validate(v, s, &format!("{at}.{name}"), errors),
                None => {
                    if schema.get("additionalProperties") == Some(&Value::Bool(false)) {
                        errors.push(format!("{at}: `{name}` is not documented"));
                    } else if let Some(extra) =
                        schema.get("additionalProperties").filter(|s| s.is_object())
                    {
                        validate(v, extra, &format!("{at}.{name}"), errors);
                    }
                }
            }
        }
    }
    if let Value::Array(items) = value {
        if let Some(item) = schema.get("items") {
            for (i, v) in items.iter().enumerate() {
                validate(v, item, &format!("{at}[{i}]"), errors);
            }
        }
        if let Some(max) = schema.get("maxItems").and_then(Value::as_u64)
            && items.len() as u64 > max
        {
            errors.push(format!("{at}: {} items, at most {max}", items.len()));
        }
        if let Some(min) = schema.get("minItems").and_then(Value::as_u64)
            && (items.len() as u64) < min
        {
            errors.push(format!("{at}: {} items, at least {min}", items.len()));
        }
    }
}
