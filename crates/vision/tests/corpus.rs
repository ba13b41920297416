//! The cleaning stage over the whole bad-image corpus (`scripts/fetch-corpus.sh` plus generated cases):
//! every valid-but-odd file becomes a sane upright RGB image, a model tensor and a thumbnail; every bad
//! one fails with its precise code. Each file runs on its own thread under `catch_unwind` and a time
//! limit, so a panic or a hang in a decoder fails this test instead of taking CI down with it.

#[path = "common/corpus.rs"]
mod corpus;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use corpus::Expect;
use image::{AnimationDecoder, DynamicImage, ImageFormat, RgbImage};
use lookalike_vision::{DecodeLimits, ModelSpec, clean, thumbnail_jpeg, to_tensor};

/// Far above the slowest file (a 2268x1512 JPEG decodes in ~50 ms); only a hang gets near it.
const PER_FILE: Duration = Duration::from_secs(30);
const THUMB: u32 = 256;

#[derive(Debug)]
enum Outcome {
    Cleaned {
        format: &'static str,
        rgb: RgbImage,
        tensor_ok: Result<(), String>,
        thumb: Result<(u32, u32), String>,
    },
    Failed {
        code: &'static str,
        message: String,
    },
    Panicked(String),
    TimedOut,
}

/// `clean`, `to_tensor` and `thumbnail_jpeg` on a thread of their own, as the worker would run them.
fn run(bytes: Vec<u8>) -> Outcome {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            match clean(&bytes, &DecodeLimits::default()) {
                Err(e) => Outcome::Failed {
                    code: e.code(),
                    message: e.to_string(),
                },
                Ok(img) => {
                    assert_eq!(img.rgb.dimensions(), (img.width, img.height));
                    let tensor = to_tensor(&img.rgb, &ModelSpec::clip_vitb16("unused.onnx"));
                    let tensor_ok = if tensor.shape() != [3, 224, 224] {
                        Err(format!("tensor shape {:?}", tensor.shape()))
                    } else if !tensor.iter().all(|v| v.is_finite()) {
                        Err("tensor has non-finite values".into())
                    } else {
                        Ok(())
                    };
                    let jpeg = thumbnail_jpeg(&img.rgb, THUMB);
                    let thumb = image::load_from_memory_with_format(&jpeg, ImageFormat::Jpeg)
                        .map(|t| (t.width(), t.height()))
                        .map_err(|e| format!("thumbnail is not a JPEG: {e}"));
                    Outcome::Cleaned {
                        format: img.format,
                        rgb: img.rgb,
                        tensor_ok,
                        thumb,
                    }
                }
            }
        }))
        .unwrap_or_else(|p| {
            Outcome::Panicked(
                p.downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default(),
            )
        });
        let _ = tx.send(outcome);
    });
    // A hung decoder thread is left behind; the test fails and the process ends with it.
    rx.recv_timeout(PER_FILE).unwrap_or(Outcome::TimedOut)
}

/// Checks one outcome against its expectation; returns what is wrong, if anything.
fn check(name: &str, expect: Expect, outcome: &Outcome) -> Result<(), String> {
    match (expect, outcome) {
        (
            Expect::Good {
                format,
                width,
                height,
            },
            Outcome::Cleaned {
                format: got,
                rgb,
                tensor_ok,
                thumb,
            },
        ) => {
            if (*got, rgb.width(), rgb.height()) != (format, width, height) {
                return Err(format!(
                    "decoded as {got} {}x{}, expected {format} {width}x{height}",
                    rgb.width(),
                    rgb.height()
                ));
            }
            tensor_ok.clone()?;
            let (tw, th) = thumb.clone()?;
            let fit = |side: u32| side.min(THUMB);
            let long = width.max(height);
            if tw.max(th) != fit(long) {
                return Err(format!("thumbnail {tw}x{th} for a {width}x{height} image"));
            }
            // Aspect ratio kept to within rounding of the short side.
            let expected_short = (u64::from(width.min(height)) * u64::from(fit(long))
                + u64::from(long) / 2)
                / u64::from(long);
            if u64::from(tw.min(th)).abs_diff(expected_short.max(1)) > 1 {
                return Err(format!(
                    "thumbnail {tw}x{th} distorts a {width}x{height} image"
                ));
            }
            if flat(rgb) && !corpus::FLAT.contains(&name) {
                return Err("decoded to a single flat colour".into());
            }
            Ok(())
        }
        (Expect::Bad(code), Outcome::Failed { code: got, .. }) if *got == code => Ok(()),
        (_, other) => Err(format!("expected {expect:?}, got {}", describe(other))),
    }
}

/// Every corpus image has detail; a decoder that fails quietly tends to give one colour (grey, black).
fn flat(rgb: &RgbImage) -> bool {
    let first = rgb.get_pixel(0, 0);
    rgb.pixels()
        .all(|p| p.0.iter().zip(first.0).all(|(&a, b)| a.abs_diff(b) <= 8))
}

fn describe(o: &Outcome) -> String {
    match o {
        Outcome::Cleaned { format, rgb, .. } => {
            format!("a clean {format} {}x{}", rgb.width(), rgb.height())
        }
        Outcome::Failed { code, message } => format!("{code} ({message})"),
        Outcome::Panicked(msg) => format!("a panic: {msg}"),
        Outcome::TimedOut => format!("no answer within {PER_FILE:?} (hang)"),
    }
}

fn cleaned(outcomes: &[(String, Outcome)], name: &str) -> RgbImage {
    match outcomes.iter().find(|(n, _)| n == name) {
        Some((_, Outcome::Cleaned { rgb, .. })) => rgb.clone(),
        other => panic!("{name}: {other:?}"),
    }
}

/// Mean absolute difference per channel value (Pillow's `assert_image_similar` measure).
fn mean_abs_diff(a: &RgbImage, b: &RgbImage) -> f64 {
    assert_eq!(a.dimensions(), b.dimensions());
    let total: u64 = a
        .as_raw()
        .iter()
        .zip(b.as_raw())
        .map(|(&x, &y)| u64::from(x.abs_diff(y)))
        .sum();
    total as f64 / a.as_raw().len() as f64
}

#[test]
fn every_corpus_file_is_cleaned_or_rejected_with_its_precise_code() {
    let cases = corpus::all();
    let started = Instant::now();
    let mut outcomes = Vec::new();
    let mut failures = Vec::new();
    for (name, bytes, expect) in cases {
        let t = Instant::now();
        let outcome = run(bytes);
        println!(
            "{name:<50} {:>6} ms  {}",
            t.elapsed().as_millis(),
            describe(&outcome)
        );
        if let Err(why) = check(&name, expect, &outcome) {
            failures.push(format!("{name}: {why}"));
        }
        outcomes.push((name, outcome));
    }
    println!(
        "{} files in {:.1} s",
        outcomes.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // EXIF orientation: every rotated or mirrored copy comes out like the upright original, within
    // the error of the JPEG/WebP re-encoding (Pillow's own test allows a mean difference of 17).
    for ext in ["jpg", "webp"] {
        let upright = cleaned(&outcomes, &format!("hopper.{ext}"));
        for (name, _) in outcomes
            .iter()
            .filter(|(n, _)| n.starts_with("hopper_orientation_") && n.ends_with(ext))
        {
            let diff = mean_abs_diff(&cleaned(&outcomes, name), &upright);
            println!("{name}: mean difference {diff:.1} from hopper.{ext}");
            assert!(
                diff < 17.0,
                "{name} is not upright: mean difference {diff:.1}"
            );
        }
    }
    // AVIF irot/imir: eight encodings of one photo, each stored turned or mirrored another way.
    let upright = cleaned(&outcomes, "rot0mir1.avif");
    for (name, _) in outcomes
        .iter()
        .filter(|(n, _)| n.starts_with("rot") && n.ends_with(".avif"))
    {
        let diff = mean_abs_diff(&cleaned(&outcomes, name), &upright);
        println!("{name}: mean difference {diff:.1} from rot0mir1.avif");
        assert!(
            diff < 17.0,
            "{name} is not upright: mean difference {diff:.1}"
        );
    }
}

/// Composites an RGBA frame over white with the same rounding as the cleaner.
fn over_white(frame: &image::RgbaImage) -> RgbImage {
    RgbImage::from_fn(frame.width(), frame.height(), |x, y| {
        let p = frame.get_pixel(x, y).0;
        let a = u32::from(p[3]);
        image::Rgb([0, 1, 2].map(|c| ((u32::from(p[c]) * a + 255 * (255 - a) + 127) / 255) as u8))
    })
}

#[test]
fn animations_give_their_first_frame_composited_over_white() {
    let dir = corpus::dir().join("good");
    for name in [
        "iss634.gif",
        "traffic_light.gif",
        "iss634.apng",
        "iss634.webp",
    ] {
        let bytes = std::fs::read(dir.join(name)).unwrap();
        let frames = all_frames(name, &bytes);
        assert!(frames.len() > 1, "{name} is an animation");
        let first = over_white(frames[0].buffer());
        let got = clean(&bytes, &DecodeLimits::default()).unwrap().rgb;
        let to_first = mean_abs_diff(&got, &first);
        // The frames of a short loop can be alike: the check only means something against a frame
        // that differs from the first.
        let farthest = frames
            .iter()
            .map(|f| mean_abs_diff(&got, &over_white(f.buffer())))
            .fold(0.0, f64::max);
        println!(
            "{name}: {} frames, difference to the first {to_first:.2}, to the farthest {farthest:.2}",
            frames.len()
        );
        assert!(farthest > 2.0, "{name}: frames too alike to tell apart");
        assert!(
            to_first < 0.01,
            "{name}: not the first frame ({to_first:.2})"
        );
    }
}

/// Every frame, composed onto the canvas, as the `image` crate's animation decoders give them.
fn all_frames(name: &str, bytes: &[u8]) -> Vec<image::Frame> {
    use image::codecs::{gif::GifDecoder, png::PngDecoder, webp::WebPDecoder};
    let r = std::io::Cursor::new(bytes);
    let frames = match name.rsplit('.').next() {
        Some("gif") => GifDecoder::new(r).unwrap().into_frames(),
        Some("apng") => PngDecoder::new(r).unwrap().apng().unwrap().into_frames(),
        Some("webp") => WebPDecoder::new(r).unwrap().into_frames(),
        _ => panic!("{name}: not an animation format"),
    };
    frames.collect_frames().expect("frames decode")
}

#[test]
fn alpha_is_composited_over_white() {
    let dir = corpus::dir().join("good");
    for name in [
        "transparent.png",
        "pil123rgba.png",
        "p_trns_single.png",
        "i_trns.png",
        "transparent.webp",
        "flower_alpha.png",
    ] {
        let bytes = std::fs::read(dir.join(name)).unwrap();
        // The image crate's own RGBA reading, independent of the cleaner's alpha handling.
        let rgba = image::load_from_memory(&bytes).unwrap().to_rgba8();
        let got = clean(&bytes, &DecodeLimits::default()).unwrap().rgb;
        let clear = rgba.pixels().filter(|p| p.0[3] == 0).count();
        let partial = rgba.pixels().filter(|p| p.0[3] > 0 && p.0[3] < 255).count();
        println!("{name}: {clear} transparent and {partial} partly transparent pixels");
        assert!(
            clear + partial > 0,
            "{name} was chosen for its alpha channel"
        );
        assert_eq!(got, over_white(&rgba), "{name}");
    }
}

#[test]
fn sixteen_bit_images_keep_their_tones() {
    // A 16-bit image reduced by truncation or by reading the wrong byte gives noise or a dark image;
    // the 8-bit copy must be the high byte rounded.
    let dir = corpus::dir().join("good");
    for name in [
        "hdr_room.png",
        "hopper_16bit.pgm",
        "tiff_16bit_RGB.tiff",
        "flower_small.g.depth16.pgm",
        "apng_mode_16bit.png",
    ] {
        let bytes = std::fs::read(dir.join(name)).unwrap();
        let wide = image::load_from_memory(&bytes).unwrap();
        assert!(
            matches!(
                wide.color().bytes_per_pixel() / wide.color().channel_count(),
                2
            ),
            "{name} is 16-bit"
        );
        let reference: RgbImage = DynamicImage::ImageRgb16(wide.to_rgb16()).to_rgb8();
        let got = clean(&bytes, &DecodeLimits::default()).unwrap().rgb;
        let diff = mean_abs_diff(&got, &reference);
        assert!(
            diff < 0.5,
            "{name}: mean difference {diff:.2} from the 16-bit source"
        );
    }
}
