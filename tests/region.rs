//! Search with a region of the photo (`box=x,y,w,h`): in a photo made of two catalogue products side
//! by side, boxing each half finds that product and predicts its own category.

mod support;

use std::io::Cursor;
use std::time::Duration;

use image::imageops::FilterType;
use image::{ImageFormat, RgbImage};
use serde_json::{Value, json};
use support::images::ImageServer;
use support::*;

const LIMIT: Duration = Duration::from_secs(120);

/// Two reference images at the same height, side by side, as a JPEG: the left one `left_share` of
/// the width.
fn side_by_side(left: &str, right: &str) -> (Vec<u8>, f32) {
    let load = |name: &str| {
        image::load_from_memory(&read(&reference_dir().join(name)))
            .unwrap()
            .to_rgb8()
    };
    let height = 480;
    let fit = |img: RgbImage| {
        let width = img.width() * height / img.height();
        image::imageops::resize(&img, width, height, FilterType::Lanczos3)
    };
    let (a, b) = (fit(load(left)), fit(load(right)));
    let mut photo =
        RgbImage::from_pixel(a.width() + b.width(), height, image::Rgb([255, 255, 255]));
    image::imageops::replace(&mut photo, &a, 0, 0);
    image::imageops::replace(&mut photo, &b, a.width() as i64, 0);
    let mut jpeg = Vec::new();
    photo
        .write_to(&mut Cursor::new(&mut jpeg), ImageFormat::Jpeg)
        .unwrap();
    (jpeg, a.width() as f32 / photo.width() as f32)
}

fn upload(bytes: &[u8], fields: &[(&str, String)]) -> reqwest::multipart::Form {
    let mut form = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(bytes.to_vec()).file_name("street.jpg"),
    );
    for (name, value) in fields {
        form = form.text(name.to_string(), value.clone());
    }
    form
}

#[tokio::test(flavor = "multi_thread")]
async fn boxing_each_half_of_a_two_product_photo_finds_that_product() {
    let env = TestEnv::new().await;
    let images = ImageServer::start(reference_dir()).await;
    let service = env.start().await;
    let mut items = Vec::new();
    for i in 0..3 {
        items.push(json!({"url": images.url(&format!("/files/allstar-sneakers.jpg?v={i}")), "category": "shoes", "external_id": format!("shoe-{i}")}));
        items.push(json!({"url": images.url(&format!("/files/skimage_coffee.png?v={i}")), "category": "cups", "external_id": format!("cup-{i}")}));
        items.push(json!({"url": images.url(&format!("/files/skimage_chelsea.png?v={i}")), "category": "cats", "external_id": format!("cat-{i}")}));
    }
    let ids = service.submit_urls(Value::Array(items)).await;
    let jobs = service.wait_jobs(&ids, LIMIT).await;
    assert!(jobs.iter().all(|j| j["status"] == "succeeded"), "{jobs:?}");

    let (photo, split) = side_by_side("allstar-sneakers.jpg", "skimage_coffee.png");
    for (region, category, prefix) in [
        (format!("0,0,{split},1"), "shoes", "shoe-"),
        (format!("{split},0,{},1", 1.0 - split), "cups", "cup-"),
    ] {
        let (status, body) = service
            .post_multipart("/v1/search", upload(&photo, &[("box", region.clone())]))
            .await;
        assert_eq!(status, 200, "{region}: {body}");
        assert_eq!(body["prediction"]["category"], category, "{region}: {body}");
        let top = &body["results"][0];
        assert!(
            top["external_id"].as_str().unwrap().starts_with(prefix),
            "{region}: the boxed product is the top result: {body}"
        );
        assert_eq!(
            body["query"]["box"].as_array().map(Vec::len),
            Some(4),
            "{body}"
        );
    }
    // The same box in a JSON search by URL, as numbers.
    let (status, body) = service
        .post_json(
            "/v1/search",
            &json!({"url": images.url("/files/allstar-sneakers.jpg?v=9"), "box": [0.1, 0.1, 0.8, 0.8]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["prediction"]["category"], "shoes", "{body}");

    // Refused boxes, with their codes.
    for (fields, code) in [
        (vec![("box", "0,0,1".to_string())], "invalid_box"),
        (vec![("box", "0.8,0,0.5,1".to_string())], "invalid_box"),
        (vec![("box", "0,0,0.01,0.01".to_string())], "box_too_small"),
        (
            vec![
                ("box", "0,0,0.5,1".to_string()),
                ("add", "true".to_string()),
            ],
            "invalid_box",
        ),
    ] {
        let (status, body) = service
            .post_multipart("/v1/search", upload(&photo, &fields))
            .await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (422, Some(code)),
            "{fields:?}: {body}"
        );
    }
}
