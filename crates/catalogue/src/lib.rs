//! The catalogue: the one place that writes items, so that the vector index and the database stay
//! in step. Ingest jobs, search-with-`add`, deletion, re-classification, metadata changes and
//! `lookalike reindex` all write through [`Catalogue`].
//!
//! The rule, written once here:
//! - **vector first, then row.** An item row without its vector is invisible to search; a vector
//!   without its row would be a ghost result. So the vector is written (or deleted) first and the
//!   row follows; a crash in between leaves at worst a vector that the job's redelivery overwrites.
//! - **a failed row write puts the index back** the way the database still has it (the old vector,
//!   category or metadata), or removes a vector whose row can never be written.
//!
//! Near-duplicates are decided here too, as an item is committed (`with_dedupe`): an image whose
//! bytes equal a stored item's, or whose embedding scores at least the threshold against one, joins
//! that item's duplicate group (a new group named by the stored item's id when it was in none); of
//! several within the threshold, the earliest stored. Every
//! member keeps its own vector, flagged with the group in its attrs; a group left with one member
//! (a deletion, a resubmitted image that no longer matches) is dissolved.
//!
//! `tests/rules.rs` checks each write against the real Postgres and the embedded index, with an
//! index that can be told to fail.

use std::sync::Arc;

use lookalike_index::{GroupBy, IndexError, Point, SearchRequest, VectorIndex};
use lookalike_store::{Duplicate, Item, NewItem, NewJob, Store, StoreError};
use lookalike_telemetry::{Stage, time_stage};
use serde_json::Value;
use uuid::Uuid;

/// Why a catalogue write did not happen. Either part can fail; the caller decides what that means
/// to its own client (a retried job, a 503).
#[derive(Debug, thiserror::Error)]
pub enum CatalogueError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Index(#[from] IndexError),
}

pub type Result<T> = std::result::Result<T, CatalogueError>;

/// How many near neighbours within `dedupe.threshold` a new image is compared against to find the
/// earliest stored one (more copies than this of one photo are found through their group anyway).
const DUPLICATE_CANDIDATES: usize = 16;

/// The items: their rows in Postgres and their vectors in the index.
#[derive(Clone)]
pub struct Catalogue {
    store: Store,
    index: Arc<dyn VectorIndex>,
    /// `dedupe.threshold` when near-duplicates are grouped at ingest.
    dedupe: Option<f32>,
}

/// Who an item is, besides its id: what a search result shows and what results are grouped by.
#[derive(Debug, Clone, Copy)]
pub struct Names<'a> {
    pub external_id: Option<&'a str>,
    /// The product the image shows: grouped searches answer one result per product
    /// (`lookalike_index::GroupBy::Product` reads it from the attrs).
    pub product_id: Option<&'a str>,
    /// Its near-duplicate group: `collapse=true` answers one result per group
    /// (`lookalike_index::GroupBy::Duplicate`).
    pub duplicate_group: Option<Uuid>,
}

impl<'a> Names<'a> {
    pub fn of(item: &'a Item) -> Self {
        Names {
            external_id: item.external_id.as_deref(),
            product_id: item.product_id.as_deref(),
            duplicate_group: item.duplicate_group,
        }
    }
}

/// What a search result shows besides id, score and category, kept with the vector so that
/// queries are answered from the index alone (see `lookalike_index::Point::attrs`). `product_id` is
/// written only when the item names a product, so points of items without one look as they did
/// before products existed (and each is a group of its own).
pub fn point_attrs(names: Names<'_>, metadata: &Value) -> Value {
    let mut attrs = serde_json::json!({"external_id": names.external_id, "metadata": metadata});
    if let Some(product) = names.product_id {
        attrs[GroupBy::Product.attr()] = product.into();
    }
    if let Some(group) = names.duplicate_group {
        attrs[GroupBy::Duplicate.attr()] = group.to_string().into();
    }
    attrs
}

/// An item's point in the index: its vector with what filters and results need.
pub fn item_point(
    id: Uuid,
    vector: Vec<f32>,
    category: Option<String>,
    model_id: &str,
    names: Names<'_>,
    metadata: &Value,
) -> Point {
    Point {
        id,
        vector,
        category,
        model_id: model_id.to_string(),
        attrs: Some(point_attrs(names, metadata)),
    }
}

/// The result of [`Catalogue::change_metadata`].
#[derive(Debug)]
pub enum MetadataChange<E> {
    /// Index and row both hold the new metadata.
    Changed,
    /// No such item (or it is being deleted: its row is there, its vector already gone).
    NotFound,
    /// The caller's `apply` refused the change; nothing was written.
    Rejected(E),
}

impl Catalogue {
    pub fn new(store: Store, index: Arc<dyn VectorIndex>) -> Self {
        Catalogue {
            store,
            index,
            dedupe: None,
        }
    }

    /// Groups near-duplicates at ingest: `threshold` is `dedupe.threshold` (`None`: off).
    pub fn with_dedupe(mut self, threshold: Option<f32>) -> Self {
        self.dedupe = threshold;
        self
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn index(&self) -> &Arc<dyn VectorIndex> {
        &self.index
    }

    /// Stores a finished job's item: vector first, then the item and job state in one transaction.
    /// A job reusing an item's `external_id` updates that item; the database lock taken by
    /// `begin_item` is held across the index write, so concurrent updates of one item cannot leave
    /// the index holding a different vector than the database. Returns the item id (the job id, or
    /// the id of the item it updated).
    pub async fn commit(&self, job_id: Uuid, mut item: NewItem) -> Result<Uuid> {
        let write = self.store.begin_item(job_id).await?;
        let item_id = write.item_id;
        if let Some(threshold) = self.dedupe {
            item.duplicate = self
                .find_duplicate(
                    item_id,
                    &item.content_sha256,
                    &item.model_id,
                    &item.vector,
                    threshold,
                )
                .await?;
        }
        let external_id = write.external_id.as_deref();
        let restore = write.replaces.as_ref().and_then(|old| {
            Some(item_point(
                old.id,
                old.embedding.clone()?,
                old.category.clone(),
                &old.model_id,
                Names {
                    external_id,
                    product_id: old.product_id.as_deref(),
                    duplicate_group: old.duplicate_group,
                },
                &old.metadata,
            ))
        });
        let point = item_point(
            item_id,
            item.vector.clone(),
            item.category.clone(),
            &item.model_id,
            Names {
                external_id,
                product_id: write.product_id.as_deref(),
                duplicate_group: item.duplicate.map(|d| d.group),
            },
            &write.metadata,
        );
        let old_group = write.replaces.as_ref().and_then(|old| old.duplicate_group);
        {
            let _timed = time_stage(Stage::Index);
            self.index.upsert(vec![point]).await?;
        }
        let committed = {
            let _timed = time_stage(Stage::Commit);
            write.commit(&item).await
        };
        if let Err(e) = committed {
            match restore {
                Some(old) => {
                    // Best effort: if this fails too, the job's redelivery writes the vector again.
                    if let Err(undo) = self.index.upsert(vec![old]).await {
                        tracing::error!(item_id = %item_id, error = %undo, "could not restore the replaced item's vector");
                    }
                }
                None if item_id == job_id && matches!(e, StoreError::Conflict(_)) => {
                    // The item will never be stored: no ghost result.
                    self.index.delete(&[job_id]).await?;
                }
                None => {}
            }
            return Err(e.into());
        }
        if item_id != job_id {
            tracing::info!(item = %item_id, "external_id already in use: that item was updated");
        }
        if let Some(d) = item.duplicate {
            tracing::info!(item = %item_id, duplicate_of = %d.of, score = d.score, group = %d.group, "near-duplicate of a stored item: joined its group");
            // The matched item starts the group when it was in none.
            if d.group == d.of {
                self.set_duplicate_group(d.of, Some(d.group), None).await?;
            }
        }
        if let Some(old) = old_group
            && item.duplicate.map(|d| d.group) != Some(old)
        {
            self.tidy_group(old).await?;
        }
        Ok(item_id)
    }

    /// The stored item a new image duplicates: one with identical bytes, else the earliest stored of
    /// its near neighbours (same model, any category) scoring at least `threshold`; never one an
    /// operator split from it.
    ///
    /// Earliest, not nearest: every candidate is within the threshold, and the earliest is the one
    /// the later copies were most likely made from. Taking the nearest would let the order copies
    /// arrive in decide the groups: a re-encode of a crop that missed the original's group would
    /// join the crop's, though it duplicates the original too.
    async fn find_duplicate(
        &self,
        item_id: Uuid,
        content_sha256: &str,
        model_id: &str,
        vector: &[f32],
        threshold: f32,
    ) -> Result<Option<Duplicate>> {
        let splits = self.store.split_partners(item_id).await?;
        let same_bytes = self
            .store
            .item_with_content(content_sha256, model_id, item_id)
            .await?;
        let matched = match same_bytes.filter(|s| !splits.contains(&s.id)) {
            Some(same) => Some((same, 1.0)),
            None => {
                let mut exclude = splits;
                exclude.push(item_id);
                let hits = self
                    .index
                    .search(SearchRequest {
                        min_score: Some(threshold),
                        model_id: Some(model_id.to_string()),
                        exclude,
                        ..SearchRequest::new(vector.to_vec(), DUPLICATE_CANDIDATES)
                    })
                    .await?;
                let ids: Vec<Uuid> = hits.iter().map(|h| h.id).collect();
                // A vector whose row is gone (being deleted) is no one to join.
                let rows = self.store.get_items(&ids).await?;
                rows.into_iter()
                    .min_by_key(|i| (i.created_at, i.id))
                    .and_then(|earliest| {
                        let score = hits.iter().find(|h| h.id == earliest.id)?.score;
                        Some((earliest, score))
                    })
            }
        };
        Ok(matched.map(|(matched, score)| Duplicate {
            group: matched.duplicate_group.unwrap_or(matched.id),
            of: matched.id,
            score,
        }))
    }

    /// Moves an item into a duplicate group (or out of any: `None`), in the index and its row, under
    /// the row's lock so a concurrent metadata change cannot write stale attrs over it.
    pub async fn set_duplicate_group(
        &self,
        id: Uuid,
        group: Option<Uuid>,
        matched: Option<(Uuid, f32)>,
    ) -> Result<()> {
        let Some(change) = self.store.begin_metadata_change(id).await? else {
            return Ok(());
        };
        let names = Names {
            external_id: change.external_id.as_deref(),
            product_id: change.product_id.as_deref(),
            duplicate_group: group,
        };
        match self
            .index
            .set_attrs(id, point_attrs(names, &change.metadata))
            .await
        {
            Ok(()) => {}
            Err(IndexError::NotFound(_)) => return Ok(()), // being deleted
            Err(e) => return Err(e.into()),
        }
        change.commit_group(group, matched).await?;
        Ok(())
    }

    /// `lookalike dedupe`: the ingest rule applied to an item already stored and in no group (its
    /// stored vector against every other item). Returns the group it joined.
    pub async fn dedupe_stored(&self, item: &Item) -> Result<Option<Duplicate>> {
        let Some(threshold) = self.dedupe else {
            return Ok(None);
        };
        if item.duplicate_group.is_some() {
            return Ok(None);
        }
        let Some(vector) = self.index.get_vector(item.id).await? else {
            return Ok(None);
        };
        let Some(d) = self
            .find_duplicate(
                item.id,
                &item.content_sha256,
                &item.model_id,
                &vector,
                threshold,
            )
            .await?
        else {
            return Ok(None);
        };
        self.set_duplicate_group(item.id, Some(d.group), Some((d.of, d.score)))
            .await?;
        if d.group == d.of {
            self.set_duplicate_group(d.of, Some(d.group), None).await?;
        }
        tracing::info!(item = %item.id, duplicate_of = %d.of, score = d.score, group = %d.group, "near-duplicate of a stored item: joined its group");
        Ok(Some(d))
    }

    /// A group left with one member is no group: that member leaves it.
    async fn tidy_group(&self, group: Uuid) -> Result<()> {
        let members = self.store.duplicate_members(group).await?;
        if let [last] = members.as_slice() {
            self.set_duplicate_group(last.id, None, None).await?;
            tracing::info!(group = %group, item = %last.id, "duplicate group dissolved: one member left");
        }
        Ok(())
    }

    /// "Not a duplicate": the item leaves its group, and is never grouped with its former members
    /// again. Returns `false` when there is no such item.
    pub async fn split_duplicate(&self, id: Uuid) -> Result<bool> {
        let Some(item) = self.store.get_item(id).await? else {
            return Ok(false);
        };
        let Some(group) = item.duplicate_group else {
            return Ok(true);
        };
        let others: Vec<Uuid> = self
            .store
            .duplicate_members(group)
            .await?
            .iter()
            .map(|m| m.id)
            .filter(|m| *m != id)
            .collect();
        self.store.record_splits(id, &others).await?;
        self.set_duplicate_group(id, None, None).await?;
        self.tidy_group(group).await?;
        tracing::info!(item = %id, group = %group, "split from its duplicate group by an operator");
        Ok(true)
    }

    /// Records a job that ran inside a request (a search with `add=true`): the job row keeps the
    /// uploaded bytes and the item's history like any other job's, and ends succeeded with the item.
    pub async fn add_finished(&self, job: NewJob, item: NewItem) -> Result<Uuid> {
        self.store
            .create_jobs(std::slice::from_ref(&job), None)
            .await?;
        // Just created with a fresh id, so the claim runs it: attempt 1, status running.
        self.store.claim_job(job.id).await?;
        self.commit(job.id, item).await
    }

    /// Removes an item, its vector and its thumbnail; `false` when there is no such item. The vector
    /// goes first: a row without a vector is invisible to search, while a vector without its row
    /// would show up as a ghost result.
    pub async fn delete(&self, id: Uuid) -> Result<bool> {
        let Some(item) = self.store.get_item(id).await? else {
            return Ok(false);
        };
        // The vector comes back with the row's removal: it leaves its category's prototype.
        let vector = self.index.get_vector(id).await?;
        self.index.delete(&[id]).await?;
        let deleted = self.store.delete_item(id, vector.as_deref()).await?;
        if deleted {
            tracing::info!(item_id = %id, "item deleted");
            if let Some(group) = item.duplicate_group {
                self.tidy_group(group).await?;
            }
        }
        Ok(deleted)
    }

    /// Gives a predicted (or missing) category a new prediction: index first, then the row. Items
    /// with a provided category are not touched (the store's update leaves them alone, and the index
    /// write is skipped for them).
    pub async fn set_predicted_category(
        &self,
        item: &Item,
        category: Option<String>,
        confidence: Option<f32>,
        head_version: Option<i32>,
    ) -> Result<()> {
        if item.category_source == lookalike_store::CategorySource::Provided {
            return Ok(());
        }
        self.index.set_category(item.id, category.clone()).await?;
        if let Err(e) = self
            .store
            .set_predicted_category(item.id, category.as_deref(), confidence, head_version)
            .await
        {
            if let Err(undo) = self
                .index
                .set_category(item.id, item.category.clone())
                .await
            {
                tracing::error!(item_id = %item.id, error = %undo, "could not restore the index's category after a failed change");
            }
            return Err(e.into());
        }
        Ok(())
    }

    /// Changes an item's metadata: `apply` turns the stored metadata into the new one (or refuses),
    /// then the index takes it and the row follows, under the row's lock.
    pub async fn change_metadata<E>(
        &self,
        id: Uuid,
        apply: impl FnOnce(&Value) -> std::result::Result<Value, E>,
    ) -> Result<MetadataChange<E>> {
        let Some(change) = self.store.begin_metadata_change(id).await? else {
            return Ok(MetadataChange::NotFound);
        };
        let before = change.metadata.clone();
        let metadata = match apply(&before) {
            Ok(m) => m,
            Err(e) => return Ok(MetadataChange::Rejected(e)),
        };
        let (external_id, product_id) = (change.external_id.clone(), change.product_id.clone());
        let names = Names {
            external_id: external_id.as_deref(),
            product_id: product_id.as_deref(),
            duplicate_group: change.duplicate_group,
        };
        match self
            .index
            .set_attrs(id, point_attrs(names, &metadata))
            .await
        {
            Ok(()) => {}
            // The row is there but its vector is not: the item is being deleted.
            Err(IndexError::NotFound(_)) => return Ok(MetadataChange::NotFound),
            Err(e) => return Err(e.into()),
        }
        if let Err(e) = change.commit(&metadata).await {
            if let Err(undo) = self.index.set_attrs(id, point_attrs(names, &before)).await {
                tracing::error!(item_id = %id, error = %undo, "could not restore the index's metadata after a failed change");
            }
            return Err(e.into());
        }
        tracing::info!(item_id = %id, "item metadata changed");
        Ok(MetadataChange::Changed)
    }

    /// Writes an item's new embedding (`lookalike reindex`): the vector first, then the row. With
    /// `adopt` the row moves to `model_id` (its vector, features and model); without, the item keeps
    /// its model and only gains the `features` it was stored without.
    pub async fn reembed(
        &self,
        item: &Item,
        model_id: &str,
        vector: Vec<f32>,
        features: Option<&[f32]>,
        adopt: bool,
    ) -> Result<()> {
        self.index
            .upsert(vec![item_point(
                item.id,
                vector.clone(),
                item.category.clone(),
                model_id,
                Names::of(item),
                &item.metadata,
            )])
            .await?;
        if adopt {
            self.store
                .adopt_embedding(item.id, model_id, &vector, features)
                .await?;
        } else if let Some(features) = features {
            self.store.set_features(item.id, model_id, features).await?;
        }
        Ok(())
    }
}
