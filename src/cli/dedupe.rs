//! `lookalike dedupe`: groups the near-duplicates of a catalogue stored before grouping was on (or
//! under another `dedupe.threshold`), by the rule ingest applies (`lookalike_catalogue`): each item in
//! no group, in submission order, joins the group of a stored item with identical bytes or of its
//! nearest neighbour scoring at least the threshold, never one an operator split from it.
//!
//! Restartable: an item already in a group is skipped, so a run stopped half way and started again
//! only compares the items still in none. Run it beside the service (it writes through the same
//! catalogue rules; the embedded index needs the service stopped, as for `reindex`).

use std::time::Instant;

use anyhow::Context;
use clap::Args;
use lookalike_catalogue::Catalogue;
use lookalike_core::Config;
use serde_json::json;

use crate::cli::progress::Progress;

#[derive(Args, Debug)]
pub struct DedupeArgs {
    /// Group at this cosine instead of `dedupe.threshold`.
    #[arg(long)]
    pub threshold: Option<f32>,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Items read from Postgres per page.
const PAGE: i64 = 256;

pub async fn run(mut config: Config, args: DedupeArgs) -> anyhow::Result<u8> {
    let threshold = args.threshold.unwrap_or(config.dedupe.threshold);
    if !(threshold > 0.0 && threshold <= 1.0) {
        anyhow::bail!("--threshold must be a cosine above 0 and at most 1");
    }
    let store = lookalike::open_store(&config)?;
    lookalike::migrate(&store, config.database.url.expose()).await?;
    // The model id (which the items' must match) depends on how this catalogue decodes JPEGs.
    lookalike::resolve_decode(&mut config, &store).await?;
    let index = lookalike::open_index(&config)
        .await
        .context("opening the index")?;
    index.ping().await.context("the index does not answer")?;
    let catalogue = Catalogue::new(store.clone(), index.clone()).with_dedupe(Some(threshold));
    let total = store.item_count().await? as usize;
    tracing::info!(total, threshold, "dedupe started");
    let started = Instant::now();
    let mut progress = Progress::new("dedupe");
    let (mut checked, mut joined, mut skipped) = (0usize, 0usize, 0usize);
    let mut after = None;
    loop {
        let page = store.items_after(after, None, PAGE).await?;
        let Some(last) = page.last() else { break };
        after = Some(last.id);
        for item in &page {
            // Re-read: an earlier item of this run may have pulled it into a group.
            let Some(item) = store.get_item(item.id).await? else {
                continue;
            };
            if item.duplicate_group.is_some() || item.model_id != config.model.id {
                skipped += 1;
            } else if catalogue.dedupe_stored(&item).await?.is_some() {
                joined += 1;
            }
            checked += 1;
            progress.update(checked, total, || format!("{joined} joined a group"));
        }
    }
    let (groups, in_groups) = store.duplicate_counts().await?;
    progress.finish(checked, total, &format!("{joined} joined a group"));
    let summary = json!({
        "checked": checked,
        "joined": joined,
        "skipped_in_a_group_or_other_model": skipped,
        "groups": groups,
        "items_in_groups": in_groups,
        "threshold": threshold,
        "secs": started.elapsed().as_secs_f64(),
    });
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        println!(
            "dedupe: {checked} items checked, {joined} joined a group; {groups} groups hold {in_groups} items (threshold {threshold})"
        );
    }
    Ok(crate::cli::client::EXIT_OK)
}
