//! The README's newcomer walkthrough, as written: import the Vendure photos with `lookalike import`,
//! look at the status, open the page, search with a photo of a shoe.
//!
//! Needs `.lookalike/datasets/vendure` (`scripts/fetch-datasets.sh vendure`, which `scripts/test.sh`
//! runs). Without it the test says so and passes, unless `LOOKALIKE_REQUIRE_DATASETS` is set, as the
//! test command sets it.

mod support;

use std::process::Command;

use serde_json::Value;
use support::*;

#[tokio::test(flavor = "multi_thread")]
async fn the_newcomer_walkthrough_imports_vendure_and_finds_shoes_for_a_shoe() {
    let vendure = repo_root().join(".lookalike/datasets/vendure");
    if !vendure.join("footwear").is_dir() {
        assert!(
            std::env::var_os("LOOKALIKE_REQUIRE_DATASETS").is_none(),
            "{} is missing: run scripts/fetch-datasets.sh vendure",
            vendure.display()
        );
        eprintln!(
            "skipped: {} is missing (scripts/fetch-datasets.sh vendure)",
            vendure.display()
        );
        return;
    }
    let env = TestEnv::new().await;
    let service = env.start().await;
    // The import writes its failures file beside the source: import a copy, so the repository's
    // dataset folder stays as it is.
    let copy = tempfile::tempdir().unwrap();
    let source = copy.path().join("vendure");
    copy_dir(&vendure, &source);

    // `lookalike import .lookalike/datasets/vendure`
    let out = Command::new(env!("CARGO_BIN_EXE_lookalike"))
        .arg("import")
        .arg(&source)
        .env("LOOKALIKE_API", &service.base)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "import failed ({:?}):\n{stdout}\n{stderr}\n{}",
        out.status.code(),
        service.log()
    );
    assert!(stdout.contains("54 entries"), "{stdout}");
    assert!(stdout.contains("succeeded      54"), "{stdout}");
    assert!(
        stderr.contains("import: 54/54 submitted, 54 succeeded, 0 failed"),
        "{stderr}"
    );

    // `lookalike status`
    let out = Command::new(env!("CARGO_BIN_EXE_lookalike"))
        .args(["status", "--json"])
        .env("LOOKALIKE_API", &service.base)
        .output()
        .unwrap();
    assert!(out.status.success());
    let status: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["items"], 54, "{status:#}");
    let footwear = status["categories"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "footwear")
        .cloned()
        .unwrap_or_else(|| panic!("no footwear category: {status:#}"));
    assert_eq!(footwear["items"], 6);

    // The page.
    let page = service.client.get(service.url("/")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("<html"));

    // `curl -F file=@allstar-sneakers.jpg localhost:8080/v1/search`: Vendure holds this very photo
    // among its shoes.
    let photo = read(&reference_dir().join("allstar-sneakers.jpg"));
    let form = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(photo).file_name("allstar-sneakers.jpg"),
    );
    let (code, body) = service.post_multipart("/v1/search", form).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["prediction"]["category"], "footwear", "{body:#}");
    let results = body["results"].as_array().unwrap();
    assert!(results.len() >= 3, "{body:#}");
    assert!(
        results[0]["score"].as_f64().unwrap() > 0.99,
        "the same photo first: {body:#}"
    );
    // The nearest results are shoes, whether or not the search widened to other categories.
    for r in &results[..3] {
        assert_eq!(r["category"], "footwear", "{body:#}");
    }
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}
