//! Ingest benchmark: model-only throughput vs end-to-end throughput, measured in one run.
//!
//!   cargo bench --bench ingest                     # 200 images
//!   LOOKALIKE_BENCH_N=400 LOOKALIKE_BENCH_IMAGES=DIR cargo bench --bench ingest
//!
//! 1. Model only: images already decoded and preprocessed into tensors, fed to ONNX Runtime in batches of
//!    `worker.batch_size` with `model.intra_threads` threads: the ceiling for this machine.
//! 2. End to end: the real `lookalike serve` (Postgres, RabbitMQ, embedded index) ingests the same images by
//!    URL from a local HTTP server: first submit until every job succeeded.
//!
//! The figure that matters is the ratio (2)/(1); absolute numbers move with the machine's load.

#[path = "../tests/support/mod.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use lookalike_core::Config;
use serde_json::{Value, json};
use support::images::ImageServer;

fn main() -> anyhow::Result<()> {
    // `cargo test --all-targets` also runs bench targets; the benchmark only runs under `cargo bench`.
    if !std::env::args().any(|a| a == "--bench") {
        println!("ingest benchmark: run it with `cargo bench --bench ingest`");
        return Ok(());
    }
    let n: usize = std::env::var("LOOKALIKE_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let source = std::env::var_os("LOOKALIKE_BENCH_IMAGES")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let datasets = support::repo_root().join(".lookalike/datasets");
            // Real colour product photos first (closest to production), then anything else available.
            [datasets.join("vendure"), datasets.join("saleor")]
                .into_iter()
                .find(|p| p.exists())
                .map(|_| datasets)
                .unwrap_or_else(support::reference_dir)
        });
    let mut files = Vec::new();
    support::images::collect_images(&source, &mut files);
    anyhow::ensure!(!files.is_empty(), "no images under {}", source.display());
    // Prefer the colour catalogues; Fashion-MNIST thumbnails are too small to be representative.
    files.sort_by_key(|p| p.to_string_lossy().contains("fashion-mnist"));
    let files: Vec<PathBuf> = files.iter().cycle().take(n).cloned().collect();
    let distinct = files.iter().collect::<std::collections::HashSet<_>>().len();
    println!(
        "images: {n} jobs from {distinct} distinct files under {}",
        source.display()
    );

    // Settings given as LOOKALIKE_<SECTION>__<KEY> apply to both runs, e.g. WORKER__DECODE_THREADS.
    let overrides: Vec<(String, String)> = std::env::vars()
        .filter(|(k, _)| k.starts_with("LOOKALIKE_") && k.contains("__"))
        .collect();
    let config = Config::load_from(None, overrides.clone())?;
    let model_ips = model_only(&config, &files)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let e2e_ips = rt.block_on(end_to_end(&files, &source, &overrides))?;

    println!();
    println!("| measure | images/s |");
    println!("|---|---|");
    println!(
        "| model only (batch {}, {} threads) | {model_ips:.1} |",
        config.worker.batch_size, config.model.intra_threads
    );
    println!("| end to end (URL submitted -> job succeeded) | {e2e_ips:.1} |");
    println!(
        "| ratio end-to-end / model-only | {:.2} |",
        e2e_ips / model_ips
    );
    Ok(())
}

fn model_only(config: &Config, files: &[PathBuf]) -> anyhow::Result<f64> {
    let root = support::repo_root().join(".lookalike");
    let mut spec = lookalike::model_spec(config);
    spec.path = root.join("models/clip_vitb16_visual_int8.onnx");
    let embedder = lookalike_vision::Embedder::load(
        &root.join("lib/libonnxruntime.so.1.31.1"),
        spec.clone(),
        config.model.intra_threads,
    )?;
    let limits = lookalike::decode_limits(config);
    let tensors: Vec<_> = files
        .iter()
        .map(|f| {
            let img = lookalike_vision::clean(&std::fs::read(f).unwrap(), &limits)
                .expect("benchmark images decode");
            lookalike_vision::to_tensor(&img.rgb, &spec)
        })
        .collect();
    embedder.embed_batch(&tensors[..config.worker.batch_size.min(tensors.len())])?; // warm-up
    let start = Instant::now();
    for chunk in tensors.chunks(config.worker.batch_size) {
        embedder.embed_batch(chunk)?;
    }
    let secs = start.elapsed().as_secs_f64();
    println!("model only: {} images in {secs:.2}s", tensors.len());
    Ok(tensors.len() as f64 / secs)
}

async fn end_to_end(
    files: &[PathBuf],
    root: &Path,
    overrides: &[(String, String)],
) -> anyhow::Result<f64> {
    let mut env = support::TestEnv::new().await;
    for (key, value) in overrides {
        env.set(key.trim_start_matches("LOOKALIKE_"), value);
    }
    let images = ImageServer::start(root.to_path_buf()).await;
    let service = env.start().await;
    let items: Vec<Value> = files
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let rel = f.strip_prefix(root).unwrap().to_string_lossy().replace('/', "%2F");
            json!({"url": images.url(&format!("/files/{rel}?copy={i}")), "external_id": format!("bench-{i}")})
        })
        .collect();
    // Warm-up, as for the model-only run: the first inference of a fresh session is slow.
    let warm_url = items[0]["url"].as_str().unwrap().replace("copy=", "warm=");
    let warm = service.submit_urls(json!([{"url": warm_url}])).await;
    service.wait_jobs(&warm, Duration::from_secs(60)).await;
    let start = Instant::now();
    let mut ids = Vec::new();
    for chunk in items.chunks(500) {
        ids.extend(service.submit_urls(Value::Array(chunk.to_vec())).await);
    }
    let mut last_report = Instant::now();
    loop {
        let (_, status) = service.get("/v1/status").await;
        let done = status["jobs"]["succeeded"].as_u64().unwrap_or(0) - warm.len() as u64
            + status["jobs"]["failed"].as_u64().unwrap_or(0);
        if done as usize >= ids.len() {
            anyhow::ensure!(
                status["jobs"]["failed"] == 0,
                "some benchmark jobs failed: {status}"
            );
            break;
        }
        if last_report.elapsed() > Duration::from_secs(5) {
            println!(
                "  end to end: {done}/{} done after {:.0}s",
                ids.len(),
                start.elapsed().as_secs_f64()
            );
            last_report = Instant::now();
        }
        // Coarse polling: status queries cost the service CPU that the measurement should not pay.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let secs = start.elapsed().as_secs_f64();
    println!("end to end: {} images in {secs:.2}s", ids.len());
    Ok(ids.len() as f64 / secs)
}
