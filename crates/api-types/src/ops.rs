//! Operations: `/healthz`, `/readyz`, `/v1/status`, and the classifier head (`/v1/classifier/train`).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `GET /healthz`: the process is up.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Health {
    /// Always `ok`.
    pub status: String,
}

/// `GET /readyz`: every dependency answered, or which did not.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Ready {
    /// `ready` or `not_ready`.
    #[schema(pattern = "^(ready|not_ready)$")]
    pub status: String,
    pub checks: ReadyChecks,
}

/// `ok`, or `error: …` saying why.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ReadyChecks {
    pub database: String,
    pub queue: String,
    pub index: String,
}

/// `GET /v1/status`
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Status {
    pub jobs: JobCounts,
    pub queue: QueueState,
    pub items: i64,
    pub index: IndexState,
    pub model: ModelState,
    pub classifier: ClassifierState,
    pub duplicates: DuplicateCounts,
}

/// Near-duplicate groups in the catalogue (`dedupe`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct DuplicateCounts {
    /// Whether new images are grouped at ingest (`dedupe.enabled`).
    pub enabled: bool,
    /// `dedupe.threshold`: the cosine at or above which an image joins a stored one's group.
    pub threshold: f32,
    pub groups: i64,
    /// Items in a group (every member, canonical ones included).
    pub items_in_groups: i64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct JobCounts {
    pub queued: i64,
    pub processing: i64,
    pub succeeded: i64,
    pub failed: i64,
}

/// The broker's counts, or why they are missing (the status page answers while RabbitMQ is away).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum QueueState {
    Available {
        /// Always `true` here.
        available: bool,
        /// Waiting for a worker.
        ready: u32,
        /// Waiting out a retry delay.
        retrying: u32,
        /// Used up their attempts.
        dead: u32,
        consumers: u32,
    },
    Unavailable {
        /// Always `false` here.
        available: bool,
        error: String,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct IndexState {
    /// `edge` (embedded) or `qdrant` (a server).
    pub backend: String,
    pub points: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ModelState {
    pub id: String,
    pub dim: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ClassifierState {
    pub head_enabled: bool,
    /// Items with a provided category (of this model).
    pub labelled_items: i64,
    /// The trained head in use; null until one is trained.
    #[schema(required = true)]
    pub head: Option<HeadSummary>,
    /// The `classify.*` settings the classifier uses (README, Configuration): what `lookalike eval`
    /// needs to run its folds exactly as this service classifies.
    pub settings: ClassifySettings,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ClassifySettings {
    pub neighbours: usize,
    pub neighbour_temperature: f32,
    pub prototype_temperature: f32,
    pub prototype_weight: f32,
    pub confidence_temperature: f32,
    pub head: bool,
    pub head_l2: f64,
    pub head_shrinkage: f64,
    pub head_takeover: f32,
    pub head_min_labels: u32,
    pub min_confidence: f32,
    pub cover: f32,
    pub max_categories: usize,
}

/// A trained classifier head.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(as = Head)]
pub struct HeadSummary {
    pub version: i32,
    pub categories: usize,
    /// What it learnt from and classifies: the model's pooled tokens (`model.features_output`), or the
    /// embedding (a model without a token output, or labelled items stored before features were kept).
    pub reads: HeadReads,
    /// Labelled items it was trained on.
    pub trained_on: i32,
    /// Of those, how many were predicted by a training without them, to measure the head and fit its
    /// temperature (each category with five or more dealt into five folds: every fold in turn up to
    /// 2,000 items, one fold above; none below 20 items).
    pub held_out: i32,
    /// Top-1 accuracy of those trainings on the items they left out.
    #[schema(required = true)]
    pub held_out_accuracy: Option<f32>,
    pub training_ms: i32,
    pub trained_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum HeadReads {
    Features,
    Embedding,
}
