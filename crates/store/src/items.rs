//! Item rows: what a succeeded job produced.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::FromRow;
use uuid::Uuid;

use crate::{Result, Store};

/// Where an item's category came from. Stored as text (`provided`, `predicted`, `none`, the column's
/// CHECK) and answered as such by the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, sqlx::Type)]
#[sqlx(type_name = "text", rename_all = "lowercase")]
#[serde(rename_all = "lowercase")]
pub enum CategorySource {
    /// Given with the job (a label): it feeds the prototypes, the neighbour vote and the head, and
    /// `reclassify` never changes it.
    Provided,
    /// Chosen by the classifier.
    Predicted,
    /// No category: the classifier had nothing to go on (no labelled items, no prior).
    #[sqlx(rename = "none")]
    #[serde(rename = "none")]
    Unassigned,
}

impl CategorySource {
    pub fn as_str(self) -> &'static str {
        match self {
            CategorySource::Provided => "provided",
            CategorySource::Predicted => "predicted",
            CategorySource::Unassigned => "none",
        }
    }
}

#[derive(Debug, Clone, Serialize, FromRow)]
pub struct Item {
    pub id: Uuid,
    pub job_id: Uuid,
    pub external_id: Option<String>,
    /// The product the image shows (several items may share one).
    pub product_id: Option<String>,
    pub source_kind: String,
    pub source_url: Option<String>,
    pub file_name: Option<String>,
    pub content_sha256: String,
    pub byte_size: i64,
    pub format: String,
    pub width: i32,
    pub height: i32,
    pub category: Option<String>,
    pub category_source: CategorySource,
    pub category_confidence: Option<f32>,
    /// The classifier head version that took part in a predicted category.
    pub head_version: Option<i32>,
    pub model_id: String,
    pub metadata: serde_json::Value,
    /// Its near-duplicate group (see [`Duplicate`]), if any.
    pub duplicate_group: Option<Uuid>,
    /// The stored item it matched when it joined the group, and their cosine.
    pub duplicate_of: Option<Uuid>,
    pub duplicate_score: Option<f32>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A new image found to be a near-duplicate (or an identical copy) of a stored item.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Duplicate {
    /// The group it joins: the matched item's group, or, when that item was in none, a new group
    /// named by the matched item's id.
    pub group: Uuid,
    /// The stored item it matched.
    pub of: Uuid,
    /// Their cosine (1 for identical bytes).
    pub score: f32,
}

#[derive(Debug, Clone)]
pub struct NewItem {
    pub content_sha256: String,
    pub byte_size: i64,
    pub format: String,
    pub width: i32,
    pub height: i32,
    pub category: Option<String>,
    pub category_source: CategorySource,
    pub category_confidence: Option<f32>,
    /// The classifier head version that took part in a predicted category.
    pub head_version: Option<i32>,
    pub model_id: String,
    pub thumbnail_jpeg: Vec<u8>,
    /// The embedding; added to its category's prototype when the category was provided.
    pub vector: Vec<f32>,
    /// The model's pooled tokens, what the classifier head learns from (none for a model without a
    /// token output).
    pub features: Option<Vec<f32>>,
    /// The stored item it duplicates, when the catalogue found one.
    pub duplicate: Option<Duplicate>,
}

macro_rules! item_columns {
    () => {
        "id, job_id, external_id, product_id, source_kind, source_url, file_name, content_sha256, byte_size, format, \
         width, height, category, category_source, category_confidence, head_version, model_id, metadata, \
         duplicate_group, duplicate_of, duplicate_score, created_at, updated_at"
    };
}

/// The item a finishing job is about to write, with the database lock that keeps it consistent with
/// the vector index: see [`Store::begin_item`].
pub struct ItemWrite {
    tx: sqlx::Transaction<'static, sqlx::Postgres>,
    job_id: Uuid,
    /// The item id to write: the job id for a new item, or the id of the item whose `external_id` the
    /// job reuses.
    pub item_id: Uuid,
    /// The item being replaced, when the job reuses an item's `external_id`.
    pub replaces: Option<Replaced>,
    /// The job's `external_id`, `product_id` and `metadata`, which the item takes.
    pub external_id: Option<String>,
    pub product_id: Option<String>,
    pub metadata: serde_json::Value,
}

/// What an item looked like before a job with its `external_id` replaced it.
#[derive(Debug, Clone, FromRow)]
pub struct Replaced {
    pub id: Uuid,
    pub category: Option<String>,
    pub category_source: CategorySource,
    pub model_id: String,
    pub embedding: Option<Vec<f32>>,
    pub product_id: Option<String>,
    pub duplicate_group: Option<Uuid>,
    pub metadata: serde_json::Value,
}

impl Store {
    /// Starts writing the item a job produced. A job whose `external_id` already names an item updates
    /// that item (same item id, new image, vector, category and metadata) instead of making a second
    /// one. Jobs sharing an `external_id` are serialised by a transaction-scoped advisory lock held
    /// until [`ItemWrite::commit`] (or drop), so the caller can write the vector in between and the
    /// index ends with the vector of the job the database committed last.
    pub async fn begin_item(&self, job_id: Uuid) -> Result<ItemWrite> {
        let mut tx = self.pool.begin().await?;
        let (external_id, product_id, metadata): (
            Option<String>,
            Option<String>,
            serde_json::Value,
        ) = sqlx::query_as("SELECT external_id, product_id, metadata FROM jobs WHERE id = $1")
            .bind(job_id)
            .fetch_optional(&mut *tx)
            .await?
            .unwrap_or((None, None, serde_json::Value::Null));
        let mut replaces = None;
        if let Some(external_id) = &external_id {
            sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 7))")
                .bind(external_id)
                .execute(&mut *tx)
                .await?;
            replaces = sqlx::query_as::<_, Replaced>(
                "SELECT id, category, category_source, model_id, embedding, product_id, duplicate_group, metadata FROM items
                 WHERE external_id = $1 AND id <> $2 FOR UPDATE",
            )
            .bind(external_id)
            .bind(job_id)
            .fetch_optional(&mut *tx)
            .await?;
        }
        Ok(ItemWrite {
            tx,
            job_id,
            item_id: replaces.as_ref().map_or(job_id, |r| r.id),
            replaces,
            external_id,
            product_id,
            metadata,
        })
    }
}

impl ItemWrite {
    /// Records the item and marks the job succeeded, in one transaction. Running this twice for one
    /// job leaves exactly one item: a new item's id is the job id, an update targets a fixed id.
    pub async fn commit(mut self, item: &NewItem) -> Result<Uuid> {
        let tx = &mut self.tx;
        match &self.replaces {
            None => insert_item(tx, self.job_id, item).await?,
            Some(old) => replace_item(tx, self.job_id, old, item).await?,
        }
        sqlx::query(
            "INSERT INTO thumbnails (item_id, jpeg) VALUES ($1, $2)
             ON CONFLICT (item_id) DO UPDATE SET jpeg = EXCLUDED.jpeg",
        )
        .bind(self.item_id)
        .bind(&item.thumbnail_jpeg)
        .execute(&mut **tx)
        .await?;
        sqlx::query(
            "UPDATE jobs SET status = 'succeeded', item_id = $2, error_code = NULL,
                 error_message = NULL, finished_at = now(), updated_at = now()
             WHERE id = $1",
        )
        .bind(self.job_id)
        .bind(self.item_id)
        .execute(&mut **tx)
        .await?;
        self.tx.commit().await?;
        Ok(self.item_id)
    }
}

/// Binds a stored item's fields in the one order both writes of an item use: content_sha256,
/// byte_size, format, width, height, category, category_source, category_confidence, model_id,
/// embedding, head_version, features, duplicate_group, duplicate_of, duplicate_score (a macro, since the insert and the update are different sqlx query types).
macro_rules! bind_item_fields {
    ($query:expr, $item:expr) => {
        $query
            .bind(&$item.content_sha256)
            .bind($item.byte_size)
            .bind(&$item.format)
            .bind($item.width)
            .bind($item.height)
            .bind(&$item.category)
            .bind($item.category_source)
            .bind($item.category_confidence)
            .bind(&$item.model_id)
            .bind(&$item.vector)
            .bind($item.head_version)
            .bind(&$item.features)
            .bind($item.duplicate.map(|d| d.group))
            .bind($item.duplicate.map(|d| d.of))
            .bind($item.duplicate.map(|d| d.score))
    };
}

async fn insert_item(tx: &mut sqlx::PgConnection, job_id: Uuid, item: &NewItem) -> Result<()> {
    // `xmax = 0` is true only for a freshly inserted row: a redelivered job updates instead, and
    // must not add its vector to the prototype a second time.
    let insert = sqlx::query_scalar(
        "INSERT INTO items (id, job_id, external_id, source_kind, source_url, file_name,
             content_sha256, byte_size, format, width, height, category, category_source,
             category_confidence, model_id, metadata, embedding, head_version, features, product_id,
             duplicate_group, duplicate_of, duplicate_score)
         SELECT j.id, j.id, j.external_id, j.source_kind, j.source_url, j.file_name,
             $2, $3, $4, $5, $6, $7, $8, $9, $10, j.metadata, $11, $12, $13, j.product_id, $14, $15, $16
         FROM jobs j WHERE j.id = $1
         ON CONFLICT (id) DO UPDATE SET
             content_sha256 = EXCLUDED.content_sha256, byte_size = EXCLUDED.byte_size,
             format = EXCLUDED.format, width = EXCLUDED.width, height = EXCLUDED.height,
             category = EXCLUDED.category, category_source = EXCLUDED.category_source,
             category_confidence = EXCLUDED.category_confidence, model_id = EXCLUDED.model_id,
             embedding = EXCLUDED.embedding, head_version = EXCLUDED.head_version,
             features = EXCLUDED.features, duplicate_group = EXCLUDED.duplicate_group,
             duplicate_of = EXCLUDED.duplicate_of, duplicate_score = EXCLUDED.duplicate_score,
             updated_at = now()
         RETURNING (xmax = 0)",
    )
    .bind(job_id);
    let inserted: bool = bind_item_fields!(insert, item).fetch_one(&mut *tx).await?;
    if inserted {
        join_prototype(tx, item).await?;
    }
    Ok(())
}

/// Adds a new item's vector to its category's prototype when its category was provided.
async fn join_prototype(tx: &mut sqlx::PgConnection, item: &NewItem) -> Result<()> {
    if item.category_source == CategorySource::Provided
        && let Some(category) = &item.category
    {
        add_to_prototype(tx, &item.model_id, category, &item.vector, 1).await?;
    }
    Ok(())
}

/// Overwrites an existing item with what a later job with the same `external_id` produced. The row
/// lock taken in [`Store::begin_item`] makes the prototype bookkeeping exact: the old embedding leaves
/// its category's sum and the new one joins, once.
async fn replace_item(
    tx: &mut sqlx::PgConnection,
    job_id: Uuid,
    old: &Replaced,
    item: &NewItem,
) -> Result<()> {
    if old.category_source == CategorySource::Provided
        && let Some(category) = &old.category
    {
        match &old.embedding {
            Some(vector) => add_to_prototype(tx, &old.model_id, category, vector, -1).await?,
            None => tracing::warn!(
                item = %old.id,
                "replaced item has no stored embedding; its old vector stays in the `{category}` prototype"
            ),
        }
    }
    let update = sqlx::query(
        "UPDATE items SET job_id = j.id, source_kind = j.source_kind, source_url = j.source_url,
             file_name = j.file_name, content_sha256 = $3, byte_size = $4, format = $5, width = $6,
             height = $7, category = $8, category_source = $9, category_confidence = $10,
             model_id = $11, metadata = j.metadata, embedding = $12, head_version = $13,
             features = $14, product_id = j.product_id, duplicate_group = $15, duplicate_of = $16,
             duplicate_score = $17, updated_at = now()
         FROM jobs j WHERE items.id = $1 AND j.id = $2",
    )
    .bind(old.id)
    .bind(job_id);
    bind_item_fields!(update, item).execute(&mut *tx).await?;
    join_prototype(tx, item).await
}

impl Store {
    /// An item's pooled tokens (what the classifier head reads), when stored.
    pub async fn item_features(&self, id: Uuid) -> Result<Option<Vec<f32>>> {
        Ok(
            sqlx::query_scalar::<_, Option<Vec<f32>>>("SELECT features FROM items WHERE id = $1")
                .bind(id)
                .fetch_optional(&self.pool)
                .await?
                .flatten(),
        )
    }

    pub async fn get_item(&self, id: Uuid) -> Result<Option<Item>> {
        let sql = concat!("SELECT ", item_columns!(), " FROM items WHERE id = $1");
        Ok(sqlx::query_as(sql)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?)
    }

    /// Another item with exactly these bytes, embedded by this model.
    pub async fn item_with_content(
        &self,
        sha256: &str,
        model_id: &str,
        not: Uuid,
    ) -> Result<Option<Item>> {
        let sql = concat!(
            "SELECT ",
            item_columns!(),
            " FROM items WHERE content_sha256 = $1 AND model_id = $2 AND id <> $3 ORDER BY created_at LIMIT 1"
        );
        Ok(sqlx::query_as(sql)
            .bind(sha256)
            .bind(model_id)
            .bind(not)
            .fetch_optional(&self.pool)
            .await?)
    }

    pub async fn get_items(&self, ids: &[Uuid]) -> Result<Vec<Item>> {
        let sql = concat!("SELECT ", item_columns!(), " FROM items WHERE id = ANY($1)");
        Ok(sqlx::query_as(sql).bind(ids).fetch_all(&self.pool).await?)
    }

    /// The categories that submitters gave (not predicted ones) for some items: the labels that
    /// category prediction may learn from.
    pub async fn provided_categories(&self, ids: &[Uuid]) -> Result<Vec<(Uuid, String)>> {
        Ok(sqlx::query_as(
            "SELECT id, category FROM items
             WHERE id = ANY($1) AND category_source = 'provided' AND category IS NOT NULL",
        )
        .bind(ids)
        .fetch_all(&self.pool)
        .await?)
    }

    pub async fn thumbnail(&self, item_id: Uuid) -> Result<Option<Vec<u8>>> {
        Ok(
            sqlx::query_scalar("SELECT jpeg FROM thumbnails WHERE item_id = $1")
                .bind(item_id)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    pub async fn item_count(&self) -> Result<i64> {
        Ok(sqlx::query_scalar("SELECT count(*) FROM items")
            .fetch_one(&self.pool)
            .await?)
    }
}

/// Adds (`sign` = 1) or removes (`sign` = -1) one vector from a category's running sum.
pub(crate) async fn add_to_prototype(
    tx: &mut sqlx::PgConnection,
    model_id: &str,
    category: &str,
    vector: &[f32],
    sign: i32,
) -> Result<()> {
    let signed: Vec<f32> = vector.iter().map(|v| v * sign as f32).collect();
    sqlx::query(
        "INSERT INTO category_prototypes (model_id, category, vector_sum, items)
         VALUES ($1, $2, $3, $4)
         ON CONFLICT (model_id, category) DO UPDATE SET
             vector_sum = (SELECT array_agg(a + b ORDER BY i)
                           FROM unnest(category_prototypes.vector_sum, EXCLUDED.vector_sum)
                                WITH ORDINALITY AS t(a, b, i)),
             items = category_prototypes.items + EXCLUDED.items,
             updated_at = now()",
    )
    .bind(model_id)
    .bind(category)
    .bind(&signed)
    .bind(sign)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "DELETE FROM category_prototypes WHERE model_id = $1 AND category = $2 AND items <= 0",
    )
    .bind(model_id)
    .bind(category)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// One category's prototype: the sum of its labelled embeddings and how many there are.
#[derive(Debug, Clone, FromRow)]
pub struct Prototype {
    pub category: String,
    pub vector_sum: Vec<f32>,
    pub items: i32,
}

/// A category and how many items it holds.
#[derive(Debug, Clone, Serialize, FromRow)]
pub struct CategoryCount {
    pub name: Option<String>,
    pub items: i64,
    pub labelled: i64,
}

impl Store {
    pub async fn prototypes(&self, model_id: &str) -> Result<Vec<Prototype>> {
        Ok(sqlx::query_as(
            "SELECT category, vector_sum, items FROM category_prototypes WHERE model_id = $1 ORDER BY category",
        )
        .bind(model_id)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Items per category (`name` None = uncategorised), with how many of them were labelled by hand.
    pub async fn category_counts(&self) -> Result<Vec<CategoryCount>> {
        Ok(sqlx::query_as(
            "SELECT category AS name, count(*) AS items,
                    count(*) FILTER (WHERE category_source = 'provided') AS labelled
             FROM items GROUP BY category ORDER BY category NULLS LAST",
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// Deletes an item and its thumbnail, and takes its vector out of its prototype.
    pub async fn delete_item(&self, id: Uuid, vector: Option<&[f32]>) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        let deleted: Option<(Option<String>, CategorySource, String)> = sqlx::query_as(
            "DELETE FROM items WHERE id = $1 RETURNING category, category_source, model_id",
        )
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some((category, source, model_id)) = deleted else {
            return Ok(false);
        };
        if source == CategorySource::Provided
            && let (Some(category), Some(vector)) = (category, vector)
        {
            add_to_prototype(&mut tx, &model_id, &category, vector, -1).await?;
        }
        sqlx::query("UPDATE jobs SET item_id = NULL, updated_at = now() WHERE item_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO item_deletions (item_id) VALUES ($1)
             ON CONFLICT (item_id) DO UPDATE SET deleted_at = now()",
        )
        .bind(id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Whether any item's vector was made by `model_id` (settles `model.reduced_decode = "auto"`).
    pub async fn has_items_of_model(&self, model_id: &str) -> Result<bool> {
        Ok(
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM items WHERE model_id = $1)")
                .bind(model_id)
                .fetch_one(&self.pool)
                .await?,
        )
    }

    /// Items whose category was predicted (or is missing), for reclassification.
    pub async fn unlabelled_item_ids(&self, model_id: &str) -> Result<Vec<Uuid>> {
        Ok(sqlx::query_scalar(
            "SELECT id FROM items WHERE model_id = $1 AND category_source <> 'provided' ORDER BY created_at",
        )
        .bind(model_id)
        .fetch_all(&self.pool)
        .await?)
    }

    pub async fn set_predicted_category(
        &self,
        id: Uuid,
        category: Option<&str>,
        confidence: Option<f32>,
        head_version: Option<i32>,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE items SET category = $2, category_confidence = $3, head_version = $4,
                 category_source = CASE WHEN $2::text IS NULL THEN 'none' ELSE 'predicted' END,
                 updated_at = now()
             WHERE id = $1 AND category_source <> 'provided'",
        )
        .bind(id)
        .bind(category)
        .bind(confidence)
        .bind(head_version)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
