//! Rough model throughput on this machine (not a benchmark with statistics):
//!
//!     cargo run -p lookalike-vision --example throughput -- [clip|lite0] [batch] [rounds] [threads]
//!
//! Uses ORT_DYLIB_PATH and LOOKALIKE_MODEL_DIR like the tests.

use std::path::{Path, PathBuf};
use std::time::Instant;

use lookalike_vision::{Embedder, ModelSpec, to_tensor};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize, default: &str| args.get(i).cloned().unwrap_or_else(|| default.to_owned());
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let dylib = std::env::var_os("ORT_DYLIB_PATH")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join(".lookalike/lib/libonnxruntime.so.1.31.1"));
    let models = std::env::var_os("LOOKALIKE_MODEL_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join(".lookalike/models"));
    let spec = match arg(0, "clip").as_str() {
        "lite0" => ModelSpec::efficientnet_lite0(models.join("efficientnet_lite0_imagenet.onnx")),
        _ => ModelSpec::clip_vitb16(models.join("clip_vitb16_visual_int8.onnx")),
    };
    let batch: usize = arg(1, "8").parse()?;
    let rounds: usize = arg(2, "5").parse()?;
    let threads: usize = arg(3, "2").parse()?;

    let started = Instant::now();
    let embedder = Embedder::load(&dylib, spec, threads)?;
    println!(
        "{}: loaded in {:.2?}",
        embedder.spec().id,
        started.elapsed()
    );

    let img = image::RgbImage::from_fn(1200, 900, |x, y| {
        image::Rgb([(x % 251) as u8, (y % 241) as u8, 90])
    });
    let started = Instant::now();
    let tensor = to_tensor(&img, embedder.spec());
    println!("preprocess 1200x900: {:.2?}", started.elapsed());
    let tensors = vec![tensor; batch];

    embedder.embed_batch(&tensors)?; // warm-up: first run allocates and plans
    let started = Instant::now();
    for _ in 0..rounds {
        embedder.embed_batch(&tensors)?;
    }
    let secs = started.elapsed().as_secs_f64();
    let images = (batch * rounds) as f64;
    println!(
        "batch {batch} x {rounds} rounds, {threads} threads: {:.1} images/s ({:.1} ms/image)",
        images / secs,
        1000.0 * secs / images
    );
    Ok(())
}
