//! Nothing is lost: jobs in flight when the process dies (SIGKILL) or is stopped (SIGTERM) all end
//! `succeeded` exactly once after a restart.

mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::images::ImageServer;
use support::*;

const NAMES: [&str; 4] = [
    "allstar-sneakers.jpg",
    "sneakers_01__1.png",
    "skimage_chelsea.png",
    "skimage_coffee.png",
];

async fn submit_batch(service: &Service, images: &ImageServer, n: usize) -> Vec<String> {
    let items: Vec<Value> = (0..n)
        .map(|i| json!({"url": images.url(&format!("/files/{}?copy={i}", NAMES[i % NAMES.len()])), "external_id": format!("sku-{i}")}))
        .collect();
    service.submit_urls(Value::Array(items)).await
}

async fn succeeded(service: &Service) -> i64 {
    service.get("/v1/status").await.1["jobs"]["succeeded"]
        .as_i64()
        .unwrap_or(0)
}

/// Waits until at least `n` jobs succeeded, so the stop lands in the middle of the batch.
async fn wait_for_progress(service: &Service, n: i64) {
    let start = Instant::now();
    while succeeded(service).await < n {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "no progress; log:\n{}",
            service.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every job succeeded, and there is exactly one item and one vector per job.
async fn assert_all_once(env: &TestEnv, service: &Service, ids: &[String]) {
    for job in service.wait_jobs(ids, Duration::from_secs(180)).await {
        assert_eq!(job["status"], "succeeded", "{job}");
        assert_eq!(job["item_id"], job["id"], "item id is the job id");
    }
    let (_, status) = service.get("/v1/status").await;
    assert_eq!(status["jobs"]["succeeded"], ids.len() as i64, "{status}");
    assert_eq!(
        status["items"],
        ids.len() as i64,
        "no duplicate items: {status}"
    );
    assert_eq!(
        status["index"]["points"],
        ids.len() as u64,
        "no duplicate or missing vectors: {status}"
    );
    let mut db = env.db().await;
    let distinct: i64 = sqlx::query_scalar("SELECT count(DISTINCT external_id) FROM items")
        .fetch_one(&mut db)
        .await
        .unwrap();
    assert_eq!(distinct, ids.len() as i64);
}

#[tokio::test(flavor = "multi_thread")]
async fn jobs_in_flight_when_the_process_is_killed_finish_exactly_once_after_restart() {
    let mut env = TestEnv::new().await;
    // Every job runs the model (no shortcut for repeated images), so the kill lands mid-batch.
    env.set("WORKER__REUSE_IDENTICAL_IMAGES", false);
    let images = ImageServer::start(reference_dir()).await;
    let mut service = env.start().await;
    let ids = submit_batch(&service, &images, 40).await;
    wait_for_progress(&service, 4).await;

    service.kill(); // SIGKILL: no chance to ack, drain or flush anything
    let mut db = env.db().await;
    let unfinished: i64 =
        sqlx::query_scalar("SELECT count(*) FROM jobs WHERE status IN ('queued', 'processing')")
            .fetch_one(&mut db)
            .await
            .unwrap();
    assert!(
        unfinished > 0,
        "the kill should land while jobs are still in flight"
    );
    let processing: i64 =
        sqlx::query_scalar("SELECT count(*) FROM jobs WHERE status = 'processing'")
            .fetch_one(&mut db)
            .await
            .unwrap();
    eprintln!("killed with {unfinished} jobs unfinished, {processing} of them processing");

    let service = env.start().await;
    assert_all_once(&env, &service, &ids).await;
    // The jobs that were mid-flight were attempted again, and none stayed `processing`.
    let retried: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs WHERE attempts > 1")
        .fetch_one(&mut db)
        .await
        .unwrap();
    assert!(
        retried >= processing.min(1),
        "in-flight jobs are picked up again after the restart"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_finishes_in_flight_jobs_exits_cleanly_and_leaves_the_rest_queued() {
    let mut env = TestEnv::new().await;
    env.set("WORKER__CONCURRENCY", 4)
        .set("WORKER__REUSE_IDENTICAL_IMAGES", false);
    let images = ImageServer::start(reference_dir()).await;
    let mut service = env.start().await;
    let ids = submit_batch(&service, &images, 24).await;
    wait_for_progress(&service, 2).await;

    let code = service.terminate(Duration::from_secs(60));
    assert_eq!(
        code,
        Some(0),
        "graceful shutdown exits 0; log:\n{}",
        service.log()
    );
    assert!(
        service.log().contains("worker stopped"),
        "{}",
        service.log()
    );
    // After a drain nothing is left half-done: jobs are finished or still waiting in the queue.
    let mut db = env.db().await;
    let processing: i64 =
        sqlx::query_scalar("SELECT count(*) FROM jobs WHERE status = 'processing'")
            .fetch_one(&mut db)
            .await
            .unwrap();
    assert_eq!(processing, 0, "drained jobs are finished, not abandoned");
    let queued: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs WHERE status = 'queued'")
        .fetch_one(&mut db)
        .await
        .unwrap();
    assert!(queued > 0, "the stop should land mid-batch");

    let service = env.start().await;
    assert_all_once(&env, &service, &ids).await;
}
