//! Ingest benchmark on real catalogue photos: the model alone, lookalike end to end and the Python
//! prototype's stack, on the same files in one run.
//!
//!   cargo bench --bench ingest                           # the 297 photos of scripts/bench-photos.sh
//!   LOOKALIKE_BENCH_N=60 cargo bench --bench ingest      # an evenly spaced subset, for a quick look
//!   LOOKALIKE_BENCH_IMAGES=DIR cargo bench --bench ingest    # another folder of images
//!
//! The images: `scripts/bench-photos.sh` (297 distinct JPEGs, median 1.26 megapixels, cropped and
//! re-encoded from the Vendure photos and Saleor renders; every file's bytes distinct, so the service's
//! reuse of identical images never helps). Rows:
//! 1. The model alone: the files decoded and preprocessed into tensors first (not timed), then fed to
//!    ONNX Runtime in batches of 1, 8 and 16, as 1 session of `cores` threads and as `cores` sessions
//!    of 1 thread side by side. The best of these is the machine's ceiling; every row is divided by it.
//! 2. lookalike end to end, URL submitted -> job succeeded, on a fresh database and queue: `serve` with
//!    the default settings (a pool of `cores` one-thread model sessions, plus a `cores`-thread
//!    session for an image that runs alone), then in the ingest worker shape (the same pool without
//!    the solo session: `model.intra_threads = 1`).
//! 3. The prototype's stack in Python (`benches/python/ingest.py`, with the pinned environment of
//!    `scripts/pyenv.sh`): requests + Pillow + onnxruntime, same model file, batch 16, onnxruntime
//!    intra-op threads = cores. "As it was": 4 download/decode threads, no `draft()`. "At its best":
//!    Pillow `draft()` and the best of 2, 4 and 8 threads (`LOOKALIKE_BENCH_PY_THREADS`).
//!
//! Every end-to-end row downloads the same URLs from the same local HTTP server. Settings given as
//! LOOKALIKE_<SECTION>__<KEY> apply to every lookalike row; LOOKALIKE_BENCH_WORKER_SET="KEY=V,..."
//! (e.g. `WORKER__DECODE_THREADS=2`) adds settings to the worker-shape row only. The figures go to
//! bench-results/ingest-<date>.json with the date, the machine and the command.

#[path = "../tests/support/mod.rs"]
mod support;

mod common;

use std::path::PathBuf;

use common::Layout;
use lookalike_core::Config;
use serde_json::{Value, json};
use support::images::ImageServer;

fn main() -> anyhow::Result<()> {
    // `cargo test --all-targets` also runs bench targets; the benchmark only runs under `cargo bench`.
    if !std::env::args().any(|a| a == "--bench") {
        println!("ingest benchmark: run it with `cargo bench --bench ingest`");
        return Ok(());
    }
    let started = std::time::Instant::now();
    let load_before = loadavg();
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let (dir, all, manifest) = common::photo_set()?;
    let n: usize = std::env::var("LOOKALIKE_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(all.len());
    let files: Vec<PathBuf> = if n <= all.len() {
        // Evenly spaced, so a small run still mixes both catalogues.
        (0..n).map(|i| all[i * all.len() / n].clone()).collect()
    } else {
        println!(
            "warning: {n} jobs from {} files: repeated bytes are not analysed twice by the \
             service, which flatters its rows",
            all.len()
        );
        all.iter().cycle().take(n).cloned().collect()
    };
    let distinct = files.iter().collect::<std::collections::HashSet<_>>().len();
    let median_mp = common::median_megapixels(manifest.as_ref(), &files);
    println!(
        "images: {n} jobs, {distinct} distinct files under {}, median {}",
        dir.display(),
        median_mp.map_or("unknown".into(), |m| format!("{m:.2} MP"))
    );

    let only_worker = std::env::var("LOOKALIKE_BENCH_ONLY").is_ok_and(|v| v == "worker");

    // 1. The model alone, in every shape.
    let base = common::overrides();
    let config = Config::load_from(None, base.clone())?;
    let mut layouts = vec![(1, cores), (cores, 1)];
    layouts.dedup();
    let grid = if only_worker {
        Vec::new()
    } else {
        common::model_grid(&config, &files, &[1, 8, 16], &layouts)?
    };

    // The files over HTTP, for every end-to-end row: links in a folder of their own, plus a warm-up
    // image that is not one of them (its analysis must not be reused by a measured job).
    let served = tempfile::tempdir()?;
    // Nested folders (LOOKALIKE_BENCH_IMAGES) are flattened: `a/b.jpg` is served as `a__b.jpg`.
    let served_name = |f: &PathBuf| {
        f.strip_prefix(&dir)
            .unwrap_or(f)
            .to_string_lossy()
            .replace('/', "__")
    };
    for f in &all {
        let link = served.path().join(served_name(f));
        std::os::unix::fs::symlink(std::fs::canonicalize(f)?, link)?;
    }
    let warm_name = "warm-up-allstar-sneakers.jpg";
    std::fs::copy(
        support::reference_dir().join("allstar-sneakers.jpg"),
        served.path().join(warm_name),
    )?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let images = rt.block_on(ImageServer::start(served.path().to_path_buf()));
    let urls: Vec<String> = files
        .iter()
        .enumerate()
        .map(|(i, f)| images.url(&format!("/files/{}?copy={i}", served_name(f))))
        .collect();
    let warm_url = images.url(&format!("/files/{warm_name}"));

    // 2. lookalike, end to end.
    let serve_ips = if only_worker {
        0.0
    } else {
        rt.block_on(common::end_to_end_urls(
            &urls,
            &warm_url,
            &base,
            Layout::Serve,
        ))?
    };
    let mut worker = base.clone();
    worker.push(("LOOKALIKE_MODEL__INTRA_THREADS".into(), "1".into()));
    if let Ok(extra) = std::env::var("LOOKALIKE_BENCH_WORKER_SET") {
        for kv in extra.split(',').filter(|s| !s.is_empty()) {
            let (k, v) = kv.split_once('=').ok_or_else(|| {
                anyhow::anyhow!("LOOKALIKE_BENCH_WORKER_SET: {kv:?} is not KEY=V")
            })?;
            let k = k.trim().trim_start_matches("LOOKALIKE_");
            worker.push((format!("LOOKALIKE_{k}"), v.trim().to_owned()));
        }
    }
    let worker_config = Config::load_from(None, worker.clone())?;
    let worker_ips = rt.block_on(common::end_to_end_urls(
        &urls,
        &warm_url,
        &worker,
        Layout::Serve,
    ))?;
    if only_worker {
        println!("worker shape: {worker_ips:.2} images/s (LOOKALIKE_BENCH_ONLY: no result file)");
        return Ok(());
    }
    let best = *grid
        .iter()
        .max_by(|a, b| a.images_per_s.total_cmp(&b.images_per_s))
        .expect("at least one model shape");

    // 3. The Python stack, on the same URLs.
    let urls_file = tempfile::NamedTempFile::new()?;
    std::fs::write(urls_file.path(), urls.join("\n") + "\n")?;
    let py_common = [
        "--batch".to_string(),
        "16".into(),
        "--intra-threads".into(),
        cores.to_string(),
    ];
    let mut args = vec!["--threads".to_string(), "4".into()];
    args.extend(py_common.iter().cloned());
    let as_was = common::python_ingest(urls_file.path(), &args)?;
    let tries = std::env::var("LOOKALIKE_BENCH_PY_THREADS").unwrap_or_else(|_| "2,4,8".into());
    let mut args = vec!["--threads".to_string(), tries.clone(), "--draft".into()];
    args.extend(py_common.iter().cloned());
    let at_best = common::python_ingest(urls_file.path(), &args)?;
    drop(images);
    let py_ips = |run: &Value| run["images_per_s"].as_f64().unwrap_or(0.0);
    let as_was_run = as_was["runs"][0].clone();
    let best_run = at_best["runs"]
        .as_array()
        .into_iter()
        .flatten()
        .max_by(|a, b| py_ips(a).total_cmp(&py_ips(b)))
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("the Python script reported no run"))?;
    let (as_was_ips, best_py_ips) = (py_ips(&as_was_run), py_ips(&best_run));

    // The tables.
    let shape = |c: &Config| {
        let sessions = match lookalike::pool_shape(c) {
            (1, threads) => format!("1 session x {threads} ONNX thread(s)"),
            (lanes, 1) => format!("{lanes} sessions x 1 ONNX thread"),
            (lanes, solo) => format!(
                "{lanes} sessions x 1 ONNX thread + a {solo}-thread session for a lone image"
            ),
        };
        format!(
            "{sessions}, batch {}, {} decode thread(s)",
            c.worker.batch_size, c.worker.decode_threads
        )
    };
    let rows = [
        (
            "model alone, best shape",
            format!(
                "batch {}, {} session(s) x {} thread(s), decoded tensors",
                best.batch, best.sessions, best.threads
            ),
            best.images_per_s,
        ),
        ("lookalike `serve`, defaults", shape(&config), serve_ips),
        (
            "lookalike `serve`, ingest worker shape",
            shape(&worker_config),
            worker_ips,
        ),
        (
            "Python prototype, as it was",
            format!(
                "batch 16, {} download/decode threads, no draft()",
                as_was_run["threads"]
            ),
            as_was_ips,
        ),
        (
            "Python prototype, at its best",
            format!(
                "batch 16, {} download/decode threads (best of {tries}), draft()",
                best_run["threads"]
            ),
            best_py_ips,
        ),
    ];
    let ratios = [
        (
            "lookalike worker shape / model alone (best shape)",
            worker_ips / best.images_per_s,
            ">= 0.9",
        ),
        (
            "lookalike worker shape / Python as it was",
            worker_ips / as_was_ips,
            ">= 1.2",
        ),
        (
            "lookalike worker shape / Python at its best",
            worker_ips / best_py_ips,
            ">= 1.0",
        ),
        (
            "lookalike `serve` defaults / model alone (best shape)",
            serve_ips / best.images_per_s,
            ">= 0.85",
        ),
    ];
    println!();
    println!("| model alone | batch 1 | batch 8 | batch 16 |");
    println!("|---|---|---|---|");
    for &(s, t) in &layouts {
        let cell = |b: usize| {
            grid.iter()
                .find(|c| c.batch == b && c.sessions == s && c.threads == t)
                .map_or("-".into(), |c| format!("{:.1}", c.images_per_s))
        };
        println!(
            "| {s} session(s) x {t} thread(s) | {} | {} | {} |",
            cell(1),
            cell(8),
            cell(16)
        );
    }
    println!();
    println!("| row | shape | images/s | / model alone (best shape) |");
    println!("|---|---|---|---|");
    for (name, shape, ips) in &rows {
        println!(
            "| {name} | {shape} | {ips:.1} | {:.2} |",
            ips / best.images_per_s
        );
    }
    println!();
    println!("| ratio | measured | issue 14 target |");
    println!("|---|---|---|");
    for (name, r, target) in &ratios {
        println!("| {name} | {r:.2} | {target} |");
    }
    let secs = started.elapsed().as_secs_f64();
    println!("\nthe whole run took {:.0} s", secs);

    let mut command = String::new();
    for key in [
        "LOOKALIKE_BENCH_N",
        "LOOKALIKE_BENCH_IMAGES",
        "LOOKALIKE_BENCH_PY_THREADS",
        "LOOKALIKE_BENCH_WORKER_SET",
    ] {
        if let Ok(v) = std::env::var(key) {
            command.push_str(&format!("{key}={v} "));
        }
    }
    for (k, v) in &base {
        command.push_str(&format!("{k}={v} "));
    }
    command.push_str("cargo bench --locked --bench ingest");
    let figures = json!({
        "images": {
            "jobs": n,
            "distinct_files": distinct,
            "median_megapixels": median_mp,
            "folder": dir.file_name().map(|d| d.to_string_lossy().into_owned()),
            "made_by": if std::env::var_os("LOOKALIKE_BENCH_IMAGES").is_some() { "LOOKALIKE_BENCH_IMAGES" } else { "scripts/bench-photos.sh" },
        },
        "rows": rows.iter().map(|(name, shape, ips)| json!({
            "row": name, "shape": shape, "images_per_s": ips, "per_model_best": ips / best.images_per_s,
        })).collect::<Vec<_>>(),
        "ratios": ratios.iter().map(|(name, r, target)| json!({
            "ratio": name, "value": r, "target": target,
        })).collect::<Vec<_>>(),
        "model_grid": grid.iter().map(|c| json!({
            "batch": c.batch, "sessions": c.sessions, "threads": c.threads, "images_per_s": c.images_per_s,
        })).collect::<Vec<_>>(),
        "lookalike": {
            "serve_defaults": {"settings": shape(&config), "images_per_s": serve_ips},
            "worker_shape": {
                "settings": shape(&worker_config),
                "overrides": worker.iter().filter(|o| !base.contains(o)).map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>(),
                "images_per_s": worker_ips,
            },
        },
        "python": {"as_it_was": as_was, "at_its_best": at_best},
        "seconds": secs,
        "git": git_state(),
        // The machine may be shared: its 1-minute load average when the run started and ended.
        "load_average": {"start": load_before, "end": loadavg()},
    });
    let path = common::write_result("ingest", command.trim(), figures)?;
    println!("results: {}", path.display());
    Ok(())
}

fn loadavg() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The commit the run was built from and the tracked files that differed from it.
fn git_state() -> Value {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .current_dir(support::repo_root())
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim_end().to_owned())
    };
    let modified: Vec<String> = git(&["status", "--porcelain", "--untracked-files=no"])
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.get(3..).map(str::to_owned))
        .collect();
    json!({"commit": git(&["rev-parse", "HEAD"]), "modified": modified})
}
