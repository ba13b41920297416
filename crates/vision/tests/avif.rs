//! AVIF decoding: the corpus's AVIF files against Pillow's decode of them, the size limits checked
//! before any AV1 data is decoded, and a few hundred damaged copies that must each give an image or a
//! clean error (a panic is a failure too, and an abort would end this test binary).
//!
//! The reference, `tests/fixtures/avif_reference.json`, is made by `scripts/avif_reference.py` with
//! the pinned Pillow 13 of `scripts/pyenv.sh` (libavif and dav1d from its wheel): per file the upright
//! size, the mean colour, and the mean colour of each cell of a 4x4 grid, composited over white. The
//! files are Pillow's own test images (the corpus) and `tests/fixtures/avif/` (`scripts/avif_fixtures.sh`):
//! 10- and 12-bit, 4:2:2, monochrome, limited range, the BT.709, BT.2020, identity, YCgCo and
//! primaries-derived matrices, premultiplied alpha, which Pillow's images do not have.

#[path = "common/corpus.rs"]
mod corpus;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use image::RgbImage;
use lookalike_vision::{DecodeLimits, clean};
use serde_json::Value;

/// Largest difference allowed between our mean colour of a file (per channel, 0-255) and Pillow's.
/// The AV1 decoding is exact (both are dav1d); what differs is the YUV to RGB step, where libavif
/// uses libyuv's fixed-point arithmetic and we use floats. Measured (2026-12-02): at most 0.27 over
/// the whole picture; pixel for pixel a mean absolute difference of at most 0.39, the largest 6.
const MEAN_TOLERANCE: f64 = 0.5;
/// The same for the mean of one cell of the 4x4 grid (measured: at most 0.67).
const CELL_TOLERANCE: f64 = 1.0;
/// Files for which Pillow's libavif takes libyuv's high-bit-depth path, whose fixed-point constants
/// leave red and blue about one level high (measured: mean 1.02 and 1.00, cells 3.91 and 1.24; per
/// pixel at most 7). libavif's own float path (`avifdec -u best`, Debian's 0.11.1) gives exactly our
/// pixels for both, so the allowance is for Pillow's rounding, not ours: (file, mean, cell).
const LIBYUV_HIGH_DEPTH: &[(&str, f64, f64)] = &[
    ("yuv420-10bit-bt709-limited.avif", 1.25, 4.5),
    ("yuv444-12bit-bt2020-full.avif", 1.25, 1.5),
];
/// Damaged copies made of each corpus AVIF; `LOOKALIKE_AVIF_MUTANTS` asks for more (a longer hunt).
const MUTANTS_PER_FILE: usize = 25;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

fn reference() -> Value {
    let path = fixtures().join("avif_reference.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (scripts/avif_reference.py makes it)",
            path.display()
        )
    });
    serde_json::from_str(&text).expect("reference is JSON")
}

fn corpus_file(name: &str) -> Vec<u8> {
    let path = corpus::dir().join("good").join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_f64().expect("number"))
        .collect()
}

/// Mean colour of the whole image and of each cell of a `grid` x `grid` split, as the script does.
fn summary(rgb: &RgbImage, grid: u32) -> (Vec<f64>, Vec<Vec<f64>>) {
    let (w, h) = rgb.dimensions();
    let mean = |x0: u32, x1: u32, y0: u32, y1: u32| {
        let mut sum = [0u64; 3];
        for y in y0..y1 {
            for x in x0..x1 {
                for (s, &c) in sum.iter_mut().zip(&rgb.get_pixel(x, y).0) {
                    *s += u64::from(c);
                }
            }
        }
        let n = f64::from((x1 - x0) * (y1 - y0));
        sum.iter().map(|&s| s as f64 / n).collect::<Vec<_>>()
    };
    let mut cells = Vec::new();
    for gy in 0..grid {
        for gx in 0..grid {
            cells.push(mean(
                gx * w / grid,
                (gx + 1) * w / grid,
                gy * h / grid,
                (gy + 1) * h / grid,
            ));
        }
    }
    (mean(0, w, 0, h), cells)
}

fn max_diff(a: &[f64], b: &[f64]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

#[test]
fn avif_files_decode_like_pillow() {
    let reference = reference();
    let grid = reference["grid"].as_u64().unwrap() as u32;
    let corpus_refs = reference["corpus"].as_object().unwrap();
    let fixture_refs = reference["fixtures"].as_object().unwrap();
    // Every AVIF of the corpus has a reference, and every reference a corpus file; the same for the
    // fixtures.
    let mut want: Vec<&str> = corpus::FILES
        .iter()
        .filter(|(_, e, _)| matches!(e, corpus::Expect::Good { format: "avif", .. }))
        .map(|(n, _, _)| *n)
        .collect();
    want.sort();
    let mut names: Vec<&str> = corpus_refs.keys().map(String::as_str).collect();
    names.sort();
    assert_eq!(
        names, want,
        "the reference and the corpus table list the same AVIF files"
    );
    let mut on_disk: Vec<String> = std::fs::read_dir(fixtures().join("avif"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    on_disk.sort();
    let mut names: Vec<&String> = fixture_refs.keys().collect();
    names.sort();
    assert_eq!(
        names,
        on_disk.iter().collect::<Vec<_>>(),
        "tests/fixtures/avif"
    );
    assert!(on_disk.len() >= 10, "{on_disk:?}");

    let files = corpus_refs
        .iter()
        .map(|(name, r)| (name, r, corpus_file(name)))
        .chain(fixture_refs.iter().map(|(name, r)| {
            let path = fixtures().join("avif").join(name);
            let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            (name, r, bytes)
        }));
    let (mut worst_mean, mut worst_cell) = (0.0f64, 0.0f64);
    let mut failures = Vec::new();
    for (name, r, bytes) in files {
        let img = clean(&bytes, &DecodeLimits::default())
            .unwrap_or_else(|e| panic!("{name}: {} ({e})", e.code()));
        let size = (r["width"].as_u64().unwrap(), r["height"].as_u64().unwrap());
        assert_eq!(
            (u64::from(img.width), u64::from(img.height)),
            size,
            "{name}: upright size"
        );
        let (mean, cells) = summary(&img.rgb, grid);
        let mean_diff = max_diff(&mean, &floats(&r["mean"]));
        let cell_diff = r["grid"]
            .as_array()
            .unwrap()
            .iter()
            .zip(&cells)
            .map(|(want, got)| max_diff(got, &floats(want)))
            .fold(0.0, f64::max);
        println!(
            "{name:<40} {}x{} mean off by {mean_diff:.3}, worst cell by {cell_diff:.3}",
            img.width, img.height
        );
        worst_mean = worst_mean.max(mean_diff);
        worst_cell = worst_cell.max(cell_diff);
        let (mean_ok, cell_ok) = LIBYUV_HIGH_DEPTH
            .iter()
            .find(|(n, _, _)| n == name)
            .map_or((MEAN_TOLERANCE, CELL_TOLERANCE), |&(_, m, c)| (m, c));
        if mean_diff > mean_ok || cell_diff > cell_ok {
            failures.push(format!(
                "{name}: mean off by {mean_diff:.2} (allowed {mean_ok}), a cell by {cell_diff:.2} \
                 (allowed {cell_ok})"
            ));
        }
    }
    println!("worst: mean {worst_mean:.3}, cell {worst_cell:.3}");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The offset of the first box of this type (its size field), searched as bytes.
fn find_box(bytes: &[u8], kind: &[u8; 4]) -> usize {
    bytes
        .windows(4)
        .position(|w| w == kind)
        .unwrap_or_else(|| panic!("no {} box", String::from_utf8_lossy(kind)))
        - 4
}

/// A copy of `bytes` whose `ispe` box declares `w` x `h`.
fn with_ispe(bytes: &[u8], w: u32, h: u32) -> Vec<u8> {
    let at = find_box(bytes, b"ispe");
    let mut out = bytes.to_vec();
    // size (4), "ispe" (4), version and flags (4), width (4), height (4)
    out[at + 12..at + 16].copy_from_slice(&w.to_be_bytes());
    out[at + 16..at + 20].copy_from_slice(&h.to_be_bytes());
    out
}

#[test]
fn declared_size_over_the_limits_is_refused_before_decoding() {
    let hopper = corpus_file("hopper.avif");
    // The real size, over a lower limit.
    let small = DecodeLimits {
        max_width: 100,
        ..DecodeLimits::default()
    };
    let err = clean(&hopper, &small).expect_err("over the width limit");
    assert_eq!(err.code(), "image_too_large");
    assert!(err.to_string().contains("128x128"), "{err}");

    // A few bytes changed to declare 60000x60000: refused from the container, nothing decoded.
    let bomb = with_ispe(&hopper, 60_000, 60_000);
    let started = Instant::now();
    let err = clean(&bomb, &DecodeLimits::default()).expect_err("declared bomb");
    assert_eq!(err.code(), "image_too_large");
    assert!(err.to_string().contains("60000x60000"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(1));

    // A container that understates the size: the AV1 sequence header's own maximum frame size is
    // checked too, before dav1d allocates a frame.
    let liar = with_ispe(&hopper, 16, 16);
    let tight = DecodeLimits {
        max_width: 100,
        max_height: 100,
        ..DecodeLimits::default()
    };
    let err = clean(&liar, &tight).expect_err("frame over the limit");
    assert_eq!(err.code(), "image_too_large");
    assert!(err.to_string().contains("128x128"), "{err}");
}

#[test]
fn alpha_is_composited_over_white() {
    let img = clean(&corpus_file("transparency.avif"), &DecodeLimits::default()).unwrap();
    // Its 876 fully transparent pixels (Pillow's test counts them) come out white.
    let white = img.rgb.pixels().filter(|p| p.0 == [255, 255, 255]).count();
    assert!(white >= 876, "{white} white pixels");
}

/// xorshift64*: a fixed, dependency-free sequence, so every run mutates the same bytes.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Damaged copies of `bytes`: cut at random lengths, random bytes overwritten anywhere, and bytes
/// overwritten in the first 600 (where the boxes' sizes, item locations and properties are).
fn mutants(bytes: &[u8], rng: &mut Rng, count: usize) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for i in 0..count {
        let mut b = bytes.to_vec();
        let what = match i % 4 {
            0 => {
                // At least one byte: an empty body has a code of its own.
                let len = 1 + rng.below(b.len() - 1);
                b.truncate(len);
                format!("cut to {len}")
            }
            1 => {
                let n = 1 + rng.below(8);
                for _ in 0..n {
                    let at = rng.below(b.len());
                    b[at] = rng.next() as u8;
                }
                format!("{n} random bytes")
            }
            2 => {
                let n = 1 + rng.below(4);
                let head = b.len().min(600);
                for _ in 0..n {
                    let at = rng.below(head);
                    b[at] = match rng.below(3) {
                        0 => 0,
                        1 => 0xFF,
                        _ => rng.next() as u8,
                    };
                }
                format!("{n} header bytes")
            }
            _ => {
                // A run of bytes in the AV1 data (past the header), zeroed or flipped.
                let start = 600.min(b.len() - 1) + rng.below(b.len().saturating_sub(600).max(1));
                let len = 1 + rng.below(64);
                for x in b.iter_mut().skip(start).take(len) {
                    *x ^= 0xA5;
                }
                format!("{len} bytes flipped at {start}")
            }
        };
        out.push((what, b));
    }
    out
}

#[test]
fn damaged_avif_files_give_an_image_or_a_clean_error() {
    let mut rng = Rng(0x5EED_A71F);
    let avifs = |dir: PathBuf| {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "avif" || e == "avifs"))
            .collect();
        files.sort();
        files
    };
    // Pillow's files and ours (10/12-bit, 4:2:2, monochrome, premultiplied alpha, other matrices).
    let files = [
        avifs(corpus::dir().join("good")),
        avifs(fixtures().join("avif")),
    ]
    .concat();
    assert!(files.len() >= 26, "AVIF files to damage: {files:?}");

    let count = std::env::var("LOOKALIKE_AVIF_MUTANTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(MUTANTS_PER_FILE);
    let mut cases = Vec::new();
    for path in &files {
        let bytes = std::fs::read(path).unwrap();
        let name = path.file_name().unwrap().to_string_lossy();
        for (what, bytes) in mutants(&bytes, &mut rng, count) {
            cases.push((format!("{name}, {what}"), bytes));
        }
    }
    let started = Instant::now();
    let mut counts = std::collections::BTreeMap::<&str, usize>::new();
    // The first message of each code, to show what kind of damage each stands for.
    let mut examples = std::collections::BTreeMap::<&str, String>::new();
    let mut failures = Vec::new();
    for (label, bytes) in &cases {
        let bytes = bytes.clone();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let result = catch_unwind(AssertUnwindSafe(|| {
                clean(&bytes, &DecodeLimits::default())
                    .map(|img| img.rgb.dimensions())
                    .map_err(|e| (e.code(), e.to_string()))
            }));
            let _ = tx.send(result);
        });
        match rx.recv_timeout(Duration::from_secs(30)) {
            Err(_) => failures.push(format!("{label}: no answer in 30 s")),
            // `clean` turns a decoder's panic into image_corrupt; here that is a failure all the same.
            Ok(Err(_)) => failures.push(format!("{label}: panicked through clean")),
            Ok(Ok(Err((_, message)))) if message.contains("panicked") => {
                failures.push(format!("{label}: {message}"))
            }
            Ok(Ok(Ok(_))) => *counts.entry("decoded").or_default() += 1,
            Ok(Ok(Err((code, message)))) => {
                if matches!(
                    code,
                    "image_corrupt"
                        | "image_truncated"
                        | "image_too_large"
                        | "image_unsupported_format"
                ) {
                    *counts.entry(code).or_default() += 1;
                    examples
                        .entry(code)
                        .or_insert_with(|| format!("{label}: {message}"));
                } else {
                    failures.push(format!("{label}: {code} ({message})"));
                }
            }
        }
    }
    println!(
        "{} damaged AVIF files in {:.1} s: {counts:?}",
        cases.len(),
        started.elapsed().as_secs_f64()
    );
    for example in examples.values() {
        println!("  e.g. {example}");
    }
    assert_eq!(cases.len(), files.len() * count);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // Cut files are truncated, not merely corrupt: the container says how long it should be.
    assert!(
        counts.get("image_truncated").copied().unwrap_or(0) >= files.len() * count / 8,
        "{counts:?}"
    );
}
