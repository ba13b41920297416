//! The bad-image corpus: what every file in it must become. Shared by the vision crate's corpus test
//! and the end-to-end one (`tests/corpus.rs` includes this file), so both hold the service to the same
//! table.
//!
//! The files come from `scripts/fetch-corpus.sh` (Pillow's and libjxl's test images, pinned) into
//! `.lookalike/corpus/{good,bad}/`; `generated()` adds the cases that need no download. A missing or
//! incomplete corpus fails the tests with instructions: no file is skipped silently.
#![allow(dead_code)] // each test binary uses a different subset

use std::path::{Path, PathBuf};

/// What one file must become.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// Decodes to an upright image of this format and size (after EXIF orientation).
    Good {
        format: &'static str,
        width: u32,
        height: u32,
    },
    /// Rejected with exactly this job error code.
    Bad(&'static str),
}

use Expect::{Bad, Good};

const fn good(format: &'static str, width: u32, height: u32) -> Expect {
    Good {
        format,
        width,
        height,
    }
}

pub const EMPTY: &str = "image_empty";
pub const UNSUPPORTED: &str = "image_unsupported_format";
pub const TOO_LARGE: &str = "image_too_large";
pub const TRUNCATED: &str = "image_truncated";
pub const CORRUPT: &str = "image_corrupt";

/// Good files that are a single colour by design (every other one must show some detail).
pub const FLAT: &[&str] = &["apng_mode_16bit.png"];

/// Every downloaded file, with why it is in the corpus. The fetch script decides `good/` or `bad/`;
/// the tests check that this table and the folders agree.
pub const FILES: &[(&str, Expect, &str)] = &[
    // --- Pillow 13.0.0 Tests/images ---
    (
        "pil_sample_cmyk.jpg",
        good("jpeg", 100, 100),
        "CMYK JPEG, Adobe-inverted",
    ),
    ("hopper_gray.jpg", good("jpeg", 128, 128), "greyscale JPEG"),
    (
        "app13-multiple.jpg",
        good("jpeg", 256, 160),
        "progressive JPEG with several APP13 segments",
    ),
    (
        "hopper.jpg",
        good("jpeg", 128, 128),
        "upright reference for the orientation files",
    ),
    (
        "hopper_orientation_2.jpg",
        good("jpeg", 128, 128),
        "EXIF orientation 2 (mirrored)",
    ),
    (
        "hopper_orientation_3.jpg",
        good("jpeg", 128, 128),
        "EXIF orientation 3 (180 degrees)",
    ),
    (
        "hopper_orientation_4.jpg",
        good("jpeg", 128, 128),
        "EXIF orientation 4",
    ),
    (
        "hopper_orientation_5.jpg",
        good("jpeg", 128, 128),
        "EXIF orientation 5 (transposed)",
    ),
    (
        "hopper_orientation_6.jpg",
        good("jpeg", 128, 128),
        "EXIF orientation 6 (90 degrees)",
    ),
    (
        "hopper_orientation_7.jpg",
        good("jpeg", 128, 128),
        "EXIF orientation 7",
    ),
    (
        "hopper_orientation_8.jpg",
        good("jpeg", 128, 128),
        "EXIF orientation 8 (270 degrees)",
    ),
    (
        "hopper.webp",
        good("webp", 128, 128),
        "upright reference for the WebP orientation files",
    ),
    (
        "hopper_orientation_3.webp",
        good("webp", 128, 128),
        "EXIF orientation in a WebP",
    ),
    (
        "hopper_orientation_6.webp",
        good("webp", 128, 128),
        "EXIF orientation in a WebP",
    ),
    (
        "hopper_orientation_8.webp",
        good("webp", 128, 128),
        "EXIF orientation in a WebP",
    ),
    ("transparent.png", good("png", 200, 150), "RGBA PNG"),
    (
        "pil123rgba.png",
        good("png", 162, 150),
        "interlaced RGBA PNG",
    ),
    (
        "p_trns_single.png",
        good("png", 64, 64),
        "palette PNG with one transparent entry",
    ),
    (
        "pil123p.png",
        good("png", 162, 150),
        "interlaced palette PNG",
    ),
    (
        "i_trns.png",
        good("png", 64, 64),
        "16-bit grey PNG with tRNS",
    ),
    (
        "apng_mode_16bit.png",
        good("png", 128, 64),
        "16-bit RGBA APNG; its default image (solid red) is not part of the animation",
    ),
    (
        "iss634.apng",
        good("png", 245, 245),
        "animated PNG, many frames",
    ),
    (
        "iss634.gif",
        good("gif", 245, 245),
        "animated GIF, 42 frames",
    ),
    (
        "transparent.webp",
        good("webp", 200, 150),
        "lossless WebP with alpha",
    ),
    ("iss634.webp", good("webp", 245, 245), "animated WebP"),
    (
        "sugarshack.mpo",
        good("jpeg", 640, 480),
        "MPO (stereo pair): a JPEG with a second one after it",
    ),
    ("frozenpond.mpo", good("jpeg", 640, 480), "MPO"),
    ("hopper.tif", good("tiff", 128, 128), "TIFF"),
    (
        "tiff_16bit_RGB.tiff",
        good("tiff", 100, 40),
        "16-bit RGB TIFF, deflate",
    ),
    ("hopper.bmp", good("bmp", 128, 128), "BMP"),
    ("hopper_16bit.pgm", good("pnm", 128, 128), "16-bit PGM"),
    (
        "hopper_16bit_qtables.jpg",
        good("jpeg", 128, 128),
        "JPEG with 16-bit quantisation tables",
    ),
    (
        "hopper_bad_exif.jpg",
        good("jpeg", 500, 500),
        "JPEG with a damaged EXIF block",
    ),
    (
        "invalid-exif.jpg",
        good("jpeg", 200, 200),
        "JPEG whose EXIF is not TIFF data",
    ),
    (
        "truncated_app14.jpg",
        good("jpeg", 100, 100),
        "JPEG with a short Adobe APP14 segment",
    ),
    (
        "hopper_zero_comment_subblocks.gif",
        good("gif", 128, 128),
        "GIF with empty comment blocks",
    ),
    (
        "hopper.avif",
        good("avif", 128, 128),
        "AVIF, 8-bit 4:2:0, limited range",
    ),
    (
        "hopper-missing-pixi.avif",
        good("avif", 128, 128),
        "AVIF without the pixi box the specification asks for",
    ),
    (
        "exif.avif",
        good("avif", 512, 512),
        "AVIF with an EXIF item",
    ),
    (
        "icc_profile.avif",
        good("avif", 57, 57),
        "AVIF with an ICC profile instead of nclx colour",
    ),
    (
        "icc_profile_none.avif",
        good("avif", 57, 57),
        "AVIF, the same picture without a profile",
    ),
    (
        "transparency.avif",
        good("avif", 64, 64),
        "AVIF with an alpha auxiliary image",
    ),
    (
        "star.avifs",
        good("avif", 159, 159),
        "AVIF sequence (5 frames) with alpha: its still image",
    ),
    (
        "xmp_tags_orientation.avif",
        good("avif", 326, 268),
        "AVIF whose XMP says orientation 3: not applied, only irot/imir count",
    ),
    (
        "rot0mir0.avif",
        good("avif", 640, 427),
        "AVIF mirrored (imir 0: top and bottom exchanged)",
    ),
    (
        "rot0mir1.avif",
        good("avif", 640, 427),
        "AVIF mirrored (imir 1: left and right exchanged)",
    ),
    (
        "rot1mir0.avif",
        good("avif", 640, 427),
        "AVIF stored 427x640: irot 90 degrees, then imir 0",
    ),
    (
        "rot1mir1.avif",
        good("avif", 640, 427),
        "AVIF stored 427x640: irot 90 degrees, then imir 1",
    ),
    (
        "rot2mir0.avif",
        good("avif", 640, 427),
        "AVIF: irot 180 degrees, then imir 0",
    ),
    (
        "rot2mir1.avif",
        good("avif", 640, 427),
        "AVIF: irot 180 degrees, then imir 1",
    ),
    (
        "rot3mir0.avif",
        good("avif", 640, 427),
        "AVIF stored 427x640: irot 270 degrees, then imir 0",
    ),
    (
        "rot3mir1.avif",
        good("avif", 640, 427),
        "AVIF stored 427x640: irot 270 degrees, then imir 1",
    ),
    ("truncated_jpeg.jpg", Bad(TRUNCATED), "JPEG cut short"),
    (
        "truncated_image.png",
        Bad(TRUNCATED),
        "PNG cut in its image data",
    ),
    (
        "truncated_end_chunk.png",
        Bad(TRUNCATED),
        "PNG without its IEND chunk",
    ),
    (
        "broken.png",
        Bad(CORRUPT),
        "PNG signature followed by garbage",
    ),
    (
        "broken_data_stream.png",
        Bad(CORRUPT),
        "PNG with a damaged zlib stream",
    ),
    (
        "decompression_bomb.gif",
        Bad(TOO_LARGE),
        "44 bytes: a 32x32 screen with a 65535x65535 frame",
    ),
    (
        "decompression_bomb_extents.gif",
        Bad(TOO_LARGE),
        "a later GIF frame placed at 65535,65535",
    ),
    (
        "decompression_bomb.ico",
        Bad(TOO_LARGE),
        "ICO entry declaring a huge image",
    ),
    (
        "negative_size.ppm",
        Bad(CORRUPT),
        "PPM header with a negative size",
    ),
    (
        "zero_width.gif",
        Bad(TOO_LARGE),
        "zero-width screen, and a frame reaching 66601 px down",
    ),
    (
        "oom-225817ca0f8c663be7ab4b9e717b02c661e66834.tif",
        Bad(TRUNCATED),
        "fuzzed TIFF whose strips lie past its end",
    ),
    ("hopper.heif", Bad(UNSUPPORTED), "HEIF (HEVC)"),
    // --- Debian libjxl-testdata ---
    (
        "flower.png.im_q85_420.jpg",
        good("jpeg", 2268, 1512),
        "4:2:0 JPEG",
    ),
    (
        "flower.png.im_q85_420_R13B.jpg",
        good("jpeg", 2268, 1512),
        "4:2:0 JPEG with restart markers",
    ),
    (
        "flower.png.im_q85_420_progr.jpg",
        good("jpeg", 2268, 1512),
        "progressive JPEG",
    ),
    (
        "flower.png.im_q85_422.jpg",
        good("jpeg", 2268, 1512),
        "4:2:2 JPEG",
    ),
    (
        "flower.png.im_q85_440.jpg",
        good("jpeg", 2268, 1512),
        "4:4:0 JPEG",
    ),
    (
        "flower.png.im_q85_444.jpg",
        good("jpeg", 2268, 1512),
        "4:4:4 JPEG",
    ),
    (
        "flower.png.im_q85_444_1x2.jpg",
        good("jpeg", 2268, 1512),
        "4:4:4 JPEG with 1x2 sampling factors",
    ),
    (
        "flower.png.im_q85_asymmetric.jpg",
        good("jpeg", 2268, 1512),
        "asymmetric chroma subsampling",
    ),
    (
        "flower.png.im_q85_gray.jpg",
        good("jpeg", 2268, 1512),
        "greyscale JPEG",
    ),
    (
        "flower.png.im_q85_luma_subsample.jpg",
        good("jpeg", 2268, 1512),
        "subsampled luma",
    ),
    (
        "flower.png.im_q85_rgb.jpg",
        good("jpeg", 2268, 1512),
        "RGB (not YCbCr) JPEG",
    ),
    (
        "flower.png.im_q85_rgb_subsample_blue.jpg",
        good("jpeg", 2268, 1512),
        "RGB JPEG with subsampled blue",
    ),
    (
        "flower_small.q85_420_non_interleaved.jpg",
        good("jpeg", 510, 532),
        "one scan per component",
    ),
    (
        "flower_small.q85_444_partially_interleaved.jpg",
        good("jpeg", 510, 532),
        "partially interleaved scans",
    ),
    (
        "flower_alpha.png",
        good("png", 2268, 1512),
        "large RGBA PNG",
    ),
    (
        "flower_small.g.depth16.pgm",
        good("pnm", 510, 532),
        "16-bit PGM",
    ),
    ("hdr_room.png", good("png", 676, 449), "16-bit RGB PNG"),
    ("traffic_light.gif", good("gif", 60, 105), "animated GIF"),
    (
        "P3-sRGB-color-bars.png",
        good("png", 1000, 800),
        "Display P3 ICC profile",
    ),
    (
        "P3-sRGB-color-ring.png",
        good("png", 1000, 1000),
        "Display P3 ICC profile, alpha",
    ),
    (
        "R2020-sRGB-color-bars.png",
        good("png", 1000, 800),
        "Rec.2020 ICC profile",
    ),
    (
        "R2020-sRGB-color-ring.png",
        good("png", 1000, 1000),
        "Rec.2020 ICC profile, alpha",
    ),
    ("ccwn2c08.png", good("png", 32, 32), "PngSuite: cHRM chunk"),
    (
        "ccwn3p08.png",
        good("png", 32, 32),
        "PngSuite: cHRM, palette",
    ),
    ("ct1n0g04.png", good("png", 32, 32), "PngSuite: tEXt chunk"),
    (
        "ctjn0g04.png",
        good("png", 32, 32),
        "PngSuite: iTXt, Japanese",
    ),
    ("ctzn0g04.png", good("png", 32, 32), "PngSuite: zTXt"),
    ("exif2c08.png", good("png", 32, 32), "PngSuite: eXIf chunk"),
    ("g04n2c08.png", good("png", 32, 32), "PngSuite: gamma 0.4"),
    (
        "g10n3p04.png",
        good("png", 32, 32),
        "PngSuite: gamma 1.0, 4-bit palette",
    ),
    (
        "Nikon-D300-12bit_2020_g1_dt.png",
        good("png", 64, 64),
        "16-bit PNG, Rec.2020 linear",
    ),
    ("pq_gradient.jxl", Bad(UNSUPPORTED), "JPEG XL"),
];

/// Corpus files whose first half is a generated case: a download cut short, in every format.
const CUT_IN_HALF: &[&str] = &[
    "flower.png.im_q85_420.jpg",
    "flower.png.im_q85_420_progr.jpg",
    "transparent.png",
    "hdr_room.png",
    "hopper.webp",
    "transparent.webp",
    "hopper.tif",
    "hopper.bmp",
    "hopper_16bit.pgm",
    "rot1mir1.avif",
    "transparency.avif",
];

/// Files the tests make: the classic ways a "photo" URL goes wrong.
pub fn generated(corpus: &Path) -> Vec<(String, Vec<u8>, Expect)> {
    let mut out: Vec<(String, Vec<u8>, Expect)> = vec![
        ("empty.jpg".into(), Vec::new(), Bad(EMPTY)),
        (
            "error-page.jpg".into(),
            b"<!DOCTYPE html>\n<html><head><title>404 Not Found</title></head>\
              <body><h1>Not Found</h1></body></html>\n"
                .to_vec(),
            Bad(UNSUPPORTED),
        ),
        (
            "readme.jpg".into(),
            b"This is a text file that happens to be called readme.jpg.\n".to_vec(),
            Bad(UNSUPPORTED),
        ),
        (
            "bomb-20000x20000.png".into(),
            png_header(20_000, 20_000),
            Bad(TOO_LARGE),
        ),
        ("zero-width.png".into(), png_header(0, 100), Bad(CORRUPT)),
    ];
    // A GIF cut after its first frame still holds that frame whole, and only the first frame is
    // used: the same image as the complete file. Cut inside the first frame, it is truncated.
    let gif = read(&corpus.join("good/iss634.gif"));
    out.push((
        "half-iss634.gif".into(),
        gif[..gif.len() / 2].to_vec(),
        good("gif", 245, 245),
    ));
    out.push((
        "cut-in-first-frame.gif".into(),
        gif[..30_000].to_vec(),
        Bad(TRUNCATED),
    ));
    for name in CUT_IN_HALF {
        let bytes = read(&corpus.join("good").join(name));
        out.push((
            format!("half-{name}"),
            bytes[..bytes.len() / 2].to_vec(),
            Bad(TRUNCATED),
        ));
    }
    out
}

/// The corpus folder: `$LOOKALIKE_CORPUS`, or `.lookalike/corpus` at the repository root.
pub fn dir() -> PathBuf {
    let dir = std::env::var_os("LOOKALIKE_CORPUS")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".lookalike/corpus"));
    assert!(
        dir.join(".complete").exists(),
        "bad-image corpus not found at {}: run scripts/fetch-corpus.sh (or set LOOKALIKE_CORPUS)",
        dir.display()
    );
    dir
}

/// Every case: the downloaded files (checked against `FILES`, both ways) and the generated ones.
/// Names are unique, so they can serve as URLs paths and labels.
pub fn all() -> Vec<(String, Vec<u8>, Expect)> {
    let dir = dir();
    let mut on_disk = Vec::new();
    for kind in ["good", "bad"] {
        for entry in std::fs::read_dir(dir.join(kind)).expect("corpus folder readable") {
            let name = entry
                .expect("entry")
                .file_name()
                .into_string()
                .expect("UTF-8");
            on_disk.push((kind, name));
        }
    }
    let mut out = Vec::new();
    for &(name, expect, _) in FILES {
        let kind = if matches!(expect, Good { .. }) {
            "good"
        } else {
            "bad"
        };
        assert!(
            on_disk.contains(&(kind, name.to_string())),
            "{kind}/{name} is not in the corpus: scripts/fetch-corpus.sh and this table disagree"
        );
        out.push((name.to_string(), read(&dir.join(kind).join(name)), expect));
    }
    for (kind, name) in &on_disk {
        assert!(
            FILES.iter().any(|(n, _, _)| n == name),
            "{kind}/{name} has no expectation in the corpus table"
        );
    }
    out.extend(generated(&dir));
    out
}

fn repo_root() -> PathBuf {
    let mut dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    while !dir.join("scripts/fetch-corpus.sh").exists() {
        assert!(
            dir.pop(),
            "repository root not found above CARGO_MANIFEST_DIR"
        );
    }
    dir
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A valid PNG signature, IHDR (8-bit RGB, `w` x `h`) and a tiny IDAT and IEND: a few dozen bytes
/// that claim `w * h * 3` bytes of pixels.
pub fn png_header(w: u32, h: u32) -> Vec<u8> {
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&w.to_be_bytes());
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    chunk(&mut png, b"IHDR", &ihdr);
    chunk(
        &mut png,
        b"IDAT",
        &[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01],
    );
    chunk(&mut png, b"IEND", &[]);
    png
}

fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    let start = out.len();
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    let crc = crc32(&out[start..]);
    out.extend_from_slice(&crc.to_be_bytes());
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}
