//! Near-duplicates, on both index backends: altered copies of one photo (re-encoded, shrunk, cropped)
//! and an identical copy join the original's group at ingest; `/duplicates` lists the group;
//! `collapse=true` answers one result per group; an operator's split is remembered across a
//! resubmission; deleting the canonical image hands the group to the next; a group left with one
//! member is dissolved.

mod support;

use std::io::Cursor;
use std::time::Duration;

use image::imageops::FilterType;
use serde_json::{Value, json};
use support::images::ImageServer;
use support::*;

const LIMIT: Duration = Duration::from_secs(120);
/// Set for the test, so it does not move with the measured default: copies of one photo score well
/// above it, distinct photos below (checked from the vectors before anything else).
const THRESHOLD: f32 = 0.93;

#[tokio::test(flavor = "multi_thread")]
async fn duplicates_on_the_embedded_index() {
    exercise(TestEnv::new().await).await;
}

/// The same with the test command's Qdrant server (`QDRANT_URL`; missing, it fails under the test
/// command and CI): there collapsing is the server's own group query.
#[tokio::test(flavor = "multi_thread")]
async fn duplicates_on_a_qdrant_server() {
    let Some(env) = TestEnv::on_shared_qdrant().await else {
        return;
    };
    exercise(env).await;
}

fn jpeg(img: &image::DynamicImage, quality: u8) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, quality)
        .encode_image(&img.to_rgb8())
        .unwrap();
    out.into_inner()
}

/// Altered copies of the allstar photo, as other sellers would list it.
fn copies() -> Vec<(&'static str, Vec<u8>)> {
    let original = image::open(reference_dir().join("allstar-sneakers.jpg")).unwrap();
    let (w, h) = (original.width(), original.height());
    vec![
        ("reencoded", jpeg(&original, 70)),
        (
            "shrunk",
            jpeg(
                &original.resize_exact(w / 2, h / 2, FilterType::Triangle),
                85,
            ),
        ),
        (
            "cropped",
            jpeg(
                &original.crop_imm(w / 40, h / 40, w * 19 / 20, h * 19 / 20),
                85,
            ),
        ),
    ]
}

async fn upload(service: &Service, external: &str, bytes: Vec<u8>) -> Value {
    let form = reqwest::multipart::Form::new()
        .part(
            "file",
            reqwest::multipart::Part::bytes(bytes).file_name(format!("{external}.jpg")),
        )
        .text("external_id", external.to_string())
        .text("category", "shoes");
    let (status, body) = service.post_multipart("/v1/images", form).await;
    assert_eq!(status, 202, "{body}");
    let ids = job_ids(&body);
    let job = service.wait_job(&ids[0], LIMIT).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    job
}

async fn item(service: &Service, id: &str) -> Value {
    let (status, body) = service.get(&format!("/v1/items/{id}")).await;
    assert_eq!(status, 200, "{body}");
    body
}

async fn vector(service: &Service, id: &str) -> Vec<f32> {
    let (_, body) = service.get(&format!("/v1/items/{id}?vector=true")).await;
    floats(&body["vector"])
}

async fn exercise(mut env: TestEnv) {
    env.set("DEDUPE__THRESHOLD", THRESHOLD);
    let images = ImageServer::start(reference_dir()).await;
    let service = env.start().await;
    let ids = service
        .submit_urls(json!([
            {"url": images.url("/files/allstar-sneakers.jpg"), "external_id": "original", "category": "shoes"},
            {"url": images.url("/files/sneakers_01__1.png"), "external_id": "sneaker", "category": "shoes"},
            {"url": images.url("/files/skimage_coffee.png"), "external_id": "cup", "category": "cups"},
        ]))
        .await;
    let jobs = service.wait_jobs(&ids, LIMIT).await;
    assert!(jobs.iter().all(|j| j["status"] == "succeeded"), "{jobs:?}");
    let id_of = |job: &Value| job["item_id"].as_str().unwrap().to_string();
    let (original, sneaker, cup) = (id_of(&jobs[0]), id_of(&jobs[1]), id_of(&jobs[2]));
    // The distinct photos are in no group.
    for id in [&original, &sneaker, &cup] {
        assert!(item(&service, id).await["duplicate_group"].is_null());
    }
    let original_vector = vector(&service, &original).await;
    let sneaker_vector = vector(&service, &sneaker).await;
    assert!(
        cosine(&original_vector, &sneaker_vector) < THRESHOLD,
        "the test needs two distinct shoes below the threshold: {}",
        cosine(&original_vector, &sneaker_vector)
    );

    // Each altered copy joins the original's group, which takes the original's id as its name.
    let mut copy_ids = Vec::new();
    for (name, bytes) in copies() {
        let job = upload(&service, name, bytes).await;
        let id = id_of(&job);
        let score = cosine(&original_vector, &vector(&service, &id).await);
        let stored = item(&service, &id).await;
        assert_eq!(
            stored["duplicate_group"],
            json!(original),
            "{name} (cosine {score:.4} to the original) joins its group: {stored}"
        );
        copy_ids.push((name, id));
    }
    assert_eq!(
        item(&service, &original).await["duplicate_group"],
        json!(original)
    );
    // Identical bytes always join.
    let ids = service
        .submit_urls(json!([{"url": images.url("/files/allstar-sneakers.jpg?again=1"), "external_id": "identical", "category": "shoes"}]))
        .await;
    let identical = id_of(&service.wait_job(&ids[0], LIMIT).await);
    assert_eq!(
        item(&service, &identical).await["duplicate_group"],
        json!(original)
    );

    let (status, group) = service
        .get(&format!("/v1/items/{original}/duplicates"))
        .await;
    assert_eq!(status, 200, "{group}");
    assert_eq!(group["group"], json!(original));
    assert_eq!(group["canonical_item_id"], json!(original));
    let members = group["duplicates"].as_array().unwrap();
    assert_eq!(
        members.len(),
        4,
        "three copies and the identical one: {group}"
    );
    for m in members {
        assert!(m["score"].as_f64().unwrap() >= f64::from(THRESHOLD), "{m}");
        assert_eq!(m["canonical"], false);
    }
    let (_, none) = service
        .get(&format!("/v1/items/{sneaker}/duplicates"))
        .await;
    assert_eq!(none["duplicates"], json!([]), "{none}");
    let (_, status_body) = service.get("/v1/status").await;
    assert_eq!(status_body["duplicates"]["groups"], 1, "{status_body}");
    assert_eq!(
        status_body["duplicates"]["items_in_groups"], 5,
        "{status_body}"
    );

    // collapse=true: one result for the five copies, the best-matching one, with how many matched.
    let (_, plain) = service
        .get(&format!("/v1/items/{sneaker}/similar?category=any&k=20"))
        .await;
    assert_eq!(plain["results"].as_array().unwrap().len(), 6, "{plain}");
    let (status, collapsed) = service
        .get(&format!(
            "/v1/items/{sneaker}/similar?category=any&k=20&collapse=true"
        ))
        .await;
    assert_eq!(status, 200, "{collapsed}");
    assert_eq!(collapsed["search"]["group"], "duplicates");
    let results = collapsed["results"].as_array().unwrap();
    assert_eq!(
        results.len(),
        2,
        "the allstar group and the cup: {collapsed}"
    );
    let allstar = results.iter().find(|r| r["item_id"] != json!(cup)).unwrap();
    assert_eq!(allstar["duplicates_matched"], 5, "{allstar}");
    let (status, body) = service
        .get(&format!(
            "/v1/items/{sneaker}/similar?collapse=true&group=product"
        ))
        .await;
    assert_eq!(status, 422, "{body}");
    // From a member, its own group is left out.
    let (_, from_member) = service
        .get(&format!(
            "/v1/items/{original}/similar?category=any&k=20&collapse=true"
        ))
        .await;
    let got: Vec<&Value> = from_member["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| &r["item_id"])
        .collect();
    assert_eq!(got, [&json!(sneaker), &json!(cup)], "{from_member}");

    // "Not a duplicate": the cropped copy leaves, and stays out when it is resubmitted.
    let cropped = copy_ids
        .iter()
        .find(|(n, _)| *n == "cropped")
        .unwrap()
        .1
        .clone();
    let (status, split) = service
        .post(&format!("/v1/items/{cropped}/not-duplicate"))
        .await;
    assert_eq!(status, 200, "{split}");
    assert!(split["group"].is_null(), "{split}");
    let cropped_bytes = copies()
        .into_iter()
        .find(|(n, _)| *n == "cropped")
        .unwrap()
        .1;
    let job = upload(&service, "cropped", cropped_bytes).await;
    assert_eq!(id_of(&job), cropped, "the same item, updated");
    assert!(
        item(&service, &cropped).await["duplicate_group"].is_null(),
        "the split is remembered"
    );

    // Deleting the canonical image hands the group to the next one submitted.
    let reencoded = copy_ids
        .iter()
        .find(|(n, _)| *n == "reencoded")
        .unwrap()
        .1
        .clone();
    let shrunk = copy_ids
        .iter()
        .find(|(n, _)| *n == "shrunk")
        .unwrap()
        .1
        .clone();
    let (status, _) = service.delete(&format!("/v1/items/{original}")).await;
    assert_eq!(status, 204);
    let (_, group) = service.get(&format!("/v1/items/{shrunk}/duplicates")).await;
    assert_eq!(group["canonical_item_id"], json!(reencoded), "{group}");
    assert_eq!(group["group"], json!(original), "the group keeps its name");
    assert_eq!(group["duplicates"].as_array().unwrap().len(), 2, "{group}");

    // A group left with one member is no group.
    for id in [&shrunk, &identical] {
        let (status, _) = service.delete(&format!("/v1/items/{id}")).await;
        assert_eq!(status, 204);
    }
    assert!(item(&service, &reencoded).await["duplicate_group"].is_null());
    let (_, status_body) = service.get("/v1/status").await;
    assert_eq!(status_body["duplicates"]["groups"], 0, "{status_body}");
}

/// `lookalike dedupe` groups a catalogue stored while grouping was off, by the same rule, and a
/// second run changes nothing (it skips items already grouped).
#[tokio::test(flavor = "multi_thread")]
async fn dedupe_groups_a_stored_catalogue_and_a_rerun_changes_nothing() {
    let mut env = TestEnv::new().await;
    env.set("DEDUPE__ENABLED", "false");
    let images = ImageServer::start(reference_dir()).await;
    let mut service = env.start().await;
    let ids = service
        .submit_urls(json!([
            {"url": images.url("/files/allstar-sneakers.jpg"), "external_id": "original", "category": "shoes"},
            {"url": images.url("/files/skimage_coffee.png"), "external_id": "cup", "category": "cups"},
        ]))
        .await;
    let jobs = service.wait_jobs(&ids, LIMIT).await;
    let original = jobs[0]["item_id"].as_str().unwrap().to_string();
    let (name, bytes) = copies().remove(0);
    let copy = upload(&service, name, bytes).await["item_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        item(&service, &copy).await["duplicate_group"].is_null(),
        "grouping is off"
    );
    // The embedded index is the service's own: stop it while the command runs.
    assert_eq!(service.terminate(Duration::from_secs(30)), Some(0));

    let run = || {
        let out = env
            .command("dedupe")
            .args(["--json", "--threshold", &THRESHOLD.to_string()])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<Value>(&out.stdout).unwrap()
    };
    let first = run();
    assert_eq!(first["checked"], 3, "{first}");
    assert_eq!(first["joined"], 1, "{first}");
    assert_eq!(first["groups"], 1, "{first}");
    assert_eq!(first["items_in_groups"], 2, "{first}");
    let again = run();
    assert_eq!(again["joined"], 0, "{again}");
    assert_eq!(again["items_in_groups"], 2, "{again}");

    let service = env.start().await;
    let (_, group) = service.get(&format!("/v1/items/{copy}/duplicates")).await;
    assert_eq!(group["canonical_item_id"], json!(original), "{group}");
    assert_eq!(group["duplicates"].as_array().unwrap().len(), 1, "{group}");
}
