//! Submitting one batch of entries: one `POST /v1/images` (JSON for URLs, multipart for files) with a
//! deterministic `Idempotency-Key`, retried through outages, split when the service refuses an entry.
//!
//! The key is a hash of the source and of the batch's content (URLs or file bytes, external ids,
//! categories, metadata). Running the same import again sends the same keys, and the service answers
//! each batch it already has with the first request's jobs (`"replayed": true`) instead of making new
//! ones: that is how an interrupted import resumes. The source is part of the key so that importing a
//! failures file submits its entries again instead of replaying their failed jobs.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use lookalike_api_types::{JobStatus, Submission, UrlBatch};
use lookalike_core::backoff::Backoff;
use reqwest::StatusCode;
use reqwest::multipart::{Form, Part};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::source::{Entry, Origin};
use crate::cli::client::{Api, Refused};

/// What the service did with one entry.
#[derive(Debug, Clone, PartialEq)]
pub enum Submitted {
    Job {
        id: String,
        replayed: bool,
    },
    /// Refused at submission (the API's error code), or not sent (a local file that cannot be read:
    /// `file_unreadable`).
    Refused {
        code: String,
        message: String,
    },
}

/// Entry indices that go in one request, all URLs or all files.
pub type Batch = Vec<usize>;

/// Limits of one request.
#[derive(Debug, Clone, Copy)]
pub struct BatchLimits {
    pub files: usize,
    pub urls: usize,
    /// Upload bytes per request, under the service's default `http.max_body_bytes` (25 MiB).
    pub bytes: u64,
}

/// Splits the entries, in order, into URL batches and file batches. The same entries and limits
/// always give the same batches, hence the same idempotency keys.
pub fn plan(entries: &[Entry], limits: BatchLimits) -> Vec<Batch> {
    let mut batches = Vec::new();
    let (mut urls, mut files, mut bytes) = (Vec::new(), Vec::new(), 0u64);
    for (i, e) in entries.iter().enumerate() {
        match &e.origin {
            Origin::Url(_) => {
                urls.push(i);
                if urls.len() >= limits.urls.max(1) {
                    batches.push(std::mem::take(&mut urls));
                }
            }
            Origin::File(path) => {
                let size = std::fs::metadata(path).map_or(0, |m| m.len());
                if !files.is_empty() && bytes + size > limits.bytes {
                    batches.push(std::mem::take(&mut files));
                    bytes = 0;
                }
                files.push(i);
                bytes += size;
                if files.len() >= limits.files.max(1) {
                    batches.push(std::mem::take(&mut files));
                    bytes = 0;
                }
            }
        }
    }
    batches.extend([urls, files].into_iter().filter(|b| !b.is_empty()));
    batches
}

/// Requests that fail without an answer (or with a 5xx) are tried this often before the import
/// stops; with the backoff that is about a minute and a half of outage.
const MAX_TRIES: u32 = 10;
const BACKOFF_MAX: Duration = Duration::from_secs(15);

/// Refusals about the request as a whole: no smaller request would fare better.
const FATAL_CODES: &[&str] = &[
    "route_not_found",
    "invalid_idempotency_key",
    "unsupported_media_type",
    "invalid_multipart",
    "invalid_json",
];

pub struct Submitter<'a> {
    pub api: &'a Api,
    /// Identifies the source in the keys (its canonical path).
    pub source_id: String,
    pub entries: &'a [Entry],
}

/// A batch ready to send: the entries that could be read, with their bytes for uploads.
struct Payload {
    indices: Vec<usize>,
    files: Option<Vec<Vec<u8>>>,
}

impl Submitter<'_> {
    /// Submits one batch; answers what happened to each of its entries. An error means the service
    /// is unreachable or refuses the import as a whole: the import stops (and resumes when run again).
    pub async fn submit(&self, batch: &[usize]) -> Result<Vec<(usize, Submitted)>> {
        let (payload, mut out) = self.prepare(batch).await;
        if payload.indices.is_empty() {
            return Ok(out);
        }
        match self.send(&payload).await? {
            Ok(jobs) => out.extend(jobs),
            Err(refused) if payload.indices.len() > 1 => {
                // One bad entry refuses the whole request: find it by sending each on its own.
                tracing::debug!(%refused, "batch refused; splitting");
                for &i in &payload.indices {
                    out.extend(Box::pin(self.submit(&[i])).await?);
                }
            }
            Err(refused) => out.push((
                payload.indices[0],
                Submitted::Refused {
                    code: refused.code,
                    message: refused.message,
                },
            )),
        }
        Ok(out)
    }

    /// Reads the files of an upload batch; an unreadable one is refused here and left out.
    async fn prepare(&self, batch: &[usize]) -> (Payload, Vec<(usize, Submitted)>) {
        let mut refused = Vec::new();
        let mut indices = Vec::new();
        let mut files = Vec::new();
        for &i in batch {
            match &self.entries[i].origin {
                Origin::Url(_) => indices.push(i),
                Origin::File(path) => match tokio::fs::read(path).await {
                    Ok(bytes) => {
                        indices.push(i);
                        files.push(bytes);
                    }
                    Err(e) => refused.push((
                        i,
                        Submitted::Refused {
                            code: "file_unreadable".into(),
                            message: format!("{}: {e}", path.display()),
                        },
                    )),
                },
            }
        }
        let uploads = matches!(
            batch.first().map(|&i| &self.entries[i].origin),
            Some(Origin::File(_))
        );
        let payload = Payload {
            indices,
            files: uploads.then_some(files),
        };
        (payload, refused)
    }

    /// The batch's idempotency key for one generation (see [`Submitter::send`]).
    fn key(&self, payload: &Payload, generation: u32) -> String {
        let mut h = Sha256::new();
        h.update(b"lookalike-import/1\n");
        h.update(self.source_id.as_bytes());
        for (n, &i) in payload.indices.iter().enumerate() {
            let e = &self.entries[i];
            let image = match (&e.origin, &payload.files) {
                (Origin::File(_), Some(files)) => {
                    json!({"sha256": hex::encode(Sha256::digest(&files[n]))})
                }
                (Origin::Url(url), _) => json!({"url": url}),
                (Origin::File(path), None) => json!({"file": path}),
            };
            let mut line = json!([image, e.external_id, e.category, e.metadata]);
            // Only when given, so an import without products keeps the key it always had.
            if let (Some(product), Some(fields)) = (&e.product_id, line.as_array_mut()) {
                fields.push(json!(product));
            }
            h.update(b"\n");
            h.update(line.to_string().as_bytes());
        }
        let hash = hex::encode(h.finalize());
        match generation {
            0 => format!("import-{}", &hash[..40]),
            g => format!("import-{}-{g}", &hash[..40]),
        }
    }

    /// Sends the batch until the service takes it (its jobs, one per entry, in order) or refuses it
    /// (the refusal, for the caller to split).
    ///
    /// A 5xx may have stored the jobs as failed under the key (`queue_unavailable`: the broker never
    /// confirmed), and a key keeps its first jobs, so the next try uses the next generation of the
    /// key; a resumed import walks the same generations and replays the one that worked. A request
    /// that got no answer may have been taken: it is sent again with the same key.
    async fn send(&self, payload: &Payload) -> Result<Result<Vec<(usize, Submitted)>, Refused>> {
        let mut generation = 0;
        let mut tries = 0;
        loop {
            tries += 1;
            let key = self.key(payload, generation);
            let answer = match self.replayed(payload, &key).await {
                Some(body) => Ok((StatusCode::OK, body)),
                None => self.api.send(self.request(payload, &key)).await,
            };
            let retry = match answer {
                Ok((status, body)) if status.is_success() => {
                    let (jobs, replayed) = self.jobs(payload, body)?;
                    if replayed && self.never_enqueued(&jobs).await? {
                        generation += 1;
                        continue;
                    }
                    return Ok(Ok(jobs));
                }
                Ok((status, body)) if status.is_server_error() => {
                    generation += 1;
                    format!("{status}: {body}")
                }
                // The same key in flight elsewhere: its answer will be there shortly.
                Ok((StatusCode::CONFLICT, body)) => format!("409: {body}"),
                Ok((status, body)) => {
                    let refused = Refused::from_body(status, &body);
                    if refused.is_auth() || FATAL_CODES.contains(&refused.code.as_str()) {
                        return Err(anyhow::Error::new(refused).context(
                            "the service refused the import (an API key with the write scope, and \
                             read to follow the jobs: --api-key or LOOKALIKE_API_KEY)",
                        ));
                    }
                    return Ok(Err(refused));
                }
                Err(e) => format!("{e:#}"),
            };
            if tries >= MAX_TRIES {
                bail!(
                    "gave up submitting {} after {tries} tries: {retry}; run the same import again to resume",
                    self.entries[payload.indices[0]].at
                );
            }
            let backoff = Backoff::nth(Duration::from_millis(500), BACKOFF_MAX, tries);
            tracing::debug!(%retry, ?backoff, "submission not taken; retrying");
            tokio::time::sleep(backoff).await;
        }
    }

    /// For uploads, asks the key before sending the files: a batch already submitted is answered
    /// from the key alone (the service looks the key up before reading a body), so a resumed import
    /// does not upload everything again. An unknown key gets `no_items` for the empty probe.
    async fn replayed(&self, payload: &Payload, key: &str) -> Option<Value> {
        payload.files.as_ref()?;
        let probe = self
            .api
            .http()
            .post(self.api.url("/v1/images"))
            .header("idempotency-key", key)
            .json(&UrlBatch::default());
        match self.api.send(probe).await {
            Ok((StatusCode::OK, body))
                if serde_json::from_value::<Submission>(body.clone())
                    .is_ok_and(|s| s.replayed == Some(true)) =>
            {
                Some(body)
            }
            _ => None,
        }
    }

    fn request(&self, payload: &Payload, key: &str) -> reqwest::RequestBuilder {
        let post = self
            .api
            .http()
            .post(self.api.url("/v1/images"))
            .header("idempotency-key", key);
        let entries = payload.indices.iter().map(|&i| &self.entries[i]);
        match &payload.files {
            // A URL batch holds URLs only (see [`plan`]).
            None => post.json(&UrlBatch {
                items: entries.filter_map(Entry::url_item).collect(),
            }),
            Some(files) => {
                // One of each field per file: the service pairs the n-th value with the n-th file,
                // and reads an empty value as absent.
                let mut form = Form::new();
                for (e, bytes) in entries.zip(files) {
                    let name = match &e.origin {
                        Origin::File(path) => crate::cli::folder::file_name(path),
                        Origin::Url(_) => String::new(),
                    };
                    form = form
                        .part("file", Part::bytes(bytes.clone()).file_name(name))
                        .text("external_id", e.external_id.clone().unwrap_or_default())
                        .text("product_id", e.product_id.clone().unwrap_or_default())
                        .text("category", e.category.clone().unwrap_or_default())
                        .text("metadata", Value::Object(e.metadata.clone()).to_string());
                }
                post.multipart(form)
            }
        }
    }

    /// The job of each entry from a 2xx answer, and whether the answer is a replay.
    fn jobs(&self, payload: &Payload, body: Value) -> Result<(Vec<(usize, Submitted)>, bool)> {
        let submission: Submission = serde_json::from_value(body.clone()).with_context(|| {
            format!(
                "the service answered {body} for {} entries (from {})",
                payload.indices.len(),
                self.entries[payload.indices[0]].at
            )
        })?;
        let replayed = submission.replayed == Some(true);
        let ids = crate::cli::client::job_ids(&submission);
        if ids.len() != payload.indices.len() {
            bail!(
                "the service answered {} jobs for {} entries (from {}): {body}",
                ids.len(),
                payload.indices.len(),
                self.entries[payload.indices[0]].at
            );
        }
        let jobs = payload
            .indices
            .iter()
            .zip(ids)
            .map(|(&i, id)| (i, Submitted::Job { id, replayed }))
            .collect();
        Ok((jobs, replayed))
    }

    /// Whether a replayed request's jobs were failed because the broker never confirmed them: then
    /// they never ran, and the batch needs the next key.
    async fn never_enqueued(&self, jobs: &[(usize, Submitted)]) -> Result<bool> {
        let ids: Vec<String> = jobs
            .iter()
            .filter_map(|(_, s)| match s {
                Submitted::Job { id, .. } => Some(id.clone()),
                Submitted::Refused { .. } => None,
            })
            .collect();
        let (found, _) = self
            .api
            .lookup_jobs(&ids)
            .await
            .context("looking up replayed jobs")?;
        Ok(found.iter().any(|j| {
            j.status == JobStatus::Failed
                && j.error
                    .as_ref()
                    .is_some_and(|e| e.code == "queue_unavailable")
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Map;

    fn entry(origin: Origin, id: &str) -> Entry {
        Entry {
            origin,
            external_id: Some(id.into()),
            product_id: None,
            category: None,
            metadata: Map::new(),
            at: id.into(),
        }
    }

    #[test]
    fn batches_keep_urls_and_files_apart_in_order_within_their_limits() {
        let dir = tempfile::tempdir().unwrap();
        let file = |name: &str, size: usize| {
            let p = dir.path().join(name);
            std::fs::write(&p, vec![0u8; size]).unwrap();
            Origin::File(p)
        };
        let url = |n: u32| Origin::Url(format!("https://shop.example/{n}.jpg"));
        let entries = vec![
            entry(url(0), "u0"),
            entry(file("a", 10), "fa"),
            entry(url(1), "u1"),
            entry(file("b", 10), "fb"),
            entry(url(2), "u2"),
            entry(file("c", 50), "fc"),
            entry(file("d", 10), "fd"),
            entry(url(3), "u3"),
        ];
        let limits = BatchLimits {
            files: 3,
            urls: 2,
            bytes: 60,
        };
        // URLs in twos; files in threes unless the bytes run over (a+b+c = 70 > 60).
        assert_eq!(
            plan(&entries, limits),
            vec![vec![0, 2], vec![1, 3], vec![4, 7], vec![5, 6]]
        );
        assert_eq!(plan(&entries, limits), plan(&entries, limits));
        // A file over the byte limit still goes, alone.
        let big = BatchLimits { bytes: 5, ..limits };
        assert_eq!(
            plan(&entries, big),
            vec![vec![0, 2], vec![1], vec![3], vec![5], vec![4, 7], vec![6]]
        );
    }

    #[test]
    fn keys_depend_on_the_source_the_content_and_the_generation() {
        let api = Api::new(
            &crate::cli::client::ApiArgs {
                api: "http://127.0.0.1:9".into(),
                api_key: None,
            },
            Duration::from_secs(1),
            "write",
        )
        .unwrap();
        let entries = vec![
            entry(Origin::File("/a.jpg".into()), "a"),
            entry(Origin::File("/b.jpg".into()), "b"),
        ];
        let submitter = |source: &str| Submitter {
            api: &api,
            source_id: source.into(),
            entries: &entries,
        };
        let payload = |bytes: &[&[u8]]| Payload {
            indices: vec![0, 1],
            files: Some(bytes.iter().map(|b| b.to_vec()).collect()),
        };
        let key = submitter("/feed").key(&payload(&[b"one", b"two"]), 0);
        assert!(key.starts_with("import-") && key.len() == 47, "{key}");
        assert!(key.bytes().all(|b| b.is_ascii_graphic()));
        assert_eq!(key, submitter("/feed").key(&payload(&[b"one", b"two"]), 0));
        for other in [
            submitter("/feed").key(&payload(&[b"one", b"TWO"]), 0),
            submitter("/feed.failures.jsonl").key(&payload(&[b"one", b"two"]), 0),
            submitter("/feed").key(&payload(&[b"one", b"two"]), 1),
        ] {
            assert_ne!(key, other);
        }
        assert_eq!(
            submitter("/feed").key(&payload(&[b"one", b"two"]), 2),
            format!("{key}-2")
        );
    }
}
