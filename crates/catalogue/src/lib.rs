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
//! `tests/rules.rs` checks each write against the real Postgres and the embedded index, with an
//! index that can be told to fail.

use std::sync::Arc;

use lookalike_index::{GroupBy, IndexError, Point, VectorIndex};
use lookalike_store::{Item, NewItem, NewJob, Store, StoreError};
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

/// The items: their rows in Postgres and their vectors in the index.
#[derive(Clone)]
pub struct Catalogue {
    store: Store,
    index: Arc<dyn VectorIndex>,
}

/// Who an item is, besides its id: what a search result shows and what results are grouped by.
#[derive(Debug, Clone, Copy)]
pub struct Names<'a> {
    pub external_id: Option<&'a str>,
    /// The product the image shows: grouped searches answer one result per product
    /// (`lookalike_index::GroupBy::Product` reads it from the attrs).
    pub product_id: Option<&'a str>,
}

impl<'a> Names<'a> {
    pub fn of(item: &'a Item) -> Self {
        Names {
            external_id: item.external_id.as_deref(),
            product_id: item.product_id.as_deref(),
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
        Catalogue { store, index }
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
    pub async fn commit(&self, job_id: Uuid, item: NewItem) -> Result<Uuid> {
        let write = self.store.begin_item(job_id).await?;
        let item_id = write.item_id;
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
            },
            &write.metadata,
        );
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
        Ok(item_id)
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
        if self.store.get_item(id).await?.is_none() {
            return Ok(false);
        }
        // The vector comes back with the row's removal: it leaves its category's prototype.
        let vector = self.index.get_vector(id).await?;
        self.index.delete(&[id]).await?;
        let deleted = self.store.delete_item(id, vector.as_deref()).await?;
        if deleted {
            tracing::info!(item_id = %id, "item deleted");
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
