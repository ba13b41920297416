//! What lookalike tells its operators: Prometheus metrics and the JSON log format.
//!
//! Every metric is named here once, with its help text, labels and buckets ([`RECORDED`] for what the
//! API and worker count as things happen, [`SCRAPED`] for what `GET /metrics` reads from Postgres,
//! RabbitMQ and the index at scrape time). Code elsewhere records through the small functions below,
//! so a label is always spelled the same way and its values stay a small, fixed set: Prometheus keeps
//! one series per label combination, and an unbounded label (a job id, a raw URL path) would grow
//! without end.
//!
//! The recorder is the `metrics` facade's global one: recording is a no-op until [`install`] ran, so
//! libraries and unit tests need no setup. `metrics-exporter-prometheus` is used without its HTTP
//! listener: the API renders [`install`]'s handle behind its own router (`GET /metrics`).

pub mod exposition;
pub mod logging;

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

pub use logging::init_logging;

/// What kind of Prometheus metric a name is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// One metric: its name, what it means, and the labels it carries.
#[derive(Debug, Clone, Copy)]
pub struct Metric {
    pub name: &'static str,
    pub kind: Kind,
    pub help: &'static str,
    pub labels: &'static [&'static str],
}

/// Seconds, from a millisecond to a minute: an index write takes about a millisecond, a slow image
/// download up to `fetch.total_timeout_ms` (30 s by default).
pub const SECONDS_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// Images per model run, up to the largest sensible `worker.batch_size`.
pub const BATCH_SIZE_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0];

pub const JOBS_SUBMITTED: Metric = Metric {
    name: "lookalike_jobs_submitted_total",
    kind: Kind::Counter,
    help: "Jobs accepted by POST /v1/images (committed and confirmed by the broker), by source (url, upload).",
    labels: &["source"],
};

pub const JOBS: Metric = Metric {
    name: "lookalike_jobs_total",
    kind: Kind::Counter,
    help: "Job attempts that ended: succeeded, failed for good (code = the job's error code) or retried later (code = the transient error).",
    labels: &["status", "code"],
};

pub const STAGE_SECONDS: Metric = Metric {
    name: "lookalike_stage_seconds",
    kind: Kind::Histogram,
    help: "Time spent in one stage of the image pipeline: download (or reading an upload), decode (clean, preprocess, thumbnail), inference (one model run, per batch), classify, index (vector upsert), commit (item and job state), search (a similarity query: the index and its results' rows).",
    labels: &["stage"],
};

pub const INFERENCE_BATCH_SIZE: Metric = Metric {
    name: "lookalike_inference_batch_size",
    kind: Kind::Histogram,
    help: "Images per model run (worker.batch_size is the most).",
    labels: &[],
};

pub const INFERENCE_RUNS: Metric = Metric {
    name: "lookalike_inference_runs_total",
    kind: Kind::Counter,
    help: "Model runs by the session that ran them: lane (one thread, side by side with the other lanes) or solo (every core, for an image that found the pool idle).",
    labels: &["session"],
};

pub const HTTP_REQUEST_SECONDS: Metric = Metric {
    name: "lookalike_http_request_seconds",
    kind: Kind::Histogram,
    help: "API requests until the response headers, by route template (unmatched for unknown paths), method and status.",
    labels: &["route", "method", "status"],
};

/// What the service counts as it works.
pub const RECORDED: &[Metric] = &[
    JOBS_SUBMITTED,
    JOBS,
    STAGE_SECONDS,
    INFERENCE_BATCH_SIZE,
    INFERENCE_RUNS,
    HTTP_REQUEST_SECONDS,
];

pub const QUEUE_MESSAGES: Metric = Metric {
    name: "lookalike_queue_messages",
    kind: Kind::Gauge,
    help: "Messages in RabbitMQ: jobs = waiting for a worker, retry = waiting out a backoff, dead = given up.",
    labels: &["queue"],
};

pub const QUEUE_CONSUMERS: Metric = Metric {
    name: "lookalike_queue_consumers",
    kind: Kind::Gauge,
    help: "Workers consuming the jobs queue.",
    labels: &[],
};

pub const JOBS_BY_STATUS: Metric = Metric {
    name: "lookalike_jobs_by_status",
    kind: Kind::Gauge,
    help: "Jobs in Postgres by status (queued, processing, succeeded, failed).",
    labels: &["status"],
};

pub const INDEX_POINTS: Metric = Metric {
    name: "lookalike_index_points",
    kind: Kind::Gauge,
    help: "Vectors in the index.",
    labels: &[],
};

pub const DEPENDENCY_UP: Metric = Metric {
    name: "lookalike_dependency_up",
    kind: Kind::Gauge,
    help: "1 when the scrape read this dependency (database, queue, index) within 2 s; 0 otherwise, and its gauges are left out.",
    labels: &["dependency"],
};

pub const BUILD_INFO: Metric = Metric {
    name: "lookalike_build_info",
    kind: Kind::Gauge,
    help: "Always 1; the labels say which version and embedding model are running.",
    labels: &["version", "model"],
};

/// What `GET /metrics` reads from the service's dependencies when it is scraped: always current, and
/// absent (with [`DEPENDENCY_UP`] at 0) rather than stale when a dependency does not answer.
pub const SCRAPED: &[Metric] = &[
    QUEUE_MESSAGES,
    QUEUE_CONSUMERS,
    JOBS_BY_STATUS,
    INDEX_POINTS,
    DEPENDENCY_UP,
    BUILD_INFO,
];

/// The histogram buckets of a recorded histogram.
pub fn buckets(metric: &Metric) -> &'static [f64] {
    if metric.name == INFERENCE_BATCH_SIZE.name {
        BATCH_SIZE_BUCKETS
    } else {
        SECONDS_BUCKETS
    }
}

/// How often histogram samples are folded into their buckets when nobody scrapes: without it they
/// pile up in memory between scrapes.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// Installs the Prometheus recorder as the process's metrics recorder (once; later calls return the
/// same handle) and returns the handle that renders the text exposition. Call it before the API and
/// the worker start, so nothing they count is lost.
pub fn install() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let mut builder = PrometheusBuilder::new();
        for metric in RECORDED.iter().filter(|m| m.kind == Kind::Histogram) {
            builder = builder
                .set_buckets_for_metric(Matcher::Full(metric.name.into()), buckets(metric))
                .expect("bucket lists are not empty");
        }
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        if let Err(e) = metrics::set_global_recorder(recorder) {
            // Only possible if something else installed a recorder first; /metrics then shows the
            // scrape-time gauges only.
            tracing::warn!(error = %e, "another metrics recorder is installed; lookalike's counters are not exported");
        }
        describe();
        let upkeep = handle.clone();
        std::thread::Builder::new()
            .name("metrics-upkeep".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(UPKEEP_EVERY);
                    upkeep.run_upkeep();
                }
            })
            .expect("spawning the metrics upkeep thread");
        handle
    })
}

fn describe() {
    for m in RECORDED {
        match m.kind {
            Kind::Counter => metrics::describe_counter!(m.name, m.help),
            Kind::Gauge => metrics::describe_gauge!(m.name, m.help),
            Kind::Histogram => metrics::describe_histogram!(m.name, m.help),
        }
    }
}

/// The recorded metrics in the Prometheus text format (installs the recorder if needed).
pub fn render() -> String {
    install().render()
}

/// How a job attempt ended, for [`job_finished`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobStatus {
    Succeeded,
    /// Failed for good: bad input, or out of attempts.
    Failed,
    /// A transient failure; the job goes back to the queue after a backoff.
    Retried,
}

impl JobStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Succeeded => "succeeded",
            JobStatus::Failed => "failed",
            JobStatus::Retried => "retried",
        }
    }
}

/// The `code` label of a job that did not fail.
pub const NO_CODE: &str = "none";

/// Counts a job attempt's end. `code` is one of the stable job error codes
/// (`lookalike_core::codes::job`), or [`NO_CODE`] on success.
pub fn job_finished(status: JobStatus, code: &'static str) {
    metrics::counter!(JOBS.name, "status" => status.as_str(), "code" => code).increment(1);
}

/// Counts jobs accepted by the API; `source` is `url` or `upload`.
pub fn jobs_submitted(source: &'static str, jobs: u64) {
    metrics::counter!(JOBS_SUBMITTED.name, "source" => source).increment(jobs);
}

/// A stage of the image pipeline, for [`STAGE_SECONDS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Download,
    Decode,
    Inference,
    Classify,
    Index,
    Commit,
    Search,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Download => "download",
            Stage::Decode => "decode",
            Stage::Inference => "inference",
            Stage::Classify => "classify",
            Stage::Index => "index",
            Stage::Commit => "commit",
            Stage::Search => "search",
        }
    }
}

pub fn stage(stage: Stage, elapsed: Duration) {
    metrics::histogram!(STAGE_SECONDS.name, "stage" => stage.as_str())
        .record(elapsed.as_secs_f64());
}

/// Times a stage until it is dropped, so early returns (`?`) are timed too.
#[must_use = "the stage is timed until this guard is dropped"]
pub struct StageTimer {
    stage: Stage,
    started: Instant,
}

pub fn time_stage(stage: Stage) -> StageTimer {
    StageTimer {
        stage,
        started: Instant::now(),
    }
}

impl Drop for StageTimer {
    fn drop(&mut self) {
        stage(self.stage, self.started.elapsed());
    }
}

/// One model run: its batch size, and its time as the `inference` stage.
pub fn inference_batch(images: usize, solo: bool, elapsed: Duration) {
    metrics::histogram!(INFERENCE_BATCH_SIZE.name).record(images as f64);
    metrics::counter!(INFERENCE_RUNS.name, "session" => if solo { "solo" } else { "lane" })
        .increment(1);
    stage(Stage::Inference, elapsed);
}

/// One API request. `route` must be the matched route template (`/v1/jobs/{id}`), never the raw
/// path; `method` is folded to the standard methods so a client cannot invent new series.
pub fn http_request(route: &str, method: &str, status: u16, elapsed: Duration) {
    metrics::histogram!(
        HTTP_REQUEST_SECONDS.name,
        "route" => route.to_string(),
        "method" => http_method(method),
        "status" => status.to_string(),
    )
    .record(elapsed.as_secs_f64());
}

fn http_method(method: &str) -> &'static str {
    const KNOWN: &[&str] = &[
        "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE",
    ];
    KNOWN
        .iter()
        .find(|m| **m == method)
        .copied()
        .unwrap_or("other")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_prefixed_unique_and_valid() {
        let mut seen = std::collections::HashSet::new();
        for m in RECORDED.iter().chain(SCRAPED) {
            assert!(m.name.starts_with("lookalike_"), "{}", m.name);
            assert!(
                m.name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
                "{}",
                m.name
            );
            assert!(seen.insert(m.name), "{} named twice", m.name);
            assert_eq!(
                m.kind == Kind::Counter,
                m.name.ends_with("_total"),
                "counters, and only counters, end in _total: {}",
                m.name
            );
            assert!(!m.help.is_empty() && !m.help.contains('\n'), "{}", m.name);
        }
        // A gauge named like a counter's family would clash in OpenMetrics parsers.
        for c in RECORDED.iter().filter(|m| m.kind == Kind::Counter) {
            let family = c.name.trim_end_matches("_total");
            assert!(
                RECORDED.iter().chain(SCRAPED).all(|m| m.name != family),
                "{family}"
            );
        }
    }

    #[test]
    fn buckets_increase() {
        for b in [SECONDS_BUCKETS, BATCH_SIZE_BUCKETS] {
            assert!(b.windows(2).all(|w| w[0] < w[1]), "{b:?}");
        }
        assert_eq!(buckets(&INFERENCE_BATCH_SIZE).first(), Some(&1.0));
        assert_eq!(buckets(&INFERENCE_BATCH_SIZE).last(), Some(&64.0));
        assert_eq!(buckets(&STAGE_SECONDS), SECONDS_BUCKETS);
    }

    #[test]
    fn unknown_methods_share_one_label_value() {
        assert_eq!(http_method("GET"), "GET");
        assert_eq!(http_method("DELETE"), "DELETE");
        assert_eq!(http_method("BREW"), "other");
        assert_eq!(http_method("get"), "other");
    }

    #[test]
    fn the_installed_recorder_renders_what_was_recorded() {
        let handle = install();
        assert!(std::ptr::eq(handle, install()), "install is idempotent");
        job_finished(JobStatus::Failed, "fetch_http_status");
        job_finished(JobStatus::Succeeded, NO_CODE);
        jobs_submitted("url", 2);
        inference_batch(3, false, Duration::from_millis(40));
        drop(time_stage(Stage::Download));
        http_request("/v1/jobs/{id}", "GET", 200, Duration::from_millis(2));
        let text = render();
        for expected in [
            "# HELP lookalike_jobs_total Job attempts that ended",
            "# TYPE lookalike_jobs_total counter",
            r#"lookalike_jobs_total{status="failed",code="fetch_http_status"} 1"#,
            r#"lookalike_jobs_total{status="succeeded",code="none"} 1"#,
            r#"lookalike_jobs_submitted_total{source="url"} 2"#,
            "# TYPE lookalike_stage_seconds histogram",
            r#"lookalike_stage_seconds_count{stage="inference"} 1"#,
            r#"lookalike_stage_seconds_count{stage="download"} 1"#,
            r#"lookalike_stage_seconds_bucket{stage="inference",le="0.05"} 1"#,
            r#"lookalike_stage_seconds_bucket{stage="inference",le="0.025"} 0"#,
            r#"lookalike_inference_batch_size_bucket{le="4"} 1"#,
            r#"lookalike_inference_batch_size_bucket{le="2"} 0"#,
            r#"lookalike_inference_runs_total{session="lane"} 1"#,
            r#"lookalike_http_request_seconds_count{route="/v1/jobs/{id}",method="GET",status="200"} 1"#,
        ] {
            assert!(text.contains(expected), "missing `{expected}` in:\n{text}");
        }
    }

    /// The README's "Metrics and logs" section is where operators look names up.
    #[test]
    fn every_metric_is_documented_in_the_readme() {
        let readme = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md"),
        )
        .unwrap();
        for m in RECORDED.iter().chain(SCRAPED) {
            assert!(
                readme.contains(&format!("`{}", m.name)),
                "README.md does not list {}",
                m.name
            );
        }
    }
}
