//! Pieces the ingest and scaling benchmarks share: the model's own throughput on decoded images, and
//! the real service ingesting the same images by URL until every job succeeded.

// Each benchmark uses only part of this module.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use lookalike_core::Config;
use lookalike_vision::{Embedder, ModelSpec};
use ndarray::Array3;
use serde_json::{Value, json};

use crate::support;
use crate::support::images::ImageServer;

/// Which processes ingest.
pub enum Layout {
    /// `lookalike serve`: API and worker in one process.
    Serve,
    /// `lookalike api` and this many `lookalike worker` processes (needs a Qdrant server).
    Split { workers: usize },
}

/// Settings given as LOOKALIKE_<SECTION>__<KEY> in the benchmark's environment.
pub fn overrides() -> Vec<(String, String)> {
    std::env::vars()
        .filter(|(k, _)| k.starts_with("LOOKALIKE_") && k.contains("__"))
        .collect()
}

/// The model's own throughput with `sessions` independent sessions (each `model.intra_threads`
/// threads) running side by side on their share of the images: what `model.sessions` can reach.
pub fn model_parallel(config: &Config, files: &[PathBuf], sessions: usize) -> anyhow::Result<f64> {
    let (spec, tensors) = model_tensors(config, files);
    let batch = config.worker.batch_size;
    let threads = lookalike::pool_shape(config).1;
    let embedders = (0..sessions.max(1))
        .map(|_| load_embedder(&spec, threads))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let secs = timed_run(&embedders, &tensors, batch)?;
    println!(
        "model only: {} images in {secs:.2}s ({} session(s) x {threads} threads)",
        tensors.len(),
        embedders.len(),
    );
    Ok(tensors.len() as f64 / secs)
}

/// The model spec the service would run, and `files` decoded and preprocessed for it (not timed).
fn model_tensors(config: &Config, files: &[PathBuf]) -> (ModelSpec, Vec<Array3<f32>>) {
    let mut spec = lookalike::model_spec(config);
    spec.path = assets().join("models/clip_vitb16_visual_int8.onnx");
    let limits = lookalike::decode_limits(config);
    let tensors = files
        .iter()
        .map(|f| {
            let img = lookalike_vision::clean(&std::fs::read(f).unwrap(), &limits)
                .expect("benchmark images decode");
            lookalike_vision::to_tensor(&img.rgb, &spec)
        })
        .collect();
    (spec, tensors)
}

fn assets() -> PathBuf {
    support::repo_root().join(".lookalike")
}

fn load_embedder(spec: &ModelSpec, threads: usize) -> anyhow::Result<Embedder> {
    Embedder::load(
        &assets().join("lib/libonnxruntime.so.1.31.1"),
        spec.clone(),
        threads,
    )
}

/// Warms every session with one batch, then runs them side by side, each on its share of the
/// tensors in batches of `batch`; returns the seconds the timed part took.
fn timed_run(embedders: &[Embedder], tensors: &[Array3<f32>], batch: usize) -> anyhow::Result<f64> {
    for e in embedders {
        e.embed_batch(&tensors[..batch.min(tensors.len())])?;
    }
    let share = tensors.len().div_ceil(embedders.len());
    let start = Instant::now();
    std::thread::scope(|scope| {
        let runs: Vec<_> = embedders
            .iter()
            .zip(tensors.chunks(share))
            .map(|(e, part)| {
                scope.spawn(move || {
                    for chunk in part.chunks(batch) {
                        e.embed_batch(chunk)?;
                    }
                    anyhow::Ok(())
                })
            })
            .collect();
        runs.into_iter()
            .try_for_each(|r| r.join().expect("model thread panicked"))
    })?;
    Ok(start.elapsed().as_secs_f64())
}

/// Images per second from the first submission until every job succeeded.
pub async fn end_to_end(
    files: &[PathBuf],
    root: &Path,
    overrides: &[(String, String)],
    layout: Layout,
) -> anyhow::Result<f64> {
    let (_env, service, _workers) = start_layout(overrides, layout).await;
    let images = ImageServer::start(root.to_path_buf()).await;
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
    ingest_until_done(&service, items, &warm_url).await
}

/// Starts `layout` with `overrides` (each `LOOKALIKE_<SECTION>__<KEY>`) on a fresh database and queue,
/// and returns it with the worker processes it needs (a `Service` stops its process when dropped).
async fn start_layout(
    overrides: &[(String, String)],
    layout: Layout,
) -> (support::TestEnv, support::Service, Vec<support::Service>) {
    let mut env = support::TestEnv::new().await;
    for (key, value) in overrides {
        env.set(key.trim_start_matches("LOOKALIKE_"), value);
    }
    let mut workers = Vec::new();
    let service = match layout {
        Layout::Serve => env.start().await,
        Layout::Split { workers: n } => {
            let api = env.spawn_process("api", &[]);
            api.wait_ready(Duration::from_secs(60)).await;
            for _ in 0..n {
                let worker = env.spawn_worker(&[]);
                worker.wait_ready(Duration::from_secs(60)).await;
                workers.push(worker);
            }
            api
        }
    };
    (env, service, workers)
}

/// End to end on URLs the caller serves: starts `layout` with `overrides`, ingests `warm_url` once
/// (not timed), then submits every URL of `urls` and waits until every job succeeded. Images per
/// second from the first submission. `warm_url` should not carry the bytes of any measured URL:
/// the service reuses the analysis of identical bytes.
pub async fn end_to_end_urls(
    urls: &[String],
    warm_url: &str,
    overrides: &[(String, String)],
    layout: Layout,
) -> anyhow::Result<f64> {
    let (_env, service, _workers) = start_layout(overrides, layout).await;
    let items: Vec<Value> = urls
        .iter()
        .enumerate()
        .map(|(i, url)| json!({"url": url, "external_id": format!("bench-{i}")}))
        .collect();
    ingest_until_done(&service, items, warm_url).await
}

/// Ingests `warm_url` (not timed), then submits `items` and waits until every job finished; images per
/// second from the first submission until then. Fails if any job failed.
async fn ingest_until_done(
    service: &support::Service,
    items: Vec<Value>,
    warm_url: &str,
) -> anyhow::Result<f64> {
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

/// Writes `figures` to `bench-results/<name>-<date>.json` with the date, the machine and the
/// command that made them (the README's tables quote these files).
pub fn write_result(name: &str, command: &str, figures: Value) -> anyhow::Result<PathBuf> {
    let now = chrono::Utc::now();
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_default();
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0 / 1024.0);
    let result = json!({
        "date": now.to_rfc3339(),
        "command": command,
        "machine": {
            "cores": std::thread::available_parallelism().map_or(0, |n| n.get()),
            "cpu": cpu,
            "memory_gib": (mem_gib * 10.0).round() / 10.0,
            "os": std::env::consts::OS,
            "arch": std::env::consts::ARCH,
        },
        "figures": figures,
    });
    let dir = support::repo_root().join("bench-results");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(format!("{name}-{}.json", now.format("%Y-%m-%d")));
    std::fs::write(&path, serde_json::to_string_pretty(&result)? + "\n")?;
    Ok(path)
}

/// The real-photo set (`scripts/bench-photos.sh`, or the folder `LOOKALIKE_BENCH_IMAGES` names), its
/// image files in name order, and its manifest (sizes, sources) when it has one.
pub fn photo_set() -> anyhow::Result<(PathBuf, Vec<PathBuf>, Option<Value>)> {
    let dir = match std::env::var_os("LOOKALIKE_BENCH_IMAGES") {
        Some(dir) => PathBuf::from(dir),
        None => {
            let script = support::repo_root().join("scripts/bench-photos.sh");
            let out = std::process::Command::new("bash")
                .arg(&script)
                .stderr(std::process::Stdio::inherit())
                .output()?;
            anyhow::ensure!(out.status.success(), "{} failed", script.display());
            let text = String::from_utf8(out.stdout)?;
            PathBuf::from(text.lines().last().unwrap_or_default().trim())
        }
    };
    let mut files = Vec::new();
    support::images::collect_images(&dir, &mut files);
    anyhow::ensure!(!files.is_empty(), "no images under {}", dir.display());
    let manifest = std::fs::read(dir.join("manifest.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    Ok((dir, files, manifest))
}

/// Median megapixels of `files` according to the photo set's manifest.
pub fn median_megapixels(manifest: Option<&Value>, files: &[PathBuf]) -> Option<f64> {
    let entries = manifest?["files"].as_array()?;
    let mut mp: Vec<f64> = files
        .iter()
        .filter_map(|f| {
            let name = f.file_name()?.to_str()?;
            let e = entries.iter().find(|e| e["file"] == name)?;
            Some(e["width"].as_f64()? * e["height"].as_f64()? / 1e6)
        })
        .collect();
    if mp.len() != files.len() {
        return None;
    }
    mp.sort_by(f64::total_cmp);
    let n = mp.len();
    Some(if n % 2 == 1 {
        mp[n / 2]
    } else {
        (mp[n / 2 - 1] + mp[n / 2]) / 2.0
    })
}

/// One shape of the model alone: `sessions` sessions of `threads` ONNX threads side by side, each
/// running batches of `batch` on its share of the images.
#[derive(Debug, Clone, Copy)]
pub struct ModelShape {
    pub batch: usize,
    pub sessions: usize,
    pub threads: usize,
    pub images_per_s: f64,
}

/// The model alone on `files`, decoded and preprocessed into tensors first (not timed), in every
/// combination of `batches` and `layouts` (sessions, threads per session). Each run is warmed up
/// with one batch per session first.
pub fn model_grid(
    config: &Config,
    files: &[PathBuf],
    batches: &[usize],
    layouts: &[(usize, usize)],
) -> anyhow::Result<Vec<ModelShape>> {
    let started = Instant::now();
    let (spec, tensors) = model_tensors(config, files);
    println!(
        "model alone: {} images decoded into tensors in {:.1}s (not timed)",
        tensors.len(),
        started.elapsed().as_secs_f64()
    );
    // Sessions are loaded once per thread count and reused across batch sizes.
    let mut sessions: std::collections::BTreeMap<usize, Vec<lookalike_vision::Embedder>> =
        Default::default();
    for &(n, threads) in layouts {
        let have = sessions.entry(threads).or_default();
        while have.len() < n {
            have.push(load_embedder(&spec, threads)?);
        }
    }
    let mut cells = Vec::new();
    for &(n, threads) in layouts {
        for &batch in batches {
            let secs = timed_run(&sessions[&threads][..n], &tensors, batch)?;
            let cell = ModelShape {
                batch,
                sessions: n,
                threads,
                images_per_s: tensors.len() as f64 / secs,
            };
            println!(
                "model alone: batch {batch}, {n} session(s) x {threads} thread(s): {} images in \
                 {secs:.2}s, {:.1} images/s",
                tensors.len(),
                cell.images_per_s
            );
            cells.push(cell);
        }
    }
    Ok(cells)
}

/// Runs `benches/python/ingest.py` with the pinned environment of `scripts/pyenv.sh` on the URLs in
/// `urls_file`, with `args` added; returns the JSON object it prints.
pub fn python_ingest(urls_file: &Path, args: &[String]) -> anyhow::Result<Value> {
    let repo = support::repo_root();
    let out = std::process::Command::new("bash")
        .arg(repo.join("scripts/pyenv.sh"))
        .stderr(std::process::Stdio::inherit())
        .output()?;
    anyhow::ensure!(out.status.success(), "scripts/pyenv.sh failed");
    let python = String::from_utf8(out.stdout)?.trim().to_owned();
    let out = std::process::Command::new(&python)
        .arg(repo.join("benches/python/ingest.py"))
        .arg("--urls")
        .arg(urls_file)
        .arg("--model")
        // The file lookalike loads on this CPU (its uint8 twin where int8 is not exact), so both
        // stacks run the same model.
        .arg(lookalike_vision::model_file_for_this_cpu(
            &repo.join(".lookalike/models/clip_vitb16_visual_int8.onnx"),
        ))
        .args(args)
        .stderr(std::process::Stdio::inherit())
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "benches/python/ingest.py {args:?} failed"
    );
    let text = String::from_utf8(out.stdout)?;
    Ok(serde_json::from_str(
        text.lines().last().unwrap_or_default(),
    )?)
}
