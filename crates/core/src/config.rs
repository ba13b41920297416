//! Layered configuration: `config/default.toml` (compiled in) -> `$LOOKALIKE_CONFIG` -> `LOOKALIKE_*` env.
//!
//! The defaults file is the one place where every setting is documented. Environment variables use
//! `LOOKALIKE_<SECTION>__<KEY>` so any setting can be changed in docker-compose or CI without a file.

use std::path::PathBuf;

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use toml::{Table, Value};

/// The documented defaults, also used by tests that check deployment files against the real keys.
pub const DEFAULTS_TOML: &str = include_str!("../../../config/default.toml");
pub const ENV_PREFIX: &str = "LOOKALIKE_";

#[derive(Debug, Clone, Deserialize, Serialize)]
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
    pub dedupe: Dedupe,
    pub log: Log,
    pub metrics: Metrics,
    pub service: Service,
    pub auth: Auth,
    /// Filterable metadata fields, by name (see [`crate::fields`]).
    #[serde(default)]
    pub fields: crate::fields::Fields,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Log {
    pub format: LogFormat,
    pub filter: String,
}

/// `log.format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// `GET /metrics` (README "Metrics and logs").
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Metrics {
    /// Off: `/metrics` answers 404, for deployments where the API port is reachable from outside.
    pub enabled: bool,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Service {
    pub drain_deadline_ms: u64,
}

/// Who may call the API: keys with scopes (README "API keys").
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Auth {
    pub enabled: bool,
    /// A list of tables in files; the compact text form (`name:sha256:read+write,...`) too, because
    /// deployments set everything through one environment variable per setting.
    #[serde(deserialize_with = "api_keys")]
    pub keys: Vec<ApiKey>,
}

/// One API key as the service knows it: never the key itself, only its SHA-256. The keys are long
/// random tokens, so a plain hash is enough; a slow password hash would only slow every request.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKey {
    /// Shown in logs instead of the key.
    pub name: String,
    /// Hex SHA-256 of the key.
    pub sha256: String,
    pub scopes: Vec<Scope>,
}

/// What a key may do. The scopes are independent: `write` does not include `read`, so a key that
/// only feeds the catalogue cannot read it back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Searches, items, thumbnails, categories, jobs, status.
    Read,
    /// Submissions, deletions, retries, re-classification, searches that add their image.
    Write,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Write => "write",
        }
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Scope {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "read" => Ok(Scope::Read),
            "write" => Ok(Scope::Write),
            other => bail!("unknown scope `{other}` (the scopes are `read` and `write`)"),
        }
    }
}

/// `read`, `write`, `read+write` or `read,write`: sorted, without repeats, never empty.
pub fn parse_scopes(text: &str) -> anyhow::Result<Vec<Scope>> {
    let mut scopes = text
        .split(['+', ','])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::parse)
        .collect::<anyhow::Result<Vec<Scope>>>()?;
    scopes.sort();
    scopes.dedup();
    if scopes.is_empty() {
        bail!("no scopes given (the scopes are `read` and `write`)");
    }
    Ok(scopes)
}

impl ApiKey {
    /// One entry of the compact form: `name:sha256:read+write`.
    pub fn parse(entry: &str) -> anyhow::Result<ApiKey> {
        let parts: Vec<&str> = entry.trim().split(':').map(str::trim).collect();
        let [name, sha256, scopes] = parts[..] else {
            bail!("`{entry}` is not `name:sha256:scopes` (e.g. `shop:<64 hex digits>:read+write`)");
        };
        let key = ApiKey {
            name: name.to_string(),
            sha256: sha256.to_string(),
            scopes: parse_scopes(scopes).with_context(|| format!("key `{name}`"))?,
        };
        key.check()?;
        Ok(key)
    }

    /// The compact form's list: entries separated by commas (blank entries and spaces are ignored).
    pub fn parse_list(text: &str) -> anyhow::Result<Vec<ApiKey>> {
        text.split(',')
            .filter(|e| !e.trim().is_empty())
            .map(ApiKey::parse)
            .collect()
    }

    /// The compact form [`ApiKey::parse`] reads.
    pub fn compact(&self) -> String {
        let scopes: Vec<&str> = self.scopes.iter().map(|s| s.as_str()).collect();
        format!("{}:{}:{}", self.name, self.sha256, scopes.join("+"))
    }

    pub fn allows(&self, scope: Scope) -> bool {
        self.scopes.contains(&scope)
    }

    /// Names stay within characters that survive the compact form, logs and shells unquoted.
    pub fn check(&self) -> anyhow::Result<()> {
        let name = &self.name;
        if name.is_empty()
            || name.len() > 64
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        {
            bail!("API key name `{name}`: use 1 to 64 letters, digits, '.', '_' or '-'");
        }
        if self.sha256.len() != 64 || !self.sha256.chars().all(|c| c.is_ascii_hexdigit()) {
            bail!(
                "API key `{name}`: sha256 must be the key's SHA-256 as 64 hex digits \
                 (`lookalike keys new` prints it)"
            );
        }
        if self.scopes.is_empty() {
            bail!("API key `{name}` has no scopes (give `read`, `write` or both)");
        }
        Ok(())
    }
}

impl Auth {
    /// A service that refuses every request is a misconfiguration: say how to fix it at startup.
    pub fn check_can_serve(&self) -> anyhow::Result<()> {
        if self.enabled && self.keys.is_empty() {
            bail!(
                "API keys are required (auth.enabled = true) but none is configured, so every request \
                 would be refused. Make one with `lookalike keys new --name NAME --scopes read,write` \
                 and give the service the line it prints (LOOKALIKE_AUTH__KEYS=... or [[auth.keys]] \
                 in the $LOOKALIKE_CONFIG file); for local development only, turn keys off with \
                 LOOKALIKE_AUTH__ENABLED=false"
            );
        }
        Ok(())
    }

    fn check(&self) -> anyhow::Result<()> {
        let mut names = std::collections::HashSet::new();
        let mut hashes = std::collections::HashSet::new();
        for key in &self.keys {
            key.check().context("auth.keys")?;
            if !names.insert(key.name.as_str()) {
                bail!("auth.keys: the name `{}` is used twice", key.name);
            }
            // One key under two names would make its scopes and its log name ambiguous.
            if !hashes.insert(key.sha256.to_ascii_lowercase()) {
                bail!(
                    "auth.keys: `{}` has the same sha256 as another key",
                    key.name
                );
            }
        }
        Ok(())
    }
}

fn api_keys<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<ApiKey>, D::Error> {
    struct Keys;
    impl<'de> serde::de::Visitor<'de> for Keys {
        type Value = Vec<ApiKey>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str(
                "a list of {name, sha256, scopes} tables, or text \"name:sha256:read+write,...\"",
            )
        }
        fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Self::Value, E> {
            ApiKey::parse_list(text).map_err(|e| E::custom(format!("{e:#}")))
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> Result<Self::Value, A::Error> {
            let mut keys = Vec::new();
            while let Some(key) = seq.next_element::<ApiKey>()? {
                keys.push(key);
            }
            Ok(keys)
        }
    }
    d.deserialize_any(Keys)
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Http {
    pub listen: String,
    pub max_body_bytes: usize,
    pub max_upload_bytes: usize,
    pub max_items_per_request: usize,
    pub publish_timeout_ms: u64,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Database {
    pub url: SecretUrl,
    pub max_connections: u32,
    pub acquire_timeout_ms: u64,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Queue {
    pub url: SecretUrl,
    pub prefix: String,
    pub max_attempts: u32,
    pub retry_base_ms: u64,
    pub retry_max_ms: u64,
    pub republish_after_ms: u64,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Worker {
    /// Replaced by `model.sessions` (one pool of model sessions per process); still read so that a
    /// configuration that sets it fails to load with a message saying so.
    #[serde(default, skip_serializing)]
    pub pipelines: Option<usize>,
    pub concurrency: u16,
    pub decode_threads: usize,
    pub batch_size: usize,
    pub batch_wait_ms: u64,
    pub job_timeout_ms: u64,
    pub reuse_identical_images: bool,
    pub thumbnail_size: u32,
    /// Where `lookalike worker` serves /healthz, /readyz and /metrics.
    pub listen: String,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
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

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Image {
    pub max_width: u32,
    pub max_height: u32,
    pub max_pixels: u64,
    pub max_alloc_bytes: u64,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Model {
    pub ort_library: PathBuf,
    /// Sessions of one thread each that run side by side when several images wait (0: one per core).
    pub sessions: usize,
    /// Threads of the session that runs an image alone when every other session is idle (0: one
    /// per core).
    pub intra_threads: usize,
    pub id: String,
    pub path: PathBuf,
    pub input_name: String,
    pub output_name: String,
    /// Token output whose pooled patch tokens the classifier head learns from ("" for none: the
    /// head then learns from the embedding).
    pub features_output: String,
    pub dim: usize,
    pub input_size: u32,
    pub resize_shorter: u32,
    #[serde(serialize_with = "short_f32s")]
    pub mean: [f32; 3],
    #[serde(serialize_with = "short_f32s")]
    pub std: [f32; 3],
    pub reduced_decode: ReducedDecode,
}

/// Whether JPEGs are decoded in draft for the model (`model.reduced_decode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ReducedDecode {
    /// On for a new catalogue, off for one whose items were embedded from full decodes
    /// (the database has items of `model.id`), so an upgrade never mixes the two recipes.
    Auto,
    On,
    Off,
}

impl Model {
    /// The suffix the model id takes when JPEGs are decoded in draft: the vectors differ
    /// (slightly) from a full decode's, so they must not be compared with them.
    pub const REDUCED_DECODE_SUFFIX: &'static str = "+draft";

    /// Settles `reduced_decode = "auto"` (`has_full_decode_items`: the catalogue already has
    /// items of `id` made from full decodes) and, when on, makes the model id name the recipe.
    /// Every process and command that embeds calls it once, before the id is used.
    pub fn resolve_decode(&mut self, has_full_decode_items: bool) {
        let on = match self.reduced_decode {
            ReducedDecode::On => true,
            ReducedDecode::Off => false,
            ReducedDecode::Auto => !has_full_decode_items,
        };
        self.reduced_decode = if on {
            ReducedDecode::On
        } else {
            ReducedDecode::Off
        };
        if on && !self.id.ends_with(Self::REDUCED_DECODE_SUFFIX) {
            self.id.push_str(Self::REDUCED_DECODE_SUFFIX);
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Index {
    pub backend: IndexBackend,
    pub data_dir: PathBuf,
    pub optimize_after_points: usize,
    /// Qdrant server (gRPC) for `backend = "qdrant"`.
    pub url: String,
    /// Sent as the server's `api-key`; empty for none.
    pub api_key: Secret,
    /// Collection (or alias) holding this model's vectors.
    pub collection: String,
    /// Keep vectors on disk (memory-mapped) instead of in RAM.
    pub on_disk: bool,
    pub quantization: IndexQuantization,
    pub timeout_ms: u64,
}

/// `index.backend`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum IndexBackend {
    /// The embedded Qdrant engine, inside the one `lookalike serve` process.
    Edge,
    /// A Qdrant server at `index.url` (needed for `lookalike api` and `lookalike worker`).
    Qdrant,
}

impl std::fmt::Display for IndexBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            IndexBackend::Edge => "edge",
            IndexBackend::Qdrant => "qdrant",
        })
    }
}

/// `index.quantization` (server backend).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum IndexQuantization {
    None,
    /// Scalar quantisation: 4x less memory, rescored with the original vectors.
    Int8,
}

/// A secret setting (`index.api_key`): printed and serialised as `***` (empty stays empty, so a
/// printed configuration still says whether one is set).
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    /// The secret itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    fn shown(&self) -> &'static str {
        if self.0.is_empty() { "" } else { "***" }
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.shown())
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.shown())
    }
}

/// A connection string that may carry a password (`database.url`, `queue.url`): printed and
/// serialised with the password as `***` ([`redact`]).
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct SecretUrl(String);

impl SecretUrl {
    pub fn new(url: impl Into<String>) -> Self {
        SecretUrl(url.into())
    }
    /// The whole connection string, password included, for the one place that connects.
    pub fn expose(&self) -> &str {
        &self.0
    }
    /// The string with its password as `***`, for logs and messages.
    pub fn redacted(&self) -> String {
        redact(&self.0)
    }
}

impl std::fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.redacted())
    }
}

impl Serialize for SecretUrl {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.redacted())
    }
}

/// `[dedupe]`: near-duplicate images grouped at ingest.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Dedupe {
    pub enabled: bool,
    #[serde(serialize_with = "short_f32")]
    pub threshold: f32,
}

impl Dedupe {
    /// The cosine at or above which a new image joins a stored one's group, when grouping is on.
    pub fn threshold(&self) -> Option<f32> {
        self.enabled.then_some(self.threshold)
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Classify {
    pub neighbours: usize,
    #[serde(serialize_with = "short_f32")]
    pub neighbour_temperature: f32,
    #[serde(serialize_with = "short_f32")]
    pub prototype_temperature: f32,
    #[serde(serialize_with = "short_f32")]
    pub prototype_weight: f32,
    #[serde(serialize_with = "short_f32")]
    pub confidence_temperature: f32,
    /// Train a softmax head on the labelled items and mix it in (see `lookalike_classifier`).
    pub head: bool,
    /// The head's L2 penalty (on whitened embeddings).
    pub head_l2: f64,
    /// Covariance shrinkage of the head's whitening (times the mean variance, on the diagonal).
    pub head_shrinkage: f64,
    /// Labelled items per category at which the head and the untrained mixture weigh the same.
    #[serde(serialize_with = "short_f32")]
    pub head_takeover: f32,
    /// No head below this many labelled items.
    pub head_min_labels: u32,
    /// Retrain once the labelled items changed by this many since the last training ...
    pub head_retrain_min: u32,
    /// ... and by this share of the last training's size.
    #[serde(serialize_with = "short_f32")]
    pub head_retrain_share: f32,
    /// How often a process looks for a newer head (and a worker checks whether one is due).
    pub head_check_ms: u64,
    #[serde(serialize_with = "short_f32")]
    pub min_confidence: f32,
    #[serde(serialize_with = "short_f32")]
    pub cover: f32,
    pub max_categories: usize,
    /// The catalogue's categories; categories in it without labelled items get the cold-start prior.
    pub categories: Vec<String>,
    /// ImageNet classifier for the cold-start prior (logits output named `logits`).
    pub prior_model: PathBuf,
    /// JSON map from ImageNet class index to catalogue categories.
    pub prior_map: PathBuf,
}

// A printed f32 setting reads as it was written (0.01, not 0.009999999776482582): its shortest
// decimal form, which loads back to the same f32.
fn short_f32<S: serde::Serializer>(v: &f32, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(v.to_string().parse().expect("an f32 prints as a number"))
}

fn short_f32s<S: serde::Serializer>(v: &[f32; 3], s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeSeq;
    let mut seq = s.serialize_seq(Some(v.len()))?;
    for x in v {
        seq.serialize_element(
            &x.to_string()
                .parse::<f64>()
                .expect("an f32 prints as a number"),
        )?;
    }
    seq.end()
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
            let value = match sec.get(&field) {
                // `[fields]` is a map of the catalogue's own names: any key may be declared.
                None if section == "fields" => Value::String(value),
                // A setting that was replaced: passed on, so that `validate` says by what.
                None if section == "worker" && field == "pipelines" => parse_env_value(&value),
                None => {
                    bail!("{key}: unknown setting `{section}.{field}` (see config/default.toml)")
                }
                // A text setting stays text whatever it looks like: an API key of digits, a
                // password "true".
                Some(Value::String(_)) => Value::String(value),
                Some(_) => parse_env_value(&value),
            };
            sec.insert(field, value);
        }
        let config: Config = Value::Table(table)
            .try_into()
            .context("invalid configuration")?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> anyhow::Result<()> {
        self.auth.check()?;
        for name in self.fields.keys() {
            crate::fields::check_name(name).map_err(|e| anyhow::anyhow!("[fields]: {e}"))?;
        }
        if self.worker.concurrency == 0 || self.worker.batch_size == 0 {
            bail!("worker.concurrency and worker.batch_size must be at least 1");
        }
        if self.worker.pipelines.is_some() {
            bail!(
                "worker.pipelines (LOOKALIKE_WORKER__PIPELINES) is gone: a process now runs one pool of model sessions for all its \
                 jobs and searches; set model.sessions (sessions side by side, one thread each; 0 = \
                 one per core) and model.intra_threads (threads for an image that runs alone) instead"
            );
        }
        // NaN is refused too.
        let t = self.classify.confidence_temperature;
        if t.is_nan() || t <= 0.0 {
            bail!("classify.confidence_temperature must be above 0");
        }
        let t = self.dedupe.threshold;
        if !(t > 0.0 && t <= 1.0) {
            bail!("dedupe.threshold must be a cosine above 0 and at most 1");
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

    /// The configuration as a TOML file that loads back to the same settings, every setting
    /// included, secrets as `***` (`lookalike config`).
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("every setting serialises to TOML")
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
    use super::{Model, ReducedDecode};

    fn model(reduced: ReducedDecode) -> Model {
        let mut m = super::Config::load_from(None, Vec::new())
            .expect("defaults load")
            .model;
        m.reduced_decode = reduced;
        m
    }

    #[test]
    fn a_text_setting_from_the_environment_stays_text() {
        let env = [
            ("LOOKALIKE_INDEX__API_KEY", "123456"),
            ("LOOKALIKE_QUEUE__PREFIX", "2026"),
            ("LOOKALIKE_WORKER__CONCURRENCY", "8"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()));
        let config = super::Config::load_from(None, env).expect("loads");
        assert_eq!(config.index.api_key.expose(), "123456");
        assert_eq!(config.queue.prefix, "2026");
        assert_eq!(config.worker.concurrency, 8, "numbers still parse");
    }

    #[test]
    fn the_replaced_pipelines_setting_stops_the_load_and_names_its_successor() {
        let env = vec![("LOOKALIKE_WORKER__PIPELINES".to_string(), "2".to_string())];
        let err = super::Config::load_from(None, env).expect_err("refused");
        let message = format!("{err:#}");
        assert!(
            message.contains("worker.pipelines")
                && message.contains("is gone")
                && message.contains("model.sessions"),
            "{message}"
        );
    }

    #[test]
    fn auto_decodes_in_draft_only_for_a_catalogue_without_full_decode_items() {
        let mut new = model(ReducedDecode::Auto);
        new.resolve_decode(false);
        assert_eq!(new.reduced_decode, ReducedDecode::On);
        assert_eq!(new.id, "clip-vit-b16-int8+draft");
        new.resolve_decode(false);
        assert_eq!(new.id, "clip-vit-b16-int8+draft", "settled once");

        let mut existing = model(ReducedDecode::Auto);
        existing.resolve_decode(true);
        assert_eq!(existing.reduced_decode, ReducedDecode::Off);
        assert_eq!(existing.id, "clip-vit-b16-int8");

        let mut forced = model(ReducedDecode::On);
        forced.resolve_decode(true);
        assert_eq!(forced.id, "clip-vit-b16-int8+draft");
        let mut off = model(ReducedDecode::Off);
        off.resolve_decode(false);
        assert_eq!(off.id, "clip-vit-b16-int8");
    }

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
        assert_eq!(c.database.url.expose(), "postgres://x@h/db");
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
        let err =
            Config::load_from(None, env(&[("LOOKALIKE_INDEX__BACKEND", "qdrnt")])).unwrap_err();
        let err = format!("{err:#}");
        assert!(err.contains("qdrnt") && err.contains("qdrant"), "{err}");
    }

    #[test]
    fn the_printed_configuration_loads_back_to_the_same_settings_without_its_secrets() {
        let loaded = Config::load_from(
            None,
            env(&[
                (
                    "LOOKALIKE_DATABASE__URL",
                    "postgres://app:pg-secret@db:5432/lookalike",
                ),
                ("LOOKALIKE_QUEUE__URL", "amqp://app:mq-secret@mq:5672/%2f"),
                ("LOOKALIKE_INDEX__API_KEY", "qdrant-secret"),
                ("LOOKALIKE_INDEX__BACKEND", "qdrant"),
                ("LOOKALIKE_LOG__FORMAT", "json"),
                ("LOOKALIKE_WORKER__CONCURRENCY", "7"),
                ("LOOKALIKE_CLASSIFY__CATEGORIES", r#"["coats", "shoes"]"#),
                ("LOOKALIKE_AUTH__KEYS", &format!("shop:{HASH_A}:read+write")),
            ]),
        )
        .unwrap();
        let printed = loaded.to_toml();
        for secret in ["pg-secret", "mq-secret", "qdrant-secret"] {
            assert!(!printed.contains(secret), "{secret} in\n{printed}");
        }
        assert!(
            printed.contains("postgres://app:***@db:5432/lookalike"),
            "{printed}"
        );

        // Every setting of the defaults is printed ...
        let defaults: Table = DEFAULTS_TOML.parse().unwrap();
        let shown: Table = printed.parse().expect("the output is TOML");
        for (section, fields) in &defaults {
            for field in fields.as_table().unwrap().keys() {
                assert!(
                    shown.get(section).and_then(|s| s.get(field)).is_some(),
                    "{section}.{field} missing from\n{printed}"
                );
            }
        }
        // ... and the output, as a config file, gives the same settings (the secrets aside).
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("printed.toml");
        std::fs::write(&file, &printed).unwrap();
        let reloaded = Config::load_from(Some(&file), env(&[])).unwrap();
        assert_eq!(reloaded.to_toml(), printed);
        assert_eq!(reloaded.worker.concurrency, 7);
        assert_eq!(reloaded.index.backend, IndexBackend::Qdrant);
        assert_eq!(reloaded.auth.keys, loaded.auth.keys);
    }

    #[test]
    fn secrets_are_redacted_in_debug_output() {
        let c = Config::load_from(None, env(&[("LOOKALIKE_INDEX__API_KEY", "s3cret")])).unwrap();
        let shown = format!("{c:?}");
        assert!(!shown.contains("guest:guest"), "{shown}");
        assert!(!shown.contains("s3cret"), "{shown}");
        // Every field is there (the hand-written impls this replaced dropped some).
        assert!(
            shown.contains("acquire_timeout_ms") && shown.contains("retry_max_ms"),
            "{shown}"
        );
        assert_eq!(redact("amqp://u:p@h:5672/v"), "amqp://u:***@h:5672/v");
    }

    #[test]
    fn env_names_cover_every_setting() {
        let names = Config::env_names();
        assert!(names.contains(&"LOOKALIKE_WORKER__BATCH_SIZE".to_string()));
        assert!(names.contains(&"LOOKALIKE_INDEX__DATA_DIR".to_string()));
        assert!(names.contains(&"LOOKALIKE_AUTH__ENABLED".to_string()));
        assert!(names.contains(&"LOOKALIKE_AUTH__KEYS".to_string()));
        assert!(names.contains(&"LOOKALIKE_METRICS__ENABLED".to_string()));
    }

    const HASH_A: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
    const HASH_B: &str = "60303AE22B998861BCE3B28F33EEC1BE758A213C86C93C076DBE9F558C11C752";

    #[test]
    fn keys_are_required_by_default_and_serving_without_any_says_how_to_fix_it() {
        let c = Config::load_from(None, env(&[])).unwrap();
        assert!(c.auth.enabled);
        assert!(c.auth.keys.is_empty());
        let err = c.auth.check_can_serve().unwrap_err().to_string();
        assert!(err.contains("lookalike keys new"), "{err}");
        assert!(err.contains("LOOKALIKE_AUTH__KEYS"), "{err}");
        assert!(err.contains("LOOKALIKE_AUTH__ENABLED=false"), "{err}");

        let off = Config::load_from(None, env(&[("LOOKALIKE_AUTH__ENABLED", "false")])).unwrap();
        assert!(!off.auth.enabled);
        off.auth.check_can_serve().unwrap();
    }

    #[test]
    fn keys_come_from_one_environment_variable_in_the_compact_form() {
        let line = format!(" shop:{HASH_A}:read+write , page:{HASH_B}:read,");
        let c = Config::load_from(None, env(&[("LOOKALIKE_AUTH__KEYS", &line)])).unwrap();
        assert_eq!(c.auth.keys.len(), 2);
        let (shop, page) = (&c.auth.keys[0], &c.auth.keys[1]);
        assert_eq!(shop.name, "shop");
        assert_eq!(shop.sha256, HASH_A);
        assert_eq!(shop.scopes, vec![Scope::Read, Scope::Write]);
        assert_eq!(page.scopes, vec![Scope::Read]);
        assert!(page.allows(Scope::Read) && !page.allows(Scope::Write));
        c.auth.check_can_serve().unwrap();
        // What `lookalike keys new` prints reads back as the same key.
        assert_eq!(ApiKey::parse(&shop.compact()).unwrap(), *shop);

        let empty = Config::load_from(None, env(&[("LOOKALIKE_AUTH__KEYS", "")])).unwrap();
        assert!(empty.auth.keys.is_empty());
    }

    #[test]
    fn keys_in_a_file_are_tables() {
        let inline: Auth = toml::from_str(&format!(
            "enabled = true\nkeys = [{{ name = \"shop\", sha256 = \"{HASH_A}\", scopes = [\"write\"] }}]"
        ))
        .unwrap();
        assert_eq!(inline.keys[0].scopes, vec![Scope::Write]);
        let tables: Auth = toml::from_str(&format!(
            "enabled = true\n[[keys]]\nname = \"a\"\nsha256 = \"{HASH_A}\"\nscopes = [\"read\"]\n\
             [[keys]]\nname = \"b\"\nsha256 = \"{HASH_B}\"\nscopes = [\"read\", \"write\"]"
        ))
        .unwrap();
        assert_eq!(tables.keys.len(), 2);
        assert_eq!(tables.keys[1].name, "b");
        let typo = toml::from_str::<Auth>(&format!(
            "enabled = true\nkeys = [{{ name = \"a\", sha256 = \"{HASH_A}\", scope = [\"read\"] }}]"
        ));
        assert!(typo.is_err());
    }

    #[test]
    fn malformed_keys_stop_the_service_at_startup() {
        let bad = |value: String| {
            Config::load_from(None, env(&[("LOOKALIKE_AUTH__KEYS", value.as_str())]))
                .map(|_| ())
                .map_err(|e| format!("{e:#}"))
                .unwrap_err()
        };
        let short = bad("shop:abc123:read".into());
        assert!(short.contains("64 hex digits"), "{short}");
        let scope = bad(format!("shop:{HASH_A}:admin"));
        assert!(scope.contains("unknown scope `admin`"), "{scope}");
        assert!(bad(format!("shop:{HASH_A}:")).contains("no scopes"));
        assert!(bad(format!("shop:{HASH_A}")).contains("name:sha256:scopes"));
        assert!(bad(format!("sh op:{HASH_A}:read")).contains("name `sh op`"));
        let twice = bad(format!("a:{HASH_A}:read,a:{HASH_B}:read"));
        assert!(twice.contains("`a` is used twice"), "{twice}");
        let same = bad(format!("a:{HASH_A}:read,b:{}:write", HASH_A.to_uppercase()));
        assert!(same.contains("same sha256"), "{same}");
    }

    #[test]
    fn scopes_are_read_and_write_in_any_spelling_of_the_list() {
        assert_eq!(
            parse_scopes("write,read").unwrap(),
            vec![Scope::Read, Scope::Write]
        );
        assert_eq!(parse_scopes(" Read + read ").unwrap(), vec![Scope::Read]);
        assert!(parse_scopes("").is_err());
        assert!(parse_scopes("read,delete").is_err());
    }
}
