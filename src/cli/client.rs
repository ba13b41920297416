//! What the commands that call a running service share: `--api` and `--api-key`, the HTTP client,
//! JSON answers and errors, the batch job lookup, and what their exit codes mean.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use lookalike_api_types::{Job, JobList, JobStatus, Submission};
use reqwest::StatusCode;
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue};
use serde::Serialize;
use serde::de::DeserializeOwned;
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

    /// The JSON body of a 2xx answer, read as `T` (its type in `lookalike_api_types`, or `Value`);
    /// anything else is an error carrying a [`Refused`] (with a hint about the key when that is
    /// why).
    pub async fn json<T: DeserializeOwned>(&self, request: reqwest::RequestBuilder) -> Result<T> {
        let (status, body) = self.send(request).await?;
        if status.is_success() {
            return serde_json::from_value(body).with_context(|| {
                format!(
                    "the lookalike API at {} answered in an unexpected shape (another version?)",
                    self.base
                )
            });
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

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        self.json(self.http.get(self.url(path))).await
    }

    /// One `GET /v1/jobs?ids=` (at most [`MAX_IDS_PER_LOOKUP`] ids): the jobs found, in the order
    /// asked, and the ids that name no job.
    pub async fn lookup_jobs(&self, ids: &[String]) -> Result<(Vec<Job>, Vec<String>)> {
        let list: JobList = self
            .json(
                self.http
                    .get(self.url("/v1/jobs"))
                    .query(&[("ids", ids.join(","))]),
            )
            .await?;
        let missing = list.missing.into_iter().flatten();
        Ok((list.jobs, missing.map(|id| id.to_string()).collect()))
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
                if let Some(end) = JobEnd::of(job) {
                    ended.push((job.id.to_string(), end));
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
    pub fn of(job: &Job) -> Option<JobEnd> {
        match job.status {
            JobStatus::Succeeded => Some(JobEnd::Succeeded {
                item_id: job.item_id.map(|id| id.to_string()).unwrap_or_default(),
            }),
            JobStatus::Failed => {
                let error = job.error.as_ref();
                Some(JobEnd::failed(
                    error.map_or("unknown", |e| e.code.as_str()),
                    error.and_then(|e| e.message.clone()).unwrap_or_default(),
                ))
            }
            JobStatus::Queued | JobStatus::Processing => None,
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
pub fn job_ids(submitted: &Submission) -> Vec<String> {
    submitted
        .jobs
        .iter()
        .map(|j| j.job_id.to_string())
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

/// An answer holding `f32`s as a `Value`, as reading the service's JSON text of it gives: through
/// that text, not `serde_json::to_value`, so an `f32` keeps the short decimal the service writes
/// (`to_value` would widen it to an `f64`'s digits, 0.699999988079071 for 0.7). Its keys come in
/// the order a `Value` keeps them, as when the answer was read as one.
pub fn to_value<T: Serialize + ?Sized>(value: &T) -> Result<Value> {
    Ok(serde_json::from_str(&serde_json::to_string(value)?)?)
}

/// An `f32` of an answer as the `f64` its JSON text denotes (the service writes the shortest
/// decimal), e.g. 0.7 rather than 0.699999988079071.
pub fn decimal(x: f32) -> f64 {
    serde_json::to_string(&x)
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(f64::from(x))
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

    fn job(status: &str, item_id: Value, error: Value) -> Job {
        serde_json::from_value(serde_json::json!({
            "id": "0193a7c2-0000-7000-8000-000000000001", "status": status, "attempts": 1,
            "source": {"kind": "url", "url": "https://shop.example/a.jpg", "file_name": null},
            "external_id": null, "category": null, "metadata": {},
            "item_id": item_id, "item_url": null, "error": error,
            "created_at": "2026-11-28T09:12:01Z", "updated_at": "2026-11-28T09:12:02Z",
            "started_at": null, "finished_at": null,
        }))
        .unwrap()
    }

    #[test]
    fn a_job_ends_when_it_succeeds_or_fails() {
        let item = "0193a7c2-0000-7000-8000-0000000000aa";
        assert_eq!(
            JobEnd::of(&job("succeeded", item.into(), Value::Null)),
            Some(JobEnd::Succeeded {
                item_id: item.into()
            })
        );
        let error = serde_json::json!({"code": "image_corrupt", "message": "bad bytes"});
        assert_eq!(
            JobEnd::of(&job("failed", Value::Null, error)),
            Some(JobEnd::failed("image_corrupt", "bad bytes".into()))
        );
        assert_eq!(
            JobEnd::of(&job("failed", Value::Null, Value::Null)),
            Some(JobEnd::failed("unknown", String::new()))
        );
        let retrying = serde_json::json!({"code": "fetch_timeout", "message": null});
        assert_eq!(JobEnd::of(&job("queued", Value::Null, retrying)), None);
        assert_eq!(
            JobEnd::of(&job("processing", Value::Null, Value::Null)),
            None
        );
    }

    #[test]
    fn the_job_ids_of_a_submission_come_in_request_order() {
        let submission: Submission = serde_json::from_value(serde_json::json!({"jobs": [
            {"job_id": "0193a7c2-0000-7000-8000-000000000002", "status": "queued",
             "external_id": "b", "status_url": "/v1/jobs/0193a7c2-0000-7000-8000-000000000002"},
            {"job_id": "0193a7c2-0000-7000-8000-000000000001", "status": "queued",
             "external_id": null, "status_url": "/v1/jobs/0193a7c2-0000-7000-8000-000000000001"},
        ]}))
        .unwrap();
        assert_eq!(
            job_ids(&submission),
            [
                "0193a7c2-0000-7000-8000-000000000002",
                "0193a7c2-0000-7000-8000-000000000001"
            ]
        );
    }

    #[test]
    fn an_f32_reads_as_the_decimal_the_service_wrote() {
        assert_eq!(decimal(0.7), 0.7);
        assert_eq!(decimal(0.123_456_79), 0.123_456_79);
        assert_eq!(to_value(&[0.7f32]).unwrap(), serde_json::json!([0.7]));
    }

    #[test]
    fn the_key_goes_in_a_sensitive_bearer_header_and_a_blank_key_is_none() {
        assert!(http_client(Some("lk_abc")).is_ok());
        assert!(http_client(Some("bad\nkey")).is_err());
        assert!(http_client(Some("  ")).is_ok());
    }
}
