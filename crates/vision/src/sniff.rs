//! Cheap structural checks on raw bytes, done before any pixel is decoded.
//!
//! They walk container structure only (markers, chunks, blocks); nothing here
//! allocates in proportion to what the file declares, so a hostile header cannot
//! make them expensive.

/// Does a JPEG byte stream reach its end-of-image marker?
///
/// JPEG decoders (libjpeg included) are lenient: at the end of the data they
/// pretend an end marker was there and fill the missing part with grey, with at
/// most a warning. An embedding of half a photo is worse than a clear rejection. Walking the
/// markers (instead of searching for `FF D9` anywhere) skips EXIF thumbnails,
/// which carry their own complete JPEG inside APP1.
pub(crate) fn jpeg_reaches_eoi(b: &[u8]) -> bool {
    let n = b.len();
    let mut i = 2; // after SOI
    while i < n {
        // Tolerate junk between segments, as libjpeg does: hunt for the next 0xFF.
        if b[i] != 0xFF {
            i += 1;
            continue;
        }
        // Any number of 0xFF fill bytes may precede a marker code.
        while i < n && b[i] == 0xFF {
            i += 1;
        }
        let Some(&marker) = b.get(i) else {
            return false;
        };
        i += 1;
        match marker {
            0xD9 => return true,
            // Stand-alone markers carry no length field.
            0x00 | 0x01 | 0xD0..=0xD8 => continue,
            _ => {}
        }
        let Some(len) = b
            .get(i..i + 2)
            .map(|s| usize::from(u16::from_be_bytes([s[0], s[1]])))
        else {
            return false;
        };
        if len < 2 {
            return false;
        }
        i += len;
        if marker == 0xDA {
            i = skip_entropy_coded(b, i);
        }
    }
    false
}

/// Index of the first real marker after entropy-coded scan data (or `b.len()`).
fn skip_entropy_coded(b: &[u8], mut i: usize) -> usize {
    let n = b.len();
    while i + 1 < n {
        if b[i] == 0xFF {
            match b[i + 1] {
                // Stuffed zero byte or restart marker: still inside the scan.
                0x00 | 0xD0..=0xD7 => i += 2,
                0xFF => i += 1,
                _ => return i,
            }
        } else {
            i += 1;
        }
    }
    n
}

/// Length a WebP (RIFF) file declares for itself, header included.
///
/// WebP decoders report missing data as a corrupt bitstream or a missing chunk; the RIFF size is
/// what tells a download cut short apart from damaged bytes.
pub(crate) fn riff_declared_len(b: &[u8]) -> Option<u64> {
    let size = b.get(4..8)?;
    Some(u64::from(u32::from_le_bytes([size[0], size[1], size[2], size[3]])) + 8)
}

/// What a container says about its animation frames, read without decoding any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Frames {
    /// Frames a GIF, APNG or animated WebP declares or contains, counted no further than `cap + 1`
    /// (other formats: 1).
    pub count: u32,
    /// How far right and down any GIF frame reaches (offset plus size). GIF frames carry their own
    /// size, which may exceed the logical screen that the decoder reports: 44 bytes can declare a
    /// 65535x65535 frame on a 32x32 screen. Other formats: `(0, 0)`, their frames lie within the
    /// declared canvas.
    pub extent: (u32, u32),
}

/// Only the first frame is ever decoded, but a file with a million frames (or a gigapixel one) is
/// still abuse worth refusing before anything else is spent on it.
pub(crate) fn frames(format: image::ImageFormat, b: &[u8], cap: u32) -> Frames {
    use image::ImageFormat as F;
    let count = |count| Frames {
        count,
        extent: (0, 0),
    };
    match format {
        F::Gif => gif_frames(b, cap),
        F::Png => count(apng_frames(b)),
        F::WebP => count(webp_frames(b, cap)),
        _ => count(1),
    }
}

fn gif_frames(b: &[u8], cap: u32) -> Frames {
    let mut out = Frames {
        count: 0,
        extent: (0, 0),
    };
    // Header (6) + logical screen descriptor (7), then an optional global colour table.
    let Some(&packed) = b.get(10) else {
        out.count = 1;
        return out;
    };
    let mut i = 13 + colour_table_len(packed);
    let u16_at = |i: usize| {
        b.get(i..i + 2)
            .map(|s| u32::from(u16::from_le_bytes([s[0], s[1]])))
    };
    while let Some(&block) = b.get(i) {
        match block {
            0x2C => {
                out.count += 1;
                if out.count > cap {
                    break;
                }
                // Left, top, width, height: little-endian u16 each.
                if let (Some(left), Some(top), Some(w), Some(h)) =
                    (u16_at(i + 1), u16_at(i + 3), u16_at(i + 5), u16_at(i + 7))
                {
                    out.extent.0 = out.extent.0.max(left + w);
                    out.extent.1 = out.extent.1.max(top + h);
                }
                let Some(&local) = b.get(i + 9) else { break };
                // Descriptor (10) + local colour table + LZW minimum code size (1).
                i = skip_sub_blocks(b, i + 10 + colour_table_len(local) + 1);
            }
            0x21 => i = skip_sub_blocks(b, i + 2),
            _ => break, // trailer (0x3B) or garbage: the decoder decides what that means
        }
    }
    out.count = out.count.max(1);
    out
}

fn colour_table_len(packed: u8) -> usize {
    if packed & 0x80 != 0 {
        3 << ((packed & 0x07) + 1)
    } else {
        0
    }
}

fn skip_sub_blocks(b: &[u8], mut i: usize) -> usize {
    while let Some(&size) = b.get(i) {
        i += 1;
        if size == 0 {
            return i;
        }
        i += usize::from(size);
    }
    b.len()
}

fn apng_frames(b: &[u8]) -> u32 {
    // acTL must come before the first IDAT and states the frame count outright.
    let mut i = 8;
    while let Some(head) = b.get(i..i + 8) {
        let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
        match &head[4..8] {
            b"acTL" => {
                return b
                    .get(i + 8..i + 12)
                    .map_or(1, |s| u32::from_be_bytes([s[0], s[1], s[2], s[3]]).max(1));
            }
            b"IDAT" | b"IEND" => return 1,
            _ => i = i.saturating_add(12).saturating_add(len),
        }
    }
    1
}

fn webp_frames(b: &[u8], cap: u32) -> u32 {
    // RIFF header (12 bytes), then chunks: FourCC, little-endian size, data padded to even.
    let mut i = 12;
    let mut frames = 0u32;
    while let Some(head) = b.get(i..i + 8) {
        if &head[..4] == b"ANMF" {
            frames += 1;
            if frames > cap {
                break;
            }
        }
        let len = u32::from_le_bytes([head[4], head[5], head[6], head[7]]) as usize;
        i = i
            .saturating_add(8)
            .saturating_add(len)
            .saturating_add(len & 1);
    }
    frames.max(1)
}

/// Is this an AVIF file: an ISO base media file whose `ftyp` box names the AVIF brand (`avif`, or
/// `avis` for a sequence) as its major brand or among its compatible ones?
///
/// The `image` crate only recognises a major brand of `avif`; AVIF sequences (`avis`) and files
/// written as generic HEIF (`mif1` major brand, `avif` compatible) are AVIF too. A HEIF file (HEVC)
/// names `heic` and no AVIF brand.
pub(crate) fn is_avif(b: &[u8]) -> bool {
    let Some(head) = b.get(..12) else {
        return false;
    };
    if &head[4..8] != b"ftyp" {
        return false;
    }
    let size = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
    // Major brand (8..12), minor version (12..16), then compatible brands to the end of the box.
    let brands = b.get(16..size.min(b.len())).unwrap_or_default();
    std::iter::once(&head[8..12])
        .chain(brands.chunks_exact(4))
        .any(|brand| brand == b"avif" || brand == b"avis")
}

/// How long an ISO base media file (AVIF, HEIF) says it is: the sum of its top-level boxes, walked
/// until the data runs out. More than the data holds means a download cut short; the parser would
/// only see a box that ends early, or an image item pointing past the end.
pub(crate) fn isobmff_declared_len(b: &[u8]) -> u64 {
    let mut at = 0u64;
    let len = b.len() as u64;
    while at < len {
        let Some(head) = usize::try_from(at).ok().and_then(|i| b.get(i..i + 8)) else {
            // A box header cut short.
            return at + 8;
        };
        let size = u64::from(u32::from_be_bytes([head[0], head[1], head[2], head[3]]));
        let size = match size {
            // The rest of the file.
            0 => return len,
            // A 64-bit size follows the type.
            1 => match usize::try_from(at).ok().and_then(|i| b.get(i + 8..i + 16)) {
                Some(large) => u64::from_be_bytes(large.try_into().unwrap_or_default()),
                None => return at + 16,
            },
            size => size,
        };
        if size < 8 {
            // Not a box: leave the verdict to the parser.
            return len;
        }
        at = at.saturating_add(size);
    }
    at
}

/// Image formats the `image` crate does not even recognise, named so that "not supported" says
/// which format it was (phones upload HEIC; JPEG XL is spreading).
pub(crate) fn other_image_format(b: &[u8]) -> Option<&'static str> {
    if b.starts_with(&[0xFF, 0x0A]) || b.starts_with(b"\0\0\0\x0cJXL \r\n\x87\n") {
        return Some("JPEG XL");
    }
    // ISO base media file: size, "ftyp", major brand.
    match b.get(4..12) {
        Some(head) if &head[..4] == b"ftyp" => match &head[4..] {
            b"heic" | b"heix" | b"heim" | b"heis" | b"hevc" | b"hevx" | b"mif1" | b"msf1" => {
                Some("HEIF")
            }
            _ => None,
        },
        _ => None,
    }
}

/// Does the start of the payload look like text (HTML, JSON, an error page)?
/// Only used to make the "not an image" message more helpful.
pub(crate) fn looks_like_text(b: &[u8]) -> bool {
    let head = &b[..b.len().min(512)];
    !head.is_empty()
        && head.iter().all(|&c| {
            c == b'\n' || c == b'\r' || c == b'\t' || (0x20..0x7F).contains(&c) || c >= 0x80
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jpeg_walk_accepts_complete_stream_and_rejects_cut_stream() {
        // SOI, APP0 (len 4), SOS (len 3), entropy data with a stuffed 0xFF00 and RST0, EOI.
        let full = [
            0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x04, 1, 2, 0xFF, 0xDA, 0x00, 0x03, 0, 9, 0xFF, 0x00, 8,
            0xFF, 0xD0, 7, 0xFF, 0xD9,
        ];
        assert!(jpeg_reaches_eoi(&full));
        for cut in 0..full.len() - 1 {
            assert!(!jpeg_reaches_eoi(&full[..cut]), "cut at {cut}");
        }
    }

    #[test]
    fn jpeg_walk_skips_an_eoi_hidden_inside_a_segment() {
        // An APP1 segment whose payload contains FF D9 (like an EXIF thumbnail) must not count.
        let data = [
            0xFF, 0xD8, 0xFF, 0xE1, 0x00, 0x06, 0xFF, 0xD9, 0xFF, 0xD9, 0xFF, 0xDA,
        ];
        assert!(!jpeg_reaches_eoi(&data));
    }

    #[test]
    fn gif_frame_extents_include_offsets_and_frames_beyond_the_screen() {
        // 32x32 screen, no colour table; frame 1: 10x10 at (5, 0); frame 2: 65535x2 at (0, 40).
        let mut gif = b"GIF89a\x20\x00\x20\x00\x00\x00\x00".to_vec();
        for (left, top, w, h) in [(5u16, 0u16, 10u16, 10u16), (0, 40, 65535, 2)] {
            gif.push(0x2C);
            for v in [left, top, w, h] {
                gif.extend_from_slice(&v.to_le_bytes());
            }
            gif.extend_from_slice(&[0x00, 0x02, 0x01, 0x00, 0x00]); // no table, code size, data, end
        }
        gif.push(0x3B);
        let f = frames(image::ImageFormat::Gif, &gif, 10);
        assert_eq!(
            f,
            Frames {
                count: 2,
                extent: (65535, 42)
            }
        );
        // Counting stops past the cap, and so does the walk.
        assert_eq!(frames(image::ImageFormat::Gif, &gif, 1).extent, (15, 10));
    }

    #[test]
    fn heif_and_jpeg_xl_are_named() {
        assert_eq!(
            other_image_format(b"\0\0\0\x18ftypheic\0\0\0\0"),
            Some("HEIF")
        );
        assert_eq!(other_image_format(&[0xFF, 0x0A, 0xFA]), Some("JPEG XL"));
        assert_eq!(
            other_image_format(b"\0\0\0\x0cJXL \r\n\x87\n\0"),
            Some("JPEG XL")
        );
        assert_eq!(other_image_format(b"\0\0\0\x18ftypisom"), None);
        assert_eq!(other_image_format(b"<html>"), None);
    }

    #[test]
    fn text_detection_recognises_html_but_not_binary() {
        assert!(looks_like_text(b"<!doctype html><html></html>"));
        assert!(!looks_like_text(&[0x89, b'P', b'N', b'G', 0, 0]));
    }
}
