//! Turning untrusted bytes into a clean 8-bit RGB image.
//!
//! Uploads and fetched URLs are hostile by default: wrong or missing content types,
//! HTML error pages, half-transferred files, decompression bombs, CMYK, 16-bit,
//! alpha, animations, EXIF rotation. Everything is normalised here once, so the
//! rest of the system only ever sees an upright `RgbImage`. Every failure is
//! permanent (the same bytes fail the same way), so there is no retry notion here.

use std::io::Cursor;
use std::panic::{AssertUnwindSafe, catch_unwind};

use image::error::{ImageError, LimitErrorKind};
use image::metadata::Orientation;
use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, RgbImage};
use lookalike_core::codes::image as codes;
use serde::Deserialize;

use crate::{avif, jpeg, sniff};

/// Caps checked against what a file declares, before its pixels are decoded.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct DecodeLimits {
    /// Widest accepted image. 12 000 px covers any camera or product shot;
    /// beyond that it is a poster scan or an attack.
    pub max_width: u32,
    /// Tallest accepted image (same reasoning as `max_width`).
    pub max_height: u32,
    /// Most pixels accepted (width x height). 50 MP is imgproxy's default.
    pub max_pixels: u64,
    /// Most animation frames accepted. Only the first is decoded, so this guards
    /// against abusive files rather than memory.
    pub max_frames: u32,
    /// Largest buffer the decoder may allocate for the first frame. 256 MiB fits
    /// 50 MP of 8-bit RGBA (200 MB) but not 50 MP of 16-bit RGBA.
    pub max_alloc_bytes: u64,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        Self {
            max_width: 12_000,
            max_height: 12_000,
            max_pixels: 50_000_000,
            max_frames: 1_000,
            max_alloc_bytes: 256 * 1024 * 1024,
        }
    }
}

/// A decoded, upright, 8-bit RGB image.
#[derive(Debug, Clone)]
pub struct CleanImage {
    /// The pixels: the whole image, or (decoded in draft, see [`clean_for`]) the whole image
    /// at 1/2, 1/4 or 1/8 of its size.
    pub rgb: RgbImage,
    /// Format found from the magic bytes: "jpeg", "png", "gif", "webp", "bmp", "tiff", "ico", "pnm",
    /// "avif".
    pub format: &'static str,
    /// Width after EXIF orientation was applied.
    pub width: u32,
    /// Height after EXIF orientation was applied.
    pub height: u32,
}

/// Why bytes could not become an image. Codes are stable API (stored with failed jobs
/// and returned to clients); messages are for humans and may change.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("image is empty (0 bytes)")]
    Empty,
    #[error("not a supported image: {0}")]
    UnsupportedFormat(String),
    #[error("image too large: {0}")]
    TooLarge(String),
    #[error("image data is truncated: {0}")]
    Truncated(String),
    #[error("image data is corrupt: {0}")]
    Corrupt(String),
}

impl DecodeError {
    /// Stable snake_case code for this failure.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Empty => codes::EMPTY,
            Self::UnsupportedFormat(_) => codes::UNSUPPORTED_FORMAT,
            Self::TooLarge(_) => codes::TOO_LARGE,
            Self::Truncated(_) => codes::TRUNCATED,
            Self::Corrupt(_) => codes::CORRUPT,
        }
    }
}

/// Decodes `bytes` into a clean RGB image, or says precisely why not.
///
/// The format comes from the magic bytes only: content types and file names lie.
pub fn clean(bytes: &[u8], limits: &DecodeLimits) -> Result<CleanImage, DecodeError> {
    clean_for(bytes, limits, None)
}

/// Like [`clean`]; with `draft = Some(size)`, a JPEG is decoded at the smallest scale that
/// leaves both sides at least `size` (Pillow's `draft`, see [`crate::jpeg::draft_scale`]):
/// what a model that resizes the shorter side to `size` needs, at a fraction of the cost.
/// `width` and `height` still give the image's own size.
pub fn clean_for(
    bytes: &[u8],
    limits: &DecodeLimits,
    draft: Option<u32>,
) -> Result<CleanImage, DecodeError> {
    if bytes.is_empty() {
        return Err(DecodeError::Empty);
    }
    let format = accepted_format(bytes)?;
    if format == ImageFormat::Jpeg && !sniff::jpeg_reaches_eoi(bytes) {
        return Err(DecodeError::Truncated(format!(
            "JPEG stream of {} bytes ends before its end-of-image marker",
            bytes.len()
        )));
    }
    if format == ImageFormat::Avif {
        let declared = sniff::isobmff_declared_len(bytes);
        if declared > bytes.len() as u64 {
            return Err(DecodeError::Truncated(format!(
                "AVIF file of {} bytes declares {declared}",
                bytes.len()
            )));
        }
    }
    if format == ImageFormat::WebP
        && let Some(declared) = sniff::riff_declared_len(bytes)
        && declared > bytes.len() as u64
    {
        return Err(DecodeError::Truncated(format!(
            "WebP file of {} bytes declares {declared}",
            bytes.len()
        )));
    }
    let frames = sniff::frames(format, bytes, limits.max_frames);
    if frames.count > limits.max_frames {
        return Err(DecodeError::TooLarge(format!(
            "animation has more than {} frames",
            limits.max_frames
        )));
    }
    let (w, h) = frames.extent;
    if w > limits.max_width
        || h > limits.max_height
        || u64::from(w) * u64::from(h) > limits.max_pixels
    {
        return Err(DecodeError::TooLarge(format!(
            "a frame reaches {w}x{h}, beyond the limit of {}x{} and {} pixels",
            limits.max_width, limits.max_height, limits.max_pixels
        )));
    }
    // Decoders are third-party code fed hostile input; a panic in one must become a
    // rejected image, not a dead worker thread.
    let (rgb, (width, height)) = catch_unwind(AssertUnwindSafe(|| {
        decode_rgb(bytes, format, limits, draft)
    }))
    .map_err(|_| DecodeError::Corrupt(format!("the {} decoder panicked", name(format))))??;
    Ok(CleanImage {
        width,
        height,
        rgb,
        format: name(format),
    })
}

/// Do these bytes start like an image file: a format the `image` crate recognises by its magic
/// bytes, or AVIF by its brands (which it recognises only in part)? What an upload must pass to be
/// queued at all; whether it decodes is [`clean`]'s answer.
pub fn looks_like_image(bytes: &[u8]) -> bool {
    sniff::is_avif(bytes) || image::guess_format(bytes).is_ok()
}

/// Formats we decode. Everything else the `image` crate could read (EXR, HDR, DDS,
/// QOI, ...) is refused: no product photo arrives that way, and each extra decoder
/// is extra attack surface. AVIF is recognised by its brands here (the `image` crate knows only
/// one of its spellings) and decoded by [`crate::avif`].
fn accepted_format(bytes: &[u8]) -> Result<ImageFormat, DecodeError> {
    if sniff::is_avif(bytes) {
        return Ok(ImageFormat::Avif);
    }
    let Ok(format) = image::guess_format(bytes) else {
        let what = if let Some(name) = sniff::other_image_format(bytes) {
            format!("{name} images are not accepted (no decoder built in)")
        } else if sniff::looks_like_text(bytes) {
            "the data is text (an HTML page or error message?), not an image".into()
        } else {
            "unrecognised file signature".into()
        };
        return Err(DecodeError::UnsupportedFormat(what));
    };
    use ImageFormat as F;
    match format {
        F::Jpeg | F::Png | F::Gif | F::WebP | F::Bmp | F::Tiff | F::Ico | F::Pnm => Ok(format),
        other => Err(DecodeError::UnsupportedFormat(format!(
            "{other:?} images are not accepted"
        ))),
    }
}

fn name(format: ImageFormat) -> &'static str {
    use ImageFormat as F;
    match format {
        F::Jpeg => "jpeg",
        F::Png => "png",
        F::Gif => "gif",
        F::WebP => "webp",
        F::Bmp => "bmp",
        F::Tiff => "tiff",
        F::Ico => "ico",
        F::Pnm => "pnm",
        F::Avif => "avif",
        _ => "other",
    }
}

/// The upright pixels, and the upright size of the whole image (larger than the pixels'
/// when a JPEG was decoded in draft).
fn decode_rgb(
    bytes: &[u8],
    format: ImageFormat,
    limits: &DecodeLimits,
    draft: Option<u32>,
) -> Result<(RgbImage, (u32, u32)), DecodeError> {
    if format == ImageFormat::Jpeg {
        let mut declared = (0, 0);
        let check = |w, h| {
            declared = (w, h);
            check_dimensions(w, h, u64::from(w) * u64::from(h) * 3, limits)
        };
        let (rgb, orientation) = jpeg::decode(bytes, check, draft)?;
        let mut img = DynamicImage::ImageRgb8(rgb);
        img.apply_orientation(orientation);
        let turned = matches!(
            orientation,
            Orientation::Rotate90
                | Orientation::Rotate270
                | Orientation::Rotate90FlipH
                | Orientation::Rotate270FlipH
        );
        let size = if turned {
            (declared.1, declared.0)
        } else {
            declared
        };
        return Ok((flatten_to_rgb8(img), size));
    }
    if format == ImageFormat::Avif {
        // Declared sizes are checked inside, before any AV1 data is decoded.
        let (mut img, orientation) = avif::decode(bytes, limits)?;
        img.apply_orientation(orientation);
        let rgb = flatten_to_rgb8(img);
        let size = rgb.dimensions();
        return Ok((rgb, size));
    }
    let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
    // Dimension caps are checked by us (with the real numbers in the message); the
    // decoder still gets the allocation cap as a second line of defence.
    let mut image_limits = image::Limits::default();
    image_limits.max_alloc = Some(limits.max_alloc_bytes);
    reader.limits(image_limits);
    let mut decoder = reader
        .into_decoder()
        .map_err(|e| map_image_error(e, limits))?;

    let (w, h) = decoder.dimensions();
    check_dimensions(w, h, decoder.total_bytes(), limits)?;
    let orientation = exif_orientation(&mut decoder);
    // Animated GIF/WebP/APNG decoders yield their first frame through this interface.
    let mut img = DynamicImage::from_decoder(decoder).map_err(|e| map_image_error(e, limits))?;
    img.apply_orientation(orientation);
    let rgb = flatten_to_rgb8(img);
    let size = rgb.dimensions();
    Ok((rgb, size))
}

/// The EXIF orientation of a non-JPEG image.
///
/// WebP and PNG should carry bare TIFF data in their EXIF chunk, but some writers copy the JPEG
/// APP1 payload with its `Exif\0\0` prefix, which the `image` crate then ignores (Pillow's
/// `hopper_orientation_*.webp` came out upside down or sideways). Pillow and browsers accept both.
fn exif_orientation(decoder: &mut impl ImageDecoder) -> Orientation {
    match decoder.orientation() {
        Ok(Orientation::NoTransforms) => {}
        Ok(found) => return found,
        // A damaged EXIF block should not cost us an otherwise good image.
        Err(e) => tracing::debug!(error = %e, "ignoring unreadable EXIF orientation"),
    }
    decoder
        .exif_metadata()
        .ok()
        .flatten()
        .and_then(|exif| Orientation::from_exif_chunk(exif.strip_prefix(b"Exif\0\0".as_slice())?))
        .unwrap_or(Orientation::NoTransforms)
}

pub(crate) fn check_dimensions(
    w: u32,
    h: u32,
    buffer_bytes: u64,
    limits: &DecodeLimits,
) -> Result<(), DecodeError> {
    if w == 0 || h == 0 {
        return Err(DecodeError::Corrupt(format!(
            "declared size {w}x{h} has no pixels"
        )));
    }
    let pixels = u64::from(w) * u64::from(h);
    if w > limits.max_width || h > limits.max_height || pixels > limits.max_pixels {
        return Err(DecodeError::TooLarge(format!(
            "{w}x{h} ({pixels} pixels) exceeds the limit of {}x{} and {} pixels",
            limits.max_width, limits.max_height, limits.max_pixels
        )));
    }
    if buffer_bytes > limits.max_alloc_bytes {
        return Err(DecodeError::TooLarge(format!(
            "decoding {w}x{h} needs {buffer_bytes} bytes, over the limit of {} bytes",
            limits.max_alloc_bytes
        )));
    }
    Ok(())
}

/// Any colour model, bit depth or alpha -> 8-bit RGB.
///
/// Transparent pixels are composited over white, as shops display them; simply
/// dropping alpha would expose whatever colour the encoder left under transparent
/// pixels (often black), and the model would see a different product.
fn flatten_to_rgb8(img: DynamicImage) -> RgbImage {
    if !img.color().has_alpha() {
        return match img {
            DynamicImage::ImageRgb8(rgb) => rgb,
            other => other.to_rgb8(),
        };
    }
    let rgba = img.into_rgba8();
    let (w, h) = rgba.dimensions();
    let mut out = vec![0u8; rgba.as_raw().len() / 4 * 3];
    for (px, o) in rgba.as_raw().chunks_exact(4).zip(out.chunks_exact_mut(3)) {
        let a = u32::from(px[3]);
        if a == 255 {
            // Most pixels of a product photo with an alpha channel are opaque.
            o.copy_from_slice(&px[..3]);
            continue;
        }
        for (o, &c) in o.iter_mut().zip(&px[..3]) {
            // Exact round(x / 255) without division, x = c*a + 255*(255-a).
            let x = u32::from(c) * a + 255 * (255 - a) + 128;
            *o = ((x + (x >> 8)) >> 8) as u8;
        }
    }
    // Length is exactly w*h*3 by construction; the fallback only keeps this panic-free.
    RgbImage::from_raw(w, h, out).unwrap_or_else(|| RgbImage::new(w, h))
}

fn map_image_error(e: ImageError, limits: &DecodeLimits) -> DecodeError {
    match e {
        ImageError::Limits(l) => {
            let what = match l.kind() {
                LimitErrorKind::DimensionError => "image dimensions",
                LimitErrorKind::InsufficientMemory => "memory needed",
                _ => "decoder limit",
            };
            DecodeError::TooLarge(format!(
                "{what} over the limit ({l}); limits: {}x{}, {} pixels, {} bytes",
                limits.max_width, limits.max_height, limits.max_pixels, limits.max_alloc_bytes
            ))
        }
        ImageError::Unsupported(u) => DecodeError::UnsupportedFormat(u.to_string()),
        other if is_truncation(&other) => DecodeError::Truncated(other.to_string()),
        other => DecodeError::Corrupt(other.to_string()),
    }
}

/// Decoders report running out of data in several ways: an `UnexpectedEof` I/O error
/// somewhere in the source chain, or only in the message text.
fn is_truncation(e: &ImageError) -> bool {
    // `ImageError::source` skips its own `IoError` (it returns the I/O error's source), so the
    // chain walk below would never see it: a TIFF cut short ("failed to fill whole buffer") was
    // reported as corrupt.
    if let ImageError::IoError(io) = e
        && io.kind() == std::io::ErrorKind::UnexpectedEof
    {
        return true;
    }
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::UnexpectedEof
        {
            return true;
        }
        source = err.source();
    }
    let msg = e.to_string().to_ascii_lowercase();
    [
        "eof",
        "end of file",
        "unexpected end",
        "truncated",
        "no more data",
        "not enough data",
        "ended early",
    ]
    .iter()
    .any(|needle| msg.contains(needle))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_transparent_red_over_white_is_pink() {
        let img = DynamicImage::ImageRgba8(image::RgbaImage::from_pixel(
            1,
            1,
            image::Rgba([255, 0, 0, 128]),
        ));
        let rgb = flatten_to_rgb8(img);
        assert_eq!(rgb.get_pixel(0, 0).0, [255, 127, 127]);
    }

    #[test]
    fn error_codes_are_stable() {
        let codes: Vec<_> = [
            DecodeError::Empty,
            DecodeError::UnsupportedFormat(String::new()),
            DecodeError::TooLarge(String::new()),
            DecodeError::Truncated(String::new()),
            DecodeError::Corrupt(String::new()),
        ]
        .iter()
        .map(DecodeError::code)
        .collect();
        assert_eq!(
            codes,
            [
                "image_empty",
                "image_unsupported_format",
                "image_too_large",
                "image_truncated",
                "image_corrupt"
            ]
        );
    }
}
