//! What operators see: JSON log lines that carry their job's id from submission to the end, and
//! `GET /metrics` counting what happened (README "Metrics and logs").

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use support::images::ImageServer;
use support::*;

const LIMIT: Duration = Duration::from_secs(120);

/// Consumer lines about the worker process rather than a job (connecting, stopping).
const PROCESS_LINES: &[&str] = &[
    "consuming",
    "cannot reach the message broker",
    "broker connection lost; reconnecting",
    "consumer closed by the broker; reconnecting",
    "finishing in-flight jobs",
    "worker stopped",
];

/// Modules whose every line, in a process running jobs, is about one job.
const JOB_MODULES: &[&str] = &[
    "lookalike_worker::jobs",
    "lookalike_worker::ingest",
    "lookalike_analysis::analyser",
    "lookalike_analysis::batcher",
    "lookalike_analysis::fetch",
    "lookalike_analysis::guard",
    "lookalike_analysis::classify",
    "lookalike_analysis::prior",
];

#[tokio::test(flavor = "multi_thread")]
async fn every_line_of_a_job_carries_its_id_and_metrics_count_what_happened() {
    let mut env = TestEnv::new().await;
    env.set("LOG__FORMAT", "json");
    let images = ImageServer::start(reference_dir()).await;
    let service = env.start().await;

    // No category on the good one, so it goes through the classify stage too.
    let ids = service
        .submit_urls(json!([
            {"url": images.url("/files/allstar-sneakers.jpg"), "external_id": "sku-good"},
            {"url": images.url("/missing.jpg"), "external_id": "sku-404"},
        ]))
        .await;
    let (good, bad) = (ids[0].clone(), ids[1].clone());
    let done = service.wait_jobs(&ids, LIMIT).await;
    assert_eq!(done[0]["status"], "succeeded", "{}", done[0]);
    assert_eq!(done[1]["status"], "failed", "{}", done[1]);
    assert_eq!(done[1]["error"]["code"], "fetch_http_status", "{}", done[1]);
    let (status, _) = service.get("/no/such/route").await;
    assert_eq!(status, 404);
    // One similarity query, counted as the `search` stage.
    let (status, similar) = service.get(&format!("/v1/items/{good}/similar")).await;
    assert_eq!(status, 200, "{similar}");

    // ---- logs ----
    // A job's status is committed just before its last line is written: wait for both last lines.
    let lines = wait_for_lines(&service, |lines| {
        has(lines, &good, "job succeeded") && has(lines, &bad, "job failed")
    })
    .await;
    for (id, messages) in [
        (
            &good,
            &[
                "job accepted",
                "job started",
                "image fetched",
                "inference",
                "image decoded and embedded",
                "job succeeded",
            ][..],
        ),
        (&bad, &["job accepted", "job started", "job failed"][..]),
    ] {
        for message in messages {
            assert!(
                has(&lines, id, message),
                "no `{message}` line with job_id {id}:\n{}",
                dump(&lines)
            );
        }
    }
    let accepted = lines
        .iter()
        .find(|l| l["message"] == "job accepted" && l["job_id"] == good.as_str())
        .unwrap();
    assert!(
        accepted["target"]
            .as_str()
            .unwrap()
            .starts_with("lookalike_api"),
        "the API logs the acceptance: {accepted:?}"
    );
    assert_eq!(accepted["external_id"], "sku-good");
    assert_eq!(accepted["source"], "url");
    let failed = lines
        .iter()
        .find(|l| l["message"] == "job failed" && l["job_id"] == bad.as_str())
        .unwrap();
    assert_eq!(failed["code"], "fetch_http_status", "{failed:?}");
    let inference = lines.iter().find(|l| l["message"] == "inference").unwrap();
    assert!(
        inference["target"]
            .as_str()
            .unwrap()
            .starts_with("lookalike_analysis::batcher"),
        "the inference thread's line is tied to its job: {inference:?}"
    );

    for line in &lines {
        let text = Value::Object(line.clone()).to_string();
        let target = line["target"].as_str().unwrap_or_default();
        let message = line["message"].as_str().unwrap_or_default();
        // A line that names a job is that job's line.
        for id in [&good, &bad] {
            if text.contains(id.as_str()) {
                assert_eq!(
                    line.get("job_id").and_then(Value::as_str),
                    Some(id.as_str()),
                    "a line mentions job {id} without carrying its job_id at the top level \
                     (is logging set up with lookalike_telemetry::init_logging?): {text}"
                );
            }
        }
        // Every line the pipeline writes belongs to a job.
        let job_line = JOB_MODULES.iter().any(|m| target.starts_with(m))
            || (target.starts_with("lookalike_worker::consumer")
                && !PROCESS_LINES.contains(&message));
        if job_line {
            let id = line.get("job_id").and_then(Value::as_str);
            assert!(
                id == Some(good.as_str()) || id == Some(bad.as_str()),
                "a worker line without its job's id: {text}"
            );
        }
    }

    // ---- metrics ----
    let response = service
        .client
        .get(service.url("/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    let text = response.text().await.unwrap();
    let m = Samples::parse(&text);
    let one = |name: &str, labels: &[(&str, &str)]| {
        m.value(name, labels)
            .unwrap_or_else(|| panic!("no {name} {labels:?} in:\n{text}"))
    };

    assert_eq!(
        one(
            "lookalike_jobs_total",
            &[("status", "succeeded"), ("code", "none")]
        ),
        1.0
    );
    assert_eq!(
        one(
            "lookalike_jobs_total",
            &[("status", "failed"), ("code", "fetch_http_status")]
        ),
        1.0
    );
    assert_eq!(
        m.sum("lookalike_jobs_total", &[("status", "retried")]),
        0.0,
        "a 404 is not retried"
    );
    assert_eq!(
        one("lookalike_jobs_submitted_total", &[("source", "url")]),
        2.0
    );
    for (stage, count) in [
        ("download", 2.0),
        ("decode", 1.0),
        ("classify", 1.0),
        ("index", 1.0),
        ("commit", 1.0),
        ("search", 1.0),
    ] {
        assert_eq!(
            one("lookalike_stage_seconds_count", &[("stage", stage)]),
            count,
            "{stage}"
        );
        assert!(one("lookalike_stage_seconds_sum", &[("stage", stage)]) > 0.0);
    }
    // Counted per model run (a batch), not per job.
    assert!(one("lookalike_stage_seconds_count", &[("stage", "inference")]) >= 1.0);
    assert!(one("lookalike_inference_batch_size_count", &[]) >= 1.0);
    assert!(one("lookalike_inference_batch_size_bucket", &[("le", "1")]) >= 1.0);
    assert!(
        one(
            "lookalike_stage_seconds_bucket",
            &[("stage", "download"), ("le", "+Inf")]
        ) == 2.0
    );

    for queue in ["jobs", "retry", "dead"] {
        assert_eq!(
            one("lookalike_queue_messages", &[("queue", queue)]),
            0.0,
            "{queue}"
        );
    }
    assert!(one("lookalike_queue_consumers", &[]) >= 1.0);
    for dependency in ["database", "queue", "index"] {
        assert_eq!(
            one("lookalike_dependency_up", &[("dependency", dependency)]),
            1.0
        );
    }
    assert_eq!(
        one("lookalike_jobs_by_status", &[("status", "succeeded")]),
        1.0
    );
    assert_eq!(
        one("lookalike_jobs_by_status", &[("status", "failed")]),
        1.0
    );
    assert_eq!(
        one("lookalike_jobs_by_status", &[("status", "queued")]),
        0.0
    );
    assert_eq!(one("lookalike_index_points", &[]), 1.0);
    assert_eq!(
        one(
            "lookalike_build_info",
            &[
                ("version", env!("CARGO_PKG_VERSION")),
                ("model", "clip-vit-b16-int8+draft")
            ]
        ),
        1.0
    );

    // Requests are timed under their route template; ids never become label values.
    assert_eq!(
        one(
            "lookalike_http_request_seconds_count",
            &[
                ("route", "/v1/images"),
                ("method", "POST"),
                ("status", "202")
            ]
        ),
        1.0
    );
    assert!(
        one(
            "lookalike_http_request_seconds_count",
            &[
                ("route", "/v1/jobs/{id}"),
                ("method", "GET"),
                ("status", "200")
            ]
        ) >= 2.0
    );
    assert_eq!(
        one(
            "lookalike_http_request_seconds_count",
            &[("route", "unmatched"), ("method", "GET"), ("status", "404")]
        ),
        1.0
    );
    assert!(
        !text.contains(&good) && !text.contains(&bad) && !text.contains("/no/such/route"),
        "raw paths leaked into labels:\n{text}"
    );
    for family in [
        "lookalike_jobs_total",
        "lookalike_stage_seconds",
        "lookalike_queue_messages",
    ] {
        assert!(
            text.contains(&format!("# HELP {family} ")),
            "{family} has help text"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_are_open_like_health_checks_and_can_be_switched_off() {
    // With API keys on, the scraper needs none (the rest of the API still does).
    let mut env = TestEnv::new().await;
    let digest = hex::encode(Sha256::digest(b"a key nobody sends"));
    env.set("AUTH__ENABLED", "true")
        .set("AUTH__KEYS", format!("ops:{digest}:read"));
    let service = env.start().await;
    let scrape = service
        .client
        .get(service.url("/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(scrape.status(), 200);
    assert!(
        scrape
            .text()
            .await
            .unwrap()
            .contains("lookalike_build_info")
    );
    assert_eq!(service.get("/v1/status").await.0, 401);
    drop(service);
    drop(env);

    let mut env = TestEnv::new().await;
    env.set("METRICS__ENABLED", "false");
    let service = env.start().await;
    let (status, body) = service.get("/metrics").await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"]["code"], "route_not_found", "{body}");
    assert_eq!(service.get("/healthz").await.0, 200);
}

/// The service's log, every line parsed: in JSON mode, each line is one flat JSON object.
fn parsed_log(service: &Service) -> Vec<Map<String, Value>> {
    service
        .log()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| match serde_json::from_str(l) {
            Ok(Value::Object(m)) => {
                assert!(
                    ["timestamp", "level", "target", "message"]
                        .iter()
                        .all(|k| m.contains_key(*k)),
                    "a log line that is not in the flat JSON format (is logging set up with \
                     lookalike_telemetry::init_logging?): {l}"
                );
                m
            }
            _ => panic!("a log line that is not a JSON object: {l}"),
        })
        .collect()
}

async fn wait_for_lines(
    service: &Service,
    ready: impl Fn(&[Map<String, Value>]) -> bool,
) -> Vec<Map<String, Value>> {
    let start = Instant::now();
    loop {
        let lines = parsed_log(service);
        if ready(&lines) {
            return lines;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the expected lines never came:\n{}",
            dump(&lines)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn has(lines: &[Map<String, Value>], job_id: &str, message: &str) -> bool {
    lines
        .iter()
        .any(|l| l["message"] == message && l.get("job_id").and_then(Value::as_str) == Some(job_id))
}

fn dump(lines: &[Map<String, Value>]) -> String {
    lines
        .iter()
        .map(|l| Value::Object(l.clone()).to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

/// The samples of a Prometheus text exposition: name, labels, value.
struct Samples(Vec<(String, BTreeMap<String, String>, f64)>);

impl Samples {
    fn parse(text: &str) -> Self {
        let mut out = Vec::new();
        for line in text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
        {
            let (series, value) = line.rsplit_once(' ').expect("`series value`");
            let value = match value {
                "+Inf" => f64::INFINITY,
                "-Inf" => f64::NEG_INFINITY,
                v => v.parse().unwrap_or_else(|e| panic!("{line}: value: {e}")),
            };
            let (name, labels) = match series.split_once('{') {
                None => (series.to_string(), BTreeMap::new()),
                Some((name, rest)) => {
                    let body = rest.strip_suffix('}').expect("labels end with }");
                    (name.to_string(), parse_labels(body))
                }
            };
            out.push((name, labels, value));
        }
        Samples(out)
    }

    fn matching<'a>(
        &'a self,
        name: &'a str,
        labels: &'a [(&'a str, &'a str)],
    ) -> impl Iterator<Item = f64> + 'a {
        self.0
            .iter()
            .filter(move |(n, l, _)| {
                n == name
                    && labels
                        .iter()
                        .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|(_, _, v)| *v)
    }

    /// The value of the one series with these labels (among others).
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let found: Vec<f64> = self.matching(name, labels).collect();
        assert!(found.len() <= 1, "several {name} {labels:?}: {found:?}");
        found.first().copied()
    }

    fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.matching(name, labels).sum()
    }
}

/// `a="x",b="y \"quoted\""` -> {a: x, b: y "quoted"}.
fn parse_labels(body: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    let mut chars = body.chars().peekable();
    loop {
        let name: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if name.is_empty() {
            return labels;
        }
        assert_eq!(chars.next(), Some('"'), "label {name} is quoted");
        let mut value = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some('n') => value.push('\n'),
                    Some(other) => value.push(other),
                    None => break,
                },
                '"' => break,
                c => value.push(c),
            }
        }
        labels.insert(name.trim_start_matches(',').to_string(), value);
    }
}
