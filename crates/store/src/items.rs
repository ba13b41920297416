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
        sqlx::query(
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
                 updated_at = now()",
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
        .execute(&mut *tx)
        .await?;
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
        Ok(sqlx::query_as(sql).bind(id).fetch_optional(&self.pool).await?)
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
        Ok(sqlx::query_scalar("SELECT jpeg FROM thumbnails WHERE item_id = $1")
            .bind(item_id)
            .fetch_optional(&self.pool)
            .await?)
    }

    pub async fn item_count(&self) -> Result<i64> {
        Ok(sqlx::query_scalar("SELECT count(*) FROM items").fetch_one(&self.pool).await?)
    }
}
