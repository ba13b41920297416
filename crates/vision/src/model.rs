//! A model is configuration, not code: the embedder and the preprocessing read
//! everything model-specific from a [`ModelSpec`], so adding a model means adding a
//! spec (in code or in a config file), never a new code path.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Everything needed to feed one ONNX image model and read its outputs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelSpec {
    /// Stable id stored next to every vector: vectors from different models
    /// (or different quantisations) must never be compared.
    pub id: String,
    /// Path of the `.onnx` file.
    pub path: PathBuf,
    /// Name of the float32 NCHW image input.
    pub input_name: String,
    /// Name of the embedding output, shape `[N, dim]`.
    pub output_name: String,
    /// Name of an optional class-logits output, shape `[N, classes]`.
    pub logits_output: Option<String>,
    /// Name of an optional token output, shape `[N, tokens, width]` (a vision transformer's last
    /// hidden state, first token the class token). Its patch tokens, averaged and layer-normalised
    /// ([`crate::embed::Output::features`]), are what the classifier head learns from: on
    /// Fashion-MNIST's development split a head on them is right 0.876 of the time against 0.854 on
    /// the 512-d embedding, which the projection has tuned for matching text, not telling a shirt
    /// from a pullover. Without it the head learns from the embedding.
    #[serde(default)]
    pub features_output: Option<String>,
    /// Length of the embedding.
    pub dim: usize,
    /// Side of the square input (the centre crop).
    pub input_size: u32,
    /// The shorter side is resized to this before the centre crop.
    pub resize_shorter: u32,
    /// Per-channel mean on the 0..1 scale (RGB order).
    pub mean: [f32; 3],
    /// Per-channel standard deviation on the 0..1 scale (RGB order).
    pub std: [f32; 3],
    /// Decode JPEGs in draft: at the smallest DCT scale leaving both sides at least
    /// `max(resize_shorter, input_size)`, then resize from there (Pillow's `draft()`).
    /// Several times cheaper on catalogue photos, but the pixels, and so the vectors,
    /// differ slightly from a full decode (median cosine 0.985 for CLIP int8 on real
    /// photos): it is part of what the model id names.
    #[serde(default)]
    pub reduced_decode: bool,
}

/// The last hidden state of the CLIP ViT-B/16 export, `[N, 197, 768]` (MODELS.md).
pub const CLIP_VITB16_TOKENS: &str = "onnx::Gather_1524";

impl ModelSpec {
    /// OpenAI CLIP ViT-B/16 image tower, int8 dynamic quantisation (values from MODELS.md).
    // Digits exactly as published, so they can be checked against the source by eye.
    #[allow(clippy::excessive_precision)]
    pub fn clip_vitb16(path: impl Into<PathBuf>) -> Self {
        Self {
            id: "clip-vit-b16-int8".into(),
            path: path.into(),
            input_name: "pixel_values".into(),
            output_name: "image_embeds".into(),
            logits_output: None,
            features_output: Some(CLIP_VITB16_TOKENS.into()),
            dim: 512,
            input_size: 224,
            resize_shorter: 224,
            mean: [0.481_454_66, 0.457_827_5, 0.408_210_73],
            std: [0.268_629_54, 0.261_302_58, 0.275_777_11],
            reduced_decode: false,
        }
    }

    /// EfficientNet-Lite0 trained on ImageNet-1k, with its 1000-class logits.
    ///
    /// Its published normalisation is `(pixel - 127) / 128` on the 0..255 scale,
    /// written here on the 0..1 scale so both models share one code path.
    pub fn efficientnet_lite0(path: impl Into<PathBuf>) -> Self {
        Self {
            id: "efficientnet-lite0-imagenet".into(),
            path: path.into(),
            input_name: "input".into(),
            output_name: "embedding".into(),
            logits_output: Some("logits".into()),
            features_output: None,
            dim: 1280,
            input_size: 224,
            resize_shorter: 256,
            mean: [127.0 / 255.0; 3],
            std: [128.0 / 255.0; 3],
            reduced_decode: false,
        }
    }

    /// The same model, decoding JPEGs in draft ([`ModelSpec::reduced_decode`]).
    pub fn reduced(mut self) -> Self {
        self.reduced_decode = true;
        self
    }

    /// The size to decode in draft for, when [`ModelSpec::reduced_decode`] is on.
    pub fn draft_size(&self) -> Option<u32> {
        self.reduced_decode
            .then(|| self.resize_shorter.max(self.input_size))
    }

    /// Rejects specs that would make preprocessing or inference meaningless or huge.
    ///
    /// Specs can come from config files, so they are checked once at load time
    /// instead of trusting them on every image.
    pub fn validate(&self) -> Result<(), String> {
        if self.dim == 0 {
            return Err(format!("model {}: dim must be > 0", self.id));
        }
        if !(1..=4096).contains(&self.input_size) {
            return Err(format!(
                "model {}: input_size {} is outside 1..=4096",
                self.id, self.input_size
            ));
        }
        if self.resize_shorter == 0 || self.resize_shorter > 16_384 {
            return Err(format!(
                "model {}: resize_shorter {} is outside 1..=16384",
                self.id, self.resize_shorter
            ));
        }
        if self.std.iter().any(|s| !s.is_finite() || *s <= 0.0)
            || self.mean.iter().any(|m| !m.is_finite())
        {
            return Err(format!(
                "model {}: mean must be finite and std finite and > 0",
                self.id
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_specs_are_valid_and_round_trip_through_json() {
        for spec in [
            ModelSpec::clip_vitb16("a.onnx"),
            ModelSpec::efficientnet_lite0("b.onnx"),
        ] {
            spec.validate().unwrap();
            let json = serde_json::to_string(&spec).unwrap();
            let back: ModelSpec = serde_json::from_str(&json).unwrap();
            assert_eq!(back, spec);
        }
    }

    #[test]
    fn lite0_normalisation_equals_minus_127_over_128_on_byte_scale() {
        let s = ModelSpec::efficientnet_lite0("x");
        let v = 200.0f32;
        let ours = (v / 255.0 - s.mean[0]) / s.std[0];
        assert!((ours - (v - 127.0) / 128.0).abs() < 1e-5);
    }
}
