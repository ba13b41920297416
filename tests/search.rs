//! Similarity queries within a category, search by uploaded image, and the catalogue endpoints.

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::images::ImageServer;
use support::*;

const LIMIT: Duration = Duration::from_secs(120);

/// Three labelled categories from the reference images, several URLs per image.
async fn labelled_catalogue(service: &Service, images: &ImageServer) -> Vec<Value> {
    let mut items = Vec::new();
    for i in 0..3 {
        items.push(json!({"url": images.url(&format!("/files/allstar-sneakers.jpg?v={i}")), "category": "shoes", "external_id": format!("shoe-a{i}")}));
        items.push(json!({"url": images.url(&format!("/files/sneakers_01__1.png?v={i}")), "category": "shoes", "external_id": format!("shoe-b{i}")}));
        items.push(json!({"url": images.url(&format!("/files/skimage_coffee.png?v={i}")), "category": "cups", "external_id": format!("cup-{i}")}));
        items.push(json!({"url": images.url(&format!("/files/skimage_chelsea.png?v={i}")), "category": "cats", "external_id": format!("cat-{i}")}));
    }
    let ids = service.submit_urls(Value::Array(items)).await;
    let jobs = service.wait_jobs(&ids, LIMIT).await;
    assert!(jobs.iter().all(|j| j["status"] == "succeeded"), "{jobs:?}");
    jobs
}

fn upload(name: &str) -> reqwest::multipart::Form {
    reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(read(&reference_dir().join(name)))
            .file_name(name.to_string()),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn similar_items_stay_in_the_items_category_unless_asked_otherwise() {
    let env = TestEnv::new().await;
    let images = ImageServer::start(reference_dir()).await;
    let service = env.start().await;
    let jobs = labelled_catalogue(&service, &images).await;
    let shoe = jobs[0]["item_id"].as_str().unwrap();

    let (status, body) = service.get(&format!("/v1/items/{shoe}/similar?k=10")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["search"]["mode"], "auto");
    assert_eq!(body["search"]["categories"], json!(["shoes"]));
    let results = body["results"].as_array().unwrap();
    assert_eq!(results.len(), 5, "the other five shoes: {body}");
    assert!(
        results
            .iter()
            .all(|r| r["category"] == "shoes" && r["item_id"] != shoe)
    );
    let scores: Vec<f64> = results
        .iter()
        .map(|r| r["score"].as_f64().unwrap())
        .collect();
    assert!(
        scores.windows(2).all(|w| w[0] >= w[1]),
        "best first: {scores:?}"
    );
    assert!(
        scores[0] > 0.99,
        "the same picture at another URL is the closest: {scores:?}"
    );
    assert!(
        results[0]["thumbnail_url"]
            .as_str()
            .unwrap()
            .ends_with("/thumbnail")
    );

    let (_, any) = service
        .get(&format!("/v1/items/{shoe}/similar?k=20&category=any"))
        .await;
    assert_eq!(any["results"].as_array().unwrap().len(), 11);
    let (_, cups) = service
        .get(&format!("/v1/items/{shoe}/similar?category=cups"))
        .await;
    assert!(
        cups["results"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["category"] == "cups")
    );
    let (_, paged) = service
        .get(&format!("/v1/items/{shoe}/similar?k=2&offset=2"))
        .await;
    // Page 2 starts where page 1 ended. Copies of one image tie in score (up to float noise), so
    // compare scores and check that page 2 repeats nothing from before it.
    let paged = paged["results"].as_array().unwrap();
    assert_eq!(paged.len(), 2);
    let gap = (paged[0]["score"].as_f64().unwrap() - results[2]["score"].as_f64().unwrap()).abs();
    assert!(gap < 1e-4, "{paged:?} vs {results:?}");
    assert!(
        paged
            .iter()
            .all(|p| results[..2].iter().all(|r| r["item_id"] != p["item_id"]))
    );
    let (_, strict) = service
        .get(&format!("/v1/items/{shoe}/similar?min_score=0.99"))
        .await;
    assert!(
        strict["results"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["score"].as_f64().unwrap() >= 0.99)
    );

    let (status, body) = service.get(&format!("/v1/items/{shoe}/similar?k=0")).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (422, Some("invalid_k"))
    );
    let (status, body) = service
        .get(&format!("/v1/items/{}/similar", uuid::Uuid::new_v4()))
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("item_not_found"))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_uploaded_image_is_classified_then_searched_within_its_category_and_can_join_the_catalogue()
 {
    let env = TestEnv::new().await;
    let images = ImageServer::start(reference_dir()).await;
    let service = env.start().await;
    labelled_catalogue(&service, &images).await;

    let (status, body) = service
        .post_multipart("/v1/search", upload("sneakers_01__1.png").text("k", "4"))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["prediction"]["category"], "shoes", "{body}");
    let confidence = body["prediction"]["confidence"].as_f64().unwrap();
    assert!(confidence > 0.6 && confidence <= 1.0, "{body}");
    assert_eq!(body["prediction"]["top"][0]["category"], "shoes");
    assert_eq!(body["search"]["low_confidence"], false);
    let results = body["results"].as_array().unwrap();
    assert_eq!(results.len(), 4);
    assert!(results.iter().all(|r| r["category"] == "shoes"), "{body}");
    assert_eq!(body["added"], Value::Null);

    // By URL, and added to the catalogue with its predicted category.
    let url = images.url("/files/skimage_coffee.png?query=1");
    let (status, body) = service
        .post_json("/v1/search", &json!({"url": url, "add": true}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["prediction"]["category"], "cups");
    let added = body["added"]["item_id"].as_str().unwrap();
    let (_, item) = service.get(&format!("/v1/items/{added}")).await;
    assert_eq!(item["category"], "cups");
    assert_eq!(item["category_source"], "predicted");
    let (_, cats) = service.get("/v1/categories").await;
    let cups = cats["categories"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "cups")
        .unwrap()
        .clone();
    assert_eq!(
        (cups["items"].as_i64(), cups["labelled"].as_i64()),
        (Some(4), Some(3)),
        "{cats}"
    );

    // Bad queries are refused with their codes.
    let (status, body) = service.post_json("/v1/search", &json!({})).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (422, Some("no_image"))
    );
    let garbage = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(b"<html>".to_vec()).file_name("x.jpg"),
    );
    let (status, body) = service.post_multipart("/v1/search", garbage).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (422, Some("image_unsupported_format")),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unsure_prediction_widens_the_search_to_the_top_categories_and_says_so() {
    let mut env = TestEnv::new().await;
    // No prediction is ever sure enough: every automatic search must be widened.
    // A soft, uncalibrated fusion of neighbours and prototypes (no head), which leaves some
    // probability on each of the three categories.
    env.set("CLASSIFY__MIN_CONFIDENCE", 1.01)
        .set("CLASSIFY__COVER", 1.0)
        .set("CLASSIFY__CONFIDENCE_TEMPERATURE", 1.0)
        .set("CLASSIFY__NEIGHBOUR_TEMPERATURE", 0.05)
        .set("CLASSIFY__PROTOTYPE_WEIGHT", 0.5)
        .set("CLASSIFY__HEAD", false);
    let images = ImageServer::start(reference_dir()).await;
    let service = env.start().await;
    labelled_catalogue(&service, &images).await;
    let (status, body) = service
        .post_multipart("/v1/search", upload("skimage_chelsea.png").text("k", "20"))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["search"]["low_confidence"], true, "{body}");
    let searched: Vec<String> =
        serde_json::from_value(body["search"]["categories"].clone()).unwrap();
    assert_eq!(searched.len(), 3, "{body}");
    assert_eq!(searched[0], "cats");
    let seen: std::collections::HashSet<&str> = body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["category"].as_str().unwrap())
        .collect();
    assert!(seen.iter().all(|c| searched.iter().any(|s| s == c)));
}

#[tokio::test(flavor = "multi_thread")]
async fn deleting_an_item_removes_its_row_vector_and_thumbnail_and_reclassify_uses_new_labels() {
    let env = TestEnv::new().await;
    let images = ImageServer::start(reference_dir()).await;
    let service = env.start().await;
    // Ingested before any label exists: stored uncategorised.
    let early = service
        .submit_urls(json!([{"url": images.url("/files/allstar-sneakers.jpg?early=1")}]))
        .await;
    let early = service.wait_job(&early[0], LIMIT).await["item_id"]
        .as_str()
        .unwrap()
        .to_string();
    let (_, item) = service.get(&format!("/v1/items/{early}")).await;
    assert_eq!(item["category_source"], "none");

    let jobs = labelled_catalogue(&service, &images).await;
    let (status, body) = service.post_json("/v1/reclassify", &json!({})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["changed"], 1, "{body}");
    let (_, item) = service.get(&format!("/v1/items/{early}")).await;
    assert_eq!(
        (item["category"].as_str(), item["category_source"].as_str()),
        (Some("shoes"), Some("predicted"))
    );

    let (_, page) = service.get("/v1/items?category=shoes&limit=4").await;
    assert_eq!(page["total"], 7);
    assert_eq!(page["items"].as_array().unwrap().len(), 4);

    let victim = jobs[2]["item_id"].as_str().unwrap();
    let (status, body) = service.delete(&format!("/v1/items/{victim}")).await;
    assert_eq!(status, 204, "{body}");
    assert_eq!(service.get(&format!("/v1/items/{victim}")).await.0, 404);
    let thumb = service
        .client
        .get(service.url(&format!("/v1/items/{victim}/thumbnail")))
        .send()
        .await
        .unwrap();
    assert_eq!(thumb.status(), 404);
    let (_, status) = service.get("/v1/status").await;
    assert_eq!(
        (status["items"].as_i64(), status["index"]["points"].as_u64()),
        (Some(12), Some(12)),
        "{status}"
    );
    let (_, similar) = service
        .get(&format!(
            "/v1/items/{}/similar?category=any&k=50",
            jobs[0]["item_id"].as_str().unwrap()
        ))
        .await;
    assert!(
        similar["results"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["item_id"] != victim)
    );
    let (status, body) = service.delete(&format!("/v1/items/{victim}")).await;
    assert_eq!(status, 404, "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn before_any_label_the_imagenet_prior_predicts_configured_categories() {
    let mut env = TestEnv::new().await;
    let model = asset("models/efficientnet_lite0_imagenet.onnx");
    env.set(
        "CLASSIFY__CATEGORIES",
        r#"["shoes", "bags", "outerwear", "tops"]"#,
    )
    .set("CLASSIFY__PRIOR_MODEL", model.display());
    let images = ImageServer::start(reference_dir()).await;
    let service = env.start().await;
    assert!(service.log().contains("cold-start prior loaded"));

    let ids = service
        .submit_urls(json!([{"url": images.url("/files/sneakers_01__1.png")},
                            {"url": images.url("/files/skimage_chelsea.png")}]))
        .await;
    let jobs = service.wait_jobs(&ids, LIMIT).await;
    let item = |job: &Value| job["item_id"].as_str().unwrap().to_string();
    let (_, shoe) = service.get(&format!("/v1/items/{}", item(&jobs[0]))).await;
    assert_eq!(
        (shoe["category"].as_str(), shoe["category_source"].as_str()),
        (Some("shoes"), Some("predicted")),
        "{shoe}"
    );
    let confidence = shoe["category_confidence"].as_f64().unwrap();
    assert!(
        (0.01..1.0).contains(&confidence),
        "the prior's own probability, not a certainty: {confidence}"
    );
    let (_, cat) = service.get(&format!("/v1/items/{}", item(&jobs[1]))).await;
    assert_eq!(
        cat["category_source"], "none",
        "a cat is none of the catalogue's categories: {cat}"
    );

    // Once `shoes` has labels, the labels speak for it: a search by upload reports the labelled
    // classifier's answer, not the prior's.
    let labelled = service
        .submit_urls(
            json!([{"url": images.url("/files/allstar-sneakers.jpg"), "category": "shoes"}]),
        )
        .await;
    service.wait_jobs(&labelled, LIMIT).await;
    let (status, found) = service
        .post_multipart("/v1/search", upload("sneakers_01__1.png"))
        .await;
    assert_eq!(status, 200, "{found}");
    assert_eq!(found["prediction"]["category"], "shoes", "{found}");
    assert!(
        found["prediction"]["confidence"].as_f64().unwrap() > confidence,
        "a labelled look-alike is stronger evidence than the prior: {found}"
    );
}

/// An item whose vector another model made is not searched with this model's vectors: 409 with a
/// code that says to re-index (here the same weights under a new model id).
#[tokio::test(flavor = "multi_thread")]
async fn similar_to_an_item_of_another_model_is_refused_with_its_code() {
    let mut env = TestEnv::new().await;
    let images = ImageServer::start(reference_dir()).await;
    let mut service = env.start().await;
    let ids = service
        .submit_urls(
            json!([{"url": images.url("/files/allstar-sneakers.jpg"), "category": "shoes"}]),
        )
        .await;
    let job = service.wait_job(&ids[0], LIMIT).await;
    let item = job["item_id"].as_str().unwrap().to_string();
    service.terminate(Duration::from_secs(30));

    env.set("MODEL__ID", "clip-vit-b16-int8-renamed");
    let service = env.start().await;
    let (status, body) = service.get(&format!("/v1/items/{item}/similar")).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "item_model_mismatch", "{body}");
}
