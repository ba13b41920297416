//! Soak test (opt-in, not part of every CI run): 2,000 jobs from 32 concurrent clients, one in ten of
//! them bad, while the service is killed (SIGKILL) and restarted once in the middle.
//!
//!     cargo test --release --test soak -- --ignored --nocapture
//!
//! `LOOKALIKE_SOAK_JOBS` and `LOOKALIKE_SOAK_CLIENTS` change the size. Clients behave like careful
//! catalogue systems: each request carries an `Idempotency-Key`, and a request that got no answer (the
//! service was down) is sent again with the same key until it is answered. The report counts jobs by
//! outcome and error code, and the two numbers that must be zero: lost (accepted but never finished)
//! and duplicated (a second item or vector for one submission).

mod support;

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::batch::NAMES;
use support::images::ImageServer;
use support::*;

fn setting(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The n-th submission: mostly real images (distinct URLs), every tenth one bad in one of three ways.
fn item(images: &ImageServer, n: usize) -> Value {
    let url = match n % 30 {
        9 => images.url(&format!("/missing.jpg?n={n}")), // 404
        19 => images.url(&format!("/files/expected.json?n={n}")), // not an image
        29 => images.url(&format!("/declared-huge.jpg?n={n}")), // decompression bomb
        _ => images.url(&format!("/files/{}?n={n}", NAMES[n % NAMES.len()])),
    };
    json!({"url": url, "external_id": format!("soak-{n}")})
}

/// Sends one request until the service answers it, with the same idempotency key every time.
async fn submit(client: &reqwest::Client, base: &str, key: &str, body: &Value) -> Vec<String> {
    loop {
        let sent = client
            .post(format!("{base}/v1/images"))
            .header("idempotency-key", key)
            .json(body)
            .timeout(Duration::from_secs(30))
            .send()
            .await;
        if let Ok(response) = sent {
            let status = response.status().as_u16();
            let answer: Value = response.json().await.unwrap_or(Value::Null);
            if status == 202 || status == 200 {
                return job_ids(&answer);
            }
            assert!(status >= 500, "request {key} refused: {status} {answer}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "soak test: run on request (see the module docs)"]
async fn soak_2000_jobs_32_clients_one_kill() {
    let jobs = setting("LOOKALIKE_SOAK_JOBS", 2000);
    let clients = setting("LOOKALIKE_SOAK_CLIENTS", 32);
    let per_request = 5;
    let env = TestEnv::new().await;
    let images = Arc::new(ImageServer::start(reference_dir()).await);
    let mut service = env.start().await;
    let base = service.url("");
    let started = Instant::now();

    let next = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let (next, images, base) = (next.clone(), images.clone(), base.clone());
            tokio::spawn(async move {
                let client = reqwest::Client::new();
                let mut accepted = Vec::new();
                loop {
                    let first = next.fetch_add(per_request, Ordering::SeqCst);
                    if first >= jobs {
                        return accepted;
                    }
                    let items: Vec<Value> = (first..(first + per_request).min(jobs))
                        .map(|n| item(&images, n))
                        .collect();
                    let key = format!("soak-{c}-{first}");
                    accepted.extend(submit(&client, &base, &key, &json!({"items": items})).await);
                }
            })
        })
        .collect();

    // Kill the service once a quarter of the jobs are done, while clients keep submitting.
    let mut db = env.db().await;
    loop {
        let finished: i64 =
            sqlx::query_scalar("SELECT count(*) FROM jobs WHERE status IN ('succeeded', 'failed')")
                .fetch_one(&mut db)
                .await
                .unwrap();
        if finished as usize >= jobs / 4 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "no progress:\n{}",
            service.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    service.kill();
    let killed_at = started.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let service = env.start().await;

    let mut accepted = Vec::new();
    for task in tasks {
        accepted.extend(task.await.unwrap());
    }
    let distinct: HashSet<&String> = accepted.iter().collect();

    // Wait until nothing is queued or processing (bounded), then count.
    let deadline = Instant::now() + Duration::from_secs(900);
    loop {
        let open: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM jobs WHERE status IN ('queued', 'processing')",
        )
        .fetch_one(&mut db)
        .await
        .unwrap();
        if open == 0 || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let elapsed = started.elapsed();

    let outcomes: Vec<(String, Option<String>, i64)> =
        sqlx::query_as("SELECT status, error_code, count(*) FROM jobs GROUP BY 1, 2 ORDER BY 1, 2")
            .fetch_all(&mut db)
            .await
            .unwrap();
    let ids: Vec<uuid::Uuid> = distinct.iter().map(|id| id.parse().unwrap()).collect();
    let lost: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM unnest($1::uuid[]) AS a(id)
         LEFT JOIN jobs j ON j.id = a.id
         WHERE j.id IS NULL OR j.status NOT IN ('succeeded', 'failed')",
    )
    .bind(&ids)
    .fetch_one(&mut db)
    .await
    .unwrap();
    let items: i64 = sqlx::query_scalar("SELECT count(*) FROM items")
        .fetch_one(&mut db)
        .await
        .unwrap();
    let external_ids: i64 = sqlx::query_scalar("SELECT count(DISTINCT external_id) FROM items")
        .fetch_one(&mut db)
        .await
        .unwrap();
    let (_, status) = service.get("/v1/status").await;
    let points = status["index"]["points"].as_i64().unwrap();
    let duplicated = (items - external_ids) + (points - items).max(0);
    let jobs_in_db: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs")
        .fetch_one(&mut db)
        .await
        .unwrap();

    let mut by_outcome: BTreeMap<String, i64> = BTreeMap::new();
    for (status, code, n) in &outcomes {
        let key = match code {
            Some(code) => format!("{status} ({code})"),
            None => status.clone(),
        };
        *by_outcome.entry(key).or_default() += n;
    }
    println!(
        "soak: {jobs} submissions from {clients} clients; service killed at {killed_at:.1?} and restarted"
    );
    println!(
        "soak: accepted job ids {} (distinct {}), jobs in the database {jobs_in_db}",
        accepted.len(),
        distinct.len()
    );
    for (outcome, n) in &by_outcome {
        println!("soak:   {outcome:<40} {n:>6}");
    }
    println!(
        "soak: items {items}, vectors {points}; lost {lost}, duplicated {duplicated}; took {elapsed:.1?} ({:.1} jobs/s)",
        jobs as f64 / elapsed.as_secs_f64()
    );

    assert_eq!(
        distinct.len(),
        jobs,
        "every submission got exactly one job id"
    );
    assert_eq!(accepted.len(), jobs, "no job id handed out twice");
    assert_eq!(
        jobs_in_db as usize, jobs,
        "a retried request made no new jobs"
    );
    assert_eq!(lost, 0, "lost jobs");
    assert_eq!(duplicated, 0, "duplicated items or vectors");
    let bad = (0..jobs).filter(|n| n % 10 == 9).count() as i64;
    let failed: i64 = outcomes
        .iter()
        .filter(|(s, _, _)| s == "failed")
        .map(|(_, _, n)| n)
        .sum();
    assert_eq!(
        failed, bad,
        "exactly the bad submissions failed: {by_outcome:?}"
    );
    assert_eq!(items, jobs as i64 - bad);
}
