//! The web page: plain HTML, CSS and JS compiled into the binary, so there is nothing to deploy beside it.

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

use crate::AppState;

const INDEX: &str = include_str!("../../../web/index.html");
const APP_JS: &str = include_str!("../../../web/app.js");
const STYLE: &str = include_str!("../../../web/style.css");

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(page))
        .route("/app.js", get(script))
        .route("/style.css", get(style))
}

/// The web page: search by image, browse the catalogue, follow jobs
#[utoipa::path(
    get, path = "/", tag = "page", operation_id = "page", security(()),
    responses((status = 200, description = "HTML.", content_type = "text/html", body = String)),
)]
pub(crate) async fn page() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], INDEX)
}

/// The page's script
#[utoipa::path(
    get, path = "/app.js", tag = "page", operation_id = "pageScript", security(()),
    responses((status = 200, description = "JavaScript (`Cache-Control: no-cache`).",
               content_type = "text/javascript", body = String)),
)]
pub(crate) async fn script() -> impl IntoResponse {
    asset("text/javascript; charset=utf-8", APP_JS)
}

/// The page's style sheet
#[utoipa::path(
    get, path = "/style.css", tag = "page", operation_id = "pageStyle", security(()),
    responses((status = 200, description = "CSS (`Cache-Control: no-cache`).",
               content_type = "text/css", body = String)),
)]
pub(crate) async fn style() -> impl IntoResponse {
    asset("text/css; charset=utf-8", STYLE)
}

fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
}
