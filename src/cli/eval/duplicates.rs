//! `lookalike eval FOLDER --duplicates`: how well the near-duplicate detector (`[dedupe]`) finds
//! another seller's copy of a photo, and how often it groups photos that are not copies.
//!
//! 1. Every photo of the folder is uploaded (the originals: distinct photos).
//! 2. Each (or every Nth, `--alter-every`) is altered six ways ([`Alteration`]: crop, shrink, pad,
//!    tone, mirror, JPEG; fixed seed) and the copies are uploaded after all originals have ended.
//! 3. The vectors the service made are fetched, and for every threshold of a grid:
//!    - *recall* of an alteration: the share of its copies whose nearest original is the photo they
//!      were made from, at or above the threshold (what the ingest rule needs to group them);
//!    - *false-duplicate rate*: the share of originals with another original (not a view of the same
//!      product) at or above the threshold, which would share a group with it;
//!    - *wrong-group rate*: the share of copies whose nearest original is another photo, at or above
//!      the threshold;
//!    - *sibling views* (`products.json`: other views of one product): the share of originals with a
//!      sibling view at or above the threshold, on their own line, not counted as false.
//! 4. The service's own groups at its configured `dedupe.threshold` are read back (`duplicate_group`
//!    of every item) and reported the same way, which checks the in-process figures against the
//!    real ingest path.
//!
//! `--tune-duplicates OUT.json` chooses the threshold on the folder (a development set): the lowest
//! of the grid whose false-duplicate and wrong-group rates are both at most [`FALSE_BUDGET`].

use std::collections::HashSet;

use lookalike_api_types::Item;

use super::alter::{Alteration, Rng, alter, flatten};
use super::service::{Upload, unit_vector};
use super::*;

/// The grid of thresholds every run reports (cosine).
const GRID: std::ops::RangeInclusive<u32> = 80..=99;
/// At most this share of distinct photos may be grouped wrongly at the chosen threshold: one in 200.
pub(super) const FALSE_BUDGET: f64 = 0.005;
/// Uploads are split so no request nears `http.max_body_bytes`.
const UPLOAD_BYTES: usize = 12 << 20;

/// One altered copy of an original.
struct Copy {
    original: usize,
    kind: Alteration,
    params: String,
    bytes: Vec<u8>,
}

/// The scores the figures are made from (cosines of the service's vectors).
#[derive(Debug, Default, Clone)]
pub(super) struct Scores {
    /// Per original: its best score against another original that is not a view of the same product.
    pub(super) distinct_best: Vec<f32>,
    /// Per original with sibling views: its best score against one of them.
    pub(super) sibling_best: Vec<f32>,
    /// Per copy: its alteration, its score against its own original, and its best score against any
    /// other original.
    pub(super) copies: Vec<(Alteration, f32, f32)>,
}

/// The figures at one threshold.
#[derive(Debug, Clone, serde::Serialize)]
pub(super) struct AtThreshold {
    pub(super) threshold: f64,
    pub(super) recall: Option<f64>,
    pub(super) recall_by_alteration: BTreeMap<&'static str, Option<f64>>,
    pub(super) false_duplicate_rate: Option<f64>,
    pub(super) false_duplicates: usize,
    pub(super) wrong_group_rate: Option<f64>,
    pub(super) sibling_grouped_rate: Option<f64>,
}

impl Scores {
    pub(super) fn at(&self, threshold: f32) -> AtThreshold {
        let grouped = |own: f32, other: f32| own >= threshold && own >= other;
        let recall_of = |kind: Option<Alteration>| {
            let hits: Vec<f64> = self
                .copies
                .iter()
                .filter(|(k, _, _)| kind.is_none_or(|kind| *k == kind))
                .map(|&(_, own, other)| flag(grouped(own, other)))
                .collect();
            mean(&hits)
        };
        let false_flags: Vec<f64> = self
            .distinct_best
            .iter()
            .map(|&s| flag(s >= threshold))
            .collect();
        let wrong: Vec<f64> = self
            .copies
            .iter()
            .map(|&(_, own, other)| flag(other >= threshold && other > own))
            .collect();
        let siblings: Vec<f64> = self
            .sibling_best
            .iter()
            .map(|&s| flag(s >= threshold))
            .collect();
        AtThreshold {
            threshold: round3(f64::from(threshold)),
            recall: recall_of(None),
            recall_by_alteration: Alteration::ALL
                .iter()
                .map(|&k| (k.name(), recall_of(Some(k))))
                .collect(),
            false_duplicate_rate: mean(&false_flags),
            false_duplicates: false_flags.iter().filter(|&&f| f > 0.0).count(),
            wrong_group_rate: mean(&wrong),
            sibling_grouped_rate: mean(&siblings),
        }
    }

    pub(super) fn grid(&self) -> Vec<AtThreshold> {
        GRID.map(|t| self.at(t as f32 / 100.0)).collect()
    }
}

/// The lowest threshold of the grid whose false-duplicate and wrong-group rates are both within the
/// budget (recall only falls as the threshold rises, so the lowest is the one that finds the most).
pub(super) fn choose(grid: &[AtThreshold], budget: f64) -> Option<&AtThreshold> {
    grid.iter().find(|row| {
        row.false_duplicate_rate.unwrap_or(0.0) <= budget
            && row.wrong_group_rate.unwrap_or(0.0) <= budget
    })
}

/// The scores from the originals' and the copies' vectors (normalised).
pub(super) fn scores(
    originals: &[Vec<f32>],
    siblings: &[Vec<usize>],
    copies: &[(usize, Alteration, Vec<f32>)],
) -> Scores {
    let dot = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>();
    let mut s = Scores::default();
    for (i, v) in originals.iter().enumerate() {
        let (mut distinct, mut sibling) = (f32::NEG_INFINITY, f32::NEG_INFINITY);
        for (j, w) in originals.iter().enumerate() {
            if i == j {
                continue;
            }
            let c = dot(v, w);
            if siblings[i].contains(&j) {
                sibling = sibling.max(c);
            } else {
                distinct = distinct.max(c);
            }
        }
        if originals.len() > 1 && distinct > f32::NEG_INFINITY {
            s.distinct_best.push(distinct);
        }
        if !siblings[i].is_empty() {
            s.sibling_best.push(sibling);
        }
    }
    for (original, kind, v) in copies {
        let mut other = f32::NEG_INFINITY;
        for (j, w) in originals.iter().enumerate() {
            if j != *original {
                other = other.max(dot(v, w));
            }
        }
        s.copies.push((*kind, dot(v, &originals[*original]), other));
    }
    s
}

/// Median, 10th percentile and minimum of some scores.
fn spread(scores: impl Iterator<Item = f32>) -> Value {
    let mut v: Vec<f32> = scores.collect();
    if v.is_empty() {
        return Value::Null;
    }
    v.sort_by(f32::total_cmp);
    let q = |p: f64| round3(f64::from(v[((v.len() - 1) as f64 * p).round() as usize]));
    json!({"min": q(0.0), "p10": q(0.1), "median": q(0.5), "p90": q(0.9), "p99": q(0.99), "max": q(1.0)})
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

pub(super) async fn run(args: &EvalArgs, api: &Api, name: &str, samples: &[Sample]) -> Result<u8> {
    let started = Instant::now();
    let status: lookalike_api_types::Status = api.api.get("/v1/status").await?;
    let dedupe = status.duplicates;

    // 1. The originals.
    let ids = api.upload_all(name, samples).await?;
    let outcomes = api.wait_jobs(&ids).await?;
    let mut failures = Vec::new();
    let mut originals: Vec<(usize, String)> = Vec::new(); // (sample, item id)
    for (i, (job, outcome)) in ids.iter().zip(outcomes).enumerate() {
        match outcome {
            Ok(item) => originals.push((i, item)),
            Err(why) => failures.push(json!({"file": samples[i].rel, "job_id": job, "error": why})),
        }
    }
    if originals.len() < 2 {
        bail!(
            "only {} originals were ingested: nothing to evaluate",
            originals.len()
        );
    }
    let ingest_secs = started.elapsed().as_secs_f64();

    // 2. The copies, made two at a time off the async threads, uploaded once all are made.
    let t = Instant::now();
    let seed = args.seed;
    let every = args.alter_every.max(1) as usize;
    let altered = originals.iter().enumerate().filter(|(o, _)| o % every == 0);
    let made: Vec<Vec<Copy>> = stream::iter(altered.map(|(o, (i, _))| {
        let s = samples[*i].clone();
        tokio::task::spawn_blocking(move || -> Result<Vec<Copy>> {
            let photo =
                image::open(&s.path).with_context(|| format!("decoding {} to alter it", s.rel))?;
            let photo = flatten(&photo);
            let mut rng = Rng::new(seed, &s.rel);
            Alteration::ALL
                .iter()
                .map(|&kind| {
                    let (bytes, params) = alter(&photo, kind, &mut rng)?;
                    Ok(Copy {
                        original: o,
                        kind,
                        params,
                        bytes,
                    })
                })
                .collect()
        })
    }))
    .buffered(2)
    .map(|joined| joined.context("altering a photo")?)
    .try_collect()
    .await?;
    let copies: Vec<Copy> = made.into_iter().flatten().collect();
    let alter_secs = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let copy_ids = upload_copies(api, name, samples, &originals, &copies).await?;
    let copy_outcomes = api.wait_jobs(&copy_ids).await?;
    let copy_ingest_secs = t.elapsed().as_secs_f64();
    let mut stored_copies = Vec::new(); // (copy index, item id)
    for (c, (job, outcome)) in copy_ids.iter().zip(copy_outcomes).enumerate() {
        let copy = &copies[c];
        match outcome {
            Ok(item) => stored_copies.push((c, item)),
            Err(why) => failures.push(json!({
                "file": samples[originals[copy.original].0].rel,
                "alteration": copy.kind.name(), "params": copy.params, "job_id": job, "error": why,
            })),
        }
    }

    // 3. The figures from the service's vectors, at every threshold of the grid.
    let original_items = api
        .items(
            &originals
                .iter()
                .map(|(_, id)| id.clone())
                .collect::<Vec<_>>(),
        )
        .await?;
    let copy_items = api
        .items(
            &stored_copies
                .iter()
                .map(|(_, id)| id.clone())
                .collect::<Vec<_>>(),
        )
        .await?;
    let original_vectors: Vec<Vec<f32>> = original_items
        .iter()
        .map(unit_vector)
        .collect::<Result<_>>()?;
    let copy_vectors: Vec<(usize, Alteration, Vec<f32>)> = stored_copies
        .iter()
        .zip(&copy_items)
        .map(|((c, _), item)| Ok((copies[*c].original, copies[*c].kind, unit_vector(item)?)))
        .collect::<Result<_>>()?;
    let products: Vec<Option<&str>> = originals
        .iter()
        .map(|(i, _)| samples[*i].product.as_deref())
        .collect();
    let sibling_lists = siblings(&products);
    let scores = scores(&original_vectors, &sibling_lists, &copy_vectors);
    let grid = scores.grid();

    // 4. What the service itself grouped, at its configured threshold.
    let groups: Vec<Option<uuid::Uuid>> =
        original_items.iter().map(|i| i.duplicate_group).collect();
    let service = dedupe.enabled.then(|| {
        service_figures(
            &groups,
            &sibling_lists,
            &copy_items,
            &stored_copies,
            &copies,
            dedupe.threshold,
        )
    });

    let tuned = match &args.tune_duplicates {
        Some(path) => {
            let chosen = choose(&grid, FALSE_BUDGET);
            let t = json!({
                "rule": format!("the lowest threshold of {:.2}..={:.2} whose false-duplicate and wrong-group rates are both at most {FALSE_BUDGET}", *GRID.start() as f64 / 100.0, *GRID.end() as f64 / 100.0),
                "chosen": chosen.map(|row| json!({"threshold": row.threshold})),
                "at_chosen": chosen,
            });
            std::fs::write(path, serde_json::to_string_pretty(&t)? + "\n")
                .with_context(|| path.display().to_string())?;
            eprintln!("chosen dedupe threshold written to {}", path.display());
            Some(t)
        }
        None => None,
    };
    let mut by_kind: BTreeMap<&str, usize> = BTreeMap::new();
    for (k, _, _) in &scores.copies {
        *by_kind.entry(k.name()).or_default() += 1;
    }
    let copy_scores: BTreeMap<&str, Value> = Alteration::ALL
        .iter()
        .map(|&k| {
            (
                k.name(),
                spread(scores.copies.iter().filter(|c| c.0 == k).map(|c| c.1)),
            )
        })
        .collect();
    let report = json!({
        "mode": "duplicates",
        "folder": name,
        "api": args.api.api,
        "model": status.model.id,
        "seed": seed,
        "originals": original_vectors.len(),
        "altered_every": every,
        "copies": by_kind,
        "products": products.iter().any(Option::is_some),
        "copy_scores": copy_scores,
        "distinct_best_scores": spread(scores.distinct_best.iter().copied()),
        "sibling_best_scores": spread(scores.sibling_best.iter().copied()),
        "grid": grid,
        "service": service,
        "tuned": tuned,
        "ingest_failures": failures,
        "timing": {
            "originals_ingest_secs": ingest_secs, "alter_secs": alter_secs,
            "copies_ingest_secs": copy_ingest_secs, "total_secs": started.elapsed().as_secs_f64(),
            "concurrency": args.concurrency,
        },
    });
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", markdown(&report));
    }
    for f in &failures {
        eprintln!("ingest failed: {f}");
    }
    Ok(if failures.is_empty() {
        crate::cli::client::EXIT_OK
    } else {
        crate::cli::client::EXIT_FAILED
    })
}

/// The service's own grouping, read back from the items: a copy found when it shares its original's
/// group; an original falsely grouped when its group holds another original that is not a sibling view.
fn service_figures(
    groups: &[Option<uuid::Uuid>],
    siblings: &[Vec<usize>],
    copy_items: &[Item],
    stored_copies: &[(usize, String)],
    copies: &[Copy],
    threshold: f32,
) -> Value {
    let mut found: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for ((c, _), item) in stored_copies.iter().zip(copy_items) {
        let copy = &copies[*c];
        let hit = item.duplicate_group.is_some() && item.duplicate_group == groups[copy.original];
        found.entry(copy.kind.name()).or_default().push(flag(hit));
    }
    let all: Vec<f64> = found.values().flatten().copied().collect();
    let falsely = |i: usize, sibling: bool| {
        groups[i].is_some()
            && (0..groups.len())
                .any(|j| j != i && groups[j] == groups[i] && siblings[i].contains(&j) == sibling)
    };
    let false_flags: Vec<f64> = (0..groups.len()).map(|i| flag(falsely(i, false))).collect();
    let sibling_flags: Vec<f64> = (0..groups.len())
        .filter(|&i| !siblings[i].is_empty())
        .map(|i| flag(falsely(i, true)))
        .collect();
    let distinct_groups: HashSet<_> = groups.iter().flatten().collect();
    json!({
        "threshold": round3(f64::from(threshold)),
        "recall": mean(&all),
        "recall_by_alteration": found.iter().map(|(k, v)| (*k, mean(v))).collect::<BTreeMap<_, _>>(),
        "false_duplicate_rate": mean(&false_flags),
        "sibling_grouped_rate": mean(&sibling_flags),
        "original_groups": distinct_groups.len(),
    })
}

/// Uploads the copies in batches (at most [`UPLOAD_BATCH`] files and [`UPLOAD_BYTES`] per request),
/// each with its original's category; answers the job ids in copy order.
async fn upload_copies(
    api: &Api,
    folder: &str,
    samples: &[Sample],
    originals: &[(usize, String)],
    copies: &[Copy],
) -> Result<Vec<String>> {
    let mut batches: Vec<&[Copy]> = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, c) in copies.iter().enumerate() {
        if i > start && (i - start == UPLOAD_BATCH || bytes + c.bytes.len() > UPLOAD_BYTES) {
            batches.push(&copies[start..i]);
            (start, bytes) = (i, 0);
        }
        bytes += c.bytes.len();
    }
    if start < copies.len() {
        batches.push(&copies[start..]);
    }
    let uploads = stream::iter(batches.into_iter().map(|batch| {
        let batch = batch
            .iter()
            .map(|c| {
                let s = &samples[originals[c.original].0];
                Upload {
                    bytes: c.bytes.clone(),
                    file_name: format!("{}.jpg", c.kind.name()),
                    category: Some(s.category.clone()),
                    external_id: format!("eval-duplicate:{folder}/{}#{}", s.rel, c.kind.name()),
                }
            })
            .collect();
        async move {
            api.post_batch(batch)
                .await
                .context("uploading altered copies")
        }
    }));
    let ids: Vec<Vec<String>> = uploads.buffered(api.concurrency).try_collect().await?;
    Ok(ids.concat())
}

/// The report as Markdown.
fn markdown(r: &Value) -> String {
    let f = |v: &Value| v.as_f64().map_or("–".to_string(), |x| format!("{x:.3}"));
    let mut out = format!(
        "### lookalike eval --duplicates: {} ({} originals, {} copies each way, seed {})\n\n",
        r["folder"].as_str().unwrap_or(""),
        r["originals"],
        r["copies"]["crop"],
        r["seed"],
    );
    out += "| threshold | recall | crop | shrink | pad | tone | mirror | jpeg | false duplicates | wrong group | sibling views grouped |\n|---|---|---|---|---|---|---|---|---|---|---|\n";
    let row = |label: String, x: &Value| {
        let by = &x["recall_by_alteration"];
        format!(
            "| {label} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            f(&x["recall"]),
            f(&by["crop"]),
            f(&by["shrink"]),
            f(&by["pad"]),
            f(&by["tone"]),
            f(&by["mirror"]),
            f(&by["jpeg"]),
            f(&x["false_duplicate_rate"]),
            f(&x["wrong_group_rate"]),
            f(&x["sibling_grouped_rate"]),
        )
    };
    for x in r["grid"].as_array().into_iter().flatten() {
        out += &row(f(&x["threshold"]), x);
    }
    if !r["service"].is_null() {
        out += &row(
            format!("service, {}", f(&r["service"]["threshold"])),
            &r["service"],
        );
    }
    out += "\nRecall: copies whose nearest original is the photo they were made from, at or above the threshold. \
            False duplicates: originals with another, distinct original at or above it.\n";
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(x: f32) -> Vec<f32> {
        vec![x, (1.0 - x * x).max(0.0).sqrt()]
    }

    #[test]
    fn recall_needs_the_own_original_nearest_and_above_the_threshold() {
        let s = Scores {
            distinct_best: vec![0.5, 0.97, 0.5, 0.5],
            sibling_best: vec![0.99],
            copies: vec![
                (Alteration::Crop, 0.98, 0.6),   // found from 0.98 down
                (Alteration::Crop, 0.93, 0.95),  // nearest is another photo: never found
                (Alteration::Mirror, 0.90, 0.2), // found from 0.90 down
            ],
        };
        let at = s.at(0.95);
        assert_eq!(at.recall_by_alteration["crop"], Some(0.5));
        assert_eq!(at.recall_by_alteration["mirror"], Some(0.0));
        assert_eq!(at.recall_by_alteration["pad"], None);
        assert_eq!(at.false_duplicate_rate, Some(0.25));
        assert_eq!(at.false_duplicates, 1);
        assert_eq!(at.wrong_group_rate, Some(1.0 / 3.0));
        assert_eq!(at.sibling_grouped_rate, Some(1.0));
        let at = s.at(0.90);
        assert_eq!(at.recall, Some(2.0 / 3.0));
        let at = s.at(0.99);
        assert_eq!(at.recall, Some(0.0));
        assert_eq!(at.false_duplicate_rate, Some(0.0));
        assert_eq!(at.sibling_grouped_rate, Some(1.0));
    }

    #[test]
    fn the_chosen_threshold_is_the_lowest_within_the_budget() {
        let s = Scores {
            // One original in 100 has a distinct neighbour at 0.895.
            distinct_best: (0..100).map(|i| if i == 0 { 0.895 } else { 0.5 }).collect(),
            sibling_best: vec![],
            copies: vec![(Alteration::Jpeg, 0.99, 0.5)],
        };
        let grid = s.grid();
        assert_eq!(grid.len(), 20);
        // Up to 0.89 it is over: 1 % > 0.5 %; at 0.90 nothing is.
        assert_eq!(choose(&grid, FALSE_BUDGET).unwrap().threshold, 0.9);
        assert_eq!(choose(&grid, 0.02).unwrap().threshold, 0.8);
        let none = Scores {
            distinct_best: vec![1.0],
            ..Default::default()
        };
        assert!(choose(&none.grid(), FALSE_BUDGET).is_none());
    }

    #[test]
    fn scores_leave_sibling_views_out_of_the_false_duplicates() {
        let originals = vec![unit(1.0), unit(0.99), unit(0.0)];
        let siblings = vec![vec![1], vec![0], vec![]];
        let copies = vec![
            (2, Alteration::Pad, unit(0.05)),
            (0, Alteration::Tone, unit(0.999)),
        ];
        let s = scores(&originals, &siblings, &copies);
        assert_eq!(s.sibling_best.len(), 2);
        assert!(s.sibling_best[0] > 0.98);
        // Originals 0 and 1 have only original 2 as a distinct neighbour: far.
        assert!(s.distinct_best.iter().take(2).all(|&x| x < 0.2));
        assert_eq!(s.copies[0].0, Alteration::Pad);
        assert!(s.copies[0].1 > 0.99 && s.copies[0].2 < 0.2);
        // The tone copy of 0 is closest to 0 but nearly as close to its sibling 1.
        assert!(s.copies[1].1 > s.copies[1].2 && s.copies[1].2 > 0.95);
    }
}
