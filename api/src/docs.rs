//! The parts of the OpenAPI document that the handlers' `#[utoipa::path]` attributes share: error
//! responses built from the code constants of `lookalike_core::codes` (so a code in the document is
//! a code the server can send), the path and filter parameters, and the document's header.
//! `routes::openapi` assembles the document from these and serves it.

use utoipa::IntoParams;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::path::{Parameter, ParameterBuilder, ParameterIn, ParameterStyle};
use utoipa::openapi::response::{Response, ResponseBuilder};
use utoipa::openapi::schema::{AllOfBuilder, ObjectBuilder, Ref, Schema, Type};
use utoipa::openapi::{ContentBuilder, Required};

/// An error response: the `Error` shape, its `code` narrowed to `codes`. A 503 carries
/// `Retry-After`, a 401 `WWW-Authenticate`.
pub fn error_response(status: u16, description: &str, codes: &[&str]) -> Response {
    let narrowed = ObjectBuilder::new().property(
        "error",
        ObjectBuilder::new().property(
            "code",
            ObjectBuilder::new()
                .schema_type(Type::String)
                .enum_values(Some(codes.iter().copied())),
        ),
    );
    let schema = AllOfBuilder::new()
        .item(Ref::from_schema_name("Error"))
        .item(narrowed)
        .build();
    let mut response = ResponseBuilder::new().description(description).content(
        "application/json",
        ContentBuilder::new()
            .schema(Some(Schema::AllOf(schema)))
            .build(),
    );
    if status == 503 {
        response = response.header(
            "Retry-After",
            HeaderBuilder::new()
                .schema(
                    ObjectBuilder::new()
                        .schema_type(Type::Integer)
                        .enum_values(Some([5])),
                )
                .description(Some("Seconds to wait before retrying."))
                .build(),
        );
    }
    if status == 401 {
        response = response.header("WWW-Authenticate", HeaderBuilder::new().build());
    }
    response.build()
}

/// Declares a set of error responses for `#[utoipa::path(responses(...))]`, each status with its
/// description and the code constants it can carry:
///
/// ```ignore
/// errors!(SimilarErrors {
///     409 => "The item was embedded by another model ...", [api::ITEM_MODEL_MISMATCH],
/// });
/// ```
macro_rules! errors {
    ($(#[$meta:meta])* $name:ident { $($status:literal => $description:expr, [$($code:expr),* $(,)?]),+ $(,)? }) => {
        $(#[$meta])*
        pub struct $name;

        impl utoipa::IntoResponses for $name {
            fn responses() -> std::collections::BTreeMap<
                String,
                utoipa::openapi::RefOr<utoipa::openapi::response::Response>,
            > {
                let mut map = std::collections::BTreeMap::new();
                $(
                    map.insert(
                        $status.to_string(),
                        $crate::docs::error_response($status, $description, &[$($code),*]).into(),
                    );
                )+
                map
            }
        }
    };
}
pub(crate) use errors;

use lookalike_core::codes::{api, auth, fields, job};

errors!(
    /// No key, or one this service does not know.
    Unauthorized {
        401 => "No API key (`unauthorized`, with `WWW-Authenticate: Bearer`), or a key this service does not know (`invalid_api_key`).",
            [auth::UNAUTHORIZED, auth::INVALID_API_KEY],
    }
);
errors!(
    /// The key lacks the scope.
    Forbidden {
        403 => "The key lacks the scope the request needs; the message names it.", [auth::FORBIDDEN_SCOPE],
    }
);
errors!(
    /// A dependency is down.
    Unavailable {
        503 => "A dependency is down; retry later.", [job::DATABASE_UNAVAILABLE, job::INDEX_UNAVAILABLE],
    }
);
errors!(InvalidId { 400 => "The path id is not a UUID.", [api::INVALID_ID] });
errors!(ItemNotFound { 404 => "No such item.", [api::ITEM_NOT_FOUND] });
errors!(JobNotFound { 404 => "No such job.", [api::JOB_NOT_FOUND] });
errors!(
    /// Filters on declared fields (`GET /v1/items`).
    BadFilter {
        422 => "A filter that is not a declared field or does not fit it.",
            [fields::UNKNOWN_FILTER_FIELD, fields::INVALID_FILTER],
    }
);

/// `params(ItemPath)`: the `{id}` of an item path.
pub struct ItemPath;

impl IntoParams for ItemPath {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        vec![id_parameter("An item id.")]
    }
}

/// `params(JobPath)`: the `{id}` of a job path.
pub struct JobPath;

impl IntoParams for JobPath {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        vec![id_parameter("A job id.")]
    }
}

/// `params(Filters)`: conditions on declared metadata fields, as query parameters (every similarity
/// query and the item list take them; `routes::fields::filters` reads them).
pub struct Filters;

impl IntoParams for Filters {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        vec![filters()]
    }
}

fn id_parameter(description: &str) -> Parameter {
    ParameterBuilder::new()
        .name("id")
        .parameter_in(ParameterIn::Path)
        .required(Required::True)
        .description(Some(description))
        .schema(Some(ObjectBuilder::new().schema_type(Type::String).format(
            Some(utoipa::openapi::SchemaFormat::KnownFormat(
                utoipa::openapi::KnownFormat::Uuid,
            )),
        )))
        .build()
}

fn filters() -> Parameter {
    ParameterBuilder::new()
        .name("filters")
        .parameter_in(ParameterIn::Query)
        .style(Some(ParameterStyle::Form))
        .explode(Some(true))
        .description(Some(
            "Conditions on the declared metadata fields (`[fields]` in the configuration; \
             `GET /v1/fields` lists them), as query parameters: `brand=acme` (repeat for any of \
             several values), `in_stock=true`, `price=100`, and on number fields `price_lt`, \
             `price_lte`, `price_gt`, `price_gte`. All must hold; an item whose value is missing or \
             of another kind never matches. Any other parameter is refused (422 \
             unknown_filter_field), so a misspelt filter never returns unfiltered results.",
        ))
        .schema(Some(
            ObjectBuilder::new()
                .schema_type(Type::Object)
                .additional_properties(Some(ObjectBuilder::new().schema_type(Type::String))),
        ))
        .example(Some(serde_json::json!({
            "brand": "acme", "price_lt": "100000", "in_stock": "true"
        })))
        .build()
}
