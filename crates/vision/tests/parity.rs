//! The Rust pipeline (decode, Pillow-compatible preprocessing, ONNX Runtime) must
//! reproduce the reference embeddings computed with Python + Pillow.

mod common;

use lookalike_vision::{DecodeLimits, Embedder, ModelSpec, clean, cosine, to_tensor};
use serde_json::Value;

/// MODELS.md asks for 0.99. The CMYK JPEG is called informational there because
/// decoders convert CMYK differently; ours reproduces Pillow's conversion, so it is
/// held to the same floor (its value is printed like the others).
const FLOOR: f32 = 0.99;

fn expected() -> Value {
    let path = common::reference_dir().join("expected.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).expect("expected.json is valid JSON")
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_f64().expect("number") as f32)
        .collect()
}

/// Embeds every reference image with `spec` and checks it against `key` in expected.json.
fn check_model(spec: ModelSpec, key: &str) {
    let embedder = Embedder::load(&common::ort_dylib(), spec, 2).expect("model loads");
    let expected = expected();
    let images = expected["images"].as_object().expect("images object");
    assert!(!images.is_empty(), "expected.json lists no images");
    let mut failures = Vec::new();
    for (name, want) in images {
        let bytes =
            std::fs::read(common::reference_dir().join(name)).expect("reference image readable");
        let img = clean(&bytes, &DecodeLimits::default()).unwrap_or_else(|e| panic!("{name}: {e}"));
        let size = &want["size"];
        assert_eq!(
            [img.width, img.height],
            [
                size[0].as_u64().unwrap_or(0) as u32,
                size[1].as_u64().unwrap_or(0) as u32
            ],
            "{name}: decoded size"
        );
        let out = embedder
            .embed_batch(&[to_tensor(&img.rgb, embedder.spec())])
            .expect("inference runs");
        let out = &out[0];
        let reference = floats(&want[key]["embedding_l2"]);
        let cos = cosine(&out.embedding, &reference);
        println!("{key:<28} {name:<24} cosine {cos:.5}");
        if cos < FLOOR {
            failures.push(format!("{name}: cosine {cos:.5} < {FLOOR}"));
        }
        if let Some(top5) = want[key].get("top5") {
            let logits = out
                .logits
                .as_ref()
                .expect("spec with logits output yields logits");
            let top1 = logits
                .iter()
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(b.1))
                .map(|(i, _)| i as u64)
                .expect("non-empty logits");
            let want_top1 = top5[0][0].as_u64().expect("class index");
            println!(
                "{key:<28} {name:<24} top-1 {top1} (expected {want_top1} {})",
                top5[0][1]
            );
            if top1 != want_top1 {
                failures.push(format!("{name}: top-1 class {top1}, expected {want_top1}"));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{key} parity failures:\n{}",
        failures.join("\n")
    );
}

#[test]
fn clip_embeddings_match_the_python_reference() {
    check_model(
        ModelSpec::clip_vitb16(common::model(common::CLIP_FILE)),
        "clip_vitb16_visual_int8",
    );
}

#[test]
fn lite0_embeddings_and_top1_class_match_the_python_reference() {
    check_model(
        ModelSpec::efficientnet_lite0(common::model(common::LITE0_FILE)),
        "efficientnet_lite0_imagenet",
    );
}

#[test]
fn a_batch_gives_the_same_vectors_as_single_images() {
    let embedder = Embedder::load(
        &common::ort_dylib(),
        ModelSpec::efficientnet_lite0(common::model(common::LITE0_FILE)),
        2,
    )
    .expect("model loads");
    let dir = common::reference_dir();
    let tensors: Vec<_> = [
        "skimage_chelsea.png",
        "skimage_coffee.png",
        "sneakers_01__1.png",
    ]
    .iter()
    .map(|n| {
        let img = clean(
            &std::fs::read(dir.join(n)).expect("readable"),
            &DecodeLimits::default(),
        )
        .expect("decodes");
        to_tensor(&img.rgb, embedder.spec())
    })
    .collect();
    let batched = embedder.embed_batch(&tensors).expect("batch runs");
    assert_eq!(batched.len(), 3);
    for (t, b) in tensors.iter().zip(&batched) {
        let single = embedder
            .embed_batch(std::slice::from_ref(t))
            .expect("single runs");
        assert!(cosine(&single[0].embedding, &b.embedding) > 0.9999);
        let norm: f32 = b.embedding.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "embedding is L2-normalised");
        assert_eq!(b.embedding.len(), 1280);
        assert_eq!(b.logits.as_ref().map(Vec::len), Some(1000));
    }
    assert!(
        embedder
            .embed_batch(&[])
            .expect("empty batch is fine")
            .is_empty()
    );
}

#[test]
fn wrongly_shaped_tensors_are_an_error_not_a_crash() {
    let embedder = Embedder::load(
        &common::ort_dylib(),
        ModelSpec::efficientnet_lite0(common::model(common::LITE0_FILE)),
        1,
    )
    .expect("model loads");
    let err = embedder
        .embed_batch(&[ndarray::Array3::zeros((3, 10, 10))])
        .expect_err("bad shape rejected");
    assert!(err.to_string().contains("shape"), "{err}");
}

#[test]
fn a_spec_naming_a_missing_output_fails_at_load_time() {
    let mut spec = ModelSpec::efficientnet_lite0(common::model(common::LITE0_FILE));
    spec.output_name = "no_such_output".into();
    let err = Embedder::load(&common::ort_dylib(), spec, 1)
        .err()
        .expect("load fails");
    assert!(err.to_string().contains("no_such_output"), "{err}");
}
