//! `lookalike jobs`: recent jobs, failed ones, or named ones, without a browser.

use std::time::Duration;

use anyhow::Result;
use serde_json::{Value, json};

use crate::cli::client::{Api, ApiArgs, EXIT_ERROR, EXIT_FAILED, EXIT_OK, MAX_IDS_PER_LOOKUP};

#[derive(clap::Args, Debug)]
pub struct JobsArgs {
    /// Job ids to show (any number); without them, the most recent jobs.
    pub ids: Vec<String>,
    /// Only failed jobs (the same as --status failed).
    #[arg(long, conflicts_with = "status")]
    pub failed: bool,
    /// Only jobs in this status.
    #[arg(long, value_parser = ["queued", "processing", "succeeded", "failed"])]
    pub status: Option<String>,
    /// How many recent jobs to show (the service caps it at 500).
    #[arg(long, default_value_t = 20)]
    pub limit: u32,
    /// Print the jobs as JSON (`{"jobs": [...], "missing": [...]}`, each job as GET /v1/jobs/{id}
    /// shows it).
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub api: ApiArgs,
}

pub const AFTER_HELP: &str = "\
Examples:
  lookalike jobs                         # the 20 most recent jobs
  lookalike jobs --failed --limit 100    # why recent jobs failed
  lookalike jobs 0193a7c2-… 0193a7c3-…   # these jobs
  lookalike jobs --failed --json | jq -r '.jobs[].error.code' | sort | uniq -c

Exit codes: 0 none of the jobs shown failed; 1 some did; 2 usage error, a named job does not exist,
or the service could not be reached or refused the request (the key needs the read scope).";

pub async fn run(args: JobsArgs) -> Result<u8> {
    let api = Api::new(&args.api, Duration::from_secs(30), "read")?;
    let status = if args.failed {
        Some("failed".to_string())
    } else {
        args.status.clone()
    };
    let (jobs, missing) = if args.ids.is_empty() {
        let mut query = vec![("limit", args.limit.to_string())];
        query.extend(status.map(|s| ("status", s)));
        let body = api
            .json(api.http().get(api.url("/v1/jobs")).query(&query))
            .await?;
        (
            body["jobs"].as_array().cloned().unwrap_or_default(),
            Vec::new(),
        )
    } else {
        let (mut jobs, mut missing) = (Vec::new(), Vec::new());
        for chunk in args.ids.chunks(MAX_IDS_PER_LOOKUP) {
            let (found, absent) = api.lookup_jobs(chunk).await?;
            jobs.extend(
                found
                    .into_iter()
                    .filter(|j| status.as_ref().is_none_or(|s| j["status"] == s.as_str())),
            );
            missing.extend(absent);
        }
        (jobs, missing)
    };
    if args.json {
        crate::cli::client::print_json(&json!({"jobs": jobs, "missing": missing}))?;
    } else {
        print!("{}", human(&jobs));
        for id in &missing {
            eprintln!("no job {id}");
        }
    }
    Ok(if !missing.is_empty() {
        EXIT_ERROR
    } else if jobs.iter().any(|j| j["status"] == "failed") {
        EXIT_FAILED
    } else {
        EXIT_OK
    })
}

/// One line a job: id, status, attempts, when, what, and why it failed.
fn human(jobs: &[Value]) -> String {
    if jobs.is_empty() {
        return "no jobs\n".into();
    }
    let text = |v: &Value| v.as_str().unwrap_or("").to_string();
    let mut out = String::new();
    for j in jobs {
        let what = match (j["external_id"].as_str(), j["source"]["kind"].as_str()) {
            (Some(id), _) => id.to_string(),
            (None, Some("url")) => text(&j["source"]["url"]),
            _ => text(&j["source"]["file_name"]),
        };
        let when = text(&j["created_at"]);
        let when = when.get(..19).unwrap_or(when.as_str()).replace('T', " ");
        out += &format!(
            "{}  {:<10}  {}  {}x  {}",
            text(&j["id"]),
            text(&j["status"]),
            when,
            j["attempts"].as_i64().unwrap_or(0),
            what
        );
        if let Some(code) = j["error"]["code"].as_str() {
            out += &format!("  {code}: {}", text(&j["error"]["message"]));
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_line_says_what_and_why() {
        let jobs = [
            json!({"id": "j1", "status": "failed", "attempts": 1, "created_at": "2026-11-28T09:12:01.123Z",
                   "external_id": "cups/broken.jpg", "source": {"kind": "upload", "file_name": "broken.jpg"},
                   "error": {"code": "image_corrupt", "message": "bad bytes"}}),
            json!({"id": "j2", "status": "succeeded", "attempts": 2, "created_at": "2026-11-28T09:12:02Z",
                   "external_id": null, "source": {"kind": "url", "url": "https://shop.example/a.jpg"}}),
        ];
        assert_eq!(
            human(&jobs),
            "j1  failed      2026-11-28 09:12:01  1x  cups/broken.jpg  image_corrupt: bad bytes\n\
             j2  succeeded   2026-11-28 09:12:02  2x  https://shop.example/a.jpg\n"
        );
        assert_eq!(human(&[]), "no jobs\n");
    }
}
