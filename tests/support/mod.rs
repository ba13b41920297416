//! Test harness: every test gets its own Postgres database, its own RabbitMQ queue names, its own index
//! directory and port, and runs the real `lookalike` binary with the real model.
#![allow(dead_code)]

pub mod batch;
pub mod images;
pub mod qdrant;
pub mod schema;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use sqlx::{Connection, Executor, PgConnection};
use uuid::Uuid;

pub const PG_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
pub const AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The reference images and their expected embeddings: `tests/fixtures/reference` in the repository
/// (or `$LOOKALIKE_REFERENCE_DIR`).
pub fn reference_dir() -> PathBuf {
    std::env::var_os("LOOKALIKE_REFERENCE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("tests/fixtures/reference"))
}

/// How close the service's vectors must be to the reference files (both computed exactly): 0.99 where
/// ONNX Runtime computes the int8 model exactly, 0.985 on x86 CPUs without VNNI, which load its uint8
/// twin (`crates/vision/tests/parity.rs` says why).
pub fn parity_floor() -> f32 {
    if lookalike_vision::int8_is_exact_here() {
        0.99
    } else {
        0.985
    }
}

pub fn asset(rel: &str) -> PathBuf {
    let assets = std::env::var_os("LOOKALIKE_ASSETS")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".lookalike"));
    let path = assets.join(rel);
    assert!(
        path.exists(),
        "{} is missing: run scripts/setup.sh first",
        path.display()
    );
    path
}

/// A database, queue prefix and data directory that belong to one test only.
pub struct TestEnv {
    pub db_name: String,
    pub db_url: String,
    pub queue_prefix: String,
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub extra_env: Vec<(String, String)>,
}

impl TestEnv {
    pub async fn new() -> Self {
        let id = Uuid::new_v4().simple().to_string()[..12].to_string();
        let db_name = format!("lookalike_test_{id}");
        let mut admin = PgConnection::connect(PG_ADMIN_URL)
            .await
            .expect("Postgres at 127.0.0.1:5432");
        admin
            .execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {db_name}")))
            .await
            .unwrap();
        TestEnv {
            db_url: format!("postgres://postgres@127.0.0.1:5432/{db_name}"),
            db_name,
            queue_prefix: format!("lookalike-test-{id}"),
            dir: tempfile::tempdir().unwrap(),
            port: free_port(),
            extra_env: Vec::new(),
        }
    }

    /// A test environment whose service keeps its vectors on the test command's Qdrant server
    /// (`QDRANT_URL`), in a collection of its own. `None` only on a developer's partial run without
    /// a server, where the test says it skipped; under the test command or on CI it fails instead
    /// ([`qdrant::shared_url`]).
    pub async fn on_shared_qdrant() -> Option<Self> {
        let url = qdrant::shared_url()?;
        let mut env = TestEnv::new().await;
        let collection = format!("test-{}", env.db_name);
        env.set("INDEX__BACKEND", "qdrant")
            .set("INDEX__URL", &url)
            .set("INDEX__COLLECTION", collection);
        Some(env)
    }

    /// Overrides one setting for the service, e.g. `("FETCH__MAX_BODY_BYTES", "1000")`.
    pub fn set(&mut self, key: &str, value: impl ToString) -> &mut Self {
        self.extra_env
            .push((format!("LOOKALIKE_{key}"), value.to_string()));
        self
    }

    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub async fn db(&self) -> PgConnection {
        PgConnection::connect(&self.db_url).await.unwrap()
    }

    /// Starts `lookalike serve` and waits until it answers /readyz.
    pub async fn start(&self) -> Service {
        let service = self.spawn();
        service.wait_ready(Duration::from_secs(60)).await;
        service
    }

    /// Starts `lookalike serve` without waiting for it (for tests of how it starts, or refuses to).
    pub fn spawn(&self) -> Service {
        self.spawn_process("serve", &[])
    }

    /// Starts `lookalike <subcommand>` (`serve`, `api`, `worker`) with extra settings, without
    /// waiting. The returned `Service` talks to `http.listen` (the extra settings' own, if they
    /// give one), or for a worker to `worker.listen` when the extra settings give one.
    pub fn spawn_process(&self, subcommand: &str, extra: &[(String, String)]) -> Service {
        let log_path = self
            .dir
            .path()
            .join(format!("{subcommand}-{}.log", Uuid::new_v4().simple()));
        let log = std::fs::File::create(&log_path).unwrap();
        let listen_key = if subcommand == "worker" {
            "LOOKALIKE_WORKER__LISTEN"
        } else {
            "LOOKALIKE_HTTP__LISTEN"
        };
        let base = extra
            .iter()
            .find(|(k, _)| k == listen_key)
            .map_or_else(|| self.base_url(), |(_, v)| format!("http://{v}"));
        let mut cmd = self.command(subcommand);
        cmd.envs(extra.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        let child = cmd.spawn().expect("starting lookalike");
        Service {
            child,
            base,
            log_path,
            client: reqwest::Client::new(),
        }
    }

    /// Starts `lookalike worker` on a port of its own (`worker.listen`), with `extra` settings
    /// (`LOOKALIKE_<SECTION>__<KEY>`), without waiting; the `Service` talks to its health port.
    pub fn spawn_worker(&self, extra: &[(&str, &str)]) -> Service {
        let mut settings = vec![(
            "LOOKALIKE_WORKER__LISTEN".to_string(),
            format!("127.0.0.1:{}", free_port()),
        )];
        settings.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        self.spawn_process("worker", &settings)
    }

    /// `lookalike <subcommand>` with this environment's settings (database, queue, index, models).
    pub fn command(&self, subcommand: &str) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_lookalike"));
        cmd.arg(subcommand)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("RUST_LOG", "info,lookalike=debug")
            .env("LOOKALIKE_HTTP__LISTEN", format!("127.0.0.1:{}", self.port))
            .env("LOOKALIKE_DATABASE__URL", &self.db_url)
            .env("LOOKALIKE_QUEUE__URL", AMQP_URL)
            .env("LOOKALIKE_QUEUE__PREFIX", &self.queue_prefix)
            .env("LOOKALIKE_INDEX__DATA_DIR", self.dir.path().join("index"))
            .env(
                "LOOKALIKE_MODEL__ORT_LIBRARY",
                asset("lib/libonnxruntime.so.1.31.1"),
            )
            .env(
                "LOOKALIKE_MODEL__PATH",
                asset("models/clip_vitb16_visual_int8.onnx"),
            )
            .env("LOOKALIKE_QUEUE__RETRY_BASE_MS", "200")
            // The test image servers listen on loopback, which the fetch guard refuses by default.
            .env("LOOKALIKE_FETCH__ALLOW_CIDRS", r#"["127.0.0.0/8"]"#)
            // API keys have their own test (tests/auth.rs), which turns them back on with `set`.
            .env("LOOKALIKE_AUTH__ENABLED", "false")
            .envs(self.extra_env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        cmd
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        // Best-effort cleanup; a leftover test database or queue is harmless and uniquely named.
        let db_name = self.db_name.clone();
        let prefix = self.queue_prefix.clone();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                if let Ok(mut admin) = PgConnection::connect(PG_ADMIN_URL).await {
                    let _ = admin
                        .execute(sqlx::AssertSqlSafe(format!(
                            "DROP DATABASE IF EXISTS {db_name} WITH (FORCE)"
                        )))
                        .await;
                }
                if let Ok(conn) = lookalike_queue::connect(AMQP_URL, "test-cleanup").await
                    && let Ok(ch) = conn.create_channel().await
                {
                    let _ = lookalike_queue::Topology::new(&prefix).delete(&ch).await;
                }
            })
        })
        .join();
    }
}

/// A port nothing listens on now, and that no other caller in this test process was given: a
/// process spawned with one may not have bound it yet when the next one is asked for, and two
/// processes told the same port would answer for each other.
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

/// A running `lookalike serve` process.
pub struct Service {
    pub child: Child,
    pub base: String,
    pub log_path: PathBuf,
    pub client: reqwest::Client,
}

impl Service {
    pub async fn wait_ready(&self, limit: Duration) {
        let start = Instant::now();
        loop {
            if let Ok(r) = self
                .client
                .get(format!("{}/readyz", self.base))
                .send()
                .await
                && r.status().is_success()
            {
                return;
            }
            assert!(
                start.elapsed() < limit,
                "service not ready within {limit:?}; log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// Sends a request; returns the status and the JSON body (`Null` when there is none). The answer
    /// is checked against the OpenAPI document (`schema::check_response`), so every test that talks
    /// to the service through here also checks the document's schemas.
    pub async fn send(&self, request: reqwest::RequestBuilder) -> (u16, Value) {
        let (client, request) = request.build_split();
        let request = request.unwrap();
        let (method, path) = (
            request.method().to_string(),
            request.url().path().to_string(),
        );
        let r = client.execute(request).await.unwrap();
        let status = r.status().as_u16();
        let content_type = r
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let body = r.json().await.unwrap_or(Value::Null);
        schema::check_response(&method, &path, status, &content_type, &body);
        (status, body)
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.send(self.client.get(self.url(path))).await
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> (u16, Value) {
        self.send(self.client.post(self.url(path)).json(body)).await
    }

    /// A POST without a body (actions such as retry).
    pub async fn post(&self, path: &str) -> (u16, Value) {
        self.send(self.client.post(self.url(path))).await
    }

    pub async fn delete(&self, path: &str) -> (u16, Value) {
        self.send(self.client.delete(self.url(path))).await
    }

    pub async fn post_multipart(&self, path: &str, form: reqwest::multipart::Form) -> (u16, Value) {
        self.send(self.client.post(self.url(path)).multipart(form))
            .await
    }

    /// Submits URL items and returns the job ids.
    pub async fn submit_urls(&self, items: Value) -> Vec<String> {
        let (status, body) = self
            .post_json("/v1/images", &serde_json::json!({"items": items}))
            .await;
        assert_eq!(status, 202, "{body}");
        job_ids(&body)
    }

    /// Polls a job until it is succeeded or failed (no fixed sleeps: checks every 50 ms).
    pub async fn wait_job(&self, id: &str, limit: Duration) -> Value {
        let start = Instant::now();
        loop {
            let (status, job) = self.get(&format!("/v1/jobs/{id}")).await;
            assert_eq!(status, 200, "{job}");
            if matches!(job["status"].as_str(), Some("succeeded" | "failed")) {
                return job;
            }
            assert!(
                start.elapsed() < limit,
                "job {id} not finished within {limit:?}: {job}\nlog:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn wait_jobs(&self, ids: &[String], limit: Duration) -> Vec<Value> {
        let mut out = Vec::new();
        for id in ids {
            out.push(self.wait_job(id, limit).await);
        }
        out
    }

    pub fn kill(&mut self) {
        self.child.kill().unwrap(); // SIGKILL
        self.child.wait().unwrap();
    }

    /// SIGTERM, then waits for the process to exit; returns its exit code.
    pub fn terminate(&mut self, limit: Duration) -> Option<i32> {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            if start.elapsed() > limit {
                self.kill();
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn job_ids(body: &Value) -> Vec<String> {
    body["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["job_id"].as_str().unwrap().to_string())
        .collect()
}

pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb: f32 = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (na * nb)
}

pub fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

pub fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}
