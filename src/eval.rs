//! `lookalike eval FOLDER`: measures search quality on a labelled folder (`FOLDER/<category>/<image>`)
//! against a running service, next to the raw-embedding baseline measured in the same run.
//!
//! 1. Every image is uploaded with its category (`external_id` = `eval:<folder>/<relative path>`) and
//!    the jobs are polled until they end.
//! 2. Raw baseline (the method of MODELS.md): each item's stored vector, leave-one-out cosine kNN over
//!    the eval items only: P@1, P@10, 5-NN majority category accuracy.
//! 3. The system as users see it: `POST /v1/search` with the same file, `k=10`, `exclude=<its item id>`
//!    (category auto): category accuracy (top-1, top-3), P@1 and P@10 of the results, share of searches
//!    widened, calibration of the prediction's confidence (ECE, 10 bins).
//!    With `FOLDER/products.json` (relative path -> product id), same-item recall@5 for both.
//!
//! Precision here is over what is returned, up to k: a search in a category of 4 items returns 3 results,
//! and if all 3 are right its P@10 is 1. An empty answer has precision 0.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures::{StreamExt, TryStreamExt, stream};
use reqwest::multipart::{Form, Part};
use serde_json::{Value, json};

use crate::client::JobEnd;
use crate::folder::file_name;

#[derive(clap::Args, Debug)]
pub struct EvalArgs {
    /// Labelled folder: FOLDER/<category>/<image files>; an optional FOLDER/products.json maps each
    /// relative path to a product id (several views of one product).
    pub folder: PathBuf,
    /// The running service (ideally a fresh one: its catalogue takes part); the key needs the `read`
    /// and `write` scopes (eval uploads, then searches).
    #[command(flatten)]
    pub api: crate::client::ApiArgs,
    /// Use only the first N images (sorted by name) of each category.
    #[arg(long)]
    pub limit_per_category: Option<usize>,
    /// Print a JSON object instead of a markdown table.
    #[arg(long)]
    pub json: bool,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
    /// Measure the cold-start prior instead: ingest without categories into a service whose
    /// `classify.categories` are set, and compare each predicted category with the one this JSON
    /// file maps the image's folder to (`{"sneaker": "shoes", ...}`; unmapped folders are left out).
    #[arg(long, value_name = "MAP.json")]
    pub cold_start: Option<PathBuf>,
}

const UPLOAD_BATCH: usize = 16;
const K: usize = 10;
const SAME_ITEM_K: usize = 5;
const VOTE_K: usize = 5;
const ECE_BINS: usize = 10;
/// Give up when no job has finished for this long.
const STALL_LIMIT: Duration = Duration::from_secs(300);

/// One labelled image of the folder.
#[derive(Clone)]
struct Sample {
    rel: String,
    category: String,
    path: PathBuf,
    product: Option<String>,
}

/// What one system search answered.
struct Answer {
    top: Vec<String>,
    /// The confidences of `top`, in the same order.
    top_confidences: Vec<f64>,
    confidence: Option<f64>,
    widened: bool,
    /// (item id, category) of each result, best first.
    results: Vec<(String, Option<String>)>,
}

/// Answers the exit code: 1 when an image failed to ingest or a search failed.
pub async fn run(args: EvalArgs) -> Result<u8> {
    let started = Instant::now();
    let name = args
        .folder
        .canonicalize()
        .with_context(|| format!("{}", args.folder.display()))?
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "eval".into());
    let samples = walk(&args.folder, args.limit_per_category)?;
    if samples.is_empty() {
        bail!(
            "{} holds no images in <category>/ folders",
            args.folder.display()
        );
    }
    let api = Api::new(&args.api, args.concurrency)?;
    api.check_ready().await?;
    if let Some(map) = &args.cold_start {
        return cold_start(&api, &name, &samples, map, args.json).await;
    }

    // 1. Ingest.
    let t = Instant::now();
    let job_ids = api.upload_all(&name, &samples).await?;
    let outcomes = api.wait_jobs(&job_ids).await?;
    let ingest_secs = t.elapsed().as_secs_f64();
    let mut failures = Vec::new();
    let mut ok = Vec::new(); // (sample index, item id)
    for (i, outcome) in outcomes.into_iter().enumerate() {
        match outcome {
            Ok(item) => ok.push((i, item)),
            Err(why) => {
                failures.push(json!({"file": samples[i].rel, "job_id": job_ids[i], "error": why}))
            }
        }
    }
    for f in &failures {
        eprintln!(
            "ingest failed: {} ({}): {}",
            f["file"], f["job_id"], f["error"]
        );
    }
    if ok.len() < 2 {
        bail!(
            "only {} of {} images were ingested: nothing to evaluate",
            ok.len(),
            samples.len()
        );
    }
    let samples: Vec<&Sample> = ok.iter().map(|(i, _)| &samples[*i]).collect();
    let item_ids: Vec<String> = ok.into_iter().map(|(_, id)| id).collect();
    let labels: Vec<&str> = samples.iter().map(|s| s.category.as_str()).collect();
    let siblings = siblings(
        &samples
            .iter()
            .map(|s| s.product.as_deref())
            .collect::<Vec<_>>(),
    );
    let has_products = samples.iter().any(|s| s.product.is_some());

    // 2. Raw baseline.
    let t = Instant::now();
    let vectors = api.vectors(&item_ids).await?;
    let raw = raw_baseline(&vectors, &labels, &siblings);
    let vector_secs = t.elapsed().as_secs_f64();

    // 3. The system.
    let t = Instant::now();
    let answers = api.search_all(&samples, &item_ids).await;
    let search_secs = t.elapsed().as_secs_f64();
    let index_of: HashMap<&str, usize> = item_ids
        .iter()
        .enumerate()
        .map(|(i, id)| (id.as_str(), i))
        .collect();
    let mut search_errors = Vec::new();
    let mut sys = SystemScores::default();
    for (i, answer) in answers.iter().enumerate() {
        match answer {
            Ok(a) => sys.add(a, labels[i], &siblings[i], &index_of),
            Err(e) => search_errors.push(json!({"file": samples[i].rel, "error": e.to_string()})),
        }
    }
    for e in &search_errors {
        eprintln!("search failed: {} : {}", e["file"], e["error"]);
    }

    let mut per_category: BTreeMap<&str, usize> = BTreeMap::new();
    for l in &labels {
        *per_category.entry(l).or_default() += 1;
    }
    let searched = answers.len() - search_errors.len();
    let report = json!({
        "folder": name,
        "api": args.api.api,
        "items": samples.len(),
        "categories": per_category,
        "ingest_failures": failures,
        "search_errors": search_errors,
        "same_item_queries": has_products.then(|| siblings.iter().filter(|s| !s.is_empty()).count()),
        "raw": {
            "p_at_1": raw.p1, "p_at_10": raw.p10, "knn5_accuracy": raw.knn5,
            "same_item_recall_at_5": if has_products { raw.recall5 } else { None },
        },
        "lookalike": {
            "searches": searched,
            "accuracy_top1": mean(&sys.top1), "accuracy_top3": mean(&sys.top3),
            "p_at_1": mean(&sys.p1), "p_at_10": mean(&sys.p10),
            "widened": mean(&sys.widened),
            "ece": (!sys.calibration.is_empty()).then(|| expected_calibration_error(&sys.calibration, ECE_BINS)),
            "mean_confidence": mean(&sys.calibration.iter().map(|c| c.0).collect::<Vec<_>>()),
            "temperature_fit": fit_temperature(&sys.tops).map(|(t, ece)| json!({"factor": t, "ece": ece})),
            "no_prediction": sys.no_prediction,
            "same_item_recall_at_5": if has_products { mean(&sys.recall5) } else { None },
        },
        "timing": {
            "ingest_secs": ingest_secs, "ingest_per_sec": job_ids.len() as f64 / ingest_secs,
            "vectors_secs": vector_secs, "search_secs": search_secs,
            "search_mean_ms": mean(&sys.latency_ms),
            "concurrency": args.concurrency,
            "total_secs": started.elapsed().as_secs_f64(),
        },
    });
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", markdown(&report));
    }
    if !failures.is_empty() || !search_errors.is_empty() {
        eprintln!(
            "{} of {} images failed to ingest, {} searches failed",
            failures.len(),
            job_ids.len(),
            search_errors.len()
        );
        return Ok(crate::client::EXIT_FAILED);
    }
    Ok(crate::client::EXIT_OK)
}

/// The labelled images of the folder, with their product ids from `products.json` when there is one.
fn walk(folder: &Path, limit: Option<usize>) -> Result<Vec<Sample>> {
    let products: HashMap<String, String> = match std::fs::read(folder.join("products.json")) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .context("products.json: expected {\"path\": \"product id\"}")?,
        Err(_) => HashMap::new(),
    };
    Ok(crate::folder::walk(folder, limit)?
        .into_iter()
        .map(|image| Sample {
            product: products.get(&image.rel).cloned(),
            rel: image.rel,
            category: image.category,
            path: image.path,
        })
        .collect())
}

/// For each item, the other items that show the same product.
fn siblings(products: &[Option<&str>]) -> Vec<Vec<usize>> {
    products
        .iter()
        .enumerate()
        .map(|(i, p)| match p {
            Some(p) => (0..products.len())
                .filter(|&j| j != i && products[j] == Some(*p))
                .collect(),
            None => Vec::new(),
        })
        .collect()
}

struct Api {
    api: crate::client::Api,
    concurrency: usize,
}

impl Api {
    fn new(args: &crate::client::ApiArgs, concurrency: usize) -> Result<Self> {
        Ok(Api {
            api: crate::client::Api::new(args, Duration::from_secs(300), "read and write")?,
            concurrency: concurrency.max(1),
        })
    }

    async fn check_ready(&self) -> Result<()> {
        self.api.check_ready().await
    }

    /// Answers the JSON body of a 2xx response; anything else is an error naming the status and code.
    async fn json(&self, request: reqwest::RequestBuilder) -> Result<Value> {
        self.api.json(request).await
    }

    /// Uploads every sample in batches; answers the job ids in sample order.
    async fn upload_all(&self, folder: &str, samples: &[Sample]) -> Result<Vec<String>> {
        self.upload(folder, samples, true).await
    }

    /// Uploads every sample, with its category as a label when `labelled`.
    async fn upload(
        &self,
        folder: &str,
        samples: &[Sample],
        labelled: bool,
    ) -> Result<Vec<String>> {
        let batches = stream::iter(samples.chunks(UPLOAD_BATCH).map(|batch| async move {
            let mut form = Form::new();
            for s in batch {
                let bytes = tokio::fs::read(&s.path)
                    .await
                    .with_context(|| s.path.display().to_string())?;
                form = form.part("file", Part::bytes(bytes).file_name(file_name(&s.path)));
                if labelled {
                    form = form.text("category", s.category.clone());
                }
                form = form.text("external_id", format!("eval:{folder}/{}", s.rel));
            }
            let body = self
                .json(
                    self.api
                        .http()
                        .post(self.api.url("/v1/images"))
                        .multipart(form),
                )
                .await
                .with_context(|| format!("uploading {} ...", batch[0].rel))?;
            let ids = crate::client::job_ids(&body);
            if ids.len() != batch.len() {
                bail!("asked for {} jobs, got {}: {body}", batch.len(), ids.len());
            }
            Ok(ids)
        }));
        let batches: Vec<Vec<String>> = batches.buffered(self.concurrency).try_collect().await?;
        Ok(batches.concat())
    }

    /// Follows the jobs (with the batch lookup, oldest first) until all have ended; each ends with
    /// the item id or the failure reason.
    async fn wait_jobs(&self, ids: &[String]) -> Result<Vec<Result<String, String>>> {
        let position: HashMap<&str, usize> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| (id.as_str(), i))
            .collect();
        let mut outcomes: Vec<Option<Result<String, String>>> = vec![None; ids.len()];
        let (start, mut last_progress, mut last_print) =
            (Instant::now(), Instant::now(), Instant::now());
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
            if pending.is_empty() || last_print.elapsed() > Duration::from_secs(2) {
                let secs = start.elapsed().as_secs_f64();
                eprintln!(
                    "ingest: {done}/{} jobs ended ({:.1} images/s)",
                    ids.len(),
                    done as f64 / secs
                );
                last_print = Instant::now();
            }
            if !pending.is_empty() {
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
        Ok(outcomes.into_iter().map(Option::unwrap).collect())
    }

    /// Each item's stored embedding, L2-normalised.
    async fn vectors(&self, item_ids: &[String]) -> Result<Vec<Vec<f32>>> {
        stream::iter(item_ids.iter().map(|id| async move {
            let item = self
                .json(
                    self.api
                        .http()
                        .get(self.api.url(&format!("/v1/items/{id}?vector=true"))),
                )
                .await?;
            let v: Vec<f32> = serde_json::from_value(item["vector"].clone())
                .with_context(|| format!("item {id} has no vector"))?;
            Ok(normalise(v))
        }))
        .buffered(self.concurrency)
        .try_collect()
        .await
    }

    /// One leave-one-out search per item, with progress on stderr.
    async fn search_all(
        &self,
        samples: &[&Sample],
        item_ids: &[String],
    ) -> Vec<Result<(Answer, f64)>> {
        let start = Instant::now();
        let mut last_print = Instant::now();
        let mut out = Vec::with_capacity(samples.len());
        let mut searches = stream::iter(
            samples
                .iter()
                .zip(item_ids)
                .map(|(s, id)| self.search(s, id)),
        )
        .buffered(self.concurrency);
        while let Some(answer) = searches.next().await {
            out.push(answer);
            if out.len() == samples.len() || last_print.elapsed() > Duration::from_secs(2) {
                let secs = start.elapsed().as_secs_f64();
                eprintln!(
                    "search: {}/{} ({:.1} searches/s)",
                    out.len(),
                    samples.len(),
                    out.len() as f64 / secs
                );
                last_print = Instant::now();
            }
        }
        out
    }

    async fn search(&self, sample: &Sample, item_id: &str) -> Result<(Answer, f64)> {
        let bytes = tokio::fs::read(&sample.path).await?;
        let form = Form::new()
            .part(
                "file",
                Part::bytes(bytes).file_name(file_name(&sample.path)),
            )
            .text("k", K.to_string())
            .text("exclude", item_id.to_string());
        let t = Instant::now();
        let body = self
            .json(
                self.api
                    .http()
                    .post(self.api.url("/v1/search"))
                    .multipart(form),
            )
            .await?;
        let ms = t.elapsed().as_secs_f64() * 1000.0;
        let text = |v: &Value| v.as_str().map(str::to_string);
        let answer = Answer {
            top: body["prediction"]["top"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|t| text(&t["category"]))
                .collect(),
            top_confidences: body["prediction"]["top"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|t| t["confidence"].as_f64())
                .collect(),
            confidence: body["prediction"]["confidence"].as_f64(),
            widened: body["search"]["low_confidence"].as_bool().unwrap_or(false),
            results: body["results"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|r| Some((text(&r["item_id"])?, text(&r["category"]))))
                .collect(),
        };
        Ok((answer, ms))
    }
}

#[derive(Default)]
struct SystemScores {
    top1: Vec<f64>,
    top3: Vec<f64>,
    p1: Vec<f64>,
    p10: Vec<f64>,
    widened: Vec<f64>,
    calibration: Vec<(f64, bool)>,
    /// Top-3 confidences and whether the first was right, to fit a temperature.
    tops: Vec<(Vec<f64>, bool)>,
    no_prediction: usize,
    recall5: Vec<f64>,
    latency_ms: Vec<f64>,
}

impl SystemScores {
    fn add(
        &mut self,
        (a, ms): &(Answer, f64),
        truth: &str,
        siblings: &[usize],
        index_of: &HashMap<&str, usize>,
    ) {
        let correct = a.top.first().is_some_and(|c| c == truth);
        self.top1.push(flag(correct));
        self.top3
            .push(flag(a.top.iter().take(3).any(|c| c == truth)));
        let hits: Vec<bool> = a
            .results
            .iter()
            .map(|(_, c)| c.as_deref() == Some(truth))
            .collect();
        self.p1.push(precision_at_k(&hits, 1));
        self.p10.push(precision_at_k(&hits, K));
        self.widened.push(flag(a.widened));
        match a.confidence {
            Some(c) => {
                self.calibration.push((c, correct));
                self.tops.push((a.top_confidences.clone(), correct));
            }
            None => self.no_prediction += 1,
        }
        if !siblings.is_empty() {
            // A result outside the eval set (another catalogue item) counts as a miss.
            let ranked: Vec<usize> = a
                .results
                .iter()
                .map(|(id, _)| index_of.get(id.as_str()).copied().unwrap_or(usize::MAX))
                .collect();
            self.recall5
                .push(recall_at_k(&ranked, siblings, SAME_ITEM_K));
        }
        self.latency_ms.push(*ms);
    }
}

struct RawScores {
    p1: Option<f64>,
    p10: Option<f64>,
    knn5: Option<f64>,
    recall5: Option<f64>,
}

/// Leave-one-out cosine kNN over the eval items' own vectors (normalised).
fn raw_baseline(vectors: &[Vec<f32>], labels: &[&str], siblings: &[Vec<usize>]) -> RawScores {
    let (mut p1, mut p10, mut knn5, mut recall5) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for i in 0..vectors.len() {
        let ranked = nearest(vectors, i, K.max(VOTE_K).max(SAME_ITEM_K));
        let hits: Vec<bool> = ranked.iter().map(|&j| labels[j] == labels[i]).collect();
        p1.push(precision_at_k(&hits, 1));
        p10.push(precision_at_k(&hits, K));
        let votes: Vec<&str> = ranked.iter().take(VOTE_K).map(|&j| labels[j]).collect();
        knn5.push(flag(majority_vote(&votes) == Some(labels[i])));
        if !siblings[i].is_empty() {
            recall5.push(recall_at_k(&ranked, &siblings[i], SAME_ITEM_K));
        }
    }
    RawScores {
        p1: mean(&p1),
        p10: mean(&p10),
        knn5: mean(&knn5),
        recall5: mean(&recall5),
    }
}

// ---- metric math: small pure functions ----

fn normalise(mut v: Vec<f32>) -> Vec<f32> {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
    v
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// The k vectors most similar to `vectors[i]` (dot product of normalised vectors = cosine), itself left
/// out; ties keep the lower index first.
fn nearest(vectors: &[Vec<f32>], i: usize, k: usize) -> Vec<usize> {
    let mut scored: Vec<(f32, usize)> = (0..vectors.len())
        .filter(|&j| j != i)
        .map(|j| (dot(&vectors[i], &vectors[j]), j))
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    scored.into_iter().take(k).map(|(_, j)| j).collect()
}

/// Share of relevant results among the first k returned (fewer than k returned: among those). An empty
/// answer scores 0.
fn precision_at_k(relevant: &[bool], k: usize) -> f64 {
    let shown = &relevant[..relevant.len().min(k)];
    if shown.is_empty() {
        return 0.0;
    }
    shown.iter().filter(|&&r| r).count() as f64 / shown.len() as f64
}

/// The most frequent label; a tie goes to the label that appears first (the nearer neighbour).
fn majority_vote<'a>(labels: &[&'a str]) -> Option<&'a str> {
    let count = |l: &str| labels.iter().filter(|&&x| x == l).count();
    let best = labels.iter().map(|l| count(l)).max()?;
    labels.iter().copied().find(|l| count(l) == best)
}

/// Expected calibration error: confidences in equal-width bins over [0, 1]; the mean |accuracy -
/// confidence| of each bin, weighted by its share of the predictions.
fn expected_calibration_error(predictions: &[(f64, bool)], bins: usize) -> f64 {
    let mut sums = vec![(0usize, 0.0f64, 0usize); bins]; // (count, confidence sum, correct)
    for &(confidence, correct) in predictions {
        let b = ((confidence.clamp(0.0, 1.0) * bins as f64) as usize).min(bins - 1);
        sums[b].0 += 1;
        sums[b].1 += confidence;
        sums[b].2 += usize::from(correct);
    }
    let n = predictions.len() as f64;
    sums.iter()
        .filter(|(count, _, _)| *count > 0)
        .map(|&(count, conf, correct)| {
            let c = count as f64;
            (c / n) * (correct as f64 / c - conf / c).abs()
        })
        .sum()
}

/// The temperature factor `t` that, applied on top of the service's current
/// `classify.confidence_temperature`, would minimise the ECE of these answers, with that ECE.
///
/// The API reports the top 3 categories; the remaining probability is treated as one more category.
/// That is exact for the winner's confidence when at most four categories have any probability, and
/// a close approximation otherwise (the tail is small).
fn fit_temperature(tops: &[(Vec<f64>, bool)]) -> Option<(f64, f64)> {
    if tops.len() < 20 {
        return None;
    }
    let rescaled = |t: f64| -> Vec<(f64, bool)> {
        tops.iter()
            .filter(|(p, _)| !p.is_empty())
            .map(|(p, correct)| {
                let rest = (1.0 - p.iter().sum::<f64>()).max(0.0);
                let total: f64 = p.iter().chain([rest].iter()).map(|x| x.powf(1.0 / t)).sum();
                (p[0].powf(1.0 / t) / total, *correct)
            })
            .collect()
    };
    (1..=60)
        .map(|i| i as f64 * 0.05)
        .map(|t| (t, expected_calibration_error(&rescaled(t), ECE_BINS)))
        .min_by(|a, b| a.1.total_cmp(&b.1))
}

/// Share of the relevant ids found among the first k ranked.
fn recall_at_k(ranked: &[usize], relevant: &[usize], k: usize) -> f64 {
    if relevant.is_empty() {
        return 0.0;
    }
    let top = &ranked[..ranked.len().min(k)];
    relevant.iter().filter(|r| top.contains(r)).count() as f64 / relevant.len() as f64
}

fn mean(values: &[f64]) -> Option<f64> {
    (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
}

fn flag(b: bool) -> f64 {
    if b { 1.0 } else { 0.0 }
}

// ---- output ----

fn markdown(r: &Value) -> String {
    let f = |v: &Value| v.as_f64().map_or("–".to_string(), |x| format!("{x:.3}"));
    let (raw, sys, t) = (&r["raw"], &r["lookalike"], &r["timing"]);
    let mut rows = vec![
        (
            "category accuracy, top-1 (raw: 5-NN vote)".to_string(),
            f(&raw["knn5_accuracy"]),
            f(&sys["accuracy_top1"]),
        ),
        (
            "category accuracy, top-3".into(),
            "–".into(),
            f(&sys["accuracy_top3"]),
        ),
        ("P@1".into(), f(&raw["p_at_1"]), f(&sys["p_at_1"])),
        ("P@10".into(), f(&raw["p_at_10"]), f(&sys["p_at_10"])),
        (
            "searches widened (low confidence)".into(),
            "–".into(),
            f(&sys["widened"]),
        ),
        (
            "calibration error (ECE, 10 bins)".into(),
            "–".into(),
            f(&sys["ece"]),
        ),
        (
            "mean confidence".into(),
            "–".into(),
            f(&sys["mean_confidence"]),
        ),
        (
            "ECE after the fitted temperature factor (see below)".into(),
            "–".into(),
            f(&sys["temperature_fit"]["ece"]),
        ),
    ];
    if let Some(n) = r["same_item_queries"].as_u64() {
        rows.push((
            format!("same-item recall@5 ({n} views with siblings)"),
            f(&raw["same_item_recall_at_5"]),
            f(&sys["same_item_recall_at_5"]),
        ));
    }
    let mut out = format!(
        "### lookalike eval: {} ({} images, {} categories, {})\n\n| metric | raw embeddings | lookalike |\n|---|---|---|\n",
        r["folder"].as_str().unwrap_or(""),
        r["items"],
        r["categories"].as_object().map_or(0, |c| c.len()),
        r["api"].as_str().unwrap_or(""),
    );
    for (metric, a, b) in rows {
        out += &format!("| {metric} | {a} | {b} |\n");
    }
    let cats: Vec<String> = r["categories"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(c, n)| format!("{c} {n}"))
        .collect();
    out += &format!(
        "\ncounts: {} images evaluated, {} failed to ingest, {} searches ({} errors, {} without prediction); per category: {}\n",
        r["items"],
        r["ingest_failures"].as_array().map_or(0, Vec::len),
        sys["searches"],
        r["search_errors"].as_array().map_or(0, Vec::len),
        sys["no_prediction"],
        cats.join(", "),
    );
    if let Some(t) = sys["temperature_fit"]["factor"].as_f64() {
        out += &format!(
            "calibration: multiplying classify.confidence_temperature by {t:.2} would bring the ECE to {}\n",
            f(&sys["temperature_fit"]["ece"])
        );
    }
    out += &format!(
        "timing: ingest {:.1} s ({:.1} images/s), vectors {:.1} s, searches {:.1} s (mean {:.0} ms each, {} in flight), total {:.1} s\n",
        t["ingest_secs"].as_f64().unwrap_or(0.0),
        t["ingest_per_sec"].as_f64().unwrap_or(0.0),
        t["vectors_secs"].as_f64().unwrap_or(0.0),
        t["search_secs"].as_f64().unwrap_or(0.0),
        t["search_mean_ms"].as_f64().unwrap_or(0.0),
        t["concurrency"],
        t["total_secs"].as_f64().unwrap_or(0.0),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fitted_temperature_sharpens_an_under_confident_classifier() {
        // Always right, but only 40% sure: a factor below 1 sharpens it towards certainty.
        let tops: Vec<(Vec<f64>, bool)> = (0..50).map(|_| (vec![0.4, 0.3, 0.2], true)).collect();
        let (t, ece) = fit_temperature(&tops).unwrap();
        assert!(t < 0.5, "{t}");
        assert!(ece < 0.05, "{ece}");
        // Right 40% of the time at 40%: already calibrated, nothing to change.
        let tops: Vec<(Vec<f64>, bool)> =
            (0..50).map(|i| (vec![0.4, 0.3, 0.2], i % 5 < 2)).collect();
        let (t, ece) = fit_temperature(&tops).unwrap();
        assert!((t - 1.0).abs() < 0.051, "{t}");
        assert!(ece < 0.01);
    }

    #[test]
    fn precision_counts_what_is_returned_up_to_k() {
        assert_eq!(precision_at_k(&[true, false, true, true], 1), 1.0);
        assert_eq!(precision_at_k(&[true, false, true, true], 2), 0.5);
        assert_eq!(precision_at_k(&[true, false, true, true], 10), 0.75);
        assert_eq!(precision_at_k(&[false, true], 1), 0.0);
        assert_eq!(precision_at_k(&[], 10), 0.0);
    }

    #[test]
    fn majority_vote_breaks_ties_by_the_nearer_neighbour() {
        assert_eq!(majority_vote(&["a", "b", "b", "c", "a"]), Some("a"));
        assert_eq!(majority_vote(&["b", "a", "a", "c", "b"]), Some("b"));
        assert_eq!(majority_vote(&["c", "a", "a", "a", "b"]), Some("a"));
        assert_eq!(majority_vote(&[]), None);
    }

    #[test]
    fn ece_is_zero_when_confidence_matches_accuracy_and_grows_with_overconfidence() {
        // Bin 0.7-0.8: 4 predictions at 0.75, 3 right.
        let calibrated = [(0.75, true), (0.75, true), (0.75, true), (0.75, false)];
        assert!(expected_calibration_error(&calibrated, 10).abs() < 1e-12);
        // All at 0.95 but half right: |0.5 - 0.95| = 0.45.
        let over = [(0.95, true), (0.95, false)];
        assert!((expected_calibration_error(&over, 10) - 0.45).abs() < 1e-12);
        // Two bins weighted by size: 1.0 (right) and 0.15 (wrong) -> 0.5*0 + 0.5*0.15.
        let mixed = [(1.0, true), (0.15, false)];
        assert!((expected_calibration_error(&mixed, 10) - 0.075).abs() < 1e-12);
    }

    #[test]
    fn recall_is_the_share_of_siblings_in_the_top_k() {
        assert_eq!(recall_at_k(&[3, 1, 2, 7, 8, 9], &[1, 9], 5), 0.5);
        assert_eq!(recall_at_k(&[1, 9], &[1, 9], 5), 1.0);
        assert_eq!(recall_at_k(&[4, 5], &[1], 5), 0.0);
        assert_eq!(recall_at_k(&[1], &[], 5), 0.0);
    }

    #[test]
    fn nearest_leaves_the_query_out_and_ranks_by_cosine() {
        let v: Vec<Vec<f32>> = [[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.7, 0.7]]
            .iter()
            .map(|x| normalise(x.to_vec()))
            .collect();
        assert_eq!(nearest(&v, 0, 10), vec![1, 3, 2]);
        assert_eq!(nearest(&v, 2, 1), vec![3]);
    }

    #[test]
    fn raw_baseline_on_two_clusters() {
        let v: Vec<Vec<f32>> = [[1.0, 0.0], [0.9, 0.1], [0.95, 0.05], [0.0, 1.0], [0.1, 0.9]]
            .iter()
            .map(|x| normalise(x.to_vec()))
            .collect();
        let labels = ["a", "a", "a", "b", "b"];
        let s = siblings(&[Some("p"), Some("p"), None, None, None]);
        let r = raw_baseline(&v, &labels, &s);
        assert_eq!(r.p1, Some(1.0));
        // "a" items: 2 of 4 neighbours right; "b" items: 1 of 4.
        assert!((r.p10.unwrap() - (3.0 * 0.5 + 2.0 * 0.25) / 5.0).abs() < 1e-12);
        assert_eq!(r.recall5, Some(1.0));
    }

    #[test]
    fn siblings_are_other_views_of_the_same_product() {
        assert_eq!(
            siblings(&[Some("x"), None, Some("x"), Some("y")]),
            vec![vec![2], vec![], vec![0], vec![]]
        );
    }
}

/// `--cold-start`: how often the ImageNet prior alone puts an image in the right category.
async fn cold_start(
    api: &Api,
    name: &str,
    samples: &[Sample],
    map_path: &Path,
    json_out: bool,
) -> Result<u8> {
    let text = std::fs::read_to_string(map_path)
        .with_context(|| format!("reading {}", map_path.display()))?;
    let map: BTreeMap<String, String> = serde_json::from_str(&text).with_context(|| {
        format!(
            "{} is not a {{folder: category}} object",
            map_path.display()
        )
    })?;
    let samples: Vec<Sample> = samples
        .iter()
        .filter(|s| map.contains_key(&s.category))
        .cloned()
        .collect();
    if samples.is_empty() {
        bail!("no image folder is named in {}", map_path.display());
    }
    let job_ids = api.upload(name, &samples, false).await?;
    let outcomes = api.wait_jobs(&job_ids).await?;
    let mut per_category: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    let (mut right, mut predicted, mut failed) = (0usize, 0usize, 0usize);
    for (sample, outcome) in samples.iter().zip(outcomes) {
        let Ok(item_id) = outcome else {
            failed += 1;
            continue;
        };
        let item = api.api.get(&format!("/v1/items/{item_id}")).await?;
        let truth = map[&sample.category].as_str();
        let entry = per_category.entry(truth).or_default();
        entry.1 += 1;
        if !item["category"].is_null() {
            predicted += 1;
        }
        if item["category"] == truth {
            right += 1;
            entry.0 += 1;
        }
    }
    let ingested = samples.len() - failed;
    let ratio = |a: usize, b: usize| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    let report = json!({
        "folder": name,
        "mode": "cold_start",
        "images": ingested,
        "ingest_failures": failed,
        "accuracy": ratio(right, ingested),
        "with_a_prediction": ratio(predicted, ingested),
        "per_category": per_category.iter()
            .map(|(c, (r, n))| (c.to_string(), json!({"images": n, "accuracy": ratio(*r, *n)})))
            .collect::<serde_json::Map<_, _>>(),
    });
    if json_out {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "cold start on {name}: {} images, accuracy {:.3}, {:.3} with a prediction",
            ingested,
            ratio(right, ingested),
            ratio(predicted, ingested)
        );
        println!("| category | images | accuracy |\n|---|---|---|");
        for (c, (r, n)) in &per_category {
            println!("| {c} | {n} | {:.3} |", ratio(*r, *n));
        }
    }
    Ok(if failed > 0 { 1 } else { 0 })
}
