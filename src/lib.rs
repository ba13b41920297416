//! Wiring: builds lookalike's parts from the configuration and runs them. No logic of its own.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use lookalike_analysis::Analyser;
use lookalike_analysis::batcher::{Batcher, Sessions};
use lookalike_analysis::fetch::Fetcher;
use lookalike_analysis::heads::Heads;
use lookalike_catalogue::Catalogue;
use lookalike_core::Config;
use lookalike_core::backoff::Backoff;
use lookalike_core::config::{IndexBackend, IndexQuantization, ReducedDecode};
#[cfg(feature = "edge")]
use lookalike_index::{EdgeIndex, EdgeOptions};
use lookalike_index::{QdrantIndex, Quantization, ServerOptions, VectorIndex};
use lookalike_queue::{Publisher, Topology};
use lookalike_store::Store;
use lookalike_vision::{DecodeLimits, Embedder, ModelSpec};
use lookalike_worker::{Consumer, Ingest, Jobs};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

pub fn init_logging(config: &Config) {
    lookalike_telemetry::init_logging(
        config.log.format == lookalike_core::config::LogFormat::Json,
        &config.log.filter,
    );
}

pub fn model_spec(config: &Config) -> ModelSpec {
    let m = &config.model;
    ModelSpec {
        id: m.id.clone(),
        path: m.path.clone(),
        input_name: m.input_name.clone(),
        output_name: m.output_name.clone(),
        logits_output: None,
        features_output: Some(m.features_output.clone()).filter(|name| !name.is_empty()),
        dim: m.dim,
        input_size: m.input_size,
        resize_shorter: m.resize_shorter,
        mean: m.mean,
        std: m.std,
        // "auto" is settled by `resolve_decode` before a process embeds; a tool that builds a spec
        // without a catalogue (benchmarks) gets what a new catalogue gets: draft.
        reduced_decode: m.reduced_decode != ReducedDecode::Off,
    }
}

/// Settles `model.reduced_decode = "auto"` against the catalogue (see
/// [`lookalike_core::config::Model::resolve_decode`]); call once, after migrating.
pub async fn resolve_decode(config: &mut Config, store: &Store) -> anyhow::Result<()> {
    let before = config.model.reduced_decode;
    let has_items = store
        .has_items_of_model(&config.model.id)
        .await
        .context("looking for items of the configured model")?;
    config.model.resolve_decode(has_items);
    tracing::info!(
        model = %config.model.id,
        setting = ?before,
        reduced_decode = config.model.reduced_decode == ReducedDecode::On,
        "decode recipe settled"
    );
    Ok(())
}

pub fn decode_limits(config: &Config) -> DecodeLimits {
    let i = &config.image;
    DecodeLimits {
        max_width: i.max_width,
        max_height: i.max_height,
        max_pixels: i.max_pixels,
        max_alloc_bytes: i.max_alloc_bytes,
        ..DecodeLimits::default()
    }
}

/// The database pool every command uses, sized and timed by `[database]`. Lazy: connections open on
/// first use, so a service can start (and report not-ready) while Postgres is still coming up.
pub fn open_store(config: &Config) -> anyhow::Result<Store> {
    Store::connect_lazy(
        config.database.url.expose(),
        config.database.max_connections,
        Duration::from_millis(config.database.acquire_timeout_ms),
    )
}

/// Applies migrations, waiting (with backoff, up to a minute) for Postgres to come up.
pub async fn migrate(store: &Store, url: &str) -> anyhow::Result<()> {
    let mut backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(5));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let attempt = async {
            Store::ensure_database(url).await?;
            store.migrate().await
        };
        match attempt.await {
            Ok(()) => return Ok(()),
            Err(e) if tokio::time::Instant::now() < deadline => {
                tracing::warn!(error = %e, "database not ready for migrations; retrying");
                tokio::time::sleep(backoff.next_delay()).await;
            }
            Err(e) => return Err(e.context("applying database migrations")),
        }
    }
}

/// Which parts of lookalike a process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// `lookalike serve`: the API and a worker in one process (any index backend).
    All,
    /// `lookalike api`: the HTTP API, including synchronous searches (so it loads the model too).
    Api,
    /// `lookalike worker`: consumes the job queue; serves only /healthz, /readyz, /metrics.
    Worker,
}

impl Role {
    fn serves_api(self) -> bool {
        matches!(self, Role::All | Role::Api)
    }
    fn consumes(self) -> bool {
        matches!(self, Role::All | Role::Worker)
    }
}

/// `lookalike serve`: the API and the worker in one process, sharing the vector index.
pub async fn serve(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    run(config, Role::All, shutdown).await
}

/// Runs the parts of lookalike that `role` names until `shutdown` is cancelled.
pub async fn run(
    mut config: Config,
    role: Role,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    if role != Role::All && config.index.backend == IndexBackend::Edge {
        anyhow::bail!(
            "index.backend = \"edge\" keeps the index inside one process: run `lookalike serve`, \
             or set index.backend = \"qdrant\" (a Qdrant server) to run `lookalike api` and \
             `lookalike worker` apart"
        );
    }
    if role.serves_api() {
        config.auth.check_can_serve()?;
        if !config.auth.enabled {
            tracing::warn!("API keys are off (auth.enabled = false): every request is accepted");
        }
    }
    // Before any job or request runs, so that no count is lost.
    lookalike_telemetry::install();
    let store = open_store(&config)?;
    // Every process migrates: migrations take a database lock and skip what is applied, so
    // processes starting together neither race nor depend on a start order.
    migrate(&store, config.database.url.expose()).await?;
    resolve_decode(&mut config, &store).await?;
    let config = Arc::new(config);
    let index = open_index(&config).await?;
    let topology = Topology::new(&config.queue.prefix);
    let publisher = Arc::new(Publisher::new(
        config.queue.url.expose(),
        topology.clone(),
        Duration::from_millis(config.http.publish_timeout_ms),
    ));
    // One analyser per process, for the API's searches and the worker's jobs alike: its model
    // sessions are one pool, so neither a busy queue nor a lone search leaves a core idle.
    // One trained classifier head per process, kept current from the database; processes that
    // consume jobs also retrain it when the labels changed enough.
    let heads = Arc::new(Heads::default());
    let analyser = build_analyser(&config, store.clone(), index.clone(), heads.clone())?;
    let catalogue =
        Catalogue::new(store.clone(), index.clone()).with_dedupe(config.dedupe.threshold());
    if config.classify.head {
        tokio::spawn(lookalike_analysis::heads::maintain(
            store.clone(),
            heads,
            analyser.model_id().to_string(),
            config.classify.clone(),
            role.consumes(),
            shutdown.clone(),
        ));
    }

    let mut workers = Vec::new();
    if role.consumes() {
        let w = &config.worker;
        let consumer = Arc::new(Consumer {
            jobs: Arc::new(Jobs {
                store: store.clone(),
                publisher: publisher.clone(),
                max_attempts: config.queue.max_attempts,
                retry_base: Duration::from_millis(config.queue.retry_base_ms),
                retry_max: Duration::from_millis(config.queue.retry_max_ms),
            }),
            ingest: Arc::new(Ingest {
                analyser: analyser.clone(),
                catalogue: catalogue.clone(),
                reuse_identical: w.reuse_identical_images,
            }),
            amqp_url: config.queue.url.expose().to_string(),
            topology: topology.clone(),
            prefetch: w.concurrency,
            job_timeout: Duration::from_millis(w.job_timeout_ms),
            drain_deadline: Duration::from_millis(config.service.drain_deadline_ms),
            pause: Default::default(),
        });
        workers.push(tokio::spawn(consumer.run(shutdown.clone())));
        // The outbox sweep runs beside the consumers: any number of copies may run, a job
        // published twice is processed once (its item id is the job id).
        tokio::spawn(lookalike_worker::republish::run(
            store.clone(),
            publisher.clone(),
            Duration::from_millis(config.queue.republish_after_ms),
            shutdown.clone(),
        ));
    }

    let state = lookalike_api::AppState {
        config: config.clone(),
        store,
        publisher,
        index,
        catalogue,
        analyser,
    };
    let (app, listen) = if role.serves_api() {
        (lookalike_api::router(state), config.http.listen.as_str())
    } else {
        (
            lookalike_api::ops_router(state),
            config.worker.listen.as_str(),
        )
    };
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    tracing::info!(addr = %listener.local_addr()?, ?role, index = %config.index.backend, "listening");
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.clone().cancelled_owned())
        .await?;
    for worker in workers {
        worker.await?;
    }
    tracing::info!("stopped");
    Ok(())
}

/// The vector index the configuration names.
pub async fn open_index(config: &Config) -> anyhow::Result<Arc<dyn VectorIndex>> {
    let index = open_backend(config).await?;
    index_declared_fields(&index, config).await?;
    Ok(index)
}

/// Payload indexes over the declared `[fields]` (idempotent, so every process start asks). A
/// server that is away gets them once it answers: until then filtered searches are still exact,
/// the engine checks the conditions against the stored metadata, only slower.
async fn index_declared_fields(
    index: &Arc<dyn VectorIndex>,
    config: &Config,
) -> anyhow::Result<()> {
    if config.fields.is_empty() {
        return Ok(());
    }
    let fields: Vec<(String, lookalike_core::fields::FieldKind)> =
        config.fields.iter().map(|(n, k)| (n.clone(), *k)).collect();
    let names: Vec<&str> = config.fields.keys().map(String::as_str).collect();
    match index.index_fields(&fields).await {
        Ok(()) => {
            tracing::info!(fields = ?names, "payload indexes of the declared fields in place");
            Ok(())
        }
        Err(e @ lookalike_index::IndexError::Invalid(_)) => {
            Err(e).context("creating the payload indexes of [fields]")
        }
        Err(e) => {
            tracing::warn!(error = %e, fields = ?names, "payload indexes of the declared fields not created yet; retrying every 5 s");
            let index = index.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    match index.index_fields(&fields).await {
                        Ok(()) => {
                            tracing::info!("payload indexes of the declared fields in place");
                            return;
                        }
                        Err(e) => tracing::debug!(error = %e, "payload indexes still not created"),
                    }
                }
            });
            Ok(())
        }
    }
}

async fn open_backend(config: &Config) -> anyhow::Result<Arc<dyn VectorIndex>> {
    let i = &config.index;
    match i.backend {
        IndexBackend::Qdrant => {
            // Starts while the server is away (the index answers "unavailable" until it is
            // reached); refuses only what waiting cannot fix (server version, collection layout).
            let index = QdrantIndex::open(server_options(config))
                .await
                .with_context(|| {
                    format!(
                        "connecting to the Qdrant server at {} (alias {})",
                        i.url, i.collection
                    )
                })?;
            Ok(Arc::new(index))
        }
        #[cfg(not(feature = "edge"))]
        IndexBackend::Edge => anyhow::bail!(
            "index.backend = \"edge\": this build has no embedded index (built without the \
             `edge` feature); set index.backend = \"qdrant\" or use a default build"
        ),
        #[cfg(feature = "edge")]
        IndexBackend::Edge => {
            let (dir, dim) = (i.data_dir.clone(), config.model.dim);
            let opts = EdgeOptions {
                optimize_after_points: i.optimize_after_points,
                ..Default::default()
            };
            let edge = tokio::task::spawn_blocking(move || EdgeIndex::open(&dir, dim, opts))
                .await?
                .with_context(|| format!("opening the vector index in {}", i.data_dir.display()))?;
            // Points stored before a restart and not yet in a graph get one now, not after
            // another `optimize_after_points` new ones.
            edge.optimize_if_due();
            Ok(Arc::new(edge))
        }
    }
}

/// How the configuration reaches a Qdrant server: `index.collection` is the alias, and the process
/// uses its model's own collection (`<alias>-<model id>`).
pub fn server_options(config: &Config) -> ServerOptions {
    let i = &config.index;
    ServerOptions {
        api_key: (!i.api_key.is_empty()).then(|| i.api_key.expose().to_string()),
        model_id: Some(config.model.id.clone()),
        on_disk: i.on_disk,
        quantization: match i.quantization {
            IndexQuantization::Int8 => Quantization::Scalar,
            IndexQuantization::None => Quantization::None,
        },
        timeout: Duration::from_millis(i.timeout_ms),
        ..ServerOptions::new(&i.url, &i.collection, config.model.dim)
    }
}

/// The last step of a model change on a Qdrant server: point `index.collection` (the alias) at
/// the configured model's collection. `None` for the embedded index, which has no alias.
pub async fn adopt_alias(config: &Config) -> anyhow::Result<Option<lookalike_index::AliasSwitch>> {
    if config.index.backend != IndexBackend::Qdrant {
        return Ok(None);
    }
    let index = QdrantIndex::connect(server_options(config)).await?;
    Ok(Some(index.adopt_alias().await?))
}

/// The process's image analyser: model pool, fetcher, classifier. The API uses it for searches, the
/// worker for jobs.
pub fn build_analyser(
    config: &Config,
    store: Store,
    index: Arc<dyn VectorIndex>,
    heads: Arc<Heads>,
) -> anyhow::Result<Arc<Analyser>> {
    let sessions = model_sessions(config)?;
    let w = &config.worker;
    Ok(Arc::new(Analyser {
        store,
        index,
        batcher: Batcher::start(
            sessions,
            w.batch_size,
            Duration::from_millis(w.batch_wait_ms),
        ),
        fetcher: Fetcher::new(&config.fetch)?,
        limits: decode_limits(config),
        decode_permits: Arc::new(Semaphore::new(w.decode_threads.max(1))),
        thumbnail_size: w.thumbnail_size,
        classify: config.classify.clone(),
        prior: load_prior(config)?,
        heads,
    }))
}

/// The model sessions of a process's pool ([`Batcher`]): `model.sessions` lanes of one thread and,
/// when that leaves cores unused by a lone image, a solo session of `model.intra_threads` threads.
/// A pool of one lane runs it with `intra_threads` itself.
fn model_sessions(config: &Config) -> anyhow::Result<Sessions> {
    let (lanes, solo_threads) = pool_shape(config);
    let load = |threads: usize| -> anyhow::Result<Arc<Embedder>> {
        let loaded = std::time::Instant::now();
        let embedder = Embedder::load(&config.model.ort_library, model_spec(config), threads)
            .context("loading the embedding model (run scripts/setup.sh first)")?;
        tracing::info!(model = %config.model.id, threads, ms = loaded.elapsed().as_millis() as u64, "model session loaded");
        Ok(Arc::new(embedder))
    };
    if lanes == 1 {
        return Ok(Sessions {
            lanes: vec![load(solo_threads)?],
            solo: None,
        });
    }
    Ok(Sessions {
        lanes: (0..lanes).map(|_| load(1)).collect::<anyhow::Result<_>>()?,
        solo: if solo_threads > 1 {
            Some(load(solo_threads)?)
        } else {
            None
        },
    })
}

/// `model.sessions` and `model.intra_threads` with 0 read as the machine's cores.
pub fn pool_shape(config: &Config) -> (usize, usize) {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let or_cores = |n: usize| if n == 0 { cores } else { n };
    (
        or_cores(config.model.sessions),
        or_cores(config.model.intra_threads),
    )
}

/// Cancels the token on SIGTERM or Ctrl-C.
pub fn shutdown_on_signals() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing the SIGTERM handler");
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        tracing::info!("shutdown requested; draining");
        t.cancel();
    });
    token
}

/// The cold-start prior, when `classify.categories` lists the catalogue's categories.
fn load_prior(config: &Config) -> anyhow::Result<Option<Arc<lookalike_analysis::prior::Prior>>> {
    let c = &config.classify;
    if c.categories.is_empty() {
        return Ok(None);
    }
    let prior = lookalike_analysis::prior::Prior::load(
        &config.model.ort_library,
        &c.prior_model,
        &c.prior_map,
        &c.categories,
        // Runs beside the embedding for each image, with the threads a lone image gets.
        pool_shape(config).1,
    )
    .context("loading the cold-start prior (classify.categories is set; run scripts/setup.sh)")?;
    Ok(Some(Arc::new(prior)))
}
