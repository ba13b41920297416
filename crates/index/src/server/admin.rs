//! Connecting, and the collection and alias management behind it and behind `reindex`.

use std::sync::{Arc, OnceLock};

use anyhow::Context as _;
use lookalike_core::backoff::Backoff;
use qdrant_client::Qdrant;
use qdrant_client::qdrant::alias_operations::Action;
use qdrant_client::qdrant::collections_client::CollectionsClient;
use qdrant_client::qdrant::r#match::MatchValue;
use qdrant_client::qdrant::vectors_config::Config;
use qdrant_client::qdrant::{
    AliasOperations, ChangeAliases, Condition, CountPointsBuilder, CreateAlias,
    CreateCollectionBuilder, CreateFieldIndexCollectionBuilder, DeleteAlias, Distance, FieldType,
    Filter, PayloadSchemaType, ScalarQuantizationBuilder, VectorParamsBuilder,
};
use tonic::transport::{ClientTlsConfig, Endpoint};

use std::time::Duration;

use super::convert::{client_error, status_code, status_error};
use super::{QdrantIndex, Quantization, Readiness, ServerOptions};
use crate::{CATEGORY_KEY, GroupBy, IndexError, MODEL_ID_KEY};

/// The payload fields every lookalike collection filters or groups on, each with a keyword index.
fn indexed_keys() -> Vec<String> {
    [CATEGORY_KEY, MODEL_ID_KEY]
        .map(str::to_owned)
        .into_iter()
        .chain(GroupBy::ALL.map(GroupBy::path))
        .collect()
}

/// What [`QdrantIndex::adopt_alias`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AliasSwitch {
    /// The alias now names this collection; `previous` is the one it named before, if any.
    Switched { previous: Option<String> },
    /// This index uses the pre-alias collection of that very name: nothing to switch.
    IsTheCollection,
    /// A collection (from before per-model collections) holds the alias's name; the alias can be
    /// made once it is dropped.
    NameTaken,
}

/// The collection of `model`'s vectors under alias `alias`: `<alias>-<model>`, the model id
/// with every character outside `[A-Za-z0-9_-]` replaced by `_` (collection names end up in
/// URLs and file names on the server).
pub fn collection_for_model(alias: &str, model: &str) -> String {
    let model: String = model
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{alias}-{model}")
}

/// The qdrant-client release this crate is built with (kept equal to Cargo.lock by a test).
/// Qdrant supports a client and server at most one minor version apart.
pub const CLIENT_VERSION: &str = "1.19.0";

/// Why the collection could not be made ready, by what should happen next.
#[derive(Debug)]
pub(super) enum PrepareError {
    /// The server cannot be reached, or refuses us for now (key, permission): try again later.
    Retry(IndexError),
    /// The server answers, but this process cannot work with it (its version, the collection's
    /// dimension or distance): refuse to start, and say why.
    Refuse(anyhow::Error),
}

impl PrepareError {
    /// For callers that give up at once (admin commands, tests): the error as it stands.
    fn into_anyhow(self) -> anyhow::Error {
        match self {
            PrepareError::Retry(e) => anyhow::Error::new(e),
            PrepareError::Refuse(e) => e,
        }
    }
}

impl std::fmt::Display for PrepareError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PrepareError::Retry(e) => write!(f, "{e}"),
            PrepareError::Refuse(e) => write!(f, "{e:#}"),
        }
    }
}

/// `Ok` when a client of version `client` may talk to a server of version `server`: same
/// major version, minor versions at most one apart (Qdrant's own rule). Versions are compared
/// on their first two numbers, so `1.18.3-dev` counts as 1.18.
pub fn check_versions(server: &str, client: &str) -> Result<(), String> {
    fn major_minor(v: &str) -> Option<(u64, u64)> {
        let mut parts = v.trim().trim_start_matches('v').split(['.', '-', '+']);
        Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
    }
    let (Some(s), Some(c)) = (major_minor(server), major_minor(client)) else {
        return Err(format!(
            "cannot compare Qdrant server version {server:?} with client version {client:?}"
        ));
    };
    if s.0 == c.0 && s.1.abs_diff(c.1) <= 1 {
        Ok(())
    } else {
        Err(format!(
            "the Qdrant server is version {server}, but lookalike is built with qdrant-client \
             {client}; they must be at most one minor version apart: run a Qdrant server \
             {}.{}.x to {}.{}.x",
            c.0,
            c.1.saturating_sub(1),
            c.0,
            c.1 + 1
        ))
    }
}

impl QdrantIndex {
    /// Connect to the server and make sure `opts.collection` is usable: an existing collection
    /// (or the collection behind an alias of that name) must hold unnamed cosine vectors of
    /// dimension `opts.dim`; a missing one is created with the configured layout and keyword
    /// indexes on the category, the model id and the group keys (an existing one gains those it
    /// lacks). Fails when the server cannot be reached, or runs a version this client does not
    /// support. For admin commands and tests; a service process uses [`QdrantIndex::open`],
    /// which also starts while the server is away.
    pub async fn connect(opts: ServerOptions) -> anyhow::Result<QdrantIndex> {
        let index = Self::unprepared(opts)?;
        index.prepare().await.map_err(PrepareError::into_anyhow)?;
        index.readiness.set_ready();
        Ok(index)
    }

    /// A connection for managing collections and aliases only (the version checked, no
    /// collection made or checked); requests on points go to `opts.collection` as it is.
    pub async fn connect_admin(opts: ServerOptions) -> anyhow::Result<QdrantIndex> {
        let index = Self::unprepared(opts)?;
        index
            .check_server()
            .await
            .map_err(PrepareError::into_anyhow)?;
        index.readiness.set_ready();
        Ok(index)
    }

    /// Like [`QdrantIndex::connect`], but a server that cannot be reached (or refuses the key)
    /// does not stop the process: the index answers [`IndexError::Unavailable`] (or
    /// [`IndexError::Misconfigured`]) until a background task, retrying with backoff, has
    /// reached the server and checked the collection. Only what retrying cannot fix fails here
    /// (an incompatible server version, a collection of another dimension or distance).
    pub async fn open(opts: ServerOptions) -> anyhow::Result<QdrantIndex> {
        let index = Self::unprepared(opts)?;
        match index.prepare().await {
            Ok(()) => {
                index.readiness.set_ready();
                return Ok(index);
            }
            Err(PrepareError::Refuse(e)) => return Err(e),
            Err(PrepareError::Retry(e)) => {
                tracing::warn!(url = %index.opts.url, error = %e, "Qdrant is not ready; starting without it and retrying in the background");
                index.readiness.set_problem(e);
            }
        }
        // The same index (readiness and collection included), so the task's success is the caller's.
        let background = QdrantIndex {
            client: index.client.clone(),
            collection: index.collection.clone(),
            dim: index.dim,
            opts: index.opts.clone(),
            readiness: index.readiness.clone(),
        };
        tokio::spawn(async move {
            let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(10));
            loop {
                let delay = backoff.next_delay();
                tokio::time::sleep(delay).await;
                match background.prepare().await {
                    Ok(()) => {
                        background.readiness.set_ready();
                        tracing::info!(url = %background.opts.url, collection = %background.collection(), "Qdrant reached; vector index ready");
                        return;
                    }
                    Err(PrepareError::Retry(e)) => {
                        tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "Qdrant still not ready");
                        background.readiness.set_problem(e);
                    }
                    Err(PrepareError::Refuse(e)) => {
                        tracing::error!(error = %format!("{e:#}"), "Qdrant cannot be used as configured; fix it, the check is retried");
                        background
                            .readiness
                            .set_problem(IndexError::Misconfigured(format!("{e:#}")));
                    }
                }
            }
        });
        Ok(index)
    }

    fn unprepared(opts: ServerOptions) -> anyhow::Result<QdrantIndex> {
        anyhow::ensure!(opts.dim > 0, "vector dimension must be positive");
        anyhow::ensure!(!opts.collection.is_empty(), "collection name is empty");
        let client = Qdrant::from_url(&opts.url)
            .api_key(opts.api_key.clone())
            .timeout(opts.timeout)
            .connect_timeout(opts.timeout)
            // The built-in check blocks the calling thread on a runtime of its own and only
            // prints to stdout; `prepare` checks the same rule and refuses to go on.
            .skip_compatibility_check()
            .build()
            .with_context(|| format!("Qdrant URL {:?}", opts.url))?;
        Ok(QdrantIndex {
            client,
            collection: Arc::new(OnceLock::new()),
            dim: Some(opts.dim),
            opts: Arc::new(opts),
            readiness: Arc::new(Readiness::default()),
        })
    }

    /// Health check, version check, collection check (or creation).
    async fn prepare(&self) -> Result<(), PrepareError> {
        self.check_server().await?;
        self.ensure_collection().await.map_err(|e| {
            // A gRPC answer (server away, key refused) may change; a wrong collection layout
            // found by the checks below will not.
            match e
                .chain()
                .find_map(|c| c.downcast_ref::<qdrant_client::QdrantError>())
            {
                Some(q) => PrepareError::Retry(match status_code(q) {
                    Some(code) => status_error(&tonic::Status::new(code, format!("{e:#}"))),
                    None => IndexError::Unavailable(format!("{e:#}")),
                }),
                None => PrepareError::Refuse(e),
            }
        })
    }

    /// The server answers, and runs a version this client may talk to.
    async fn check_server(&self) -> Result<(), PrepareError> {
        let health = self.client.health_check().await.map_err(|e| {
            // Down (unavailable) or refusing the key (misconfigured): both may be fixed later.
            PrepareError::Retry(match client_error(e) {
                IndexError::Misconfigured(why) => IndexError::Misconfigured(format!(
                    "Qdrant at {} refuses us: {why}",
                    self.opts.url
                )),
                other => IndexError::Unavailable(format!(
                    "Qdrant at {} is not reachable: {other}",
                    self.opts.url
                )),
            })
        })?;
        check_versions(&health.version, CLIENT_VERSION)
            .map_err(|e| PrepareError::Refuse(anyhow::anyhow!(e)))?;
        tracing::info!(url = %self.opts.url, version = %health.version, "connected to Qdrant");
        Ok(())
    }

    /// Decides which collection this index uses, making it (and the alias) when missing, and
    /// checks its layout. Without a model id: `opts.collection`, or the collection behind an alias
    /// of that name. With one (the service), see [`QdrantIndex::model_collection`].
    async fn ensure_collection(&self) -> anyhow::Result<()> {
        let dim = self.opts.dim;
        let name = match &self.opts.model_id {
            Some(model) => self.model_collection(model).await?,
            None => {
                let name = &self.opts.collection;
                let target = self
                    .collection_behind(name)
                    .await?
                    .unwrap_or_else(|| name.clone());
                if self.collection_exists(&target).await? {
                    self.check_collection(&target, dim).await?;
                } else {
                    self.create_checked(name, dim).await?;
                }
                name.clone()
            }
        };
        // A background retry may find it decided already: it is the same answer.
        let _ = self.collection.set(name);
        Ok(())
    }

    /// The collection of `model`'s vectors, made ready:
    /// 1. `<alias>-<model>` ([`collection_for_model`]) when it exists; on an empty server it is
    ///    created, and the alias (`opts.collection`) pointed at it.
    /// 2. A deployment from before per-model collections has a real collection where the alias
    ///    would be: it is used as it is while it holds this model's vectors (its dimension, no
    ///    point of another model), so upgrading needs no migration. A later model change creates
    ///    the new model's collection beside it; the alias can take the old name once the old
    ///    collection is dropped (README "Changing the model").
    /// 3. Otherwise (the alias points at another model's collection, or the old collection holds
    ///    another model) the model's collection is created beside it; the alias is left alone:
    ///    only `lookalike reindex --adopt` moves it.
    async fn model_collection(&self, model: &str) -> anyhow::Result<String> {
        let (alias, dim) = (&self.opts.collection, self.opts.dim);
        let own = collection_for_model(alias, model);
        let behind = self.collection_behind(alias).await?;
        let alias_is_collection = behind.is_none() && self.collection_exists(alias).await?;
        if self.collection_exists(&own).await? {
            self.check_collection(&own, dim).await?;
        } else if alias_is_collection && self.holds_only(alias, dim, model).await? {
            self.check_collection(alias, dim).await?;
            tracing::warn!(collection = %alias, model, "using the collection made before per-model collections; it keeps its name until the next model change");
            return Ok(alias.clone());
        } else {
            self.create_checked(&own, dim).await?;
        }
        if behind.is_none() && !alias_is_collection {
            // First start: the alias names the model in use. Another process may race us to it.
            if let Err(e) = self.point_alias(alias, &own).await
                && self.collection_behind(alias).await?.is_none()
            {
                return Err(e);
            }
        } else if let Some(current) = behind.filter(|c| *c != own) {
            tracing::info!(alias = %alias, current = %current, collection = %own, model, "the alias names another model's collection; this process uses its own model's");
        }
        Ok(own)
    }

    /// True when collection `name` has vectors of dimension `dim` and no point of another model
    /// than `model`.
    async fn holds_only(&self, name: &str, dim: usize, model: &str) -> anyhow::Result<bool> {
        if self.collection_dim(name).await? != Some(dim as u64) {
            return Ok(false);
        }
        let others = Filter::must_not([Condition::matches(
            MODEL_ID_KEY,
            MatchValue::Keyword(model.to_owned()),
        )]);
        let request = CountPointsBuilder::new(name).filter(others).exact(true);
        let count = self
            .client
            .count(request)
            .await
            .with_context(|| format!("counting other models' points in {name}"))?;
        Ok(count.result.map_or(0, |r| r.count) == 0)
    }

    /// Creates `name`, or checks it when another process created it first.
    async fn create_checked(&self, name: &str, dim: usize) -> anyhow::Result<()> {
        if let Err(e) = self.create_collection(name, dim).await {
            if self.collection_exists(name).await? {
                return self.check_collection(name, dim).await;
            }
            return Err(e);
        }
        tracing::info!(collection = %name, dim, "created Qdrant collection");
        Ok(())
    }

    async fn collection_dim(&self, name: &str) -> anyhow::Result<Option<u64>> {
        let info = self
            .client
            .collection_info(name)
            .await
            .with_context(|| format!("reading Qdrant collection {name}"))?;
        Ok(
            match info
                .result
                .and_then(|i| i.config)
                .and_then(|c| c.params)
                .and_then(|p| p.vectors_config)
                .and_then(|v| v.config)
            {
                Some(Config::Params(params)) => Some(params.size),
                _ => None,
            },
        )
    }

    /// Points the alias (`opts.collection`) at this index's collection: the last step of a model
    /// change, once the new model's collection is filled. Processes already running keep using
    /// their own model's collection by its own name until they are restarted.
    pub async fn adopt_alias(&self) -> anyhow::Result<AliasSwitch> {
        let (alias, target) = (&self.opts.collection, self.collection().to_owned());
        if alias == &target {
            return Ok(AliasSwitch::IsTheCollection);
        }
        let previous = self.collection_behind(alias).await?;
        if previous.is_none() && self.collection_exists(alias).await? {
            return Ok(AliasSwitch::NameTaken);
        }
        self.point_alias(alias, &target).await?;
        Ok(AliasSwitch::Switched { previous })
    }

    /// Vectors must be what lookalike writes, or every write and search would fail (or, with
    /// another distance, score differently). Missing payload indexes are added, so that a
    /// collection made by hand, or whose creation was interrupted, still filters fast.
    async fn check_collection(&self, name: &str, dim: usize) -> anyhow::Result<()> {
        let info = self
            .client
            .collection_info(name)
            .await
            .with_context(|| format!("reading Qdrant collection {name}"))?
            .result
            .with_context(|| format!("Qdrant returned no info for collection {name}"))?;
        let vectors = info
            .config
            .and_then(|c| c.params)
            .and_then(|p| p.vectors_config)
            .and_then(|v| v.config);
        match vectors {
            Some(Config::Params(params)) => {
                anyhow::ensure!(
                    params.size == dim as u64,
                    "Qdrant collection {name} holds vectors of dimension {}, not {dim}; \
                     re-embedding into a new collection is needed",
                    params.size
                );
                anyhow::ensure!(
                    params.distance == Distance::Cosine as i32,
                    "Qdrant collection {name} uses {} distance; lookalike needs Cosine",
                    Distance::try_from(params.distance).map_or("an unknown", |d| d.as_str_name())
                );
            }
            Some(Config::ParamsMap(_)) => anyhow::bail!(
                "Qdrant collection {name} has named vectors; lookalike stores one unnamed vector \
                 per point"
            ),
            None => anyhow::bail!("Qdrant collection {name} reports no vector configuration"),
        }
        // A collection made before grouped search gains the group keys' indexes here, once.
        for key in indexed_keys() {
            match info.payload_schema.get(&key) {
                Some(schema) if schema.data_type == PayloadSchemaType::Keyword as i32 => {}
                Some(schema) => tracing::warn!(
                    collection = %name,
                    field = %key,
                    data_type = schema.data_type,
                    "payload index is not a keyword index; filters on it may be slow or wrong"
                ),
                None => self.create_payload_index(name, &key).await?,
            }
        }
        Ok(())
    }

    /// Create collection `name` for vectors of dimension `dim`, laid out like every collection
    /// this index creates (cosine distance, `on_disk` and `quantization` from the options,
    /// keyword indexes on the category, the model id and the group keys). Fails if it already
    /// exists.
    pub async fn create_collection(&self, name: &str, dim: usize) -> anyhow::Result<()> {
        anyhow::ensure!(dim > 0, "vector dimension must be positive");
        // `on_disk` and `always_ram` are deprecated in favour of `memory` placements since
        // Qdrant 1.19, but newer servers still honour them and older ones know nothing else.
        let mut vectors = VectorParamsBuilder::new(dim as u64, Distance::Cosine);
        if self.opts.on_disk {
            vectors = vectors.on_disk(true);
        }
        let mut request = CreateCollectionBuilder::new(name).vectors_config(vectors);
        if self.opts.quantization == Quantization::Scalar {
            let int8 = ScalarQuantizationBuilder::default()
                .always_ram(true)
                .build();
            request = request.quantization_config(int8);
        }
        self.client
            .create_collection(request)
            .await
            .with_context(|| format!("creating Qdrant collection {name}"))?;
        for key in indexed_keys() {
            self.create_payload_index(name, &key).await?;
        }
        Ok(())
    }

    async fn create_payload_index(&self, collection: &str, key: &str) -> anyhow::Result<()> {
        let request =
            CreateFieldIndexCollectionBuilder::new(collection, key, FieldType::Keyword).wait(true);
        self.client
            .create_field_index(request)
            .await
            .with_context(|| format!("creating keyword index on {key} in {collection}"))?;
        Ok(())
    }

    async fn collection_exists(&self, name: &str) -> anyhow::Result<bool> {
        self.client
            .collection_exists(name)
            .await
            .with_context(|| format!("looking up Qdrant collection {name}"))
    }

    /// Make `alias` name `collection`, creating the alias or switching it over. A switch
    /// deletes and re-creates the alias in one request, which Qdrant applies atomically:
    /// every request through the alias sees either the old or the new collection, never none.
    /// Processes holding the alias follow on their next request (restart them if the vector
    /// dimension changed). Fails if a collection (not an alias) is named `alias`.
    pub async fn point_alias(&self, alias: &str, collection: &str) -> anyhow::Result<()> {
        let current = self.collection_behind(alias).await?;
        if current.as_deref() == Some(collection) {
            return Ok(());
        }
        if current.is_none() && self.collection_exists(alias).await? {
            anyhow::bail!(
                "{alias} is a Qdrant collection, not an alias, so it cannot be pointed at \
                 {collection}; move its data into a collection of another name first"
            );
        }
        let mut actions = Vec::with_capacity(2);
        if current.is_some() {
            actions.push(Action::DeleteAlias(DeleteAlias {
                alias_name: alias.to_owned(),
            }));
        }
        actions.push(Action::CreateAlias(CreateAlias {
            collection_name: collection.to_owned(),
            alias_name: alias.to_owned(),
        }));
        self.change_aliases(actions)
            .await
            .with_context(|| format!("pointing Qdrant alias {alias} at {collection}"))?;
        tracing::info!(alias, collection, previous = ?current, "Qdrant alias switched");
        Ok(())
    }

    /// The collection `alias` names, or `None` when there is no such alias.
    pub async fn collection_behind(&self, alias: &str) -> anyhow::Result<Option<String>> {
        let aliases = self
            .client
            .list_aliases()
            .await
            .context("listing Qdrant aliases")?;
        Ok(aliases
            .aliases
            .into_iter()
            .find(|a| a.alias_name == alias)
            .map(|a| a.collection_name))
    }

    /// The same server connection, reading and writing collection (or alias) `name`. Its
    /// vector dimension is not known here, so the server checks it (a mismatch is still
    /// [`IndexError::Invalid`](crate::IndexError::Invalid)).
    pub fn with_collection(&self, name: &str) -> QdrantIndex {
        let other = self.sibling(name, None);
        other.readiness.set_ready();
        other
    }

    /// The same connection on collection `name`, with readiness of its own (not yet ready).
    fn sibling(&self, name: &str, dim: Option<usize>) -> QdrantIndex {
        QdrantIndex {
            client: self.client.clone(),
            collection: Arc::new(OnceLock::from(name.to_owned())),
            dim,
            opts: self.opts.clone(),
            readiness: Arc::new(Readiness::default()),
        }
    }

    /// Delete collection `name` and its points, e.g. the old one after a reindex switched the
    /// alias away from it. Deleting a missing collection is not an error.
    pub async fn drop_collection(&self, name: &str) -> anyhow::Result<()> {
        match self.client.delete_collection(name).await {
            Ok(_) => Ok(()),
            Err(e) if status_code(&e) == Some(tonic::Code::NotFound) => Ok(()),
            Err(e) => Err(e).with_context(|| format!("deleting Qdrant collection {name}")),
        }
    }

    /// Apply alias actions in one `UpdateAliases` request. qdrant-client 1.20 only sends one
    /// action per request (its batch call is private), so this talks to the same gRPC service
    /// directly over a short-lived channel: alias changes are rare admin operations.
    async fn change_aliases(&self, actions: Vec<Action>) -> anyhow::Result<()> {
        let config = &self.client.config;
        let mut endpoint = Endpoint::from_shared(config.uri.clone())
            .with_context(|| format!("Qdrant URL {:?}", config.uri))?
            .timeout(config.timeout)
            .connect_timeout(config.connect_timeout);
        if endpoint.uri().scheme_str() == Some("https") {
            endpoint = endpoint.tls_config(ClientTlsConfig::new().with_native_roots())?;
        }
        let channel = endpoint
            .connect()
            .await
            .with_context(|| format!("connecting to Qdrant at {}", config.uri))?;
        let mut request = tonic::Request::new(ChangeAliases {
            actions: actions
                .into_iter()
                .map(|action| AliasOperations {
                    action: Some(action),
                })
                .collect(),
            timeout: None,
        });
        if let Some(key) = &config.api_key {
            let value = key
                .parse()
                .context("the Qdrant API key is not a valid header value")?;
            request.metadata_mut().insert("api-key", value);
        }
        CollectionsClient::new(channel)
            .update_aliases(request)
            .await
            .map_err(|s| anyhow::anyhow!("qdrant: {:?}: {}", s.code(), s.message()))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_model_collection_is_the_alias_and_the_model_id_made_safe() {
        assert_eq!(
            collection_for_model("lookalike", "clip-vit-b16-int8"),
            "lookalike-clip-vit-b16-int8"
        );
        assert_eq!(
            collection_for_model("shop", "acme/clip v2.1"),
            "shop-acme_clip_v2_1"
        );
    }

    #[test]
    fn versions_at_most_one_minor_apart_are_accepted() {
        for server in ["1.18.3", "1.19.0", "1.20.1", "v1.18.0", "1.18.3-dev"] {
            assert_eq!(check_versions(server, "1.19.0"), Ok(()), "{server}");
        }
    }

    #[test]
    fn versions_further_apart_are_refused_with_what_to_run() {
        for server in ["1.17.9", "1.15.5", "1.21.0", "2.19.0"] {
            let err = check_versions(server, "1.19.0").expect_err(server);
            assert!(
                err.contains(server) && err.contains("1.18.x to 1.20.x"),
                "{server}: {err}"
            );
        }
        assert!(check_versions("unknown", "1.19.0").is_err());
    }

    /// `CLIENT_VERSION` is what Cargo.lock resolves qdrant-client to, so the check compares the
    /// server with the client really built in.
    #[test]
    fn client_version_matches_the_lock_file() {
        let lock = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../Cargo.lock"),
        )
        .expect("Cargo.lock at the workspace root");
        let locked = lock
            .split("[[package]]")
            .find(|p| p.contains("name = \"qdrant-client\""))
            .and_then(|p| p.lines().find_map(|l| l.strip_prefix("version = \"")))
            .map(|v| v.trim_end_matches('"').to_owned())
            .expect("qdrant-client in Cargo.lock");
        assert_eq!(locked, CLIENT_VERSION);
    }
}
