//! `lookalike reindex`: embeds every item with the configured model into the configured index
//! location, while the service keeps serving the old model from its own location. Switching is a
//! configuration change (README "Changing the model"): each process searches only its own model's
//! vectors in its own index, so queries never mix the vectors of two models.
//!
//! The command is restartable: items whose vector by this model is already in the target are
//! skipped. Items changed while a pass ran (new jobs, external_id updates) are picked up by further
//! passes, each over what changed since the previous one started; vectors of items deleted during
//! the run are removed after each pass. At the end the new model's category prototypes are rebuilt
//! from the target, so a re-run never counts an item twice.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use chrono::{DateTime, Utc};
use clap::Args;
use futures::StreamExt;
use lookalike_analysis::batcher::Priority;
use lookalike_analysis::{Analyser, Failure};
use lookalike_catalogue::Catalogue;
use lookalike_core::Config;
use lookalike_index::{AliasSwitch, VectorIndex};
use lookalike_store::{CategorySource, Item, Store};
use serde_json::json;

use crate::cli::progress::Progress;

pub const AFTER_HELP: &str = "\
Run it with the NEW model's configuration beside the running service; the embedded index needs a NEW
directory, a Qdrant server gives every model a collection of its own (<index.collection>-<model id>):
  LOOKALIKE_CONFIG=new-model.toml LOOKALIKE_INDEX__DATA_DIR=.lookalike/data/index-v2 lookalike reindex
  LOOKALIKE_CONFIG=new-model.toml lookalike reindex          # index.backend = \"qdrant\"
Then point the service at the new model (README \"Changing the model\"), and run it once more with
--adopt to pick up what the old workers wrote meanwhile, record the new embeddings on the items and, on
a Qdrant server, point the alias index.collection at the new model's collection.

Exit codes: 0 every item has a vector by the new model; 1 some items failed (listed); 2 could not run.";

#[derive(Args, Debug)]
pub struct ReindexArgs {
    /// Items embedded at once (the model batches them when worker.batch_size > 1).
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
    /// Also record the new embedding and model id on each item row. Only once the service runs the
    /// new model: the old one still needs the old embeddings to keep its prototypes right.
    #[arg(long)]
    pub adopt: bool,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Items read from Postgres per page.
const PAGE: i64 = 256;
/// Passes over changed items after the first; a catalogue still changing after that many is
/// left to the next run (the summary says so).
const MAX_PASSES: usize = 5;

#[derive(Default, Debug)]
struct Tally {
    /// Items in the catalogue when the run started.
    total: usize,
    seen: usize,
    embedded: usize,
    skipped: usize,
    /// Vectors removed because their item was deleted during the run.
    removed: usize,
    failed: BTreeMap<String, usize>,
    failures: Vec<(uuid::Uuid, String)>,
}

impl Tally {
    fn failed(&self) -> usize {
        self.failed.values().sum()
    }

    /// `120/400 items (100 embedded, 18 already there, 2 failed)`, for the progress line.
    fn shown(&self) -> String {
        format!(
            "{}/{} items ({} embedded, {} already there, {} failed)",
            self.seen,
            self.total,
            self.embedded,
            self.skipped,
            self.failed()
        )
    }
}

enum Outcome {
    Embedded,
    Skipped,
    Failed(String, String),
}

pub async fn run(mut config: Config, args: ReindexArgs) -> anyhow::Result<u8> {
    let store = lookalike::open_store(&config)?;
    lookalike::migrate(&store, config.database.url.expose()).await?;
    lookalike::resolve_decode(&mut config, &store).await?;
    let config = Arc::new(config);
    let index = lookalike::open_index(&config)
        .await
        .context("opening the target index (is the service using this location? give the new model a new one)")?;
    // A service may start before its Qdrant server; a one-off command has nothing to wait for.
    index
        .ping()
        .await
        .context("the target index does not answer")?;
    // Reindexing keeps every category as it is: no classifier head needed.
    let analyser =
        lookalike::build_analyser(&config, store.clone(), index.clone(), Default::default())?;
    let catalogue = Catalogue::new(store.clone(), index.clone());
    let model = analyser.model_id().to_string();
    let total = store.item_count().await? as usize;
    tracing::info!(model, total, backend = index.name(), "reindex started");

    let started = Instant::now();
    let mut tally = Tally {
        total,
        ..Tally::default()
    };
    let mut progress = Progress::new("reindex");
    let mut since: Option<DateTime<Utc>> = None;
    let mut passes = 0;
    let mut settled = false;
    while passes <= MAX_PASSES {
        passes += 1;
        let pass_start = store.now().await?;
        let changed = pass(
            &catalogue,
            &analyser,
            &args,
            since,
            &mut tally,
            &mut progress,
        )
        .await?;
        // Items deleted through the service (during this run, or after an earlier run filled the
        // target) must not live on in the target. Deleting an absent id is a no-op.
        let deleted = store.deleted_items().await?;
        for chunk in deleted.chunks(1000) {
            index.delete(chunk).await?;
        }
        tally.removed = deleted.len();
        // The first pass covers everything; later ones only what changed meanwhile.
        if since.is_some() && changed == 0 {
            settled = true;
            break;
        }
        since = Some(pass_start);
    }
    progress.finish(tally.seen, total, &tally.shown());

    let prototypes = rebuild_prototypes(&store, index.as_ref(), &model).await?;
    // On a Qdrant server the alias (index.collection) names the current model's collection; it
    // moves only once every item has its vector there.
    let alias = if args.adopt && tally.failed() == 0 {
        lookalike::adopt_alias(&config)
            .await
            .context("pointing the index alias at the new model's collection")?
    } else {
        None
    };
    let alias_note = match &alias {
        Some(AliasSwitch::Switched { previous }) => format!(
            "alias {} now names {}{}",
            config.index.collection,
            lookalike_index::collection_for_model(&config.index.collection, &model),
            previous
                .as_ref()
                .map(|p| format!(" (was {p})"))
                .unwrap_or_default()
        ),
        Some(AliasSwitch::IsTheCollection) => format!(
            "{} is this model's collection (made before per-model collections)",
            config.index.collection
        ),
        Some(AliasSwitch::NameTaken) => format!(
            "alias {0} not made: the previous model's collection is named {0}; drop it once \
             no process runs the previous model, then run --adopt again",
            config.index.collection
        ),
        None => String::new(),
    };
    let summary = json!({
        "model": model,
        "items": total,
        "embedded": tally.embedded,
        "already_indexed": tally.skipped,
        "removed_deleted": tally.removed,
        "failed": tally.failed(),
        "failed_by_code": tally.failed,
        "failures": tally.failures.iter().take(50)
            .map(|(id, msg)| json!({"item_id": id, "error": msg})).collect::<Vec<_>>(),
        "passes": passes,
        "settled": settled,
        "prototype_categories": prototypes,
        "adopted": args.adopt,
        "alias": alias_note,
        "seconds": started.elapsed().as_secs_f64(),
    });
    if args.json {
        println!("{summary:#}");
    } else {
        println!(
            "reindex with {model}: {} embedded, {} already there, {} failed, {} passes{}, \
             {prototypes} category prototypes rebuilt, {:.1}s",
            tally.embedded,
            tally.skipped,
            tally.failed(),
            passes,
            if settled {
                ""
            } else {
                " (still changing: run again)"
            },
            started.elapsed().as_secs_f64()
        );
        for (id, msg) in tally.failures.iter().take(20) {
            println!("  failed: item {id}: {msg}");
        }
        if !alias_note.is_empty() {
            println!("{alias_note}");
        }
    }
    Ok(if tally.failed() > 0 { 1 } else { 0 })
}

/// One pass over the items (all of them, or those changed since `since`). Returns how many items
/// it saw.
async fn pass(
    catalogue: &Catalogue,
    analyser: &Arc<Analyser>,
    args: &ReindexArgs,
    since: Option<DateTime<Utc>>,
    tally: &mut Tally,
    progress: &mut Progress,
) -> anyhow::Result<usize> {
    let mut after = None;
    let mut seen = 0;
    loop {
        let page = catalogue.store().items_after(after, since, PAGE).await?;
        let Some(last) = page.last() else {
            return Ok(seen);
        };
        after = Some(last.id);
        seen += page.len();
        // A changed item must be embedded again even if the target has a vector for it.
        let recheck = since.is_some();
        let outcomes: Vec<(uuid::Uuid, Outcome)> = futures::stream::iter(page)
            .map(|item| async move {
                let id = item.id;
                (
                    id,
                    reindex_item(catalogue, analyser, item, recheck, args.adopt).await,
                )
            })
            .buffer_unordered(args.concurrency.max(1))
            .collect()
            .await;
        for (id, outcome) in outcomes {
            tally.seen += 1;
            match outcome {
                Outcome::Embedded => tally.embedded += 1,
                Outcome::Skipped => tally.skipped += 1,
                Outcome::Failed(code, msg) => {
                    tracing::warn!(item = %id, code, error = msg, "reindex: item failed");
                    *tally.failed.entry(code).or_default() += 1;
                    tally.failures.push((id, msg));
                }
            }
        }
        progress.update(tally.seen, tally.total, || tally.shown());
    }
}

async fn reindex_item(
    catalogue: &Catalogue,
    analyser: &Analyser,
    item: Item,
    recheck: bool,
    adopt: bool,
) -> Outcome {
    let (store, index) = (catalogue.store(), catalogue.index());
    let model = analyser.model_id();
    let result: Result<Outcome, Failure> = async {
        // An item of this model stored before features were kept is embedded again to get them
        // (asked only of items that would otherwise be skipped).
        if !recheck
            && let Some(p) = index.get_point(item.id).await?
            && p.model_id.as_deref() == Some(model)
            && !(analyser.makes_features()
                && item.model_id == model
                && store.item_features(item.id).await?.is_none())
        {
            if adopt && item.model_id != model {
                store
                    .adopt_embedding(item.id, model, &p.vector, None)
                    .await?;
            }
            return Ok(Outcome::Skipped);
        }
        let bytes = match item.source_url.as_deref() {
            Some(url) if item.source_kind == "url" => analyser.fetcher.fetch(url).await?,
            _ => store.upload_bytes(item.job_id).await?.ok_or_else(|| {
                Failure::permanent(
                    lookalike_core::codes::job::UPLOAD_MISSING,
                    "the uploaded bytes of this item are gone",
                )
            })?,
        };
        let analysis = analyser.analyse(bytes, false, Priority::Ingest).await?;
        // Without `adopt` (same model) this fills in the features of items stored before they
        // were kept.
        catalogue
            .reembed(
                &item,
                model,
                analysis.embedding,
                analysis.features.as_deref(),
                adopt,
            )
            .await?;
        Ok(Outcome::Embedded)
    }
    .await;
    result.unwrap_or_else(|e| Outcome::Failed(e.code.to_string(), e.message))
}

/// The new model's prototypes: per provided category, the sum of its items' vectors in the target.
async fn rebuild_prototypes(
    store: &Store,
    index: &dyn VectorIndex,
    model: &str,
) -> anyhow::Result<usize> {
    let mut sums: BTreeMap<String, (Vec<f32>, i32)> = BTreeMap::new();
    let mut after = None;
    loop {
        let page = store.items_after(after, None, 1024).await?;
        let Some(last) = page.last() else { break };
        after = Some(last.id);
        for item in page {
            let (Some(category), CategorySource::Provided) = (item.category, item.category_source)
            else {
                continue;
            };
            let Some(point) = index.get_point(item.id).await? else {
                continue;
            };
            if point.model_id.as_deref() != Some(model) {
                continue;
            }
            let (sum, n) = sums
                .entry(category)
                .or_insert_with(|| (vec![0.0; point.vector.len()], 0));
            sum.iter_mut().zip(&point.vector).for_each(|(s, v)| *s += v);
            *n += 1;
        }
    }
    let rows: Vec<(String, Vec<f32>, i32)> =
        sums.into_iter().map(|(c, (s, n))| (c, s, n)).collect();
    store.replace_prototypes(model, &rows).await?;
    Ok(rows.len())
}
