//! `lookalike import SOURCE`: bulk import through the API, resumable, with progress, a summary and
//! a failures file that can be imported again.

pub mod source;
mod submit;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures::{StreamExt, TryStreamExt, stream};
use serde_json::{Value, json};

use crate::cli::client::{Api, ApiArgs, EXIT_FAILED, EXIT_OK, JobEnd, MAX_IDS_PER_LOOKUP};
use crate::cli::progress::{self, Progress};
use source::{Entry, Source};
use submit::{BatchLimits, Submitted, Submitter};

#[derive(clap::Args, Debug)]
pub struct ImportArgs {
    /// A folder of <category>/<image> files (uploads; the category is the folder name, the external
    /// id the relative path), a .csv file (header row: url or file, external_id, product_id,
    /// category; any other column goes into metadata) or a .jsonl file (one object a line: url or
    /// file, external_id, product_id, category, metadata).
    pub source: PathBuf,
    #[command(flatten)]
    pub api: ApiArgs,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub concurrency: u16,
    /// Files per upload request. Batches (with this and --batch-urls) make the idempotency keys:
    /// keep them the same when resuming.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..=1000))]
    pub batch_files: u16,
    /// URLs per request.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u16).range(1..=1000))]
    pub batch_urls: u16,
    /// Submit everything, then exit without waiting for the jobs to finish.
    #[arg(long)]
    pub no_wait: bool,
    /// Where to write the entries that failed, as JSON lines in the input format plus `error`
    /// [default: <SOURCE>.failures.jsonl beside the source].
    #[arg(long, value_name = "FILE")]
    pub failures: Option<PathBuf>,
    /// Print the summary as JSON on stdout (the progress line stays on stderr).
    #[arg(long)]
    pub json: bool,
}

pub const AFTER_HELP: &str = "\
Examples:
  lookalike import .lookalike/datasets/vendure          # a folder of <category>/<image> files
  lookalike import feed.csv --concurrency 8             # url,external_id,category,brand,price
  lookalike import feed.jsonl --no-wait --json          # {\"url\": …, \"external_id\": …}
  lookalike import feed.csv.failures.jsonl              # try the failed ones again

Run again after an interruption, the same import resumes: every batch carries an Idempotency-Key made
from the source and the batch's content, so batches already submitted are answered with their first
jobs instead of new ones, and external ids make any resubmission update its item rather than add one.
Failures (refused entries and failed jobs) go to the failures file, which is itself a source.

Exit codes: 0 every entry succeeded (or was submitted, with --no-wait); 1 some failed or did not
finish; 2 usage error, or the service could not be reached or refused the import.";

/// Stop waiting when no job has ended for this long (the jobs go on; running the import again
/// waits for them without submitting anything new).
const STALL_LIMIT: Duration = Duration::from_secs(300);
/// Give up when the service cannot be asked about the jobs for this long.
const POLL_OUTAGE_LIMIT: Duration = Duration::from_secs(120);
const POLL_EVERY: Duration = Duration::from_millis(1000);
const TICK: Duration = Duration::from_millis(100);
/// Lookups per polling round at most (each covers [`MAX_IDS_PER_LOOKUP`] jobs).
const MAX_LOOKUPS_PER_ROUND: usize = 20;
/// Upload bytes per request: under the service's default `http.max_body_bytes` (25 MiB).
const BATCH_BYTES: u64 = 16 * 1024 * 1024;

/// Where one entry stands.
#[derive(Debug, Clone)]
enum State {
    Unsent,
    Pending { job_id: String },
    Ended { job_id: Option<String>, end: JobEnd },
}

/// Counts at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Counts {
    pub total: usize,
    /// Entries the service took (new jobs or replayed ones) or refused.
    pub submitted: usize,
    pub succeeded: usize,
    pub failed: usize,
}

impl Counts {
    pub fn ended(&self) -> usize {
        self.succeeded + self.failed
    }

    /// What the progress line counts: ended entries when jobs are followed to their end, else
    /// submitted ones.
    fn done(&self, waiting: bool) -> usize {
        if waiting {
            self.ended()
        } else {
            self.submitted
        }
    }

    /// `1200/5000 submitted, 900 succeeded, 3 failed` (the outcomes only when followed).
    fn shown(&self, waiting: bool) -> String {
        let mut out = format!("{}/{} submitted", self.submitted, self.total);
        if waiting {
            out += &format!(", {} succeeded, {} failed", self.succeeded, self.failed);
        }
        out
    }
}

/// Every entry's state and the counts shown as progress.
struct Tracker {
    states: Vec<State>,
    /// Entries with a job that has not ended, in submission order (the order the queue runs them).
    pending: VecDeque<usize>,
    by_job: HashMap<String, usize>,
    counts: Counts,
    replayed: usize,
    /// When an entry was last submitted or a job last ended: what a stall is measured from.
    last_change: Instant,
}

impl Tracker {
    fn new(total: usize) -> Self {
        Tracker {
            states: vec![State::Unsent; total],
            pending: VecDeque::new(),
            by_job: HashMap::new(),
            counts: Counts {
                total,
                ..Counts::default()
            },
            replayed: 0,
            last_change: Instant::now(),
        }
    }

    fn submitted(&mut self, results: Vec<(usize, Submitted)>) {
        self.last_change = Instant::now();
        for (i, s) in results {
            self.counts.submitted += 1;
            match s {
                Submitted::Job { id, replayed } => {
                    self.replayed += usize::from(replayed);
                    self.by_job.insert(id.clone(), i);
                    self.pending.push_back(i);
                    self.states[i] = State::Pending { job_id: id };
                }
                Submitted::Refused { code, message } => {
                    self.end(i, None, JobEnd::Failed { code, message });
                }
            }
        }
    }

    fn ended(&mut self, ends: Vec<(String, JobEnd)>) {
        for (job_id, end) in ends {
            if let Some(&i) = self.by_job.get(&job_id)
                && matches!(self.states[i], State::Pending { .. })
            {
                self.end(i, Some(job_id), end);
            }
        }
        let states = &self.states;
        self.pending
            .retain(|&i| matches!(states[i], State::Pending { .. }));
    }

    fn end(&mut self, i: usize, job_id: Option<String>, end: JobEnd) {
        match end {
            JobEnd::Succeeded { .. } => self.counts.succeeded += 1,
            JobEnd::Failed { .. } => self.counts.failed += 1,
        }
        self.states[i] = State::Ended { job_id, end };
        self.last_change = Instant::now();
    }

    /// The oldest pending jobs, as many as one polling round looks up.
    fn pending_ids(&self) -> Vec<String> {
        self.pending
            .iter()
            .take(MAX_IDS_PER_LOOKUP * MAX_LOOKUPS_PER_ROUND)
            .filter_map(|&i| match &self.states[i] {
                State::Pending { job_id } => Some(job_id.clone()),
                _ => None,
            })
            .collect()
    }
}

/// Answers the exit code (see [`AFTER_HELP`]).
pub async fn run(args: ImportArgs) -> Result<u8> {
    let started = Instant::now();
    let source = Source::open(&args.source)?;
    let mut entries = source.entries()?;
    if entries.is_empty() {
        bail!("{} holds nothing to import", source.path.display());
    }
    let failures_path = match &args.failures {
        Some(p) => std::path::absolute(p)?,
        None => source.default_failures_path(),
    };
    if failures_path == source.path {
        bail!("--failures names the source itself");
    }
    let wait = !args.no_wait;
    let scopes = if wait { "read and write" } else { "write" };
    let api = Api::new(&args.api, Duration::from_secs(300), scopes)?;
    api.check_ready().await?;
    if source.kind == source::Kind::Csv {
        match declared_fields(&api).await {
            Ok(declared) => source::type_declared_fields(&mut entries, &declared),
            Err(e) => eprintln!(
                "note: could not read the declared fields (GET /v1/fields: {e:#}); CSV cells go as text"
            ),
        }
    }

    let batches = submit::plan(
        &entries,
        BatchLimits {
            files: args.batch_files.into(),
            urls: args.batch_urls.into(),
            bytes: BATCH_BYTES,
        },
    );
    let submitter = Submitter {
        api: &api,
        source_id: source.path.to_string_lossy().into_owned(),
        entries: &entries,
    };
    let tracker = Mutex::new(Tracker::new(entries.len()));
    let all_sent = AtomicBool::new(false);
    let mut progress = Progress::new("import");

    let submit_all = async {
        stream::iter(batches.iter().map(|b| submitter.submit(b)))
            .buffer_unordered(args.concurrency.into())
            .try_for_each(|results| {
                tracker.lock().unwrap().submitted(results);
                futures::future::ready(Ok(()))
            })
            .await?;
        all_sent.store(true, Ordering::SeqCst);
        anyhow::Ok(())
    };
    let follow = async {
        let (mut last_poll, mut poll_failing_since) = (None::<Instant>, None::<Instant>);
        loop {
            let sent = all_sent.load(Ordering::SeqCst);
            if wait && last_poll.is_none_or(|t| t.elapsed() >= POLL_EVERY) {
                last_poll = Some(Instant::now());
                let ids = tracker.lock().unwrap().pending_ids();
                if !ids.is_empty() {
                    match api.ended_jobs(&ids).await {
                        Ok(ends) => {
                            tracker.lock().unwrap().ended(ends);
                            poll_failing_since = None;
                        }
                        // The service answered, and says no (a 4xx): asking again will not help.
                        Err(e)
                            if e.downcast_ref::<crate::cli::client::Refused>()
                                .is_some_and(|r| r.status.is_client_error()) =>
                        {
                            return Err(e.context("following the jobs"));
                        }
                        Err(e) => {
                            let since = *poll_failing_since.get_or_insert_with(Instant::now);
                            if since.elapsed() > POLL_OUTAGE_LIMIT {
                                return Err(e.context(
                                    "following the jobs (run the same import again to resume)",
                                ));
                            }
                        }
                    }
                }
            }
            let (counts, pending, last_change) = {
                let t = tracker.lock().unwrap();
                (t.counts, t.pending.len(), t.last_change)
            };
            progress.update(counts.done(wait), counts.total, || counts.shown(wait));
            if sent && (!wait || pending == 0) {
                return Ok(false);
            }
            if sent && last_change.elapsed() > STALL_LIMIT {
                return Ok(true);
            }
            tokio::time::sleep(TICK).await;
        }
    };
    let ((), stalled) = tokio::try_join!(submit_all, follow)?;
    let tracker = tracker.into_inner().unwrap();
    let c = tracker.counts;
    progress.finish(c.done(wait), c.total, &c.shown(wait));

    let failures = failures(&entries, &tracker.states);
    let failures_file = write_failures(&failures, &failures_path, args.failures.is_none())?;
    let summary = summary(
        &source,
        &tracker,
        &failures,
        failures_file.as_deref(),
        wait,
        started.elapsed(),
    );
    if args.json {
        crate::cli::client::print_json(&summary)?;
    } else {
        print!("{}", human(&summary));
    }
    if stalled {
        eprintln!(
            "no job ended for {}; stopped waiting (the jobs go on: run the same import again to follow them)",
            progress::clock(STALL_LIMIT.as_secs_f64())
        );
    }
    let unfinished = summary["unfinished"].as_u64().unwrap_or(0);
    Ok(if failures.is_empty() && (unfinished == 0 || !wait) {
        EXIT_OK
    } else {
        EXIT_FAILED
    })
}

/// The failed entries, in source order, with their error.
fn failures<'a>(entries: &'a [Entry], states: &[State]) -> Vec<(&'a Entry, Value)> {
    entries
        .iter()
        .zip(states)
        .filter_map(|(e, s)| match s {
            State::Ended {
                job_id,
                end: JobEnd::Failed { code, message },
            } => Some((
                e,
                json!({"code": code, "message": message, "job_id": job_id}),
            )),
            _ => None,
        })
        .collect()
}

/// Writes the failures file; with none, removes the default one an earlier run left (it would
/// describe failures that are gone). Answers the path written.
fn write_failures(
    failures: &[(&Entry, Value)],
    path: &Path,
    default_path: bool,
) -> Result<Option<PathBuf>> {
    if failures.is_empty() {
        if default_path && path.exists() {
            std::fs::remove_file(path).with_context(|| format!("removing {}", path.display()))?;
        }
        return Ok(None);
    }
    let mut text = String::new();
    for (entry, error) in failures {
        let mut line = entry.to_json();
        line["error"] = error.clone();
        text += &line.to_string();
        text.push('\n');
    }
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    Ok(Some(path.to_path_buf()))
}

fn summary(
    source: &Source,
    tracker: &Tracker,
    failures: &[(&Entry, Value)],
    failures_file: Option<&Path>,
    waited: bool,
    elapsed: Duration,
) -> Value {
    let mut errors: BTreeMap<String, usize> = BTreeMap::new();
    for (_, error) in failures {
        *errors
            .entry(error["code"].as_str().unwrap_or("unknown").to_string())
            .or_default() += 1;
    }
    let c = tracker.counts;
    json!({
        "source": source.path,
        "total": c.total,
        "submitted": c.submitted,
        "new_jobs": tracker.by_job.len() - tracker.replayed,
        "replayed": tracker.replayed,
        "succeeded": c.succeeded,
        "failed": c.failed,
        "errors": errors,
        // With --no-wait: every job not yet ended; after a stall: those still going.
        "unfinished": tracker.pending.len(),
        "waited": waited,
        "failures_file": failures_file,
        "seconds": (elapsed.as_secs_f64() * 10.0).round() / 10.0,
    })
}

fn human(s: &Value) -> String {
    let n = |k: &str| s[k].as_u64().unwrap_or(0);
    let mut out = format!(
        "imported {}: {} entries in {}\n",
        s["source"].as_str().unwrap_or(""),
        n("total"),
        progress::clock(s["seconds"].as_f64().unwrap_or(0.0)),
    );
    out += &format!(
        "  submitted  {:>6}  ({} new jobs, {} replayed from an earlier run)\n",
        n("submitted"),
        n("new_jobs"),
        n("replayed")
    );
    if s["waited"] == true {
        out += &format!("  succeeded  {:>6}\n", n("succeeded"));
    }
    out += &format!("  failed     {:>6}\n", n("failed"));
    for (code, count) in s["errors"].as_object().into_iter().flatten() {
        out += &format!("    {code:<28} {count}\n");
    }
    if n("unfinished") > 0 {
        out += &format!(
            "  unfinished {:>6}  (follow them with `lookalike status` and `lookalike jobs`)\n",
            n("unfinished")
        );
    }
    if let Some(path) = s["failures_file"].as_str() {
        out += &format!("failures: {path} (fix what they say, then import that file)\n");
    }
    out
}

/// The service's declared filter fields and their kinds (`GET /v1/fields`).
async fn declared_fields(api: &Api) -> Result<lookalike_core::fields::Fields> {
    use lookalike_api_types::{FieldKind, FieldsReport};
    use lookalike_core::fields::FieldKind as Kind;
    let report: FieldsReport = api.get("/v1/fields").await?;
    Ok(report
        .fields
        .into_iter()
        .map(|field| {
            let kind = match field.kind {
                FieldKind::Keyword => Kind::Keyword,
                FieldKind::Number => Kind::Number,
                FieldKind::Bool => Kind::Bool,
            };
            (field.name, kind)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failed(code: &str) -> JobEnd {
        JobEnd::failed(code, format!("{code} happened"))
    }

    #[test]
    fn the_tracker_counts_each_entry_once_and_keeps_the_oldest_pending_first() {
        let mut t = Tracker::new(4);
        let job = |id: &str, replayed| Submitted::Job {
            id: id.into(),
            replayed,
        };
        t.submitted(vec![(2, job("j2", true)), (3, job("j3", false))]);
        t.submitted(vec![
            (0, job("j0", false)),
            (
                1,
                Submitted::Refused {
                    code: "unsupported_image_type".into(),
                    message: "not an image".into(),
                },
            ),
        ]);
        assert_eq!(t.pending_ids(), ["j2", "j3", "j0"]);
        // A job reported twice, or one that is not ours, changes nothing.
        t.ended(vec![
            ("j3".into(), failed("image_corrupt")),
            ("j3".into(), failed("image_corrupt")),
            ("other".into(), failed("x")),
            (
                "j0".into(),
                JobEnd::Succeeded {
                    item_id: "i0".into(),
                },
            ),
        ]);
        assert_eq!(t.pending_ids(), ["j2"]);
        assert_eq!(
            t.counts,
            Counts {
                total: 4,
                submitted: 4,
                succeeded: 1,
                failed: 2,
            }
        );
        assert_eq!(t.replayed, 1);
    }

    #[test]
    fn failures_are_written_in_the_input_format_with_their_error_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let csv = "url,external_id,category,brand\n\
                   https://shop.example/a.jpg,a,shoes,Acme\n\
                   https://shop.example/b.jpg,b,bags,\n\
                   https://shop.example/c.jpg,c,,\n";
        let entries = source::parse_csv(csv, dir.path()).unwrap();
        let states = vec![
            State::Ended {
                job_id: Some("j0".into()),
                end: failed("fetch_http_status"),
            },
            State::Ended {
                job_id: Some("j1".into()),
                end: JobEnd::Succeeded {
                    item_id: "i1".into(),
                },
            },
            State::Ended {
                job_id: None,
                end: failed("invalid_url"),
            },
        ];
        let list = failures(&entries, &states);
        let path = dir.path().join("feed.csv.failures.jsonl");
        assert_eq!(
            write_failures(&list, &path, true).unwrap().as_deref(),
            Some(path.as_path())
        );
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(
            lines[0],
            json!({"url": "https://shop.example/a.jpg", "external_id": "a", "category": "shoes",
                   "metadata": {"brand": "Acme"},
                   "error": {"code": "fetch_http_status", "message": "fetch_http_status happened", "job_id": "j0"}})
        );
        assert_eq!(lines[1]["error"]["job_id"], Value::Null);
        let again = source::parse_jsonl(&text, dir.path()).unwrap();
        assert_eq!(again.len(), 2);
        assert_eq!(again[1].origin, entries[2].origin);

        // A later run without failures removes the default file, never a file the user named.
        assert_eq!(write_failures(&[], &path, false).unwrap(), None);
        assert!(path.exists());
        write_failures(&[], &path, true).unwrap();
        assert!(!path.exists());
    }

    #[test]
    fn the_progress_line_shows_submitted_and_ended_entries() {
        let counts = Counts {
            total: 5000,
            submitted: 1200,
            succeeded: 900,
            failed: 3,
        };
        let line = |waiting: bool, rate, secs| {
            progress::line(
                "import",
                &counts.shown(waiting),
                counts.done(waiting),
                counts.total,
                rate,
                Duration::from_secs(secs),
            )
        };
        assert_eq!(
            line(true, Some(14.2), 61),
            "import: 1200/5000 submitted, 900 succeeded, 3 failed, 14.2/s, ETA 4m49s, 1m01s"
        );
        // Without waiting, the rate and ETA are about submitting.
        assert_eq!(
            line(false, Some(100.0), 12),
            "import: 1200/5000 submitted, 100.0/s, ETA 38s, 12s"
        );
    }

    #[test]
    fn the_summary_counts_by_outcome_and_error_code() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("feed.csv"),
            "url\nhttps://a.example/1.jpg\nhttps://a.example/2.jpg\nhttps://a.example/3.jpg\n",
        )
        .unwrap();
        let source = Source::open(&dir.path().join("feed.csv")).unwrap();
        let entries = source.entries().unwrap();
        let mut t = Tracker::new(3);
        t.submitted(vec![
            (
                0,
                Submitted::Job {
                    id: "j0".into(),
                    replayed: true,
                },
            ),
            (
                1,
                Submitted::Job {
                    id: "j1".into(),
                    replayed: true,
                },
            ),
            (
                2,
                Submitted::Job {
                    id: "j2".into(),
                    replayed: true,
                },
            ),
        ]);
        t.ended(vec![
            ("j0".into(), failed("image_corrupt")),
            ("j1".into(), failed("image_corrupt")),
        ]);
        let list = failures(&entries, &t.states);
        let s = summary(&source, &t, &list, None, true, Duration::from_secs(3));
        assert_eq!(s["total"], 3);
        assert_eq!(s["replayed"], 3);
        assert_eq!(s["new_jobs"], 0);
        assert_eq!(s["failed"], 2);
        assert_eq!(s["errors"], json!({"image_corrupt": 2}));
        assert_eq!(s["unfinished"], 1);
        let text = human(&s);
        assert!(text.contains("failed          2"), "{text}");
        assert!(text.contains("image_corrupt"), "{text}");
        assert!(text.contains("unfinished      1"), "{text}");
    }
}
