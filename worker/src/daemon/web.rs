//! The web page (`GET /` from a browser, or `/ui/`): chat and status, three
//! files compiled into the binary (no build step, no CDN; it works offline).
//! The files hold no data, so they are served without the token; everything
//! they show comes from the API, which asks for it (docs/worker.md, "Web page").

use axum::http::{header, HeaderMap};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use super::http::Shared;

const INDEX: &str = include_str!("web/index.html");
const APP_JS: &str = include_str!("web/app.js");
const STYLE: &str = include_str!("web/style.css");

/// The page's routes (none with `--no-web`; `/` is then health only).
pub fn routes(enabled: bool) -> Router<Shared> {
    if !enabled {
        return Router::new();
    }
    Router::new()
        .route("/ui", get(page))
        .route("/ui/", get(page))
        .route(
            "/ui/app.js",
            get(|| asset("text/javascript; charset=utf-8", APP_JS)),
        )
        .route(
            "/ui/style.css",
            get(|| asset("text/css; charset=utf-8", STYLE)),
        )
}

/// Whether a request for `/` comes from a browser (it asks for HTML).
pub fn wants_page(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/html"))
}

pub async fn page() -> Response {
    ([(header::CACHE_CONTROL, "no-cache")], Html(INDEX)).into_response()
}

async fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}
