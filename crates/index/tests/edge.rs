//! EdgeIndex: the shared conformance checks plus what only the embedded engine has
//! (files on disk, optimize, concurrency with its locks).

// Built only with the embedded backend (the crate's default `edge` feature).
#![cfg(feature = "edge")]

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use lookalike_index::{
    CategoryFilter, EdgeIndex, EdgeOptions, Point, SearchRequest, VectorIndex, conformance,
};
use tempfile::TempDir;
use uuid::Uuid;

const DIM: usize = 64;

/// Options that keep tests quick and small: no automatic optimize; HNSW graphs built and
/// walked even for small segments (the defaults brute-force anything under ~10 MB).
fn test_opts() -> EdgeOptions {
    EdgeOptions {
        optimize_after_points: 0,
        indexing_threshold_kb: Some(32),
        full_scan_threshold_kb: Some(32),
        ..EdgeOptions::default()
    }
}

fn fresh(opts: EdgeOptions) -> (TempDir, EdgeIndex) {
    let dir = tempfile::tempdir().expect("tempdir");
    let index = EdgeIndex::open(dir.path(), DIM, opts).expect("open");
    (dir, index)
}

/// Reproducible pseudo-random vectors (SplitMix64), no rand dependency needed.
struct Rng(u64);

impl Rng {
    fn f32(&mut self) -> f32 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }

    fn vector(&mut self, dim: usize) -> Vec<f32> {
        (0..dim).map(|_| self.f32()).collect()
    }

    fn points(&mut self, n: usize, dim: usize, categories: &[&str]) -> Vec<Point> {
        (0..n)
            .map(|i| Point {
                id: Uuid::new_v4(),
                vector: self.vector(dim),
                category: Some(categories[i % categories.len()].to_owned()),
                model_id: "m1".into(),
                attrs: None,
            })
            .collect()
    }
}

fn normalised(v: &[f32]) -> Vec<f32> {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter().map(|x| x / norm).collect()
}

macro_rules! conformance_tests {
    ($($check:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $check() {
            let (_dir, index) = fresh(test_opts());
            conformance::$check(&index, DIM).await;
        }
    )*};
}

lookalike_index::for_each_conformance_check!(conformance_tests);

/// All checks on one index, through `dyn`: they must not disturb each other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_run_all_on_one_index() {
    let (_dir, index) = fresh(test_opts());
    let index: Arc<dyn VectorIndex> = Arc::new(index);
    conformance::run_all(index.as_ref(), DIM).await;
}

/// While every point has the searched model, searches leave the model condition out (it costs a
/// string compare per scored point); a point of another model must still never show up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_model_shortcut_never_returns_another_models_vector() {
    let (_dir, index) = fresh(test_opts());
    let points = Rng(11).points(50, DIM, &["a"]);
    let probe = points[0].vector.clone();
    index.upsert(points).await.unwrap();
    let search = |model: &str| {
        index.search(SearchRequest {
            model_id: Some(model.into()),
            ..SearchRequest::new(probe.clone(), 100)
        })
    };
    assert_eq!(search("m1").await.unwrap().len(), 50);
    assert!(search("m2").await.unwrap().is_empty());

    let other = Point {
        id: Uuid::new_v4(),
        vector: probe.clone(),
        category: Some("a".into()),
        model_id: "m2".into(),
        attrs: None,
    };
    index.upsert(vec![other.clone()]).await.unwrap();
    let hits = search("m1").await.unwrap();
    assert_eq!(hits.len(), 50);
    assert!(hits.iter().all(|h| h.id != other.id));
    let ids: Vec<Uuid> = search("m2").await.unwrap().iter().map(|h| h.id).collect();
    assert_eq!(ids, vec![other.id]);

    index.delete(&[other.id]).await.unwrap();
    assert_eq!(search("m1").await.unwrap().len(), 50);
    assert!(search("m2").await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_persists_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng(7);
    let points = rng.points(300, DIM, &["a", "b", "c"]);
    {
        let index = EdgeIndex::open(dir.path(), DIM, test_opts()).unwrap();
        index.upsert(points[..200].to_vec()).await.unwrap();
        // Half indexed, half in the plain segment: both kinds must come back.
        assert!(index.optimize_now().await.unwrap());
        index.upsert(points[200..].to_vec()).await.unwrap();
        index.delete(&[points[0].id]).await.unwrap();
        index
            .set_category(points[1].id, Some("z".into()))
            .await
            .unwrap();
        // Plain drop, no close(): the shard must still be durable.
    }
    let index = EdgeIndex::open(dir.path(), DIM, test_opts()).unwrap();
    assert_eq!(index.count(CategoryFilter::Any).await.unwrap(), 299);
    assert_eq!(
        index.count(CategoryFilter::One("z".into())).await.unwrap(),
        1
    );
    assert_eq!(index.get_vector(points[0].id).await.unwrap(), None);
    let stored = index.get_vector(points[250].id).await.unwrap().unwrap();
    let expected = normalised(&points[250].vector);
    assert!(
        stored
            .iter()
            .zip(&expected)
            .all(|(a, b)| (a - b).abs() < 1e-5)
    );
    let hits = index
        .search(SearchRequest::new(points[42].vector.clone(), 3))
        .await
        .unwrap();
    assert_eq!(hits[0].id, points[42].id);
    assert_eq!(hits[0].category.as_deref(), Some("a"));
    // Writes after reopen still apply (operation numbers kept growing).
    index
        .set_category(points[42].id, Some("moved".into()))
        .await
        .unwrap();
    let moved = index.count(CategoryFilter::One("moved".into())).await;
    assert_eq!(moved.unwrap(), 1);
    index.close().await.unwrap();
    let index = EdgeIndex::open(dir.path(), DIM, test_opts()).unwrap();
    let moved = index.count(CategoryFilter::One("moved".into())).await;
    assert_eq!(moved.unwrap(), 1);
}

/// The queue acks once upsert returns, so a crash right after must not lose the points.
/// A child process (this test binary, running `crash_child`) upserts and aborts without any
/// drop or close; the parent then opens the directory.
#[test]
fn upsert_survives_process_abort() {
    let dir = tempfile::tempdir().unwrap();
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "crash_child", "--ignored", "--nocapture"])
        .env(CRASH_DIR_ENV, dir.path())
        .status()
        .unwrap();
    assert!(!status.success(), "the child aborts on purpose");
    assert!(
        dir.path().join("aborted").exists(),
        "child reached the abort"
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let index = EdgeIndex::open(dir.path(), DIM, test_opts()).unwrap();
        assert_eq!(index.count(CategoryFilter::Any).await.unwrap(), 100);
        assert_eq!(
            index
                .count(CategoryFilter::One("moved".into()))
                .await
                .unwrap(),
            1
        );
    });
}

const CRASH_DIR_ENV: &str = "LOOKALIKE_INDEX_CRASH_DIR";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "helper process of upsert_survives_process_abort"]
async fn crash_child() {
    let Some(dir) = std::env::var_os(CRASH_DIR_ENV) else {
        return;
    };
    let dir = Path::new(&dir);
    let index = Arc::new(EdgeIndex::open(dir, DIM, test_opts()).unwrap());
    let points = Rng(9).points(100, DIM, &["a"]);
    index.upsert(points[..60].to_vec()).await.unwrap();
    // Concurrent single-point writes share flushes: each must still be durable on return.
    let writers: Vec<_> = points[60..]
        .iter()
        .map(|p| {
            let (index, p) = (index.clone(), p.clone());
            tokio::spawn(async move { index.upsert(vec![p]).await })
        })
        .collect();
    for writer in writers {
        writer.await.unwrap().unwrap();
    }
    index
        .set_category(points[0].id, Some("moved".into()))
        .await
        .unwrap();
    std::fs::write(dir.join("aborted"), b"").unwrap();
    std::process::abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_rejects_other_dimension_and_second_opener() {
    let dir = tempfile::tempdir().unwrap();
    let index = EdgeIndex::open(dir.path(), DIM, test_opts()).unwrap();
    let second = EdgeIndex::open(dir.path(), DIM, test_opts());
    assert!(second.is_err(), "the engine locks its directory");
    index.close().await.unwrap();
    let err = EdgeIndex::open(dir.path(), DIM * 2, test_opts())
        .err()
        .expect("dim mismatch");
    assert!(err.to_string().contains("dimension"), "{err:#}");
    EdgeIndex::open(dir.path(), DIM, test_opts()).expect("reopens after close");
}

/// Every write used to pile up in the WAL forever (qdrant-edge 0.7.2 never truncates it).
/// Trimming it on open must keep the operation numbering, or later updates get ignored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wal_is_trimmed_on_open_and_updates_still_apply() {
    let dir = tempfile::tempdir().unwrap();
    let opts = EdgeOptions {
        wal_segment_bytes: Some(64 * 1024),
        ..test_opts()
    };
    let mut rng = Rng(11);
    let points = rng.points(600, DIM, &["a"]);
    let index = EdgeIndex::open(dir.path(), DIM, opts.clone()).unwrap();
    for batch in points.chunks(50) {
        index.upsert(batch.to_vec()).await.unwrap();
    }
    index
        .set_category(points[3].id, Some("b".into()))
        .await
        .unwrap();
    index.close().await.unwrap();
    assert!(closed_wal_files(dir.path()) > 1, "test must roll the WAL");

    let index = EdgeIndex::open(dir.path(), DIM, opts).unwrap();
    assert_eq!(closed_wal_files(dir.path()), 1);
    assert_eq!(
        index.count(CategoryFilter::One("b".into())).await.unwrap(),
        1
    );
    index
        .set_category(points[3].id, Some("c".into()))
        .await
        .unwrap();
    let mut replaced = points[5].clone();
    replaced.vector = rng.vector(DIM);
    index.upsert(vec![replaced.clone()]).await.unwrap();
    assert_eq!(
        index.count(CategoryFilter::One("c".into())).await.unwrap(),
        1
    );
    let stored = index.get_vector(replaced.id).await.unwrap().unwrap();
    let expected = normalised(&replaced.vector);
    assert!(
        stored
            .iter()
            .zip(&expected)
            .all(|(a, b)| (a - b).abs() < 1e-5)
    );
    assert_eq!(index.count(CategoryFilter::Any).await.unwrap(), 600);
}

fn closed_wal_files(dir: &Path) -> usize {
    std::fs::read_dir(dir.join("wal"))
        .unwrap()
        .filter(|e| {
            let name = e.as_ref().unwrap().file_name();
            name.to_string_lossy().starts_with("closed-")
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn searches_run_while_many_points_are_upserted() {
    let (_dir, index) = fresh(test_opts());
    let index = Arc::new(index);
    let mut rng = Rng(3);
    index
        .upsert(rng.points(200, DIM, &["a", "b"]))
        .await
        .unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let mut readers = Vec::new();
    for reader in 0..3u64 {
        let (index, done) = (index.clone(), done.clone());
        readers.push(tokio::spawn(async move {
            let mut rng = Rng(100 + reader);
            let mut searches = 0;
            while !done.load(Ordering::Acquire) {
                let req = SearchRequest {
                    filter: CategoryFilter::One("a".into()),
                    ..SearchRequest::new(rng.vector(DIM), 10)
                };
                let hits = index.search(req).await.expect("search during upsert");
                assert!(!hits.is_empty());
                searches += 1;
            }
            searches
        }));
    }
    let points = rng.points(3000, DIM, &["a", "b"]);
    for batch in points.chunks(250) {
        index.upsert(batch.to_vec()).await.unwrap();
    }
    done.store(true, Ordering::Release);
    for reader in readers {
        assert!(reader.await.unwrap() > 0);
    }
    assert_eq!(index.count(CategoryFilter::Any).await.unwrap(), 3200);
}

/// After an optimize the HNSW graph answers; its top 10 must match exact search closely.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recall_after_optimize() {
    let (_dir, index) = fresh(test_opts());
    let mut rng = Rng(42);
    let points = rng.points(5000, DIM, &["a", "b", "c", "d"]);
    for batch in points.chunks(1000) {
        index.upsert(batch.to_vec()).await.unwrap();
    }
    // Searches keep being answered while the HNSW graph is built.
    let index = Arc::new(index);
    let started = Instant::now();
    let optimize = tokio::spawn({
        let index = index.clone();
        async move { index.optimize_now().await }
    });
    let (mut during, mut slowest) = (0, Duration::ZERO);
    while !optimize.is_finished() {
        let t = Instant::now();
        let hits = index.search(SearchRequest::new(rng.vector(DIM), 10)).await;
        assert_eq!(hits.unwrap().len(), 10);
        slowest = slowest.max(t.elapsed());
        during += 1;
    }
    assert!(optimize.await.unwrap().unwrap());
    eprintln!(
        "optimize 5000 x {DIM}: {:?}; {during} searches meanwhile, slowest {slowest:?}",
        started.elapsed()
    );
    assert!(during > 0, "searches must not wait for the optimize");
    let stats = index.stats().await.unwrap();
    assert!(stats.indexed_vectors >= 5000, "HNSW built: {stats:?}");

    let unit: Vec<Vec<f32>> = points.iter().map(|p| normalised(&p.vector)).collect();
    let (mut found, mut total) = (0, 0);
    for _ in 0..100 {
        let query = rng.vector(DIM);
        let q = normalised(&query);
        let mut exact: Vec<(f32, usize)> = unit
            .iter()
            .enumerate()
            .map(|(i, v)| (v.iter().zip(&q).map(|(a, b)| a * b).sum(), i))
            .collect();
        exact.sort_by(|a, b| b.0.total_cmp(&a.0));
        let hits = index.search(SearchRequest::new(query, 10)).await.unwrap();
        assert_eq!(hits.len(), 10);
        for (_, i) in &exact[..10] {
            total += 1;
            found += usize::from(hits.iter().any(|h| h.id == points[*i].id));
        }
    }
    let recall = found as f64 / total as f64;
    eprintln!("recall@10 after optimize: {recall:.3}");
    assert!(recall >= 0.95, "recall@10 {recall}");

    // Filtered queries keep working on the indexed segment.
    let req = SearchRequest {
        filter: CategoryFilter::One("c".into()),
        ..SearchRequest::new(points[2].vector.clone(), 10)
    };
    let hits = index.search(req).await.unwrap();
    assert_eq!(hits[0].id, points[2].id);
    assert!(hits.iter().all(|h| h.category.as_deref() == Some("c")));
}

/// `optimize_after_points` starts an optimize in the background; searches keep answering.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_optimize_after_threshold() {
    let dir = tempfile::tempdir().unwrap();
    let opts = EdgeOptions {
        optimize_after_points: 1000,
        ..test_opts()
    };
    let index = EdgeIndex::open(dir.path(), DIM, opts.clone()).unwrap();
    let mut rng = Rng(5);
    let points = rng.points(1200, DIM, &["a"]);
    for batch in points.chunks(200) {
        index.upsert(batch.to_vec()).await.unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let hits = index
            .search(SearchRequest::new(points[9].vector.clone(), 1))
            .await;
        assert_eq!(hits.unwrap()[0].id, points[9].id);
        if index.stats().await.unwrap().indexed_vectors > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "background optimize never ran");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    index.close().await.unwrap();
    let index = EdgeIndex::open(dir.path(), DIM, opts).unwrap();
    assert!(index.stats().await.unwrap().indexed_vectors > 0);
    assert_eq!(index.count(CategoryFilter::Any).await.unwrap(), 1200);
}

/// Points written before a restart and not yet in a graph count toward the next optimize, so a
/// restarted service indexes them without waiting for `optimize_after_points` new ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unindexed_points_found_on_open_are_optimized() {
    let dir = tempfile::tempdir().unwrap();
    let opts = EdgeOptions {
        optimize_after_points: 1000,
        ..test_opts()
    };
    let mut rng = Rng(11);
    let points = rng.points(1200, DIM, &["a"]);
    {
        // No automatic optimize while writing: the points stay in the plain segment.
        let index = EdgeIndex::open(dir.path(), DIM, test_opts()).unwrap();
        index.upsert(points.clone()).await.unwrap();
        assert_eq!(index.stats().await.unwrap().indexed_vectors, 0);
        index.close().await.unwrap();
    }
    let index = EdgeIndex::open(dir.path(), DIM, opts).unwrap();
    assert_eq!(
        index.pending_points(),
        1200,
        "the unindexed points are counted"
    );
    index.optimize_if_due();
    let deadline = Instant::now() + Duration::from_secs(30);
    while index.stats().await.unwrap().indexed_vectors == 0 {
        assert!(Instant::now() < deadline, "no optimize after reopening");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    index.close().await.unwrap();
}

/// Timings for the report, not a check: `cargo test -p lookalike-index --test edge --
/// --ignored --nocapture timing`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn timing_10k_x_512() {
    const DIM: usize = 512;
    let dir = tempfile::tempdir().unwrap();
    let opts = EdgeOptions {
        optimize_after_points: 0,
        ..EdgeOptions::default()
    };
    let index = EdgeIndex::open(dir.path(), DIM, opts).unwrap();
    let mut rng = Rng(1);
    let cats: Vec<String> = (0..20).map(|i| format!("cat{i}")).collect();
    let cats: Vec<&str> = cats.iter().map(String::as_str).collect();
    let points = rng.points(10_000, DIM, &cats);
    let mut times = Vec::new();
    for point in rng.points(50, DIM, &cats) {
        let started = Instant::now();
        index.upsert(vec![point]).await.unwrap();
        times.push(started.elapsed());
    }
    times.sort();
    eprintln!(
        "single-point upsert, small index: p50 {:?} max {:?}",
        times[25], times[49]
    );
    for size in [100, 1000] {
        let started = Instant::now();
        for batch in points.chunks(size).take(1000 / size) {
            index.upsert(batch.to_vec()).await.unwrap();
        }
        eprintln!("upsert 1000 in batches of {size}: {:?}", started.elapsed());
        index
            .delete(&points[..1000].iter().map(|p| p.id).collect::<Vec<_>>())
            .await
            .unwrap();
    }
    let started = Instant::now();
    for batch in points.chunks(500) {
        index.upsert(batch.to_vec()).await.unwrap();
    }
    eprintln!(
        "upsert 10k x {DIM} in batches of 500: {:?}",
        started.elapsed()
    );
    latency(&index, &mut rng, DIM, "before optimize").await;
    let started = Instant::now();
    index.optimize_now().await.unwrap();
    let stats = index.stats().await.unwrap();
    eprintln!("optimize: {:?} {stats:?}", started.elapsed());
    latency(&index, &mut rng, DIM, "after optimize").await;
    let mut times = Vec::new();
    for point in rng.points(50, DIM, &cats) {
        let started = Instant::now();
        index.upsert(vec![point]).await.unwrap();
        times.push(started.elapsed());
    }
    times.sort();
    eprintln!(
        "single-point upsert (write + flush): p50 {:?} max {:?}",
        times[25], times[49]
    );
    let index = Arc::new(index);
    let started = Instant::now();
    let writers: Vec<_> = rng
        .points(50, DIM, &cats)
        .into_iter()
        .map(|p| {
            let index = index.clone();
            tokio::spawn(async move { index.upsert(vec![p]).await })
        })
        .collect();
    for writer in writers {
        writer.await.unwrap().unwrap();
    }
    eprintln!(
        "50 concurrent single-point upserts: {:?}",
        started.elapsed()
    );
}

async fn latency(index: &EdgeIndex, rng: &mut Rng, dim: usize, label: &str) {
    for filter in [CategoryFilter::Any, CategoryFilter::One("cat3".into())] {
        let mut times = Vec::new();
        for _ in 0..200 {
            let req = SearchRequest {
                filter: filter.clone(),
                ..SearchRequest::new(rng.vector(dim), 10)
            };
            let started = Instant::now();
            index.search(req).await.unwrap();
            times.push(started.elapsed());
        }
        times.sort();
        eprintln!(
            "{label} {filter:?}: p50 {:?} p99 {:?}",
            times[times.len() / 2],
            times[times.len() * 99 / 100]
        );
    }
}
