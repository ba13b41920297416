//! Image -> model input tensor: resize the shorter side, centre-crop, normalise.
//!
//! The reference embeddings (and the models' training pipelines) use Pillow's
//! bicubic resize, so this reimplements Pillow's separable resampler (same kernel,
//! same support scaling when shrinking, same 22-bit fixed point, same rounding,
//! horizontal pass first with 8-bit clipping in between). It only computes output
//! pixels that survive the centre crop, so the resize is done once, over the crop
//! window, and a 1x5000 sliver never turns into a 224x1 120 000 intermediate.

use image::RgbImage;
use ndarray::Array3;

use crate::model::ModelSpec;

/// Pillow's fixed-point precision for 8-bit resampling: 32 - 8 - 2 bits. Accumulators are `i32`, as
/// Pillow's: a pixel's taps sum to 2^22 and their absolute values to under 1.1 × 2^22 (bicubic's negative
/// lobes), so 255 × that plus the rounding half stays below 2^31. Half the width of `i64` lets the
/// vertical pass run twice as many lanes per instruction.
const PRECISION_BITS: u32 = 22;

/// CHW float tensor for `spec`: shorter side resized to `resize_shorter` (bicubic),
/// centre crop of `input_size`, scaled to 0..1, minus mean, over std.
///
/// An image without pixels (never produced by `decode::clean`) gives the tensor of
/// a black image rather than a panic.
pub fn to_tensor(img: &RgbImage, spec: &ModelSpec) -> Array3<f32> {
    let size = spec.input_size.max(1) as usize;
    // A crop larger than the resized image would need padding; resizing to at
    // least the crop size keeps the operation well defined for any spec.
    let shorter = u64::from(spec.resize_shorter.max(spec.input_size).max(1));
    let (w, h) = (u64::from(img.width()), u64::from(img.height()));

    let mut out = Array3::<f32>::zeros((3, size, size));
    let lut = normalisation_lut(spec);
    let Some(plane) = out.as_slice_mut() else {
        return out;
    };
    if w == 0 || h == 0 {
        for (c, channel) in plane.chunks_exact_mut(size * size).enumerate() {
            channel.fill(lut[c][0]);
        }
        return out;
    }
    // Long side rounded to nearest (the reference pipeline's rule; truncating, as
    // torchvision does, lowers CLIP parity on 451x300 from 1.0 to 0.987).
    let long = |long: u64, short: u64| (shorter * long + short / 2) / short;
    let (new_w, new_h) = if w <= h {
        (shorter, long(h, w))
    } else {
        (long(w, h), shorter)
    };
    let left = (new_w - size as u64) / 2;
    let top = (new_h - size as u64) / 2;

    let cols = Coeffs::new(w as usize, new_w, left, size);
    let rows = Coeffs::new(h as usize, new_h, top, size);

    // Horizontal pass over just the source rows the vertical pass will read.
    let first_row = rows.bounds.first().map_or(0, |b| b.0);
    let last_row = rows.bounds.last().map_or(0, |b| b.0 + b.1);
    let stride = size * 3;
    let src = img.as_raw();
    let src_stride = w as usize * 3;
    let mut inter = vec![0u8; (last_row - first_row) * stride];
    for (y, dst) in (first_row..last_row).zip(inter.chunks_exact_mut(stride)) {
        let line = &src[y * src_stride..(y + 1) * src_stride];
        for ((&(start, len), k), px) in cols
            .bounds
            .iter()
            .zip(cols.weights())
            .zip(dst.chunks_exact_mut(3))
        {
            let mut acc = [1i32 << (PRECISION_BITS - 1); 3];
            for (s, &wt) in line[start * 3..(start + len) * 3].chunks_exact(3).zip(k) {
                acc[0] += i32::from(s[0]) * wt;
                acc[1] += i32::from(s[1]) * wt;
                acc[2] += i32::from(s[2]) * wt;
            }
            px.copy_from_slice(&acc.map(clip8));
        }
    }

    // Vertical pass, accumulating whole rows so the inner loop is contiguous.
    let (r_plane, rest) = plane.split_at_mut(size * size);
    let (g_plane, b_plane) = rest.split_at_mut(size * size);
    let mut acc = vec![0i32; stride];
    for (yy, (&(start, len), k)) in rows.bounds.iter().zip(rows.weights()).enumerate() {
        acc.fill(1i32 << (PRECISION_BITS - 1));
        let window = &inter[(start - first_row) * stride..(start - first_row + len) * stride];
        for (line, &wt) in window.chunks_exact(stride).zip(k) {
            for (a, &s) in acc.iter_mut().zip(line) {
                *a += i32::from(s) * wt;
            }
        }
        let row = yy * size..(yy + 1) * size;
        let (r, g, b) = (
            &mut r_plane[row.clone()],
            &mut g_plane[row.clone()],
            &mut b_plane[row],
        );
        for (x, px) in acc.chunks_exact(3).enumerate() {
            r[x] = lut[0][usize::from(clip8(px[0]))];
            g[x] = lut[1][usize::from(clip8(px[1]))];
            b[x] = lut[2][usize::from(clip8(px[2]))];
        }
    }
    out
}

/// `(v / 255 - mean) / std` for every byte value, per channel.
fn normalisation_lut(spec: &ModelSpec) -> [[f32; 256]; 3] {
    let mut lut = [[0.0f32; 256]; 3];
    for (c, table) in lut.iter_mut().enumerate() {
        for (v, slot) in table.iter_mut().enumerate() {
            *slot = (v as f32 / 255.0 - spec.mean[c]) / spec.std[c];
        }
    }
    lut
}

fn clip8(v: i32) -> u8 {
    (v >> PRECISION_BITS).clamp(0, 255) as u8
}

/// Pillow's bicubic kernel (a = -0.5, support 2).
fn bicubic(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

/// Fixed-point filter taps for `count` consecutive output pixels starting at `first`
/// of a resize from `in_size` to `out_size` (Pillow's `precompute_coeffs`).
struct Coeffs {
    /// (first source index, number of taps) per output pixel.
    bounds: Vec<(usize, usize)>,
    /// `ksize` taps per output pixel, only the first `bounds.1` used.
    taps: Vec<i32>,
    ksize: usize,
}

impl Coeffs {
    fn new(in_size: usize, out_size: u64, first: u64, count: usize) -> Self {
        let scale = in_size as f64 / out_size as f64;
        let filter_scale = scale.max(1.0);
        let support = 2.0 * filter_scale;
        let ksize = support.ceil() as usize * 2 + 1;
        let mut bounds = Vec::with_capacity(count);
        let mut taps = vec![0i32; ksize * count];
        let mut w = vec![0.0f64; ksize];
        for (i, k) in taps.chunks_exact_mut(ksize).enumerate() {
            let center = ((first + i as u64) as f64 + 0.5) * scale;
            // Float-to-int casts truncate toward zero, exactly like Pillow's (int) casts.
            let xmin = ((center - support + 0.5) as i64).max(0) as usize;
            let xmax = ((center + support + 0.5) as i64).clamp(0, in_size as i64) as usize;
            let len = xmax.saturating_sub(xmin).min(ksize);
            let mut total = 0.0;
            for (x, slot) in w[..len].iter_mut().enumerate() {
                *slot = bicubic(((x + xmin) as f64 - center + 0.5) / filter_scale);
                total += *slot;
            }
            for (slot, &v) in k.iter_mut().zip(&w[..len]) {
                let v = if total != 0.0 { v / total } else { v };
                // Round half away from zero, as Pillow's normalize_coeffs_8bpc does.
                *slot = (v * f64::from(1u32 << PRECISION_BITS)).round() as i32;
            }
            bounds.push((xmin, len));
        }
        Self {
            bounds,
            taps,
            ksize,
        }
    }

    fn weights(&self) -> std::slice::ChunksExact<'_, i32> {
        self.taps.chunks_exact(self.ksize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(shorter: u32) -> ModelSpec {
        ModelSpec {
            resize_shorter: shorter,
            ..ModelSpec::clip_vitb16("unused.onnx")
        }
    }

    #[test]
    fn output_is_chw_of_the_input_size_for_any_aspect_ratio() {
        for (w, h) in [
            (451, 300),
            (300, 451),
            (224, 224),
            (1, 1),
            (1, 3000),
            (5000, 2),
            (100, 100),
        ] {
            let t = to_tensor(&RgbImage::new(w, h), &spec(256));
            assert_eq!(t.shape(), &[3, 224, 224], "{w}x{h}");
            assert!(t.iter().all(|v| v.is_finite()));
        }
    }

    #[test]
    fn uniform_colour_survives_resampling_and_is_normalised_per_channel() {
        let s = ModelSpec::clip_vitb16("unused.onnx");
        let img = RgbImage::from_pixel(640, 480, image::Rgb([255, 128, 0]));
        let t = to_tensor(&img, &s);
        for c in 0..3 {
            let v = [255.0, 128.0, 0.0][c] / 255.0;
            let want = (v - s.mean[c]) / s.std[c];
            assert!(
                t.index_axis(ndarray::Axis(0), c)
                    .iter()
                    .all(|&x| (x - want).abs() < 1e-5),
                "channel {c}"
            );
        }
    }

    #[test]
    fn lite0_maps_byte_values_to_minus_127_over_128() {
        let s = ModelSpec::efficientnet_lite0("unused.onnx");
        let t = to_tensor(
            &RgbImage::from_pixel(300, 300, image::Rgb([0, 127, 255])),
            &s,
        );
        assert!((t[[0, 10, 10]] + 127.0 / 128.0).abs() < 1e-5);
        assert!(t[[1, 10, 10]].abs() < 1e-5);
        assert!((t[[2, 10, 10]] - 1.0).abs() < 1e-5);
    }

    #[test]
    fn crop_keeps_the_centre_of_a_wide_image() {
        // Left third red, middle third green, right third blue: only green may remain.
        let img = RgbImage::from_fn(900, 224, |x, _| match x / 300 {
            0 => image::Rgb([255, 0, 0]),
            1 => image::Rgb([0, 255, 0]),
            _ => image::Rgb([0, 0, 255]),
        });
        let s = ModelSpec {
            mean: [0.0; 3],
            std: [1.0; 3],
            ..spec(224)
        };
        let t = to_tensor(&img, &s);
        assert!(t.index_axis(ndarray::Axis(0), 1).iter().all(|&v| v > 0.99));
        assert!(t.index_axis(ndarray::Axis(0), 0).iter().all(|&v| v < 0.01));
    }

    #[test]
    fn empty_image_gives_a_black_tensor_instead_of_panicking() {
        let s = ModelSpec {
            mean: [0.5; 3],
            std: [0.5; 3],
            ..spec(224)
        };
        let t = to_tensor(&RgbImage::new(0, 0), &s);
        assert!(t.iter().all(|&v| (v + 1.0).abs() < 1e-6));
    }

    #[test]
    fn kernel_weights_sum_to_one_in_fixed_point() {
        let c = Coeffs::new(1600, 336, 56, 224);
        for (k, &(_, len)) in c.weights().zip(&c.bounds) {
            let sum: i32 = k[..len].iter().sum();
            assert!(
                (sum - (1 << PRECISION_BITS)).abs() <= len as i32,
                "sum {sum}"
            );
        }
    }
}
