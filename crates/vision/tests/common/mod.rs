//! Where the tests find the ONNX Runtime library, the models and the reference images.
//! Missing assets are a failure with instructions, never a silent pass.
#![allow(dead_code)] // each test binary uses a different subset

use std::path::{Path, PathBuf};

fn from_env_or(var: &str, default_rel: &str) -> PathBuf {
    std::env::var_os(var)
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(default_rel))
}

fn must_exist(path: PathBuf, what: &str, var: &str) -> PathBuf {
    assert!(
        path.exists(),
        "{what} not found at {}: run scripts/setup.sh (or set {var})",
        path.display()
    );
    path
}

pub fn ort_dylib() -> PathBuf {
    must_exist(
        from_env_or(
            "ORT_DYLIB_PATH",
            "../../.lookalike/lib/libonnxruntime.so.1.31.1",
        ),
        "ONNX Runtime library",
        "ORT_DYLIB_PATH",
    )
}

pub fn model(file: &str) -> PathBuf {
    must_exist(
        from_env_or("LOOKALIKE_MODEL_DIR", "../../.lookalike/models").join(file),
        "model",
        "LOOKALIKE_MODEL_DIR",
    )
}

/// The reference images and their expected embeddings, kept in the repository
/// (`tests/fixtures/reference`), or `$LOOKALIKE_REFERENCE_DIR`.
pub fn reference_dir() -> PathBuf {
    must_exist(
        from_env_or("LOOKALIKE_REFERENCE_DIR", "../../tests/fixtures/reference"),
        "reference image folder",
        "LOOKALIKE_REFERENCE_DIR",
    )
}

pub const CLIP_FILE: &str = "clip_vitb16_visual_int8.onnx";
pub const LITE0_FILE: &str = "efficientnet_lite0_imagenet.onnx";
