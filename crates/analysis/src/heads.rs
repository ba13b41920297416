//! The trained classifier head in a running service: which version each process uses, and when it is
//! retrained.
//!
//! - Every process (API, worker, `serve`) keeps the newest stored head of its model in [`Heads`] and
//!   looks for a newer version every `classify.head_check_ms`, so all processes classify alike within
//!   a few seconds of a training.
//! - Processes that consume jobs also check whether a training is due (the labelled items changed by
//!   `head_retrain_min` and `head_retrain_share` since the last one). [`train_now`] trains under a
//!   database lock, so with several workers one trains and the others load its result.
//! - A new head changes no stored prediction: items keep the category they were given until
//!   `lookalike reclassify` asks again (and records the head version it used).

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use lookalike_classifier::{Head, HeadInput, Labelled, TrainSettings};
use lookalike_core::config::Classify;
use lookalike_store::{NewHead, Store, StoreError, StoredHead};
use tokio_util::sync::CancellationToken;

/// A head loaded from the store.
#[derive(Debug)]
pub struct LoadedHead {
    pub version: i32,
    pub head: Head,
    pub trained_on: i32,
    pub held_out: i32,
    pub held_out_accuracy: Option<f32>,
    pub training_ms: i32,
    pub created_at: DateTime<Utc>,
}

impl LoadedHead {
    fn from_stored(stored: StoredHead) -> Result<Self, serde_json::Error> {
        Ok(LoadedHead {
            version: stored.version,
            head: serde_json::from_value(stored.head)?,
            trained_on: stored.trained_on,
            held_out: stored.held_out,
            held_out_accuracy: stored.held_out_accuracy,
            training_ms: stored.training_ms,
            created_at: stored.created_at,
        })
    }

    /// What the classifier's decision needs of it.
    pub fn input(&self) -> HeadInput<'_> {
        HeadInput {
            head: &self.head,
            version: self.version,
            labels_per_category: self.trained_on as f32 / self.head.categories.len().max(1) as f32,
        }
    }
}

/// The head a process classifies with (none until one is trained).
#[derive(Default)]
pub struct Heads {
    current: RwLock<Option<Arc<LoadedHead>>>,
}

impl Heads {
    pub fn current(&self) -> Option<Arc<LoadedHead>> {
        self.current.read().unwrap().clone()
    }

    /// Loads the newest stored head when it is newer than the one in use. Answers whether it changed.
    pub async fn refresh(&self, store: &Store, model_id: &str) -> Result<bool, StoreError> {
        let newest = store.latest_head_version(model_id).await?;
        let have = self.current().map(|h| h.version);
        if newest.is_none() || newest <= have {
            return Ok(false);
        }
        match store.latest_head(model_id).await? {
            Some(stored) => Ok(self.install(stored)),
            None => Ok(false),
        }
    }

    fn install(&self, stored: StoredHead) -> bool {
        let version = stored.version;
        match LoadedHead::from_stored(stored) {
            Ok(head) => {
                let mut current = self.current.write().unwrap();
                if current.as_ref().is_some_and(|c| c.version >= version) {
                    return false;
                }
                tracing::info!(
                    version,
                    trained_on = head.trained_on,
                    held_out_accuracy = head.held_out_accuracy,
                    "classifier head loaded"
                );
                *current = Some(Arc::new(head));
                true
            }
            Err(e) => {
                tracing::error!(version, error = %e, "stored classifier head is unreadable; keeping the one in use");
                false
            }
        }
    }
}

/// What [`train_now`] did.
#[derive(Debug)]
pub enum TrainOutcome {
    Trained(Arc<LoadedHead>),
    /// Another process holds the training lock.
    Busy,
    /// Not enough labels: fewer than `head_min_labels` items, or fewer than two categories.
    TooFewLabels {
        labelled: usize,
        categories: usize,
    },
}

/// Why a training runs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Reason {
    /// Asked for (`POST /v1/classifier/train`): always trains.
    Requested,
    /// The labels changed enough ([`due`]): trains only if no other process did meanwhile.
    Due,
}

/// Trains a head on every labelled item of the model now (under the training lock), stores it as the
/// next version and puts it in use in this process.
pub async fn train_now(
    store: &Store,
    heads: &Heads,
    model_id: &str,
    c: &Classify,
    reason: Reason,
) -> Result<TrainOutcome, StoreError> {
    let Some(mut lock) = store.begin_training(model_id).await? else {
        return Ok(TrainOutcome::Busy);
    };
    let latest = lock.latest_trained_on().await?;
    let examples = lock.examples().await?;
    // Two workers may both have found a training due; the second to get the lock finds the first's
    // head and loads it instead of training the same labels again.
    if reason == Reason::Due
        && let Some(trained_on) = latest
        && !changed_enough(examples.len() as i64, trained_on, c)
    {
        drop(lock);
        heads.refresh(store, model_id).await?;
        return Ok(match heads.current() {
            Some(h) => TrainOutcome::Trained(h),
            None => TrainOutcome::Busy,
        });
    }
    let mut categories: Vec<&str> = examples.iter().map(|e| e.category.as_str()).collect();
    categories.sort_unstable();
    categories.dedup();
    let (labelled, category_count) = (examples.len(), categories.len());
    if labelled < c.head_min_labels as usize || category_count < 2 {
        return Ok(TrainOutcome::TooFewLabels {
            labelled,
            categories: category_count,
        });
    }
    let settings = TrainSettings {
        l2: c.head_l2,
        shrinkage: c.head_shrinkage,
        ..Default::default()
    };
    let started = Instant::now();
    // Seconds of CPU for a large catalogue: off the async runtime.
    let fitted = tokio::task::spawn_blocking(move || {
        let labelled: Vec<Labelled> = examples
            .iter()
            .map(|e| Labelled {
                embedding: &e.embedding,
                features: e.features.as_deref(),
                category: &e.category,
            })
            .collect();
        lookalike_classifier::fit_labelled(&labelled, &settings)
    })
    .await
    .expect("head training panicked");
    let Some(fitted) = fitted else {
        return Ok(TrainOutcome::TooFewLabels {
            labelled,
            categories: category_count,
        });
    };
    let training_ms = started.elapsed().as_millis() as i32;
    let stored = lock
        .save(&NewHead {
            head: serde_json::to_value(&fitted.head).expect("a head serialises"),
            trained_on: labelled as i32,
            held_out: fitted.held_out as i32,
            held_out_accuracy: fitted.held_out_accuracy,
            training_ms,
        })
        .await?;
    tracing::info!(
        version = stored.version,
        trained_on = labelled,
        categories = category_count,
        reads = ?fitted.head.reads,
        held_out_accuracy = fitted.held_out_accuracy,
        iterations = fitted.iterations,
        training_ms,
        "classifier head trained"
    );
    heads.install(stored);
    Ok(match heads.current() {
        Some(h) => TrainOutcome::Trained(h),
        None => TrainOutcome::Busy,
    })
}

/// Whether a head is due with `labelled` items labelled: enough labels, and none in use or the
/// labels changed enough since the one in use was trained.
fn due(labelled: i64, heads: &Heads, c: &Classify) -> bool {
    if labelled < c.head_min_labels as i64 {
        return false;
    }
    match heads.current() {
        None => true,
        Some(h) => changed_enough(labelled, h.trained_on, c),
    }
}

/// Whether `labelled` items differ enough from the `trained_on` of a head to train a new one.
fn changed_enough(labelled: i64, trained_on: i32, c: &Classify) -> bool {
    let changed = (labelled - trained_on as i64).unsigned_abs();
    changed >= c.head_retrain_min as u64
        && changed as f64 >= c.head_retrain_share as f64 * trained_on as f64
}

/// Keeps `heads` current until shutdown; with `may_train`, also trains when one is due.
pub async fn maintain(
    store: Store,
    heads: Arc<Heads>,
    model_id: String,
    c: Classify,
    may_train: bool,
    shutdown: CancellationToken,
) {
    let every = Duration::from_millis(c.head_check_ms.max(100));
    // The label count (from the category prototypes) at which a training could not be done: too
    // few labelled items with a stored embedding (items kept from before embeddings were stored)
    // or one category only. No new attempt until the labels change, so a worker does not re-read
    // them at every check.
    let mut too_few_at: Option<i64> = None;
    loop {
        if let Err(e) = heads.refresh(&store, &model_id).await {
            tracing::debug!(error = %e, "could not look for a newer classifier head");
        }
        if may_train {
            match store.labelled_count(&model_id).await {
                Ok(count) if Some(count) == too_few_at => {}
                Ok(count) if due(count, &heads, &c) => {
                    match train_now(&store, &heads, &model_id, &c, Reason::Due).await {
                        Ok(TrainOutcome::TooFewLabels {
                            labelled,
                            categories,
                        }) => {
                            tracing::info!(
                                labelled,
                                categories,
                                counted = count,
                                "classifier head due but too few labelled items with an embedding, or one \
                                 category only; waiting for the labels to change"
                            );
                            too_few_at = Some(count);
                        }
                        Ok(TrainOutcome::Busy) | Ok(TrainOutcome::Trained(_)) => too_few_at = None,
                        Err(e) => tracing::warn!(error = %e, "classifier head training failed"),
                    }
                }
                Ok(_) => {}
                Err(e) => tracing::debug!(error = %e, "could not check whether a head is due"),
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}
