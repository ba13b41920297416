//! What `lookalike reindex` reads and writes: every item in a stable order, and the prototypes of
//! the new model rebuilt in one go (a re-run must not count an item twice).

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::items::Item;
use crate::{Result, Store};

impl Store {
    /// Up to `limit` items with ids above `after`, in id order (keyset paging: stable while items
    /// are added), optionally only those changed since `changed_since`.
    pub async fn items_after(
        &self,
        after: Option<Uuid>,
        changed_since: Option<DateTime<Utc>>,
        limit: i64,
    ) -> Result<Vec<Item>> {
        let sql = concat!(
            "SELECT ",
            item_columns!(),
            " FROM items WHERE ($1::uuid IS NULL OR id > $1)
               AND ($2::timestamptz IS NULL OR updated_at >= $2)
             ORDER BY id LIMIT $3"
        );
        Ok(sqlx::query_as(sql)
            .bind(after)
            .bind(changed_since)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?)
    }

    /// The database's clock: passes are bounded by it, not by this machine's.
    pub async fn now(&self) -> Result<DateTime<Utc>> {
        Ok(sqlx::query_scalar("SELECT now()")
            .fetch_one(&self.pool)
            .await?)
    }

    /// Replaces every prototype of `model_id` with the given per-category sums, atomically.
    pub async fn replace_prototypes(
        &self,
        model_id: &str,
        sums: &[(String, Vec<f32>, i32)],
    ) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM category_prototypes WHERE model_id = $1")
            .bind(model_id)
            .execute(&mut *tx)
            .await?;
        for (category, sum, items) in sums {
            sqlx::query(
                "INSERT INTO category_prototypes (model_id, category, vector_sum, items)
                 VALUES ($1, $2, $3, $4)",
            )
            .bind(model_id)
            .bind(category)
            .bind(sum)
            .bind(items)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Every item ever deleted through the service (a reindex target may hold any of them).
    pub async fn deleted_items(&self) -> Result<Vec<Uuid>> {
        Ok(sqlx::query_scalar("SELECT item_id FROM item_deletions")
            .fetch_all(&self.pool)
            .await?)
    }

    /// Records that an item's current embedding comes from `model_id` (after the switch to it), with
    /// that model's features (`None` when not at hand: the old model's must not stay).
    pub async fn adopt_embedding(
        &self,
        id: Uuid,
        model_id: &str,
        vector: &[f32],
        features: Option<&[f32]>,
    ) -> Result<()> {
        sqlx::query("UPDATE items SET model_id = $2, embedding = $3, features = $4 WHERE id = $1")
            .bind(id)
            .bind(model_id)
            .bind(vector)
            .bind(features)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Stores the features a re-embedding by the item's own model made (fills them in for items
    /// written before features were kept).
    pub async fn set_features(&self, id: Uuid, model_id: &str, features: &[f32]) -> Result<()> {
        sqlx::query("UPDATE items SET features = $3 WHERE id = $1 AND model_id = $2")
            .bind(id)
            .bind(model_id)
            .bind(features)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
