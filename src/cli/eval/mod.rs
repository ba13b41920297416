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

use crate::cli::client::JobEnd;

mod alter;
mod cache;
mod cold_start;
mod crossval;
mod duplicates;
mod folds;
mod metrics;
mod products;
mod report;
mod service;
mod tune;

use crate::cli::folder::file_name;
use crate::cli::progress::Progress;
use cold_start::cold_start;
use metrics::*;
use report::markdown;
use service::Api;

pub const AFTER_HELP: &str = "\
Examples:
  lookalike eval .lookalike/datasets/vendure          # against a fresh, empty instance
  lookalike eval .lookalike/datasets/fashion-mnist --limit-per-category 50 --json

Exit codes: 0 all good; 1 some images failed to ingest or some searches failed; 2 usage error, or the
service could not be reached or refused the request (the key needs the read and write scopes).";

#[derive(clap::Args, Debug)]
pub struct EvalArgs {
    /// Labelled folder: FOLDER/<category>/<image files>; an optional FOLDER/products.json maps each
    /// relative path to a product id (several views of one product).
    pub folder: PathBuf,
    /// The running service (ideally a fresh one: its catalogue takes part); the key needs the `read`
    /// and `write` scopes (eval uploads, then searches).
    #[command(flatten)]
    pub api: crate::cli::client::ApiArgs,
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
    /// Measure the near-duplicate detector instead: upload every image, then six altered copies of
    /// each (crop, shrink, pad, tone, mirror, JPEG), and report per alteration how many copies would
    /// be grouped with their original, and how many distinct images would be grouped together, over a
    /// grid of `dedupe.threshold` values and at the service's own (README "Near-duplicates").
    #[arg(long, conflicts_with_all = ["cold_start", "from_vectors", "save_vectors", "tune", "curve"])]
    pub duplicates: bool,
    /// With `--duplicates`: the seed the alterations' parameters are drawn from.
    #[arg(long, default_value_t = 7, requires = "duplicates")]
    pub seed: u64,
    /// With `--duplicates`: alter only every Nth image (all are uploaded as originals, so the
    /// false-duplicate rate still counts every one): a large set measured in less time.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..), requires = "duplicates")]
    pub alter_every: u64,
    /// With `--duplicates`: choose `dedupe.threshold` on this folder (a development set, never one
    /// whose figures are reported) and write it to this JSON file.
    #[arg(long, value_name = "OUT.json", requires = "duplicates")]
    pub tune_duplicates: Option<PathBuf>,
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
    if args.duplicates {
        return duplicates::run(&args, &api, &name, &samples).await;
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
    // The trained head as the service wrote it (its accuracy an f32's short decimal).
    let head = crate::cli::client::to_value(&head)?;
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
                // One result per image: near-duplicate groups are not collapsed (`collapse=false`).
                "collapse": false,
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
        return Ok(crate::cli::client::EXIT_FAILED);
    }
    Ok(crate::cli::client::EXIT_OK)
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
    Ok(crate::cli::client::EXIT_OK)
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
    /// How a multi-view product's images make one query (`products::product_queries`).
    product_queries: Option<Value>,
}

impl<'a> Figures<'a> {
    fn of(samples: &[&'a Sample], vectors: &[Vec<f32>]) -> Self {
        let labels: Vec<&str> = samples.iter().map(|s| s.category.as_str()).collect();
        let products: Vec<Option<&str>> = samples.iter().map(|s| s.product.as_deref()).collect();
        let siblings = siblings(&products);
        let raw = raw_baseline(vectors, &labels, &siblings);
        Figures {
            product_queries: products::product_queries(vectors, &labels, &products),
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
            "product_queries": self.product_queries,
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
    Ok(crate::cli::folder::walk(folder, limit)?
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
