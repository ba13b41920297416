//! Job rows: creation at submit time, the claim a worker makes, and the terminal transitions.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::FromRow;
use uuid::Uuid;

use crate::{Result, Store};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, sqlx::Type)]
#[sqlx(type_name = "text", rename_all = "lowercase")]
#[serde(rename_all = "lowercase")]
pub enum JobStatus {
    Queued,
    Processing,
    Succeeded,
    Failed,
}

impl JobStatus {
    pub fn is_terminal(self) -> bool {
        matches!(self, JobStatus::Succeeded | JobStatus::Failed)
    }
}

#[derive(Debug, Clone, Serialize, FromRow)]
pub struct Job {
    pub id: Uuid,
    pub status: JobStatus,
    pub source_kind: String,
    pub source_url: Option<String>,
    pub file_name: Option<String>,
    pub external_id: Option<String>,
    /// The product the image shows, as the submitter named it.
    pub product_id: Option<String>,
    pub category: Option<String>,
    pub metadata: serde_json::Value,
    pub attempts: i32,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub item_id: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// Where a job's image comes from.
#[derive(Debug, Clone)]
pub enum Source {
    Url(String),
    Upload {
        file_name: Option<String>,
        content_type: Option<String>,
        bytes: Vec<u8>,
    },
}

#[derive(Debug, Clone)]
pub struct NewJob {
    pub id: Uuid,
    pub source: Source,
    pub external_id: Option<String>,
    /// Several images may name one product; results can be grouped by it.
    pub product_id: Option<String>,
    pub category: Option<String>,
    pub metadata: serde_json::Value,
}

/// What a worker learns when it tries to start a job.
#[derive(Debug)]
pub enum Claim {
    /// The job is now `processing`; `attempts` already counts this attempt.
    Run(Job),
    /// Already succeeded or failed (a redelivered message): nothing to do but ack.
    Finished(Job),
    /// No such job (for example its database was reset): ack and forget.
    Missing,
}

// A macro rather than a const so the queries stay `&'static str` (checked as SQL-safe by sqlx).
macro_rules! job_columns {
    () => {
        "id, status, source_kind, source_url, file_name, external_id, product_id, category, metadata, attempts, \
         error_code, error_message, item_id, created_at, updated_at, started_at, finished_at"
    };
}

impl Store {
    /// Inserts jobs (and upload bytes) in one transaction: either every job of a request exists or none.
    /// With an idempotency key, a second request with the same key fails with
    /// [`crate::StoreError::Conflict`]; [`Store::jobs_for_key`] then finds the first request's jobs.
    pub async fn create_jobs(&self, jobs: &[NewJob], idempotency_key: Option<&str>) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        for (position, job) in jobs.iter().enumerate() {
            let (kind, url, file_name) = match &job.source {
                Source::Url(u) => ("url", Some(u.as_str()), None),
                Source::Upload { file_name, .. } => ("upload", None, file_name.as_deref()),
            };
            sqlx::query(
                "INSERT INTO jobs (id, source_kind, source_url, file_name, external_id, category, metadata,
                                   idempotency_key, request_position, product_id)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            )
            .bind(job.id)
            .bind(kind)
            .bind(url)
            .bind(file_name)
            .bind(&job.external_id)
            .bind(&job.category)
            .bind(&job.metadata)
            .bind(idempotency_key)
            .bind(idempotency_key.map(|_| position as i32))
            .bind(&job.product_id)
            .execute(&mut *tx)
            .await?;
            if let Source::Upload {
                content_type,
                bytes,
                ..
            } = &job.source
            {
                sqlx::query(
                    "INSERT INTO uploads (job_id, content_type, bytes) VALUES ($1, $2, $3)",
                )
                .bind(job.id)
                .bind(content_type)
                .bind(bytes)
                .execute(&mut *tx)
                .await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }

    /// The jobs a request with this idempotency key created, in request order.
    pub async fn jobs_for_key(&self, key: &str) -> Result<Vec<Job>> {
        let sql = concat!(
            "SELECT ",
            job_columns!(),
            " FROM jobs WHERE idempotency_key = $1 ORDER BY request_position"
        );
        Ok(sqlx::query_as(sql).bind(key).fetch_all(&self.pool).await?)
    }

    pub async fn get_job(&self, id: Uuid) -> Result<Option<Job>> {
        let sql = concat!("SELECT ", job_columns!(), " FROM jobs WHERE id = $1");
        Ok(sqlx::query_as(sql)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?)
    }

    /// Several jobs in one query, in no particular order; ids that name no job are left out.
    pub async fn get_jobs(&self, ids: &[Uuid]) -> Result<Vec<Job>> {
        let sql = concat!("SELECT ", job_columns!(), " FROM jobs WHERE id = ANY($1)");
        Ok(sqlx::query_as(sql).bind(ids).fetch_all(&self.pool).await?)
    }

    /// Most recent jobs first, optionally only those in one status.
    pub async fn list_jobs(&self, status: Option<JobStatus>, limit: i64) -> Result<Vec<Job>> {
        let sql = concat!(
            "SELECT ",
            job_columns!(),
            " FROM jobs WHERE ($1::text IS NULL OR status = $1) ORDER BY created_at DESC, id LIMIT $2"
        );
        Ok(sqlx::query_as(sql)
            .bind(status)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?)
    }

    /// Marks a job as being worked on and counts the attempt. A job already finished is returned as
    /// such, untouched, so a redelivered message cannot run it again.
    pub async fn claim_job(&self, id: Uuid) -> Result<Claim> {
        let sql = concat!(
            "UPDATE jobs SET status = 'processing', attempts = attempts + 1, started_at = now(), \
             updated_at = now() WHERE id = $1 AND status IN ('queued', 'processing') RETURNING ",
            job_columns!()
        );
        if let Some(job) = sqlx::query_as(sql)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
        {
            return Ok(Claim::Run(job));
        }
        Ok(match self.get_job(id).await? {
            Some(job) => Claim::Finished(job),
            None => Claim::Missing,
        })
    }

    pub async fn upload_bytes(&self, job_id: Uuid) -> Result<Option<Vec<u8>>> {
        Ok(
            sqlx::query_scalar("SELECT bytes FROM uploads WHERE job_id = $1")
                .bind(job_id)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    /// Terminal failure with a stable code and a human message. Never overwrites a success.
    pub async fn fail_job(&self, id: Uuid, code: &str, message: &str) -> Result<()> {
        sqlx::query(
            "UPDATE jobs SET status = 'failed', error_code = $2, error_message = $3,
                    finished_at = now(), updated_at = now()
             WHERE id = $1 AND status <> 'succeeded'",
        )
        .bind(id)
        .bind(code)
        .bind(message)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Back to `queued` while a retry waits, keeping the reason so a user can see why it is slow.
    pub async fn requeue_job(&self, id: Uuid, code: &str, message: &str) -> Result<()> {
        self.back_to_queue(id, code, message, false).await
    }

    /// Back to `queued` without counting the attempt just claimed: the job did not run because a
    /// dependency is misconfigured, which is no fault of the job's.
    pub async fn release_job(&self, id: Uuid, code: &str, message: &str) -> Result<()> {
        self.back_to_queue(id, code, message, true).await
    }

    async fn back_to_queue(
        &self,
        id: Uuid,
        code: &str,
        message: &str,
        uncount_attempt: bool,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE jobs SET status = 'queued', error_code = $2, error_message = $3, updated_at = now(),
                    attempts = CASE WHEN $4 THEN greatest(attempts - 1, 0) ELSE attempts END
             WHERE id = $1 AND status = 'processing'",
        )
        .bind(id)
        .bind(code)
        .bind(message)
        .bind(uncount_attempt)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Puts a failed job back to `queued` with a fresh attempt budget (a user asked to retry it).
    /// Returns false when the job is not failed.
    pub async fn reset_failed_job(&self, id: Uuid) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE jobs SET status = 'queued', attempts = 0, error_code = NULL, error_message = NULL,
                    finished_at = NULL, published_at = NULL, updated_at = now()
             WHERE id = $1 AND status = 'failed'",
        )
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Records that the broker confirmed these jobs' messages.
    pub async fn mark_published(&self, ids: &[Uuid]) -> Result<()> {
        sqlx::query(
            "UPDATE jobs SET published_at = now() WHERE id = ANY($1) AND published_at IS NULL",
        )
        .bind(ids)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Queued jobs whose message was never confirmed, untouched for `grace`: their submitter died
    /// between committing and publishing them.
    pub async fn unpublished_jobs(
        &self,
        grace: std::time::Duration,
        limit: i64,
    ) -> Result<Vec<Uuid>> {
        Ok(sqlx::query_scalar(
            "SELECT id FROM jobs WHERE status = 'queued' AND published_at IS NULL
                 AND updated_at < now() - make_interval(secs => $1)
             ORDER BY updated_at LIMIT $2",
        )
        .bind(grace.as_secs_f64())
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Jobs of one request that could not be enqueued are failed, never left queued forever.
    pub async fn fail_jobs(&self, ids: &[Uuid], code: &str, message: &str) -> Result<()> {
        sqlx::query(
            "UPDATE jobs SET status = 'failed', error_code = $2, error_message = $3,
                    finished_at = now(), updated_at = now()
             WHERE id = ANY($1) AND status = 'queued'",
        )
        .bind(ids)
        .bind(code)
        .bind(message)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Counts of jobs by status, for status pages and tests.
    pub async fn job_counts(&self) -> Result<Vec<(JobStatus, i64)>> {
        Ok(
            sqlx::query_as("SELECT status, count(*) FROM jobs GROUP BY status ORDER BY status")
                .fetch_all(&self.pool)
                .await?,
        )
    }
}
