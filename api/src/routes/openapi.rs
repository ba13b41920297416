//! `GET /openapi.json`: the API's OpenAPI 3.1 description, so clients and tools can be generated from
//! the service they talk to. Derived at start-up from the handlers' `#[utoipa::path]` attributes and
//! the body types of `lookalike_api_types`; the error responses list the code constants of
//! `lookalike_core::codes` (`crate::docs`). `tests/openapi.rs` checks the router against it and
//! validates real answers against its schemas.

use std::sync::OnceLock;

use axum::Router;
use axum::body::Bytes;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use lookalike_api_types as types;
use lookalike_core::codes;
use utoipa::openapi::OpenApi as Document;
use utoipa::openapi::schema::{Object, Schema, Type};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::AppState;
use crate::routes::{
    catalogue, duplicates, fields, health, images, items, jobs, metrics, products, search, status,
    web,
};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "lookalike",
        description = "Similar-product search by image, within a category.\n\nSubmit product images (by \
            URL or upload), follow their jobs, read the stored items and search for similar ones. Every \
            error is `{\"error\": {\"code\", \"message\"}}` with a fitting status; the codes are stable \
            and listed per response. Unknown paths answer 404 `route_not_found`; a known path with a \
            method it does not serve answers 405 `method_not_allowed`. A 503 carries `Retry-After: 5`. \
            Query parameters that do not parse as their type (e.g. `k=abc`, `offset=-1`) answer 400 \
            `invalid_query`. Limits named `http.*` are settings (config/default.toml); the defaults are \
            given. Derived from the code (`api/src/routes`, `crates/api-types`).",
        license(name = "MIT", identifier = "MIT"),
    ),
    servers((url = "/")),
    security(("bearer" = []), ("apiKey" = [])),
    tags(
        (name = "ingest", description = "Submitting images and following their jobs."),
        (name = "catalogue", description = "Stored items, the products they name, and categories."),
        (name = "search", description = "Similarity queries."),
        (name = "operations", description = "Health, readiness, metrics, status. Open without a key, except /v1/status."),
        (name = "page", description = "The web page and its files, open without a key (the page holds no data)."),
    ),
    paths(
        images::submit,
        jobs::list, jobs::show, jobs::retry,
        catalogue::list, items::show, catalogue::delete, fields::patch_item, items::thumbnail,
        products::list, products::show, products::delete, duplicates::list, duplicates::split,
        search::similar, search::search, search::recommend, products::similar,
        catalogue::categories, catalogue::reclassify, catalogue::train, fields::report,
        status::status, health::healthz, health::readyz, metrics::metrics, openapi,
        web::page, web::script, web::style,
    ),
    components(schemas(types::ErrorBody, types::JobError)),
    modifiers(&Security, &OpenWithoutKey, &JobErrorCodes),
)]
struct ApiDoc;

/// The two ways to send a key.
struct Security;

impl Modify for Security {
    fn modify(&self, doc: &mut Document) {
        let components = doc.components.get_or_insert_with(Default::default);
        let mut bearer = HttpBuilder::new().scheme(HttpAuthScheme::Bearer).description(Some(
            "`Authorization: Bearer <key>`, a key made by `lookalike keys new`. Scopes, independent of \
             each other: `read` (every GET under /v1/ and POST /v1/search), `write` (every change; POST \
             /v1/search with `add=true` needs both). A missing key is 401 `unauthorized` with \
             `WWW-Authenticate: Bearer`, an unknown one 401 `invalid_api_key`, a missing scope 403 \
             `forbidden_scope`. With `auth.enabled = false` every request is accepted.",
        ));
        bearer = bearer.bearer_format("opaque");
        components.add_security_scheme("bearer", SecurityScheme::Http(bearer.build()));
        components.add_security_scheme(
            "apiKey",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "X-Api-Key",
                "The same key in `X-Api-Key`, read when there is no Bearer token. Keys are never read \
                 from the URL.",
            ))),
        );
    }
}

/// `security(())` on an operation (open without a key) is written `security: []`, the usual way to
/// lift the document's default, rather than utoipa's `[{}]` (an empty requirement, which means the
/// same but reads as "some key").
struct OpenWithoutKey;

impl Modify for OpenWithoutKey {
    fn modify(&self, doc: &mut Document) {
        for item in doc.paths.paths.values_mut() {
            for op in [
                &mut item.get,
                &mut item.post,
                &mut item.put,
                &mut item.patch,
                &mut item.delete,
            ]
            .into_iter()
            .flatten()
            {
                if let Some(security) = &mut op.security
                    && security
                        .iter()
                        .all(|r| serde_json::to_value(r).is_ok_and(|v| v == serde_json::json!({})))
                {
                    security.clear();
                }
            }
        }
    }
}

/// A job's `error.code` is one of the job failure codes (and the decoder's `image_*`).
struct JobErrorCodes;

impl Modify for JobErrorCodes {
    fn modify(&self, doc: &mut Document) {
        let Some(components) = doc.components.as_mut() else {
            return;
        };
        let Some(utoipa::openapi::RefOr::T(Schema::Object(job_error))) =
            components.schemas.get_mut("JobError")
        else {
            return;
        };
        if let Some(utoipa::openapi::RefOr::T(Schema::Object(code))) =
            job_error.properties.get_mut("code")
        {
            let mut narrowed = Object::with_type(Type::String);
            narrowed.description = code.description.take();
            narrowed.enum_values = Some(
                JOB_CODES
                    .iter()
                    .map(|c| serde_json::Value::from(*c))
                    .collect(),
            );
            *code = narrowed;
        }
    }
}

/// Every code a job can end (or wait) with.
const JOB_CODES: &[&str] = &[
    codes::job::URL_INVALID,
    codes::job::URL_FORBIDDEN,
    codes::job::FETCH_HTTP_STATUS,
    codes::job::FETCH_TOO_LARGE,
    codes::job::FETCH_TIMEOUT,
    codes::job::FETCH_CONNECT,
    codes::job::FETCH_TOO_MANY_REDIRECTS,
    codes::image::EMPTY,
    codes::image::UNSUPPORTED_FORMAT,
    codes::image::TRUNCATED,
    codes::image::CORRUPT,
    codes::image::TOO_LARGE,
    codes::job::UPLOAD_MISSING,
    codes::job::EXTERNAL_ID_TAKEN,
    codes::job::INFERENCE_FAILED,
    codes::job::DATABASE_UNAVAILABLE,
    codes::job::INDEX_UNAVAILABLE,
    codes::job::INDEX_REJECTED,
    codes::job::INDEX_MISCONFIGURED,
    codes::job::TIMEOUT,
    codes::job::ATTEMPTS_EXHAUSTED,
    codes::job::QUEUE_UNAVAILABLE,
];

/// The document, as served.
pub fn document() -> Document {
    ApiDoc::openapi()
}

pub fn router() -> Router<AppState> {
    Router::new().route("/openapi.json", get(openapi))
}

/// This description
#[utoipa::path(
    get, path = "/openapi.json", tag = "operations", operation_id = "openapi", security(()),
    responses((status = 200, description = "OpenAPI 3.1.", body = serde_json::Value)),
)]
async fn openapi() -> impl IntoResponse {
    // Serialised once: the document depends on the code only.
    static SPEC: OnceLock<Bytes> = OnceLock::new();
    let spec = SPEC.get_or_init(|| {
        Bytes::from(
            document()
                .to_pretty_json()
                .expect("the OpenAPI document serialises"),
        )
    });
    ([(header::CONTENT_TYPE, "application/json")], spec.clone())
}
