//! Qdrant servers for the tests: the one the test command runs for the whole suite (`QDRANT_URL`),
//! and private ones, started from the server binary, for tests that stop and start their server.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{free_port, repo_root};

/// True where a missing server must fail a test rather than skip it: in the test command
/// (`LOOKALIKE_REQUIRE_QDRANT`) and on CI.
fn required() -> bool {
    ["LOOKALIKE_REQUIRE_QDRANT", "CI"]
        .iter()
        .any(|v| std::env::var(v).is_ok_and(|v| !v.is_empty() && v != "false" && v != "0"))
}

/// The suite's server (`QDRANT_URL`, gRPC). `None` only on a developer's partial run, where the
/// test says it skipped; under the test command or on CI a missing server fails the test.
pub fn shared_url() -> Option<String> {
    let url = std::env::var("QDRANT_URL")
        .ok()
        .filter(|u| !u.trim().is_empty());
    if url.is_none() {
        assert!(
            !required(),
            "no Qdrant server: QDRANT_URL is not set. scripts/test.sh starts one from \
             ../shared/bin/qdrant (or LOOKALIKE_QDRANT_BIN); run the tests through it, or set \
             QDRANT_URL to a Qdrant 1.18 server's gRPC endpoint"
        );
        eprintln!("skipped: QDRANT_URL is not set (no Qdrant server)");
    }
    url
}

/// The server binary: `LOOKALIKE_QDRANT_BIN`, else `../shared/bin/qdrant` beside the repository.
fn binary() -> Option<PathBuf> {
    let bin = std::env::var_os("LOOKALIKE_QDRANT_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("../shared/bin/qdrant"));
    if bin.is_file() {
        return Some(bin);
    }
    assert!(
        !required(),
        "no Qdrant server binary at {} (LOOKALIKE_QDRANT_BIN): this test runs a Qdrant server of \
         its own, to stop and start it",
        bin.display()
    );
    eprintln!(
        "skipped: no Qdrant server binary at {} (LOOKALIKE_QDRANT_BIN)",
        bin.display()
    );
    None
}

/// A Qdrant server of one test's own: own storage directory and ports, killed on drop. Stopping
/// and starting it again keeps its storage and ports, as a restarted production server would.
pub struct PrivateQdrant {
    bin: PathBuf,
    dir: tempfile::TempDir,
    http: u16,
    grpc: u16,
    api_key: Option<String>,
    child: Option<Child>,
}

impl PrivateQdrant {
    /// A running server, or `None` (skipped) on a developer's partial run without the binary.
    pub async fn start() -> Option<Self> {
        Self::start_with_key(None).await
    }

    /// Like [`PrivateQdrant::start`]; with `api_key`, the server refuses requests without it.
    pub async fn start_with_key(api_key: Option<&str>) -> Option<Self> {
        let mut server = Self::configured(api_key)?;
        server.start_again().await;
        Some(server)
    }

    /// Configured (ports chosen) but not running: for tests of what happens before it comes.
    pub fn configured(api_key: Option<&str>) -> Option<Self> {
        let bin = binary()?;
        let http = free_port();
        let mut grpc = free_port();
        while grpc == http {
            grpc = free_port();
        }
        Some(PrivateQdrant {
            bin,
            dir: tempfile::tempdir().expect("temp dir"),
            http,
            grpc,
            api_key: api_key.map(str::to_owned),
            child: None,
        })
    }

    /// The gRPC endpoint lookalike talks to.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.grpc)
    }

    /// The REST endpoint, for what a test does to the server behind lookalike's back.
    pub fn http_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("qdrant.log")).unwrap_or_default()
    }

    /// Starts the server (again) on its storage and ports; returns once it answers `/readyz`.
    pub async fn start_again(&mut self) {
        assert!(self.child.is_none(), "already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("qdrant.log"))
            .expect("log file");
        let d = self.dir.path();
        let mut cmd = Command::new(&self.bin);
        cmd.current_dir(d)
            .env("QDRANT__STORAGE__STORAGE_PATH", d.join("storage"))
            .env("QDRANT__STORAGE__SNAPSHOTS_PATH", d.join("snapshots"))
            .env("QDRANT__SERVICE__HOST", "127.0.0.1")
            .env("QDRANT__SERVICE__HTTP_PORT", self.http.to_string())
            .env("QDRANT__SERVICE__GRPC_PORT", self.grpc.to_string())
            .env("QDRANT__TELEMETRY_DISABLED", "true")
            .env("QDRANT__LOG_LEVEL", "WARN")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log);
        if let Some(key) = &self.api_key {
            cmd.env("QDRANT__SERVICE__API_KEY", key);
        }
        self.child = Some(cmd.spawn().expect("starting the Qdrant server"));
        let client = reqwest::Client::new();
        let started = Instant::now();
        loop {
            let ready = client
                .get(format!("http://127.0.0.1:{}/readyz", self.http))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ready {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "Qdrant did not become ready within 30 s; its log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Stops the server abruptly (SIGKILL), as a crash or a lost machine would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for PrivateQdrant {
    fn drop(&mut self) {
        self.kill();
    }
}
