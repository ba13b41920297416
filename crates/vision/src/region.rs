//! A region of a photo to search with (the bag in a street photo), given as fractions of the
//! upright image so that it means the same whatever size the image is decoded at.

use image::RgbImage;

/// The smallest region side, in pixels of the original image, worth embedding: below it the model
/// sees a few blurred pixels scaled up, and any answer would be noise.
pub const MIN_REGION_PX: u32 = 32;

/// `x`, `y` (top left corner), `w`, `h` as fractions of the upright image's width and height.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Region {
    pub x: f32,
    pub y: f32,
    pub w: f32,
    pub h: f32,
}

/// Slack for a box drawn to the very edge in floating point (`0.3333 + 0.6667`).
const EDGE: f32 = 1e-4;

impl Region {
    /// A region within the image, or why not.
    pub fn new(x: f32, y: f32, w: f32, h: f32) -> Result<Self, String> {
        if ![x, y, w, h].iter().all(|v| v.is_finite()) {
            return Err("box values must be finite numbers".into());
        }
        if !(0.0..1.0).contains(&x) || !(0.0..1.0).contains(&y) {
            return Err(format!(
                "box corner ({x}, {y}) must lie within the image: 0 <= x, y < 1"
            ));
        }
        if w <= 0.0 || h <= 0.0 {
            return Err(format!("box size ({w} x {h}) must be positive"));
        }
        if x + w > 1.0 + EDGE || y + h > 1.0 + EDGE {
            return Err(format!(
                "box ({x}, {y}, {w}, {h}) reaches past the image: x + w and y + h must be at most 1"
            ));
        }
        Ok(Region {
            x,
            y,
            w: w.min(1.0 - x),
            h: h.min(1.0 - y),
        })
    }

    /// Parses `x,y,w,h`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let parts: Vec<&str> = text.split(',').map(str::trim).collect();
        let numbers: Option<Vec<f32>> = parts.iter().map(|p| p.parse().ok()).collect();
        match numbers.as_deref() {
            Some(&[x, y, w, h]) => Self::new(x, y, w, h),
            _ => Err(format!(
                "box `{text}` must be four numbers `x,y,w,h`, fractions of the image (e.g. 0.5,0,0.5,1 for its right half)"
            )),
        }
    }

    /// The size to decode in draft for so that the region's shorter side still gets `size` pixels
    /// or more: the region is a fraction of the image, so the whole image needs proportionally more.
    pub fn draft_size(&self, size: u32) -> u32 {
        (size as f32 / self.w.min(self.h)).ceil() as u32
    }

    /// The region in pixels of a `width` x `height` image: left, top, width, height, rounded
    /// outward and at least one pixel.
    pub fn pixels(&self, width: u32, height: u32) -> (u32, u32, u32, u32) {
        let left = ((self.x * width as f32).floor() as u32).min(width.saturating_sub(1));
        let top = ((self.y * height as f32).floor() as u32).min(height.saturating_sub(1));
        let right = (((self.x + self.w) * width as f32).ceil() as u32).clamp(left + 1, width);
        let bottom = (((self.y + self.h) * height as f32).ceil() as u32).clamp(top + 1, height);
        (left, top, right - left, bottom - top)
    }

    /// Whether the region of a `width` x `height` image is large enough to embed.
    pub fn check_size(&self, width: u32, height: u32) -> Result<(), String> {
        let (_, _, w, h) = self.pixels(width, height);
        if w.min(h) < MIN_REGION_PX {
            return Err(format!(
                "the box is {w} x {h} pixels of this {width} x {height} image; its shorter side must be at least {MIN_REGION_PX}"
            ));
        }
        Ok(())
    }

    /// The region's pixels of an upright image (the whole image or a reduced decode of it).
    pub fn crop(&self, img: &RgbImage) -> RgbImage {
        let (x, y, w, h) = self.pixels(img.width(), img.height());
        image::imageops::crop_imm(img, x, y, w, h).to_image()
    }

    /// `[x, y, w, h]`, for answers.
    pub fn as_array(&self) -> [f32; 4] {
        [self.x, self.y, self.w, self.h]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boxes_are_parsed_and_checked() {
        let r = Region::parse("0.5, 0, 0.5, 1").unwrap();
        assert_eq!(r.as_array(), [0.5, 0.0, 0.5, 1.0]);
        for bad in [
            "",
            "0,0,1",
            "a,b,c,d",
            "0,0,0,1",
            "-0.1,0,0.5,0.5",
            "0.6,0,0.5,1",
            "0,0,NaN,1",
            "1,0,0.1,0.1",
        ] {
            assert!(Region::parse(bad).is_err(), "{bad}");
        }
        // A box drawn to the edge with rounding stays inside.
        let edge = Region::parse("0.3333,0,0.66671,1").unwrap();
        assert!(edge.x + edge.w <= 1.0 + f32::EPSILON);
    }

    #[test]
    fn pixels_round_outward_and_stay_inside() {
        let r = Region::new(0.25, 0.5, 0.5, 0.5).unwrap();
        assert_eq!(r.pixels(100, 10), (25, 5, 50, 5));
        let tiny = Region::new(0.999, 0.999, 0.001, 0.001).unwrap();
        assert_eq!(tiny.pixels(10, 10), (9, 9, 1, 1));
        let img = RgbImage::from_fn(10, 4, |x, _| image::Rgb([x as u8, 0, 0]));
        let right = Region::new(0.5, 0.0, 0.5, 1.0).unwrap().crop(&img);
        assert_eq!(right.dimensions(), (5, 4));
        assert_eq!(
            right.get_pixel(0, 0)[0],
            5,
            "the right half starts at column 5"
        );
    }

    #[test]
    fn small_boxes_are_refused_and_drafts_grow_with_the_box() {
        let r = Region::new(0.0, 0.0, 0.1, 0.5).unwrap();
        assert!(r.check_size(200, 200).is_err(), "20 px wide");
        assert!(r.check_size(1000, 1000).is_ok());
        assert_eq!(
            r.draft_size(224),
            2240,
            "a tenth of the width needs ten times the pixels"
        );
    }
}
