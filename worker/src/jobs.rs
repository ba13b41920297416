//! The job lifecycle, owned here and nowhere else in the worker: claim a job, count its attempts,
//! record how it ended (succeeded, failed for good, put back, or retried later with backoff), and
//! dead-letter what gave up. The work itself ([`crate::ingest`]) only reports a result.
//!
//! ```text
//! queued --claim--> running --ok--> succeeded        (the catalogue's commit records it)
//!                      |--permanent failure--> failed
//!                      |--transient failure--> queued again, published after a backoff delay
//!                      |                       (failed + dead letter past queue.max_attempts)
//!                      '--blocked--> queued, attempt uncounted; the consumer pauses
//! ```

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use lookalike_analysis::Failure;
use lookalike_core::backoff::Backoff;
use lookalike_core::codes::job as code;
use lookalike_queue::Publisher;
use lookalike_store::{Claim, Job, Store, StoreError};
use lookalike_telemetry::JobStatus;
use uuid::Uuid;

/// What the consumer should do with the message after a job ran.
#[derive(Debug)]
pub enum Outcome {
    /// Finished (succeeded or failed for good), or nothing to do: ack.
    Done,
    /// A transient failure: schedule a retry with [`Jobs::retry`] (which gives up past the limit).
    /// `attempt` is `None` when the job did not report back (it timed out): its count is read then.
    Retry {
        error: Failure,
        attempt: Option<u32>,
    },
    /// A dependency is misconfigured ([`Failure::blocked`]); the job is queued again with its
    /// attempt uncounted: hand the message back and stop consuming until it is fixed.
    Blocked { error: Failure },
}

/// A retry that could not be recorded or scheduled: the message must go back to the queue.
#[derive(Debug)]
pub struct Unsettled {
    pub why: &'static str,
    pub error: String,
}

/// Claims, attempts and outcomes of the jobs a worker runs.
pub struct Jobs {
    pub store: Store,
    pub publisher: Arc<Publisher>,
    /// `queue.max_attempts`: deliveries a job may take before it fails for good.
    pub max_attempts: u32,
    pub retry_base: Duration,
    pub retry_max: Duration,
}

impl Jobs {
    /// Claims the job and runs `work` on it, then records how it ended. A job already finished
    /// (a redelivery) or gone is not run again. An error is the database failing to record the
    /// outcome: the caller hands the message back.
    pub async fn run<F, Fut>(&self, job_id: Uuid, work: F) -> Result<Outcome, StoreError>
    where
        F: FnOnce(Job) -> Fut,
        Fut: Future<Output = Result<(), Failure>>,
    {
        let job = match self.store.claim_job(job_id).await? {
            Claim::Run(job) => job,
            Claim::Finished(job) => {
                tracing::info!(status = ?job.status, "job already finished; redelivery ignored");
                return Ok(Outcome::Done);
            }
            Claim::Missing => {
                tracing::warn!("no such job; message dropped");
                return Ok(Outcome::Done);
            }
        };
        let attempt = job.attempts.max(1) as u32;
        if attempt > self.max_attempts {
            // Reached through crash loops: each delivery counts, even one that never finished.
            let last = job
                .error_message
                .clone()
                .unwrap_or_else(|| "the worker stopped while processing it".into());
            let message = format!(
                "gave up after {} attempts; last error: {last}",
                self.max_attempts
            );
            self.fail(job.id, code::ATTEMPTS_EXHAUSTED, &message)
                .await?;
            tracing::warn!(attempts = job.attempts, "job failed: attempts exhausted");
            return Ok(Outcome::Done);
        }
        tracing::info!(attempt, source = job.source_kind, "job started");
        let id = job.id;
        match work(job).await {
            Ok(()) => {
                lookalike_telemetry::job_finished(
                    JobStatus::Succeeded,
                    lookalike_telemetry::NO_CODE,
                );
                Ok(Outcome::Done)
            }
            Err(error) if error.transient => Ok(Outcome::Retry {
                error,
                attempt: Some(attempt),
            }),
            Err(error) if error.blocked => {
                self.store
                    .release_job(id, error.code, &error.message)
                    .await?;
                tracing::warn!(code = error.code, error = %error.message, "job put back: a dependency is misconfigured");
                Ok(Outcome::Blocked { error })
            }
            Err(error) => {
                self.fail(id, error.code, &error.message).await?;
                tracing::warn!(code = error.code, error = %error.message, "job failed");
                Ok(Outcome::Done)
            }
        }
    }

    /// After a transient failure: the job is queued again and published after a backoff delay that
    /// grows with its attempts, or, on its last attempt, fails for good with a copy in the
    /// dead-letter queue. `Ok` means the message can be acked.
    pub async fn retry(
        &self,
        job_id: Uuid,
        error: Failure,
        attempt: Option<u32>,
    ) -> Result<(), Unsettled> {
        let attempt = match attempt {
            Some(a) => a,
            None => self
                .store
                .get_job(job_id)
                .await
                .ok()
                .flatten()
                .map_or(1, |j| j.attempts.max(1) as u32),
        };
        if attempt >= self.max_attempts {
            let text = format!("{} (gave up after {attempt} attempts)", error.message);
            self.fail(job_id, error.code, &text)
                .await
                .map_err(|e| Unsettled {
                    why: "cannot record the failure",
                    error: e.to_string(),
                })?;
            if let Err(e) = self.publisher.publish_dead(job_id).await {
                tracing::warn!(error = %e, "could not copy the job to the dead-letter queue");
            }
            tracing::warn!(code = error.code, attempt, error = %error.message, "job failed: attempts exhausted");
            return Ok(());
        }
        let delay = Backoff::nth(self.retry_base, self.retry_max, attempt);
        let _ = self
            .store
            .requeue_job(job_id, error.code, &error.message)
            .await;
        self.publisher
            .publish_retry(job_id, delay)
            .await
            .map_err(|e| Unsettled {
                why: "cannot schedule the retry",
                error: e.to_string(),
            })?;
        tracing::info!(code = error.code, attempt, retry_in_ms = delay.as_millis() as u64, error = %error.message, "job will be retried");
        lookalike_telemetry::job_finished(JobStatus::Retried, error.code);
        Ok(())
    }

    /// Records a job as failed for good, and counts it.
    async fn fail(
        &self,
        job_id: Uuid,
        code: &'static str,
        message: &str,
    ) -> Result<(), StoreError> {
        self.store.fail_job(job_id, code, message).await?;
        lookalike_telemetry::job_finished(JobStatus::Failed, code);
        Ok(())
    }
}
