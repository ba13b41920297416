//! Downloading images from URLs that strangers give us: bounded in time and in bytes.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use lookalike_core::codes::job as code;
use lookalike_core::config;

use crate::failure::Failure;
use crate::guard::{Guard, find_forbidden};

#[derive(Clone)]
pub struct Fetcher {
    client: reqwest::Client,
    guard: Arc<Guard>,
    max_body_bytes: u64,
}

impl Fetcher {
    pub fn new(cfg: &config::Fetch) -> anyhow::Result<Self> {
        let guard = Arc::new(Guard::from_config(cfg)?);
        let max_redirects = cfg.max_redirects;
        let redirect_guard = guard.clone();
        // Every hop is checked again; host names are re-resolved (and checked) by the guarded resolver.
        let redirects = reqwest::redirect::Policy::custom(move |attempt| {
            if attempt.previous().len() > max_redirects {
                attempt.error(TooManyRedirects(max_redirects))
            } else if let Err(forbidden) = redirect_guard.check_url(attempt.url()) {
                attempt.error(forbidden)
            } else {
                attempt.follow()
            }
        });
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_millis(cfg.connect_timeout_ms))
            .timeout(Duration::from_millis(cfg.total_timeout_ms))
            .redirect(redirects)
            .dns_resolver(guard.resolver())
            .user_agent(cfg.user_agent.clone())
            // Proxy variables in the environment must not redirect our fetches somewhere else.
            .no_proxy()
            .build()?;
        Ok(Fetcher {
            client,
            guard,
            max_body_bytes: cfg.max_body_bytes,
        })
    }

    /// Downloads the body, stopping as soon as it passes the size cap.
    pub async fn fetch(&self, url: &str) -> Result<Vec<u8>, Failure> {
        let parsed = reqwest::Url::parse(url)
            .map_err(|e| Failure::permanent(code::URL_INVALID, format!("not a valid URL: {e}")))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(Failure::permanent(
                code::URL_INVALID,
                format!(
                    "scheme `{}` is not allowed (http and https only)",
                    parsed.scheme()
                ),
            ));
        }
        self.guard
            .check_url(&parsed)
            .map_err(|f| Failure::permanent(code::URL_FORBIDDEN, f.0))?;
        let response = self
            .client
            .get(parsed)
            .send()
            .await
            .map_err(request_error)?;
        let status = response.status();
        if !status.is_success() {
            let message = format!("the image URL answered HTTP {}", status.as_u16());
            // 5xx, 408 and 429 may pass; other 4xx (404, 403, 410) will not.
            return Err(
                if status.is_server_error() || status.as_u16() == 408 || status.as_u16() == 429 {
                    Failure::transient(code::FETCH_HTTP_STATUS, message)
                } else {
                    Failure::permanent(code::FETCH_HTTP_STATUS, message)
                },
            );
        }
        if let Some(len) = response.content_length()
            && len > self.max_body_bytes
        {
            return Err(too_large(self.max_body_bytes, Some(len)));
        }
        let mut body = Vec::with_capacity(
            response
                .content_length()
                .unwrap_or(64 * 1024)
                .min(self.max_body_bytes) as usize,
        );
        let mut stream = response.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(request_error)?;
            if body.len() as u64 + chunk.len() as u64 > self.max_body_bytes {
                return Err(too_large(self.max_body_bytes, None));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }
}

fn too_large(cap: u64, declared: Option<u64>) -> Failure {
    let message = match declared {
        Some(len) => format!("the image is {len} bytes, over the {cap}-byte limit"),
        None => format!("the image is over the {cap}-byte limit; download stopped there"),
    };
    Failure::permanent(code::FETCH_TOO_LARGE, message)
}

#[derive(Debug, thiserror::Error)]
#[error("more than {0} redirects")]
struct TooManyRedirects(usize);

fn request_error(e: reqwest::Error) -> Failure {
    if let Some(forbidden) = find_forbidden(&e) {
        Failure::permanent(code::URL_FORBIDDEN, forbidden.0)
    } else if e.is_timeout() {
        Failure::transient(code::FETCH_TIMEOUT, format!("download timed out: {e}"))
    } else if e.is_redirect() {
        Failure::permanent(
            code::FETCH_TOO_MANY_REDIRECTS,
            format!("too many redirects: {e}"),
        )
    } else if e.is_connect() {
        Failure::transient(code::FETCH_CONNECT, format!("could not connect: {e}"))
    } else {
        Failure::transient(code::FETCH_CONNECT, format!("download failed: {e}"))
    }
}
