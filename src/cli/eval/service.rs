//! The evaluation's calls to the running service: uploads, job waits, vectors, searches, training.

use lookalike_api_types::{HeadSummary, Item, SearchAnswer, Status, Submission};

use super::*;
use crate::cli::client::{Refused, decimal};

/// One image of an upload batch.
pub(super) struct Upload {
    pub(super) bytes: Vec<u8>,
    pub(super) file_name: String,
    /// Given as its label, when set.
    pub(super) category: Option<String>,
    pub(super) external_id: String,
}

pub(super) struct Api {
    pub(super) api: crate::cli::client::Api,
    pub(super) concurrency: usize,
}

impl Api {
    pub(super) fn new(args: &crate::cli::client::ApiArgs, concurrency: usize) -> Result<Self> {
        Ok(Api {
            api: crate::cli::client::Api::new(args, Duration::from_secs(300), "read and write")?,
            concurrency: concurrency.max(1),
        })
    }

    pub(super) async fn check_ready(&self) -> Result<()> {
        self.api.check_ready().await
    }

    /// Answers the JSON body of a 2xx response, read as `T`; anything else is an error naming the
    /// status and code.
    pub(super) async fn json<T: serde::de::DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<T> {
        self.api.json(request).await
    }

    /// Uploads every sample in batches; answers the job ids in sample order.
    pub(super) async fn upload_all(&self, folder: &str, samples: &[Sample]) -> Result<Vec<String>> {
        self.upload(folder, samples, true).await
    }

    /// Uploads every sample, with its category as a label when `labelled`.
    pub(super) async fn upload(
        &self,
        folder: &str,
        samples: &[Sample],
        labelled: bool,
    ) -> Result<Vec<String>> {
        let batches = stream::iter(samples.chunks(UPLOAD_BATCH).map(|batch| async move {
            let mut uploads = Vec::with_capacity(batch.len());
            for s in batch {
                uploads.push(Upload {
                    bytes: tokio::fs::read(&s.path)
                        .await
                        .with_context(|| s.path.display().to_string())?,
                    file_name: file_name(&s.path),
                    category: labelled.then(|| s.category.clone()),
                    external_id: format!("eval:{folder}/{}", s.rel),
                });
            }
            self.post_batch(uploads)
                .await
                .with_context(|| format!("uploading {} ...", batch[0].rel))
        }));
        let batches: Vec<Vec<String>> = batches.buffered(self.concurrency).try_collect().await?;
        Ok(batches.concat())
    }

    /// Submits one batch of images (`POST /v1/images`, multipart); answers their job ids in order.
    pub(super) async fn post_batch(&self, batch: Vec<Upload>) -> Result<Vec<String>> {
        let count = batch.len();
        let mut form = Form::new();
        for u in batch {
            form = form.part("file", Part::bytes(u.bytes).file_name(u.file_name));
            if let Some(category) = u.category {
                form = form.text("category", category);
            }
            form = form.text("external_id", u.external_id);
        }
        let body: Submission = self
            .json(
                self.api
                    .http()
                    .post(self.api.url("/v1/images"))
                    .multipart(form),
            )
            .await?;
        let ids = crate::cli::client::job_ids(&body);
        if ids.len() != count {
            bail!(
                "asked for {count} jobs, got {}: {}",
                ids.len(),
                crate::cli::client::to_value(&body)?
            );
        }
        Ok(ids)
    }

    /// Follows the jobs (with the batch lookup, oldest first) until all have ended; each ends with
    /// the item id or the failure reason.
    pub(super) async fn wait_jobs(&self, ids: &[String]) -> Result<Vec<Result<String, String>>> {
        let position: HashMap<&str, usize> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| (id.as_str(), i))
            .collect();
        let mut outcomes: Vec<Option<Result<String, String>>> = vec![None; ids.len()];
        let mut last_progress = Instant::now();
        let mut progress = Progress::new("eval ingest");
        let mut pending: Vec<String> = ids.to_vec();
        while !pending.is_empty() {
            for (id, end) in self.api.ended_jobs(&pending).await? {
                if let Some(&i) = position.get(id.as_str()) {
                    outcomes[i] = Some(match end {
                        JobEnd::Succeeded { item_id } => Ok(item_id),
                        JobEnd::Failed { code, message } => Err(format!("{code}: {message}")),
                    });
                }
            }
            let before = pending.len();
            pending.retain(|id| outcomes[position[id.as_str()]].is_none());
            if pending.len() < before {
                last_progress = Instant::now();
            } else if last_progress.elapsed() > STALL_LIMIT {
                bail!(
                    "no job finished in {STALL_LIMIT:?}; {} still pending (is the worker running?)",
                    pending.len()
                );
            }
            let done = ids.len() - pending.len();
            progress.update(done, ids.len(), || {
                format!("{done}/{} jobs ended", ids.len())
            });
            if !pending.is_empty() {
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
        progress.finish(
            ids.len(),
            ids.len(),
            &format!("{0}/{0} jobs ended", ids.len()),
        );
        Ok(outcomes.into_iter().map(Option::unwrap).collect())
    }

    /// Each item's stored embedding, L2-normalised, and every item's features when all have them.
    pub(super) async fn vectors(
        &self,
        item_ids: &[String],
    ) -> Result<(Vec<Vec<f32>>, Option<Vec<Vec<f32>>>)> {
        let items = self.items(item_ids).await?;
        let vectors = items.iter().map(unit_vector).collect::<Result<_>>()?;
        let features = items.into_iter().map(|i| i.features.flatten()).collect();
        Ok((vectors, features))
    }

    /// The items, with their vectors, in the order of the ids.
    pub(super) async fn items(&self, item_ids: &[String]) -> Result<Vec<Item>> {
        stream::iter(item_ids.iter().map(|id| {
            self.json(
                self.api
                    .http()
                    .get(self.api.url(&format!("/v1/items/{id}?vector=true"))),
            )
        }))
        .buffered(self.concurrency)
        .try_collect()
        .await
    }

    /// The service's `model.id` (`/v1/status`).
    pub(super) async fn model_id(&self) -> Result<String> {
        let status: Status = self
            .json(self.api.http().get(self.api.url("/v1/status")))
            .await?;
        Ok(status.model.id)
    }

    /// The service's classifier settings (`/v1/status`), to run the folds as it classifies.
    pub(super) async fn classifier_settings(&self) -> Result<folds::Classifier> {
        let status: Value = self
            .json(self.api.http().get(self.api.url("/v1/status")))
            .await?;
        let status: Status = serde_json::from_value(status).with_context(|| {
            format!(
                "{} reports no classifier settings (an older service?)",
                self.api.url("/v1/status")
            )
        })?;
        Ok(folds::Classifier::from_status(&status.classifier.settings))
    }

    /// Asks the service to train its classifier head now; `None` when it has too few labels or the
    /// head is off. Waits while another process is training.
    pub(super) async fn train_head(&self) -> Result<Option<HeadSummary>> {
        for _ in 0..120 {
            let (status, body) = self
                .api
                .send(self.api.http().post(self.api.url("/v1/classifier/train")))
                .await?;
            match status.as_u16() {
                200 => {
                    return serde_json::from_value(body)
                        .map(Some)
                        .context("training the classifier head answered an unexpected shape");
                }
                422 => return Ok(None),
                409 if Refused::from_body(status, &body).code == "head_disabled" => {
                    return Ok(None);
                }
                409 => tokio::time::sleep(Duration::from_millis(500)).await,
                s => bail!("training the classifier head answered {s}: {body}"),
            }
        }
        bail!("the classifier head stayed busy training for a minute")
    }

    /// One search per sample (with its item excluded when `exclude` gives the ids), with progress on
    /// stderr.
    pub(super) async fn search_all(
        &self,
        samples: &[&Sample],
        exclude: Option<&[String]>,
        category: &str,
    ) -> Vec<Result<(Answer, f64)>> {
        let mut progress = Progress::new("eval search");
        let shown = |n: usize| format!("{n}/{} searches ({category})", samples.len());
        let mut out = Vec::with_capacity(samples.len());
        let mut searches = stream::iter(
            samples
                .iter()
                .enumerate()
                .map(|(i, s)| self.search(s, exclude.map(|ids| ids[i].as_str()), category)),
        )
        .buffered(self.concurrency);
        while let Some(answer) = searches.next().await {
            out.push(answer);
            progress.update(out.len(), samples.len(), || shown(out.len()));
        }
        progress.finish(out.len(), samples.len(), &shown(out.len()));
        out
    }

    pub(super) async fn search(
        &self,
        sample: &Sample,
        exclude: Option<&str>,
        category: &str,
    ) -> Result<(Answer, f64)> {
        let bytes = tokio::fs::read(&sample.path).await?;
        let mut form = Form::new()
            .part(
                "file",
                Part::bytes(bytes).file_name(file_name(&sample.path)),
            )
            .text("k", K.to_string())
            .text("category", category.to_string());
        if let Some(id) = exclude {
            form = form.text("exclude", id.to_string());
        }
        let t = Instant::now();
        let body: SearchAnswer = self
            .json(
                self.api
                    .http()
                    .post(self.api.url("/v1/search"))
                    .multipart(form),
            )
            .await?;
        let ms = t.elapsed().as_secs_f64() * 1000.0;
        let answer = Answer {
            top: body
                .prediction
                .top
                .into_iter()
                .map(|t| t.category)
                .collect(),
            confidence: body.prediction.confidence.map(decimal),
            widened: body.search.low_confidence,
            results: body
                .results
                .into_iter()
                .map(|r| (r.item_id.to_string(), r.category))
                .collect(),
        };
        Ok((answer, ms))
    }
}

/// An item's stored embedding (fetched with `?vector=true`), L2-normalised.
pub(super) fn unit_vector(item: &Item) -> Result<Vec<f32>> {
    let v = item.vector.clone().flatten();
    Ok(normalise(v.with_context(|| {
        format!("item {} has no vector", item.id)
    })?))
}
