//! Wiring: builds lookalike's parts from the configuration and runs them. No logic of its own.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use lookalike_core::Config;
use lookalike_index::{EdgeIndex, EdgeOptions, VectorIndex};
use lookalike_queue::{Publisher, Topology};
use lookalike_store::Store;
use lookalike_vision::{DecodeLimits, Embedder, ModelSpec};
use lookalike_worker::batcher::Batcher;
use lookalike_worker::fetch::Fetcher;
use lookalike_worker::{Consumer, Pipeline};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

pub fn init_logging(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&config.log.filter));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    if config.log.format == "json" {
        builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .init();
    } else {
        builder.init();
    }
}

pub fn model_spec(config: &Config) -> ModelSpec {
    let m = &config.model;
    ModelSpec {
        id: m.id.clone(),
        path: m.path.clone(),
        input_name: m.input_name.clone(),
        output_name: m.output_name.clone(),
        logits_output: None,
        dim: m.dim,
        input_size: m.input_size,
        resize_shorter: m.resize_shorter,
        mean: m.mean,
        std: m.std,
    }
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

/// Applies migrations, waiting (with backoff, up to a minute) for Postgres to come up.
pub async fn migrate(store: &Store, url: &str) -> anyhow::Result<()> {
    let mut delay = Duration::from_millis(250);
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
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            Err(e) => return Err(e.context("applying database migrations")),
        }
    }
}

/// `lookalike serve`: the API and the worker in one process, sharing the embedded vector index.
pub async fn serve(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    config.auth.check_can_serve()?;
    if !config.auth.enabled {
        tracing::warn!("API keys are off (auth.enabled = false): every request is accepted");
    }
    let config = Arc::new(config);
    let store = Store::connect_lazy(
        &config.database.url,
        config.database.max_connections,
        Duration::from_millis(config.database.acquire_timeout_ms),
    )?;
    migrate(&store, &config.database.url).await?;

    let index: Arc<dyn VectorIndex> = Arc::new(
        EdgeIndex::open(
            &config.index.data_dir,
            config.model.dim,
            EdgeOptions {
                optimize_after_points: config.index.optimize_after_points,
                ..Default::default()
            },
        )
        .with_context(|| {
            format!(
                "opening the vector index in {}",
                config.index.data_dir.display()
            )
        })?,
    );
    let topology = Topology::new(&config.queue.prefix);
    let publisher = Arc::new(Publisher::new(
        &config.queue.url,
        topology.clone(),
        Duration::from_millis(config.http.publish_timeout_ms),
    ));

    let loaded = std::time::Instant::now();
    let embedder = Arc::new(
        Embedder::load(
            &config.model.ort_library,
            model_spec(&config),
            config.model.intra_threads,
        )
        .context("loading the embedding model (run scripts/setup.sh first)")?,
    );
    tracing::info!(model = %config.model.id, ms = loaded.elapsed().as_millis() as u64, "model loaded");

    let w = &config.worker;
    let pipeline = Arc::new(Pipeline {
        store: store.clone(),
        index: index.clone(),
        batcher: Batcher::start(
            embedder,
            w.batch_size,
            Duration::from_millis(w.batch_wait_ms),
        ),
        fetcher: Fetcher::new(&config.fetch)?,
        limits: decode_limits(&config),
        decode_permits: Arc::new(Semaphore::new(w.decode_threads.max(1))),
        thumbnail_size: w.thumbnail_size,
        reuse_identical: w.reuse_identical_images,
        classify: config.classify.clone(),
        prior: load_prior(&config)?,
        max_attempts: config.queue.max_attempts,
    });
    let consumer = Arc::new(Consumer {
        pipeline: pipeline.clone(),
        publisher: publisher.clone(),
        amqp_url: config.queue.url.clone(),
        topology,
        prefetch: w.concurrency,
        job_timeout: Duration::from_millis(w.job_timeout_ms),
        retry_base: Duration::from_millis(config.queue.retry_base_ms),
        retry_max: Duration::from_millis(config.queue.retry_max_ms),
        drain_deadline: Duration::from_millis(config.service.drain_deadline_ms),
    });
    let worker = tokio::spawn(consumer.run(shutdown.clone()));
    tokio::spawn(lookalike_worker::republish::run(
        store.clone(),
        publisher.clone(),
        Duration::from_millis(config.queue.republish_after_ms),
        shutdown.clone(),
    ));

    let app = lookalike_api::router(lookalike_api::AppState {
        config: config.clone(),
        store,
        publisher,
        index,
        pipeline,
    });
    let listener = tokio::net::TcpListener::bind(&config.http.listen)
        .await
        .with_context(|| format!("binding {}", config.http.listen))?;
    tracing::info!(addr = %listener.local_addr()?, "listening");
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.clone().cancelled_owned())
        .await?;
    worker.await?;
    tracing::info!("stopped");
    Ok(())
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
fn load_prior(config: &Config) -> anyhow::Result<Option<Arc<lookalike_worker::prior::Prior>>> {
    let c = &config.classify;
    if c.categories.is_empty() {
        return Ok(None);
    }
    let prior = lookalike_worker::prior::Prior::load(
        &config.model.ort_library,
        &c.prior_model,
        &c.prior_map,
        &c.categories,
        config.model.intra_threads,
    )
    .context("loading the cold-start prior (classify.categories is set; run scripts/setup.sh)")?;
    Ok(Some(Arc::new(prior)))
}
