//! `lookalike import`, `status` and `jobs` against the real service, and the batch job lookup they use.

mod support;

use std::path::Path;
use std::process::{Command, Output};

use serde_json::{Value, json};
use support::images::ImageServer;
use support::*;

/// Runs the binary; answers the exit code, stdout parsed as JSON when it is, and stderr.
fn lookalike(args: &[&str]) -> (i32, Value, String, Output) {
    let out = Command::new(env!("CARGO_BIN_EXE_lookalike"))
        .args(args)
        .env_remove("LOOKALIKE_API")
        .env_remove("LOOKALIKE_API_KEY")
        .output()
        .unwrap();
    let json = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (out.status.code().unwrap_or(-1), json, stderr, out)
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// shoes: the sneaker photo twice, the sneaker render and half a JPEG (fails in the worker:
/// image_truncated); cups: the coffee cup and a text file named .jpg (refused at submission:
/// unsupported_image_type); cats: Chelsea; plus notes that are not images and are skipped.
fn catalogue(root: &Path) -> std::path::PathBuf {
    let dir = root.join("catalogue");
    for (rel, source) in [
        ("shoes/allstar-a.jpg", "allstar-sneakers.jpg"),
        ("shoes/allstar-b.jpg", "allstar-sneakers.jpg"),
        ("shoes/sneaker.png", "sneakers_01__1.png"),
        ("cups/cup.png", "skimage_coffee.png"),
        ("cats/cat.png", "skimage_chelsea.png"),
    ] {
        std::fs::create_dir_all(dir.join(rel).parent().unwrap()).unwrap();
        std::fs::copy(reference_dir().join(source), dir.join(rel)).unwrap();
    }
    let jpeg = read(&reference_dir().join("allstar-sneakers.jpg"));
    std::fs::write(dir.join("shoes/half.jpg"), &jpeg[..jpeg.len() / 2]).unwrap();
    std::fs::write(dir.join("cups/broken.jpg"), "this is not an image").unwrap();
    std::fs::write(dir.join("cups/notes.txt"), "skipped").unwrap();
    dir
}

async fn job_total(service: &Service) -> u64 {
    let (_, status) = service.get("/v1/status").await;
    status["jobs"]
        .as_object()
        .unwrap()
        .values()
        .map(|n| n.as_u64().unwrap())
        .sum()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_folder_import_reports_its_failures_and_a_second_run_resumes_without_new_jobs() {
    let env = TestEnv::new().await;
    let service = env.start().await;
    let root = tempfile::tempdir().unwrap();
    let dir = catalogue(root.path());
    let dir_arg = dir.to_str().unwrap();
    // Small batches, so there are several in flight and one holds the file the service refuses.
    let args = [
        "import",
        dir_arg,
        "--api",
        &service.base,
        "--json",
        "--batch-files",
        "3",
        "--concurrency",
        "2",
    ];

    let (code, summary, stderr, _) = lookalike(&args);
    assert_eq!(
        code,
        1,
        "some failed: {summary:#}\n{stderr}\n{}",
        service.log()
    );
    assert_eq!(summary["total"], 7, "{summary:#}");
    assert_eq!(summary["submitted"], 7);
    assert_eq!(summary["new_jobs"], 6, "the refused file got no job");
    assert_eq!(summary["replayed"], 0);
    assert_eq!(summary["succeeded"], 5, "{summary:#}");
    assert_eq!(summary["failed"], 2);
    assert_eq!(
        summary["errors"],
        json!({"image_truncated": 1, "unsupported_image_type": 1})
    );
    assert_eq!(summary["unfinished"], 0);
    assert!(
        stderr.contains("import: 7/7 submitted, 5 succeeded, 2 failed"),
        "{stderr}"
    );

    // The failures file, beside the folder, is the input format plus the error.
    let failures_path = root.path().join("catalogue.failures.jsonl");
    assert_eq!(summary["failures_file"], failures_path.to_str().unwrap());
    let text = std::fs::read_to_string(&failures_path).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert_eq!(
        lines[0]["file"],
        dir.join("cups/broken.jpg").to_str().unwrap()
    );
    assert_eq!(lines[0]["external_id"], "cups/broken.jpg");
    assert_eq!(lines[0]["category"], "cups");
    assert_eq!(lines[0]["error"]["code"], "unsupported_image_type");
    assert_eq!(lines[0]["error"]["job_id"], Value::Null);
    assert_eq!(lines[1]["external_id"], "shoes/half.jpg");
    assert_eq!(lines[1]["error"]["code"], "image_truncated");
    assert!(lines[1]["error"]["job_id"].is_string());

    let (_, status) = service.get("/v1/status").await;
    assert_eq!(status["items"], 5, "{status}");
    assert_eq!(status["jobs"]["succeeded"], 5, "{status}");
    assert_eq!(status["jobs"]["failed"], 1, "{status}");
    let (_, cats) = service.get("/v1/categories").await;
    let shoes = cats["categories"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "shoes")
        .unwrap();
    assert_eq!(shoes["items"], 3, "{cats}");

    // Again: every batch is replayed by its idempotency key; not one new job.
    let (code, again, stderr, _) = lookalike(&args);
    assert_eq!(code, 1, "{again:#}\n{stderr}");
    assert_eq!(again["new_jobs"], 0, "{again:#}");
    assert_eq!(again["replayed"], 6);
    assert_eq!(again["succeeded"], 5);
    assert_eq!(again["errors"], summary["errors"]);
    assert_eq!(job_total(&service).await, 6);

    // The failures file is a source of its own: its entries are submitted again (the truncated
    // file gets a new job, which fails the same way) and its own failures file says so.
    let (code, retry, stderr, _) = lookalike(&[
        "import",
        failures_path.to_str().unwrap(),
        "--api",
        &service.base,
        "--json",
    ]);
    assert_eq!(code, 1, "{retry:#}\n{stderr}");
    assert_eq!(retry["total"], 2);
    assert_eq!(retry["new_jobs"], 1, "{retry:#}");
    assert_eq!(retry["errors"], summary["errors"]);
    assert_eq!(job_total(&service).await, 7);
    assert!(
        root.path()
            .join("catalogue.failures.jsonl.failures.jsonl")
            .exists()
    );

    // Human output: counts by outcome and error code.
    let (code, _, _, out) = lookalike(&[
        "import",
        dir_arg,
        "--api",
        &service.base,
        "--batch-files",
        "3",
    ]);
    assert_eq!(code, 1);
    let text = stdout(&out);
    assert!(
        text.contains("(0 new jobs, 6 replayed from an earlier run)"),
        "{text}"
    );
    assert!(text.contains("succeeded       5"), "{text}");
    assert!(text.contains("image_truncated"), "{text}");
    assert!(text.contains("catalogue.failures.jsonl"), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_csv_of_urls_imports_with_metadata_and_status_and_jobs_show_the_outcome() {
    let mut env = TestEnv::new().await;
    // A declared number field: its CSV cells go as numbers.
    env.set("FIELDS__PRICE", "number");
    let images = ImageServer::start(reference_dir()).await;
    let service = env.start().await;
    let root = tempfile::tempdir().unwrap();
    let csv = root.path().join("feed.csv");
    std::fs::write(
        &csv,
        format!(
            "url,external_id,category,brand,price\n\
             {},sku-1,shoes,Converse,59.90\n\
             {},sku-2,cups,,\n\
             {},sku-3,shoes,Nobody,12\n",
            images.url("/files/allstar-sneakers.jpg"),
            images.url("/files/skimage_coffee.png"),
            images.url("/missing.jpg"),
        ),
    )
    .unwrap();
    let csv_arg = csv.to_str().unwrap();

    // Submitted without waiting: the command ends once every batch is taken.
    let (code, first, stderr, _) = lookalike(&[
        "import",
        csv_arg,
        "--api",
        &service.base,
        "--json",
        "--no-wait",
    ]);
    assert_eq!(code, 0, "{first:#}\n{stderr}");
    assert_eq!(first["submitted"], 3);
    assert_eq!(first["new_jobs"], 3);
    assert_eq!(first["waited"], false);
    assert_eq!(first["failures_file"], Value::Null);

    // The same import, waiting this time: it replays the batch and follows its jobs.
    let (code, summary, stderr, _) =
        lookalike(&["import", csv_arg, "--api", &service.base, "--json"]);
    assert_eq!(code, 1, "{summary:#}\n{stderr}\n{}", service.log());
    assert_eq!(summary["replayed"], 3, "{summary:#}");
    assert_eq!(summary["new_jobs"], 0);
    assert_eq!(summary["succeeded"], 2);
    assert_eq!(summary["errors"], json!({"fetch_http_status": 1}));
    let failures = std::fs::read_to_string(root.path().join("feed.csv.failures.jsonl")).unwrap();
    let line: Value = serde_json::from_str(failures.trim()).unwrap();
    assert_eq!(line["url"], images.url("/missing.jpg"));
    assert_eq!(line["metadata"], json!({"brand": "Nobody", "price": 12}));
    assert_eq!(line["error"]["code"], "fetch_http_status");

    // Other columns became metadata: text, but the declared number a number (filters find it).
    let (_, page) = service.get("/v1/items?category=shoes&price_lt=60").await;
    assert_eq!(page["total"], 1, "{page}");
    assert_eq!(page["items"][0]["external_id"], "sku-1");
    assert_eq!(
        page["items"][0]["metadata"],
        json!({"brand": "Converse", "price": 59.9})
    );

    let (code, status, stderr, _) = lookalike(&["status", "--api", &service.base, "--json"]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(status["jobs"]["succeeded"], 2, "{status:#}");
    assert_eq!(status["jobs"]["failed"], 1);
    assert_eq!(status["jobs"]["queued"], 0);
    assert_eq!(status["items"], 2);
    assert_eq!(status["queue"]["available"], true, "{status:#}");
    assert_eq!(status["queue"]["ready"], 0);
    assert_eq!(status["queue"]["dead"], 0);
    assert!(
        status["queue"]["consumers"].as_u64().unwrap() >= 1,
        "the worker consumes"
    );
    assert_eq!(status["uncategorised"], 0);
    let mut categories: Vec<(String, u64)> = status["categories"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap().to_string(),
                c["items"].as_u64().unwrap(),
            )
        })
        .collect();
    categories.sort();
    assert_eq!(
        categories,
        [("cups".to_string(), 1), ("shoes".to_string(), 1)]
    );
    let (code, _, _, out) = lookalike(&["status", "--api", &service.base]);
    assert_eq!(code, 0);
    assert!(
        stdout(&out).contains("jobs    0 queued, 0 processing, 2 succeeded, 1 failed"),
        "{}",
        stdout(&out)
    );

    // Failed jobs: exit code 1 says there are some.
    let (code, failed, _, _) = lookalike(&["jobs", "--failed", "--api", &service.base, "--json"]);
    assert_eq!(code, 1);
    let jobs = failed["jobs"].as_array().unwrap();
    assert_eq!(jobs.len(), 1, "{failed:#}");
    assert_eq!(jobs[0]["external_id"], "sku-3");
    assert_eq!(jobs[0]["error"]["code"], "fetch_http_status");
    let failed_id = jobs[0]["id"].as_str().unwrap().to_string();
    let (code, _, _, out) = lookalike(&["jobs", "--failed", "--api", &service.base]);
    assert_eq!(code, 1);
    assert!(
        stdout(&out).contains(&format!("{failed_id}  failed")),
        "{}",
        stdout(&out)
    );
    assert!(stdout(&out).contains("fetch_http_status"));
    let (code, recent, _, _) = lookalike(&[
        "jobs",
        "--status",
        "succeeded",
        "--limit",
        "1",
        "--api",
        &service.base,
        "--json",
    ]);
    assert_eq!(code, 0);
    assert_eq!(recent["jobs"].as_array().unwrap().len(), 1);
    // Named jobs; one that does not exist is a usage error.
    let ok_id = recent["jobs"][0]["id"].as_str().unwrap();
    let (code, named, _, _) =
        lookalike(&["jobs", ok_id, &failed_id, "--api", &service.base, "--json"]);
    assert_eq!(code, 1);
    assert_eq!(named["jobs"][0]["id"], ok_id);
    assert_eq!(named["jobs"][1]["id"], failed_id.as_str());
    let absent = uuid::Uuid::now_v7().to_string();
    let (code, _, stderr, _) = lookalike(&["jobs", ok_id, &absent, "--api", &service.base]);
    assert_eq!(code, 2);
    assert!(stderr.contains(&format!("no job {absent}")), "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn jobs_are_looked_up_many_at_a_time_with_validation_errors_as_json() {
    let env = TestEnv::new().await;
    let images = ImageServer::start(reference_dir()).await;
    let service = env.start().await;
    let ids = service
        .submit_urls(json!([
            {"url": images.url("/files/skimage_coffee.png")},
            {"url": images.url("/missing.jpg")},
            {"url": images.url("/files/skimage_chelsea.png")},
        ]))
        .await;
    service
        .wait_jobs(&ids, std::time::Duration::from_secs(60))
        .await;
    let absent = uuid::Uuid::now_v7().to_string();

    // In the order asked, repeats once, unknown ids listed apart.
    let asked = format!("{},{}, {},{},{}", ids[2], ids[0], ids[1], absent, ids[0]);
    let (status, body) = service.get(&format!("/v1/jobs?ids={asked}")).await;
    assert_eq!(status, 200, "{body}");
    let got: Vec<&str> = body["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap())
        .collect();
    assert_eq!(got, [&ids[2], &ids[0], &ids[1]]);
    assert_eq!(body["missing"], json!([absent]));
    assert_eq!(body["jobs"][2]["error"]["code"], "fetch_http_status");

    // With a status filter.
    let (status, body) = service
        .get(&format!("/v1/jobs?ids={asked}&status=failed"))
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["jobs"].as_array().unwrap().len(), 1);
    assert_eq!(body["jobs"][0]["id"], ids[1].as_str());

    // 500 ids fit in one request; 501 do not.
    let many: Vec<String> = (0..500).map(|_| uuid::Uuid::now_v7().to_string()).collect();
    let (status, body) = service
        .get(&format!("/v1/jobs?ids={}", many.join(",")))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["missing"].as_array().unwrap().len(), 500);
    let (status, body) = service
        .get(&format!("/v1/jobs?ids={},{}", many.join(","), ids[0]))
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("too_many_ids")),
        "{body}"
    );

    for (query, code) in [
        (format!("ids={},not-a-uuid", ids[0]), "invalid_id"),
        ("ids=,".to_string(), "invalid_id"),
        (format!("ids={}&status=done", ids[0]), "invalid_status"),
    ] {
        let (status, body) = service.get(&format!("/v1/jobs?{query}")).await;
        assert_eq!(status, 400, "{query}: {body}");
        assert_eq!(body["error"]["code"], code, "{query}: {body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
    }

    // The listing without ids is unchanged.
    let (status, body) = service.get("/v1/jobs?status=failed&limit=5").await;
    assert_eq!(status, 200);
    assert_eq!(body["jobs"].as_array().unwrap().len(), 1, "{body}");
}

#[test]
fn client_commands_exit_2_when_the_source_is_malformed_or_the_service_is_unreachable() {
    let root = tempfile::tempdir().unwrap();
    let nowhere = format!("http://127.0.0.1:{}", free_port());

    let csv = root.path().join("feed.csv");
    std::fs::write(
        &csv,
        "url,category\nhttps://shop.example/a.jpg,shoes\n,bags\n",
    )
    .unwrap();
    let (code, _, stderr, _) = lookalike(&["import", csv.to_str().unwrap(), "--api", &nowhere]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("line 3"),
        "the source is checked before the service: {stderr}"
    );

    std::fs::write(&csv, "url,category\nhttps://shop.example/a.jpg,shoes\n").unwrap();
    let (code, _, stderr, _) = lookalike(&["import", csv.to_str().unwrap(), "--api", &nowhere]);
    assert_eq!(code, 2);
    assert!(stderr.contains("unreachable"), "{stderr}");
    assert!(!root.path().join("feed.csv.failures.jsonl").exists());

    for args in [vec!["status"], vec!["jobs", "--failed"]] {
        let mut args = args.clone();
        args.extend(["--api", nowhere.as_str()]);
        let (code, _, stderr, _) = lookalike(&args);
        assert_eq!(code, 2, "{args:?}: {stderr}");
        assert!(stderr.contains("unreachable"), "{stderr}");
    }
    let (code, _, _, _) = lookalike(&["import", "--no-such-flag", csv.to_str().unwrap()]);
    assert_eq!(code, 2);
    let (code, _, _, out) = lookalike(&["import", "--help"]);
    assert_eq!(code, 0);
    assert!(stdout(&out).contains("Exit codes"), "{}", stdout(&out));
}
