//! API keys: every request names its key (`Authorization: Bearer <key>` or `X-Api-Key: <key>`),
//! and the key must hold the scope its route needs. Health checks and the web page's own files stay
//! open: orchestrators probe without secrets, and the page asks for a key before it calls the API.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use lookalike_core::codes::auth as codes;
use lookalike_core::config::{Auth, Scope};
use sha2::{Digest, Sha256};

use crate::{ApiError, ApiResult};

/// Anyone may GET these: `/healthz` and `/readyz` (health.rs), `/metrics` (metrics.rs: scrapers sit
/// inside the network; `metrics.enabled = false` removes it) and the page with its assets (web.rs).
const OPEN: &[&str] = &[
    "/healthz",
    "/readyz",
    "/metrics",
    "/openapi.json",
    "/",
    "/app.js",
    "/style.css",
];

/// The scope a request needs; `None` for the open paths.
///
/// Reading is GET (and HEAD); `POST /v1/search` is a query, so it reads too (with `add=true` it also
/// stores its image, which the search handler checks with [`require`]). Every other method writes, so
/// a route added later is guarded by the stricter scope until someone decides otherwise.
pub fn required_scope(method: &Method, path: &str) -> Option<Scope> {
    let reading = method == Method::GET || method == Method::HEAD;
    if reading && OPEN.contains(&path) {
        None
    } else if reading || (method == Method::POST && path == "/v1/search") {
        Some(Scope::Read)
    } else {
        Some(Scope::Write)
    }
}

/// The hex SHA-256 of a key: what the configuration stores instead of the key.
pub fn key_sha256(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// The configured keys, decoded once.
pub struct Keys {
    enabled: bool,
    keys: Vec<Known>,
}

struct Known {
    name: Arc<str>,
    digest: [u8; 32],
    scopes: Vec<Scope>,
}

impl Keys {
    pub fn from_config(auth: &Auth) -> Self {
        let keys = auth
            .keys
            .iter()
            .map(|k| {
                let mut digest = [0u8; 32];
                hex::decode_to_slice(&k.sha256, &mut digest).expect(
                    "auth.keys are checked to be 64 hex digits when the configuration loads",
                );
                Known {
                    name: Arc::from(k.name.as_str()),
                    digest,
                    scopes: k.scopes.clone(),
                }
            })
            .collect();
        Keys {
            enabled: auth.enabled,
            keys,
        }
    }

    /// Every configured digest is compared, each in constant time, so the answer's timing says
    /// nothing about how close a guess came.
    fn find(&self, key: &str) -> Option<&Known> {
        let digest: [u8; 32] = Sha256::digest(key.as_bytes()).into();
        let mut found = None;
        for known in &self.keys {
            if same_digest(&known.digest, &digest) {
                found = Some(known);
            }
        }
        found
    }
}

fn same_digest(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// Who is calling, for handlers whose need depends on the body (`POST /v1/search` with `add=true`).
#[derive(Clone, Debug)]
pub enum Caller {
    /// `auth.enabled = false`: everything is allowed.
    Unchecked,
    Key {
        name: Arc<str>,
        scopes: Vec<Scope>,
    },
}

impl Caller {
    fn allows(&self, scope: Scope) -> bool {
        match self {
            Caller::Unchecked => true,
            Caller::Key { scopes, .. } => scopes.contains(&scope),
        }
    }
}

/// Checks a scope that only the handler can know is needed. No caller at all means the request did
/// not pass the middleware, which must not grant anything.
pub fn require(caller: Option<&Caller>, scope: Scope, what: &str) -> ApiResult<()> {
    match caller {
        Some(c) if c.allows(scope) => Ok(()),
        Some(Caller::Key { name, scopes }) => Err(forbidden(name, scopes, scope, what)),
        _ => Err(missing_key()),
    }
}

fn forbidden(name: &str, scopes: &[Scope], need: Scope, what: &str) -> ApiError {
    let has: Vec<&str> = scopes.iter().map(|s| s.as_str()).collect();
    ApiError::new(
        axum::http::StatusCode::FORBIDDEN,
        codes::FORBIDDEN_SCOPE,
        format!(
            "{what} needs the `{need}` scope; the API key `{name}` has only `{}`",
            has.join("+")
        ),
    )
}

fn missing_key() -> ApiError {
    ApiError::new(
        axum::http::StatusCode::UNAUTHORIZED,
        codes::UNAUTHORIZED,
        "this endpoint needs an API key: send `Authorization: Bearer <key>` (or `X-Api-Key: <key>`)",
    )
}

/// The key the request presents: a Bearer token, else `X-Api-Key`. Keys are never read from the URL,
/// where they would end up in access logs and browser history.
fn presented_key(headers: &HeaderMap) -> Option<&str> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim());
    let api_key = || {
        headers
            .get("x-api-key")
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    bearer
        .filter(|k| !k.is_empty())
        .or_else(|| api_key().filter(|k| !k.is_empty()))
}

/// The middleware: finds the key, checks its scope, records its name (never the key) on the request's
/// log span, and hands the handler a [`Caller`].
pub async fn authenticate(
    State(keys): State<Arc<Keys>>,
    mut request: Request,
    next: Next,
) -> Response {
    if !keys.enabled {
        request.extensions_mut().insert(Caller::Unchecked);
        return next.run(request).await;
    }
    let Some(need) = required_scope(request.method(), request.uri().path()) else {
        return next.run(request).await;
    };
    let Some(presented) = presented_key(request.headers()) else {
        tracing::info!(code = codes::UNAUTHORIZED, "request refused: no API key");
        return refuse(request, challenge(missing_key(), None)).await;
    };
    let Some(key) = keys.find(presented) else {
        tracing::info!(
            code = codes::INVALID_API_KEY,
            "request refused: unknown API key"
        );
        let answer = challenge(
            ApiError::new(
                axum::http::StatusCode::UNAUTHORIZED,
                codes::INVALID_API_KEY,
                "the API key is not one this service knows (it may have been removed)",
            ),
            Some("invalid_token"),
        );
        return refuse(request, answer).await;
    };
    tracing::Span::current().record("api_key", &*key.name);
    let caller = Caller::Key {
        name: key.name.clone(),
        scopes: key.scopes.clone(),
    };
    if !caller.allows(need) {
        tracing::info!(
            code = codes::FORBIDDEN_SCOPE,
            "request refused: scope `{need}` missing"
        );
        let what = format!("{} {}", request.method(), request.uri().path());
        let answer = forbidden(&key.name, &key.scopes, need, &what).into_response();
        return refuse(request, answer).await;
    }
    request.extensions_mut().insert(caller);
    next.run(request).await
}

/// How much of a refused request's body is read before answering, and for how long.
const DRAIN_LIMIT: usize = 32 << 20;
const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(10);

/// Answers a refused request after reading (and dropping) its body. Answering while a client is still
/// sending an upload makes the server close the connection under it: the client then sees a broken
/// pipe instead of the 401/403 and its code. The read is bounded in size and time.
async fn refuse(request: Request, answer: Response) -> Response {
    let _ = tokio::time::timeout(
        DRAIN_TIME,
        axum::body::to_bytes(request.into_body(), DRAIN_LIMIT),
    )
    .await;
    answer
}

/// A 401 with the `WWW-Authenticate` challenge HTTP asks for (RFC 6750 for Bearer tokens).
fn challenge(error: ApiError, reason: Option<&str>) -> Response {
    let mut response = error.into_response();
    let value = match reason {
        Some(r) => format!("Bearer realm=\"lookalike\", error=\"{r}\""),
        None => "Bearer realm=\"lookalike\"".to_string(),
    };
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_str(&value).expect("a plain ASCII header value"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use lookalike_core::config::ApiKey;

    #[test]
    fn health_and_the_page_are_open_reads_need_read_changes_need_write() {
        let open = [
            ("GET", "/healthz"),
            ("GET", "/readyz"),
            ("HEAD", "/readyz"),
            ("GET", "/metrics"),
            ("GET", "/"),
            ("GET", "/app.js"),
            ("GET", "/style.css"),
        ];
        let read = [
            ("GET", "/v1/status"),
            ("GET", "/v1/jobs"),
            ("GET", "/v1/jobs/0193"),
            ("GET", "/v1/items"),
            ("GET", "/v1/items/0193"),
            ("GET", "/v1/items/0193/thumbnail"),
            ("GET", "/v1/items/0193/similar"),
            ("GET", "/v1/categories"),
            ("POST", "/v1/search"),
            // Unknown paths are not open: a 404 must not tell a stranger what exists.
            ("GET", "/v1/nothing"),
            ("GET", "/healthz/"),
        ];
        let write = [
            ("POST", "/v1/images"),
            ("DELETE", "/v1/items/0193"),
            ("POST", "/v1/jobs/0193/retry"),
            ("POST", "/v1/reclassify"),
            ("PUT", "/v1/items/0193"),
            ("POST", "/v1/search/"),
            ("POST", "/healthz"),
            ("POST", "/metrics"),
            ("POST", "/"),
        ];
        let scope =
            |(m, p): (&str, &str)| required_scope(&Method::from_bytes(m.as_bytes()).unwrap(), p);
        for r in open {
            assert_eq!(scope(r), None, "{r:?}");
        }
        for r in read {
            assert_eq!(scope(r), Some(Scope::Read), "{r:?}");
        }
        for r in write {
            assert_eq!(scope(r), Some(Scope::Write), "{r:?}");
        }
    }

    fn keys(entries: &[(&str, &str, &str)]) -> Keys {
        let keys = entries
            .iter()
            .map(|(name, key, scopes)| {
                ApiKey::parse(&format!("{name}:{}:{scopes}", key_sha256(key))).unwrap()
            })
            .collect();
        Keys::from_config(&Auth {
            enabled: true,
            keys,
        })
    }

    #[test]
    fn a_key_is_found_by_its_hash_only() {
        let k = keys(&[("reader", "lk_one", "read"), ("writer", "lk_two", "write")]);
        assert_eq!(&*k.find("lk_one").unwrap().name, "reader");
        assert_eq!(&*k.find("lk_two").unwrap().name, "writer");
        assert!(k.find("lk_on").is_none());
        assert!(k.find("lk_one ").is_none());
        assert!(
            k.find(&key_sha256("lk_one")).is_none(),
            "the hash is not the key"
        );
        // sha256 of "test", the well-known value.
        assert_eq!(
            key_sha256("test"),
            "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
        );
    }

    #[test]
    fn upper_case_hashes_in_the_configuration_work() {
        let line = format!("ops:{}:read", key_sha256("lk_x").to_uppercase());
        let k = Keys::from_config(&Auth {
            enabled: true,
            keys: ApiKey::parse_list(&line).unwrap(),
        });
        assert!(k.find("lk_x").is_some());
    }

    #[test]
    fn keys_are_taken_from_bearer_or_x_api_key() {
        let headers = |pairs: &[(&'static str, &str)]| {
            let mut h = HeaderMap::new();
            for (name, value) in pairs {
                h.insert(*name, HeaderValue::from_str(value).unwrap());
            }
            h
        };
        assert_eq!(
            presented_key(&headers(&[("authorization", "Bearer lk_a")])),
            Some("lk_a")
        );
        assert_eq!(
            presented_key(&headers(&[("authorization", "bearer   lk_a ")])),
            Some("lk_a")
        );
        assert_eq!(
            presented_key(&headers(&[("x-api-key", "lk_b")])),
            Some("lk_b")
        );
        // A proxy's Basic credentials are not our key; X-Api-Key still is.
        assert_eq!(
            presented_key(&headers(&[
                ("authorization", "Basic dTpw"),
                ("x-api-key", "lk_b")
            ])),
            Some("lk_b")
        );
        assert_eq!(
            presented_key(&headers(&[("authorization", "Basic dTpw")])),
            None
        );
        assert_eq!(
            presented_key(&headers(&[("authorization", "Bearer ")])),
            None
        );
        assert_eq!(presented_key(&headers(&[("x-api-key", "  ")])), None);
        assert_eq!(presented_key(&HeaderMap::new()), None);
    }

    #[test]
    fn handlers_check_scopes_they_discover_in_the_body() {
        let reader = Caller::Key {
            name: Arc::from("reader"),
            scopes: vec![Scope::Read],
        };
        let err = require(Some(&reader), Scope::Write, "`add=true`").unwrap_err();
        assert_eq!(err.status, 403);
        assert_eq!(err.code, "forbidden_scope");
        assert!(err.message.contains("`write`"), "{}", err.message);
        assert!(err.message.contains("`reader`"), "{}", err.message);
        require(Some(&reader), Scope::Read, "search").unwrap();
        require(Some(&Caller::Unchecked), Scope::Write, "x").unwrap();
        assert_eq!(require(None, Scope::Read, "x").unwrap_err().status, 401);
    }
}
