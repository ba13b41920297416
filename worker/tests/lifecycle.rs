//! The job lifecycle's rules ([`Jobs`]), checked in process against the real Postgres and RabbitMQ
//! (a database and queue names of their own per test), with the work replaced by a closure that
//! reports what the test asks for: no binary, no model.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use lookalike_analysis::Failure;
use lookalike_core::codes::job as code;
use lookalike_queue::{Publisher, Topology};
use lookalike_store::{Job, JobStatus, NewJob, Source, Store};
use lookalike_worker::{Jobs, Outcome};
use uuid::Uuid;

const AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
const MAX_ATTEMPTS: u32 = 3;

struct Env {
    jobs: Jobs,
    publisher: Arc<Publisher>,
}

impl Env {
    async fn new() -> Env {
        let id = &Uuid::new_v4().simple().to_string()[..12];
        let url = format!("postgres://postgres@127.0.0.1:5432/lookalike_test_jobs_{id}");
        Store::ensure_database(&url)
            .await
            .expect("Postgres at 127.0.0.1:5432 (scripts/services.sh starts it)");
        let store = Store::connect_lazy(&url, 4, Duration::from_secs(10)).unwrap();
        store.migrate().await.unwrap();
        let publisher = Arc::new(Publisher::new(
            AMQP_URL,
            Topology::new(&format!("lookalike-test-jobs-{id}")),
            Duration::from_secs(10),
        ));
        publisher
            .ensure_connected()
            .await
            .expect("RabbitMQ at 127.0.0.1:5672 (scripts/services.sh starts it)");
        Env {
            jobs: Jobs {
                store,
                publisher: publisher.clone(),
                max_attempts: MAX_ATTEMPTS,
                retry_base: Duration::from_millis(50),
                retry_max: Duration::from_millis(200),
            },
            publisher,
        }
    }

    async fn submit(&self) -> Uuid {
        let job = NewJob {
            id: Uuid::now_v7(),
            source: Source::Url("http://images.example/x.jpg".into()),
            external_id: None,
            product_id: None,
            category: None,
            metadata: serde_json::json!({}),
        };
        let id = job.id;
        self.jobs.store.create_jobs(&[job], None).await.unwrap();
        id
    }

    async fn job(&self, id: Uuid) -> Job {
        self.jobs.store.get_job(id).await.unwrap().unwrap()
    }

    /// Runs the job with work that reports `result`, counting how often the work ran.
    async fn run(&self, id: Uuid, result: Result<(), Failure>, ran: &AtomicU32) -> Outcome {
        self.jobs
            .run(id, |_job| async {
                ran.fetch_add(1, Ordering::SeqCst);
                result
            })
            .await
            .unwrap()
    }

    async fn cleanup(self) {
        if let Ok(conn) = lookalike_queue::connect(AMQP_URL, "lifecycle-test-cleanup").await
            && let Ok(channel) = conn.create_channel().await
        {
            let _ = self.publisher.topology().delete(&channel).await;
        }
    }
}

fn transient() -> Failure {
    Failure::transient(code::INDEX_UNAVAILABLE, "the index is restarting")
}

#[tokio::test]
async fn a_permanent_failure_fails_the_job_at_once_and_a_redelivery_does_not_run_it_again() {
    let env = Env::new().await;
    let id = env.submit().await;
    let ran = AtomicU32::new(0);
    let bad = Failure::permanent("image_decode_failed", "not an image");
    assert!(matches!(env.run(id, Err(bad), &ran).await, Outcome::Done));
    let job = env.job(id).await;
    assert_eq!(job.status, JobStatus::Failed);
    assert_eq!(job.error_code.as_deref(), Some("image_decode_failed"));
    assert_eq!(job.error_message.as_deref(), Some("not an image"));
    assert_eq!(job.attempts, 1);

    assert!(matches!(env.run(id, Ok(()), &ran).await, Outcome::Done));
    assert_eq!(
        ran.load(Ordering::SeqCst),
        1,
        "a finished job is not run again"
    );
    assert_eq!(env.job(id).await.status, JobStatus::Failed);

    let missing = env
        .jobs
        .run(Uuid::now_v7(), |_| async { panic!("no job, no work") })
        .await
        .unwrap();
    assert!(
        matches!(missing, Outcome::Done),
        "a message for no job is dropped"
    );
    env.cleanup().await;
}

#[tokio::test]
async fn a_transient_failure_is_retried_later_and_gives_up_into_the_dead_letter_queue() {
    let env = Env::new().await;
    let id = env.submit().await;
    let ran = AtomicU32::new(0);
    for attempt in 1..=MAX_ATTEMPTS {
        let Outcome::Retry { error, attempt: a } = env.run(id, Err(transient()), &ran).await else {
            panic!("a transient failure asks for a retry");
        };
        assert_eq!(a, Some(attempt));
        env.jobs.retry(id, error, a).await.unwrap();
        let job = env.job(id).await;
        let depth = env.publisher.depth().await.unwrap();
        if attempt < MAX_ATTEMPTS {
            assert_eq!(job.status, JobStatus::Queued, "waiting for its retry");
            assert_eq!(job.error_code.as_deref(), Some(code::INDEX_UNAVAILABLE));
            assert_eq!(depth.dead, 0);
            // The retry message waits out its delay in the retry queue, then moves to the work queue.
            let mut waited = Duration::ZERO;
            while env.publisher.depth().await.unwrap().ready < attempt {
                assert!(
                    waited < Duration::from_secs(10),
                    "the retry never came back"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
                waited += Duration::from_millis(50);
            }
        } else {
            assert_eq!(job.status, JobStatus::Failed);
            assert_eq!(job.error_code.as_deref(), Some(code::INDEX_UNAVAILABLE));
            assert!(
                job.error_message
                    .as_deref()
                    .unwrap()
                    .ends_with(&format!("(gave up after {MAX_ATTEMPTS} attempts)")),
                "{job:?}"
            );
            assert_eq!(depth.dead, 1, "a copy waits in the dead-letter queue");
        }
    }
    assert_eq!(ran.load(Ordering::SeqCst), MAX_ATTEMPTS);
    env.cleanup().await;
}

#[tokio::test]
async fn a_job_that_timed_out_counts_the_attempts_the_database_has() {
    let env = Env::new().await;
    let id = env.submit().await;
    for _ in 0..MAX_ATTEMPTS {
        env.jobs.store.claim_job(id).await.unwrap();
    }
    // The job did not report back: its attempt count is read, and this was its last.
    env.jobs
        .retry(id, Failure::transient(code::TIMEOUT, "took too long"), None)
        .await
        .unwrap();
    let job = env.job(id).await;
    assert_eq!(job.status, JobStatus::Failed);
    assert_eq!(job.error_code.as_deref(), Some(code::TIMEOUT));
    env.cleanup().await;
}

#[tokio::test]
async fn a_blocked_job_goes_back_to_the_queue_without_spending_an_attempt() {
    let env = Env::new().await;
    let id = env.submit().await;
    let ran = AtomicU32::new(0);
    let blocked = Failure::blocked(code::INDEX_MISCONFIGURED, "collection missing");
    assert!(matches!(
        env.run(id, Err(blocked), &ran).await,
        Outcome::Blocked { .. }
    ));
    let job = env.job(id).await;
    assert_eq!(job.status, JobStatus::Queued);
    assert_eq!(job.attempts, 0, "the attempt is not counted");
    assert_eq!(job.error_code.as_deref(), Some(code::INDEX_MISCONFIGURED));
    env.cleanup().await;
}

#[tokio::test]
async fn a_job_whose_deliveries_all_crashed_fails_without_running_again() {
    let env = Env::new().await;
    let id = env.submit().await;
    // Each delivery a crash cut short still counted its attempt.
    for _ in 0..MAX_ATTEMPTS {
        env.jobs.store.claim_job(id).await.unwrap();
    }
    let ran = AtomicU32::new(0);
    assert!(matches!(env.run(id, Ok(()), &ran).await, Outcome::Done));
    assert_eq!(ran.load(Ordering::SeqCst), 0);
    let job = env.job(id).await;
    assert_eq!(job.status, JobStatus::Failed);
    assert_eq!(job.error_code.as_deref(), Some(code::ATTEMPTS_EXHAUSTED));
    assert!(
        job.error_message
            .as_deref()
            .unwrap()
            .starts_with(&format!("gave up after {MAX_ATTEMPTS} attempts")),
        "{job:?}"
    );
    env.cleanup().await;
}
