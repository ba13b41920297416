//! Near-duplicate groups: which items show the same photo (see `lookalike_catalogue` for the rule that
//! forms them). A group is named by an opaque uuid kept on each member's row; its canonical member is
//! the first submitted one still there (item ids are time-ordered), so deleting it hands the group to
//! the next without renaming anything.

use uuid::Uuid;

use crate::items::Item;
use crate::{Result, Store};

impl Store {
    /// A group's members, canonical (first submitted) first.
    pub async fn duplicate_members(&self, group: Uuid) -> Result<Vec<Item>> {
        let sql = concat!(
            "SELECT ",
            item_columns!(),
            " FROM items WHERE duplicate_group = $1 ORDER BY id"
        );
        Ok(sqlx::query_as(sql)
            .bind(group)
            .fetch_all(&self.pool)
            .await?)
    }

    /// The items an operator said this one does not duplicate.
    pub async fn split_partners(&self, id: Uuid) -> Result<Vec<Uuid>> {
        Ok(
            sqlx::query_scalar("SELECT other_id FROM duplicate_splits WHERE item_id = $1")
                .bind(id)
                .fetch_all(&self.pool)
                .await?,
        )
    }

    /// Remembers that `id` duplicates none of `others` (both ways round).
    pub async fn record_splits(&self, id: Uuid, others: &[Uuid]) -> Result<()> {
        sqlx::query(
            "INSERT INTO duplicate_splits (item_id, other_id)
             SELECT a, b FROM unnest($2::uuid[]) AS o(other),
                  LATERAL (VALUES ($1, other), (other, $1)) AS pair(a, b)
             ON CONFLICT DO NOTHING",
        )
        .bind(id)
        .bind(others)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// How many groups there are, and how many items are in one.
    pub async fn duplicate_counts(&self) -> Result<(i64, i64)> {
        Ok(sqlx::query_as(
            "SELECT count(DISTINCT duplicate_group), count(duplicate_group) FROM items",
        )
        .fetch_one(&self.pool)
        .await?)
    }
}
