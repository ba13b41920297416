//! The consume loop: deliveries in, jobs run, acks out; reconnects when the broker goes away and
//! drains in-flight jobs on shutdown.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use lookalike_analysis::Failure;
use lookalike_core::backoff::{Backoff, jitter};
use lookalike_queue::lapin::message::Delivery;
use lookalike_queue::lapin::options::{BasicAckOptions, BasicCancelOptions, BasicNackOptions};
use lookalike_queue::{JobMessage, Topology};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::ingest::Ingest;
use crate::jobs::{Jobs, Outcome};

pub struct Consumer {
    /// The jobs' lifecycle: claim, outcome, retries.
    pub jobs: Arc<Jobs>,
    /// The work of each job.
    pub ingest: Arc<Ingest>,
    pub amqp_url: String,
    pub topology: Topology,
    pub prefetch: u16,
    pub job_timeout: Duration,
    /// How long shutdown waits for in-flight jobs before handing them back to the broker.
    pub drain_deadline: Duration,
    /// Set when a job finds a dependency misconfigured: consuming stops until it is fixed.
    pub pause: Pause,
}

/// Whether the consumer is paused because a dependency is misconfigured, and why.
#[derive(Default)]
pub struct Pause {
    why: std::sync::Mutex<Option<String>>,
    signal: tokio::sync::Notify,
}

impl Pause {
    fn set(&self, why: &str) {
        let mut current = self.why.lock().expect("not poisoned");
        if current.is_none() {
            *current = Some(why.to_owned());
            self.signal.notify_one();
        }
    }
    fn clear(&self) {
        *self.why.lock().expect("not poisoned") = None;
    }
    /// Why consuming is paused, if it is.
    pub fn reason(&self) -> Option<String> {
        self.why.lock().expect("not poisoned").clone()
    }
}

/// How often a paused consumer checks whether the index works again.
const PAUSED_CHECK_EVERY: Duration = Duration::from_secs(2);

impl Consumer {
    /// Runs until `shutdown` fires, then stops taking jobs, lets in-flight ones finish (up to the drain
    /// deadline) and returns. Unfinished jobs stay unacked and go back to the queue.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let mut in_flight = JoinSet::new();
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
        'connect: while !shutdown.is_cancelled() {
            let tag = format!("lookalike-worker-{}", std::process::id());
            let connected = async {
                let conn = lookalike_queue::connect(&self.amqp_url, &tag).await?;
                let (channel, consumer) =
                    lookalike_queue::consume(&conn, &self.topology, self.prefetch, &tag).await?;
                Ok::<_, lookalike_queue::lapin::Error>((conn, channel, consumer))
            }
            .await;
            let (conn, channel, mut consumer) = match connected {
                Ok(c) => c,
                Err(e) => {
                    let delay = backoff.next_delay();
                    tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "cannot reach the message broker");
                    tokio::select! {
                        _ = shutdown.cancelled() => break 'connect,
                        _ = tokio::time::sleep(delay) => {}
                    }
                    continue;
                }
            };
            backoff.reset();
            tracing::info!(queue = %self.topology.jobs, prefetch = self.prefetch, "consuming");
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => {
                        // Stop deliveries first so nothing new arrives while we drain.
                        let _ = channel.basic_cancel(tag.as_str().into(), BasicCancelOptions::default()).await;
                        break;
                    }
                    _ = self.pause.signal.notified() => {
                        if self.pause.reason().is_some() {
                            let _ = channel.basic_cancel(tag.as_str().into(), BasicCancelOptions::default()).await;
                            break;
                        }
                    }
                    Some(done) = in_flight.join_next(), if !in_flight.is_empty() => {
                        if let Err(e) = done { tracing::error!(error = %e, "job task panicked"); }
                    }
                    delivery = consumer.next() => match delivery {
                        Some(Ok(delivery)) => {
                            let me = self.clone();
                            in_flight.spawn(async move { me.handle(delivery).await });
                        }
                        Some(Err(e)) => { tracing::warn!(error = %e, "broker connection lost; reconnecting"); break; }
                        None => { tracing::warn!("consumer closed by the broker; reconnecting"); break; }
                    }
                }
            }
            if shutdown.is_cancelled() {
                self.drain(&mut in_flight).await;
                let _ = tokio::time::timeout(
                    Duration::from_secs(2),
                    conn.close(200, "shutdown".into()),
                )
                .await;
                break 'connect;
            }
            if let Some(why) = self.pause.reason() {
                // Jobs in flight meet the same problem and go back to the queue; closing the
                // connection returns the messages prefetched but not started.
                self.drain(&mut in_flight).await;
                let _ =
                    tokio::time::timeout(Duration::from_secs(2), conn.close(200, "paused".into()))
                        .await;
                tracing::error!(reason = %why, "consuming paused: a dependency is misconfigured; jobs wait in the queue until it is fixed");
                self.wait_until_index_works(&shutdown).await;
            }
        }
        self.drain(&mut in_flight).await;
        tracing::info!("worker stopped");
    }

    /// Returns once the index answers again (or on shutdown).
    async fn wait_until_index_works(&self, shutdown: &CancellationToken) {
        let mut checks = 0u32;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(PAUSED_CHECK_EVERY) => {}
            }
            match self.ingest.catalogue.index().ping().await {
                Ok(()) => {
                    self.pause.clear();
                    tracing::info!("the vector index works again; consuming resumed");
                    return;
                }
                Err(e) => {
                    checks += 1;
                    // About once a minute, so the log keeps saying why nothing moves.
                    if checks.is_multiple_of(30) {
                        tracing::warn!(error = %e, "consuming still paused");
                    }
                }
            }
        }
    }

    async fn drain(&self, in_flight: &mut JoinSet<()>) {
        if in_flight.is_empty() {
            return;
        }
        tracing::info!(jobs = in_flight.len(), "finishing in-flight jobs");
        let finished = tokio::time::timeout(self.drain_deadline, async {
            while in_flight.join_next().await.is_some() {}
        })
        .await;
        if finished.is_err() {
            tracing::warn!(
                jobs = in_flight.len(),
                "drain deadline passed; unfinished jobs go back to the queue"
            );
            in_flight.abort_all();
        }
    }

    async fn handle(&self, delivery: Delivery) {
        let Some(message) = JobMessage::decode(&delivery.data) else {
            tracing::error!(bytes = delivery.data.len(), "malformed message dropped");
            let _ = delivery.acker.ack(BasicAckOptions::default()).await;
            return;
        };
        // Every line logged while the job runs carries this span's job_id (README "Metrics and logs").
        let span = tracing::info_span!("job", job_id = %message.job_id, redelivered = delivery.redelivered);
        let work = async {
            let outcome = match tokio::time::timeout(
                self.job_timeout,
                self.jobs.run(
                    message.job_id,
                    |job| async move { self.ingest.run(&job).await },
                ),
            )
            .await
            {
                Ok(result) => result,
                Err(_) => Ok(Outcome::Retry {
                    error: Failure::transient(
                        lookalike_core::codes::job::TIMEOUT,
                        format!("the job took longer than {:?}", self.job_timeout),
                    ),
                    attempt: None,
                }),
            };
            match outcome {
                Ok(Outcome::Done) => self.ack(&delivery).await,
                Ok(Outcome::Retry { error, attempt }) => {
                    match self.jobs.retry(message.job_id, error, attempt).await {
                        Ok(()) => self.ack(&delivery).await,
                        Err(u) => self.hand_back(&delivery, u.why, &u.error).await,
                    }
                }
                Ok(Outcome::Blocked { error }) => {
                    // At once: the consumer pauses, so nothing spins on the message.
                    self.pause.set(&error.message);
                    requeue(&delivery).await;
                }
                Err(e) => {
                    self.hand_back(&delivery, "cannot record job state", &e)
                        .await
                }
            }
        };
        // A panic is logged here, inside the job's span, then goes on as before: the task ends and
        // the unacked message returns to the queue with the channel.
        if let Err(panic) = AssertUnwindSafe(work)
            .catch_unwind()
            .instrument(span.clone())
            .await
        {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            span.in_scope(|| tracing::error!(panic = %what, "job panicked"));
            std::panic::resume_unwind(panic);
        }
    }

    /// Something on our side is down (database, broker): return the message to the queue after a pause,
    /// so it is neither lost nor spun on.
    async fn hand_back(
        &self,
        delivery: &Delivery,
        why: &str,
        error: &(dyn std::fmt::Display + Sync),
    ) {
        tracing::warn!(error = %error, "{why}; message returned to the queue");
        tokio::time::sleep(jitter(self.jobs.retry_base)).await;
        requeue(delivery).await;
    }

    async fn ack(&self, delivery: &Delivery) {
        if let Err(e) = delivery.acker.ack(BasicAckOptions::default()).await {
            // The channel died after the work was committed: the broker redelivers, and the
            // redelivery finds the job finished.
            tracing::warn!(error = %e, "ack failed; the job will be redelivered and skipped");
        }
    }
}

/// Returns the message to the queue for any consumer to take.
async fn requeue(delivery: &Delivery) {
    let _ = delivery
        .acker
        .nack(BasicNackOptions {
            requeue: true,
            ..Default::default()
        })
        .await;
}
