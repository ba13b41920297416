//! A local HTTP server for test images: real files from a folder, plus misbehaving endpoints.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

#[derive(Clone)]
pub struct ImageServer {
    pub addr: SocketAddr,
    /// Bytes the `/endless` endpoint managed to hand to the socket before the client hung up.
    pub endless_sent: Arc<AtomicU64>,
    /// Requests received, by any path.
    pub requests: Arc<AtomicU64>,
}

#[derive(Clone)]
struct Ctx {
    root: PathBuf,
    /// Requests seen per flaky key.
    flaky: Arc<std::sync::Mutex<std::collections::HashMap<String, u32>>>,
    endless_sent: Arc<AtomicU64>,
    requests: Arc<AtomicU64>,
}

impl ImageServer {
    /// Serves `root/<name>` at `/files/<name>` (any query string is ignored, so one file can stand in
    /// for many distinct URLs).
    pub async fn start(root: PathBuf) -> Self {
        let ctx = Ctx {
            root,
            flaky: Arc::default(),
            endless_sent: Arc::default(),
            requests: Arc::default(),
        };
        let app = Router::new()
            .route("/files/{name}", get(file))
            .route("/missing.jpg", get(|| async { StatusCode::NOT_FOUND }))
            .route("/endless.jpg", get(endless))
            .route("/declared-huge.jpg", get(declared_huge))
            .route("/redirect", get(redirect))
            .route("/flaky/{failures}/{key}/{name}", get(flaky))
            .with_state(ctx.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        ImageServer {
            addr,
            endless_sent: ctx.endless_sent,
            requests: ctx.requests,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }
}

async fn file(State(ctx): State<Ctx>, Path(name): Path<String>) -> Response {
    ctx.requests.fetch_add(1, Ordering::Relaxed);
    match tokio::fs::read(ctx.root.join(&name)).await {
        Ok(bytes) => ([(header::CONTENT_TYPE, "image/jpeg")], bytes).into_response(),
        Err(_) => StatusCode::NOT_FOUND.into_response(),
    }
}

/// `/flaky/{failures}/{key}/{name}`: answers 503 to the first `failures` requests for `key`, then
/// serves the file: a source that is down for a while.
async fn flaky(
    State(ctx): State<Ctx>,
    Path((failures, key, name)): Path<(u32, String, String)>,
) -> Response {
    let seen = {
        let mut map = ctx.flaky.lock().unwrap();
        let n = map.entry(key).or_default();
        *n += 1;
        *n
    };
    if seen <= failures {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    file(State(ctx), Path(name)).await
}

/// `/redirect?to=URL` answers 302 to URL.
async fn redirect(Query(q): Query<std::collections::HashMap<String, String>>) -> Response {
    Response::builder()
        .status(StatusCode::FOUND)
        .header(header::LOCATION, &q["to"])
        .body(Body::empty())
        .unwrap()
}

/// A body that never ends (no Content-Length): the fetcher must stop at its byte cap.
async fn endless(State(ctx): State<Ctx>) -> Response {
    ctx.requests.fetch_add(1, Ordering::Relaxed);
    (
        [(header::CONTENT_TYPE, "image/jpeg")],
        endless_body(ctx.endless_sent.clone()),
    )
        .into_response()
}

/// Declares a 10 GB body up front: refused from the headers alone.
async fn declared_huge(State(ctx): State<Ctx>) -> Response {
    ctx.requests.fetch_add(1, Ordering::Relaxed);
    Response::builder()
        .header(header::CONTENT_TYPE, "image/jpeg")
        .header(header::CONTENT_LENGTH, "10000000000")
        .body(endless_body(Arc::default()))
        .unwrap()
}

fn endless_body(sent: Arc<AtomicU64>) -> Body {
    let chunk = bytes::Bytes::from(vec![0xFFu8; 64 * 1024]);
    Body::from_stream(futures::stream::unfold((), move |()| {
        let chunk = chunk.clone();
        let sent = sent.clone();
        async move {
            sent.fetch_add(chunk.len() as u64, Ordering::Relaxed);
            Some((Ok::<_, std::io::Error>(chunk), ()))
        }
    }))
}

/// Image files under `dir` (recursively, in name order), for benchmarks that feed real photos.
pub fn collect_images(dir: &std::path::Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<_> = entries.flatten().map(|e| e.path()).collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            collect_images(&path, out);
        } else if matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("jpg" | "jpeg" | "png" | "webp")
        ) {
            out.push(path);
        }
    }
}
