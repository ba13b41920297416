//! QdrantIndex against a real Qdrant server: the shared conformance checks plus what only the
//! server backend has (collection set-up on connect, aliases).
//!
//! They need a server: `QDRANT_URL` names its gRPC endpoint (and `QDRANT_API_KEY` its key, if it
//! wants one). `scripts/test.sh` starts a private Qdrant 1.18.3 from `../shared/bin/qdrant` and
//! sets both `QDRANT_URL` and `LOOKALIKE_REQUIRE_QDRANT`; with that variable (or `CI`) set, a test
//! that finds no server fails and says what is missing. Only a developer's partial run (plain
//! `cargo test`) skips them, and says so. Every test works in collections of its own, named with
//! a random token, and drops them at the end, pass or fail.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use lookalike_index::{
    CategoryFilter, Point, QdrantIndex, SearchRequest, ServerOptions, VectorIndex, conformance,
};
use uuid::Uuid;

const DIM: usize = 64;

/// The server's URL; `None` (the test is skipped) only on a developer's partial run.
fn server_url() -> Option<String> {
    let url = std::env::var("QDRANT_URL")
        .ok()
        .filter(|url| !url.trim().is_empty());
    if url.is_none() {
        let required = ["LOOKALIKE_REQUIRE_QDRANT", "CI"]
            .iter()
            .any(|v| std::env::var(v).is_ok_and(|v| !v.is_empty() && v != "false" && v != "0"));
        assert!(
            !required,
            "no Qdrant server: QDRANT_URL is not set. scripts/test.sh starts one from \
             ../shared/bin/qdrant (or LOOKALIKE_QDRANT_BIN); run the tests through it, or set \
             QDRANT_URL to a Qdrant 1.18 server's gRPC endpoint"
        );
        eprintln!("skipped: QDRANT_URL is not set (no Qdrant server)");
    }
    url
}

fn server_options(collection: &str, dim: usize) -> Option<ServerOptions> {
    let url = server_url()?;
    Some(ServerOptions {
        api_key: std::env::var("QDRANT_API_KEY").ok(),
        ..ServerOptions::new(url, collection, dim)
    })
}

fn unique_name(what: &str) -> String {
    format!("lookalike-test-{what}-{}", Uuid::new_v4().simple())
}

/// Run `check` on an index over a fresh collection, then drop every collection in `cleanup`
/// (the index's own included) whether the check passed or panicked.
async fn with_fresh_index<F, Fut>(check: F)
where
    F: FnOnce(Arc<QdrantIndex>, Arc<std::sync::Mutex<Vec<String>>>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let name = unique_name("idx");
    let Some(opts) = server_options(&name, DIM) else {
        return;
    };
    let index = Arc::new(QdrantIndex::connect(opts).await.expect("connect"));
    let cleanup = Arc::new(std::sync::Mutex::new(vec![name]));
    // A task of its own, so that a failed assertion still lets the clean-up below run.
    let outcome = tokio::spawn(check(index.clone(), cleanup.clone())).await;
    let names = cleanup.lock().expect("not poisoned").clone();
    for name in names {
        if let Err(e) = index.drop_collection(&name).await {
            eprintln!("could not drop test collection {name}: {e:#}");
        }
    }
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

macro_rules! conformance_tests {
    ($($check:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $check() {
            with_fresh_index(|index, _| async move {
                conformance::$check(index.as_ref(), DIM).await;
            })
            .await;
        }
    )*};
}

lookalike_index::for_each_conformance_check!(conformance_tests);

/// All checks on one collection, through `dyn`: they must not disturb each other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_run_all_on_one_collection() {
    with_fresh_index(|index, _| async move {
        let index: Arc<dyn VectorIndex> = index;
        assert_eq!(index.name(), "qdrant");
        conformance::run_all(index.as_ref(), DIM).await;
    })
    .await;
}

fn point(vector: Vec<f32>, category: &str) -> Point {
    Point {
        id: Uuid::new_v4(),
        vector,
        category: Some(category.to_owned()),
        model_id: "m1".into(),
        attrs: None,
    }
}

fn unit(dim: usize, hot: usize) -> Vec<f32> {
    (0..dim).map(|i| if i == hot { 1.0 } else { 0.0 }).collect()
}

/// Connecting again finds the collection made the first time and keeps its points; another
/// dimension is refused with a message saying so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnect_keeps_points_and_rejects_other_dimension() {
    with_fresh_index(|index, _| async move {
        let p = point(unit(DIM, 3), "coat");
        index.upsert(vec![p.clone()]).await.expect("upsert");

        let opts = server_options(index.collection(), DIM).expect("configured");
        let again = QdrantIndex::connect(opts).await.expect("reconnect");
        let stored = again.get_point(p.id).await.expect("get").expect("kept");
        assert_eq!(stored.category.as_deref(), Some("coat"));

        let opts = server_options(index.collection(), DIM + 1).expect("configured");
        let err = QdrantIndex::connect(opts).await.err().expect("other dim");
        assert!(format!("{err:#}").contains("dimension"), "{err:#}");
    })
    .await;
}

/// The reindex path: fill a second collection, then switch an alias from the first to it in one
/// step; an index opened on the alias follows, and connecting through the alias works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alias_switches_between_collections() {
    with_fresh_index(|index, cleanup| async move {
        let (old, new, alias) = (
            index.collection().to_owned(),
            unique_name("new"),
            unique_name("alias"),
        );
        cleanup.lock().expect("not poisoned").push(new.clone());
        let in_old = point(unit(DIM, 1), "old");
        index
            .upsert(vec![in_old.clone()])
            .await
            .expect("upsert old");

        index.create_collection(&new, DIM).await.expect("create");
        let second = index.with_collection(&new);
        let in_new = point(unit(DIM, 2), "new");
        second
            .upsert(vec![in_new.clone()])
            .await
            .expect("upsert new");

        assert_eq!(index.collection_behind(&alias).await.expect("lookup"), None);
        index.point_alias(&alias, &old).await.expect("create alias");
        assert_eq!(
            index.collection_behind(&alias).await.expect("lookup"),
            Some(old.clone())
        );
        let opts = server_options(&alias, DIM).expect("configured");
        let via_alias = QdrantIndex::connect(opts).await.expect("connect via alias");
        let old_points = via_alias.count(CategoryFilter::One("old".into())).await;
        assert_eq!(old_points.expect("count"), 1);

        index.point_alias(&alias, &new).await.expect("switch alias");
        index
            .point_alias(&alias, &new)
            .await
            .expect("switching again is a no-op");
        assert_eq!(
            index.collection_behind(&alias).await.expect("lookup"),
            Some(new.clone())
        );
        let hits = via_alias
            .search(SearchRequest::new(in_new.vector.clone(), 5))
            .await
            .expect("search via alias");
        assert_eq!(
            hits.iter().map(|h| h.id).collect::<Vec<_>>(),
            vec![in_new.id]
        );

        // An alias cannot take the name of a collection.
        let err = index.point_alias(&old, &new).await.expect_err("name taken");
        assert!(format!("{err:#}").contains("not an alias"), "{err:#}");
        // No alias clean-up needed: Qdrant removes a collection's aliases when it is dropped.
    })
    .await;
}

/// A dimension the server enforces: an index from `with_collection` does not know the other
/// collection's dimension, and must still report a mismatch as a permanent error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_side_dimension_check_is_invalid() {
    with_fresh_index(|index, _| async move {
        let unknown_dim = index.with_collection(index.collection());
        let err = unknown_dim
            .upsert(vec![point(unit(DIM + 1, 0), "x")])
            .await
            .expect_err("dim + 1");
        assert!(!err.is_transient(), "{err:?}");
    })
    .await;
}

/// Runs without a server: nothing listens on the port, so connecting fails quickly with a
/// message naming the server, instead of hanging or panicking.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_to_a_closed_port_fails_cleanly() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr").port()
    };
    let url = format!("http://127.0.0.1:{port}");
    let opts = ServerOptions {
        timeout: Duration::from_secs(2),
        ..ServerOptions::new(url.clone(), "unused", DIM)
    };
    let started = std::time::Instant::now();
    let err = QdrantIndex::connect(opts)
        .await
        .err()
        .expect("nothing listens");
    assert!(format!("{err:#}").contains(&url), "{err:#}");
    assert!(started.elapsed() < Duration::from_secs(10));
}

/// A service process opens the index while the server is away: it starts, and every request
/// (the readiness check included) answers "unavailable", which queue consumers retry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_without_a_server_starts_and_answers_unavailable() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr").port()
    };
    let opts = ServerOptions {
        timeout: Duration::from_secs(2),
        ..ServerOptions::new(format!("http://127.0.0.1:{port}"), "unused", DIM)
    };
    let index = QdrantIndex::open(opts)
        .await
        .expect("starts without a server");
    let err = index.ping().await.expect_err("not reached");
    assert!(err.is_transient(), "{err:?}");
    let err = index
        .upsert(vec![point(unit(DIM, 0), "coat")])
        .await
        .expect_err("not reached");
    assert!(err.is_transient(), "{err:?}");
}

/// The server's version is checked against the client's on connect (and reported in the log);
/// the one the test command runs is accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_test_server_version_is_one_the_client_accepts() {
    with_fresh_index(|index, _| async move {
        index.ping().await.expect("connected and ready");
        assert!(lookalike_index::check_versions("1.18.3", lookalike_index::CLIENT_VERSION).is_ok());
    })
    .await;
}

/// A collection deleted under a running service is a configuration problem, not a passing fault:
/// requests and the readiness check say "misconfigured" (workers pause on it), and all is well
/// again once the collection is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_collection_is_misconfigured_until_it_is_back() {
    with_fresh_index(|index, _| async move {
        let name = index.collection().to_owned();
        index.drop_collection(&name).await.expect("drop");
        let err = index
            .upsert(vec![point(unit(DIM, 0), "coat")])
            .await
            .expect_err("collection gone");
        assert!(err.is_misconfigured(), "{err:?}");
        let err = index.ping().await.expect_err("collection gone");
        assert!(err.is_misconfigured(), "{err:?}");
        index.create_collection(&name, DIM).await.expect("recreate");
        index.ping().await.expect("ready again");
        index
            .upsert(vec![point(unit(DIM, 0), "coat")])
            .await
            .expect("writes again");
    })
    .await;
}

/// The count behind `/v1/status` and `/metrics` is the server's estimate, not a scan; on a
/// collection that only grew it equals the exact count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approximate_count_matches_a_collection_that_only_grew() {
    with_fresh_index(|index, _| async move {
        let points: Vec<_> = (0..5).map(|i| point(unit(DIM, i), "coat")).collect();
        index.upsert(points).await.expect("upsert");
        assert_eq!(index.approx_count().await.expect("approx"), 5);
        assert_eq!(index.count(CategoryFilter::Any).await.expect("exact"), 5);
    })
    .await;
}

/// A service names its model: it reads and writes `<alias>-<model>`, made on first start with
/// the alias pointing at it. A collection from before per-model collections, holding one model's
/// points under the alias's name, stays that model's collection; a second model gets its own
/// beside it, and the alias can be made for it only once the old collection is dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_model_gets_its_own_collection_behind_the_alias() {
    let Some(url) = server_url() else {
        return;
    };
    let model_opts = |alias: &str, model: &str| ServerOptions {
        model_id: Some(model.to_owned()),
        api_key: std::env::var("QDRANT_API_KEY").ok(),
        ..ServerOptions::new(url.clone(), alias, DIM)
    };
    let admin = QdrantIndex::connect_admin(ServerOptions::new(url.clone(), "unused", DIM))
        .await
        .expect("admin connection");

    // A fresh deployment.
    let alias = unique_name("fresh");
    let m1 = QdrantIndex::open(model_opts(&alias, "m1"))
        .await
        .expect("open");
    assert_eq!(m1.collection(), format!("{alias}-m1"));
    assert_eq!(
        admin.collection_behind(&alias).await.unwrap(),
        Some(format!("{alias}-m1"))
    );
    let m2 = QdrantIndex::open(model_opts(&alias, "m2"))
        .await
        .expect("open");
    assert_eq!(m2.collection(), format!("{alias}-m2"));
    assert_eq!(
        admin.collection_behind(&alias).await.unwrap(),
        Some(format!("{alias}-m1")),
        "a second model does not move the alias by starting"
    );
    assert_eq!(
        m2.adopt_alias().await.unwrap(),
        lookalike_index::AliasSwitch::Switched {
            previous: Some(format!("{alias}-m1"))
        }
    );
    for name in [format!("{alias}-m1"), format!("{alias}-m2")] {
        admin.drop_collection(&name).await.unwrap();
    }

    // A deployment from before: a real collection under the alias's name, holding m1's points.
    let legacy = unique_name("legacy");
    admin.create_collection(&legacy, DIM).await.expect("create");
    admin
        .with_collection(&legacy)
        .upsert(vec![point(unit(DIM, 0), "coat")])
        .await
        .expect("upsert");
    let old = QdrantIndex::open(model_opts(&legacy, "m1"))
        .await
        .expect("open");
    assert_eq!(old.collection(), legacy, "m1 keeps its collection");
    assert_eq!(
        old.adopt_alias().await.unwrap(),
        lookalike_index::AliasSwitch::IsTheCollection
    );
    let new = QdrantIndex::open(model_opts(&legacy, "m2"))
        .await
        .expect("open");
    assert_eq!(new.collection(), format!("{legacy}-m2"));
    assert_eq!(
        new.adopt_alias().await.unwrap(),
        lookalike_index::AliasSwitch::NameTaken
    );
    admin.drop_collection(&legacy).await.unwrap();
    assert_eq!(
        new.adopt_alias().await.unwrap(),
        lookalike_index::AliasSwitch::Switched { previous: None }
    );
    assert_eq!(
        admin.collection_behind(&legacy).await.unwrap(),
        Some(format!("{legacy}-m2"))
    );
    admin
        .drop_collection(&format!("{legacy}-m2"))
        .await
        .unwrap();
}
