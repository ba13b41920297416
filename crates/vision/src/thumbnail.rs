//! Small JPEG previews for the web page and search results.

use image::codecs::jpeg::JpegEncoder;
use image::imageops;
use image::{Rgb, RgbImage};

/// JPEG quality: 80 is where artefacts stop being visible at thumbnail size
/// while files stay a few KB.
const QUALITY: u8 = 80;
/// Baseline JPEG cannot describe a side longer than this.
const JPEG_MAX_SIDE: u32 = 65_535;

/// Encodes `img` as a JPEG whose longer side is at most `max_side`, keeping the
/// aspect ratio (never enlarging, never below 1 px per side).
///
/// Never fails: an image without pixels gives a 1x1 white JPEG, so every stored
/// product has a displayable preview.
pub fn thumbnail_jpeg(img: &RgbImage, max_side: u32) -> Vec<u8> {
    let max_side = max_side.clamp(1, JPEG_MAX_SIDE);
    let (w, h) = img.dimensions();
    let blank;
    let src = if w == 0 || h == 0 {
        blank = RgbImage::from_pixel(1, 1, Rgb([255, 255, 255]));
        &blank
    } else {
        img
    };
    let (w, h) = src.dimensions();
    let resized;
    let out = if w.max(h) > max_side {
        let (nw, nh) = fit(w, h, max_side);
        // Area averaging: as sharp as a triangle filter when shrinking several times, and several
        // times cheaper on large photos (this runs for every ingested image).
        resized = imageops::thumbnail(src, nw, nh);
        &resized
    } else {
        src
    };
    match crate::jpeg::encode(out, QUALITY) {
        Ok(jpeg) => jpeg,
        Err(e) => {
            tracing::warn!(error = %e, "thumbnail: libjpeg-turbo encoding failed; using the Rust encoder");
            let mut buf = Vec::with_capacity(16 * 1024);
            if let Err(e) = JpegEncoder::new_with_quality(&mut buf, QUALITY).encode_image(out) {
                tracing::warn!(error = %e, "thumbnail encoding failed");
                buf.clear();
            }
            buf
        }
    }
}

/// Scales `(w, h)` so the longer side is `max_side`, rounding the shorter side.
fn fit(w: u32, h: u32, max_side: u32) -> (u32, u32) {
    let scale = |short: u32, long: u32| {
        let v = (u64::from(short) * u64::from(max_side) + u64::from(long) / 2) / u64::from(long);
        (v as u32).clamp(1, max_side)
    };
    if w >= h {
        (max_side, scale(h, w))
    } else {
        (scale(w, h), max_side)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decoded(bytes: &[u8]) -> RgbImage {
        image::load_from_memory_with_format(bytes, image::ImageFormat::Jpeg)
            .unwrap()
            .to_rgb8()
    }

    #[test]
    fn thumbnail_keeps_aspect_ratio_and_fits_the_box() {
        let img = RgbImage::from_pixel(1600, 1067, Rgb([10, 200, 30]));
        let t = decoded(&thumbnail_jpeg(&img, 256));
        assert_eq!(t.dimensions(), (256, 171));
    }

    #[test]
    fn small_images_are_not_enlarged() {
        let t = decoded(&thumbnail_jpeg(&RgbImage::new(40, 30), 256));
        assert_eq!(t.dimensions(), (40, 30));
    }

    #[test]
    fn extreme_aspect_and_empty_images_still_give_a_jpeg() {
        assert_eq!(
            decoded(&thumbnail_jpeg(&RgbImage::new(5000, 1), 100)).dimensions(),
            (100, 1)
        );
        assert_eq!(
            decoded(&thumbnail_jpeg(&RgbImage::new(0, 0), 100)).dimensions(),
            (1, 1)
        );
        assert_eq!(
            decoded(&thumbnail_jpeg(&RgbImage::new(10, 10), 0)).dimensions(),
            (1, 1)
        );
    }

    #[test]
    fn thumbnails_are_baseline_jpegs_with_the_colours_of_the_image() {
        let img = RgbImage::from_fn(600, 400, |x, y| Rgb([(x % 256) as u8, (y % 256) as u8, 90]));
        let jpeg = thumbnail_jpeg(&img, 256);
        // SOF0 (baseline), not SOF2 (progressive, mozjpeg's default): cheap to make and to show.
        assert!(jpeg.windows(2).any(|w| w == [0xFF, 0xC0]), "baseline");
        assert!(
            !jpeg.windows(2).any(|w| w == [0xFF, 0xC2]),
            "not progressive"
        );
        let t = decoded(&jpeg);
        assert_eq!(t.dimensions(), (256, 171));
        let mean = |i: usize, im: &RgbImage| {
            im.pixels().map(|p| f64::from(p[i])).sum::<f64>() / f64::from(im.width() * im.height())
        };
        let small = imageops::thumbnail(&img, 256, 171);
        for channel in 0..3 {
            let (a, b) = (mean(channel, &t), mean(channel, &small));
            assert!((a - b).abs() < 2.0, "channel {channel}: {a} vs {b}");
        }
    }
}
