//! Ingest benchmark: model-only throughput vs end-to-end throughput, measured in one run.
//!
//!   cargo bench --bench ingest                     # 200 images
//!   LOOKALIKE_BENCH_N=400 LOOKALIKE_BENCH_IMAGES=DIR cargo bench --bench ingest
//!
//! 1. Model only: images already decoded and preprocessed into tensors, fed to ONNX Runtime in batches of
//!    `worker.batch_size` with `model.intra_threads` threads: the ceiling for this machine.
//! 2. End to end: the real `lookalike serve` (Postgres, RabbitMQ, embedded index) ingests the same images by
//!    URL from a local HTTP server: first submit until every job succeeded.
//!
//! The figure that matters is the ratio (2)/(1); absolute numbers move with the machine's load.

#[path = "../tests/support/mod.rs"]
mod support;

mod common;

use common::Layout;
use lookalike_core::Config;

fn main() -> anyhow::Result<()> {
    // `cargo test --all-targets` also runs bench targets; the benchmark only runs under `cargo bench`.
    if !std::env::args().any(|a| a == "--bench") {
        println!("ingest benchmark: run it with `cargo bench --bench ingest`");
        return Ok(());
    }
    let n: usize = std::env::var("LOOKALIKE_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let (source, files) = common::bench_images(n)?;
    // Settings given as LOOKALIKE_<SECTION>__<KEY> apply to both runs, e.g. WORKER__DECODE_THREADS.
    let overrides = common::overrides();
    let config = Config::load_from(None, overrides.clone())?;
    let model_ips = common::model_only(&config, &files)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let e2e_ips = rt.block_on(common::end_to_end(
        &files,
        &source,
        &overrides,
        Layout::Serve,
    ))?;

    println!();
    println!("| measure | images/s |");
    println!("|---|---|");
    println!(
        "| model only (batch {}, {} threads) | {model_ips:.1} |",
        config.worker.batch_size, config.model.intra_threads
    );
    println!("| end to end (URL submitted -> job succeeded) | {e2e_ips:.1} |");
    println!(
        "| ratio end-to-end / model-only | {:.2} |",
        e2e_ips / model_ips
    );
    Ok(())
}
