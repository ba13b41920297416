//! API keys, end to end: keys made by `lookalike keys new`, given to the real service through the
//! environment, and every kind of caller: none, unknown, read-only, write-only, both.

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use reqwest::RequestBuilder;
use serde_json::{Value, json};
use support::images::ImageServer;
use support::*;

const LIMIT: Duration = Duration::from_secs(120);

/// A key and its configuration entry, from the real `lookalike keys new`.
struct NewKey {
    key: String,
    entry: String,
}

fn new_key(name: &str, scopes: &str) -> NewKey {
    let out = Command::new(env!("CARGO_BIN_EXE_lookalike"))
        .args(["keys", "new", "--name", name, "--scopes", scopes])
        .env_remove("LOOKALIKE_CONFIG")
        .env_remove("LOOKALIKE_AUTH__KEYS")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let key = text
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("lk_"))
        .unwrap_or_else(|| panic!("no key printed: {text}"))
        .to_string();
    let entry = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("LOOKALIKE_AUTH__KEYS="))
        .unwrap_or_else(|| panic!("no configuration line printed: {text}"))
        .to_string();
    assert!(
        !entry.contains(&key),
        "the configuration holds the hash, not the key"
    );
    NewKey { key, entry }
}

fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("")
}

fn file(name: &str) -> reqwest::multipart::Part {
    reqwest::multipart::Part::bytes(read(&reference_dir().join(name))).file_name(name.to_string())
}

/// Runs a `lookalike` client command against the service with a clean environment.
fn client_command(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_lookalike"))
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn keys_and_their_scopes_guard_every_endpoint_but_health_and_the_page() {
    let reader = new_key("catalogue-page", "read");
    let writer = new_key("feed", "write");
    let both = new_key("ops", "read,write");
    let mut env = TestEnv::new().await;
    env.set("AUTH__ENABLED", "true")
        .set(
            "AUTH__KEYS",
            format!("{},{},{}", reader.entry, writer.entry, both.entry),
        )
        // JSON lines carry the request span's fields, the key's name among them.
        .set("LOG__FORMAT", "json");
    let images = ImageServer::start(reference_dir()).await;
    let service = env.start().await; // waits on /readyz, which needs no key
    let http = &service.client;
    let url = |path: &str| service.url(path);
    let send = |request: RequestBuilder| service.send(request);

    // Health checks and the page (with every file it loads) are open.
    for path in ["/healthz", "/readyz"] {
        let (status, body) = service.get(path).await;
        assert_eq!(status, 200, "{path}: {body}");
    }
    let page = http.get(url("/")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    let assets: Vec<&str> = html
        .split(['"', '\''])
        .filter(|s| s.starts_with('/') && s.len() > 1)
        .collect();
    assert!(
        assets.contains(&"/app.js") && assets.contains(&"/style.css"),
        "{assets:?}"
    );
    for asset in assets {
        let r = http.get(url(asset)).send().await.unwrap();
        assert_eq!(r.status(), 200, "the page's {asset} needs no key");
    }

    // No key: 401 with the Bearer challenge, for reads and writes alike, unknown paths included.
    let r = http.get(url("/v1/status")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let challenge = r.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(challenge.starts_with("Bearer"), "{challenge}");
    let body: Value = r.json().await.unwrap();
    assert_eq!(code(&body), "unauthorized", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Authorization: Bearer")
    );
    let submit =
        json!({"items": [{"url": images.url("/files/skimage_coffee.png"), "category": "cups"}]});
    let (status, body) = send(http.post(url("/v1/images")).json(&submit)).await;
    assert_eq!((status, code(&body)), (401, "unauthorized"), "{body}");
    let (status, body) = service.get("/v1/no-such-thing").await;
    assert_eq!((status, code(&body)), (401, "unauthorized"), "{body}");
    // A proxy's Basic credentials are not a key.
    let (status, body) = send(http.get(url("/v1/jobs")).basic_auth("u", Some("p"))).await;
    assert_eq!((status, code(&body)), (401, "unauthorized"), "{body}");

    // Unknown key, or the hash given as if it were the key: 401 invalid_api_key.
    let hash = reader.entry.split(':').nth(1).unwrap().to_string();
    for wrong in [
        "lk_0000",
        hash.as_str(),
        &reader.key[..reader.key.len() - 1],
    ] {
        let r = http
            .get(url("/v1/status"))
            .bearer_auth(wrong)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
        assert!(
            r.headers()["www-authenticate"]
                .to_str()
                .unwrap()
                .contains("invalid_token")
        );
        let body: Value = r.json().await.unwrap();
        assert_eq!(code(&body), "invalid_api_key", "{body}");
    }

    // The read key reads, in either header...
    for path in [
        "/v1/status",
        "/v1/jobs",
        "/v1/categories",
        "/v1/items?category=cups",
    ] {
        let (status, body) = send(http.get(url(path)).bearer_auth(&reader.key)).await;
        assert_eq!(status, 200, "{path}: {body}");
    }
    let (status, body) = send(http.get(url("/v1/status")).header("x-api-key", &reader.key)).await;
    assert_eq!(status, 200, "{body}");
    // ...and is refused every change, with the scope named.
    let some_id = "0193a4c2-0000-7000-8000-000000000000";
    for request in [
        http.post(url("/v1/images")).json(&submit),
        http.delete(url(&format!("/v1/items/{some_id}"))),
        http.post(url(&format!("/v1/jobs/{some_id}/retry"))),
        http.post(url("/v1/reclassify")),
    ] {
        let (status, body) = send(request.bearer_auth(&reader.key)).await;
        assert_eq!((status, code(&body)), (403, "forbidden_scope"), "{body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("`write`") && message.contains("catalogue-page"),
            "{message}"
        );
    }

    // The write key submits, but cannot read what it submitted: the scopes are independent.
    let (status, body) = send(
        http.post(url("/v1/images"))
            .bearer_auth(&writer.key)
            .json(&submit),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    let job_id = job_ids(&body).remove(0);
    let (status, body) = send(
        http.get(url(&format!("/v1/jobs/{job_id}")))
            .bearer_auth(&writer.key),
    )
    .await;
    assert_eq!((status, code(&body)), (403, "forbidden_scope"), "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("`read`")
    );

    // The read key follows the job, and reads the item and its thumbnail.
    let start = Instant::now();
    let job = loop {
        let (status, job) = send(
            http.get(url(&format!("/v1/jobs/{job_id}")))
                .bearer_auth(&reader.key),
        )
        .await;
        assert_eq!(status, 200, "{job}");
        if matches!(job["status"].as_str(), Some("succeeded" | "failed")) {
            break job;
        }
        assert!(
            start.elapsed() < LIMIT,
            "job not finished: {job}\n{}",
            service.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(job["status"], "succeeded", "{job}");
    let item = job["item_id"].as_str().unwrap().to_string();
    let thumb = url(&format!("/v1/items/{item}/thumbnail"));
    assert_eq!(http.get(&thumb).send().await.unwrap().status(), 401);
    let r = http
        .get(&thumb)
        .bearer_auth(&reader.key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "image/jpeg");
    let cache = r.headers()["cache-control"].to_str().unwrap();
    assert!(
        cache.starts_with("private"),
        "no shared cache may keep it: {cache}"
    );
    let (status, body) = send(
        http.get(url(&format!("/v1/items/{item}/similar")))
            .bearer_auth(&reader.key),
    )
    .await;
    assert_eq!(status, 200, "{body}");

    // Search is a read; with add=true it also stores the image, which needs write as well.
    let search = |add: bool| {
        let mut form = reqwest::multipart::Form::new().part("file", file("skimage_coffee.png"));
        if add {
            form = form.text("add", "true");
        }
        http.post(url("/v1/search")).multipart(form)
    };
    let (status, body) = send(search(false).bearer_auth(&reader.key)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["results"][0]["item_id"], item.as_str(), "{body}");
    let (status, body) = send(search(false).bearer_auth(&writer.key)).await;
    assert_eq!((status, code(&body)), (403, "forbidden_scope"), "{body}");
    let (status, body) = send(search(true).bearer_auth(&reader.key)).await;
    assert_eq!((status, code(&body)), (403, "forbidden_scope"), "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("add=true"),
        "{body}"
    );
    let (status, body) = send(search(true).bearer_auth(&both.key)).await;
    assert_eq!(status, 200, "{body}");
    let added = body["added"]["item_id"]
        .as_str()
        .expect("the image was added")
        .to_string();
    let json_add = json!({"url": images.url("/files/skimage_coffee.png?as=json"), "add": true});
    let (status, body) = send(
        http.post(url("/v1/search"))
            .bearer_auth(&reader.key)
            .json(&json_add),
    )
    .await;
    assert_eq!((status, code(&body)), (403, "forbidden_scope"), "{body}");

    // The write key deletes.
    let (status, body) = send(
        http.delete(url(&format!("/v1/items/{added}")))
            .bearer_auth(&writer.key),
    )
    .await;
    assert_eq!(status, 204, "{body}");

    // The command-line clients send the key from --api-key or LOOKALIKE_API_KEY.
    let base = service.base.as_str();
    let out = client_command(&["reclassify", "--api", base], &[]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("unauthorized"));
    let out = client_command(
        &["reclassify", "--api", base, "--api-key", &writer.key],
        &[],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = client_command(
        &["reclassify", "--api", base],
        &[("LOOKALIKE_API_KEY", both.key.as_str())],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let folder = tempfile::tempdir().unwrap();
    for (category, name) in [
        ("cups", "skimage_coffee.png"),
        ("cats", "skimage_chelsea.png"),
    ] {
        std::fs::create_dir_all(folder.path().join(category)).unwrap();
        for copy in ["a", "b"] {
            std::fs::copy(
                reference_dir().join(name),
                folder.path().join(category).join(format!("{copy}-{name}")),
            )
            .unwrap();
        }
    }
    let dir = folder.path().to_str().unwrap();
    let out = client_command(
        &[
            "eval",
            dir,
            "--api",
            base,
            "--json",
            "--api-key",
            &reader.key,
        ],
        &[],
    );
    assert!(
        !out.status.success(),
        "eval uploads, which a read key may not"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("forbidden_scope") && stderr.contains("LOOKALIKE_API_KEY"),
        "{stderr}"
    );
    let out = client_command(
        &["eval", dir, "--api", base, "--json"],
        &[("LOOKALIKE_API_KEY", both.key.as_str())],
    );
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        service.log()
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["retrieval_any_category"]["searches"], 4, "{report}");

    // The log names the keys, never shows them.
    let log = service.log();
    assert!(log.contains(r#""api_key":"catalogue-page""#), "{log}");
    assert!(log.contains("request refused"), "{log}");
    for key in [&reader.key, &writer.key, &both.key] {
        assert!(!log.contains(key.as_str()), "a key leaked into the log");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn serve_refuses_to_start_when_keys_are_required_and_none_is_configured() {
    let mut env = TestEnv::new().await;
    env.set("AUTH__ENABLED", "true");
    let mut service = env.spawn();
    let start = Instant::now();
    let status = loop {
        if let Some(status) = service.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "still running without keys:\n{}",
            service.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(!status.success());
    let log = service.log();
    assert!(log.contains("lookalike keys new"), "{log}");
    assert!(log.contains("LOOKALIKE_AUTH__ENABLED=false"), "{log}");
    assert!(
        reqwest::get(service.url("/healthz")).await.is_err(),
        "nothing listens"
    );

    // Keys turned off for local development: it starts, and answers without a key.
    env.set("AUTH__ENABLED", "false");
    service = env.start().await;
    let (status, body) = service.get("/v1/status").await;
    assert_eq!(status, 200, "{body}");
    assert!(service.log().contains("API keys are off"));
}
