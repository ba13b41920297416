//! `lookalike status`: where the work stands, from `GET /v1/status` and `GET /v1/categories`.

use std::time::Duration;

use anyhow::Result;
use serde_json::Value;

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

pub async fn run(args: StatusArgs) -> Result<u8> {
    let api = Api::new(&args.api, Duration::from_secs(30), "read")?;
    let (mut status, categories) =
        futures::try_join!(api.get("/v1/status"), api.get("/v1/categories"))?;
    status["categories"] = categories["categories"].clone();
    status["uncategorised"] = categories["uncategorised"].clone();
    if args.json {
        crate::cli::client::print_json(&status)?;
    } else {
        print!("{}", human(api.base(), &status));
    }
    Ok(EXIT_OK)
}

fn human(base: &str, s: &Value) -> String {
    let n = |v: &Value| v.as_i64().unwrap_or(0);
    let mut out = format!(
        "lookalike at {base}: model {} ({} dimensions), index {} with {} points\n",
        s["model"]["id"].as_str().unwrap_or("?"),
        n(&s["model"]["dim"]),
        s["index"]["backend"].as_str().unwrap_or("?"),
        n(&s["index"]["points"]),
    );
    let q = &s["queue"];
    out += &if q["available"] == true {
        format!(
            "queue   {} waiting, {} waiting to retry, {} dead, {} consumer{}\n",
            n(&q["ready"]),
            n(&q["retrying"]),
            n(&q["dead"]),
            n(&q["consumers"]),
            if n(&q["consumers"]) == 1 { "" } else { "s" }
        )
    } else {
        format!(
            "queue   unknown: {}\n",
            q["error"].as_str().unwrap_or("not reported")
        )
    };
    let j = &s["jobs"];
    out += &format!(
        "jobs    {} queued, {} processing, {} succeeded, {} failed\n",
        n(&j["queued"]),
        n(&j["processing"]),
        n(&j["succeeded"]),
        n(&j["failed"]),
    );
    out += &format!("items   {}\n", n(&s["items"]));
    let categories = s["categories"].as_array().cloned().unwrap_or_default();
    let width = categories
        .iter()
        .filter_map(|c| c["name"].as_str())
        .map(|c| c.chars().count())
        .chain([13])
        .max()
        .unwrap_or(13);
    for c in &categories {
        out += &format!(
            "  {:<width$}  {:>6}  ({} labelled)\n",
            c["name"].as_str().unwrap_or(""),
            n(&c["items"]),
            n(&c["labelled"]),
        );
    }
    out += &format!(
        "  {:<width$}  {:>6}\n",
        "uncategorised",
        n(&s["uncategorised"])
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_human_status_shows_every_count() {
        let s = json!({
            "jobs": {"queued": 3, "processing": 2, "succeeded": 50, "failed": 1},
            "queue": {"available": true, "ready": 3, "retrying": 1, "dead": 0, "consumers": 1},
            "items": 50,
            "index": {"backend": "qdrant-edge", "points": 50},
            "model": {"id": "clip", "dim": 512},
            "categories": [{"name": "footwear", "items": 6, "labelled": 6}],
            "uncategorised": 44,
        });
        let text = human("http://127.0.0.1:8080", &s);
        for want in [
            "model clip (512 dimensions), index qdrant-edge with 50 points",
            "queue   3 waiting, 1 waiting to retry, 0 dead, 1 consumer\n",
            "jobs    3 queued, 2 processing, 50 succeeded, 1 failed",
            "  footwear            6  (6 labelled)",
            "  uncategorised      44",
        ] {
            assert!(text.contains(want), "{want:?} in\n{text}");
        }
        let away = json!({"queue": {"available": false, "error": "broker down"}});
        assert!(human("x", &away).contains("queue   unknown: broker down"));
    }
}
