//! Layered configuration: `config/default.toml` (compiled in) -> `$LOOKALIKE_CONFIG` -> `LOOKALIKE_*` env.
//!
//! The defaults file is the one place where every setting is documented. Environment variables use
//! `LOOKALIKE_<SECTION>__<KEY>` so any setting can be changed in docker-compose or CI without a file.

use std::path::PathBuf;

use anyhow::{Context, bail};
use serde::Deserialize;
use toml::{Table, Value};

/// The documented defaults, also used by tests that check deployment files against the real keys.
pub const DEFAULTS_TOML: &str = include_str!("../../../config/default.toml");
pub const ENV_PREFIX: &str = "LOOKALIKE_";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub http: Http,
    pub database: Database,
    pub queue: Queue,
    pub worker: Worker,
    pub fetch: Fetch,
    pub image: Image,
    pub model: Model,
    pub index: Index,
    pub classify: Classify,
    pub log: Log,
    pub service: Service,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Log {
    pub format: String,
    pub filter: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Service {
    pub drain_deadline_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Http {
    pub listen: String,
    pub max_body_bytes: usize,
    pub max_upload_bytes: usize,
    pub max_items_per_request: usize,
    pub publish_timeout_ms: u64,
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Database {
    pub url: String,
    pub max_connections: u32,
    pub acquire_timeout_ms: u64,
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Queue {
    pub url: String,
    pub prefix: String,
    pub max_attempts: u32,
    pub retry_base_ms: u64,
    pub retry_max_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Worker {
    pub concurrency: u16,
    pub decode_threads: usize,
    pub batch_size: usize,
    pub batch_wait_ms: u64,
    pub job_timeout_ms: u64,
    pub reuse_identical_images: bool,
    pub thumbnail_size: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fetch {
    pub connect_timeout_ms: u64,
    pub total_timeout_ms: u64,
    pub max_body_bytes: u64,
    pub max_redirects: usize,
    pub user_agent: String,
    pub allow_hosts: Vec<String>,
    pub allow_cidrs: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Image {
    pub max_width: u32,
    pub max_height: u32,
    pub max_pixels: u64,
    pub max_alloc_bytes: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Model {
    pub ort_library: PathBuf,
    pub intra_threads: usize,
    pub id: String,
    pub path: PathBuf,
    pub input_name: String,
    pub output_name: String,
    pub dim: usize,
    pub input_size: u32,
    pub resize_shorter: u32,
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Index {
    pub backend: String,
    pub data_dir: PathBuf,
    pub optimize_after_points: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Classify {
    pub neighbours: usize,
    pub neighbour_temperature: f32,
    pub prototype_temperature: f32,
    pub prototype_weight: f32,
    pub min_confidence: f32,
    pub cover: f32,
    pub max_categories: usize,
}

// Connection strings may carry passwords: never print them.
impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Database")
            .field("url", &redact(&self.url))
            .field("max_connections", &self.max_connections)
            .finish()
    }
}
impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue")
            .field("url", &redact(&self.url))
            .field("prefix", &self.prefix)
            .field("max_attempts", &self.max_attempts)
            .finish()
    }
}

/// `scheme://user:secret@host` -> `scheme://user:***@host`.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.find(':') {
                Some(c) => format!("{}{}:***{}", &url[..s + 3], &creds[..c], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

impl Config {
    /// Defaults, then `$LOOKALIKE_CONFIG`, then the process environment.
    pub fn load() -> anyhow::Result<Self> {
        let file = std::env::var_os("LOOKALIKE_CONFIG").map(PathBuf::from);
        Self::load_from(file.as_deref(), std::env::vars())
    }

    /// Same as [`Config::load`] with explicit inputs, so tests need not touch the process environment.
    pub fn load_from(
        file: Option<&std::path::Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> anyhow::Result<Self> {
        let mut table: Table = DEFAULTS_TOML.parse().context("built-in defaults")?;
        if let Some(path) = file {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading config file {}", path.display()))?;
            let overlay: Table = text
                .parse()
                .with_context(|| format!("parsing config file {}", path.display()))?;
            merge(&mut table, overlay);
        }
        for (key, value) in env {
            let Some(rest) = key.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            let Some((section, field)) = rest.split_once("__") else {
                continue;
            };
            let (section, field) = (section.to_ascii_lowercase(), field.to_ascii_lowercase());
            let Some(Value::Table(sec)) = table.get_mut(&section) else {
                bail!("{key}: unknown section `{section}` (see config/default.toml)");
            };
            if !sec.contains_key(&field) {
                bail!("{key}: unknown setting `{section}.{field}` (see config/default.toml)");
            }
            sec.insert(field, parse_env_value(&value));
        }
        let config: Config = Value::Table(table)
            .try_into()
            .context("invalid configuration")?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> anyhow::Result<()> {
        if self.worker.concurrency == 0 || self.worker.batch_size == 0 {
            bail!("worker.concurrency and worker.batch_size must be at least 1");
        }
        if !matches!(self.log.format.as_str(), "text" | "json") {
            bail!("log.format must be \"text\" or \"json\"");
        }
        if self.index.backend != "edge" {
            bail!("index.backend must be \"edge\" (the embedded Qdrant engine)");
        }
        if self.queue.max_attempts == 0 {
            bail!("queue.max_attempts must be at least 1");
        }
        if self.model.dim == 0 || self.model.input_size == 0 {
            bail!("model.dim and model.input_size must be positive");
        }
        if self.model.resize_shorter < self.model.input_size {
            bail!("model.resize_shorter must be at least model.input_size (the crop)");
        }
        if !self
            .queue
            .prefix
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        {
            bail!("queue.prefix may hold only letters, digits, '.', '_' and '-'");
        }
        Ok(())
    }

    /// Every `LOOKALIKE_<SECTION>__<KEY>` name the binaries read, for checks on deployment files.
    pub fn env_names() -> Vec<String> {
        let table: Table = DEFAULTS_TOML.parse().expect("built-in defaults parse");
        let mut names = vec!["LOOKALIKE_CONFIG".to_string()];
        for (section, value) in &table {
            if let Value::Table(fields) = value {
                for field in fields.keys() {
                    names.push(format!(
                        "{ENV_PREFIX}{}__{}",
                        section.to_ascii_uppercase(),
                        field.to_ascii_uppercase()
                    ));
                }
            }
        }
        names
    }
}

fn parse_env_value(raw: &str) -> Value {
    // `key = <raw>` parses for numbers, booleans and arrays; anything else is a plain string.
    match format!("v = {raw}").parse::<Table>() {
        Ok(mut t) => t
            .remove("v")
            .unwrap_or_else(|| Value::String(raw.to_string())),
        Err(_) => Value::String(raw.to_string()),
    }
}

fn merge(base: &mut Table, overlay: Table) {
    for (k, v) in overlay {
        match (base.get_mut(&k), v) {
            (Some(Value::Table(b)), Value::Table(o)) => merge(b, o),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_load_and_validate() {
        let c = Config::load_from(None, env(&[])).unwrap();
        assert_eq!(c.model.dim, 512);
        assert_eq!(c.queue.prefix, "lookalike");
    }

    #[test]
    fn environment_overrides_typed_values() {
        let c = Config::load_from(
            None,
            env(&[
                ("LOOKALIKE_WORKER__CONCURRENCY", "4"),
                ("LOOKALIKE_DATABASE__URL", "postgres://x@h/db"),
                ("LOOKALIKE_MODEL__MEAN", "[0.5, 0.5, 0.5]"),
                ("UNRELATED", "1"),
            ]),
        )
        .unwrap();
        assert_eq!(c.worker.concurrency, 4);
        assert_eq!(c.database.url, "postgres://x@h/db");
        assert_eq!(c.model.mean, [0.5, 0.5, 0.5]);
    }

    #[test]
    fn unknown_environment_setting_is_an_error() {
        let err = Config::load_from(None, env(&[("LOOKALIKE_WORKER__CONCURENCY", "4")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("worker.concurency"), "{err}");
    }

    #[test]
    fn invalid_values_are_rejected_at_startup() {
        assert!(Config::load_from(None, env(&[("LOOKALIKE_WORKER__BATCH_SIZE", "0")])).is_err());
        assert!(Config::load_from(None, env(&[("LOOKALIKE_QUEUE__PREFIX", "a b")])).is_err());
    }

    #[test]
    fn secrets_are_redacted_in_debug_output() {
        let c = Config::load_from(None, env(&[])).unwrap();
        let shown = format!("{:?}", c.queue);
        assert!(!shown.contains("guest:guest"), "{shown}");
        assert_eq!(redact("amqp://u:p@h:5672/v"), "amqp://u:***@h:5672/v");
    }

    #[test]
    fn env_names_cover_every_setting() {
        let names = Config::env_names();
        assert!(names.contains(&"LOOKALIKE_WORKER__BATCH_SIZE".to_string()));
        assert!(names.contains(&"LOOKALIKE_INDEX__DATA_DIR".to_string()));
    }
}
