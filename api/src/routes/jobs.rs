//! Job status: `GET /v1/jobs/{id}`, `GET /v1/jobs?status=failed&limit=50` and, for clients following
//! many jobs, `GET /v1/jobs?ids=<id>,<id>,…`.

use axum::extract::{Path, State};
use axum::routing::get;
use axum::{Json, Router};
use lookalike_api_types::JobList;
use lookalike_core::codes;
use lookalike_core::codes::api;
use lookalike_store::JobStatus;
use serde::Deserialize;
use utoipa::IntoParams;
use uuid::Uuid;

use crate::docs::{Forbidden, InvalidId, JobNotFound, JobPath, Unauthorized, Unavailable, errors};
use crate::extract::Query;
use crate::routes::parse_id;
use crate::{ApiError, ApiResult, AppState, views};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/jobs", get(list))
        .route("/v1/jobs/{id}", get(show))
        .route("/v1/jobs/{id}/retry", axum::routing::post(retry))
}

/// One job: status, attempts, timestamps, item when done, error when failed
///
/// Scope `read`.
#[utoipa::path(
    get, path = "/v1/jobs/{id}", tag = "ingest", operation_id = "getJob", params(JobPath),
    responses(
        (status = 200, description = "The job.", body = lookalike_api_types::Job),
        InvalidId, Unauthorized, Forbidden, JobNotFound, Unavailable,
    ),
)]
pub(crate) async fn show(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<lookalike_api_types::Job>> {
    let id = parse_id(&id, "job")?;
    let job = crate::routes::load_job(&state, id).await?;
    Ok(Json(views::job(&job)))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ListQuery {
    /// Only jobs in this status (`queued`, `processing`, `succeeded`, `failed`); empty means any.
    #[param(pattern = "^(queued|processing|succeeded|failed)?$")]
    status: Option<String>,
    /// Without `ids`: how many jobs. Values outside 1–500 are clamped, not refused.
    #[param(minimum = 1, maximum = 500, default = 50)]
    limit: Option<i64>,
    /// 1 to 500 job ids, comma-separated (blanks around commas ignored).
    ids: Option<String>,
}

errors!(ListErrors {
    400 => "An unknown status, an id that is not a UUID (or `ids` naming none), or more than 500 ids.",
        [api::INVALID_STATUS, api::INVALID_ID, api::TOO_MANY_IDS],
});

/// Most ids one `GET /v1/jobs?ids=` may name: 500 ids are an 18 KB query string, well within what
/// HTTP servers and proxies accept, and one indexed query.
pub const MAX_IDS: usize = 500;

/// Recent jobs, newest first; or named jobs with `ids`
///
/// Scope `read`. Without `ids`: the newest `limit` jobs (optionally of one `status`). With `ids`:
/// those jobs in the order asked (a repeated id once), optionally only those in `status`, plus
/// `missing`: the ids that name no job.
#[utoipa::path(
    get, path = "/v1/jobs", tag = "ingest", operation_id = "listJobs", params(ListQuery),
    responses(
        (status = 200, description = "The jobs (`missing` only with `ids`).", body = JobList),
        ListErrors, Unauthorized, Forbidden, Unavailable,
    ),
)]
pub(crate) async fn list(
    State(state): State<AppState>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<JobList>> {
    let status = match q.status.as_deref() {
        None | Some("") => None,
        Some("queued") => Some(JobStatus::Queued),
        Some("processing") => Some(JobStatus::Processing),
        Some("succeeded") => Some(JobStatus::Succeeded),
        Some("failed") => Some(JobStatus::Failed),
        Some(other) => {
            return Err(ApiError::bad_request(
                codes::api::INVALID_STATUS,
                format!("unknown status `{other}` (queued, processing, succeeded, failed)"),
            ));
        }
    };
    if let Some(raw) = q.ids.as_deref() {
        return by_ids(&state, raw, status).await;
    }
    let limit = q.limit.unwrap_or(50).clamp(1, 500);
    let jobs = state.store.list_jobs(status, limit).await?;
    Ok(Json(JobList {
        jobs: jobs.iter().map(views::job).collect(),
        missing: None,
    }))
}

/// The named jobs in the order asked (repeats once), optionally only those in `status`; `missing`
/// lists the ids that name no job at all.
async fn by_ids(
    state: &AppState,
    raw: &str,
    status: Option<JobStatus>,
) -> ApiResult<Json<JobList>> {
    let ids = parse_ids(raw)?;
    let found = state.store.get_jobs(&ids).await?;
    let by_id: std::collections::HashMap<Uuid, &lookalike_store::Job> =
        found.iter().map(|j| (j.id, j)).collect();
    let jobs = ids
        .iter()
        .filter_map(|id| by_id.get(id))
        .filter(|j| status.is_none_or(|s| j.status == s))
        .map(|j| views::job(j))
        .collect();
    let missing = ids
        .iter()
        .filter(|id| !by_id.contains_key(id))
        .copied()
        .collect();
    Ok(Json(JobList {
        jobs,
        missing: Some(missing),
    }))
}

/// `ids=a,b,c`: 1 to [`MAX_IDS`] job ids, blanks around commas ignored, repeats kept once.
fn parse_ids(raw: &str) -> ApiResult<Vec<Uuid>> {
    let mut ids = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for part in raw.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let id = parse_id(part, "job")?;
        if seen.insert(id) {
            ids.push(id);
        }
    }
    if ids.is_empty() {
        return Err(ApiError::bad_request(
            codes::api::INVALID_ID,
            "`ids` names no job id (give them comma-separated)",
        ));
    }
    if ids.len() > MAX_IDS {
        return Err(ApiError::bad_request(
            codes::api::TOO_MANY_IDS,
            format!("{} job ids; at most {MAX_IDS} per request", ids.len()),
        ));
    }
    Ok(ids)
}

errors!(RetryErrors {
    409 => "Only failed jobs can be retried.", [api::JOB_NOT_FAILED],
    503 => "The broker did not take the job (it is failed again with `queue_unavailable`), or the \
            database is away.",
        [api::QUEUE_UNAVAILABLE, api::DATABASE_UNAVAILABLE],
});

/// Put a failed job back on the queue with a fresh attempt budget
///
/// Scope `write`. No body.
#[utoipa::path(
    post, path = "/v1/jobs/{id}/retry", tag = "ingest", operation_id = "retryJob", params(JobPath),
    responses(
        (status = 202, description = "Re-queued; the job as it is now.", body = lookalike_api_types::Job),
        InvalidId, Unauthorized, Forbidden, JobNotFound, RetryErrors,
    ),
)]
pub(crate) async fn retry(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<(axum::http::StatusCode, Json<lookalike_api_types::Job>)> {
    let id = parse_id(&id, "job")?;
    let job = crate::routes::load_job(&state, id).await?;
    if !state.store.reset_failed_job(id).await? {
        return Err(ApiError::new(
            axum::http::StatusCode::CONFLICT,
            codes::api::JOB_NOT_FAILED,
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
            .fail_jobs(&[id], codes::api::QUEUE_UNAVAILABLE, &message)
            .await;
        return Err(ApiError::unavailable(
            codes::api::QUEUE_UNAVAILABLE,
            message,
        ));
    }
    let _ = state.store.mark_published(&[id]).await;
    tracing::info!(job_id = %id, "failed job re-queued by request");
    let job = state
        .store
        .get_job(id)
        .await?
        .expect("the job was just updated");
    Ok((axum::http::StatusCode::ACCEPTED, Json(views::job(&job))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_comma_separated_deduplicated_and_bounded() {
        let a = Uuid::now_v7();
        let b = Uuid::now_v7();
        assert_eq!(parse_ids(&format!(" {a}, {b},,{a} ")).unwrap(), vec![a, b]);
        assert_eq!(parse_ids(" , ").unwrap_err().code, "invalid_id");
        assert_eq!(
            parse_ids(&format!("{a},nope")).unwrap_err().code,
            "invalid_id"
        );
        let many: Vec<String> = (0..=MAX_IDS).map(|_| Uuid::now_v7().to_string()).collect();
        assert_eq!(parse_ids(&many.join(",")).unwrap_err().code, "too_many_ids");
        assert_eq!(
            parse_ids(&many[..MAX_IDS].join(",")).unwrap().len(),
            MAX_IDS
        );
    }
}
