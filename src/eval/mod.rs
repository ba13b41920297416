//! `lookalike eval FOLDER`: measures classification and search quality on a labelled folder
//! (`FOLDER/<category>/<image>`) against a running service, in a way that cannot flatter it.
//!
//! The images are split into k folds (grouped by product with `FOLDER/products.json`, so no view of a
//! product is learnt while its sibling is tested; spread evenly over each category).
//! 1. Every fold but the first is uploaded with its categories (`external_id` =
//!    `eval:<folder>/<relative path>`); the service trains its head on them (`POST
//!    /v1/classifier/train`), and each image of the first fold is searched by upload (category auto)
//!    before it is in the catalogue: the service end to end on images it has not seen.
//! 2. The first fold is uploaded too; every image's stored vector is fetched once.
//! 3. Raw baseline (the method of MODELS.md): leave-one-out cosine kNN over the eval items' vectors:
//!    P@1, P@10, 5-NN majority accuracy, same-item recall@5.
//! 4. Retrieval through the service over all categories (`category=any`, `exclude=<its item id>`):
//!    P@1, P@10 and same-item recall@5 that do not restate the classification.
//! 5. Classification, k-fold, in process: each fold classified by the service's own classifier code
//!    (`lookalike_classifier::decide`, the head trained by `fit`) on the vectors the service made,
//!    with the settings it reports; the service's mixture, the vote alone and the head alone under the
//!    same folds, and the first fold compared with the service's own answers. `--curve` adds accuracy
//!    by labels per category; `--tune` chooses the settings on a development folder.
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

mod cache;
mod crossval;
mod folds;
mod tune;
use crate::folder::file_name;
use crate::progress::Progress;

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
    /// Cross-validation folds (grouped by product when the folder has products.json).
    #[arg(long, default_value_t = 5)]
    pub folds: usize,
    /// Also measure how accuracy grows with the labels per category (vote, head, both), to see
    /// where the head overtakes the vote.
    #[arg(long)]
    pub curve: bool,
    /// Choose the classifier settings on this folder (a development set, never one whose figures
    /// are reported) and write them to this JSON file.
    #[arg(long, value_name = "OUT.json")]
    pub tune: Option<PathBuf>,
    /// After the run, keep the vectors the service made (with the images' hashes and the model id)
    /// in this file, for `--from-vectors`.
    #[arg(long, value_name = "FILE")]
    pub save_vectors: Option<PathBuf>,
    /// Embed nothing and call no service: run the cross-validation (and `--curve`, `--tune`) in
    /// process on the vectors a `--save-vectors` run kept, with the classifier settings of the
    /// local configuration (`lookalike config`). Refused when the images or the model changed.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["save_vectors", "cold_start"])]
    pub from_vectors: Option<PathBuf>,
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
    if let Some(file) = &args.from_vectors {
        return from_vectors(&args, &name, &samples, file, started);
    }
    let api = Api::new(&args.api, args.concurrency)?;
    api.check_ready().await?;
    if let Some(map) = &args.cold_start {
        return cold_start(&api, &name, &samples, map, args.json).await;
    }

    let settings = api.classifier_settings().await?;
    let (folds_k, fold_of) = fold_plan(&samples, args.folds);

    // 1. Ingest every fold but the first, labelled; train the head on them as a worker would; then
    //    search with each image of the first fold, end to end, before it is in the catalogue.
    let t = Instant::now();
    let (first, rest): (Vec<usize>, Vec<usize>) =
        (0..samples.len()).partition(|i| fold_of[*i] == 0);
    let pick = |ix: &[usize]| {
        ix.iter()
            .map(|i| samples[*i].clone())
            .collect::<Vec<Sample>>()
    };
    let mut job_ids = vec![String::new(); samples.len()];
    let mut outcomes: Vec<Option<Result<String, String>>> = vec![None; samples.len()];
    let rest_ids = api.upload_all(&name, &pick(&rest)).await?;
    for (i, id) in rest.iter().zip(&rest_ids) {
        job_ids[*i] = id.clone();
    }
    for (i, out) in rest.iter().zip(api.wait_jobs(&rest_ids).await?) {
        outcomes[*i] = Some(out);
    }
    let head = api.train_head().await?;
    let t_e2e = Instant::now();
    let end_to_end: Vec<Result<(Answer, f64)>> = api
        .search_all(
            &first.iter().map(|i| &samples[*i]).collect::<Vec<_>>(),
            None,
            "auto",
        )
        .await;
    let e2e_secs = t_e2e.elapsed().as_secs_f64();
    let first_ids = api.upload_all(&name, &pick(&first)).await?;
    for (i, id) in first.iter().zip(&first_ids) {
        job_ids[*i] = id.clone();
    }
    for (ix, out) in first.iter().zip(api.wait_jobs(&first_ids).await?) {
        outcomes[*ix] = Some(out);
    }
    let ingest_secs = t.elapsed().as_secs_f64() - e2e_secs;
    let mut failures = Vec::new();
    let mut ok = Vec::new(); // (sample index, item id)
    for (i, outcome) in outcomes.into_iter().enumerate() {
        match outcome.expect("every sample was submitted") {
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
    let kept: Vec<usize> = ok.iter().map(|(i, _)| *i).collect();
    let e2e_by_sample: HashMap<usize, &Result<(Answer, f64)>> =
        first.iter().copied().zip(end_to_end.iter()).collect();
    let fold_of: Vec<usize> = kept.iter().map(|i| fold_of[*i]).collect();
    let samples: Vec<&Sample> = kept.iter().map(|i| &samples[*i]).collect();
    let item_ids: Vec<String> = ok.into_iter().map(|(_, id)| id).collect();

    // 2. Raw baseline.
    let t = Instant::now();
    let (vectors, features) = api.vectors(&item_ids).await?;
    let figures = Figures::of(&samples, &vectors);
    let (labels, siblings) = (&figures.labels, &figures.siblings);
    let vector_secs = t.elapsed().as_secs_f64();

    // 3. Retrieval through the service, over all categories (`category=any`), each image searched
    //    with itself excluded: figures that do not restate the classification.
    let t = Instant::now();
    let answers = api.search_all(&samples, Some(&item_ids), "any").await;
    let search_secs = t.elapsed().as_secs_f64();
    let index_of: HashMap<&str, usize> = item_ids
        .iter()
        .enumerate()
        .map(|(i, id)| (id.as_str(), i))
        .collect();
    let mut search_errors = Vec::new();
    let mut retrieval = SystemScores::default();
    for (i, answer) in answers.iter().enumerate() {
        match answer {
            Ok(a) => retrieval.add(a, labels[i], &siblings[i], &index_of),
            Err(e) => search_errors.push(json!({"file": samples[i].rel, "error": e.to_string()})),
        }
    }
    // The first fold, end to end (classified and searched by the service, category auto).
    let mut e2e = SystemScores::default();
    let mut e2e_predictions: HashMap<usize, Option<String>> = HashMap::new();
    for (i, (kept_index, s)) in kept.iter().zip(&samples).enumerate() {
        let Some(answer) = e2e_by_sample.get(kept_index) else {
            continue;
        };
        match answer {
            Ok(a) => {
                e2e.add(a, labels[i], &siblings[i], &index_of);
                e2e_predictions.insert(i, a.0.top.first().cloned());
            }
            Err(e) => search_errors.push(json!({"file": s.rel, "error": e.to_string()})),
        }
    }
    for e in &search_errors {
        eprintln!("search failed: {} : {}", e["file"], e["error"]);
    }

    // 4. Cross-validation in process, through the service's classifier code.
    let t = Instant::now();
    let data = folds::Data {
        vectors: &vectors,
        features: features.as_deref(),
        labels,
        ids: &item_ids,
        folds: &fold_of,
        k: folds_k,
    };
    let (cv, tuned) = in_process(&args, &data, &settings)?;
    let agreement = crossval::agreement(&cv, &e2e_predictions);
    let cv_secs = t.elapsed().as_secs_f64();
    if let Some(path) = &args.save_vectors {
        cache::save(
            path,
            &api.model_id().await?,
            &name,
            &samples,
            &item_ids,
            &vectors,
            features.as_deref(),
        )?;
        eprintln!("vectors kept in {}", path.display());
    }
    let searched = answers.len() - answers.iter().filter(|a| a.is_err()).count();
    let mut report = figures.report(&name, &settings, folds_k, &cv, tuned);
    report.extend(
        json!({
            "api": args.api.api,
            "ingest_failures": failures,
            "search_errors": search_errors,
            "end_to_end": {
                "fold": 0,
                "images": e2e.top1.len(),
                "head": head,
                "accuracy_top1": mean(&e2e.top1), "accuracy_top3": mean(&e2e.top3),
                "p_at_1": mean(&e2e.p1), "p_at_10": mean(&e2e.p10),
                "widened": mean(&e2e.widened),
                "ece": (!e2e.calibration.is_empty()).then(|| expected_calibration_error(&e2e.calibration, ECE_BINS)),
                "no_prediction": e2e.no_prediction,
                "agreement_with_in_process": agreement,
                "search_mean_ms": mean(&e2e.latency_ms),
            },
            "retrieval_any_category": {
                "searches": searched,
                "p_at_1": mean(&retrieval.p1), "p_at_10": mean(&retrieval.p10),
                "same_item_recall_at_5": if figures.has_products { mean(&retrieval.recall5) } else { None },
            },
            "timing": {
                "ingest_secs": ingest_secs, "ingest_per_sec": job_ids.len() as f64 / ingest_secs,
                "vectors_secs": vector_secs, "search_secs": search_secs,
                "search_mean_ms": mean(&retrieval.latency_ms),
                "end_to_end_secs": e2e_secs,
                "cross_validation_secs": cv_secs,
                "concurrency": args.concurrency,
                "total_secs": started.elapsed().as_secs_f64(),
            },
        })
        .as_object()
        .cloned()
        .expect("an object"),
    );
    let report = Value::Object(report);
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

/// The cross-validation (and the tuning, when asked) in process, through the service's classifier code.
fn in_process(
    args: &EvalArgs,
    data: &folds::Data,
    settings: &folds::Classifier,
) -> Result<(crossval::CrossVal, Option<Value>)> {
    let cv = crossval::run(data, settings, args.curve);
    let tuned = match &args.tune {
        Some(path) => {
            let t = tune::tune(data, settings);
            std::fs::write(path, serde_json::to_string_pretty(&t)? + "\n")
                .with_context(|| path.display().to_string())?;
            eprintln!("tuned settings written to {}", path.display());
            Some(t)
        }
        None => None,
    };
    Ok((cv, tuned))
}

fn per_category<'a>(labels: &[&'a str]) -> BTreeMap<&'a str, usize> {
    let mut counts = BTreeMap::new();
    for l in labels {
        *counts.entry(*l).or_default() += 1;
    }
    counts
}

/// `--from-vectors`: the classification figures (and tuning) from kept vectors, no service involved.
fn from_vectors(
    args: &EvalArgs,
    name: &str,
    samples: &[Sample],
    file: &Path,
    started: Instant,
) -> Result<u8> {
    let config = lookalike_core::Config::load()?;
    let settings = folds::Classifier::from_config(&config.classify);
    // The id the service gives the model depends on whether it decodes JPEGs in draft, which
    // `reduced_decode = "auto"` settles per catalogue: either is this configuration's model.
    let model_ids: Vec<String> = [false, true]
        .into_iter()
        .map(|has_full_decode_items| {
            let mut m = config.model.clone();
            m.resolve_decode(has_full_decode_items);
            m.id
        })
        .collect();
    let cache::Loaded {
        item_ids,
        vectors,
        features,
    } = cache::load(file, &model_ids, samples)?;
    if features.is_none() && !config.model.features_output.is_empty() {
        bail!(
            "{} holds no features, but the service's head learns from them (model.features_output = {:?}): run the eval against the service with --save-vectors again",
            file.display(),
            config.model.features_output
        );
    }
    let (folds_k, fold_of) = fold_plan(samples, args.folds);
    let samples: Vec<&Sample> = samples.iter().collect();
    let figures = Figures::of(&samples, &vectors);
    let t = Instant::now();
    let data = folds::Data {
        vectors: &vectors,
        features: features.as_deref(),
        labels: &figures.labels,
        ids: &item_ids,
        folds: &fold_of,
        k: folds_k,
    };
    let (cv, tuned) = in_process(args, &data, &settings)?;
    let mut report = figures.report(name, &settings, folds_k, &cv, tuned);
    report.insert("vectors_from".into(), json!(file.display().to_string()));
    report.insert("model".into(), json!(model_ids));
    report.insert(
        "timing".into(),
        json!({
            "cross_validation_secs": t.elapsed().as_secs_f64(),
            "total_secs": started.elapsed().as_secs_f64(),
        }),
    );
    let report = Value::Object(report);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", markdown(&report));
    }
    Ok(crate::client::EXIT_OK)
}

/// The folds (their number and each sample's fold): every view of one product in the same fold,
/// each category spread over all folds.
fn fold_plan(samples: &[Sample], folds: usize) -> (usize, Vec<usize>) {
    let k = folds.clamp(2, samples.len().max(2));
    let labels: Vec<&str> = samples.iter().map(|s| s.category.as_str()).collect();
    let group_keys: Vec<&str> = samples
        .iter()
        .map(|s| s.product.as_deref().unwrap_or(&s.rel))
        .collect();
    (k, folds::assign_folds(&labels, &group_keys, k))
}

/// What both kinds of run (through the service, or from kept vectors) derive from the evaluated
/// images and their vectors, and report the same way.
struct Figures<'a> {
    labels: Vec<&'a str>,
    siblings: Vec<Vec<usize>>,
    has_products: bool,
    raw: RawScores,
}

impl<'a> Figures<'a> {
    fn of(samples: &[&'a Sample], vectors: &[Vec<f32>]) -> Self {
        let labels: Vec<&str> = samples.iter().map(|s| s.category.as_str()).collect();
        let products: Vec<Option<&str>> = samples.iter().map(|s| s.product.as_deref()).collect();
        let siblings = siblings(&products);
        let raw = raw_baseline(vectors, &labels, &siblings);
        Figures {
            labels,
            has_products: products.iter().any(Option::is_some),
            siblings,
            raw,
        }
    }

    /// The report's common block: the set, the settings, the raw baseline and the classification.
    fn report(
        &self,
        name: &str,
        settings: &folds::Classifier,
        folds_k: usize,
        cv: &crossval::CrossVal,
        tuned: Option<Value>,
    ) -> serde_json::Map<String, Value> {
        let raw = &self.raw;
        let has_products = self.has_products;
        json!({
            "folder": name,
            "items": self.labels.len(),
            "categories": per_category(&self.labels),
            "same_item_queries": has_products.then(|| self.siblings.iter().filter(|s| !s.is_empty()).count()),
            "settings": settings.json(),
            "folds": folds_k,
            "grouped_by_product": has_products,
            "raw": {
                "p_at_1": raw.p1, "p_at_10": raw.p10, "knn5_accuracy": raw.knn5,
                "same_item_recall_at_5": if has_products { raw.recall5 } else { None },
            },
            "classification": cv.json(),
            "tuned": tuned,
        })
        .as_object()
        .cloned()
        .expect("an object")
    }
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
    async fn vectors(&self, item_ids: &[String]) -> Result<(Vec<Vec<f32>>, Option<Vec<Vec<f32>>>)> {
        let both: Vec<(Vec<f32>, Option<Vec<f32>>)> =
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
                let f: Option<Vec<f32>> = serde_json::from_value(item["features"].clone())
                    .with_context(|| format!("item {id}: features"))?;
                Ok::<_, anyhow::Error>((normalise(v), f))
            }))
            .buffered(self.concurrency)
            .try_collect()
            .await?;
        let (vectors, features): (Vec<_>, Vec<_>) = both.into_iter().unzip();
        Ok((vectors, features.into_iter().collect()))
    }

    /// The service's `model.id` (`/v1/status`).
    async fn model_id(&self) -> Result<String> {
        let status = self
            .json(self.api.http().get(self.api.url("/v1/status")))
            .await?;
        status["model"]["id"]
            .as_str()
            .map(str::to_string)
            .context("/v1/status names no model")
    }

    /// The service's classifier settings (`/v1/status`), to run the folds as it classifies.
    async fn classifier_settings(&self) -> Result<folds::Classifier> {
        let status = self
            .json(self.api.http().get(self.api.url("/v1/status")))
            .await?;
        folds::Classifier::from_status(&status["classifier"]["settings"]).with_context(|| {
            format!(
                "{} reports no classifier settings (an older service?)",
                self.api.url("/v1/status")
            )
        })
    }

    /// Asks the service to train its classifier head now; `None` when it has too few labels or the
    /// head is off. Waits while another process is training.
    async fn train_head(&self) -> Result<Option<Value>> {
        for _ in 0..120 {
            let response = self
                .api
                .send(self.api.http().post(self.api.url("/v1/classifier/train")))
                .await?;
            match response.0.as_u16() {
                200 => return Ok(Some(response.1)),
                422 => return Ok(None),
                409 if response.1["error"]["code"] == "head_disabled" => return Ok(None),
                409 => tokio::time::sleep(Duration::from_millis(500)).await,
                s => bail!("training the classifier head answered {s}: {}", response.1),
            }
        }
        bail!("the classifier head stayed busy training for a minute")
    }

    /// One search per sample (with its item excluded when `exclude` gives the ids), with progress on
    /// stderr.
    async fn search_all(
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

    async fn search(
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
    let (cls, e2e, any, raw, t) = (
        &r["classification"],
        &r["end_to_end"],
        &r["retrieval_any_category"],
        &r["raw"],
        &r["timing"],
    );
    let mut out = format!(
        "### lookalike eval: {} ({} images, {} categories, {})\n\n",
        r["folder"].as_str().unwrap_or(""),
        r["items"],
        r["categories"].as_object().map_or(0, |c| c.len()),
        r["api"].as_str().unwrap_or(""),
    );
    out += &format!(
        "Classification, {}-fold cross-validation{} (each image classified by what the other folds taught):\n\n\
         | metric | lookalike (head + vote) | vote only | head only |\n|---|---|---|---|\n",
        r["folds"],
        if r["grouped_by_product"].as_bool() == Some(true) {
            ", folds grouped by product"
        } else {
            ""
        },
    );
    let (l, v, h) = (&cls["lookalike"], &cls["vote"], &cls["head"]);
    for (name, key) in [
        ("category accuracy, top-1", "accuracy_top1"),
        ("category accuracy, top-3", "accuracy_top3"),
        ("errors", "errors"),
        ("calibration error (ECE, 10 bins)", "ece"),
        ("log-loss", "nll"),
        (
            "P@10 in the predicted categories (restates accuracy)",
            "p_at_10_in_category",
        ),
        (
            "right-category share of the top 10 when the prediction is wrong",
            "right_category_share_when_wrong",
        ),
    ] {
        let g = |x: &Value| {
            if key == "errors" {
                x[key].as_u64().map_or("–".into(), |n| n.to_string())
            } else {
                f(&x[key])
            }
        };
        out += &format!("| {name} | {} | {} | {} |\n", g(l), g(v), g(h));
    }
    if any.is_null() {
        out += &format!(
            "\nRaw embeddings (exact, leave-one-out): P@1 {}, P@10 {}, 5-NN accuracy {} (vectors from {}; no service was asked)\n",
            f(&raw["p_at_1"]),
            f(&raw["p_at_10"]),
            f(&raw["knn5_accuracy"]),
            r["vectors_from"].as_str().unwrap_or("?"),
        );
    } else {
        out += &format!(
            "\nRetrieval over all categories (`category=any`, each image searched with itself excluded):\n\n\
             | metric | raw embeddings (exact) | lookalike |\n|---|---|---|\n\
             | P@1 | {} | {} |\n| P@10 | {} | {} |\n",
            f(&raw["p_at_1"]),
            f(&any["p_at_1"]),
            f(&raw["p_at_10"]),
            f(&any["p_at_10"]),
        );
        if let Some(n) = r["same_item_queries"].as_u64() {
            out += &format!(
                "| same-item recall@5 ({n} views with siblings) | {} | {} |\n",
                f(&raw["same_item_recall_at_5"]),
                f(&any["same_item_recall_at_5"])
            );
        }
        out += &format!(
            "\nEnd to end, fold 1 ({} images searched by upload before they were ingested, head trained on the other folds): \
             top-1 {}, P@10 {}, searches widened {}, same prediction as in process {}\n",
            e2e["images"],
            f(&e2e["accuracy_top1"]),
            f(&e2e["p_at_10"]),
            f(&e2e["widened"]),
            f(&e2e["agreement_with_in_process"]["share"]),
        );
    }
    if let Some(curve) = cls["learning_curve"].as_array() {
        out += "\nLearning curve (top-1 by labels per category):\n\n| labels per category | vote | head | lookalike |\n|---|---|---|---|\n";
        for p in curve {
            out += &format!(
                "| {} | {} | {} | {} |\n",
                p["labels_per_category"],
                f(&p["vote"]),
                f(&p["head"]),
                f(&p["lookalike"])
            );
        }
    }
    let cats: Vec<String> = r["categories"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(c, n)| format!("{c} {n}"))
        .collect();
    out += &format!(
        "\ncounts: {} images evaluated, {} failed to ingest, {} search errors; per category: {}\n",
        r["items"],
        r["ingest_failures"].as_array().map_or(0, Vec::len),
        r["search_errors"].as_array().map_or(0, Vec::len),
        cats.join(", "),
    );
    if let Some(ms) = cls["head_training_ms_per_10k_items"].as_f64() {
        out += &format!(
            "head training: {:.0} ms per 10,000 labelled items (both rounds)\n",
            ms
        );
    }
    let secs = |key: &str| t[key].as_f64().unwrap_or(0.0);
    out += &if t["ingest_secs"].is_null() {
        format!(
            "timing: cross-validation {:.1} s, total {:.1} s\n",
            secs("cross_validation_secs"),
            secs("total_secs"),
        )
    } else {
        format!(
            "timing: ingest {:.1} s ({:.1} images/s), vectors {:.1} s, searches {:.1} s (mean {:.0} ms each, {} in flight), \
             cross-validation {:.1} s, total {:.1} s\n",
            secs("ingest_secs"),
            secs("ingest_per_sec"),
            secs("vectors_secs"),
            secs("search_secs"),
            secs("search_mean_ms"),
            t["concurrency"],
            secs("cross_validation_secs"),
            secs("total_secs"),
        )
    };
    out
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

#[cfg(test)]
mod tests {
    use super::*;

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
