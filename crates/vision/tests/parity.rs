//! The Rust pipeline (decode, Pillow-compatible preprocessing, ONNX Runtime) must
//! reproduce the reference embeddings computed with Python + Pillow.

mod common;

use lookalike_vision::{DecodeLimits, Embedder, ModelSpec, clean, clean_for, cosine, to_tensor};
use serde_json::Value;

/// The floors, on this CPU. Both reference files were computed exactly: `expected.json` (shared,
/// made with Python + Pillow on a CPU with AVX-512 VNNI) and `expected_draft.json` (Pillow's
/// `draft()`, made by `scripts/reference_embeddings.py --draft` on one too).
/// - Where ONNX Runtime computes the int8 model exactly (VNNI; `int8_is_exact_here`), the service
///   loads the published weights and must match: 0.99 against expected.json (MODELS.md; the CMYK
///   JPEG, informational there because decoders convert CMYK differently, is held to it too: ours
///   reproduces Pillow's conversion), 0.999 against the draft reference (same decoder and resampler
///   on both sides, so the vectors agree almost exactly; measured 0.99999+).
/// - Elsewhere (plain AVX2) the service loads the uint8 twin (`model_file_for_this_cpu`), which lands
///   at 0.990-0.995 of the exact vectors (one image at 0.98997), the int8 weights at 0.42-0.54:
///   0.985 for both files there, the CPU's rounding and not our preprocessing being the difference.
fn floors() -> (f32, f32) {
    if lookalike_vision::int8_is_exact_here() {
        (0.99, 0.999)
    } else {
        (0.985, 0.985)
    }
}

fn expected(file: &str) -> Value {
    let path = common::reference_dir().join(file);
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

/// Embeds every reference image with `spec` and checks it against `key` in `file`: a full decode
/// against expected.json, a draft decode (`spec.reduced_decode`) against expected_draft.json.
fn check_model(spec: ModelSpec, key: &str) {
    let (floor, draft_floor) = floors();
    let (file, floor) = if spec.reduced_decode {
        ("expected_draft.json", draft_floor)
    } else {
        ("expected.json", floor)
    };
    let draft = spec.draft_size();
    let embedder = Embedder::load(&common::ort_dylib(), spec, 2).expect("model loads");
    let expected = expected(file);
    let images = expected["images"].as_object().expect("images object");
    assert!(!images.is_empty(), "expected.json lists no images");
    let mut failures = Vec::new();
    for (name, want) in images {
        let bytes =
            std::fs::read(common::reference_dir().join(name)).expect("reference image readable");
        let img = clean_for(&bytes, &DecodeLimits::default(), draft)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let size = &want["size"];
        assert_eq!(
            [img.width, img.height],
            [
                size[0].as_u64().unwrap_or(0) as u32,
                size[1].as_u64().unwrap_or(0) as u32
            ],
            "{name}: image size"
        );
        if let Some(decoded) = want[key].get("decoded_size") {
            assert_eq!(
                [img.rgb.width(), img.rgb.height()],
                [
                    decoded[0].as_u64().unwrap_or(0) as u32,
                    decoded[1].as_u64().unwrap_or(0) as u32
                ],
                "{name}: pixels decoded in draft"
            );
        }
        let out = embedder
            .embed_batch(&[to_tensor(&img.rgb, embedder.spec())])
            .expect("inference runs");
        let out = &out[0];
        let reference = floats(&want[key]["embedding_l2"]);
        let cos = cosine(&out.embedding, &reference);
        println!("{key:<28} {name:<24} {file:<20} cosine {cos:.5}");
        if cos < floor {
            failures.push(format!("{name}: cosine {cos:.5} < {floor}"));
        }
        // The pooled tokens the classifier head reads (CLIP, made with --features).
        if let Some(features) = want[key].get("features") {
            let got = out
                .features
                .as_ref()
                .expect("spec with a token output yields features");
            let cos = cosine(got, &floats(features));
            println!("{key:<28} {name:<24} features cosine {cos:.5}");
            if cos < floor {
                failures.push(format!("{name}: features cosine {cos:.5} < {floor}"));
            }
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
fn clip_embeddings_decoded_in_draft_match_pillows_draft() {
    check_model(
        ModelSpec::clip_vitb16(common::model(common::CLIP_FILE)).reduced(),
        "clip_vitb16_visual_int8",
    );
}

#[test]
fn lite0_embeddings_decoded_in_draft_match_pillows_draft() {
    check_model(
        ModelSpec::efficientnet_lite0(common::model(common::LITE0_FILE)).reduced(),
        "efficientnet_lite0_imagenet",
    );
}

/// Draft decoding changes the pixels of a large JPEG, so its vectors are a recipe of their own
/// (the model id says so): for the reference photo it is measurably apart from the full decode.
#[test]
fn a_large_jpeg_decoded_in_draft_is_a_different_recipe() {
    let bytes = std::fs::read(common::reference_dir().join("allstar-sneakers.jpg")).unwrap();
    let full = clean(&bytes, &DecodeLimits::default()).unwrap();
    let draft = clean_for(&bytes, &DecodeLimits::default(), Some(224)).unwrap();
    assert_eq!((full.width, full.height), (1600, 1067));
    assert_eq!(
        (draft.width, draft.height),
        (1600, 1067),
        "the image's own size"
    );
    assert_eq!(draft.rgb.dimensions(), (400, 267), "decoded at 1/4");
    let embedder = Embedder::load(
        &common::ort_dylib(),
        ModelSpec::clip_vitb16(common::model(common::CLIP_FILE)),
        2,
    )
    .expect("model loads");
    // One at a time: the int8 model quantises activations per batch.
    let embed = |img: &image::RgbImage| {
        embedder
            .embed_batch(&[to_tensor(img, embedder.spec())])
            .unwrap()
            .remove(0)
            .embedding
    };
    let cos = cosine(&embed(&full.rgb), &embed(&draft.rgb));
    println!("full vs draft decode, CLIP: cosine {cos:.5}");
    assert!(cos < 0.99 && cos > 0.9, "{cos}");
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
