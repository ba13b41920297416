//! Connecting, and the collection and alias management behind it and behind `reindex`.

use std::sync::Arc;

use anyhow::Context as _;
use qdrant_client::Qdrant;
use qdrant_client::qdrant::alias_operations::Action;
use qdrant_client::qdrant::collections_client::CollectionsClient;
use qdrant_client::qdrant::vectors_config::Config;
use qdrant_client::qdrant::{
    AliasOperations, ChangeAliases, CreateAlias, CreateCollectionBuilder,
    CreateFieldIndexCollectionBuilder, DeleteAlias, Distance, FieldType, PayloadSchemaType,
    ScalarQuantizationBuilder, VectorParamsBuilder,
};
use tonic::transport::{ClientTlsConfig, Endpoint};

use super::convert::status_code;
use super::{QdrantIndex, Quantization, ServerOptions};
use crate::{CATEGORY_KEY, MODEL_ID_KEY};

/// The payload fields every lookalike collection filters on, each with a keyword index.
const INDEXED_KEYS: [&str; 2] = [CATEGORY_KEY, MODEL_ID_KEY];

impl QdrantIndex {
    /// Connect to the server and make sure `opts.collection` is usable: an existing collection
    /// (or the collection behind an alias of that name) must hold unnamed cosine vectors of
    /// dimension `opts.dim`; a missing one is created with the configured layout and keyword
    /// indexes on the category and model id. Fails when the server cannot be reached.
    pub async fn connect(opts: ServerOptions) -> anyhow::Result<QdrantIndex> {
        anyhow::ensure!(opts.dim > 0, "vector dimension must be positive");
        anyhow::ensure!(!opts.collection.is_empty(), "collection name is empty");
        let client = Qdrant::from_url(&opts.url)
            .api_key(opts.api_key.clone())
            .timeout(opts.timeout)
            .connect_timeout(opts.timeout)
            // The built-in check blocks the calling thread on a runtime of its own and prints
            // to stdout; the health check below does the same job without either.
            .skip_compatibility_check()
            .build()
            .with_context(|| format!("Qdrant URL {:?}", opts.url))?;
        let health = client
            .health_check()
            .await
            .with_context(|| format!("Qdrant at {} is not reachable", opts.url))?;
        tracing::info!(url = %opts.url, version = %health.version, "connected to Qdrant");
        let index = QdrantIndex {
            client,
            collection: opts.collection.clone(),
            dim: Some(opts.dim),
            opts: Arc::new(opts),
        };
        index.ensure_collection().await?;
        Ok(index)
    }

    async fn ensure_collection(&self) -> anyhow::Result<()> {
        let (name, dim) = (&self.collection, self.opts.dim);
        let target = self
            .collection_behind(name)
            .await?
            .unwrap_or_else(|| name.clone());
        if self.collection_exists(&target).await? {
            return self.check_collection(&target, dim).await;
        }
        if let Err(e) = self.create_collection(name, dim).await {
            // Another process may have created it since we looked: then check theirs.
            if self.collection_exists(name).await? {
                return self.check_collection(name, dim).await;
            }
            return Err(e);
        }
        tracing::info!(collection = %name, dim, "created Qdrant collection");
        Ok(())
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
        for key in INDEXED_KEYS {
            match info.payload_schema.get(key) {
                Some(schema) if schema.data_type == PayloadSchemaType::Keyword as i32 => {}
                Some(schema) => tracing::warn!(
                    collection = %name,
                    field = key,
                    data_type = schema.data_type,
                    "payload index is not a keyword index; filters on it may be slow or wrong"
                ),
                None => self.create_payload_index(name, key).await?,
            }
        }
        Ok(())
    }

    /// Create collection `name` for vectors of dimension `dim`, laid out like every collection
    /// this index creates (cosine distance, `on_disk` and `quantization` from the options,
    /// keyword indexes on the category and model id). Fails if it already exists.
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
        for key in INDEXED_KEYS {
            self.create_payload_index(name, key).await?;
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
        QdrantIndex {
            client: self.client.clone(),
            collection: name.to_owned(),
            dim: None,
            opts: self.opts.clone(),
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
