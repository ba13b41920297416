//! `GET /v1/status`: counts that tell an operator (and the tests) where the work stands.

use std::time::Duration;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use lookalike_api_types::{
    ClassifierState, ClassifySettings, IndexState, JobCounts, ModelState, QueueState, Status,
};
use lookalike_store::JobStatus;

use crate::docs::{Forbidden, Unauthorized, Unavailable};
use crate::{ApiResult, AppState, views};

const QUEUE_DEPTH_TIMEOUT: Duration = Duration::from_secs(2);

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/status", get(status))
}

/// Jobs by status, queue depth, item count, index points, model
///
/// Scope `read`. Answers while RabbitMQ is away (`queue.available: false`, read within 2 s).
#[utoipa::path(
    get, path = "/v1/status", tag = "operations", operation_id = "status",
    responses(
        (status = 200, description = "The counts.", body = Status),
        Unauthorized, Forbidden, Unavailable,
    ),
)]
pub(crate) async fn status(State(state): State<AppState>) -> ApiResult<Json<Status>> {
    let mut jobs = JobCounts::default();
    for (status, n) in state.store.job_counts().await? {
        *match status {
            JobStatus::Queued => &mut jobs.queued,
            JobStatus::Processing => &mut jobs.processing,
            JobStatus::Succeeded => &mut jobs.succeeded,
            JobStatus::Failed => &mut jobs.failed,
        } = n;
    }
    let items = state.store.item_count().await?;
    let points = state.index.approx_count().await?;
    let (groups, items_in_groups) = state.store.duplicate_counts().await?;
    Ok(Json(Status {
        jobs,
        queue: queue_depth(&state).await,
        items,
        index: IndexState {
            backend: state.index.name().to_string(),
            points,
        },
        model: ModelState {
            id: state.config.model.id.clone(),
            dim: state.config.model.dim,
        },
        classifier: classifier(&state).await?,
        duplicates: lookalike_api_types::DuplicateCounts {
            enabled: state.config.dedupe.enabled,
            threshold: state.config.dedupe.threshold,
            groups,
            items_in_groups,
        },
    }))
}

/// The trained head in use (null until one is trained) and how many labels there are now.
async fn classifier(state: &AppState) -> ApiResult<ClassifierState> {
    let labelled = state
        .store
        .labelled_count(state.analyser.model_id())
        .await?;
    let head = state.analyser.heads.current().map(|h| views::head(&h));
    let c = &state.config.classify;
    Ok(ClassifierState {
        head_enabled: c.head,
        labelled_items: labelled,
        head,
        settings: ClassifySettings {
            neighbours: c.neighbours,
            neighbour_temperature: c.neighbour_temperature,
            prototype_temperature: c.prototype_temperature,
            prototype_weight: c.prototype_weight,
            confidence_temperature: c.confidence_temperature,
            head: c.head,
            head_l2: c.head_l2,
            head_shrinkage: c.head_shrinkage,
            head_takeover: c.head_takeover,
            head_min_labels: c.head_min_labels,
            min_confidence: c.min_confidence,
            cover: c.cover,
            max_categories: c.max_categories,
        },
    })
}

/// Whatever the broker says within a short bound: a status page must answer even while RabbitMQ is
/// away, and then says why the counts are missing.
async fn queue_depth(state: &AppState) -> QueueState {
    match tokio::time::timeout(QUEUE_DEPTH_TIMEOUT, state.publisher.depth()).await {
        Ok(Ok(d)) => QueueState::Available {
            available: true,
            ready: d.ready,
            retrying: d.retrying,
            dead: d.dead,
            consumers: d.consumers,
        },
        Ok(Err(e)) => QueueState::Unavailable {
            available: false,
            error: e.to_string(),
        },
        Err(_) => QueueState::Unavailable {
            available: false,
            error: format!("the message broker did not answer within {QUEUE_DEPTH_TIMEOUT:?}"),
        },
    }
}
