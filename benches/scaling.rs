//! How ingest throughput scales with workers, against the model-only limit of the machine.
//!
//!   cargo bench --bench scaling                    # 200 distinct real photos per run
//!   QDRANT_URL=http://HOST:6334 cargo bench --bench scaling   # on that server instead of a private one
//!
//! Embedded index: `lookalike serve` with one model session of `cores` ONNX threads
//! (`model.sessions = 1`), then with two sessions of one thread side by side
//! (`model.sessions = 2`, `model.intra_threads = 1`); next to the model alone in the same shapes.
//! Qdrant server: `lookalike api` with 1, then 2 `lookalike worker` processes on one queue, on the
//! server `QDRANT_URL` names, or else on a private one started from `../shared/bin/qdrant`
//! (`LOOKALIKE_QDRANT_BIN`). Without either, those rows are missing and the output says why.
//!
//! Each end-to-end figure is divided by the model-only figure of the same run. The figures also go
//! to `bench-results/scaling-<date>.json` with the date, the machine and the command.

#[path = "../tests/support/mod.rs"]
mod support;

mod common;

use common::Layout;
use lookalike_core::Config;

fn main() -> anyhow::Result<()> {
    if !std::env::args().any(|a| a == "--bench") {
        println!("scaling benchmark: run it with `cargo bench --bench scaling`");
        return Ok(());
    }
    let n: usize = std::env::var("LOOKALIKE_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    // Distinct real photos (`scripts/bench-photos.sh`): repeated bytes would skip the model.
    let (source, all, _) = common::photo_set()?;
    anyhow::ensure!(
        n <= all.len(),
        "{n} jobs but only {} distinct photos",
        all.len()
    );
    let files: Vec<_> = (0..n).map(|i| all[i * all.len() / n].clone()).collect();
    println!("images: {n} distinct photos under {}", source.display());
    let base = common::overrides();
    let with = |extra: &[(&str, String)]| {
        let mut o = base.clone();
        o.extend(extra.iter().map(|(k, v)| (k.to_string(), v.clone())));
        o
    };
    let one = with(&[
        ("LOOKALIKE_MODEL__SESSIONS", "1".into()),
        ("LOOKALIKE_MODEL__INTRA_THREADS", cores.to_string()),
    ]);
    let two = with(&[
        ("LOOKALIKE_MODEL__SESSIONS", "2".into()),
        ("LOOKALIKE_MODEL__INTRA_THREADS", "1".into()),
    ]);
    let model_one = common::model_parallel(&Config::load_from(None, one.clone())?, &files, 1)?;
    let model_two = common::model_parallel(&Config::load_from(None, two.clone())?, &files, 2)?;

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let mut rows = Vec::new();
    let e2e = rt.block_on(common::end_to_end(&files, &source, &one, Layout::Serve))?;
    rows.push(("serve, 1 session", cores, e2e));
    let e2e = rt.block_on(common::end_to_end(&files, &source, &two, Layout::Serve))?;
    rows.push(("serve, 2 sessions", 1, e2e));

    // The server: QDRANT_URL's, or a private one for this run (stopped when it ends).
    let private = match std::env::var("QDRANT_URL") {
        Ok(_) => None,
        Err(_) => rt.block_on(support::qdrant::PrivateQdrant::start()),
    };
    let server = std::env::var("QDRANT_URL")
        .ok()
        .or_else(|| private.as_ref().map(|p| p.url()));
    match server {
        Some(url) => {
            for workers in [1, 2] {
                let mut o = with(&[
                    ("LOOKALIKE_INDEX__BACKEND", "qdrant".into()),
                    ("LOOKALIKE_INDEX__URL", url.clone()),
                    (
                        "LOOKALIKE_INDEX__COLLECTION",
                        format!("bench-{}", uuid::Uuid::new_v4().simple()),
                    ),
                    // Each worker process gets its share of the cores.
                    (
                        "LOOKALIKE_MODEL__INTRA_THREADS",
                        (cores / workers).max(1).to_string(),
                    ),
                ]);
                o.push(("LOOKALIKE_MODEL__SESSIONS".into(), "1".into()));
                let e2e = rt.block_on(common::end_to_end(
                    &files,
                    &source,
                    &o,
                    Layout::Split { workers },
                ))?;
                rows.push((
                    if workers == 1 {
                        "api + 1 worker process (Qdrant server)"
                    } else {
                        "api + 2 worker processes (Qdrant server)"
                    },
                    (cores / workers).max(1),
                    e2e,
                ));
            }
        }
        None => println!(
            "skipped: the worker-process runs need a Qdrant server (QDRANT_URL is not set, and \
             no server binary to start one)"
        ),
    }
    drop(private);

    println!();
    println!("model only, 1 session x {cores} threads: {model_one:.1} images/s");
    println!(
        "model only, 2 sessions x {} threads: {model_two:.1} images/s",
        (cores / 2).max(1)
    );
    let best = model_one.max(model_two);
    println!();
    println!("| layout | ONNX threads per pipeline | images/s | / model only (best shape) |");
    println!("|---|---|---|---|");
    let mut measured = vec![
        serde_json::json!({"layout": "model alone, 1 session", "threads": cores, "images_per_s": model_one, "ratio": model_one / best}),
        serde_json::json!({"layout": "model alone, 2 sessions", "threads": (cores / 2).max(1), "images_per_s": model_two, "ratio": model_two / best}),
    ];
    for (name, threads, ips) in rows {
        println!("| {name} | {threads} | {ips:.1} | {:.2} |", ips / best);
        measured.push(serde_json::json!({"layout": name, "threads": threads, "images_per_s": ips, "ratio": ips / best}));
    }
    let path = common::write_result(
        "scaling",
        "cargo bench --bench scaling",
        serde_json::json!({"images": n, "rows": measured}),
    )?;
    println!("\nresults: {}", path.display());
    Ok(())
}
