//! `lookalike jobs`: recent jobs, failed ones, or named ones, without a browser.

use std::time::Duration;

use anyhow::Result;
use lookalike_api_types::{Job, JobList, JobStatus};
use serde::Serialize;

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
        Some(JobStatus::Failed)
    } else {
        // clap lets only the four statuses through.
        args.status
            .as_deref()
            .and_then(|s| JobStatus::ALL.into_iter().find(|st| st.as_str() == s))
    };
    let (jobs, missing) = if args.ids.is_empty() {
        let mut query = vec![("limit", args.limit.to_string())];
        query.extend(status.map(|s| ("status", s.as_str().to_string())));
        let list: JobList = api
            .json(api.http().get(api.url("/v1/jobs")).query(&query))
            .await?;
        (list.jobs, Vec::new())
    } else {
        let (mut jobs, mut missing) = (Vec::new(), Vec::new());
        for chunk in args.ids.chunks(MAX_IDS_PER_LOOKUP) {
            let (found, absent) = api.lookup_jobs(chunk).await?;
            jobs.extend(
                found
                    .into_iter()
                    .filter(|j| status.is_none_or(|s| j.status == s)),
            );
            missing.extend(absent);
        }
        (jobs, missing)
    };
    if args.json {
        /// What `--json` prints.
        #[derive(Serialize)]
        struct Shown<'a> {
            jobs: &'a [Job],
            missing: &'a [String],
        }
        let shown = Shown {
            jobs: &jobs,
            missing: &missing,
        };
        // A job holds no f32; its metadata keeps its numbers as they were read.
        crate::cli::client::print_json(&serde_json::to_value(&shown)?)?;
    } else {
        print!("{}", human(&jobs));
        for id in &missing {
            eprintln!("no job {id}");
        }
    }
    Ok(if !missing.is_empty() {
        EXIT_ERROR
    } else if jobs.iter().any(|j| j.status == JobStatus::Failed) {
        EXIT_FAILED
    } else {
        EXIT_OK
    })
}

/// One line a job: id, status, attempts, when, what, and why it failed.
fn human(jobs: &[Job]) -> String {
    if jobs.is_empty() {
        return "no jobs\n".into();
    }
    let mut out = String::new();
    for j in jobs {
        let source = &j.source;
        let what = match (&j.external_id, source.kind.as_str()) {
            (Some(id), _) => id.as_str(),
            (None, "url") => source.url.as_deref().unwrap_or(""),
            _ => source.file_name.as_deref().unwrap_or(""),
        };
        // To the second, as the API writes it (RFC 3339), with a space for the `T`.
        let when = j.created_at.format("%Y-%m-%d %H:%M:%S");
        out += &format!(
            "{}  {:<10}  {}  {}x  {}",
            j.id,
            j.status.as_str(),
            when,
            j.attempts,
            what
        );
        if let Some(error) = &j.error {
            out += &format!(
                "  {}: {}",
                error.code,
                error.message.as_deref().unwrap_or("")
            );
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_job_line_says_what_and_why() {
        let jobs: Vec<Job> = serde_json::from_value(json!([
            {"id": "00000000-0000-0000-0000-0000000000a1", "status": "failed", "attempts": 1,
             "created_at": "2026-11-28T09:12:01.123Z", "updated_at": "2026-11-28T09:12:03Z",
             "started_at": null, "finished_at": null, "category": null, "metadata": {},
             "item_id": null, "item_url": null,
             "external_id": "cups/broken.jpg", "source": {"kind": "upload", "url": null, "file_name": "broken.jpg"},
             "error": {"code": "image_corrupt", "message": "bad bytes"}},
            {"id": "00000000-0000-0000-0000-0000000000a2", "status": "succeeded", "attempts": 2,
             "created_at": "2026-11-28T09:12:02Z", "updated_at": "2026-11-28T09:12:03Z",
             "started_at": null, "finished_at": null, "category": null, "metadata": {},
             "item_id": null, "item_url": null, "error": null,
             "external_id": null, "source": {"kind": "url", "url": "https://shop.example/a.jpg", "file_name": null}},
        ]))
        .unwrap();
        assert_eq!(
            human(&jobs),
            "00000000-0000-0000-0000-0000000000a1  failed      2026-11-28 09:12:01  1x  cups/broken.jpg  image_corrupt: bad bytes\n\
             00000000-0000-0000-0000-0000000000a2  succeeded   2026-11-28 09:12:02  2x  https://shop.example/a.jpg\n"
        );
        assert_eq!(human(&[]), "no jobs\n");
    }
}
