//! Item rows: what a succeeded job produced.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::FromRow;
use uuid::Uuid;

use crate::{Result, Store};

#[derive(Debug, Clone, Serialize, FromRow)]
pub struct Item {
    pub id: Uuid,
    pub job_id: Uuid,
    pub external_id: Option<String>,
    pub source_kind: String,
    pub source_url: Option<String>,
    pub file_name: Option<String>,
    pub content_sha256: String,
    pub byte_size: i64,
    pub format: String,
    pub width: i32,
    pub height: i32,
    pub category: Option<String>,
    pub category_source: String,
    pub category_confidence: Option<f32>,
    pub model_id: String,
    pub metadata: serde_json::Value,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub struct NewItem {
    pub content_sha256: String,
    pub byte_size: i64,
    pub format: String,
    pub width: i32,
    pub height: i32,
    pub category: Option<String>,
    /// `provided`, `predicted` or `none`.
    pub category_source: &'static str,
    pub category_confidence: Option<f32>,
    pub model_id: String,
    pub thumbnail_jpeg: Vec<u8>,
    /// The embedding; added to its category's prototype when the category was provided.
    pub vector: Vec<f32>,
}

macro_rules! item_columns {
    () => {
        "id, job_id, external_id, source_kind, source_url, file_name, content_sha256, byte_size, format, \
         width, height, category, category_source, category_confidence, model_id, metadata, created_at, \
         updated_at"
    };
}

impl Store {
    /// Records the item a job produced and marks the job succeeded, in one transaction. The item id is
    /// the job id, so running this twice for one job leaves exactly one item.
    pub async fn complete_job(&self, job_id: Uuid, item: &NewItem) -> Result<Uuid> {
        let mut tx = self.pool.begin().await?;
        // `xmax = 0` is true only for a freshly inserted row: a redelivered job updates instead, and
        // must not add its vector to the prototype a second time.
        let inserted: bool = sqlx::query_scalar(
            "INSERT INTO items (id, job_id, external_id, source_kind, source_url, file_name,
                 content_sha256, byte_size, format, width, height, category, category_source,
                 category_confidence, model_id, metadata)
             SELECT j.id, j.id, j.external_id, j.source_kind, j.source_url, j.file_name,
                 $2, $3, $4, $5, $6, $7, $8, $9, $10, j.metadata
             FROM jobs j WHERE j.id = $1
             ON CONFLICT (id) DO UPDATE SET
                 content_sha256 = EXCLUDED.content_sha256, byte_size = EXCLUDED.byte_size,
                 format = EXCLUDED.format, width = EXCLUDED.width, height = EXCLUDED.height,
                 category = EXCLUDED.category, category_source = EXCLUDED.category_source,
                 category_confidence = EXCLUDED.category_confidence, model_id = EXCLUDED.model_id,
                 updated_at = now()
             RETURNING (xmax = 0)",
        )
        .bind(job_id)
        .bind(&item.content_sha256)
        .bind(item.byte_size)
        .bind(&item.format)
        .bind(item.width)
        .bind(item.height)
        .bind(&item.category)
        .bind(item.category_source)
        .bind(item.category_confidence)
        .bind(&item.model_id)
        .fetch_one(&mut *tx)
        .await?;
        if inserted
            && item.category_source == "provided"
            && let Some(category) = &item.category
        {
            add_to_prototype(&mut tx, &item.model_id, category, &item.vector, 1).await?;
        }
        sqlx::query(
            "INSERT INTO thumbnails (item_id, jpeg) VALUES ($1, $2)
             ON CONFLICT (item_id) DO UPDATE SET jpeg = EXCLUDED.jpeg",
        )
        .bind(job_id)
        .bind(&item.thumbnail_jpeg)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE jobs SET status = 'succeeded', item_id = $1, error_code = NULL,
                 error_message = NULL, finished_at = now(), updated_at = now()
             WHERE id = $1",
        )
        .bind(job_id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(job_id)
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

    /// A page of items, newest first, optionally of one category.
    pub async fn list_items(
        &self,
        category: Option<&str>,
        limit: i64,
        offset: i64,
    ) -> Result<(Vec<Item>, i64)> {
        let sql = concat!(
            "SELECT ",
            item_columns!(),
            " FROM items WHERE ($1::text IS NULL OR category = $1) ORDER BY created_at DESC, id LIMIT $2 OFFSET $3"
        );
        let items = sqlx::query_as(sql)
            .bind(category)
            .bind(limit)
            .bind(offset)
            .fetch_all(&self.pool)
            .await?;
        let total = sqlx::query_scalar(
            "SELECT count(*) FROM items WHERE ($1::text IS NULL OR category = $1)",
        )
        .bind(category)
        .fetch_one(&self.pool)
        .await?;
        Ok((items, total))
    }

    /// Deletes an item and its thumbnail, and takes its vector out of its prototype.
    pub async fn delete_item(&self, id: Uuid, vector: Option<&[f32]>) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        let deleted: Option<(Option<String>, String, String)> = sqlx::query_as(
            "DELETE FROM items WHERE id = $1 RETURNING category, category_source, model_id",
        )
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some((category, source, model_id)) = deleted else {
            return Ok(false);
        };
        if source == "provided"
            && let (Some(category), Some(vector)) = (category, vector)
        {
            add_to_prototype(&mut tx, &model_id, &category, vector, -1).await?;
        }
        sqlx::query("UPDATE jobs SET item_id = NULL, updated_at = now() WHERE item_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(true)
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
    ) -> Result<()> {
        sqlx::query(
            "UPDATE items SET category = $2, category_confidence = $3,
                 category_source = CASE WHEN $2::text IS NULL THEN 'none' ELSE 'predicted' END,
                 updated_at = now()
             WHERE id = $1 AND category_source <> 'provided'",
        )
        .bind(id)
        .bind(category)
        .bind(confidence)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
