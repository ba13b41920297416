//! The log format: `text` for people, `json` for log collectors.
//!
//! JSON lines are flat: the fields of every span the line was logged in (the request's `method`,
//! `path` and `api_key`; the job's `job_id`) sit at the top level beside the line's own fields, so a
//! collector finds every line of one job with one query, `job_id = "…"`, whichever process, task or
//! thread wrote it. (tracing-subscriber's own JSON format nests span fields under `span` and the
//! line's fields under `fields`, so the same id would live in two places.)
//!
//! ```json
//! {"timestamp":"2026-11-28T12:28:03.869401Z","level":"INFO","target":"lookalike_worker::jobs","message":"job started","job_id":"01a22220-7b89-758d-8137-98dd6d860dd2","redelivered":false,"source":"url","attempt":1,"span":"job"}
//! ```

use std::fmt;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::{JsonFields, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

/// Sets up the process's logging: one JSON object per line when `json` (`log.format = "json"`),
/// else text; `filter` is the tracing filter (`log.filter`), unless `RUST_LOG` is set.
pub fn init_logging(json: bool, filter: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(filter));
    // Logs go to stderr: stdout is for what a command prints (`reindex --json`, `config`).
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder
            .fmt_fields(JsonFields::new())
            .event_format(FlatJson)
            .init();
    } else {
        builder.init();
    }
}

/// One JSON object per line: `timestamp`, `level`, `target`, `message`, then the fields of the
/// enclosing spans (outermost first, inner ones win) and of the event itself (which wins over
/// both), then `span`, the innermost span's name. Span fields must be recorded by [`JsonFields`].
pub struct FlatJson;

impl<S> FormatEvent<S, JsonFields> for FlatJson
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, JsonFields>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut fields = Map::new();
        let mut innermost = None;
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                let extensions = span.extensions();
                if let Some(recorded) = extensions.get::<FormattedFields<JsonFields>>()
                    && let Ok(Value::Object(map)) = serde_json::from_str::<Value>(&recorded.fields)
                {
                    fields.extend(map);
                }
                innermost = Some(span.name());
            }
        }
        let mut own = EventFields::default();
        event.record(&mut own);
        fields.extend(own.fields);

        let meta = event.metadata();
        let target = own.log_target.unwrap_or_else(|| meta.target().to_string());
        let message = fields
            .remove("message")
            .unwrap_or(Value::String(String::new()));
        let fixed = [
            (
                "timestamp",
                Value::String(
                    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
                ),
            ),
            ("level", Value::String(meta.level().to_string())),
            ("target", Value::String(target)),
            ("message", message),
        ];
        // The fixed keys first, so lines read alike, then the spans' and the line's own fields; a
        // field that reuses a fixed key's name cannot overwrite it.
        let rest = fields
            .into_iter()
            .filter(|(k, _)| !matches!(k.as_str(), "timestamp" | "level" | "target" | "span"));
        let span = innermost.map(|name| ("span".to_string(), Value::String(name.into())));
        let mut text = String::from("{");
        let all = fixed
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .chain(rest)
            .chain(span);
        for (i, (key, value)) in all.enumerate() {
            if i > 0 {
                text.push(',');
            }
            text.push_str(&Value::String(key).to_string());
            text.push(':');
            text.push_str(&value.to_string());
        }
        text.push('}');
        writeln!(writer, "{text}")
    }
}

/// An event's fields as JSON values. Records bridged from the `log` crate carry their target as a
/// `log.target` field; it replaces the bridge's own target, and the other `log.*` fields are dropped.
#[derive(Default)]
struct EventFields {
    fields: Map<String, Value>,
    log_target: Option<String>,
}

impl EventFields {
    fn put(&mut self, field: &Field, value: Value) {
        match field.name() {
            "log.target" => self.log_target = value.as_str().map(str::to_string),
            name if name.starts_with("log.") => {}
            name => {
                self.fields.insert(name.to_string(), value);
            }
        }
    }
}

impl Visit for EventFields {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, serde_json::json!(value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, value.into());
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, value.into());
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.put(field, value.to_string().into());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.put(field, format!("{value:?}").into());
    }
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::fmt::MakeWriter;

    use super::*;

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Captured {
        type Writer = Captured;
        fn make_writer(&'a self) -> Self::Writer {
            self.clone()
        }
    }

    /// Runs `f` under the JSON format and returns what it logged, as written.
    fn logged_text(f: impl FnOnce()) -> String {
        let out = Captured::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(out.clone())
            .fmt_fields(JsonFields::new())
            .event_format(FlatJson)
            .finish();
        tracing::subscriber::with_default(subscriber, f);
        String::from_utf8(out.0.lock().unwrap().clone()).unwrap()
    }

    /// Runs `f` under the JSON format and returns the lines it logged, parsed.
    fn logged(f: impl FnOnce()) -> Vec<Map<String, Value>> {
        logged_text(f)
            .lines()
            .map(|l| match serde_json::from_str(l) {
                Ok(Value::Object(m)) => m,
                other => panic!("not a JSON object: {l} ({other:?})"),
            })
            .collect()
    }

    #[test]
    fn span_fields_are_on_every_line_at_the_top_level() {
        let lines = logged(|| {
            let request =
                tracing::info_span!("request", method = "POST", api_key = tracing::field::Empty);
            let _r = request.enter();
            request.record("api_key", "shop");
            tracing::info!(jobs = 2, "outside any job");
            let job = tracing::info_span!("job", job_id = "0193-a", redelivered = false);
            job.in_scope(|| {
                tracing::warn!(code = "fetch_http_status", error = %"404 Not Found", "job failed");
            });
        });
        assert_eq!(lines.len(), 2);
        let (outside, inside) = (&lines[0], &lines[1]);
        assert_eq!(outside["message"], "outside any job");
        assert_eq!(outside["jobs"], 2);
        assert_eq!(outside["method"], "POST");
        assert_eq!(
            outside["api_key"], "shop",
            "fields recorded later are there too"
        );
        assert_eq!(outside["span"], "request");
        assert!(!outside.contains_key("job_id"));

        assert_eq!(inside["job_id"], "0193-a");
        assert_eq!(inside["redelivered"], false);
        assert_eq!(inside["method"], "POST", "outer spans' fields too");
        assert_eq!(inside["code"], "fetch_http_status");
        assert_eq!(inside["error"], "404 Not Found");
        assert_eq!(inside["level"], "WARN");
        assert_eq!(inside["span"], "job");
        assert!(
            inside["target"]
                .as_str()
                .unwrap()
                .starts_with("lookalike_telemetry")
        );
        assert!(
            chrono::DateTime::parse_from_rfc3339(inside["timestamp"].as_str().unwrap()).is_ok()
        );
    }

    #[test]
    fn the_event_wins_over_its_spans_and_the_fixed_keys_come_first() {
        let text = logged_text(|| {
            let outer = tracing::info_span!("job", job_id = "outer", attempt = 1);
            let _o = outer.enter();
            let inner = tracing::info_span!("retry", attempt = 2);
            let _i = inner.enter();
            tracing::info!(attempt = 3, level = "sneaky", "a line");
        });
        assert!(
            text.starts_with(r#"{"timestamp":""#),
            "fixed keys first: {text}"
        );
        let line: Map<String, Value> = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(line["attempt"], 3);
        assert_eq!(line["job_id"], "outer");
        assert_eq!(line["level"], "INFO", "a field cannot pose as the level");
        assert_eq!(line["span"], "retry");
        let keys: Vec<&str> = text
            .trim()
            .trim_matches(|c| c == '{' || c == '}')
            .split(",\"")
            .map(|kv| kv.trim_start_matches('"').split('"').next().unwrap())
            .collect();
        assert_eq!(&keys[..4], ["timestamp", "level", "target", "message"]);
    }

    #[test]
    fn lines_outside_any_span_carry_only_their_own_fields() {
        let lines =
            logged(|| tracing::info!(job_id = "0193-b", "job published by the republisher"));
        assert_eq!(lines[0]["job_id"], "0193-b");
        assert!(!lines[0].contains_key("span"));
    }
}
