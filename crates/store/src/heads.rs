//! Trained classifier heads and the labelled examples they learn from.
//!
//! One process trains at a time per model: [`Store::begin_training`] takes a transaction-scoped
//! advisory lock, so a second worker that wants to train at the same moment simply does not, and the
//! new version is written in the same transaction that held the lock.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::FromRow;
use uuid::Uuid;

use crate::{Result, Store};

/// A stored head (the head itself is `lookalike_classifier::Head` as JSON).
#[derive(Debug, Clone, Serialize, FromRow)]
pub struct StoredHead {
    pub model_id: String,
    pub version: i32,
    pub head: serde_json::Value,
    pub trained_on: i32,
    pub held_out: i32,
    pub held_out_accuracy: Option<f32>,
    pub training_ms: i32,
    pub created_at: DateTime<Utc>,
}

/// What a training run produced, to be stored.
#[derive(Debug, Clone)]
pub struct NewHead {
    pub head: serde_json::Value,
    pub trained_on: i32,
    pub held_out: i32,
    pub held_out_accuracy: Option<f32>,
    pub training_ms: i32,
}

/// A labelled item as training sees it.
#[derive(Debug, Clone, FromRow)]
pub struct LabelledExample {
    pub id: Uuid,
    pub category: String,
    pub embedding: Vec<f32>,
    /// The model's pooled tokens, when stored.
    pub features: Option<Vec<f32>>,
}

/// The right to train the next head of a model, held until [`Training::save`] or drop.
pub struct Training {
    tx: sqlx::Transaction<'static, sqlx::Postgres>,
    model_id: String,
}

impl Store {
    /// The newest head of a model.
    pub async fn latest_head(&self, model_id: &str) -> Result<Option<StoredHead>> {
        Ok(sqlx::query_as(
            "SELECT model_id, version, head, trained_on, held_out, held_out_accuracy, training_ms,
                    created_at
             FROM classifier_heads WHERE model_id = $1 ORDER BY version DESC LIMIT 1",
        )
        .bind(model_id)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// The newest head's version, cheap enough to ask every few seconds.
    pub async fn latest_head_version(&self, model_id: &str) -> Result<Option<i32>> {
        Ok(
            sqlx::query_scalar("SELECT max(version) FROM classifier_heads WHERE model_id = $1")
                .bind(model_id)
                .fetch_one(&self.pool)
                .await?,
        )
    }

    /// How many items of a model have a provided category (from the prototypes' counts: no scan).
    pub async fn labelled_count(&self, model_id: &str) -> Result<i64> {
        Ok(sqlx::query_scalar(
            "SELECT coalesce(sum(items), 0)::bigint FROM category_prototypes WHERE model_id = $1",
        )
        .bind(model_id)
        .fetch_one(&self.pool)
        .await?)
    }

    /// Takes the training lock of a model, or `None` when another process holds it.
    pub async fn begin_training(&self, model_id: &str) -> Result<Option<Training>> {
        let mut tx = self.pool.begin().await?;
        let got: bool =
            sqlx::query_scalar("SELECT pg_try_advisory_xact_lock(hashtextextended($1, 11))")
                .bind(model_id)
                .fetch_one(&mut *tx)
                .await?;
        Ok(got.then(|| Training {
            tx,
            model_id: model_id.to_string(),
        }))
    }
}

impl Training {
    /// Every labelled item of the model with its embedding, in id order (training is deterministic
    /// for a given set of labels).
    pub async fn examples(&mut self) -> Result<Vec<LabelledExample>> {
        Ok(sqlx::query_as(
            "SELECT id, category, embedding, features FROM items
             WHERE model_id = $1 AND category_source = 'provided' AND category IS NOT NULL
                   AND embedding IS NOT NULL
             ORDER BY id",
        )
        .bind(&self.model_id)
        .fetch_all(&mut *self.tx)
        .await?)
    }

    /// How many labels the newest head was trained on, read under the lock (another process may
    /// have trained just now).
    pub async fn latest_trained_on(&mut self) -> Result<Option<i32>> {
        Ok(sqlx::query_scalar(
            "SELECT trained_on FROM classifier_heads WHERE model_id = $1
             ORDER BY version DESC LIMIT 1",
        )
        .bind(&self.model_id)
        .fetch_optional(&mut *self.tx)
        .await?)
    }

    /// Stores the head as the model's next version and releases the lock.
    pub async fn save(mut self, head: &NewHead) -> Result<StoredHead> {
        let stored = sqlx::query_as(
            "INSERT INTO classifier_heads
                 (model_id, version, head, trained_on, held_out, held_out_accuracy, training_ms)
             SELECT $1, coalesce(max(version), 0) + 1, $2, $3, $4, $5, $6
             FROM classifier_heads WHERE model_id = $1
             RETURNING model_id, version, head, trained_on, held_out, held_out_accuracy,
                       training_ms, created_at",
        )
        .bind(&self.model_id)
        .bind(&head.head)
        .bind(head.trained_on)
        .bind(head.held_out)
        .bind(head.held_out_accuracy)
        .bind(head.training_ms)
        .fetch_one(&mut *self.tx)
        .await?;
        self.tx.commit().await?;
        Ok(stored)
    }
}
