//! The classifier in the running service: `exclude=` (what leave-one-out checks rest on), and the
//! trained head (trained automatically and on request, stored, versioned, and applied to stored
//! predictions only through `reclassify`).

mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::images::ImageServer;
use support::*;

const LIMIT: Duration = Duration::from_secs(120);

fn upload(name: &str) -> reqwest::multipart::Form {
    reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(read(&reference_dir().join(name)))
            .file_name(name.to_string()),
    )
}

/// Submits `(file, category, external id)` by URL and waits until all succeeded; answers the jobs.
async fn ingest(
    service: &Service,
    images: &ImageServer,
    items: &[(&str, Option<&str>, String)],
) -> Vec<Value> {
    let items: Vec<Value> = items
        .iter()
        .map(|(file, category, id)| {
            json!({"url": images.url(&format!("/files/{file}?v={id}")), "category": category, "external_id": id})
        })
        .collect();
    let ids = service.submit_urls(Value::Array(items)).await;
    let jobs = service.wait_jobs(&ids, LIMIT).await;
    assert!(jobs.iter().all(|j| j["status"] == "succeeded"), "{jobs:?}");
    jobs
}

#[tokio::test(flavor = "multi_thread")]
async fn exclude_leaves_an_item_out_of_its_own_search_and_classification() {
    let env = TestEnv::new().await;
    let images = ImageServer::start(reference_dir()).await;
    let service = env.start().await;
    // The cat is the only item of its category; the others are labelled too.
    let mut items = vec![("skimage_chelsea.png", Some("cats"), "cat".to_string())];
    for i in 0..2 {
        items.push(("skimage_coffee.png", Some("cups"), format!("cup-{i}")));
        items.push(("allstar-sneakers.jpg", Some("shoes"), format!("shoe-{i}")));
    }
    let jobs = ingest(&service, &images, &items).await;
    let cat = jobs[0]["item_id"].as_str().unwrap();

    // Without exclude, the identical image finds itself and its category: the test can fail.
    let (status, body) = service
        .post_multipart(
            "/v1/search",
            upload("skimage_chelsea.png").text("category", "any"),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["results"][0]["item_id"], cat, "{body}");
    assert_eq!(body["prediction"]["category"], "cats", "{body}");

    // With it excluded, neither: not in the results, and no vote or prototype for `cats` is left.
    let (status, body) = service
        .post_multipart(
            "/v1/search",
            upload("skimage_chelsea.png")
                .text("category", "any")
                .text("exclude", cat.to_string()),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let results = body["results"].as_array().unwrap();
    assert_eq!(results.len(), 4, "the four others: {body}");
    assert!(results.iter().all(|r| r["item_id"] != cat), "{body}");
    assert_ne!(body["prediction"]["category"], "cats", "{body}");
    assert!(
        body["prediction"]["top"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["category"] != "cats"),
        "{body}"
    );
}

/// Waits until `/v1/status` reports a head of at least `version`.
async fn wait_for_head(service: &Service, version: i64) -> Value {
    let start = Instant::now();
    loop {
        let (_, status) = service.get("/v1/status").await;
        let head = &status["classifier"]["head"];
        if head["version"].as_i64().is_some_and(|v| v >= version) {
            return head.clone();
        }
        assert!(
            start.elapsed() < LIMIT,
            "no head version {version}: {status}\n{}",
            service.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_head_changes_stored_predictions_only_through_reclassify() {
    let mut env = TestEnv::new().await;
    // A head from 6 labels, checked often; no automatic retraining after the first one.
    env.set("CLASSIFY__HEAD_MIN_LABELS", 6)
        .set("CLASSIFY__HEAD_CHECK_MS", 200)
        .set("CLASSIFY__HEAD_RETRAIN_MIN", 1000);
    let images = ImageServer::start(reference_dir()).await;
    let service = env.start().await;
    let (_, status) = service.get("/v1/status").await;
    assert_eq!(status["classifier"]["head"], Value::Null, "{status}");
    let (code, body) = service.post("/v1/classifier/train").await;
    assert_eq!(
        (code, body["error"]["code"].as_str()),
        (422, Some("too_few_labels")),
        "{body}"
    );

    let mut labelled = Vec::new();
    for i in 0..3 {
        labelled.push(("skimage_coffee.png", Some("cups"), format!("cup-{i}")));
        labelled.push(("allstar-sneakers.jpg", Some("shoes"), format!("shoe-{i}")));
    }
    ingest(&service, &images, &labelled).await;
    // Trained by the service itself once there were enough labels.
    let first = wait_for_head(&service, 1).await;
    assert_eq!(first["categories"], 2, "{first}");
    // CLIP has a token output: the head learns from the pooled tokens every item keeps.
    assert_eq!(first["reads"], "features", "{first}");

    let jobs = ingest(
        &service,
        &images,
        &[("sneakers_01__1.png", None, "unlabelled".into())],
    )
    .await;
    let item = jobs[0]["item_id"].as_str().unwrap().to_string();
    let (_, before) = service.get(&format!("/v1/items/{item}")).await;
    assert_eq!(before["category_source"], "predicted", "{before}");
    let (_, vectors) = service.get(&format!("/v1/items/{item}?vector=true")).await;
    let features = vectors["features"].as_array().expect("features kept");
    assert_eq!(features.len(), 768, "CLIP ViT-B/16's token width");
    assert_eq!(before["head_version"], first["version"], "{before}");

    // New labels and a new head: the stored prediction stays as it was.
    let cats: Vec<_> = (0..3)
        .map(|i| ("skimage_chelsea.png", Some("cats"), format!("cat-{i}")))
        .collect();
    ingest(&service, &images, &cats).await;
    let (code, second) = service.post("/v1/classifier/train").await;
    assert_eq!(code, 200, "{second}");
    assert!(
        second["version"].as_i64() > first["version"].as_i64(),
        "{second}"
    );
    assert_eq!(second["trained_on"], 9);
    assert_eq!(second["categories"], 3);
    let (_, after_training) = service.get(&format!("/v1/items/{item}")).await;
    for field in ["category", "category_confidence", "head_version"] {
        assert_eq!(
            after_training[field], before[field],
            "{field}: {after_training}"
        );
    }
    // Searches use the new head at once.
    let (_, search) = service
        .post_multipart("/v1/search", upload("sneakers_01__1.png"))
        .await;
    assert_eq!(
        search["prediction"]["head_version"], second["version"],
        "{search}"
    );
    assert!(
        search["prediction"]["method"]
            .as_str()
            .unwrap()
            .starts_with("head+"),
        "{search}"
    );

    // Reclassify applies it, and records which head did.
    let (code, body) = service.post("/v1/reclassify").await;
    assert_eq!(code, 200, "{body}");
    assert!(body["changed"].as_i64().unwrap() >= 1, "{body}");
    let (_, after) = service.get(&format!("/v1/items/{item}")).await;
    assert_eq!(after["head_version"], second["version"], "{after}");
    assert_eq!(after["category_source"], "predicted");
    // Labelled items are never touched.
    let (_, status) = service.get("/v1/status").await;
    assert_eq!(status["classifier"]["labelled_items"], 9, "{status}");
}

/// Takes (`hold`) or lets go of a model's head-training lock on `conn`: the same advisory lock key
/// the service's trainers take (`crates/store/src/heads.rs`).
async fn training_lock(conn: &mut sqlx::PgConnection, hold: bool, model_id: &str) {
    let sql = if hold {
        "SELECT pg_advisory_lock(hashtextextended($1, 11))"
    } else {
        "SELECT pg_advisory_unlock(hashtextextended($1, 11))"
    };
    sqlx::query(sql).bind(model_id).execute(conn).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn training_on_request_is_refused_while_another_process_trains_or_when_the_head_is_off() {
    let env = TestEnv::new().await;
    let service = env.start().await;
    let (_, status) = service.get("/v1/status").await;
    let model = status["model"]["id"]
        .as_str()
        .expect("model id")
        .to_string();
    // Another process holding the training lock (the same key workers take) ...
    let mut other = env.db().await;
    training_lock(&mut other, true, &model).await;
    let (code, body) = service.post("/v1/classifier/train").await;
    assert_eq!(
        (code, body["error"]["code"].as_str()),
        (409, Some("training_in_progress")),
        "{body}"
    );
    // ... and once it let go, the request trains (here: too few labels, so it says so).
    training_lock(&mut other, false, &model).await;
    let (code, body) = service.post("/v1/classifier/train").await;
    assert_eq!(
        (code, body["error"]["code"].as_str()),
        (422, Some("too_few_labels")),
        "{body}"
    );
    drop(service);

    let mut env = env;
    env.set("CLASSIFY__HEAD", false);
    let service = env.start().await;
    let (code, body) = service.post("/v1/classifier/train").await;
    assert_eq!(
        (code, body["error"]["code"].as_str()),
        (409, Some("head_disabled")),
        "{body}"
    );
}

/// Labels a head cannot be trained on yet (here: one category only) are tried once: the worker says
/// why and waits for the labels to change, instead of re-reading them at every check.
#[tokio::test(flavor = "multi_thread")]
async fn a_head_that_cannot_be_trained_yet_is_tried_once_until_the_labels_change() {
    let mut env = TestEnv::new().await;
    env.set("CLASSIFY__HEAD_MIN_LABELS", 4)
        .set("CLASSIFY__HEAD_CHECK_MS", 100);
    let images = ImageServer::start(reference_dir()).await;
    let service = env.start().await;
    let cups: Vec<_> = (0..4)
        .map(|i| ("skimage_coffee.png", Some("cups"), format!("cup-{i}")))
        .collect();
    ingest(&service, &images, &cups).await;
    const TRIED: &str = "classifier head due but too few labelled items";
    let start = Instant::now();
    while !service.log().contains(TRIED) {
        assert!(start.elapsed() < LIMIT, "never tried: {}", service.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Twenty more checks: no second attempt while the labels stay as they are.
    tokio::time::sleep(Duration::from_millis(2000)).await;
    assert_eq!(service.log().matches(TRIED).count(), 1, "{}", service.log());
    // A second category: the labels changed, and the head is trained.
    ingest(
        &service,
        &images,
        &[("allstar-sneakers.jpg", Some("shoes"), "shoe-0".into())],
    )
    .await;
    let head = wait_for_head(&service, 1).await;
    assert_eq!(head["categories"], 2, "{head}");
}
