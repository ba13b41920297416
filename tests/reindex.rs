//! Changing the model without downtime: `lookalike reindex` embeds every item with a new model (here
//! a real change, CLIP 512-d to EfficientNet-Lite0 1280-d) into a new index while the service keeps
//! answering from the old one; the service then restarts on the new model and location.

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::images::ImageServer;
use support::*;

const LIMIT: Duration = Duration::from_secs(120);
const NEW_MODEL: &str = "efficientnet-lite0-imagenet";
/// The ids the vectors carry: a new catalogue decodes JPEGs in draft (`model.reduced_decode =
/// "auto"`), which the id names.
const OLD_MODEL_ID: &str = "clip-vit-b16-int8+draft";
const NEW_MODEL_ID: &str = "efficientnet-lite0-imagenet+draft";

/// The settings that describe the new model and its own index directory.
fn new_model_env(env: &TestEnv) -> Vec<(String, String)> {
    [
        ("LOOKALIKE_MODEL__ID", NEW_MODEL.to_string()),
        (
            "LOOKALIKE_MODEL__PATH",
            asset("models/efficientnet_lite0_imagenet.onnx")
                .display()
                .to_string(),
        ),
        ("LOOKALIKE_MODEL__INPUT_NAME", "input".into()),
        ("LOOKALIKE_MODEL__OUTPUT_NAME", "embedding".into()),
        ("LOOKALIKE_MODEL__FEATURES_OUTPUT", String::new()),
        ("LOOKALIKE_MODEL__DIM", "1280".into()),
        ("LOOKALIKE_MODEL__RESIZE_SHORTER", "256".into()),
        // (x - 127) / 128 on the 0..255 scale (MODELS.md).
        (
            "LOOKALIKE_MODEL__MEAN",
            "[0.49803922, 0.49803922, 0.49803922]".into(),
        ),
        (
            "LOOKALIKE_MODEL__STD",
            "[0.50196078, 0.50196078, 0.50196078]".into(),
        ),
        (
            "LOOKALIKE_INDEX__DATA_DIR",
            env.dir.path().join("index-lite0").display().to_string(),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// Exit code, stdout, and both streams for failure messages.
fn reindex(env: &TestEnv, extra: &[&str]) -> (i32, String) {
    let (code, _, all) = reindex_output(env, extra);
    (code, all)
}

fn reindex_output(env: &TestEnv, extra: &[&str]) -> (i32, String, String) {
    run_reindex(env, extra, new_model_env(env))
}

/// `lookalike reindex` with `extra` arguments and `envs` settings: exit code, stdout, both streams.
fn run_reindex(
    env: &TestEnv,
    extra: &[&str],
    envs: Vec<(String, String)>,
) -> (i32, String, String) {
    let out = env
        .command("reindex")
        .args(extra)
        .envs(envs)
        .output()
        .expect("running lookalike reindex");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        text,
    )
}

/// Submits a labelled shoe and a labelled cup by URL; their jobs, once both succeeded.
async fn shoe_and_cup(service: &Service, images: &ImageServer) -> Vec<Value> {
    let ids = service
        .submit_urls(json!([
            {"url": images.url("/files/allstar-sneakers.jpg"), "category": "shoes"},
            {"url": images.url("/files/skimage_coffee.png"), "category": "cups"},
        ]))
        .await;
    let jobs = service.wait_jobs(&ids, LIMIT).await;
    assert!(jobs.iter().all(|j| j["status"] == "succeeded"), "{jobs:?}");
    jobs
}

fn upload(name: &str, category: &str) -> reqwest::multipart::Form {
    reqwest::multipart::Form::new()
        .text("category", category.to_string())
        .part(
            "file",
            reqwest::multipart::Part::bytes(read(&reference_dir().join(name)))
                .file_name(name.to_string()),
        )
}

#[tokio::test(flavor = "multi_thread")]
async fn reindex_moves_the_catalogue_to_a_new_model_while_the_old_one_serves() {
    let mut env = TestEnv::new().await;
    let images = ImageServer::start(reference_dir()).await;
    let mut service = env.start().await;

    // Two uploads (reindex reads their stored bytes) and two URLs (reindex fetches them again).
    let mut ids = Vec::new();
    for (name, category) in [
        ("sneakers_01__1.png", "shoes"),
        ("skimage_coffee.png", "cups"),
    ] {
        let (status, body) = service
            .post_multipart("/v1/images", upload(name, category))
            .await;
        assert_eq!(status, 202, "{body}");
        ids.extend(job_ids(&body));
    }
    ids.extend(
        service
            .submit_urls(json!([
                {"url": images.url("/files/allstar-sneakers.jpg"), "category": "shoes", "external_id": "shoe-url"},
                {"url": images.url("/files/skimage_coffee.png?v=2"), "category": "cups", "external_id": "cup-url"},
            ]))
            .await,
    );
    let jobs = service.wait_jobs(&ids, LIMIT).await;
    assert!(jobs.iter().all(|j| j["status"] == "succeeded"), "{jobs:?}");
    let shoe = jobs[0]["item_id"].as_str().unwrap().to_string();

    // The old service keeps its directory; the new model goes to another one, at the same time.
    let (code, out) = reindex(&env, &[]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("4 embedded, 0 already there, 0 failed"),
        "{out}"
    );
    assert!(out.contains("2 category prototypes rebuilt"), "{out}");
    let (status, body) = service.get(&format!("/v1/items/{shoe}/similar")).await;
    assert_eq!(
        status, 200,
        "the old model still serves during the reindex: {body}"
    );
    assert_eq!(body["results"][0]["category"], "shoes", "{body}");

    // Restartable: a second run finds every vector in place. An item deleted through the old
    // service after the first run leaves the new index too.
    let cup_url = jobs[3]["item_id"].as_str().unwrap().to_string();
    let (status, body) = service.delete(&format!("/v1/items/{cup_url}")).await;
    assert!(status == 200 || status == 204, "{status} {body}");
    let (code, out) = reindex(&env, &[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("0 embedded, 3 already there"), "{out}");

    // The switch: the service restarts on the new model and its index.
    service.terminate(Duration::from_secs(30));
    env.extra_env.extend(new_model_env(&env));
    let service = env.start().await;
    let (status, body) = service.get(&format!("/v1/items/{cup_url}/similar")).await;
    assert_eq!(
        status, 404,
        "the deleted item is gone from the new index: {body}"
    );
    let (status, body) = service.get(&format!("/v1/items/{shoe}/similar?k=5")).await;
    assert_eq!(status, 200, "{body}");
    let results = body["results"].as_array().unwrap();
    assert_eq!(
        results.len(),
        1,
        "the other shoe, nothing of another category: {body}"
    );
    assert_eq!(results[0]["category"], "shoes");
    assert_eq!(
        results[0]["external_id"], "shoe-url",
        "attributes come along: {body}"
    );
    let (_, item) = service.get(&format!("/v1/items/{shoe}?vector=true")).await;
    assert_eq!(
        item["vector"].as_array().map(Vec::len),
        Some(1280),
        "a Lite0 vector"
    );

    // Searching by upload uses the new model's rebuilt prototypes and its neighbours.
    let form = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(read(&reference_dir().join("allstar-sneakers.jpg")))
            .file_name("q.jpg"),
    );
    let (status, body) = service.post_multipart("/v1/search", form).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["prediction"]["category"], "shoes", "{body}");
    drop(service);

    // With the old model gone, --adopt records the new embeddings on the rows.
    let mut db = env.db().await;
    let before: Vec<(String,)> = sqlx::query_as("SELECT DISTINCT model_id FROM items")
        .fetch_all(&mut db)
        .await
        .unwrap();
    assert_eq!(before, vec![(OLD_MODEL_ID.to_string(),)]);
    let (code, stdout, out) = reindex_output(&env, &["--adopt", "--json"]);
    assert_eq!(code, 0, "{out}");
    let summary: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(summary["already_indexed"], 3, "{summary}");
    let after: Vec<(String, i32)> =
        sqlx::query_as("SELECT model_id, array_length(embedding, 1) FROM items")
            .fetch_all(&mut db)
            .await
            .unwrap();
    assert_eq!(after.len(), 3);
    assert!(
        after.iter().all(|(m, d)| m == NEW_MODEL_ID && *d == 1280),
        "{after:?}"
    );
}

/// An item whose image can no longer be read is reported (code and item) and makes the command
/// exit 1; the others are re-embedded, and a re-run still finds the failed one missing.
#[tokio::test(flavor = "multi_thread")]
async fn items_whose_image_is_gone_are_listed_and_fail_the_run() {
    let env = TestEnv::new().await;
    let served = tempfile::tempdir().unwrap();
    for name in ["allstar-sneakers.jpg", "skimage_coffee.png"] {
        std::fs::copy(reference_dir().join(name), served.path().join(name)).unwrap();
    }
    let images = ImageServer::start(served.path().to_path_buf()).await;
    let service = env.start().await;
    let jobs = shoe_and_cup(&service, &images).await;
    let gone = jobs[1]["item_id"].as_str().unwrap().to_string();
    std::fs::remove_file(served.path().join("skimage_coffee.png")).unwrap();

    let (code, stdout, out) = reindex_output(&env, &["--json"]);
    assert_eq!(code, 1, "{out}");
    let summary: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(summary["embedded"], 1, "{summary}");
    assert_eq!(
        summary["failed_by_code"]["fetch_http_status"], 1,
        "{summary}"
    );
    assert_eq!(
        summary["failures"][0]["item_id"],
        gone.as_str(),
        "{summary}"
    );

    let (code, out) = reindex(&env, &[]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("0 embedded, 1 already there, 1 failed"),
        "{out}"
    );
    assert!(out.contains(&format!("failed: item {gone}: ")), "{out}");
}

/// The same change on a Qdrant server, with `lookalike api` and `lookalike worker` apart: every
/// model has a collection of its own (`<alias>-<model>`), the alias names the current one from
/// the first start, and `--adopt` moves it. The old API answers similarity queries all the way
/// through (never a 5xx), from its own model's collection, also after the alias moved; an API
/// started on the new model answers from the new collection.
#[tokio::test(flavor = "multi_thread")]
async fn model_switch_on_a_qdrant_server_never_fails_a_query() {
    let Some(url) = support::qdrant::shared_url() else {
        return;
    };
    let mut env = TestEnv::new().await;
    let alias = format!("switch-{}", env.db_name);
    env.set("INDEX__BACKEND", "qdrant")
        .set("INDEX__URL", &url)
        .set("INDEX__COLLECTION", &alias);
    let old_collection = lookalike_index::collection_for_model(&alias, OLD_MODEL_ID);
    let new_collection = lookalike_index::collection_for_model(&alias, NEW_MODEL_ID);
    let admin = lookalike_index::QdrantIndex::connect_admin(lookalike_index::ServerOptions::new(
        &url, &alias, 512,
    ))
    .await
    .expect("the test server");

    let api = env.spawn_process("api", &[]);
    api.wait_ready(LIMIT).await;
    let worker = env.spawn_worker(&[]);
    worker.wait_ready(LIMIT).await;
    assert_eq!(
        admin.collection_behind(&alias).await.unwrap(),
        Some(old_collection.clone()),
        "the first start made the model's collection and pointed the alias at it"
    );

    let images = ImageServer::start(reference_dir()).await;
    let ids = api
        .submit_urls(json!([
            {"url": images.url("/files/allstar-sneakers.jpg"), "category": "shoes"},
            {"url": images.url("/files/sneakers_01__1.png"), "category": "shoes"},
            {"url": images.url("/files/skimage_coffee.png"), "category": "cups"},
            {"url": images.url("/files/skimage_chelsea.png"), "category": "cats"},
        ]))
        .await;
    let jobs = api.wait_jobs(&ids, LIMIT).await;
    assert!(jobs.iter().all(|j| j["status"] == "succeeded"), "{jobs:?}");
    let shoe = jobs[0]["item_id"].as_str().unwrap().to_string();

    // Queries against the old API for the whole switch.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let hammer = {
        let (stop, url) = (
            stop.clone(),
            api.url(&format!("/v1/items/{shoe}/similar?k=3")),
        );
        tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut statuses = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let r = client.get(&url).send().await.expect("the old API answers");
                let status = r.status().as_u16();
                let body: Value = r.json().await.unwrap_or(Value::Null);
                statuses.push((status, body["results"][0]["category"].clone()));
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            statuses
        })
    };

    let (code, out) = reindex(&env, &[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("4 embedded"), "{out}");
    assert_eq!(
        admin.collection_behind(&alias).await.unwrap(),
        Some(old_collection.clone()),
        "the alias moves only with --adopt"
    );

    // The new model's API beside the old one; then --adopt moves the alias.
    let mut new_settings = new_model_env(&env);
    new_settings.push((
        "LOOKALIKE_HTTP__LISTEN".into(),
        format!("127.0.0.1:{}", free_port()),
    ));
    let new_api = env.spawn_process("api", &new_settings);
    new_api.wait_ready(LIMIT).await;
    let (code, out) = reindex(&env, &["--adopt"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(&format!(
            "alias {alias} now names {new_collection} (was {old_collection})"
        )),
        "{out}"
    );
    assert_eq!(
        admin.collection_behind(&alias).await.unwrap(),
        Some(new_collection.clone())
    );
    let (status, body) = new_api.get(&format!("/v1/items/{shoe}/similar?k=3")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["results"][0]["category"], "shoes", "{body}");
    let (_, item) = new_api.get(&format!("/v1/items/{shoe}?vector=true")).await;
    assert_eq!(item["vector"].as_array().map(Vec::len), Some(1280));
    tokio::time::sleep(Duration::from_millis(500)).await;

    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let statuses = hammer.await.unwrap();
    assert!(statuses.len() > 10, "{statuses:?}");
    assert!(
        statuses
            .iter()
            .all(|(status, category)| *status == 200 && category == "shoes"),
        "every query during the switch answered from the old model: {statuses:?}"
    );
    for name in [old_collection, new_collection] {
        let _ = admin.drop_collection(&name).await;
    }
}

/// A reindex that cannot run (here: its Qdrant target does not answer) exits 2, apart from the
/// 1 of a run where some items failed, as its help says.
#[tokio::test(flavor = "multi_thread")]
async fn a_reindex_that_cannot_run_exits_2() {
    let mut env = TestEnv::new().await;
    let port = free_port();
    env.set("INDEX__BACKEND", "qdrant")
        .set("INDEX__URL", format!("http://127.0.0.1:{port}"))
        .set("INDEX__TIMEOUT_MS", 2000);
    let (code, out) = reindex(&env, &[]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("does not answer"), "{out}");
}

/// Items stored before features were kept (their `features` NULL) are embedded again by a reindex on
/// the same model, which fills the features in; items that have them are left alone.
#[tokio::test(flavor = "multi_thread")]
async fn a_reindex_on_the_same_model_fills_in_missing_features() {
    let env = TestEnv::new().await;
    let images = ImageServer::start(reference_dir()).await;
    let mut service = env.start().await;
    let jobs = shoe_and_cup(&service, &images).await;
    // The embedded index belongs to one process at a time.
    service.kill();
    let old = uuid::Uuid::parse_str(jobs[0]["item_id"].as_str().unwrap()).unwrap();
    let mut db = env.db().await;
    sqlx::query("UPDATE items SET features = NULL WHERE id = $1")
        .bind(old)
        .execute(&mut db)
        .await
        .unwrap();

    let (code, _, text) = run_reindex(&env, &[], Vec::new());
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("1 embedded, 1 already there, 0 failed"),
        "{text}"
    );
    let widths: Vec<Option<i32>> =
        sqlx::query_scalar("SELECT array_length(features, 1) FROM items ORDER BY id")
            .fetch_all(&mut db)
            .await
            .unwrap();
    assert_eq!(widths, [Some(768), Some(768)], "{text}");
}
