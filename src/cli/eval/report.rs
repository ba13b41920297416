//! The report as Markdown (the JSON report is the value it is made from).

use super::*;

pub(super) fn markdown(r: &Value) -> String {
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
