//! Nothing is lost: jobs in flight when the process dies (SIGKILL) or is stopped (SIGTERM) all end
//! `succeeded` exactly once after a restart.

mod support;

use std::time::Duration;

use support::batch::*;
use support::images::ImageServer;
use support::*;

#[tokio::test(flavor = "multi_thread")]
async fn jobs_in_flight_when_the_process_is_killed_finish_exactly_once_after_restart() {
    let mut env = TestEnv::new().await;
    // Every job runs the model (no shortcut for repeated images), so the kill lands mid-batch.
    env.set("WORKER__REUSE_IDENTICAL_IMAGES", false);
    let images = ImageServer::start(reference_dir()).await;
    let mut service = env.start().await;
    let ids = submit_batch(&service, &images, 40).await;
    wait_for_progress(&service, 4).await;

    service.kill(); // SIGKILL: no chance to ack, drain or flush anything
    let mut db = env.db().await;
    let unfinished: i64 =
        sqlx::query_scalar("SELECT count(*) FROM jobs WHERE status IN ('queued', 'processing')")
            .fetch_one(&mut db)
            .await
            .unwrap();
    assert!(
        unfinished > 0,
        "the kill should land while jobs are still in flight"
    );
    let processing: i64 =
        sqlx::query_scalar("SELECT count(*) FROM jobs WHERE status = 'processing'")
            .fetch_one(&mut db)
            .await
            .unwrap();
    eprintln!("killed with {unfinished} jobs unfinished, {processing} of them processing");

    let service = env.start().await;
    assert_all_once(&env, &service, &ids).await;
    // The jobs that were mid-flight were attempted again, and none stayed `processing`.
    let retried: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs WHERE attempts > 1")
        .fetch_one(&mut db)
        .await
        .unwrap();
    assert!(
        retried >= processing.min(1),
        "in-flight jobs are picked up again after the restart"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_finishes_in_flight_jobs_exits_cleanly_and_leaves_the_rest_queued() {
    let mut env = TestEnv::new().await;
    env.set("WORKER__CONCURRENCY", 4)
        .set("WORKER__REUSE_IDENTICAL_IMAGES", false);
    let images = ImageServer::start(reference_dir()).await;
    let mut service = env.start().await;
    let ids = submit_batch(&service, &images, 24).await;
    wait_for_progress(&service, 2).await;

    let code = service.terminate(Duration::from_secs(60));
    assert_eq!(
        code,
        Some(0),
        "graceful shutdown exits 0; log:\n{}",
        service.log()
    );
    assert!(
        service.log().contains("worker stopped"),
        "{}",
        service.log()
    );
    // After a drain nothing is left half-done: jobs are finished or still waiting in the queue.
    let mut db = env.db().await;
    let processing: i64 =
        sqlx::query_scalar("SELECT count(*) FROM jobs WHERE status = 'processing'")
            .fetch_one(&mut db)
            .await
            .unwrap();
    assert_eq!(processing, 0, "drained jobs are finished, not abandoned");
    let queued: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs WHERE status = 'queued'")
        .fetch_one(&mut db)
        .await
        .unwrap();
    assert!(queued > 0, "the stop should land mid-batch");

    let service = env.start().await;
    assert_all_once(&env, &service, &ids).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_committed_but_never_published_is_published_later_and_finishes() {
    let mut env = TestEnv::new().await;
    env.set("QUEUE__REPUBLISH_AFTER_MS", 1000);
    let images = ImageServer::start(reference_dir()).await;
    let service = env.start().await;
    // What an API process leaves behind when it dies after committing a submission and before the
    // broker confirmed it: a queued job, no message.
    let id = uuid::Uuid::new_v4();
    let mut db = env.db().await;
    sqlx::query(
        "INSERT INTO jobs (id, source_kind, source_url, external_id) VALUES ($1, 'url', $2, 'orphan')",
    )
    .bind(id)
    .bind(images.url("/files/skimage_coffee.png"))
    .execute(&mut db)
    .await
    .unwrap();
    let job = service
        .wait_job(&id.to_string(), Duration::from_secs(60))
        .await;
    assert_eq!(job["status"], "succeeded", "{job}");
    assert!(
        service.log().contains("job published by the republisher"),
        "{}",
        service.log()
    );
    let published: Option<chrono::DateTime<chrono::Utc>> =
        sqlx::query_scalar("SELECT published_at FROM jobs WHERE id = $1")
            .bind(id)
            .fetch_one(&mut db)
            .await
            .unwrap();
    assert!(published.is_some());
}
