//! The altered copies `lookalike eval --duplicates` makes of a photo: what another seller does to the
//! maker's picture before listing it. Every parameter comes from a generator seeded by the eval's seed
//! and the image's path, so a run is repeatable and one image's copies do not depend on the others.

use anyhow::{Context, Result};
use image::{DynamicImage, ImageEncoder, RgbImage, imageops::FilterType};

/// One way of altering a photo.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(super) enum Alteration {
    /// Keep 75–90 % of each side, at a random position.
    Crop,
    /// Half of each side (a quarter of the pixels), as a shop's thumbnail.
    Shrink,
    /// Put on a white canvas 5–25 % larger on each side.
    Pad,
    /// Brightness ± 5–15 %, contrast and saturation × 0.85–1.15.
    Tone,
    /// Flipped left to right.
    Mirror,
    /// Re-encoded as a JPEG of quality 60–85.
    Jpeg,
}

impl Alteration {
    pub(super) const ALL: [Alteration; 6] = [
        Alteration::Crop,
        Alteration::Shrink,
        Alteration::Pad,
        Alteration::Tone,
        Alteration::Mirror,
        Alteration::Jpeg,
    ];

    pub(super) fn name(self) -> &'static str {
        match self {
            Alteration::Crop => "crop",
            Alteration::Shrink => "shrink",
            Alteration::Pad => "pad",
            Alteration::Tone => "tone",
            Alteration::Mirror => "mirror",
            Alteration::Jpeg => "jpeg",
        }
    }
}

/// The quality every copy but `Jpeg`'s is saved at: high enough that the alteration, not the
/// encoding, is what is measured.
const COPY_QUALITY: u8 = 92;

/// A small, fixed generator (SplitMix64): the same seed gives the same copies on every machine.
pub(super) struct Rng(u64);

impl Rng {
    /// Seeded by the run's seed and a name (the image's relative path).
    pub(super) fn new(seed: u64, name: &str) -> Self {
        // FNV-1a of the name, mixed with the seed.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in name.bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        Rng(h ^ seed.wrapping_mul(0x9e37_79b9_7f4a_7c15))
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [lo, hi).
    pub(super) fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        let unit = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        lo + (hi - lo) * unit
    }

    fn sign(&mut self) -> f64 {
        if self.next_u64() & 1 == 0 { 1.0 } else { -1.0 }
    }
}

/// The photo as the copies start from it: RGB, any transparency composited onto white (as a shop
/// would show it, and as the service cleans it).
pub(super) fn flatten(image: &DynamicImage) -> RgbImage {
    let rgba = image.to_rgba8();
    let (w, h) = rgba.dimensions();
    RgbImage::from_fn(w, h, |x, y| {
        let p = rgba.get_pixel(x, y).0;
        let a = f32::from(p[3]) / 255.0;
        let over = |c: u8| (f32::from(c) * a + 255.0 * (1.0 - a)).round() as u8;
        image::Rgb([over(p[0]), over(p[1]), over(p[2])])
    })
}

/// One altered copy of `photo`, encoded as a JPEG, and the parameters drawn for it.
pub(super) fn alter(
    photo: &RgbImage,
    kind: Alteration,
    rng: &mut Rng,
) -> Result<(Vec<u8>, String)> {
    let (w, h) = photo.dimensions();
    let mut quality = COPY_QUALITY;
    let (copy, params) = match kind {
        Alteration::Crop => {
            let keep = rng.uniform(0.75, 0.90);
            let (cw, ch) = (scaled(w, keep), scaled(h, keep));
            let x = (rng.uniform(0.0, 1.0) * f64::from(w - cw)).round() as u32;
            let y = (rng.uniform(0.0, 1.0) * f64::from(h - ch)).round() as u32;
            let copy = image::imageops::crop_imm(photo, x, y, cw, ch).to_image();
            (copy, format!("keep {keep:.3} of each side at ({x}, {y})"))
        }
        Alteration::Shrink => {
            let (sw, sh) = (scaled(w, 0.5), scaled(h, 0.5));
            let copy = image::imageops::resize(photo, sw, sh, FilterType::Triangle);
            (copy, format!("{sw}x{sh}"))
        }
        Alteration::Pad => {
            let sides: Vec<f64> = (0..4).map(|_| rng.uniform(0.05, 0.25)).collect();
            let (l, t) = (scaled(w, sides[0]), scaled(h, sides[1]));
            let (r, b) = (scaled(w, sides[2]), scaled(h, sides[3]));
            let mut canvas = RgbImage::from_pixel(w + l + r, h + t + b, image::Rgb([255; 3]));
            image::imageops::replace(&mut canvas, photo, i64::from(l), i64::from(t));
            (
                canvas,
                format!("white {l}/{t}/{r}/{b} px left/top/right/bottom"),
            )
        }
        Alteration::Tone => {
            let brightness = rng.sign() * rng.uniform(0.05, 0.15);
            let contrast = rng.uniform(0.85, 1.15);
            let saturation = rng.uniform(0.85, 1.15);
            let copy = RgbImage::from_fn(w, h, |x, y| {
                let p = photo.get_pixel(x, y).0.map(|c| f64::from(c) / 255.0);
                let grey = 0.299 * p[0] + 0.587 * p[1] + 0.114 * p[2];
                image::Rgb(p.map(|c| {
                    let c = grey + (c - grey) * saturation;
                    let c = (c - 0.5) * contrast + 0.5 + brightness;
                    (c.clamp(0.0, 1.0) * 255.0).round() as u8
                }))
            });
            (
                copy,
                format!(
                    "brightness {brightness:+.3}, contrast {contrast:.3}, saturation {saturation:.3}"
                ),
            )
        }
        Alteration::Mirror => (image::imageops::flip_horizontal(photo), String::new()),
        Alteration::Jpeg => {
            quality = rng.uniform(60.0, 86.0).floor() as u8;
            (photo.clone(), format!("quality {quality}"))
        }
    };
    let mut bytes = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, quality)
        .write_image(
            copy.as_raw(),
            copy.width(),
            copy.height(),
            image::ExtendedColorType::Rgb8,
        )
        .context("encoding an altered copy")?;
    Ok((bytes, params))
}

/// `side × share`, at least one pixel and at most the side.
fn scaled(side: u32, share: f64) -> u32 {
    ((f64::from(side) * share).round() as u32).clamp(1, side.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn photo() -> RgbImage {
        RgbImage::from_fn(200, 100, |x, y| image::Rgb([x as u8, y as u8, 128]))
    }

    fn decoded(bytes: &[u8]) -> RgbImage {
        image::load_from_memory(bytes).unwrap().to_rgb8()
    }

    #[test]
    fn the_same_seed_and_name_give_the_same_copy() {
        for kind in Alteration::ALL {
            let a = alter(&photo(), kind, &mut Rng::new(7, "shoes/a.jpg")).unwrap();
            let b = alter(&photo(), kind, &mut Rng::new(7, "shoes/a.jpg")).unwrap();
            assert_eq!(a, b, "{kind:?}");
        }
        let a = alter(&photo(), Alteration::Crop, &mut Rng::new(7, "shoes/a.jpg")).unwrap();
        let b = alter(&photo(), Alteration::Crop, &mut Rng::new(7, "shoes/b.jpg")).unwrap();
        assert_ne!(a.1, b.1, "another image draws other parameters");
    }

    #[test]
    fn each_alteration_changes_what_it_says() {
        let p = photo();
        let mut rng = Rng::new(1, "x");
        let crop = decoded(&alter(&p, Alteration::Crop, &mut rng).unwrap().0);
        assert!((150..=180).contains(&crop.width()) && (75..=90).contains(&crop.height()));
        let shrink = decoded(&alter(&p, Alteration::Shrink, &mut rng).unwrap().0);
        assert_eq!(shrink.dimensions(), (100, 50));
        let pad = decoded(&alter(&p, Alteration::Pad, &mut rng).unwrap().0);
        assert!(pad.width() >= 220 && pad.width() <= 300 && pad.height() >= 110);
        assert!(
            pad.get_pixel(0, 0).0.iter().all(|&c| c > 245),
            "white border"
        );
        let mirror = decoded(&alter(&p, Alteration::Mirror, &mut rng).unwrap().0);
        assert_eq!(mirror.dimensions(), (200, 100));
        // The red channel runs 0..200 left to right; mirrored, it runs the other way.
        assert!(mirror.get_pixel(5, 50).0[0] > 180 && mirror.get_pixel(195, 50).0[0] < 20);
        let (_, params) = alter(&p, Alteration::Jpeg, &mut rng).unwrap();
        let q: u8 = params.trim_start_matches("quality ").parse().unwrap();
        assert!((60..=85).contains(&q));
        let tone = decoded(&alter(&p, Alteration::Tone, &mut rng).unwrap().0);
        assert_eq!(tone.dimensions(), (200, 100));
    }

    #[test]
    fn transparency_is_composited_onto_white() {
        let rgba = image::RgbaImage::from_fn(2, 1, |x, _| {
            image::Rgba([0, 0, 0, if x == 0 { 0 } else { 255 }])
        });
        let flat = flatten(&DynamicImage::ImageRgba8(rgba));
        assert_eq!(flat.get_pixel(0, 0).0, [255, 255, 255]);
        assert_eq!(flat.get_pixel(1, 0).0, [0, 0, 0]);
    }

    #[test]
    fn uniform_stays_in_range() {
        let mut rng = Rng::new(3, "y");
        for _ in 0..1000 {
            let x = rng.uniform(0.75, 0.9);
            assert!((0.75..0.9).contains(&x));
        }
    }
}
