//! What the commands that call a running service share: `--api` and `--api-key`, the HTTP client,
//! JSON answers and errors, the batch job lookup, and what their exit codes mean.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use reqwest::StatusCode;
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue};
use serde_json::Value;

/// Exit codes of the client commands (documented in `--help` and the README).
pub const EXIT_OK: u8 = 0;
/// The command ran, but some jobs (or items) failed.
pub const EXIT_FAILED: u8 = 1;
/// Bad usage, or the service could not be reached or refused the request: nothing useful was done.
/// (clap uses 2 for usage errors as well.)
pub const EXIT_ERROR: u8 = 2;

/// Most job ids one `GET /v1/jobs?ids=` may carry (the API's limit).
pub const MAX_IDS_PER_LOOKUP: usize = 500;

#[derive(clap::Args, Debug, Clone)]
pub struct ApiArgs {
    /// Base URL of the running service.
    #[arg(
        long,
        env = "LOOKALIKE_API",
        default_value = "http://127.0.0.1:8080",
        value_name = "URL"
    )]
    pub api: String,
    /// API key to send (`Authorization: Bearer`); not needed when the service runs without keys.
    #[arg(
        long,
        env = "LOOKALIKE_API_KEY",
        hide_env_values = true,
        value_name = "KEY"
    )]
    pub api_key: Option<String>,
}

/// An HTTP client for the commands that call a running service, sending the key when there is one.
pub fn http_client(api_key: Option<&str>) -> Result<reqwest::ClientBuilder> {
    let mut headers = HeaderMap::new();
    if let Some(key) = api_key.map(str::trim).filter(|k| !k.is_empty()) {
        let mut value = HeaderValue::from_str(&format!("Bearer {key}"))
            .context("the API key holds characters an HTTP header cannot carry")?;
        value.set_sensitive(true);
        headers.insert(AUTHORIZATION, value);
    }
    Ok(reqwest::Client::builder().default_headers(headers))
}

/// A non-2xx answer: the HTTP status and the API's stable error code.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{status} {code}: {message}")]
pub struct Refused {
    pub status: StatusCode,
    pub code: String,
    pub message: String,
}

impl Refused {
    pub fn from_body(status: StatusCode, body: &Value) -> Self {
        Refused {
            status,
            code: body["error"]["code"]
                .as_str()
                .unwrap_or("http_error")
                .to_string(),
            message: body["error"]["message"]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| body.to_string()),
        }
    }

    /// The key is missing, unknown or lacks a scope: no retry or smaller request will help.
    pub fn is_auth(&self) -> bool {
        matches!(
            self.status,
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN
        )
    }
}

/// A running lookalike service.
pub struct Api {
    http: reqwest::Client,
    base: String,
    /// The scopes the command needs, named when the service refuses the key.
    scopes: &'static str,
}

impl Api {
    /// `scopes` names what the command needs, e.g. "read and write", for the message a refused key
    /// gets.
    pub fn new(args: &ApiArgs, timeout: Duration, scopes: &'static str) -> Result<Self> {
        let http = http_client(args.api_key.as_deref())?
            .timeout(timeout)
            .build()?;
        Ok(Api {
            http,
            base: args.api.trim_end_matches('/').to_string(),
            scopes,
        })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// `/readyz` answers 200: Postgres, RabbitMQ and the index are there.
    pub async fn check_ready(&self) -> Result<()> {
        let r = self
            .http
            .get(self.url("/readyz"))
            .send()
            .await
            .with_context(|| {
                format!(
                    "the lookalike API at {} is unreachable (is `lookalike serve` running? --api or LOOKALIKE_API)",
                    self.base
                )
            })?;
        if !r.status().is_success() {
            anyhow::bail!(
                "the lookalike API at {} is not ready ({}): {}",
                self.base,
                r.status(),
                r.text().await.unwrap_or_default()
            );
        }
        Ok(())
    }

    /// Sends the request: the status and JSON body of any answer (`Null` when there is none); an
    /// error only when no answer came (connection, timeout).
    pub async fn send(&self, request: reqwest::RequestBuilder) -> Result<(StatusCode, Value)> {
        let r = request
            .send()
            .await
            .with_context(|| format!("the lookalike API at {} is unreachable", self.base))?;
        let status = r.status();
        Ok((status, r.json().await.unwrap_or(Value::Null)))
    }

    /// The JSON body of a 2xx answer; anything else is an error carrying a [`Refused`] (with a hint
    /// about the key when that is why).
    pub async fn json(&self, request: reqwest::RequestBuilder) -> Result<Value> {
        let (status, body) = self.send(request).await?;
        if status.is_success() {
            return Ok(body);
        }
        let refused = Refused::from_body(status, &body);
        if refused.is_auth() {
            let hint = format!(
                "this command needs an API key with the {} scope{}: --api-key or LOOKALIKE_API_KEY",
                self.scopes,
                if self.scopes.contains(" and ") {
                    "s"
                } else {
                    ""
                }
            );
            return Err(anyhow::Error::new(refused).context(hint));
        }
        Err(refused.into())
    }

    pub async fn get(&self, path: &str) -> Result<Value> {
        self.json(self.http.get(self.url(path))).await
    }

    /// One `GET /v1/jobs?ids=` (at most [`MAX_IDS_PER_LOOKUP`] ids): the jobs found, in the order
    /// asked, and the ids that name no job.
    pub async fn lookup_jobs(&self, ids: &[String]) -> Result<(Vec<Value>, Vec<String>)> {
        let body = self
            .json(
                self.http
                    .get(self.url("/v1/jobs"))
                    .query(&[("ids", ids.join(","))]),
            )
            .await?;
        let strings = |v: &Value| -> Vec<String> {
            v.as_array()
                .into_iter()
                .flatten()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        };
        let jobs = body["jobs"].as_array().cloned().unwrap_or_default();
        Ok((jobs, strings(&body["missing"])))
    }

    /// The jobs among `pending` (oldest first) that have ended. Looks them up [`MAX_IDS_PER_LOOKUP`]
    /// at a time from the front, going on to the next chunk only while a whole chunk has ended: jobs
    /// run roughly in submission order, so one request a round usually covers everything that can
    /// have changed, however many jobs are pending.
    pub async fn ended_jobs(&self, pending: &[String]) -> Result<Vec<(String, JobEnd)>> {
        let mut ended = Vec::new();
        for chunk in pending.chunks(MAX_IDS_PER_LOOKUP) {
            let (jobs, missing) = self.lookup_jobs(chunk).await?;
            let before = ended.len();
            for job in &jobs {
                if let (Some(id), Some(end)) = (job["id"].as_str(), JobEnd::of(job)) {
                    ended.push((id.to_string(), end));
                }
            }
            for id in missing {
                let message = "the service has no such job (was its database reset?)".to_string();
                ended.push((id, JobEnd::failed("job_not_found", message)));
            }
            if ended.len() - before < chunk.len() {
                break;
            }
        }
        Ok(ended)
    }
}

/// How a job ended.
#[derive(Debug, Clone, PartialEq)]
pub enum JobEnd {
    Succeeded { item_id: String },
    Failed { code: String, message: String },
}

impl JobEnd {
    /// The end of a job as the API shows it; `None` while it is queued or processing.
    pub fn of(job: &Value) -> Option<JobEnd> {
        match job["status"].as_str()? {
            "succeeded" => Some(JobEnd::Succeeded {
                item_id: job["item_id"].as_str().unwrap_or_default().to_string(),
            }),
            "failed" => Some(JobEnd::failed(
                job["error"]["code"].as_str().unwrap_or("unknown"),
                job["error"]["message"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            )),
            _ => None,
        }
    }

    pub fn failed(code: &str, message: String) -> JobEnd {
        JobEnd::Failed {
            code: code.to_string(),
            message,
        }
    }
}

/// The job ids a `POST /v1/images` answered, in request order.
pub fn job_ids(submitted: &Value) -> Vec<String> {
    submitted["jobs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|j| j["job_id"].as_str().map(str::to_string))
        .collect()
}

/// Ends a client command: its own exit code, or for an error the message and [`EXIT_ERROR`].
pub fn exit(result: Result<u8>) -> ExitCode {
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}

/// Prints a JSON value on stdout, pretty.
pub fn print_json(value: &Value) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_keeps_the_api_error_code() {
        let body = serde_json::json!({"error": {"code": "too_many_ids", "message": "501 job ids"}});
        let r = Refused::from_body(StatusCode::BAD_REQUEST, &body);
        assert_eq!(r.code, "too_many_ids");
        assert_eq!(r.message, "501 job ids");
        assert!(!r.is_auth());
        let r = Refused::from_body(StatusCode::BAD_GATEWAY, &Value::Null);
        assert_eq!(r.code, "http_error");
        assert!(Refused::from_body(StatusCode::FORBIDDEN, &Value::Null).is_auth());
    }

    #[test]
    fn the_key_goes_in_a_sensitive_bearer_header_and_a_blank_key_is_none() {
        assert!(http_client(Some("lk_abc")).is_ok());
        assert!(http_client(Some("bad\nkey")).is_err());
        assert!(http_client(Some("  ")).is_ok());
    }
}
