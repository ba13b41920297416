//! `lookalike status`: where the work stands, from `GET /v1/status` and `GET /v1/categories`.

use std::time::Duration;

use anyhow::Result;
use lookalike_api_types::{Categories, CategoryCount, QueueState, Status};
use serde::Serialize;

use crate::cli::client::{Api, ApiArgs, EXIT_OK};

#[derive(clap::Args, Debug)]
pub struct StatusArgs {
    #[command(flatten)]
    pub api: ApiArgs,
    /// Print one JSON object (the /v1/status answer plus `categories` and `uncategorised`).
    #[arg(long)]
    pub json: bool,
}

pub const AFTER_HELP: &str = "\
Examples:
  lookalike status
  lookalike status --json | jq .jobs.failed
  LOOKALIKE_API=https://lookalike.internal LOOKALIKE_API_KEY=lk_… lookalike status

Exit codes: 0 the service answered; 2 usage error, or the service could not be reached or refused
the request (the key needs the read scope).";

/// What `--json` prints: the `/v1/status` answer with the `/v1/categories` one after it.
#[derive(Serialize)]
struct Shown<'a> {
    #[serde(flatten)]
    status: &'a Status,
    categories: &'a [CategoryCount],
    uncategorised: i64,
}

pub async fn run(args: StatusArgs) -> Result<u8> {
    let api = Api::new(&args.api, Duration::from_secs(30), "read")?;
    let (status, categories) = futures::try_join!(
        api.get::<Status>("/v1/status"),
        api.get::<Categories>("/v1/categories")
    )?;
    if args.json {
        let shown = Shown {
            status: &status,
            categories: &categories.categories,
            uncategorised: categories.uncategorised,
        };
        crate::cli::client::print_json(&crate::cli::client::to_value(&shown)?)?;
    } else {
        print!("{}", human(api.base(), &status, &categories));
    }
    Ok(EXIT_OK)
}

fn human(base: &str, s: &Status, categories: &Categories) -> String {
    let mut out = format!(
        "lookalike at {base}: model {} ({} dimensions), index {} with {} points\n",
        s.model.id, s.model.dim, s.index.backend, s.index.points,
    );
    out += &match &s.queue {
        QueueState::Available {
            ready,
            retrying,
            dead,
            consumers,
            ..
        } => format!(
            "queue   {ready} waiting, {retrying} waiting to retry, {dead} dead, {consumers} consumer{}\n",
            if *consumers == 1 { "" } else { "s" }
        ),
        QueueState::Unavailable { error, .. } => format!("queue   unknown: {error}\n"),
    };
    let j = &s.jobs;
    out += &format!(
        "jobs    {} queued, {} processing, {} succeeded, {} failed\n",
        j.queued, j.processing, j.succeeded, j.failed,
    );
    out += &format!(
        "items   {}, {} in {} near-duplicate group{}\n",
        s.items,
        s.duplicates.items_in_groups,
        s.duplicates.groups,
        if s.duplicates.groups == 1 { "" } else { "s" },
    );
    let width = categories
        .categories
        .iter()
        .map(|c| c.name.chars().count())
        .chain([13])
        .max()
        .unwrap_or(13);
    for c in &categories.categories {
        out += &format!(
            "  {:<width$}  {:>6}  ({} labelled)\n",
            c.name, c.items, c.labelled,
        );
    }
    out += &format!(
        "  {:<width$}  {:>6}\n",
        "uncategorised", categories.uncategorised
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn status(queue: serde_json::Value) -> Status {
        serde_json::from_value(json!({
            "jobs": {"queued": 3, "processing": 2, "succeeded": 50, "failed": 1},
            "queue": queue,
            "items": 50,
            "index": {"backend": "qdrant-edge", "points": 50},
            "model": {"id": "clip", "dim": 512},
            "classifier": {
                "head_enabled": true, "labelled_items": 6, "head": null,
                "settings": {
                    "neighbours": 20, "neighbour_temperature": 0.05, "prototype_temperature": 0.05,
                    "prototype_weight": 0.5, "confidence_temperature": 1.0, "head": true,
                    "head_l2": 0.05, "head_shrinkage": 1.0, "head_takeover": 10.0,
                    "head_min_labels": 2, "min_confidence": 0.5, "cover": 0.9, "max_categories": 3,
                },
            },
            "duplicates": {"enabled": true, "threshold": 0.95, "groups": 2, "items_in_groups": 5},
        }))
        .unwrap()
    }

    #[test]
    fn the_human_status_shows_every_count() {
        let s = status(
            json!({"available": true, "ready": 3, "retrying": 1, "dead": 0, "consumers": 1}),
        );
        let categories: Categories = serde_json::from_value(json!({
            "categories": [{"name": "footwear", "items": 6, "labelled": 6}],
            "uncategorised": 44,
        }))
        .unwrap();
        let text = human("http://127.0.0.1:8080", &s, &categories);
        for want in [
            "model clip (512 dimensions), index qdrant-edge with 50 points",
            "queue   3 waiting, 1 waiting to retry, 0 dead, 1 consumer\n",
            "jobs    3 queued, 2 processing, 50 succeeded, 1 failed",
            "items   50, 5 in 2 near-duplicate groups",
            "  footwear            6  (6 labelled)",
            "  uncategorised      44",
        ] {
            assert!(text.contains(want), "{want:?} in\n{text}");
        }
        let away = status(json!({"available": false, "error": "broker down"}));
        assert!(human("x", &away, &categories).contains("queue   unknown: broker down"));
    }

    #[test]
    fn the_json_status_is_the_answer_with_the_categories_after_it() {
        let s = status(json!({"available": false, "error": "broker down"}));
        let categories = [CategoryCount {
            name: "footwear".into(),
            items: 6,
            labelled: 6,
        }];
        let shown = crate::cli::client::to_value(&Shown {
            status: &s,
            categories: &categories,
            uncategorised: 44,
        })
        .unwrap();
        assert_eq!(
            shown["queue"],
            json!({"available": false, "error": "broker down"})
        );
        assert_eq!(
            shown["classifier"]["settings"]["neighbour_temperature"],
            json!(0.05)
        );
        assert_eq!(shown["categories"][0]["name"], "footwear");
        assert_eq!(shown["uncategorised"], 44);
    }
}
