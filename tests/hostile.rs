//! URLs that point inside our network are refused before a single request reaches them.

mod support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::json;
use support::images::ImageServer;
use support::*;

const LIMIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread")]
async fn internal_addresses_are_refused_without_any_request_reaching_them() {
    let mut env = TestEnv::new().await;
    env.set("FETCH__ALLOW_CIDRS", "[]")
        .set("FETCH__ALLOW_HOSTS", r#"["localhost"]"#);
    let images = ImageServer::start(reference_dir()).await;
    let service = env.start().await;
    let port = images.addr.port();
    let cases = [
        format!("http://127.0.0.1:{port}/files/allstar-sneakers.jpg"),
        format!("http://2130706433:{port}/files/allstar-sneakers.jpg"), // 127.0.0.1 spelled as a number
        format!("http://[::ffff:127.0.0.1]:{port}/files/allstar-sneakers.jpg"),
        "http://169.254.169.254/latest/meta-data/".to_string(),
        "http://10.0.0.1/a.jpg".to_string(),
        // A trusted host redirecting to an internal address: the redirect is checked too.
        format!(
            "http://localhost:{port}/redirect?to=http://127.0.0.1:{port}/files/skimage_coffee.png"
        ),
    ];
    let items: Vec<_> = cases.iter().map(|u| json!({"url": u})).collect();
    let ids = service.submit_urls(serde_json::Value::Array(items)).await;
    for (url, job) in cases.iter().zip(service.wait_jobs(&ids, LIMIT).await) {
        assert_eq!(job["status"], "failed", "{url}: {job}");
        assert_eq!(job["error"]["code"], "url_forbidden", "{url}: {job}");
        assert_eq!(job["attempts"], 1, "refusals are permanent: {job}");
    }
    assert_eq!(
        images.requests.load(Ordering::Relaxed),
        0,
        "no image was requested from a forbidden address"
    );

    // The trusted host itself works.
    let ok = service
        .submit_urls(json!([{"url": format!("http://localhost:{port}/files/skimage_coffee.png")}]))
        .await;
    assert_eq!(service.wait_job(&ok[0], LIMIT).await["status"], "succeeded");

    // The same guard protects search by URL.
    let (status, body) = service
        .post_json(
            "/v1/search",
            &json!({"url": format!("http://127.0.0.1:{port}/files/skimage_coffee.png")}),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (422, Some("url_forbidden")),
        "{body}"
    );
}
