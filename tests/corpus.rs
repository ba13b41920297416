//! The bad-image corpus through the real service: every file is served over HTTP (as `image/jpeg`,
//! whatever it is, as a careless CDN would) and submitted as a URL job. Good files must become items
//! with a thumbnail and a unit-length embedding, bad ones must fail with their precise code after one
//! attempt, and the service must still be alive, healthy and within its memory bound afterwards.

mod support;

#[path = "../crates/vision/tests/common/corpus.rs"]
mod corpus;

use std::time::{Duration, Instant};

use corpus::Expect;
use serde_json::{Value, json};
use support::images::ImageServer;
use support::*;

/// The whole corpus (about 100 jobs, a dozen of them 3-megapixel photos) takes 10-20 s here.
const LIMIT: Duration = Duration::from_secs(300);

/// The service runs with the defaults (config/default.toml), so the bounds come from there too.
fn defaults() -> lookalike_core::config::Config {
    lookalike_core::config::Config::load_from(None, std::iter::empty()).expect("default config")
}

/// Peak and current resident memory of a process, from /proc (kB).
fn memory_kb(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("{name} missing from /proc/{pid}/status"))
    };
    (field("VmHWM:"), field("VmRSS:"))
}

#[tokio::test(flavor = "multi_thread")]
async fn every_corpus_file_succeeds_or_fails_with_its_code_and_the_service_stays_healthy() {
    let env = TestEnv::new().await;
    let served = env.dir.path().join("corpus");
    std::fs::create_dir_all(&served).unwrap();
    let cases = corpus::all();
    for (name, bytes, _) in &cases {
        std::fs::write(served.join(name), bytes).unwrap();
    }
    std::fs::copy(
        reference_dir().join("allstar-sneakers.jpg"),
        served.join("warm-up.jpg"),
    )
    .unwrap();
    let images = ImageServer::start(served).await;
    let mut service = env.start().await;
    let pid = service.child.id();

    // Warm up with an ordinary photo (not one of the corpus: identical bytes would reuse its
    // analysis), so the baseline includes the model's working memory.
    let warm = service
        .submit_urls(json!([{"url": images.url("/files/warm-up.jpg"), "external_id": "warm-up"}]))
        .await;
    assert_eq!(
        service.wait_job(&warm[0], LIMIT).await["status"],
        "succeeded"
    );
    let (_, baseline_kb) = memory_kb(pid);

    let items: Vec<Value> = cases
        .iter()
        .map(|(name, _, _)| json!({"url": images.url(&format!("/files/{name}")), "external_id": name}))
        .collect();
    let started = Instant::now();
    let ids = service.submit_urls(Value::Array(items)).await;
    let jobs = service.wait_jobs(&ids, LIMIT).await;
    let elapsed = started.elapsed();

    let mut failures = Vec::new();
    let (mut good, mut bad) = (0, 0);
    for ((name, _, expect), job) in cases.iter().zip(&jobs) {
        let result = match *expect {
            Expect::Good {
                format,
                width,
                height,
            } => {
                good += 1;
                check_item(&service, job, format, width, height).await
            }
            Expect::Bad(code) => {
                bad += 1;
                check_failure(job, code)
            }
        };
        if let Err(why) = result {
            failures.push(format!("{name}: {why}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // Still the same process, alive and ready; no decoder panic reached the log.
    assert!(
        service.child.try_wait().unwrap().is_none(),
        "the service exited"
    );
    assert_eq!(service.get("/healthz").await.0, 200);
    assert_eq!(service.get("/readyz").await.0, 200);
    let log = service.log();
    assert!(!log.contains("panicked"), "a panic reached the log:\n{log}");
    let (_, status) = service.get("/v1/status").await;
    assert_eq!(status["jobs"]["succeeded"], good + 1, "{status}");
    assert_eq!(status["jobs"]["failed"], bad, "{status}");
    assert_eq!(status["index"]["points"], good + 1, "{status}");

    // Memory: the decompression bombs declare gigabytes; none of it may be allocated. One decode may
    // use up to image.max_alloc_bytes (one at a time with a single decode thread), so the process's
    // peak resident size stays under what it needed with the model warm plus that allowance.
    let config = defaults();
    assert_eq!(
        config.worker.decode_threads, 1,
        "the bound assumes one decode at a time"
    );
    let (peak_kb, now_kb) = memory_kb(pid);
    let bound_kb = baseline_kb + config.image.max_alloc_bytes / 1024;
    println!(
        "{good} good and {bad} bad files in {:.1} s; memory: {} MiB after warm-up, peak {} MiB, \
         now {} MiB, bound {} MiB",
        elapsed.as_secs_f64(),
        baseline_kb / 1024,
        peak_kb / 1024,
        now_kb / 1024,
        bound_kb / 1024
    );
    assert!(
        peak_kb < bound_kb,
        "peak resident memory {peak_kb} kB over the bound of {bound_kb} kB"
    );
    service.terminate(Duration::from_secs(30));
}

async fn check_item(
    service: &Service,
    job: &Value,
    format: &str,
    width: u32,
    height: u32,
) -> Result<(), String> {
    if job["status"] != "succeeded" || job["attempts"] != 1 {
        return Err(format!("expected success on the first attempt: {job}"));
    }
    let id = job["item_id"].as_str().ok_or("no item_id")?;
    let (status, item) = service.get(&format!("/v1/items/{id}?vector=true")).await;
    if status != 200 {
        return Err(format!("item {status}: {item}"));
    }
    if (
        item["format"].as_str(),
        item["width"].as_u64(),
        item["height"].as_u64(),
    ) != (Some(format), Some(width.into()), Some(height.into()))
    {
        return Err(format!("expected a {format} {width}x{height} item: {item}"));
    }
    let vector = floats(&item["vector"]);
    let norm = vector.iter().map(|x| x * x).sum::<f32>().sqrt();
    if vector.len() != 512 || !vector.iter().all(|x| x.is_finite()) || (norm - 1.0).abs() > 1e-3 {
        return Err(format!("embedding of {} values, norm {norm}", vector.len()));
    }

    let response = service
        .client
        .get(service.url(&format!("/v1/items/{id}/thumbnail")))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if response.status() != 200 || response.headers()["content-type"] != "image/jpeg" {
        return Err(format!("thumbnail answer {response:?}"));
    }
    let bytes = response.bytes().await.map_err(|e| e.to_string())?;
    let thumb = lookalike_vision::clean(&bytes, &Default::default())
        .map_err(|e| format!("thumbnail does not decode: {e}"))?;
    // The thumbnail is made from the pixels the model gets: a JPEG decoded in draft (a new
    // catalogue's recipe, README "Decoding at the size the model needs") gives a thumbnail of at
    // most that decode's size, which is still at least the model's.
    let model = &defaults().model;
    let s = if format == "jpeg" {
        lookalike_vision::draft_scale(width, height, model.resize_shorter.max(model.input_size))
    } else {
        1
    };
    let (width, height) = (width.div_ceil(s), height.div_ceil(s));
    let long = width.max(height);
    let want_long = long.min(defaults().worker.thumbnail_size);
    let want_short = ((u64::from(width.min(height)) * u64::from(want_long) + u64::from(long) / 2)
        / u64::from(long))
    .max(1);
    let (tl, ts) = (thumb.width.max(thumb.height), thumb.width.min(thumb.height));
    if tl != want_long
        || u64::from(ts).abs_diff(want_short) > 1
        || (thumb.width >= thumb.height) != (width >= height)
    {
        return Err(format!(
            "thumbnail {}x{} for a {width}x{height} image",
            thumb.width, thumb.height
        ));
    }
    Ok(())
}

fn check_failure(job: &Value, code: &str) -> Result<(), String> {
    let message = job["error"]["message"].as_str().unwrap_or_default();
    if job["status"] != "failed" || job["error"]["code"] != code || message.is_empty() {
        return Err(format!("expected to fail with {code}: {job}"));
    }
    // Bad input is permanent: it is never retried.
    if job["attempts"] != 1 {
        return Err(format!("retried a permanent failure: {job}"));
    }
    Ok(())
}
