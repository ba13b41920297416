//! Writes scrape-time gauges in the Prometheus text format (version 0.0.4).
//!
//! These values (queue depth, jobs by status, index size) are read from their source at every scrape
//! instead of being kept in the recorder: a value the recorder kept would still be shown, stale, while
//! its source is down. Written here, a gauge whose source did not answer is simply left out.

use std::fmt::Write;

use crate::{Kind, Metric};

/// The content type of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Gauges being written; each family's `# HELP` and `# TYPE` lines come once, before its samples.
#[derive(Default)]
pub struct Gauges {
    out: String,
    current: Option<&'static str>,
}

impl Gauges {
    pub fn new() -> Self {
        Self::default()
    }

    /// One sample; `labels` pairs must follow `metric.labels` (same names, same order).
    pub fn sample(&mut self, metric: &Metric, labels: &[&str], value: f64) -> &mut Self {
        debug_assert_eq!(metric.kind, Kind::Gauge, "{}", metric.name);
        debug_assert_eq!(labels.len(), metric.labels.len(), "{}", metric.name);
        if self.current != Some(metric.name) {
            self.current = Some(metric.name);
            let _ = writeln!(
                self.out,
                "# HELP {} {}",
                metric.name,
                escape_help(metric.help)
            );
            let _ = writeln!(self.out, "# TYPE {} gauge", metric.name);
        }
        self.out.push_str(metric.name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (name, value)) in metric.labels.iter().zip(labels).enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{name}=\"{}\"", escape_label(value));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {}", number(value));
        self
    }

    pub fn finish(self) -> String {
        self.out
    }
}

fn escape_help(text: &str) -> String {
    text.replace('\\', r"\\").replace('\n', r"\n")
}

fn escape_label(value: &str) -> String {
    value
        .replace('\\', r"\\")
        .replace('"', "\\\"")
        .replace('\n', r"\n")
}

/// Prometheus spells the special values `NaN`, `+Inf` and `-Inf`; whole numbers need no fraction.
fn number(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else {
        v.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{BUILD_INFO, INDEX_POINTS, QUEUE_MESSAGES};

    #[test]
    fn families_have_one_header_and_their_samples() {
        let mut g = Gauges::new();
        g.sample(&QUEUE_MESSAGES, &["jobs"], 3.0)
            .sample(&QUEUE_MESSAGES, &["dead"], 0.0)
            .sample(&INDEX_POINTS, &[], 12345.0);
        let text = g.finish();
        assert_eq!(
            text,
            format!(
                "# HELP lookalike_queue_messages {}\n# TYPE lookalike_queue_messages gauge\n\
                 lookalike_queue_messages{{queue=\"jobs\"}} 3\nlookalike_queue_messages{{queue=\"dead\"}} 0\n\
                 # HELP lookalike_index_points {}\n# TYPE lookalike_index_points gauge\n\
                 lookalike_index_points 12345\n",
                QUEUE_MESSAGES.help, INDEX_POINTS.help
            )
        );
    }

    #[test]
    fn label_values_are_escaped() {
        let mut g = Gauges::new();
        g.sample(&BUILD_INFO, &["0.1.0", "odd \"model\"\\\nid"], 1.0);
        assert!(
            g.finish()
                .contains(r#"lookalike_build_info{version="0.1.0",model="odd \"model\"\\\nid"} 1"#)
        );
    }

    #[test]
    fn special_values_use_prometheus_spelling() {
        assert_eq!(number(f64::NAN), "NaN");
        assert_eq!(number(f64::INFINITY), "+Inf");
        assert_eq!(number(f64::NEG_INFINITY), "-Inf");
        assert_eq!(number(0.25), "0.25");
        assert_eq!(number(7.0), "7");
    }
}
