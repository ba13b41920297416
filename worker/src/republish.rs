//! The second half of "a 202 means the job is safe": the API commits jobs, then publishes them. If it
//! dies in between, the jobs are in Postgres with no message in RabbitMQ. This task finds queued jobs
//! whose message was never confirmed and publishes them.

use std::sync::Arc;
use std::time::Duration;

use lookalike_queue::Publisher;
use lookalike_store::Store;
use tokio_util::sync::CancellationToken;

/// How often to look: the query hits a small partial index, so this is cheap.
const EVERY: Duration = Duration::from_secs(5);
const BATCH: i64 = 500;

pub async fn run(
    store: Store,
    publisher: Arc<Publisher>,
    grace: Duration,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(EVERY) => {}
        }
        // Errors are logged and tried again next round: the database or broker may be restarting.
        match sweep(&store, &publisher, grace).await {
            Ok(0) => {}
            Ok(n) => tracing::warn!(
                jobs = n,
                "published queued jobs whose submission was interrupted before the broker confirmed them"
            ),
            Err(e) => tracing::debug!(error = %e, "republish sweep skipped"),
        }
    }
}

async fn sweep(store: &Store, publisher: &Publisher, grace: Duration) -> anyhow::Result<usize> {
    let mut total = 0;
    loop {
        let ids = store.unpublished_jobs(grace, BATCH).await?;
        if ids.is_empty() {
            return Ok(total);
        }
        publisher.publish_jobs(&ids).await?;
        store.mark_published(&ids).await?;
        for id in &ids {
            tracing::info!(job_id = %id, "job published by the republisher");
        }
        total += ids.len();
    }
}
