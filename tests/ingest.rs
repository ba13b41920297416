//! End-to-end ingest: the real binary, Postgres, RabbitMQ and model, images served over HTTP.

mod support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::{Value, json};
use support::images::ImageServer;
use support::*;

const JOB_LIMIT: Duration = Duration::from_secs(120);

/// The reference CLIP embedding of a fixture image as a new catalogue makes it (JPEGs decoded
/// in draft: `model.reduced_decode = "auto"`).
fn expected_clip(name: &str) -> Vec<f32> {
    reference_clip("expected_draft.json", name)
}

/// From a full decode (expected.json): what a catalogue made before draft decoding keeps.
fn expected_clip_full(name: &str) -> Vec<f32> {
    reference_clip("expected.json", name)
}

fn reference_clip(file: &str, name: &str) -> Vec<f32> {
    let text = std::fs::read_to_string(reference_dir().join(file)).unwrap();
    let all: Value = serde_json::from_str(&text).unwrap();
    floats(&all["images"][name]["clip_vitb16_visual_int8"]["embedding_l2"])
}

#[tokio::test(flavor = "multi_thread")]
async fn url_and_upload_jobs_become_categorised_items_with_the_models_vectors() {
    let env = TestEnv::new().await;
    let images = ImageServer::start(reference_dir()).await;
    let service = env.start().await;

    // Two labelled shoes by URL, then a third shoe without a category: it is predicted from them.
    let labelled = service
        .submit_urls(json!([
            {"url": images.url("/files/allstar-sneakers.jpg"), "external_id": "sku-1", "category": "shoes",
             "metadata": {"brand": "allstar"}},
            {"url": images.url("/files/skimage_coffee.png"), "category": "cups"},
        ]))
        .await;
    let done = service.wait_jobs(&labelled, JOB_LIMIT).await;
    for job in &done {
        assert_eq!(job["status"], "succeeded", "{job}");
        assert_eq!(job["attempts"], 1);
    }

    let form = reqwest::multipart::Form::new()
        .part(
            "file",
            reqwest::multipart::Part::bytes(read(&reference_dir().join("sneakers_01__1.png")))
                .file_name("sneakers.png"),
        )
        .text("external_id", "upload-1");
    let (status, body) = service.post_multipart("/v1/images", form).await;
    assert_eq!(status, 202, "{body}");
    let upload_job = service.wait_job(&job_ids(&body)[0], JOB_LIMIT).await;
    assert_eq!(upload_job["status"], "succeeded", "{upload_job}");

    // The labelled item: everything the submitter said, plus what the worker measured.
    let item_id = done[0]["item_id"].as_str().unwrap();
    let (status, item) = service
        .get(&format!("/v1/items/{item_id}?vector=true"))
        .await;
    assert_eq!(status, 200);
    assert_eq!(item["external_id"], "sku-1");
    assert_eq!(item["category"], "shoes");
    assert_eq!(item["category_source"], "provided");
    assert_eq!(item["metadata"]["brand"], "allstar");
    assert_eq!(item["model_id"], "clip-vit-b16-int8+draft");
    assert_eq!(item["format"], "jpeg");
    assert_eq!(
        (item["width"].as_u64(), item["height"].as_u64()),
        (Some(1600), Some(1067)),
        "the image's own size, though decoded at 1/4: {item}"
    );
    assert_eq!(item["content_sha256"].as_str().unwrap().len(), 64);
    assert_eq!(
        item["byte_size"].as_i64().unwrap() as usize,
        read(&reference_dir().join("allstar-sneakers.jpg")).len()
    );
    // The stored vector is the model's embedding of this image (same as the reference pipeline).
    let vector = floats(&item["vector"]);
    assert_eq!(vector.len(), 512);
    let parity = cosine(&vector, &expected_clip("allstar-sneakers.jpg"));
    assert!(
        parity >= parity_floor(),
        "stored vector vs reference: cosine {parity}"
    );

    // The uploaded shoe had no category: its labelled neighbours voted "shoes".
    let (_, upload_item) = service
        .get(&format!(
            "/v1/items/{}?vector=true",
            upload_job["item_id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(upload_item["source"]["kind"], "upload");
    assert_eq!(upload_item["source"]["file_name"], "sneakers.png");
    assert_eq!(upload_item["category"], "shoes", "{upload_item}");
    assert_eq!(upload_item["category_source"], "predicted");
    let confidence = upload_item["category_confidence"].as_f64().unwrap();
    assert!(confidence > 0.5 && confidence <= 1.0, "{confidence}");
    let parity = cosine(
        &floats(&upload_item["vector"]),
        &expected_clip("sneakers_01__1.png"),
    );
    assert!(
        parity >= parity_floor(),
        "uploaded image vector vs reference: cosine {parity}"
    );

    // The thumbnail is a small JPEG made at ingest.
    let thumb = service
        .client
        .get(service.url(&format!("/v1/items/{item_id}/thumbnail")))
        .send()
        .await
        .unwrap();
    assert_eq!(thumb.headers()["content-type"], "image/jpeg");
    let thumb = thumb.bytes().await.unwrap();
    assert_eq!(&thumb[..2], &[0xFF, 0xD8]);

    let (_, status) = service.get("/v1/status").await;
    assert_eq!(status["jobs"]["succeeded"], 3, "{status}");
    assert_eq!(status["items"], 3);
    assert_eq!(status["index"]["points"], 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_first_image_without_labelled_neighbours_is_stored_uncategorised() {
    let env = TestEnv::new().await;
    let images = ImageServer::start(reference_dir()).await;
    let service = env.start().await;
    let ids = service
        .submit_urls(json!([{"url": images.url("/files/skimage_chelsea.png")}]))
        .await;
    let job = service.wait_job(&ids[0], JOB_LIMIT).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    let (_, item) = service
        .get(&format!("/v1/items/{}", job["item_id"].as_str().unwrap()))
        .await;
    assert_eq!(item["category"], Value::Null);
    assert_eq!(item["category_source"], "none");
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_sources_fail_with_precise_codes_and_oversized_bodies_are_cut_at_the_cap() {
    let mut env = TestEnv::new().await;
    let cap: u64 = 1024 * 1024;
    env.set("FETCH__MAX_BODY_BYTES", cap);
    let dir = env.dir.path().join("bad");
    std::fs::create_dir_all(&dir).unwrap();
    let jpeg = read(&reference_dir().join("allstar-sneakers.jpg"));
    std::fs::write(dir.join("half.jpg"), &jpeg[..jpeg.len() / 2]).unwrap();
    std::fs::write(
        dir.join("page.jpg"),
        b"<!doctype html><html><body>not an image</body></html>",
    )
    .unwrap();
    std::fs::write(dir.join("empty.jpg"), b"").unwrap();
    let images = ImageServer::start(dir).await;
    let service = env.start().await;

    let cases = [
        ("/files/half.jpg", "image_truncated"),
        ("/files/page.jpg", "image_unsupported_format"),
        ("/files/empty.jpg", "image_empty"),
        ("/missing.jpg", "fetch_http_status"),
        ("/endless.jpg", "fetch_too_large"),
        ("/declared-huge.jpg", "fetch_too_large"),
    ];
    let items: Vec<Value> = cases
        .iter()
        .map(|(path, _)| json!({"url": images.url(path)}))
        .collect();
    let ids = service.submit_urls(Value::Array(items)).await;
    for ((path, code), id) in cases.iter().zip(&ids) {
        let job = service.wait_job(id, JOB_LIMIT).await;
        assert_eq!(job["status"], "failed", "{path}: {job}");
        assert_eq!(job["error"]["code"], *code, "{path}: {job}");
        assert!(!job["error"]["message"].as_str().unwrap().is_empty());
        // Bad input is permanent: one attempt, no retries.
        assert_eq!(job["attempts"], 1, "{path}: {job}");
    }
    // The endless body was not read much past the cap (socket buffers hold a few MB at most).
    let sent = images.endless_sent.load(Ordering::Relaxed);
    assert!(
        sent < cap + 16 * 1024 * 1024,
        "server handed over {sent} bytes for a {cap}-byte cap"
    );
    let (_, status) = service.get("/v1/status").await;
    assert_eq!(status["items"], 0);
    assert_eq!(status["index"]["points"], 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_submissions_are_rejected_before_anything_is_enqueued() {
    let mut env = TestEnv::new().await;
    env.set("HTTP__MAX_UPLOAD_BYTES", 1000)
        .set("HTTP__MAX_ITEMS_PER_REQUEST", 3);
    let service = env.start().await;
    let post = |body: Value| {
        let service = &service;
        async move { service.post_json("/v1/images", &body).await }
    };
    let expect = |(status, body): (u16, Value), want_status: u16, code: &str| {
        assert_eq!(status, want_status, "{body}");
        assert_eq!(body["error"]["code"], code, "{body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
    };
    expect(post(json!({"items": []})).await, 422, "no_items");
    expect(
        post(json!({"items": [{"url": "ftp://x/y.jpg"}]})).await,
        422,
        "invalid_url",
    );
    expect(
        post(json!({"items": [{"url": "http://x/y.jpg", "category": "<b>"}]})).await,
        422,
        "invalid_category",
    );
    expect(
        post(json!({"items": [{"url": "http://x/y.jpg", "metadata": [1]}]})).await,
        422,
        "invalid_metadata",
    );
    expect(post(json!({"items": [{"url": "http://x/a.jpg", "external_id": "a"}, {"url": "http://x/b.jpg", "external_id": "a"}]})).await, 422, "duplicate_external_id");
    expect(post(json!({"items": [{"url": "http://x/1"}, {"url": "http://x/2"}, {"url": "http://x/3"}, {"url": "http://x/4"}]})).await, 413, "too_many_items");
    expect(post(json!({"pictures": []})).await, 400, "invalid_json");

    let (status, body) = service
        .send(
            service
                .client
                .post(service.url("/v1/images"))
                .body("hello")
                .header("content-type", "text/plain"),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (415, Some("unsupported_media_type")),
        "{body}"
    );

    let big = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(vec![0xFF; 5000]).file_name("a.jpg"),
    );
    expect(
        service.post_multipart("/v1/images", big).await,
        413,
        "upload_too_large",
    );
    let text = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(b"just text".to_vec()).file_name("a.jpg"),
    );
    expect(
        service.post_multipart("/v1/images", text).await,
        415,
        "unsupported_image_type",
    );

    expect(service.get("/v1/jobs/not-a-uuid").await, 400, "invalid_id");
    expect(
        service
            .get(&format!("/v1/jobs/{}", uuid::Uuid::new_v4()))
            .await,
        404,
        "job_not_found",
    );
    expect(
        service
            .get(&format!("/v1/items/{}", uuid::Uuid::new_v4()))
            .await,
        404,
        "item_not_found",
    );
    // Every refusal speaks JSON, the framework's own ones included.
    expect(
        service
            .get(&format!("/v1/items/{}/similar?k=abc", uuid::Uuid::new_v4()))
            .await,
        400,
        "invalid_query",
    );
    expect(
        service
            .get(&format!(
                "/v1/items/{}/similar?offset=1001",
                uuid::Uuid::new_v4()
            ))
            .await,
        422,
        "invalid_parameter",
    );
    expect(
        service.get("/v1/jobs?limit=many").await,
        400,
        "invalid_query",
    );
    expect(
        service
            .send(service.client.put(service.url("/v1/jobs")))
            .await,
        405,
        "method_not_allowed",
    );
    expect(
        service.get("/v1/nothing-here").await,
        404,
        "route_not_found",
    );

    // Nothing reached the database.
    let (_, status) = service.get("/v1/status").await;
    let total: i64 = ["queued", "processing", "succeeded", "failed"]
        .iter()
        .map(|s| status["jobs"][s].as_i64().unwrap())
        .sum();
    assert_eq!(total, 0, "{status}");
}

#[tokio::test(flavor = "multi_thread")]
async fn health_and_readiness_report_each_dependency() {
    let env = TestEnv::new().await;
    let service = env.start().await;
    let (status, body) = service.get("/healthz").await;
    assert_eq!((status, body["status"].as_str()), (200, Some("ok")));
    let (status, body) = service.get("/readyz").await;
    assert_eq!(status, 200, "{body}");
    for dep in ["database", "queue", "index"] {
        assert_eq!(body["checks"][dep], "ok", "{body}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn failed_jobs_are_listed_and_can_be_retried_once_the_cause_is_fixed() {
    let env = TestEnv::new().await;
    let dir = env.dir.path().join("later");
    std::fs::create_dir_all(&dir).unwrap();
    let images = ImageServer::start(dir.clone()).await;
    let service = env.start().await;
    let ids = service
        .submit_urls(json!([{"url": images.url("/files/late.jpg")}]))
        .await;
    let job = service.wait_job(&ids[0], JOB_LIMIT).await;
    assert_eq!(
        (job["status"].as_str(), job["error"]["code"].as_str()),
        (Some("failed"), Some("fetch_http_status"))
    );
    let (_, failed) = service.get("/v1/jobs?status=failed").await;
    assert_eq!(failed["jobs"][0]["id"], ids[0].as_str());

    // The cause goes away (the image appears); the retry succeeds.
    std::fs::copy(
        reference_dir().join("allstar-sneakers.jpg"),
        dir.join("late.jpg"),
    )
    .unwrap();
    let (status, body) = service.post(&format!("/v1/jobs/{}/retry", ids[0])).await;
    assert_eq!(status, 202, "{body}");
    let job = service.wait_job(&ids[0], JOB_LIMIT).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    // Retrying a job that is not failed is refused.
    let (status, body) = service.post(&format!("/v1/jobs/{}/retry", ids[0])).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("job_not_failed")),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn transient_failures_are_retried_with_backoff_and_give_up_after_the_attempt_limit() {
    let mut env = TestEnv::new().await;
    env.set("QUEUE__MAX_ATTEMPTS", 3);
    let images = ImageServer::start(reference_dir()).await;
    let service = env.start().await;
    let ids = service
        .submit_urls(json!([
            {"url": images.url("/flaky/2/a/skimage_coffee.png")},   // down twice, then fine
            {"url": images.url("/flaky/99/b/skimage_coffee.png")},  // never comes back
        ]))
        .await;
    let recovered = service.wait_job(&ids[0], JOB_LIMIT).await;
    assert_eq!(recovered["status"], "succeeded", "{recovered}");
    assert_eq!(
        recovered["attempts"], 3,
        "two failures, then success: {recovered}"
    );
    let started = chrono_secs(&recovered["created_at"]);
    let finished = chrono_secs(&recovered["finished_at"]);
    // Backoff 200 ms then 400 ms (+-20%): the retries waited in the delay queue.
    assert!(
        finished - started >= 0.45,
        "retries came back after their delay: {recovered}"
    );

    let gave_up = service.wait_job(&ids[1], JOB_LIMIT).await;
    assert_eq!(gave_up["status"], "failed", "{gave_up}");
    assert_eq!(gave_up["attempts"], 3);
    assert_eq!(gave_up["error"]["code"], "fetch_http_status");
    assert!(
        gave_up["error"]["message"]
            .as_str()
            .unwrap()
            .contains("gave up after 3 attempts"),
        "{gave_up}"
    );

    // The exhausted job's message went to the dead-letter queue.
    let conn = lookalike_queue::connect(AMQP_URL, "test").await.unwrap();
    let channel = conn.create_channel().await.unwrap();
    let dead = channel
        .basic_get(
            format!("{}.dead", env.queue_prefix).as_str().into(),
            Default::default(),
        )
        .await
        .unwrap()
        .expect("a message in the dead-letter queue");
    let message = lookalike_queue::JobMessage::decode(&dead.data).unwrap();
    assert_eq!(message.job_id.to_string(), ids[1]);
}

fn chrono_secs(v: &Value) -> f64 {
    let t = chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap()).unwrap();
    t.timestamp_millis() as f64 / 1000.0
}

#[tokio::test(flavor = "multi_thread")]
async fn a_resubmitted_external_id_updates_its_item_instead_of_duplicating_it() {
    let env = TestEnv::new().await;
    let images = ImageServer::start(reference_dir()).await;
    let service = env.start().await;
    let first = service
        .submit_urls(
            json!([{"url": images.url("/files/skimage_coffee.png"), "external_id": "sku-9",
                             "category": "cups", "metadata": {"price": 3}}]),
        )
        .await;
    let first = service.wait_job(&first[0], JOB_LIMIT).await;
    assert_eq!(first["status"], "succeeded", "{first}");
    let item_id = first["item_id"].as_str().unwrap().to_string();

    let second = service
        .submit_urls(
            json!([{"url": images.url("/files/skimage_chelsea.png"), "external_id": "sku-9",
                             "category": "cats", "metadata": {"price": 4}}]),
        )
        .await;
    let second = service.wait_job(&second[0], JOB_LIMIT).await;
    assert_eq!(second["status"], "succeeded", "{second}");
    assert_eq!(
        second["item_id"],
        item_id.as_str(),
        "the same item, updated"
    );
    let (_, item) = service
        .get(&format!("/v1/items/{item_id}?vector=true"))
        .await;
    assert_eq!(
        (
            item["category"].as_str(),
            item["metadata"]["price"].as_i64()
        ),
        (Some("cats"), Some(4)),
        "{item}"
    );
    assert_eq!(item["job_id"], second["id"]);
    let chelsea = expected_clip("skimage_chelsea.png");
    assert!(
        cosine(&floats(&item["vector"]), &chelsea) >= parity_floor(),
        "the index holds the new image's vector"
    );
    let (_, status) = service.get("/v1/status").await;
    assert_eq!(
        (status["items"].as_i64(), status["index"]["points"].as_u64()),
        (Some(1), Some(1)),
        "{status}"
    );
    // The old vector left the `cups` prototype and the new one joined `cats`, once each.
    let mut db = env.db().await;
    let prototypes: Vec<(String, i32)> =
        sqlx::query_as("SELECT category, items FROM category_prototypes ORDER BY category")
            .fetch_all(&mut db)
            .await
            .unwrap();
    assert_eq!(prototypes, vec![("cats".to_string(), 1)]);
    // Search results are rendered from what the index keeps with the vector: it was updated too.
    let other = service
        .submit_urls(
            json!([{"url": images.url("/files/skimage_chelsea.png?v=other"), "category": "cats"}]),
        )
        .await;
    let other = service.wait_job(&other[0], JOB_LIMIT).await;
    let (_, similar) = service
        .get(&format!(
            "/v1/items/{}/similar",
            other["item_id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(
        similar["results"][0]["item_id"],
        item_id.as_str(),
        "{similar}"
    );
    assert_eq!(similar["results"][0]["metadata"]["price"], 4, "{similar}");
    assert_eq!(similar["results"][0]["external_id"], "sku-9", "{similar}");
    let (status, _) = service
        .delete(&format!("/v1/items/{}", other["item_id"].as_str().unwrap()))
        .await;
    assert_eq!(status, 204);

    // Concurrent resubmissions of one external_id (separate requests) still leave one item, whose
    // vector and prototype belong to the same job.
    let names = [
        "allstar-sneakers.jpg",
        "skimage_coffee.png",
        "jpeg_cmyk.jpg",
    ];
    let submissions = names.iter().map(|name| {
        service.submit_urls(
            json!([{"url": images.url(&format!("/files/{name}")), "external_id": "sku-9", "category": "mixed"}]),
        )
    });
    let ids: Vec<String> = futures::future::join_all(submissions)
        .await
        .into_iter()
        .flatten()
        .collect();
    for job in service.wait_jobs(&ids, JOB_LIMIT).await {
        assert_eq!(
            (job["status"].as_str(), job["item_id"].as_str()),
            (Some("succeeded"), Some(item_id.as_str())),
            "{job}"
        );
    }
    let (_, item) = service
        .get(&format!("/v1/items/{item_id}?vector=true"))
        .await;
    let (_, status) = service.get("/v1/status").await;
    assert_eq!(
        (status["items"].as_i64(), status["index"]["points"].as_u64()),
        (Some(1), Some(1)),
        "{status}"
    );
    let (sum, count): (Vec<f32>, i32) = sqlx::query_as(
        "SELECT vector_sum, items FROM category_prototypes WHERE category = 'mixed'",
    )
    .fetch_one(&mut db)
    .await
    .unwrap();
    assert_eq!(count, 1);
    assert!(
        cosine(&sum, &floats(&item["vector"])) > 0.9999,
        "the prototype holds exactly the vector the index serves"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_repeated_submission_with_the_same_idempotency_key_returns_the_original_jobs() {
    let env = TestEnv::new().await;
    let images = ImageServer::start(reference_dir()).await;
    let service = env.start().await;
    let body = json!({"items": [{"url": images.url("/files/skimage_coffee.png")}, {"url": images.url("/files/skimage_chelsea.png")}]});
    let post = |key: &'static str| {
        let request = service
            .client
            .post(service.url("/v1/images"))
            .header("idempotency-key", key)
            .json(&body);
        async move {
            let r = request.send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let (status, first) = post("order-42").await;
    assert_eq!(status, 202, "{first}");
    let (status, again) = post("order-42").await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["replayed"], true);
    assert_eq!(
        job_ids(&again),
        job_ids(&first),
        "the same jobs, in the same order"
    );
    let (status, other) = post("order-43").await;
    assert_eq!(status, 202);
    assert_ne!(job_ids(&other), job_ids(&first));
    service
        .wait_jobs(&[job_ids(&first), job_ids(&other)].concat(), JOB_LIMIT)
        .await;
    let (_, status) = service.get("/v1/status").await;
    assert_eq!(
        status["jobs"]["succeeded"], 4,
        "two requests' worth of jobs, not three: {status}"
    );

    let (status, body) = service
        .send(
            service
                .client
                .post(service.url("/v1/images"))
                .header("idempotency-key", "")
                .json(&body),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("invalid_idempotency_key")),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn identical_bytes_reuse_the_stored_embedding_instead_of_running_the_model_again() {
    let env = TestEnv::new().await;
    let images = ImageServer::start(reference_dir()).await;
    let service = env.start().await;
    let first = service
        .submit_urls(json!([{"url": images.url("/files/allstar-sneakers.jpg?a=1")}]))
        .await;
    let first = service.wait_job(&first[0], JOB_LIMIT).await;
    let second = service
        .submit_urls(
            json!([{"url": images.url("/files/allstar-sneakers.jpg?b=2"), "category": "shoes"}]),
        )
        .await;
    let second = service.wait_job(&second[0], JOB_LIMIT).await;
    assert_eq!(second["status"], "succeeded", "{second}");
    let (_, a) = service
        .get(&format!(
            "/v1/items/{}?vector=true",
            first["item_id"].as_str().unwrap()
        ))
        .await;
    let (_, b) = service
        .get(&format!(
            "/v1/items/{}?vector=true",
            second["item_id"].as_str().unwrap()
        ))
        .await;
    assert_ne!(a["id"], b["id"], "a second item, with its own category");
    assert_eq!(b["category"], "shoes");
    assert_eq!(a["content_sha256"], b["content_sha256"]);
    assert_eq!(
        (a["width"].clone(), a["format"].clone()),
        (b["width"].clone(), b["format"].clone())
    );
    assert_eq!(a["vector"], b["vector"], "the very same embedding");
    assert!(
        service.log().contains("embedding reused"),
        "the worker says it skipped the model"
    );
}

/// An existing catalogue (items embedded from full decodes) keeps its recipe across an upgrade:
/// with `model.reduced_decode = "auto"` the service finds items of the model id and decodes in
/// full, so new vectors stay comparable with the stored ones; a new catalogue decodes in draft.
#[tokio::test(flavor = "multi_thread")]
async fn a_catalogue_of_full_decode_vectors_stays_on_full_decode() {
    let mut env = TestEnv::new().await;
    let images = ImageServer::start(reference_dir()).await;
    env.set("MODEL__REDUCED_DECODE", "off");
    let mut service = env.start().await;
    let ids = service
        .submit_urls(json!([{"url": images.url("/files/allstar-sneakers.jpg?v=1")}]))
        .await;
    let job = service.wait_job(&ids[0], JOB_LIMIT).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    service.terminate(Duration::from_secs(30));

    // The upgrade: the same catalogue, now with the default ("auto").
    env.extra_env
        .retain(|(k, _)| k != "LOOKALIKE_MODEL__REDUCED_DECODE");
    let service = env.start().await;
    let ids = service
        .submit_urls(json!([{"url": images.url("/files/allstar-sneakers.jpg?v=2")}]))
        .await;
    let job = service.wait_job(&ids[0], JOB_LIMIT).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    let (_, item) = service
        .get(&format!(
            "/v1/items/{}?vector=true",
            job["item_id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(item["model_id"], "clip-vit-b16-int8", "{item}");
    let parity = cosine(
        &floats(&item["vector"]),
        &expected_clip_full("allstar-sneakers.jpg"),
    );
    assert!(
        parity >= parity_floor(),
        "full decode, as before: cosine {parity}"
    );
    assert!(
        service.log().contains("decode recipe settled"),
        "{}",
        service.log()
    );
}
