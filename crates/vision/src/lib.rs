//! Image side of lookalike: turn untrusted upload bytes into a clean RGB image,
//! turn that image into the tensor a model expects, and run the model.
//!
//! The pipeline is `decode::clean` -> `preprocess::to_tensor` -> `embed::Embedder`.
//! Every stage is pure with respect to its inputs, so the worker can run decoding on
//! many threads and funnel tensors into one batched model call.

mod avif;
pub mod decode;
pub mod embed;
mod jpeg;
pub mod model;
pub mod preprocess;
pub mod region;
mod sniff;
pub mod thumbnail;

pub use decode::{CleanImage, DecodeError, DecodeLimits, clean, clean_for, looks_like_image};
pub use embed::{Embedder, Output, int8_is_exact_here, model_file_for_this_cpu};
pub use jpeg::draft_scale;
pub use model::ModelSpec;
pub use preprocess::to_tensor;
pub use region::Region;
pub use thumbnail::thumbnail_jpeg;

/// Scales `v` to unit length in place.
///
/// A zero (or non-finite) vector is left untouched rather than turned into NaNs: a NaN
/// would poison every cosine it takes part in, whereas a zero vector simply matches nothing.
pub fn l2_normalize(v: &mut [f32]) {
    // Accumulate in f64: 1280 squared f32 terms lose digits otherwise.
    let norm = v
        .iter()
        .map(|&x| f64::from(x) * f64::from(x))
        .sum::<f64>()
        .sqrt();
    if norm.is_finite() && norm > 0.0 {
        let inv = (1.0 / norm) as f32;
        v.iter_mut().for_each(|x| *x *= inv);
    }
}

/// Cosine similarity of two vectors; 0.0 when either is zero or the lengths differ.
///
/// Works on unnormalised vectors too, so callers need not remember whether a vector
/// came straight from the model or from the store.
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    if a.len() != b.len() {
        return 0.0;
    }
    let (mut dot, mut na, mut nb) = (0.0f64, 0.0f64, 0.0f64);
    for (&x, &y) in a.iter().zip(b) {
        let (x, y) = (f64::from(x), f64::from(y));
        dot += x * y;
        na += x * x;
        nb += y * y;
    }
    let denom = (na * nb).sqrt();
    if denom > 0.0 && denom.is_finite() {
        (dot / denom) as f32
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn l2_normalize_gives_unit_length_and_leaves_zero_vectors_alone() {
        let mut v = [3.0, 4.0];
        l2_normalize(&mut v);
        assert!((v[0] - 0.6).abs() < 1e-6 && (v[1] - 0.8).abs() < 1e-6);
        let mut z = [0.0f32; 4];
        l2_normalize(&mut z);
        assert_eq!(z, [0.0; 4]);
    }

    #[test]
    fn cosine_handles_parallel_orthogonal_and_mismatched_vectors() {
        assert!((cosine(&[1.0, 2.0], &[2.0, 4.0]) - 1.0).abs() < 1e-6);
        assert!(cosine(&[1.0, 0.0], &[0.0, 1.0]).abs() < 1e-6);
        assert_eq!(cosine(&[1.0], &[1.0, 2.0]), 0.0);
        assert_eq!(cosine(&[0.0, 0.0], &[1.0, 2.0]), 0.0);
    }
}
