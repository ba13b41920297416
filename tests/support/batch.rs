//! A batch of distinct jobs and the checks that nothing in it was lost or duplicated, for the tests that
//! stop or break something in the middle of a batch.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::images::ImageServer;
use super::{Service, TestEnv};

pub const NAMES: [&str; 4] = [
    "allstar-sneakers.jpg",
    "sneakers_01__1.png",
    "skimage_chelsea.png",
    "skimage_coffee.png",
];

pub async fn submit_batch(service: &Service, images: &ImageServer, n: usize) -> Vec<String> {
    let items: Vec<Value> = (0..n)
        .map(|i| json!({"url": images.url(&format!("/files/{}?copy={i}", NAMES[i % NAMES.len()])), "external_id": format!("sku-{i}")}))
        .collect();
    service.submit_urls(Value::Array(items)).await
}

pub async fn succeeded(service: &Service) -> i64 {
    service.get("/v1/status").await.1["jobs"]["succeeded"]
        .as_i64()
        .unwrap_or(0)
}

/// Waits until at least `n` jobs succeeded, so the stop lands in the middle of the batch.
pub async fn wait_for_progress(service: &Service, n: i64) {
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
pub async fn assert_all_once(env: &TestEnv, service: &Service, ids: &[String]) {
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
