//! The process's pool of model sessions (`worker/src/batcher.rs`), on the real model: a lone image
//! runs on the solo session, images that wait run on the lanes side by side with the same vectors,
//! and a search overtakes queued ingest.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use lookalike_analysis::batcher::{Batcher, Priority, Sessions};
use lookalike_core::Config;
use lookalike_vision::{Embedder, ModelSpec};
use ndarray::Array3;
use support::{asset, reference_dir};

fn spec() -> ModelSpec {
    let config = Config::load_from(None, Vec::new()).expect("default configuration");
    let mut spec = lookalike::model_spec(&config);
    spec.path = asset("models/clip_vitb16_visual_int8.onnx");
    spec
}

fn session(spec: &ModelSpec, threads: usize) -> Arc<Embedder> {
    Arc::new(
        Embedder::load(
            &asset("lib/libonnxruntime.so.1.31.1"),
            spec.clone(),
            threads,
        )
        .expect("model loads"),
    )
}

fn tensors(spec: &ModelSpec) -> Vec<Array3<f32>> {
    [
        "allstar-sneakers.jpg",
        "sneakers_01__1.png",
        "skimage_coffee.png",
    ]
    .iter()
    .map(|f| {
        let bytes = std::fs::read(reference_dir().join(f)).unwrap();
        let image = lookalike_vision::clean(&bytes, &Default::default()).unwrap();
        lookalike_vision::to_tensor(&image.rgb, spec)
    })
    .collect()
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// `lookalike_inference_runs_total{session="…"}` as rendered now.
fn runs(session: &str) -> f64 {
    let wanted = format!("lookalike_inference_runs_total{{session=\"{session}\"}} ");
    lookalike_telemetry::render()
        .lines()
        .find_map(|l| l.strip_prefix(&wanted)?.trim().parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lone_image_runs_solo_and_waiting_images_run_on_the_lanes_with_the_same_vectors() {
    lookalike_telemetry::install();
    let spec = spec();
    let pool = Batcher::start(
        Sessions {
            lanes: vec![session(&spec, 1), session(&spec, 1)],
            solo: Some(session(&spec, 2)),
        },
        1,
        Duration::ZERO,
    );
    let inputs = tensors(&spec);

    // Only this test has a solo session (the counters are the process's, shared by its tests).
    // One at a time: every run finds the pool idle.
    let solo_before = runs("solo");
    let mut alone = Vec::new();
    for t in &inputs {
        alone.push(pool.embed(t.clone(), Priority::Search).await.unwrap());
    }
    assert_eq!(runs("solo") - solo_before, 3.0, "each lone image ran solo");

    // Twelve at once: they queue, and the lanes take them (the first may still find it idle).
    let solo_before = runs("solo");
    let waiting: Vec<_> = (0..12)
        .map(|i| {
            let (pool, t) = (pool.clone(), inputs[i % 3].clone());
            tokio::spawn(async move { (i % 3, pool.embed(t, Priority::Ingest).await.unwrap()) })
        })
        .collect();
    for task in waiting {
        let (which, output) = task.await.unwrap();
        let c = cosine(&output.embedding, &alone[which].embedding);
        assert!(
            c > 0.9999,
            "a lane's vector matches the solo session's: {c}"
        );
    }
    let solo = runs("solo") - solo_before;
    assert!(
        solo <= 1.0,
        "waiting images ran on the lanes: {solo} of 12 ran solo"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_search_overtakes_queued_ingest() {
    let spec = spec();
    let pool = Batcher::start(
        Sessions {
            lanes: vec![session(&spec, 1), session(&spec, 1)],
            solo: None,
        },
        1,
        Duration::ZERO,
    );
    let t = tensors(&spec).remove(0);
    let finished = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for i in 0..6 {
        let (pool, t, finished) = (pool.clone(), t.clone(), finished.clone());
        tasks.push(tokio::spawn(async move {
            pool.embed(t, Priority::Ingest).await.unwrap();
            finished.lock().unwrap().push(format!("ingest {i}"));
        }));
        // In submission order.
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    tasks.push(tokio::spawn({
        let (pool, finished) = (pool.clone(), finished.clone());
        async move {
            pool.embed(t, Priority::Search).await.unwrap();
            finished.lock().unwrap().push("search".into());
        }
    }));
    for task in tasks {
        task.await.unwrap();
    }
    let order = finished.lock().unwrap().clone();
    let at = order.iter().position(|s| s == "search").unwrap();
    // Two ingest runs were under way when it came, at most two more start as they end; the
    // search is taken before the rest.
    assert!(at <= 4, "the search waited behind queued ingest: {order:?}");
}
