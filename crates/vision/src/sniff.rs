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

/// Number of animation frames a GIF, APNG or animated WebP declares or contains,
/// counting no further than `cap` (other formats: 1).
///
/// Only the first frame is ever decoded, but a file with a million frames is still
/// abuse worth refusing before anything else is spent on it.
pub(crate) fn frame_count(format: image::ImageFormat, b: &[u8], cap: u32) -> u32 {
    use image::ImageFormat as F;
    match format {
        F::Gif => gif_frames(b, cap),
        F::Png => apng_frames(b),
        F::WebP => webp_frames(b, cap),
        _ => 1,
    }
}

fn gif_frames(b: &[u8], cap: u32) -> u32 {
    // Header (6) + logical screen descriptor (7), then an optional global colour table.
    let Some(&packed) = b.get(10) else { return 1 };
    let mut i = 13 + colour_table_len(packed);
    let mut frames = 0u32;
    while let Some(&block) = b.get(i) {
        match block {
            0x2C => {
                frames += 1;
                if frames > cap {
                    break;
                }
                let Some(&local) = b.get(i + 9) else { break };
                // Descriptor (10) + local colour table + LZW minimum code size (1).
                i = skip_sub_blocks(b, i + 10 + colour_table_len(local) + 1);
            }
            0x21 => i = skip_sub_blocks(b, i + 2),
            _ => break, // trailer (0x3B) or garbage: the decoder decides what that means
        }
    }
    frames.max(1)
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
    fn text_detection_recognises_html_but_not_binary() {
        assert!(looks_like_text(b"<!doctype html><html></html>"));
        assert!(!looks_like_text(&[0x89, b'P', b'N', b'G', 0, 0]));
    }
}
