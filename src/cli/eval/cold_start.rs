//! `--cold-start`: the ImageNet prior alone, scored against a folder map.

use super::*;

/// `--cold-start`: how often the ImageNet prior alone puts an image in the right category.
pub(super) async fn cold_start(
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
        let item: lookalike_api_types::Item = api.api.get(&format!("/v1/items/{item_id}")).await?;
        let truth = map[&sample.category].as_str();
        let entry = per_category.entry(truth).or_default();
        entry.1 += 1;
        if item.category.is_some() {
            predicted += 1;
        }
        if item.category.as_deref() == Some(truth) {
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
