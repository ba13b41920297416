//! Job status: `GET /v1/jobs/{id}` and `GET /v1/jobs?status=failed&limit=50`.

use axum::extract::{Path, Query, State};
use axum::routing::get;
use axum::{Json, Router};
use lookalike_store::JobStatus;
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::{ApiError, ApiResult, AppState, views};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/jobs", get(list))
        .route("/v1/jobs/{id}", get(show))
        .route("/v1/jobs/{id}/retry", axum::routing::post(retry))
}

pub fn parse_id(raw: &str, what: &'static str) -> ApiResult<Uuid> {
    Uuid::parse_str(raw).map_err(|_| {
        ApiError::bad_request("invalid_id", format!("`{raw}` is not a valid {what} id"))
    })
}

async fn show(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    let id = parse_id(&id, "job")?;
    let job = crate::routes::load_job(&state, id).await?;
    Ok(Json(views::job(&job)))
}

#[derive(Deserialize)]
struct ListQuery {
    status: Option<String>,
    limit: Option<i64>,
}

async fn list(State(state): State<AppState>, Query(q): Query<ListQuery>) -> ApiResult<Json<Value>> {
    let status = match q.status.as_deref() {
        None | Some("") => None,
        Some("queued") => Some(JobStatus::Queued),
        Some("processing") => Some(JobStatus::Processing),
        Some("succeeded") => Some(JobStatus::Succeeded),
        Some("failed") => Some(JobStatus::Failed),
        Some(other) => {
            return Err(ApiError::bad_request(
                "invalid_status",
                format!("unknown status `{other}` (queued, processing, succeeded, failed)"),
            ));
        }
    };
    let limit = q.limit.unwrap_or(50).clamp(1, 500);
    let jobs = state.store.list_jobs(status, limit).await?;
    Ok(Json(
        json!({"jobs": jobs.iter().map(views::job).collect::<Vec<_>>()}),
    ))
}

/// `POST /v1/jobs/{id}/retry`: a failed job goes back on the queue with a fresh attempt budget.
async fn retry(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<(axum::http::StatusCode, Json<Value>)> {
    let id = parse_id(&id, "job")?;
    let job = crate::routes::load_job(&state, id).await?;
    if !state.store.reset_failed_job(id).await? {
        return Err(ApiError::new(
            axum::http::StatusCode::CONFLICT,
            "job_not_failed",
            format!(
                "job {id} is {:?}; only failed jobs can be retried",
                job.status
            )
            .to_lowercase(),
        ));
    }
    if let Err(e) = state.publisher.publish_jobs(&[id]).await {
        let message = format!("the job queue is not available: {e}");
        let _ = state
            .store
            .fail_jobs(&[id], "queue_unavailable", &message)
            .await;
        return Err(ApiError::unavailable("queue_unavailable", message));
    }
    tracing::info!(job_id = %id, "failed job re-queued by request");
    let job = state
        .store
        .get_job(id)
        .await?
        .expect("the job was just updated");
    Ok((axum::http::StatusCode::ACCEPTED, Json(views::job(&job))))
}
