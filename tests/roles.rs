//! Which parts a process runs: `serve` (everything), `api` and `worker` apart (Qdrant server only),
//! and a pool of several model sessions in one process.

mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::images::ImageServer;
use support::*;

const LIMIT: Duration = Duration::from_secs(120);

/// URL jobs over the reference images, each a distinct URL so no two share a job.
fn catalogue(images: &ImageServer, n: usize) -> Value {
    let files = [
        "allstar-sneakers.jpg",
        "sneakers_01__1.png",
        "skimage_coffee.png",
    ];
    Value::Array(
        (0..n)
            .map(|i| {
                json!({
                    "url": images.url(&format!("/files/{}?v={i}", files[i % files.len()])),
                    "external_id": format!("sku-{i}"),
                    "category": if i % files.len() == 2 { "cups" } else { "shoes" },
                })
            })
            .collect(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn api_and_worker_alone_refuse_the_embedded_index() {
    let env = TestEnv::new().await;
    for role in ["api", "worker"] {
        let out = env.command(role).output().expect("running lookalike");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{role}: {stderr}");
        assert!(
            stderr.contains("keeps the index inside one process")
                && stderr.contains("lookalike serve"),
            "{role} says why and what to do: {stderr}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn two_model_sessions_in_one_process_share_one_consumer_and_run_each_job_once() {
    let mut env = TestEnv::new().await;
    env.set("MODEL__SESSIONS", 2).set("MODEL__INTRA_THREADS", 1);
    let images = ImageServer::start(reference_dir()).await;
    let service = env.start().await;

    let ids = service.submit_urls(catalogue(&images, 12)).await;
    let jobs = service.wait_jobs(&ids, LIMIT).await;
    assert!(jobs.iter().all(|j| j["status"] == "succeeded"), "{jobs:?}");
    let (_, status) = service.get("/v1/status").await;
    assert_eq!(
        status["queue"]["consumers"], 1,
        "one consumer feeds the pool: {status}"
    );
    assert_eq!(
        status["index"]["points"], 12,
        "one vector per job: {status}"
    );
    let mut db = env.db().await;
    let (items,): (i64,) = sqlx::query_as("SELECT count(*) FROM items")
        .fetch_one(&mut db)
        .await
        .unwrap();
    assert_eq!(items, 12);
}

/// The scaled-out layout: `lookalike api` plus two `lookalike worker` processes on one queue, with
/// the test command's Qdrant server (`QDRANT_URL`; missing, it fails under the test command and CI).
#[tokio::test(flavor = "multi_thread")]
async fn api_and_two_workers_apart_with_a_qdrant_server() {
    let Some(mut env) = TestEnv::on_shared_qdrant().await else {
        return;
    };
    env
        // Small prefetch, so that the first worker cannot take every job before the second starts.
        .set("WORKER__CONCURRENCY", 2)
        // Both workers look for a due classifier head often; one must train it, all must load it.
        .set("CLASSIFY__HEAD_MIN_LABELS", 6)
        .set("CLASSIFY__HEAD_CHECK_MS", 200)
        .set("CLASSIFY__HEAD_RETRAIN_MIN", 1000);
    let images = ImageServer::start(reference_dir()).await;
    let api = env.spawn_process("api", &[]);
    api.wait_ready(LIMIT).await;
    let mut workers = Vec::new();
    for _ in 0..2 {
        let worker = env.spawn_worker(&[]);
        worker.wait_ready(LIMIT).await;
        let (status, _) = worker.get("/healthz").await;
        assert_eq!(status, 200);
        workers.push(worker);
    }
    let ids = api.submit_urls(catalogue(&images, 12)).await;
    let jobs = api.wait_jobs(&ids, LIMIT).await;
    assert!(jobs.iter().all(|j| j["status"] == "succeeded"), "{jobs:?}");
    let (_, status) = api.get("/v1/status").await;
    assert_eq!(status["queue"]["consumers"], 2, "{status}");
    assert_eq!(status["index"]["points"], 12, "{status}");
    for (i, worker) in workers.iter().enumerate() {
        assert!(
            worker.log().contains("job succeeded"),
            "worker {i} took part:\n{}",
            worker.log()
        );
    }
    let item = jobs[0]["item_id"].as_str().unwrap();
    let (status, body) = api
        .get(&format!("/v1/items/{item}/similar?category=any"))
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(!body["results"].as_array().unwrap().is_empty(), "{body}");

    // The classifier head: trained once, by one worker, under the database lock; the API loads it.
    let start = Instant::now();
    let head = loop {
        let (_, status) = api.get("/v1/status").await;
        if !status["classifier"]["head"].is_null() {
            break status["classifier"]["head"].clone();
        }
        assert!(start.elapsed() < LIMIT, "no head: {status}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // Several check periods: a second worker that also found a training due must not train again.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut db = env.db().await;
    let versions: Vec<(i32, i32)> =
        sqlx::query_as("SELECT version, trained_on FROM classifier_heads ORDER BY version")
            .fetch_all(&mut db)
            .await
            .unwrap();
    assert_eq!(
        versions.len(),
        1,
        "one training for one set of labels: {versions:?}"
    );
    assert_eq!(head["version"], versions[0].0);
    let trainers = workers
        .iter()
        .filter(|w| w.log().contains("classifier head trained"))
        .count();
    assert_eq!(trainers, 1, "exactly one worker trained");
    for (i, worker) in workers.iter().enumerate() {
        assert!(
            worker.log().contains("classifier head"),
            "worker {i} has the head:\n{}",
            worker.log()
        );
    }
    assert!(
        api.log().contains("classifier head loaded"),
        "{}",
        api.log()
    );
}
