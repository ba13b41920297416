//! The OpenAPI description (derived from the handlers' `#[utoipa::path]` attributes and the types of
//! `crates/api-types`, served at `GET /openapi.json`) kept in step with the router, both ways:
//! - every path and method it documents answers on the real service (not the not-found fallback, not
//!   405), and is open without a key exactly when the description says so;
//! - every route the code registers (the `.route("…", …)` calls in `api/src/routes/*.rs`, read at test
//!   time so that no list here can drift) is documented with its methods, and every error code the API
//!   can answer with appears in it.
//!
//! The schemas are checked against real answers by every end-to-end test (`support::schema`).
//! When this fails after a change to the API, add the handler to `routes::openapi`'s `paths(...)` or
//! its codes to the handler's `errors!`, not to this test.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde_json::Value;
use support::*;
use uuid::Uuid;

/// A key for the service under test and its SHA-256 (the well-known digest of "test"), so requests
/// can pass the auth middleware and reach the router.
const KEY: &str = "test";
const KEY_SHA256: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

const METHODS: &[&str] = &[
    "get", "post", "put", "delete", "patch", "head", "options", "trace",
];

fn spec_text() -> String {
    lookalike_api::openapi()
        .to_pretty_json()
        .expect("the document serialises")
}

fn spec() -> Value {
    serde_json::from_str(&spec_text()).expect("the document is JSON")
}

/// Every documented (path, method), methods lower-case as OpenAPI writes them.
fn documented(spec: &Value) -> BTreeMap<String, BTreeSet<String>> {
    spec["paths"]
        .as_object()
        .expect("`paths` is an object")
        .iter()
        .map(|(path, item)| {
            let methods = item
                .as_object()
                .unwrap()
                .keys()
                .filter(|k| METHODS.contains(&k.as_str()))
                .cloned()
                .collect();
            (path.clone(), methods)
        })
        .collect()
}

fn rust_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files.sort();
    files
}

/// The text of one call argument starting at `from` (just past `(` or `,`): up to the comma or
/// closing parenthesis at depth 0, skipping over nested brackets and string literals.
fn argument(src: &str, from: usize) -> (&str, usize) {
    let bytes = src.as_bytes();
    let (mut depth, mut i, mut in_str) = (0i32, from, false);
    while i < bytes.len() {
        let c = bytes[i];
        if in_str {
            match c {
                b'\\' => i += 1,
                b'"' => in_str = false,
                _ => {}
            }
        } else {
            match c {
                b'"' => in_str = true,
                b'(' | b'{' | b'[' => depth += 1,
                b')' | b'}' | b']' if depth == 0 => return (&src[from..i], i),
                b')' | b'}' | b']' => depth -= 1,
                b',' if depth == 0 => return (&src[from..i], i),
                _ => {}
            }
        }
        i += 1;
    }
    panic!("unterminated call in source at byte {from}");
}

/// The string literal an argument is, if it is one (codes have no escapes).
fn literal(arg: &str) -> Option<String> {
    let arg = arg.trim();
    arg.strip_prefix('"')?.strip_suffix('"').map(str::to_string)
}

/// The methods a method router expression serves: `get(show).delete(…)`, `axum::routing::post(retry)`:
/// the names called at the expression's top level, not inside handler arguments or closures.
fn methods_of(expr: &str) -> BTreeSet<String> {
    let bytes = expr.as_bytes();
    let mut found = BTreeSet::new();
    let (mut depth, mut in_str) = (0i32, false);
    for (i, &c) in bytes.iter().enumerate() {
        if in_str {
            if c == b'"' && bytes[i - 1] != b'\\' {
                in_str = false;
            }
            continue;
        }
        match c {
            b'"' => in_str = true,
            b'(' if depth == 0 => {
                let start = expr[..i]
                    .rfind(|ch: char| !(ch.is_ascii_alphanumeric() || ch == '_'))
                    .map_or(0, |p| p + 1);
                let name = &expr[start..i];
                if METHODS.contains(&name) {
                    found.insert(name.to_string());
                }
                depth += 1;
            }
            b'(' | b'{' | b'[' => depth += 1,
            b')' | b'}' | b']' => depth -= 1,
            _ => {}
        }
    }
    found
}

/// The routes the code registers: every `.route("<path>", <method router>)` in api/src/routes/.
fn registered_routes() -> BTreeMap<String, BTreeSet<String>> {
    let mut routes: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in rust_files(&repo_root().join("api/src/routes")) {
        let src = std::fs::read_to_string(&file).unwrap();
        for (at, _) in src.match_indices(".route(") {
            let (path, end) = argument(&src, at + ".route(".len());
            let path = literal(path).unwrap_or_else(|| {
                panic!(
                    "{}: a route whose path is not a string literal; this test reads the literals",
                    file.display()
                )
            });
            let (handler, _) = argument(&src, end + 1);
            let methods = methods_of(handler);
            assert!(
                !methods.is_empty(),
                "{}: no method found for route {path} in `{handler}`",
                file.display()
            );
            routes.entry(path).or_default().extend(methods);
        }
    }
    routes
}

/// `pub const NAME: &str = "value";` in crates/core/src/codes.rs. Code arguments name a constant by
/// its last path segment, so every name there must be unique.
fn core_codes() -> BTreeMap<String, String> {
    let src = std::fs::read_to_string(repo_root().join("crates/core/src/codes.rs")).unwrap();
    let mut codes = BTreeMap::new();
    for l in src
        .lines()
        .filter_map(|l| l.trim().strip_prefix("pub const "))
    {
        let Some((name, rest)) = l.split_once(':') else {
            continue;
        };
        let Some(value) = rest
            .split_once('=')
            .and_then(|(_, v)| literal(v.trim().trim_end_matches(';')))
        else {
            continue;
        };
        let previous = codes.insert(name.trim().to_string(), value);
        assert!(
            previous.is_none(),
            "codes.rs: `{}` is defined twice",
            name.trim()
        );
    }
    codes
}

/// Every error code the API sends: the code argument of each `ApiError::…(…)` call in api/src (a
/// constant from crates/core/src/codes.rs) and every code in that module (the decoder's `image_*`
/// included). Also answers the calls that write a code inline,
/// as a string literal, which there must be none of: clients match on codes, so each is defined once.
fn error_codes() -> (BTreeSet<String>, Vec<String>) {
    let constants = core_codes();
    let mut codes: BTreeSet<String> = constants.values().cloned().collect();
    let mut inline = Vec::new();
    for file in rust_files(&repo_root().join("api/src")) {
        let src = std::fs::read_to_string(&file).unwrap();
        for (at, _) in src.match_indices("ApiError::") {
            let rest = &src[at + "ApiError::".len()..];
            let Some(open) = rest.find('(') else { continue };
            let constructor = &rest[..open];
            if !constructor
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_')
            {
                continue; // not a call, e.g. a path in a `use`
            }
            let mut from = at + "ApiError::".len() + open + 1;
            if constructor == "new" {
                // `ApiError::new(status, code, message)`: the code is the second argument.
                from = argument(&src, from).1 + 1;
            }
            let (arg, _) = argument(&src, from);
            let arg = arg.trim();
            if let Some(code) = literal(arg) {
                let line = src[..at].lines().count();
                inline.push(format!("{}:{line}: \"{code}\"", file.display()));
                codes.insert(code);
            } else if let Some(name) = arg.rsplit("::").next().filter(|_| arg.contains("codes::")) {
                let code = constants
                    .get(name)
                    .unwrap_or_else(|| panic!("{}: `{arg}` is not in codes.rs", file.display()));
                codes.insert(code.clone());
            }
            // Anything else passes a code through (`e.code`): those come from codes.rs or the
            // decoder, both read here.
        }
    }
    (codes, inline)
}

#[test]
fn every_error_code_the_api_sends_is_a_constant_in_one_place() {
    let (_, inline) = error_codes();
    assert!(
        inline.is_empty(),
        "error codes written inline; add them to crates/core/src/codes.rs and use the constant: {inline:#?}"
    );
}

#[test]
fn every_route_in_the_code_is_documented_with_its_methods() {
    let spec = spec();
    let documented = documented(&spec);
    let registered = registered_routes();
    // A guard against the source reading silently finding nothing after a refactor.
    assert!(
        registered.len() >= 15 && registered.contains_key("/v1/items/{id}"),
        "found only {registered:?} in api/src/routes"
    );
    let mut undocumented = Vec::new();
    for (path, methods) in &registered {
        for method in methods {
            if !documented.get(path).is_some_and(|m| m.contains(method)) {
                undocumented.push(format!("{} {path}", method.to_uppercase()));
            }
        }
    }
    assert!(
        undocumented.is_empty(),
        "routes missing from the OpenAPI document (routes::openapi `paths(...)`): {undocumented:?}"
    );
}

#[test]
fn every_error_code_is_documented() {
    let text = spec_text();
    let (codes, _) = error_codes();
    assert!(
        codes.len() >= 40 && codes.contains("route_not_found") && codes.contains("forbidden_scope"),
        "found only {codes:?}"
    );
    let missing: Vec<&String> = codes
        .iter()
        .filter(|c| !text.contains(&format!("\"{c}\"")))
        .collect();
    assert!(
        missing.is_empty(),
        "error codes no response documents (an `errors!` beside the handler that sends them): {missing:?}"
    );
}

/// Every `$ref` points at something in the document, so tools that load it do not stop at a typo.
#[test]
fn every_reference_resolves() {
    fn walk(node: &Value, root: &Value, bad: &mut Vec<String>) {
        match node {
            Value::Object(map) => {
                if let Some(Value::String(r)) = map.get("$ref") {
                    let found = r
                        .strip_prefix('#')
                        .and_then(|pointer| root.pointer(pointer));
                    if found.is_none() {
                        bad.push(r.clone());
                    }
                }
                map.values().for_each(|v| walk(v, root, bad));
            }
            Value::Array(items) => items.iter().for_each(|v| walk(v, root, bad)),
            _ => {}
        }
    }
    let spec = spec();
    let mut bad = Vec::new();
    walk(&spec, &spec, &mut bad);
    assert!(bad.is_empty(), "unresolved references: {bad:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn every_documented_route_answers_and_is_open_as_documented() {
    let mut env = TestEnv::new().await;
    // Keys on, so the description's `security` is checked too.
    env.set("AUTH__ENABLED", "true")
        .set("AUTH__KEYS", format!("spec:{KEY_SHA256}:read+write"));
    let service = env.start().await;

    let response = service
        .client
        .get(service.url("/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "application/json",
        "the description is served as JSON"
    );
    let served = response.text().await.unwrap();
    let spec: Value = serde_json::from_str(&served).expect("the description parses");
    assert_eq!(
        spec,
        self::spec(),
        "the service serves the document derived from the code"
    );
    let version = spec["openapi"].as_str().unwrap_or_default();
    assert!(version.starts_with("3.1."), "OpenAPI 3.1, not {version:?}");
    let default_security = &spec["security"];
    assert!(
        default_security.as_array().is_some_and(|s| !s.is_empty()),
        "the API needs a key unless an operation says otherwise"
    );

    let mut failures = Vec::new();
    for (path, methods) in documented(&spec) {
        // Path parameters are ids; a random one names nothing, which is fine: the route still answers.
        let mut url_path = path.clone();
        while let (Some(open), Some(close)) = (url_path.find('{'), url_path.find('}')) {
            url_path.replace_range(open..=close, &Uuid::new_v4().to_string());
        }
        for method in methods {
            let operation = &spec["paths"][&path][&method];
            let with_body = operation.get("requestBody").is_some();
            let request = |key: Option<&str>| {
                let mut r = service.client.request(
                    reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap(),
                    service.url(&url_path),
                );
                if with_body {
                    r = r.json(&serde_json::json!({}));
                }
                if let Some(key) = key {
                    r = r.bearer_auth(key);
                }
                r
            };
            let what = format!("{} {path}", method.to_uppercase());

            // With a key: the router has the route (the fallback would say `route_not_found`).
            let (status, body) = service.send(request(Some(KEY))).await;
            let code = body["error"]["code"].as_str().unwrap_or_default();
            if status == 405 || code == "route_not_found" {
                failures.push(format!("{what}: {status} {body} (no such route)"));
            }

            // Without a key: open exactly when the operation says `security: []`.
            let open = operation["security"]
                .as_array()
                .is_some_and(|s| s.is_empty());
            let (status, body) = service.send(request(None)).await;
            match (open, status) {
                (true, 401) => failures.push(format!("{what}: documented open, answered 401")),
                (false, 401) if body["error"]["code"] == "unauthorized" => {}
                (false, _) => failures.push(format!(
                    "{what}: documented as needing a key, answered {status} {body} without one"
                )),
                _ => {}
            }
        }
    }
    assert!(
        failures.is_empty(),
        "the OpenAPI document and the router disagree:\n{}",
        failures.join("\n")
    );
}
