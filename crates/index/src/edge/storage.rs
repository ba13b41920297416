//! On-disk layout and configuration of the qdrant-edge shard.

use std::fs::File;
use std::path::Path;

use anyhow::Context as _;
use qdrant_edge::{
    DEFAULT_VECTOR_NAME, Distance, EdgeConfig, EdgeConfigBuilder, EdgeOptimizersConfig,
    EdgeVectorParamsBuilder, HnswIndexConfig, WalOptions,
};

use super::EdgeOptions;

/// Written by the engine when a shard is created; its presence means "load, don't create".
pub(super) const EDGE_CONFIG_FILE: &str = "edge_config.json";

pub(super) fn edge_config(dim: usize, opts: &EdgeOptions) -> EdgeConfig {
    let mut builder = EdgeConfigBuilder::new();
    if let Some(bytes) = opts.wal_segment_bytes {
        builder = builder.wal_options(WalOptions {
            segment_capacity: bytes,
            ..WalOptions::default()
        });
    }
    if let Some(kb) = opts.full_scan_threshold_kb {
        builder = builder.hnsw_config(HnswIndexConfig {
            full_scan_threshold: kb,
            ..HnswIndexConfig::default()
        });
    }
    builder
        // Payload is two short strings per point: RAM is cheaper than mmap page faults.
        .on_disk_payload(false)
        .vector(
            DEFAULT_VECTOR_NAME,
            EdgeVectorParamsBuilder::new(dim, Distance::Cosine).build(),
        )
        .optimizers(EdgeOptimizersConfig {
            indexing_threshold: opts.indexing_threshold_kb,
            default_segment_number: opts.target_segments,
            ..EdgeOptimizersConfig::default()
        })
        .build()
}

pub(super) fn has_segments(dir: &Path) -> anyhow::Result<bool> {
    match std::fs::read_dir(dir.join("segments")) {
        Ok(mut entries) => Ok(entries.next().is_some()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e).context("reading segments directory"),
    }
}

/// Remove closed WAL files except the newest (see module docs). Safe only because qdrant-edge
/// 0.7.2 never reads WAL entries back; re-check this when upgrading the engine.
pub(super) fn trim_wal(dir: &Path) -> anyhow::Result<()> {
    let wal = dir.join("wal");
    let Ok(entries) = std::fs::read_dir(&wal) else {
        return Ok(());
    };
    // The engine flocks the WAL directory while a shard is open: take the same lock so the
    // files of a shard open elsewhere are left alone (the engine's own open then fails).
    let lock = File::open(&wal).context("opening wal directory")?;
    if let Err(e) = lock.try_lock() {
        anyhow::bail!("index directory {} is in use: {e}", dir.display());
    }
    let mut closed: Vec<(u64, std::path::PathBuf)> = Vec::new();
    for entry in entries {
        let entry = entry.context("reading wal directory")?;
        let name = entry.file_name();
        let start = name.to_str().and_then(|n| n.strip_prefix("closed-"));
        if let Some(start) = start.and_then(|s| s.parse().ok()) {
            closed.push((start, entry.path()));
        }
    }
    closed.sort();
    closed.pop(); // keep the newest closed file: it carries the operation numbering
    for (_, path) in closed {
        std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
    }
    Ok(())
}
