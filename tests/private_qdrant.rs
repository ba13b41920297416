//! The separate `lookalike api` and `lookalike worker` processes against a Qdrant server of the
//! test's own, which the tests stop, start, break and fix: a server restart in the middle of a
//! batch, a server that is not there yet when the processes start, a collection deleted under
//! running workers, and a refused API key. Afterwards every job has ended as it should, and none
//! spent its attempts on what only an operator could fix.
//!
//! Each test runs its own server (own storage and ports), so the suite's shared server
//! (`QDRANT_URL`) is never disturbed. They need the server binary (`LOOKALIKE_QDRANT_BIN`, by
//! default `../shared/bin/qdrant`); every test name starts with `private_qdrant` so a pipeline
//! without the binary can leave them out by that word.

mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::batch::*;
use support::images::ImageServer;
use support::qdrant::PrivateQdrant;
use support::*;

const LIMIT: Duration = Duration::from_secs(120);

/// `lookalike api` and `workers` worker processes on `server`, started without waiting for them.
struct Layout {
    env: TestEnv,
    api: Service,
    workers: Vec<Service>,
    /// The alias (`index.collection`).
    alias: String,
    /// The model's own collection behind it, which the processes use.
    collection: String,
}

impl Layout {
    async fn spawn(server: &PrivateQdrant, workers: usize, key: Option<&str>) -> Layout {
        let mut env = TestEnv::new().await;
        let alias = format!("test-{}", env.db_name);
        let collection = lookalike_index::collection_for_model(&alias, "clip-vit-b16-int8+draft");
        env.set("INDEX__BACKEND", "qdrant")
            .set("INDEX__URL", server.url())
            .set("INDEX__COLLECTION", &alias)
            .set("INDEX__TIMEOUT_MS", 3000)
            .set("WORKER__REUSE_IDENTICAL_IMAGES", false)
            .set("WORKER__CONCURRENCY", 2)
            .set("MODEL__INTRA_THREADS", 1)
            // Short backoff: jobs that met the outage come back soon after the server does.
            .set("QUEUE__RETRY_BASE_MS", 500)
            .set("QUEUE__RETRY_MAX_MS", 3000);
        if let Some(key) = key {
            env.set("INDEX__API_KEY", key);
        }
        let api = env.spawn_process("api", &[]);
        let workers = (0..workers).map(|_| env.spawn_worker(&[])).collect();
        Layout {
            env,
            api,
            workers,
            alias,
            collection,
        }
    }

    async fn wait_ready(&self) {
        self.api.wait_ready(LIMIT).await;
        for worker in &self.workers {
            worker.wait_ready(LIMIT).await;
        }
    }

    fn logs(&self) -> String {
        let mut all = format!("--- api\n{}", self.api.log());
        for (i, w) in self.workers.iter().enumerate() {
            all += &format!("\n--- worker {i}\n{}", w.log());
        }
        all
    }
}

/// The exact number of points in `collection`, asked of the server itself.
async fn points_in(server: &PrivateQdrant, collection: &str) -> u64 {
    let r: Value = reqwest::Client::new()
        .post(format!(
            "{}/collections/{collection}/points/count",
            server.http_url()
        ))
        .json(&json!({"exact": true}))
        .send()
        .await
        .expect("Qdrant REST")
        .json()
        .await
        .expect("JSON");
    r["result"]["count"]
        .as_u64()
        .unwrap_or_else(|| panic!("{r}"))
}

/// Waits until `service`'s `/readyz` says 503 with the index check failing, and returns the check.
/// The process may still be starting: until it listens, there is nothing to ask.
async fn wait_index_not_ready(service: &Service) -> String {
    let started = Instant::now();
    let mut last = Value::Null;
    loop {
        if let Ok(r) = service.client.get(service.url("/readyz")).send().await {
            let status = r.status().as_u16();
            last = r.json().await.unwrap_or(Value::Null);
            let check = last["checks"]["index"].as_str().unwrap_or("").to_string();
            if status == 503 && check.starts_with("error") {
                return check;
            }
        }
        assert!(
            started.elapsed() < LIMIT,
            "the index check never failed: {last}\nlog:\n{}",
            service.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn job_rows(env: &TestEnv) -> Vec<(String, i32, Option<String>)> {
    let mut db = env.db().await;
    sqlx::query_as("SELECT status::text, attempts, error_code FROM jobs ORDER BY created_at")
        .fetch_all(&mut db)
        .await
        .unwrap()
}

/// The server is killed in the middle of a 30-job batch and started again: submissions keep
/// being accepted meanwhile, jobs wait and retry, and afterwards every job succeeded exactly once
/// (items = points = jobs).
#[tokio::test(flavor = "multi_thread")]
async fn private_qdrant_restart_mid_batch_loses_and_duplicates_nothing() {
    let Some(mut server) = PrivateQdrant::start().await else {
        return;
    };
    let layout = Layout::spawn(&server, 2, None).await;
    layout.wait_ready().await;
    let images = ImageServer::start(reference_dir()).await;
    let mut ids = submit_batch(&layout.api, &images, 30).await;
    wait_for_progress(&layout.api, 3).await;

    server.kill();
    // The API takes jobs without the index: they wait in the queue.
    let during: Vec<Value> = (0..5)
        .map(|i| json!({"url": images.url(&format!("/files/skimage_coffee.png?during={i}")), "external_id": format!("during-{i}")}))
        .collect();
    ids.extend(layout.api.submit_urls(Value::Array(during)).await);
    let check = wait_index_not_ready(&layout.api).await;
    assert!(check.contains("unavailable"), "{check}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    server.start_again().await;

    let jobs = layout.api.wait_jobs(&ids, Duration::from_secs(180)).await;
    for job in &jobs {
        assert_eq!(job["status"], "succeeded", "{job}\n{}", layout.logs());
    }
    let (_, status) = layout.api.get("/v1/status").await;
    assert_eq!(status["items"], ids.len() as i64, "{status}");
    assert_eq!(
        points_in(&server, &layout.collection).await,
        ids.len() as u64,
        "one vector per job"
    );
    assert_eq!(status["index"]["points"], ids.len() as u64, "{status}");
    let logs = layout.logs();
    assert!(
        logs.contains("job will be retried") && logs.contains("index_unavailable"),
        "jobs met the outage and were retried:\n{logs}"
    );
    for worker in &layout.workers {
        assert!(worker.log().contains("job succeeded"), "{logs}");
    }
    let (status, _) = layout.api.get("/readyz").await;
    assert_eq!(status, 200);
}

/// The processes start before the server exists: they come up (healthz), say `index` in their
/// readiness, accept jobs, and once the server is there they become ready and run the jobs,
/// creating the collection, without being restarted.
#[tokio::test(flavor = "multi_thread")]
async fn private_qdrant_down_at_start_then_recovered_without_restarts() {
    let Some(mut server) = PrivateQdrant::configured(None) else {
        return;
    };
    let layout = Layout::spawn(&server, 1, None).await;
    for service in [&layout.api, &layout.workers[0]] {
        let check = wait_index_not_ready(service).await;
        assert!(check.contains("not reachable"), "{check}");
        let (status, _) = service.get("/healthz").await;
        assert_eq!(status, 200);
    }
    let images = ImageServer::start(reference_dir()).await;
    let ids = submit_batch(&layout.api, &images, 4).await;

    server.start_again().await;
    layout.wait_ready().await;
    for job in layout.api.wait_jobs(&ids, LIMIT).await {
        assert_eq!(job["status"], "succeeded", "{job}\n{}", layout.logs());
    }
    assert_eq!(points_in(&server, &layout.collection).await, 4);
    let aliases: Value = reqwest::Client::new()
        .get(format!("{}/aliases", server.http_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        aliases["result"]["aliases"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["alias_name"] == layout.alias.as_str()
                && a["collection_name"] == layout.collection.as_str()),
        "the first start made the model's collection and the alias naming it: {aliases}"
    );
    assert!(
        layout.logs().contains("Qdrant reached; vector index ready"),
        "{}",
        layout.logs()
    );
}

/// The collection is deleted under running workers (an operator's mistake): workers stop
/// consuming instead of failing jobs, say why in `/readyz` and the log, jobs wait in the queue
/// with no attempt spent, and once the collection is back they resume by themselves.
#[tokio::test(flavor = "multi_thread")]
async fn private_qdrant_missing_collection_pauses_workers_until_fixed() {
    let Some(server) = PrivateQdrant::start().await else {
        return;
    };
    let layout = Layout::spawn(&server, 1, None).await;
    layout.wait_ready().await;
    let images = ImageServer::start(reference_dir()).await;
    let first = submit_batch(&layout.api, &images, 2).await;
    layout.api.wait_jobs(&first, LIMIT).await;

    let rest = reqwest::Client::new();
    let url = format!("{}/collections/{}", server.http_url(), layout.collection);
    let r = rest.delete(&url).send().await.unwrap();
    assert!(r.status().is_success());
    let later: Vec<Value> = (0..3)
        .map(|i| json!({"url": images.url(&format!("/files/allstar-sneakers.jpg?later={i}"))}))
        .collect();
    let later = layout.api.submit_urls(Value::Array(later)).await;

    let worker = &layout.workers[0];
    let check = wait_index_not_ready(worker).await;
    assert!(check.contains("misconfigured"), "{check}");
    let started = Instant::now();
    while !worker.log().contains("consuming paused") {
        assert!(started.elapsed() < LIMIT, "{}", layout.logs());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Long enough for several retries had the jobs been retried.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let rows = job_rows(&layout.env).await;
    let waiting: Vec<_> = rows.iter().skip(2).collect();
    for (status, attempts, code) in &waiting {
        assert_eq!(status, "queued", "{rows:?}");
        assert_eq!(*attempts, 0, "no attempt spent: {rows:?}");
        assert!(
            code.is_none() || code.as_deref() == Some("index_misconfigured"),
            "{rows:?}"
        );
    }

    let r = rest
        .put(&url)
        .json(&json!({"vectors": {"size": 512, "distance": "Cosine"}}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    for job in layout.api.wait_jobs(&later, LIMIT).await {
        assert_eq!(job["status"], "succeeded", "{job}\n{}", layout.logs());
    }
    assert!(
        worker.log().contains("consuming resumed"),
        "{}",
        worker.log()
    );
    assert_eq!(points_in(&server, &layout.collection).await, 3);
}

/// A server that wants an API key, given the wrong one: the processes start, report the index
/// misconfigured, jobs wait without spending attempts; a worker with the right key runs them.
#[tokio::test(flavor = "multi_thread")]
async fn private_qdrant_refused_key_keeps_jobs_waiting_until_fixed() {
    let Some(server) = PrivateQdrant::start_with_key(Some("the-right-key")).await else {
        return;
    };
    let mut layout = Layout::spawn(&server, 1, Some("a-wrong-key")).await;
    for service in [&layout.api, &layout.workers[0]] {
        let check = wait_index_not_ready(service).await;
        assert!(check.contains("misconfigured"), "{check}");
    }
    let images = ImageServer::start(reference_dir()).await;
    let ids = submit_batch(&layout.api, &images, 3).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    for (status, attempts, _) in job_rows(&layout.env).await {
        assert_eq!((status.as_str(), attempts), ("queued", 0));
    }

    // The fix is a configuration change: a worker started with the right key.
    layout.workers[0].terminate(Duration::from_secs(30));
    let fixed = layout
        .env
        .spawn_worker(&[("LOOKALIKE_INDEX__API_KEY", "the-right-key")]);
    fixed.wait_ready(LIMIT).await;
    layout.workers.push(fixed);
    for job in layout.api.wait_jobs(&ids, LIMIT).await {
        assert_eq!(job["status"], "succeeded", "{job}\n{}", layout.logs());
    }
}
