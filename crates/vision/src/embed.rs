//! Running an ONNX image model with ONNX Runtime (loaded dynamically from a file,
//! since no prebuilt download is reachable from our machines).

use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use anyhow::{Context, anyhow, bail};
use image::RgbImage;
use ndarray::Array3;
use ort::environment::Environment;
use ort::session::{HasSelectedOutputs, OutputSelector, RunOptions, Session};
use ort::value::Tensor;

use crate::model::ModelSpec;
use crate::{l2_normalize, preprocess};

/// What the model says about one image.
#[derive(Debug, Clone, PartialEq)]
pub struct Output {
    /// L2-normalised embedding of `spec.dim` values.
    pub embedding: Vec<f32>,
    /// Raw class logits, when the spec names a logits output.
    pub logits: Option<Vec<f32>>,
    /// What the classifier head learns from, when the spec names a token output
    /// ([`ModelSpec::features_output`]): the mean of the patch tokens, layer-normalised (zero mean,
    /// unit variance over its values), so images of any contrast weigh alike.
    pub features: Option<Vec<f32>>,
}

/// One loaded model, shareable between threads.
///
/// ONNX Runtime sessions are not safe to run concurrently (hence `Session::run`
/// takes `&mut self`), so runs are serialised by a mutex. That costs nothing on
/// CPU: one run already uses all intra-op threads; callers gain by batching instead.
pub struct Embedder {
    spec: ModelSpec,
    runner: Mutex<Runner>,
}

struct Runner {
    session: Session,
    /// Asks only for the outputs we read: CLIP's second output is a 197x768 hidden
    /// state per image that would otherwise be copied out and thrown away.
    options: RunOptions<HasSelectedOutputs>,
}

/// ONNX Runtime allows one environment per process, and the library can only be
/// loaded once. A mutex-guarded slot (rather than a `OnceLock`, whose fallible
/// initialisation is unstable) lets a failed load, e.g. a wrong path, be retried.
static ENVIRONMENT: Mutex<Option<(PathBuf, Environment)>> = Mutex::new(None);

/// Whether ONNX Runtime computes uint8 x int8 products exactly on this CPU. With VNNI (AVX-512 or
/// AVX) its kernels multiply and accumulate in 32 bits; with plain AVX2 (or AVX-512 without VNNI) they
/// add pairs of products in 16 bits, which saturates on real weights. Outside x86 it is exact.
pub fn int8_is_exact_here() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512vnni")
            || std::arch::is_x86_feature_detected!("avxvnni")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        true
    }
}

/// The file to load for the model at `path` on this CPU: `path` itself, or, where int8 is not exact
/// ([`int8_is_exact_here`]) and it exists, its uint8 twin `<name>.u8.onnx` beside it
/// (`scripts/exact_int8.py`: the same weights after their zero points, which ONNX Runtime widens
/// before multiplying). The twin is twice as slow where VNNI runs the int8 weights (measured: 238 vs
/// 113 ms per image, one thread), so it is only for the CPUs that need it; there it lands at cosine
/// 0.990-0.995 of the exact vectors, where the int8 weights land at 0.42-0.54.
pub fn model_file_for_this_cpu(path: &Path) -> PathBuf {
    let twin = path.with_extension("u8.onnx");
    if !int8_is_exact_here() && twin.is_file() {
        twin
    } else {
        path.to_path_buf()
    }
}

fn environment(dylib: &Path) -> anyhow::Result<Environment> {
    let mut slot = ENVIRONMENT.lock().unwrap_or_else(PoisonError::into_inner);
    let wanted = std::fs::canonicalize(dylib).with_context(|| {
        format!(
            "ONNX Runtime library {} not found (run scripts/setup.sh, or set ORT_DYLIB_PATH)",
            dylib.display()
        )
    })?;
    if let Some((loaded, env)) = slot.as_ref() {
        if *loaded != wanted {
            tracing::warn!(
                loaded = %loaded.display(),
                requested = %wanted.display(),
                "ONNX Runtime is already loaded in this process; keeping the first library"
            );
        }
        return Ok(env.clone());
    }
    let env = ort::init_from(&wanted)
        .map_err(|e| anyhow!("loading ONNX Runtime from {}: {e}", wanted.display()))?
        .with_name("lookalike")
        .with_telemetry(false)
        .build()
        .context("creating the ONNX Runtime environment")?;
    tracing::info!(library = %wanted.display(), "ONNX Runtime loaded");
    *slot = Some((wanted, env.clone()));
    Ok(env)
}

impl Embedder {
    /// Loads `spec.path` with the ONNX Runtime library at `ort_dylib`.
    ///
    /// `intra_threads` is the number of threads one run may use (0 lets ONNX Runtime
    /// pick, i.e. one per physical core).
    pub fn load(ort_dylib: &Path, spec: ModelSpec, intra_threads: usize) -> anyhow::Result<Self> {
        spec.validate().map_err(|e| anyhow!(e))?;
        if !spec.path.is_file() {
            bail!(
                "model file {} for {} not found (run scripts/setup.sh, or set LOOKALIKE_MODEL_DIR)",
                spec.path.display(),
                spec.id
            );
        }
        let env = environment(ort_dylib)?;
        let file = model_file_for_this_cpu(&spec.path);
        if file != spec.path {
            tracing::info!(
                model = %spec.id,
                file = %file.display(),
                "this CPU has no VNNI, where ONNX Runtime's int8 products saturate: loading the \
                 model's uint8 twin"
            );
        }
        let started = std::time::Instant::now();
        let session = Session::builder(&env)?
            .with_intra_threads(intra_threads)
            .map_err(ort::Error::<()>::from)?
            // The worker shares two cores with image decoding: threads that spin
            // between runs would steal that time for a latency gain we do not need.
            .with_intra_op_spinning(false)
            .map_err(ort::Error::<()>::from)?
            .commit_from_file(&file)
            .with_context(|| format!("loading model {} from {}", spec.id, file.display()))?;
        check_signature(&session, &spec)?;

        let mut selector = OutputSelector::no_default().with(spec.output_name.clone());
        for extra in spec.logits_output.iter().chain(&spec.features_output) {
            selector = selector.with(extra.clone());
        }
        let options = RunOptions::new()?.with_outputs(selector);
        tracing::info!(model = %spec.id, ms = started.elapsed().as_millis() as u64, "model loaded");
        Ok(Self {
            spec,
            runner: Mutex::new(Runner { session, options }),
        })
    }

    pub fn spec(&self) -> &ModelSpec {
        &self.spec
    }

    /// Preprocesses and embeds one image.
    pub fn embed_image(&self, img: &RgbImage) -> anyhow::Result<Output> {
        let tensor = preprocess::to_tensor(img, &self.spec);
        self.embed_batch(std::slice::from_ref(&tensor))?
            .pop()
            .context("model returned no output for the image")
    }

    /// Embeds preprocessed CHW tensors (from [`preprocess::to_tensor`]) in one run.
    pub fn embed_batch(&self, batch: &[Array3<f32>]) -> anyhow::Result<Vec<Output>> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let n = batch.len();
        let size = self.spec.input_size as usize;
        let mut data = Vec::with_capacity(n * 3 * size * size);
        for (i, t) in batch.iter().enumerate() {
            if t.shape() != [3, size, size] {
                bail!(
                    "batch item {i} has shape {:?}, model {} needs [3, {size}, {size}]",
                    t.shape(),
                    self.spec.id
                );
            }
            match t.as_slice() {
                Some(s) => data.extend_from_slice(s),
                None => data.extend(t.iter().copied()),
            }
        }
        let input = Tensor::from_array(([n, 3, size, size], data))?;

        let mut guard = self.runner.lock().unwrap_or_else(PoisonError::into_inner);
        let Runner { session, options } = &mut *guard;
        let outputs = session
            .run_with_options(
                ort::inputs![self.spec.input_name.as_str() => input],
                options,
            )
            .with_context(|| format!("running model {}", self.spec.id))?;

        let embeddings = rows(&outputs, &self.spec.output_name, n, Some(self.spec.dim))?;
        let mut logits = match &self.spec.logits_output {
            Some(name) => Some(rows(&outputs, name, n, None)?.into_iter()),
            None => None,
        };
        let mut features = match &self.spec.features_output {
            Some(name) => Some(pooled_tokens(&outputs, name, n)?.into_iter()),
            None => None,
        };
        Ok(embeddings
            .into_iter()
            .map(|mut embedding| {
                l2_normalize(&mut embedding);
                Output {
                    embedding,
                    logits: logits.as_mut().and_then(Iterator::next),
                    features: features.as_mut().and_then(Iterator::next),
                }
            })
            .collect())
    }
}

/// The shape and values of the float output `name`.
fn output<'a>(
    outputs: &'a ort::session::SessionOutputs<'_>,
    name: &str,
) -> anyhow::Result<(&'a ort::value::Shape, &'a [f32])> {
    outputs
        .get(name)
        .with_context(|| format!("model produced no output {name:?}"))?
        .try_extract_tensor::<f32>()
        .with_context(|| format!("output {name:?}"))
}

/// Splits a `[n, k]` float output into `n` vectors, checking the shape.
fn rows(
    outputs: &ort::session::SessionOutputs<'_>,
    name: &str,
    n: usize,
    want_k: Option<usize>,
) -> anyhow::Result<Vec<Vec<f32>>> {
    let (shape, data) = output(outputs, name)?;
    let k = match **shape {
        [rows, k] if rows == n as i64 && k > 0 => k as usize,
        _ => bail!(
            "output {name:?} has shape {:?}, expected [{n}, k]",
            &**shape
        ),
    };
    if want_k.is_some_and(|want| want != k) {
        bail!(
            "output {name:?} has {k} values per image, the spec says {}",
            want_k.unwrap_or(0)
        );
    }
    Ok(data.chunks_exact(k).map(<[f32]>::to_vec).collect())
}

/// Splits a `[n, tokens, width]` float output into `n` feature vectors: the mean of the tokens after
/// the first (the class token), layer-normalised.
fn pooled_tokens(
    outputs: &ort::session::SessionOutputs<'_>,
    name: &str,
    n: usize,
) -> anyhow::Result<Vec<Vec<f32>>> {
    let (shape, data) = output(outputs, name)?;
    let (tokens, width) = match **shape {
        [rows, t, w] if rows == n as i64 && t >= 2 && w > 0 => (t as usize, w as usize),
        _ => bail!(
            "output {name:?} has shape {:?}, expected [{n}, tokens >= 2, width]",
            &**shape
        ),
    };
    Ok(data
        .chunks_exact(tokens * width)
        .map(|image| pool_tokens(image, width))
        .collect())
}

/// Mean of the tokens after the first, then layer normalisation without scale or shift.
pub fn pool_tokens(image: &[f32], width: usize) -> Vec<f32> {
    let mut sum = vec![0.0f64; width];
    let patches = image.chunks_exact(width).skip(1);
    let count = patches.len().max(1) as f64;
    for token in patches {
        for (s, &v) in sum.iter_mut().zip(token) {
            *s += f64::from(v);
        }
    }
    let mean_token: Vec<f64> = sum.iter().map(|s| s / count).collect();
    let centre = mean_token.iter().sum::<f64>() / width as f64;
    let var = mean_token.iter().map(|v| (v - centre).powi(2)).sum::<f64>() / width as f64;
    let scale = 1.0 / var.sqrt().max(1e-12);
    mean_token
        .iter()
        .map(|v| ((v - centre) * scale) as f32)
        .collect()
}

/// Fails early, with names, when a spec does not match the model file.
fn check_signature(session: &Session, spec: &ModelSpec) -> anyhow::Result<()> {
    let inputs: Vec<&str> = session.inputs().iter().map(|o| o.name()).collect();
    let outputs: Vec<&str> = session.outputs().iter().map(|o| o.name()).collect();
    if !inputs.contains(&spec.input_name.as_str()) {
        bail!(
            "model {} has no input {:?} (inputs: {inputs:?})",
            spec.id,
            spec.input_name
        );
    }
    for name in std::iter::once(&spec.output_name)
        .chain(&spec.logits_output)
        .chain(&spec.features_output)
    {
        if !outputs.contains(&name.as_str()) {
            bail!(
                "model {} has no output {name:?} (outputs: {outputs:?})",
                spec.id
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedder_can_be_shared_between_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Embedder>();
    }

    #[test]
    fn pooled_tokens_skip_the_class_token_and_are_layer_normalised() {
        // Two tokens of width 4: the class token must not count.
        let image = [100.0, 100.0, 100.0, 100.0, 1.0, 2.0, 3.0, 4.0];
        let f = pool_tokens(&image, 4);
        let mean: f32 = f.iter().sum::<f32>() / 4.0;
        let var: f32 = f.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / 4.0;
        assert!(mean.abs() < 1e-6 && (var - 1.0).abs() < 1e-5, "{f:?}");
        assert!(f[0] < f[1] && f[1] < f[2] && f[2] < f[3], "{f:?}");
        // A constant token stays finite.
        assert!(pool_tokens(&[0.0; 8], 4).iter().all(|v| v.is_finite()));
    }

    #[test]
    fn missing_model_file_says_how_to_fix_it() {
        let spec = ModelSpec::clip_vitb16("/nonexistent/model.onnx");
        let err = Embedder::load(Path::new("/nonexistent/libonnxruntime.so"), spec, 1)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("scripts/setup.sh"), "{err}");
    }
}
