//! Where an upload search's time goes, from the service's own `/metrics`: the stage histograms
//! (`lookalike_stage_seconds`) and the request histogram of `POST /v1/search`, read before and after
//! the one-client upload phases. Each stage's mean is its summed time over the searches answered in
//! between; what the stages leave of the handler's time (receiving and parsing the multipart body,
//! waiting for a model session, the JSON answer) is reported as `handler_other`, and what the
//! handler's time leaves of the client's (connection, sending the body) as `outside_handler`.

use std::collections::BTreeMap;

use serde_json::{Value, json};

/// The counters that matter here, summed over the stages and the search route.
#[derive(Debug, Clone, Default)]
pub struct Totals {
    /// Seconds and count per stage.
    stages: BTreeMap<String, (f64, f64)>,
    /// Seconds and count of answered `POST /v1/search` requests.
    searches: (f64, f64),
    /// Model runs per session kind (`solo`, `lane`).
    runs: BTreeMap<String, f64>,
}

impl Totals {
    pub async fn read(client: &reqwest::Client, base: &str) -> anyhow::Result<Totals> {
        let text = client
            .get(format!("{base}/metrics"))
            .send()
            .await?
            .error_for_status()?
            .text()
            .await?;
        Ok(Totals::parse(&text))
    }

    fn parse(text: &str) -> Totals {
        let mut t = Totals::default();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let Some((key, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let Ok(value) = value.parse::<f64>() else {
                continue;
            };
            let (name, labels) = match key.split_once('{') {
                Some((n, rest)) => (n, labels(rest.trim_end_matches('}'))),
                None => (key, BTreeMap::new()),
            };
            let label = |k: &str| labels.get(k).map(String::as_str);
            match name {
                "lookalike_stage_seconds_sum" | "lookalike_stage_seconds_count" => {
                    let entry = t
                        .stages
                        .entry(label("stage").unwrap_or("?").to_string())
                        .or_default();
                    if name.ends_with("_sum") {
                        entry.0 += value;
                    } else {
                        entry.1 += value;
                    }
                }
                "lookalike_http_request_seconds_sum" | "lookalike_http_request_seconds_count"
                    if label("route") == Some("/v1/search")
                        && label("method") == Some("POST")
                        && label("status") == Some("200") =>
                {
                    if name.ends_with("_sum") {
                        t.searches.0 += value;
                    } else {
                        t.searches.1 += value;
                    }
                }
                "lookalike_inference_runs_total" => {
                    *t.runs
                        .entry(label("session").unwrap_or("?").to_string())
                        .or_default() += value;
                }
                _ => {}
            }
        }
        t
    }

    /// What happened between `self` (before) and `after`.
    pub fn delta(&self, after: &Totals) -> Totals {
        let stages = after
            .stages
            .iter()
            .map(|(k, (s, c))| {
                let (s0, c0) = self.stages.get(k).copied().unwrap_or_default();
                (k.clone(), (s - s0, c - c0))
            })
            .collect();
        let runs = after
            .runs
            .iter()
            .map(|(k, v)| (k.clone(), v - self.runs.get(k).copied().unwrap_or_default()))
            .collect();
        Totals {
            stages,
            searches: (
                after.searches.0 - self.searches.0,
                after.searches.1 - self.searches.1,
            ),
            runs,
        }
    }

    pub fn add(&mut self, other: &Totals) {
        for (k, (s, c)) in &other.stages {
            let e = self.stages.entry(k.clone()).or_default();
            e.0 += s;
            e.1 += c;
        }
        self.searches.0 += other.searches.0;
        self.searches.1 += other.searches.1;
        for (k, v) in &other.runs {
            *self.runs.entry(k.clone()).or_default() += v;
        }
    }

    /// Mean milliseconds per answered search: each stage, the handler, and the rest of it; the
    /// client's own mean (`client_mean_ms`, measured by the benchmark) gives `outside_handler`.
    /// An error when no search was counted or a stage is missing: the metrics changed under the
    /// benchmark, and zeros would read as "free".
    pub fn per_search(&self, client_mean_ms: f64) -> anyhow::Result<Value> {
        anyhow::ensure!(
            self.searches.1 > 0.0,
            "no POST /v1/search counted in /metrics"
        );
        let n = self.searches.1;
        let ms = |seconds: f64| seconds * 1000.0 / n;
        let handler = ms(self.searches.0);
        let mut stages = serde_json::Map::new();
        let mut staged = 0.0;
        for stage in ["decode", "inference", "classify", "search"] {
            let Some(&(seconds, _)) = self.stages.get(stage).filter(|(_, count)| *count > 0.0)
            else {
                anyhow::bail!("no `{stage}` stage counted in /metrics during the upload searches");
            };
            staged += ms(seconds);
            stages.insert(format!("{stage}_ms"), json!(ms(seconds)));
        }
        Ok(json!({
            "searches": self.searches.1,
            "client_mean_ms": client_mean_ms,
            "handler_mean_ms": handler,
            "stages": stages,
            "handler_other_ms": handler - staged,
            "outside_handler_ms": client_mean_ms - handler,
            "model_runs": self.runs,
        }))
    }
}

/// `a="x",b="y"` → {a: x, b: y} (label values here hold no quotes or commas).
fn labels(s: &str) -> BTreeMap<String, String> {
    s.split(',')
        .filter_map(|pair| {
            let (k, v) = pair.split_once('=')?;
            Some((k.to_string(), v.trim_matches('"').to_string()))
        })
        .collect()
}
