//! Products, on both index backends: several images name one `product_id`; `group=product` answers
//! one result per product (its best image, how many of its images matched, how many it has) with
//! `k` counting products; `/v1/products` lists, shows, searches from and deletes them; a resubmitted
//! image moves between products.

mod support;

use std::collections::HashSet;
use std::time::Duration;

use serde_json::{Value, json};
use support::images::ImageServer;
use support::*;

const LIMIT: Duration = Duration::from_secs(120);

#[tokio::test(flavor = "multi_thread")]
async fn products_on_the_embedded_index() {
    exercise(TestEnv::new().await).await;
}

/// The same with the test command's Qdrant server (`QDRANT_URL`; missing, it fails under the test
/// command and CI): there grouping is the server's own group query.
#[tokio::test(flavor = "multi_thread")]
async fn products_on_a_qdrant_server() {
    let Some(env) = TestEnv::on_shared_qdrant().await else {
        return;
    };
    exercise(env).await;
}

fn results(body: &Value) -> &Vec<Value> {
    body["results"]
        .as_array()
        .unwrap_or_else(|| panic!("results in {body}"))
}

fn externals(body: &Value) -> Vec<String> {
    results(body)
        .iter()
        .map(|r| r["external_id"].as_str().unwrap().to_string())
        .collect()
}

async fn exercise(env: TestEnv) {
    let images = ImageServer::start(reference_dir()).await;
    let service = env.start().await;
    // Query strings make distinct URLs of one file; identical images give identical vectors, so
    // what ranks first below is decided by which images are alike, not by chance.
    let url = |file: &str, v: u32| images.url(&format!("/files/{file}?v={v}"));
    let catalogue = [
        // external id, file, copy, category, product
        (
            "allstar-a",
            "allstar-sneakers.jpg",
            0,
            "shoes",
            Some("allstar"),
        ),
        (
            "allstar-b",
            "allstar-sneakers.jpg",
            1,
            "shoes",
            Some("allstar"),
        ),
        (
            "allstar-side",
            "sneakers_01__1.png",
            0,
            "shoes",
            Some("allstar"),
        ),
        ("runner-a", "sneakers_01__1.png", 1, "shoes", Some("runner")),
        ("runner-b", "sneakers_01__1.png", 2, "shoes", Some("runner")),
        ("loose-allstar", "allstar-sneakers.jpg", 2, "shoes", None),
        ("loose-sneaker", "sneakers_01__1.png", 3, "shoes", None),
        // A product whose images disagree: two cups and one shoe photo; most say cups.
        ("mug-a", "skimage_coffee.png", 0, "cups", Some("mug")),
        ("mug-b", "skimage_coffee.png", 1, "cups", Some("mug")),
        ("mug-odd", "allstar-sneakers.jpg", 3, "shoes", Some("mug")),
    ];
    let items: Vec<Value> = catalogue
        .iter()
        .map(|(external, file, v, category, product)| {
            let mut item = json!({
                "url": url(file, *v),
                "external_id": external,
                "category": category,
                "metadata": {"seller": external},
            });
            if let Some(p) = product {
                item["product_id"] = json!(p);
            }
            item
        })
        .collect();
    let ids = service.submit_urls(Value::Array(items)).await;
    let jobs = service.wait_jobs(&ids, LIMIT).await;
    assert!(jobs.iter().all(|j| j["status"] == "succeeded"), "{jobs:?}");
    assert_eq!(
        jobs[0]["product_id"], "allstar",
        "the job keeps the product"
    );
    let item = |external: &str| -> String {
        let i = catalogue.iter().position(|c| c.0 == external).unwrap();
        jobs[i]["item_id"].as_str().unwrap().to_string()
    };
    let (_, shown) = service
        .get(&format!("/v1/items/{}", item("allstar-a")))
        .await;
    assert_eq!(shown["product_id"], "allstar", "{shown}");

    // Ungrouped, every other shoe image is a result (the odd mug photo is a shoe too).
    let similar = |id: String, query: &'static str| {
        let service = &service;
        async move {
            let (status, body) = service.get(&format!("/v1/items/{id}/similar{query}")).await;
            assert_eq!(status, 200, "{body}");
            body
        }
    };
    let body = similar(item("loose-allstar"), "?k=20").await;
    assert_eq!(results(&body).len(), 7, "{body}");
    assert_eq!(body["search"]["group"], "none");

    // Grouped: one result per product, `k` counting products. From the loose allstar: the allstar
    // product (two identical images and a side view), then the mug (whose odd photo is the same
    // allstar) then the runner and the loose sneaker; a product's result is its best image.
    let body = similar(item("loose-allstar"), "?k=20&group=product").await;
    assert_eq!(body["search"]["group"], "product");
    let got = results(&body);
    let products: Vec<Value> = got.iter().map(|r| r["product_id"].clone()).collect();
    assert_eq!(got.len(), 4, "allstar, mug, runner, loose sneaker: {body}");
    let distinct: HashSet<String> = products.iter().map(|p| p.to_string()).collect();
    assert_eq!(distinct.len(), 4, "no product twice: {body}");
    let allstar = &got[products.iter().position(|p| p == "allstar").unwrap()];
    assert!(
        ["allstar-a", "allstar-b"].contains(&allstar["external_id"].as_str().unwrap()),
        "the product's best image stands for it: {allstar}"
    );
    assert_eq!(allstar["matched_images"], 3, "{allstar}");
    assert_eq!(allstar["product_images"], 3, "{allstar}");
    let mug = &got[products.iter().position(|p| p == "mug").unwrap()];
    assert_eq!(
        mug["external_id"], "mug-odd",
        "only its shoe photo is a shoe: {mug}"
    );
    assert_eq!(mug["matched_images"], 1, "{mug}");
    assert_eq!(mug["product_images"], 3, "{mug}");
    let loose = got.iter().find(|r| r["product_id"].is_null()).unwrap();
    assert_eq!(loose["external_id"], "loose-sneaker", "{loose}");
    assert!(loose.get("product_images").is_none(), "{loose}");
    let scores: Vec<f64> = got.iter().map(|r| r["score"].as_f64().unwrap()).collect();
    assert!(scores.windows(2).all(|w| w[0] >= w[1]), "{scores:?}");
    // k counts products, and paging skips whole products.
    let first = similar(item("loose-allstar"), "?k=2&group=product").await;
    assert_eq!(results(&first).len(), 2, "{first}");
    let next = similar(item("loose-allstar"), "?k=2&offset=2&group=product").await;
    let mut paged: Vec<String> = externals(&first);
    paged.extend(externals(&next));
    assert_eq!(
        paged,
        got.iter()
            .map(|r| r["external_id"].as_str().unwrap().to_string())
            .collect::<Vec<_>>(),
        "two pages of two are the four products"
    );

    // From an image of a product, grouped: its own product is left out.
    let body = similar(item("allstar-a"), "?k=20&group=product").await;
    let got = results(&body);
    assert!(
        got.iter().all(|r| r["product_id"] != "allstar"),
        "its own product is no answer: {body}"
    );
    // The loose allstar and the mug's allstar photo are the same image as the query (ties by id).
    let top: HashSet<&str> = got[..2]
        .iter()
        .map(|r| r["external_id"].as_str().unwrap())
        .collect();
    assert_eq!(top, HashSet::from(["loose-allstar", "mug-odd"]), "{body}");

    // Search by upload, grouped: the allstar product once.
    let form = reqwest::multipart::Form::new()
        .part(
            "file",
            reqwest::multipart::Part::bytes(read(&reference_dir().join("allstar-sneakers.jpg")))
                .file_name("q.jpg"),
        )
        .text("group", "product")
        .text("category", "shoes")
        .text("k", "3");
    let (status, body) = service.post_multipart("/v1/search", form).await;
    assert_eq!(status, 200, "{body}");
    let got = results(&body);
    assert_eq!(got.len(), 3, "{body}");
    let firsts: Vec<&Value> = got.iter().map(|r| &r["product_id"]).collect();
    assert_eq!(
        firsts.iter().filter(|p| **p == "allstar").count(),
        1,
        "{body}"
    );
    let (status, body) = service
        .post_json(
            "/v1/search",
            &json!({"url": url("allstar-sneakers.jpg", 9), "group": "nonsense"}),
        )
        .await;
    assert_eq!(status, 400, "an unknown grouping is refused: {body}");

    // The product list, by category (a product's own: most of its images').
    let (status, page) = service.get("/v1/products").await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["total"], 3, "{page}");
    let listed: Vec<(String, i64, String, i64)> = page["products"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["product_id"].as_str().unwrap().to_string(),
                p["images"].as_i64().unwrap(),
                p["category"].as_str().unwrap().to_string(),
                p["categories"].as_i64().unwrap(),
            )
        })
        .collect();
    for want in [
        ("allstar".to_string(), 3, "shoes".to_string(), 1),
        ("runner".to_string(), 2, "shoes".to_string(), 1),
        ("mug".to_string(), 3, "cups".to_string(), 2),
    ] {
        assert!(listed.contains(&want), "{want:?} in {listed:?}");
    }
    let (_, cups) = service.get("/v1/products?category=cups").await;
    assert_eq!(cups["total"], 1, "{cups}");
    assert_eq!(cups["products"][0]["product_id"], "mug");
    assert_eq!(
        cups["products"][0]["cover_item_id"],
        json!(item("mug-a")),
        "the first image is the cover"
    );

    // One product: its images in submission order, and their metadata merged (later wins).
    let (status, mug) = service.get("/v1/products/mug").await;
    assert_eq!(status, 200, "{mug}");
    assert_eq!(mug["category"], "cups");
    assert_eq!(mug["images"], 3);
    let shown: Vec<String> = mug["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["external_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(shown, ["mug-a", "mug-b", "mug-odd"]);
    assert_eq!(mug["metadata"], json!({"seller": "mug-odd"}));
    let (status, body) = service.get("/v1/products/nothing-here").await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"]["code"], "product_not_found");

    // Products like the runner: searched with both of its images, its own left out; the side view
    // of the allstar product and the loose sneaker are the same photo as the runner's, so they come
    // first (in the order of their ids: equal scores).
    for combine in ["mean", "max"] {
        let (status, body) = service
            .get(&format!("/v1/products/runner/similar?combine={combine}"))
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["query"]["images"], 2, "{body}");
        assert_eq!(body["query"]["combine"], combine);
        assert_eq!(body["search"]["categories"], json!(["shoes"]));
        let got = results(&body);
        assert!(
            got.iter().all(|r| r["product_id"] != "runner"),
            "{combine}: {body}"
        );
        let order: Vec<Value> = got.iter().map(|r| r["product_id"].clone()).collect();
        let top: HashSet<&str> = got[..2]
            .iter()
            .map(|r| r["external_id"].as_str().unwrap())
            .collect();
        assert_eq!(
            top,
            HashSet::from(["allstar-side", "loose-sneaker"]),
            "{combine}: {body}"
        );
        assert_eq!(
            got.len(),
            4,
            "allstar, both loose images, the mug: {combine}: {body}"
        );
        let named: Vec<&Value> = order.iter().filter(|p| !p.is_null()).collect();
        let distinct: HashSet<String> = named.iter().map(|p| p.to_string()).collect();
        assert_eq!(
            distinct.len(),
            named.len(),
            "no product twice: {combine}: {body}"
        );
    }
    let (_, body) = service
        .get("/v1/products/runner/similar?group=none&k=20")
        .await;
    assert_eq!(results(&body).len(), 6, "every other shoe image: {body}");

    // An image resubmitted under its external id moves to the product it now names.
    let ids = service
        .submit_urls(json!([{
            "url": url("allstar-sneakers.jpg", 1),
            "external_id": "allstar-b",
            "category": "shoes",
            "product_id": "runner",
        }]))
        .await;
    let job = service.wait_job(&ids[0], LIMIT).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(job["item_id"], json!(item("allstar-b")), "the same item");
    let (_, allstar) = service.get("/v1/products/allstar").await;
    assert_eq!(allstar["images"], 2, "{allstar}");
    let (_, runner) = service.get("/v1/products/runner").await;
    assert_eq!(runner["images"], 3, "{runner}");
    let body = similar(item("loose-allstar"), "?k=20&group=product").await;
    let runner = results(&body)
        .iter()
        .find(|r| r["product_id"] == "runner")
        .unwrap();
    assert_eq!(
        runner["external_id"], "allstar-b",
        "the index moved it too: {body}"
    );

    // Deleting a product deletes its images; it is gone from lists and results.
    let (status, body) = service.delete("/v1/products/runner").await;
    assert_eq!(status, 204, "{body}");
    for external in ["runner-a", "runner-b", "allstar-b"] {
        let (status, _) = service.get(&format!("/v1/items/{}", item(external))).await;
        assert_eq!(status, 404, "{external} deleted with its product");
    }
    let (status, body) = service.get("/v1/products/runner").await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = service.delete("/v1/products/runner").await;
    assert_eq!(status, 404, "{body}");
    let (_, page) = service.get("/v1/products").await;
    assert_eq!(page["total"], 2, "{page}");
    let body = similar(item("loose-allstar"), "?k=20&group=product").await;
    assert!(
        results(&body).iter().all(|r| r["product_id"] != "runner"),
        "{body}"
    );
}
