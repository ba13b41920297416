//! The broker and the database restart under a running service, in the middle of a batch. After each,
//! every job ends `succeeded` exactly once (no item or vector lost or duplicated), submissions made
//! while a dependency was away were answered 503 quickly with a code (and their jobs marked failed with
//! that reason), and the service works again without being restarted itself.
//!
//! These tests stop the machine's shared RabbitMQ and Postgres, so they hold one lock and run one at a
//! time; `cargo test` runs test binaries one after another, so no other binary is affected.

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;
use support::batch::*;
use support::images::ImageServer;
use support::*;

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// How long a submission may take to be refused while a dependency is away: the publish timeout
/// (5 s by default) bounds it; a hang would be far longer.
const QUICK: Duration = Duration::from_secs(7);

fn run(program: &str, args: &[&str]) {
    let status = Command::new(program)
        .args(args)
        .status()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(status.success(), "{program} {args:?} failed: {status}");
}

fn postgres_version() -> String {
    let mut versions: Vec<String> = std::fs::read_dir("/etc/postgresql")
        .expect("a Debian Postgres cluster (/etc/postgresql)")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    versions.sort_by_key(|v| v.parse::<u32>().unwrap_or(0));
    versions.pop().expect("a Postgres version")
}

/// A dependency taken down for the length of a test; brought back up even when the test panics.
struct Outage {
    start: fn(),
    up: bool,
}

impl Outage {
    fn broker() -> Outage {
        run("rabbitmqctl", &["-q", "stop_app"]);
        Outage {
            start: || run("rabbitmqctl", &["-q", "start_app"]),
            up: false,
        }
    }

    fn database() -> Outage {
        let v = postgres_version();
        run(
            "pg_ctlcluster",
            &[
                "--skip-systemctl-redirect",
                &v,
                "main",
                "stop",
                "-m",
                "fast",
            ],
        );
        Outage {
            start: || {
                let v = postgres_version();
                run(
                    "pg_ctlcluster",
                    &["--skip-systemctl-redirect", &v, "main", "start"],
                )
            },
            up: false,
        }
    }

    fn end(&mut self) {
        if !self.up {
            self.up = true;
            (self.start)();
        }
    }
}

impl Drop for Outage {
    fn drop(&mut self) {
        self.end();
    }
}

/// While a dependency is away, a submission is refused fast with the given code, and readiness names
/// the dependency.
async fn assert_refused_quickly(service: &Service, images: &ImageServer, code: &str, check: &str) {
    let started = Instant::now();
    let body = json!({"items": [{"url": images.url("/files/skimage_coffee.png?during-outage")}]});
    let (status, answer) = service.post_json("/v1/images", &body).await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (503, Some(code)),
        "{answer}"
    );
    assert!(
        started.elapsed() < QUICK,
        "refused after {:?}",
        started.elapsed()
    );
    let (status, ready) = service.get("/readyz").await;
    assert_eq!(status, 503, "{ready}");
    assert!(
        ready["checks"][check]
            .as_str()
            .unwrap()
            .starts_with("error"),
        "{ready}"
    );
}

/// After the outage a new job goes all the way through: the API and the worker reconnected by
/// themselves.
async fn assert_works_again(service: &Service, images: &ImageServer) {
    let started = Instant::now();
    let ids = loop {
        let body =
            json!({"items": [{"url": images.url("/files/allstar-sneakers.jpg?after-outage")}]});
        let (status, answer) = service.post_json("/v1/images", &body).await;
        if status == 202 {
            break job_ids(&answer);
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "still refused a minute after the restart: {answer}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let job = service.wait_job(&ids[0], Duration::from_secs(120)).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    let (status, ready) = service.get("/readyz").await;
    assert_eq!(status, 200, "{ready}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_broker_restart_mid_batch_loses_and_duplicates_nothing() {
    let _serial = SERIAL.lock().await;
    let mut env = TestEnv::new().await;
    env.set("WORKER__REUSE_IDENTICAL_IMAGES", false);
    let images = ImageServer::start(reference_dir()).await;
    let service = env.start().await;
    let ids = submit_batch(&service, &images, 30).await;
    wait_for_progress(&service, 3).await;

    let mut outage = Outage::broker();
    assert_refused_quickly(&service, &images, "queue_unavailable", "queue").await;
    // Let in-flight jobs try to ack and retry against a missing broker for a while.
    tokio::time::sleep(Duration::from_secs(3)).await;
    outage.end();

    assert_all_once(&env, &service, &ids).await;
    let log = service.log();
    assert!(
        log.contains("reconnect"),
        "the worker says it reconnected:\n{log}"
    );
    assert_works_again(&service, &images).await;
    // The one submission refused during the outage is accounted for: failed, with the reason.
    let (_, failed) = service.get("/v1/jobs?status=failed").await;
    let failed = failed["jobs"].as_array().unwrap();
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0]["error"]["code"], "queue_unavailable");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_database_restart_mid_batch_loses_and_duplicates_nothing() {
    let _serial = SERIAL.lock().await;
    let mut env = TestEnv::new().await;
    env.set("WORKER__REUSE_IDENTICAL_IMAGES", false)
        // Short backoff: jobs that met the outage come back soon after the database does.
        .set("QUEUE__RETRY_BASE_MS", 500)
        .set("QUEUE__RETRY_MAX_MS", 4000);
    let images = ImageServer::start(reference_dir()).await;
    let service = env.start().await;
    let ids = submit_batch(&service, &images, 30).await;
    wait_for_progress(&service, 3).await;

    let mut outage = Outage::database();
    assert_refused_quickly(&service, &images, "database_unavailable", "database").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    outage.end();

    assert_all_once(&env, &service, &ids).await;
    assert_works_again(&service, &images).await;
}
