//! JPEG decoding (and the thumbnails' encoding) with libjpeg-turbo (the mozjpeg build of it), the
//! decoder Pillow uses.
//!
//! Why not the `image` crate's pure-Rust zune-jpeg: its IDCT and chroma upsampling
//! differ from libjpeg-turbo by a level or two on some pixels, and the int8 CLIP
//! model is so sensitive that this alone moves its embedding to cosine ~0.98 of the
//! Pillow-based reference (±1 random noise gives ~0.96). With libjpeg-turbo our
//! pixels, and therefore our vectors, match Python tooling exactly. libjpeg-turbo is
//! also the most exercised JPEG decoder there is (browsers, Pillow, Android), and it
//! reads arithmetic-coded files, which zune-jpeg does not.
//!
//! CMYK and YCCK files (print workflows) are read as CMYK and converted the way Pillow
//! does it, so they match too.
//!
//! Memory: the caller's dimension check runs before any pixel buffer exists, but
//! libjpeg's own working memory is not capped separately; for progressive files it
//! holds all DCT coefficients (about 2 bytes per sample, so ~300 MB at the 50 MP
//! default limit). The pixel cap is what bounds it.

use std::panic::{AssertUnwindSafe, catch_unwind};

use image::RgbImage;
use image::metadata::Orientation;
use mozjpeg::{ColorSpace, Decompress, Marker};

use crate::decode::DecodeError;

/// The DCT scale-down factor (1, 2, 4 or 8) Pillow's `Image.draft("RGB", (size, size))`
/// picks for a `w` x `h` JPEG: the largest that leaves both sides at least `size`
/// (rounded up, as libjpeg does). Decoding at 1/2 to 1/8 in the DCT domain skips most
/// of the inverse transform and colour conversion work of a large photo.
pub fn draft_scale(w: u32, h: u32, size: u32) -> u32 {
    if size == 0 {
        return 1;
    }
    let scale = (w / size).min(h / size);
    [8, 4, 2].into_iter().find(|&s| scale >= s).unwrap_or(1)
}

/// Decodes a JPEG to RGB. `check` sees the declared width and height before any
/// pixel buffer is allocated and can veto the decode. With `draft`, the image is
/// decoded at [`draft_scale`] for that size, as Pillow's `draft()` does.
pub(crate) fn decode(
    bytes: &[u8],
    check: impl FnOnce(u32, u32) -> Result<(), DecodeError>,
    draft: Option<u32>,
) -> Result<(RgbImage, Orientation), DecodeError> {
    // libjpeg's fatal errors become plain errors.
    catch_libjpeg(|| decode_inner(bytes, check, draft)).unwrap_or_else(|msg| {
        Err(if msg.contains("Unsupported") {
            DecodeError::UnsupportedFormat(format!("JPEG: {msg}"))
        } else {
            DecodeError::Corrupt(format!("JPEG: {msg}"))
        })
    })
}

/// Encodes `img` as a baseline JPEG with libjpeg-turbo's own settings (no progressive scans, no
/// trellis: mozjpeg's defaults would make a file a few percent smaller for several times the CPU).
/// A 256 px thumbnail took 0.38 ms here, against 1.11 ms with the `image` crate's encoder.
pub(crate) fn encode(img: &RgbImage, quality: u8) -> std::io::Result<Vec<u8>> {
    catch_libjpeg(|| {
        let mut c = mozjpeg::Compress::new(ColorSpace::JCS_RGB);
        c.set_fastest_defaults();
        c.set_size(img.width() as usize, img.height() as usize);
        c.set_quality(f32::from(quality));
        let mut started = c.start_compress(Vec::with_capacity(16 * 1024))?;
        started.write_scanlines(img.as_raw())?;
        started.finish()
    })
    .unwrap_or_else(|msg| Err(std::io::Error::other(msg)))
}

/// Runs libjpeg work, turning a fatal libjpeg error into its message: the mozjpeg crate turns
/// those errors into unwinds out of the C code (without invoking the panic hook).
fn catch_libjpeg<T>(work: impl FnOnce() -> T) -> Result<T, String> {
    catch_unwind(AssertUnwindSafe(work)).map_err(|payload| {
        let msg = payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_else(|| "libjpeg failed".into());
        msg.trim_start_matches("libjpeg fatal error: ").to_owned()
    })
}

fn decode_inner(
    bytes: &[u8],
    check: impl FnOnce(u32, u32) -> Result<(), DecodeError>,
    draft: Option<u32>,
) -> Result<(RgbImage, Orientation), DecodeError> {
    let io_err = |e: std::io::Error| DecodeError::Corrupt(format!("JPEG: {e}"));
    let mut dec = Decompress::with_markers(&[Marker::APP(1), Marker::APP(14)])
        .from_mem(bytes)
        .map_err(io_err)?;
    let cmyk = matches!(
        dec.color_space(),
        ColorSpace::JCS_CMYK | ColorSpace::JCS_YCCK
    );
    // Adobe applications write CMYK inverted and say so in an APP14 "Adobe" segment.
    let inverted = cmyk && dec.markers().any(|m| m.data.starts_with(b"Adobe"));
    let (w, h) = dec.size();
    check(
        u32::try_from(w).unwrap_or(u32::MAX),
        u32::try_from(h).unwrap_or(u32::MAX),
    )?;
    let orientation = dec
        .markers()
        .filter_map(|m| m.data.strip_prefix(b"Exif\0\0"))
        .find_map(Orientation::from_exif_chunk)
        .unwrap_or(Orientation::NoTransforms);
    if let Some(size) = draft {
        // Pillow asks libjpeg for 1/s; mozjpeg takes the same ratio as n/8.
        let s = draft_scale(w as u32, h as u32, size);
        dec.scale((8 / s) as u8);
    }
    // Defaults are Pillow's, also in its draft mode: accurate integer IDCT, "fancy"
    // (smooth) chroma upsampling.
    let mut started = if cmyk {
        dec.to_colorspace(ColorSpace::JCS_CMYK)
    } else {
        dec.rgb()
    }
    .map_err(io_err)?;
    // The output size: the declared one, or less when decoding in draft.
    let (w, h) = (started.width(), started.height());
    let pixels: Vec<u8> = started.read_scanlines().map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            DecodeError::Truncated(format!("JPEG: {e}"))
        } else {
            io_err(e)
        }
    })?;
    // Finishing reads up to the end-of-image marker; data after it is not our concern.
    started.finish().map_err(io_err)?;
    let pixels = if cmyk {
        cmyk_to_rgb(&pixels, inverted)
    } else {
        pixels
    };
    let img = RgbImage::from_raw(w as u32, h as u32, pixels).ok_or_else(|| {
        DecodeError::Corrupt("JPEG: decoder returned fewer pixels than declared".into())
    })?;
    Ok((img, orientation))
}

/// Pillow's naive CMYK -> RGB (no ICC profile): `r = (255 - c) * (255 - k) / 255`,
/// with its exact integer rounding.
fn cmyk_to_rgb(cmyk: &[u8], inverted: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(cmyk.len() / 4 * 3);
    for px in cmyk.chunks_exact(4) {
        let px = if inverted {
            [!px[0], !px[1], !px[2], !px[3]]
        } else {
            [px[0], px[1], px[2], px[3]]
        };
        let nk = 255 - u32::from(px[3]);
        for &c in &px[..3] {
            let t = u32::from(c) * nk + 128;
            out.push((nk - (((t >> 8) + t) >> 8)) as u8);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draft_scale_is_pillows_choice() {
        // min(w // size, h // size), then the largest of 8, 4, 2, 1 not above it.
        assert_eq!(draft_scale(1600, 1067, 224), 4);
        assert_eq!(draft_scale(1067, 1600, 224), 4);
        assert_eq!(draft_scale(4000, 3000, 224), 8);
        assert_eq!(draft_scale(900, 600, 224), 2);
        assert_eq!(draft_scale(447, 447, 224), 1);
        assert_eq!(draft_scale(448, 5000, 224), 2);
        assert_eq!(draft_scale(100, 100, 224), 1);
        assert_eq!(draft_scale(1000, 1000, 0), 1);
    }

    #[test]
    fn cmyk_conversion_matches_pillow_corner_cases() {
        assert_eq!(cmyk_to_rgb(&[0, 0, 0, 0], false), [255, 255, 255]);
        assert_eq!(cmyk_to_rgb(&[255, 0, 0, 0], false), [0, 255, 255]);
        assert_eq!(cmyk_to_rgb(&[0, 0, 0, 255], false), [0, 0, 0]);
        // Adobe-inverted storage: 255 means "no ink".
        assert_eq!(cmyk_to_rgb(&[255, 255, 255, 255], true), [255, 255, 255]);
    }
}
