//! `lookalike eval` against the real service, on a tiny labelled folder made from the reference images.

mod support;

use std::process::Command;

use serde_json::Value;
use support::*;

/// shoes: two sneaker pictures twice each; cups: the coffee cup x3; cats: Chelsea x3.
fn labelled_folder() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let copies: &[(&str, &str, &[&str])] = &[
        (
            "shoes",
            "allstar-sneakers.jpg",
            &["allstar-a.jpg", "allstar-b.jpg"],
        ),
        (
            "shoes",
            "sneakers_01__1.png",
            &["sneaker-a.png", "sneaker-b.png"],
        ),
        (
            "cups",
            "skimage_coffee.png",
            &["cup-a.png", "cup-b.png", "cup-c.png"],
        ),
        (
            "cats",
            "skimage_chelsea.png",
            &["cat-a.png", "cat-b.png", "cat-c.png"],
        ),
    ];
    for (category, source, names) in copies {
        let folder = dir.path().join(category);
        std::fs::create_dir_all(&folder).unwrap();
        for name in *names {
            std::fs::copy(reference_dir().join(source), folder.join(name)).unwrap();
        }
    }
    // Not an image: skipped.
    std::fs::write(dir.path().join("cups/notes.txt"), "not an image").unwrap();
    dir
}

/// The same folder, with each picture's copies declared as views of one product.
fn labelled_products() -> tempfile::TempDir {
    let dir = labelled_folder();
    let products = serde_json::json!({
        "shoes/allstar-a.jpg": "allstar", "shoes/allstar-b.jpg": "allstar",
        "shoes/sneaker-a.png": "sneaker", "shoes/sneaker-b.png": "sneaker",
        "cups/cup-a.png": "cup", "cups/cup-b.png": "cup", "cups/cup-c.png": "cup",
        "cats/cat-a.png": "cat", "cats/cat-b.png": "cat", "cats/cat-c.png": "cat",
    });
    std::fs::write(dir.path().join("products.json"), products.to_string()).unwrap();
    dir
}

/// Equal reports, numbers equal up to float rounding: the classifier sums f32 vectors, and the
/// order of a sum may differ between two runs on the same vectors (the last digits of an ECE or
/// log-loss move by ~1e-8); counts and every other value must match exactly.
fn same_figures(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
            (x - y).abs() <= 1e-6 * x.abs().max(y.abs()).max(1.0)
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| same_figures(v, w)))
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(v, w)| same_figures(v, w))
        }
        _ => a == b,
    }
}

fn run_eval(service: &Service, folder: &std::path::Path, extra: &[&str]) -> (Value, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_lookalike"))
        .arg("eval")
        .arg(folder)
        .args(["--api", &service.base, "--json", "--concurrency", "2"])
        .args(extra)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "eval failed: {stderr}\nservice log:\n{}",
        service.log()
    );
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
    (report, stderr)
}

#[tokio::test(flavor = "multi_thread")]
async fn eval_reports_perfect_accuracy_on_an_easy_labelled_folder() {
    let env = TestEnv::new().await;
    let service = env.start().await;
    let folder = labelled_folder();
    let (report, stderr) = run_eval(&service, folder.path(), &[]);
    assert!(
        stderr.contains("ingest: 10/10") || stderr.contains("jobs ended"),
        "progress on stderr: {stderr}"
    );
    assert_eq!(report["items"], 10, "{report:#}");
    assert_eq!(report["categories"]["shoes"], 4);
    assert_eq!(report["ingest_failures"].as_array().unwrap().len(), 0);
    assert_eq!(report["same_item_queries"], Value::Null, "no products.json");
    assert_eq!(report["folds"], 5);
    assert_eq!(report["grouped_by_product"], false);
    assert_eq!(report["retrieval_any_category"]["searches"], 10);
    let cls = &report["classification"];
    for side in ["lookalike", "vote"] {
        for m in [
            "accuracy_top1",
            "accuracy_top3",
            "ece",
            "nll",
            "p_at_10_in_category",
        ] {
            let v = cls[side][m]
                .as_f64()
                .unwrap_or_else(|| panic!("classification.{side}.{m} missing: {report:#}"));
            assert!(v >= 0.0, "{side}.{m} = {v}");
        }
        assert_eq!(cls[side]["images"], 10);
    }
    for m in ["p_at_1", "p_at_10", "knn5_accuracy"] {
        let v = report["raw"][m].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&v), "raw.{m} = {v}");
    }
    // Each image has an identical copy in its own category, and copies are separate images here, so
    // a copy is always in another fold: every image is right, and its copy is its nearest neighbour.
    assert_eq!(cls["lookalike"]["accuracy_top1"], 1.0, "{report:#}");
    assert_eq!(report["raw"]["p_at_1"], 1.0, "{report:#}");
    assert_eq!(
        report["retrieval_any_category"]["p_at_1"], 1.0,
        "{report:#}"
    );
    // The first fold went through the service before it was ingested, and the folds in process
    // predicted what the service did.
    let e2e = &report["end_to_end"];
    assert!(e2e["images"].as_u64().unwrap() >= 2, "{report:#}");
    assert_eq!(e2e["agreement_with_in_process"]["share"], 1.0, "{report:#}");
    assert_eq!(e2e["accuracy_top1"], 1.0, "{report:#}");
}

/// With the copies declared as one product, a copy is never in training while its twin is tested: the
/// cats and the cups are each one product, so whichever fold tests them has no label of their category
/// and must get them wrong. An evaluation that let a copy leak into training would report 1.0.
#[tokio::test(flavor = "multi_thread")]
async fn eval_folds_keep_the_views_of_a_product_together() {
    let env = TestEnv::new().await;
    let service = env.start().await;
    let folder = labelled_products();
    let kept = folder.path().join("vectors.json");
    let (report, _) = run_eval(
        &service,
        folder.path(),
        &["--save-vectors", kept.to_str().unwrap()],
    );
    assert_eq!(report["grouped_by_product"], true, "{report:#}");
    assert_eq!(report["same_item_queries"], 10);
    let cls = &report["classification"];
    for side in ["lookalike", "vote"] {
        let errors = cls[side]["errors"].as_u64().unwrap();
        assert!(
            errors >= 6,
            "{side}: cats and cups cannot be learnt from other folds: {report:#}"
        );
    }
    // Retrieval over all categories still finds each view's siblings (they are in the catalogue).
    assert_eq!(
        report["retrieval_any_category"]["same_item_recall_at_5"], 1.0,
        "{report:#}"
    );
    assert_eq!(
        report["end_to_end"]["agreement_with_in_process"]["share"], 1.0,
        "{report:#}"
    );

    // From the kept vectors, without the service (it is stopped): the same folds, the same figures.
    drop(service);
    let from_kept = |extra: &[&str]| {
        env.command("eval")
            .arg(folder.path())
            .args(["--json", "--from-vectors", kept.to_str().unwrap()])
            .args(extra)
            .output()
            .unwrap()
    };
    let out = from_kept(&[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let again: Value = serde_json::from_slice(&out.stdout).unwrap();
    for side in ["lookalike", "vote", "head"] {
        assert!(
            same_figures(&again["classification"][side], &cls[side]),
            "{side} from kept vectors: {again:#}\nlive: {:#}",
            cls[side]
        );
    }
    assert_eq!(again["raw"], report["raw"]);
    // An image changed since: refused, not evaluated with its old vector.
    let image = std::fs::read_dir(folder.path().join("cats"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let mut bytes = std::fs::read(&image).unwrap();
    bytes.push(0);
    std::fs::write(&image, bytes).unwrap();
    let out = from_kept(&[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("changed since"),
        "{stderr}"
    );
}

#[test]
fn eval_fails_clearly_when_the_api_is_unreachable() {
    let folder = labelled_folder();
    let out = Command::new(env!("CARGO_BIN_EXE_lookalike"))
        .arg("eval")
        .arg(folder.path())
        .args(["--api", &format!("http://127.0.0.1:{}", free_port())])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("unreachable"), "{stderr}");
}

/// `--cold-start`: no labels, the ImageNet prior predicts; sneakers are shoes, the cat is in no
/// mapped folder and is left out, the cup folder maps to a category the prior never gives.
#[tokio::test(flavor = "multi_thread")]
async fn cold_start_eval_scores_the_prior_against_a_folder_map() {
    let mut env = TestEnv::new().await;
    env.set(
        "CLASSIFY__CATEGORIES",
        r#"["shoes", "bags", "outerwear", "tops", "cups"]"#,
    )
    .set(
        "CLASSIFY__PRIOR_MODEL",
        asset("models/efficientnet_lite0_imagenet.onnx").display(),
    );
    let service = env.start().await;
    let folder = labelled_folder();
    let map = folder.path().join("map.json");
    std::fs::write(&map, r#"{"shoes": "shoes", "cups": "cups"}"#).unwrap();

    let out = Command::new(env!("CARGO_BIN_EXE_lookalike"))
        .arg("eval")
        .arg(folder.path())
        .args(["--api", &service.base, "--json", "--cold-start"])
        .arg(&map)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
    assert_eq!(report["mode"], "cold_start");
    assert_eq!(
        report["images"], 7,
        "4 shoes and 3 cups; cats unmapped: {report}"
    );
    // sneakers_01 is a shoe to the prior (tests/search.rs); the all-star photo is not always.
    let shoes = report["per_category"]["shoes"]["accuracy"]
        .as_f64()
        .unwrap();
    assert!(shoes >= 0.5, "{report}");
    assert_eq!(
        report["per_category"]["cups"]["accuracy"], 0.0,
        "no ImageNet class maps to cups: {report}"
    );
    let overall = report["accuracy"].as_f64().unwrap();
    assert!((overall - shoes * 4.0 / 7.0).abs() < 1e-9, "{report}");
}

/// `--duplicates` on four distinct photos: six altered copies of each are made and ingested, the
/// figures come from the service's vectors and its own groups, and the threshold is chosen by the rule.
#[tokio::test(flavor = "multi_thread")]
async fn duplicates_eval_groups_altered_copies_and_no_distinct_photos() {
    let env = TestEnv::new().await;
    let service = env.start().await;
    let dir = tempfile::tempdir().unwrap();
    for (category, source) in [
        ("shoes", "allstar-sneakers.jpg"),
        ("shoes", "sneakers_01__1.png"),
        ("cups", "skimage_coffee.png"),
        ("cats", "skimage_chelsea.png"),
    ] {
        std::fs::create_dir_all(dir.path().join(category)).unwrap();
        std::fs::copy(
            reference_dir().join(source),
            dir.path().join(category).join(source),
        )
        .unwrap();
    }
    let tuned = dir.path().join("tuned.json");
    let folder = dir.path().to_path_buf();
    let (report, _) = run_eval(
        &service,
        &folder,
        &["--duplicates", "--tune-duplicates", tuned.to_str().unwrap()],
    );
    assert_eq!(report["mode"], "duplicates");
    assert_eq!(report["originals"], 4, "{report:#}");
    for kind in ["crop", "shrink", "pad", "tone", "mirror", "jpeg"] {
        assert_eq!(report["copies"][kind], 4, "{kind}: {report:#}");
    }
    assert_eq!(report["ingest_failures"].as_array().unwrap().len(), 0);
    let grid = report["grid"].as_array().unwrap();
    assert_eq!(grid.len(), 20);
    let row = |t: f64| {
        grid.iter()
            .find(|r| (r["threshold"].as_f64().unwrap() - t).abs() < 1e-9)
            .unwrap_or_else(|| panic!("no grid row at {t}: {report:#}"))
    };
    // A re-encode or a half-size copy of a photo stays far closer to it than to another photo.
    for kind in ["jpeg", "shrink"] {
        assert_eq!(
            row(0.9)["recall_by_alteration"][kind],
            1.0,
            "{kind}: {report:#}"
        );
    }
    // Four different objects: nothing grouped at the service's threshold (dedupe.threshold, on the
    // grid), by the figures or by the service.
    let service_figures = &report["service"];
    let threshold = service_figures["threshold"].as_f64().unwrap();
    assert_eq!(row(threshold)["false_duplicate_rate"], 0.0, "{report:#}");
    assert_eq!(service_figures["false_duplicate_rate"], 0.0, "{report:#}");
    // The service grouped what its threshold admits: at least the copies the figures say would
    // join their original (a copy may also reach the group through an earlier copy of the same photo).
    let at = row(threshold)["recall"].as_f64().unwrap();
    let grouped = service_figures["recall"].as_f64().unwrap();
    assert!(
        grouped >= at - 1e-9 && grouped > 0.0,
        "service {grouped} vs figures {at}: {report:#}"
    );
    // The choice: the lowest threshold of the grid within the false-duplicate budget.
    let choice: Value = serde_json::from_slice(&std::fs::read(&tuned).unwrap()).unwrap();
    let chosen = choice["chosen"]["threshold"].as_f64().unwrap();
    let first_within = grid
        .iter()
        .find(|r| {
            r["false_duplicate_rate"].as_f64().unwrap() <= 0.005
                && r["wrong_group_rate"].as_f64().unwrap() <= 0.005
        })
        .unwrap();
    assert_eq!(
        chosen,
        first_within["threshold"].as_f64().unwrap(),
        "{choice:#}"
    );
}
