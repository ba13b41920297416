//! `clean` turns hostile bytes into an upright 8-bit RGB image or a stable error code.
//! Inputs are generated here, so the tests need no fixture files (except the CMYK
//! JPEG from the reference fixtures, tests/fixtures/reference).

mod common;
#[path = "common/corpus.rs"]
mod corpus;

use std::io::Cursor;

use image::codecs::gif::GifEncoder;
use image::codecs::jpeg::JpegEncoder;
use image::{DynamicImage, Frame, ImageBuffer, ImageFormat, Luma, Rgb, RgbImage, Rgba, RgbaImage};
use lookalike_vision::{DecodeLimits, clean};

fn limits() -> DecodeLimits {
    DecodeLimits::default()
}

fn code(bytes: &[u8]) -> &'static str {
    match clean(bytes, &limits()) {
        Ok(img) => panic!(
            "expected an error, got a {}x{} {}",
            img.width, img.height, img.format
        ),
        Err(e) => {
            println!("{}: {e}", e.code());
            e.code()
        }
    }
}

fn encode(img: &DynamicImage, format: ImageFormat) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, format).expect("encodes");
    out.into_inner()
}

/// Deterministic, busy pixels, so compressed data is spread over the whole file.
fn noise(w: u32, h: u32) -> RgbImage {
    let mut s = 0x2545_f491_u32;
    RgbImage::from_fn(w, h, |_, _| {
        s ^= s << 13;
        s ^= s >> 17;
        s ^= s << 5;
        Rgb([s as u8, (s >> 8) as u8, (s >> 16) as u8])
    })
}

fn jpeg(img: &RgbImage) -> Vec<u8> {
    let mut out = Vec::new();
    JpegEncoder::new_with_quality(&mut out, 90)
        .encode_image(img)
        .expect("encodes");
    out
}

#[test]
fn empty_input_is_rejected_as_empty() {
    assert_eq!(code(b""), "image_empty");
}

#[test]
fn html_served_as_an_image_is_rejected_as_unsupported_format() {
    assert_eq!(
        code(b"<!DOCTYPE html><html><body>404 Not Found</body></html>"),
        "image_unsupported_format"
    );
    assert_eq!(
        code(b"{\"error\":\"forbidden\"}"),
        "image_unsupported_format"
    );
}

#[test]
fn heif_jpeg_xl_and_exotic_formats_are_rejected_as_unsupported_format() {
    // HEIF (HEVC), as phones write it: no decoder built in, and the message says which format it was.
    let heif = b"\0\0\0\x18ftypheic\0\0\0\0mif1heic";
    let err = clean(heif, &limits()).expect_err("HEIF refused");
    assert_eq!(err.code(), "image_unsupported_format");
    assert!(err.to_string().contains("HEIF"), "{err}");
    // JPEG XL, as a bare codestream and in its container.
    for jxl in [
        b"\xFF\x0A\xFA\x7F\x01\x90\x08".as_slice(),
        b"\0\0\0\x0cJXL \r\n\x87\n\0\0\0\x14ftypjxl ",
    ] {
        let err = clean(jxl, &limits()).expect_err("JPEG XL refused");
        assert_eq!(err.code(), "image_unsupported_format");
        assert!(err.to_string().contains("JPEG XL"), "{err}");
    }
    let qoi = encode(&DynamicImage::ImageRgb8(noise(4, 4)), ImageFormat::Qoi);
    assert_eq!(code(&qoi), "image_unsupported_format");
}

#[test]
fn avif_brands_are_recognised_and_an_avif_without_its_image_is_corrupt() {
    // Only the file-type box: AVIF by its major brand, by a compatible brand (a generic HEIF
    // container holding AV1), and a sequence; each recognised, none holding a picture.
    for ftyp in [
        b"\0\0\0\x1cftypavif\0\0\0\0avifmif1miaf".as_slice(),
        b"\0\0\0\x1cftypmif1\0\0\0\0mif1avifmiaf".as_slice(),
        b"\0\0\0\x1cftypavis\0\0\0\0avismsf1miaf".as_slice(),
    ] {
        assert_eq!(code(ftyp), "image_corrupt");
    }
    // Uploads are queued only when they look like an image: AVIF by any of its brands.
    for ftyp in [
        b"\0\0\0\x1cftypmif1\0\0\0\0mif1avifmiaf".as_slice(),
        b"\0\0\0\x1cftypavis\0\0\0\0avismsf1miaf".as_slice(),
    ] {
        assert!(lookalike_vision::looks_like_image(ftyp));
    }
    assert!(!lookalike_vision::looks_like_image(
        b"<html>not found</html>"
    ));
    // A box declaring more bytes than arrived: a download cut short.
    let mut cut = b"\0\0\0\x1cftypavif\0\0\0\0avifmif1miaf".to_vec();
    cut.extend_from_slice(b"\0\0\x10\0meta\0\0\0\0");
    assert_eq!(code(&cut), "image_truncated");
}

#[test]
fn truncated_jpeg_is_rejected_as_truncated() {
    let full = jpeg(&noise(64, 48));
    assert!(clean(&full, &limits()).is_ok());
    assert_eq!(code(&full[..full.len() / 2]), "image_truncated");
    // Even losing only the end-of-image marker counts: the decoder would fill the gap with grey.
    assert_eq!(code(&full[..full.len() - 2]), "image_truncated");
}

#[test]
fn truncated_png_is_rejected_as_truncated_or_corrupt() {
    let full = encode(&DynamicImage::ImageRgb8(noise(64, 48)), ImageFormat::Png);
    let c = code(&full[..full.len() / 2]);
    assert!(c == "image_truncated" || c == "image_corrupt", "{c}");
}

#[test]
fn formats_cut_short_are_rejected_as_truncated_not_corrupt() {
    let rgb = DynamicImage::ImageRgb8(noise(64, 48));
    for format in [
        ImageFormat::Tiff,
        ImageFormat::Bmp,
        ImageFormat::Pnm,
        ImageFormat::WebP,
        ImageFormat::Png,
    ] {
        let full = encode(&rgb, format);
        assert!(clean(&full, &limits()).is_ok(), "{format:?}");
        assert_eq!(
            code(&full[..full.len() / 2]),
            "image_truncated",
            "{format:?}"
        );
    }
}

#[test]
fn png_declaring_20000_by_20000_is_rejected_as_too_large_before_decoding() {
    let png = corpus::png_header(20_000, 20_000);
    let started = std::time::Instant::now();
    let err = clean(&png, &limits()).expect_err("bomb rejected");
    assert_eq!(err.code(), "image_too_large");
    assert!(
        err.to_string().contains("20000x20000"),
        "numbers in the message: {err}"
    );
    // 1.2 GB of pixels would take far longer than this to allocate and fill.
    assert!(started.elapsed() < std::time::Duration::from_secs(1));
}

#[test]
fn gif_declaring_gigapixels_in_a_few_bytes_is_rejected_as_too_large() {
    let mut gif = b"GIF89a".to_vec();
    gif.extend_from_slice(&[0xFF, 0xFF, 0xFF, 0xFF, 0x00, 0x00, 0x00]); // 65535x65535, no colour table
    gif.extend_from_slice(&[
        0x2C, 0, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0x00, 0x02, 0x02, 0x4C, 0x01, 0x00, 0x3B,
    ]);
    assert_eq!(code(&gif), "image_too_large");

    // A small screen does not hide a huge frame: frames carry their own size.
    let mut gif = b"GIF89a".to_vec();
    gif.extend_from_slice(&[0x20, 0x00, 0x20, 0x00, 0x00, 0x00, 0x00]); // 32x32, no colour table
    gif.extend_from_slice(&[
        0x2C, 0, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0x00, 0x02, 0x02, 0x4C, 0x01, 0x00, 0x3B,
    ]);
    assert_eq!(code(&gif), "image_too_large");
}

#[test]
fn stricter_limits_are_honoured() {
    let png = encode(&DynamicImage::ImageRgb8(noise(300, 200)), ImageFormat::Png);
    let tight = DecodeLimits {
        max_pixels: 300 * 200 - 1,
        ..limits()
    };
    assert_eq!(
        clean(&png, &tight)
            .map(|_| ())
            .expect_err("over the pixel cap")
            .code(),
        "image_too_large"
    );
    let narrow = DecodeLimits {
        max_width: 299,
        ..limits()
    };
    assert_eq!(
        clean(&png, &narrow)
            .map(|_| ())
            .expect_err("too wide")
            .code(),
        "image_too_large"
    );
    let jpeg_bytes = jpeg(&noise(300, 200));
    assert_eq!(
        clean(&jpeg_bytes, &narrow)
            .map(|_| ())
            .expect_err("too wide")
            .code(),
        "image_too_large"
    );
}

#[test]
fn fully_transparent_pixels_become_white() {
    let mut rgba = RgbaImage::from_pixel(8, 8, Rgba([0, 0, 0, 0]));
    rgba.put_pixel(0, 0, Rgba([10, 20, 30, 255]));
    for format in [ImageFormat::Png, ImageFormat::WebP] {
        let img = clean(
            &encode(&DynamicImage::ImageRgba8(rgba.clone()), format),
            &limits(),
        )
        .expect("decodes");
        assert_eq!(img.rgb.get_pixel(5, 5).0, [255, 255, 255], "{format:?}");
        assert_eq!(img.rgb.get_pixel(0, 0).0, [10, 20, 30], "{format:?}");
    }
}

#[test]
fn grey_16_bit_png_becomes_8_bit_rgb() {
    let grey: ImageBuffer<Luma<u16>, Vec<u16>> =
        ImageBuffer::from_fn(4, 2, |x, _| Luma([if x < 2 { 65_535 } else { 32_896 }]));
    let img = clean(
        &encode(&DynamicImage::ImageLuma16(grey), ImageFormat::Png),
        &limits(),
    )
    .expect("decodes");
    assert_eq!(img.format, "png");
    assert_eq!(img.rgb.get_pixel(0, 0).0, [255, 255, 255]);
    assert_eq!(img.rgb.get_pixel(3, 1).0, [128, 128, 128]);
}

fn two_frame_gif() -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut enc = GifEncoder::new(&mut out);
        let red = Frame::new(RgbaImage::from_pixel(6, 4, Rgba([255, 0, 0, 255])));
        let blue = Frame::new(RgbaImage::from_pixel(6, 4, Rgba([0, 0, 255, 255])));
        enc.encode_frames([red, blue]).expect("encodes");
    }
    out
}

#[test]
fn animated_gif_yields_its_first_frame() {
    let img = clean(&two_frame_gif(), &limits()).expect("decodes");
    assert_eq!((img.format, img.width, img.height), ("gif", 6, 4));
    let [r, g, b] = img.rgb.get_pixel(3, 2).0;
    assert!(
        r > 240 && g < 15 && b < 15,
        "first frame is red, got {:?}",
        [r, g, b]
    );
}

#[test]
fn animation_with_more_frames_than_allowed_is_rejected_as_too_large() {
    let one = DecodeLimits {
        max_frames: 1,
        ..limits()
    };
    let err = clean(&two_frame_gif(), &one)
        .map(|_| ())
        .expect_err("two frames > 1");
    assert_eq!(err.code(), "image_too_large");
}

/// A JPEG whose APP1 segment carries EXIF orientation 6 ("rotate 90 degrees clockwise").
fn jpeg_with_orientation_6(img: &RgbImage) -> Vec<u8> {
    let plain = jpeg(img);
    let mut tiff = b"MM\0\x2a\0\0\0\x08".to_vec(); // big-endian TIFF header, IFD at offset 8
    tiff.extend_from_slice(&[0, 1]); // one entry
    tiff.extend_from_slice(&[0x01, 0x12, 0, 3, 0, 0, 0, 1, 0, 6, 0, 0]); // Orientation, SHORT, 1, value 6
    tiff.extend_from_slice(&[0, 0, 0, 0]); // no next IFD
    let mut app1 = b"Exif\0\0".to_vec();
    app1.extend_from_slice(&tiff);
    let mut out = plain[..2].to_vec(); // SOI
    out.extend_from_slice(&[0xFF, 0xE1]);
    out.extend_from_slice(&((app1.len() + 2) as u16).to_be_bytes());
    out.extend_from_slice(&app1);
    out.extend_from_slice(&plain[2..]);
    out
}

#[test]
fn exif_orientation_6_rotates_the_image_upright() {
    // 40x20, left half red, right half blue; turned 90 degrees clockwise the red half is on top.
    let img = RgbImage::from_fn(40, 20, |x, _| {
        if x < 20 {
            Rgb([255, 0, 0])
        } else {
            Rgb([0, 0, 255])
        }
    });
    let out = clean(&jpeg_with_orientation_6(&img), &limits()).expect("decodes");
    assert_eq!((out.width, out.height), (20, 40));
    assert_eq!(out.rgb.dimensions(), (20, 40));
    let top = out.rgb.get_pixel(10, 5).0;
    let bottom = out.rgb.get_pixel(10, 35).0;
    assert!(top[0] > 200 && top[2] < 60, "top should be red: {top:?}");
    assert!(
        bottom[2] > 200 && bottom[0] < 60,
        "bottom should be blue: {bottom:?}"
    );
}

#[test]
fn cmyk_jpeg_decodes_to_rgb() {
    let bytes =
        std::fs::read(common::reference_dir().join("jpeg_cmyk.jpg")).expect("reference image");
    let img = clean(&bytes, &limits()).expect("decodes");
    assert_eq!((img.format, img.width, img.height), ("jpeg", 100, 100));
    assert_eq!(img.rgb.as_raw().len(), 100 * 100 * 3);
}

#[test]
fn grey_jpeg_and_every_accepted_format_decode_with_their_name() {
    let grey = DynamicImage::ImageLuma8(ImageBuffer::from_pixel(9, 7, Luma([77])));
    let img = clean(&encode(&grey, ImageFormat::Jpeg), &limits()).expect("grey jpeg");
    assert_eq!(img.rgb.get_pixel(4, 3).0, [77, 77, 77]);
    let rgb = DynamicImage::ImageRgb8(noise(9, 7));
    for (format, name) in [
        (ImageFormat::Png, "png"),
        (ImageFormat::Bmp, "bmp"),
        (ImageFormat::Tiff, "tiff"),
        (ImageFormat::Pnm, "pnm"),
        (ImageFormat::WebP, "webp"),
        (ImageFormat::Gif, "gif"),
    ] {
        let img = clean(&encode(&rgb, format), &limits()).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!((img.format, img.width, img.height), (name, 9, 7));
    }
    // The ICO decoder only accepts PNG entries in RGBA, which is what icon tools write.
    let icon = DynamicImage::ImageRgba8(RgbaImage::from_pixel(16, 16, Rgba([0, 128, 0, 255])));
    let img = clean(&encode(&icon, ImageFormat::Ico), &limits()).expect("ico");
    assert_eq!(
        (img.format, img.rgb.get_pixel(8, 8).0),
        ("ico", [0, 128, 0])
    );
}

#[test]
fn damaged_bytes_never_panic_and_always_map_to_a_known_code() {
    let rgba = DynamicImage::ImageRgba8(RgbaImage::from_fn(24, 16, |x, y| {
        Rgba([x as u8 * 9, y as u8 * 13, 7, 200])
    }));
    let samples = [
        jpeg(&noise(24, 16)),
        encode(&rgba, ImageFormat::Png),
        encode(&rgba, ImageFormat::WebP),
        encode(&rgba, ImageFormat::Tiff),
        encode(&rgba, ImageFormat::Bmp),
        two_frame_gif(),
    ];
    let known = [
        "image_unsupported_format",
        "image_too_large",
        "image_truncated",
        "image_corrupt",
        "image_empty",
    ];
    let mut s = 0x9E37_79B9_u32;
    let mut rand = move || {
        s ^= s << 13;
        s ^= s >> 17;
        s ^= s << 5;
        s
    };
    for sample in &samples {
        for _ in 0..300 {
            let mut bytes = sample.clone();
            for _ in 0..1 + rand() % 4 {
                let i = rand() as usize % bytes.len();
                bytes[i] = rand() as u8;
            }
            let cut = if rand() % 4 == 0 {
                rand() as usize % bytes.len()
            } else {
                bytes.len()
            };
            if let Err(e) = clean(&bytes[..cut], &limits()) {
                assert!(known.contains(&e.code()));
            }
        }
    }
}

#[test]
fn limits_deserialise_with_defaults_for_missing_fields() {
    let l: DecodeLimits = serde_json::from_str(r#"{"max_pixels": 1000}"#).expect("valid");
    assert_eq!(
        l,
        DecodeLimits {
            max_pixels: 1000,
            ..DecodeLimits::default()
        }
    );
}
