//! AVIF: an AV1 still picture in a HEIF container.
//!
//! The container is read by `mp4parse` (Firefox's parser: fallible allocations, fuzzed): the primary
//! item's AV1 data, its declared size (`ispe`), colour information (`colr` nclx), rotation and mirroring
//! (`irot`, `imir`) and the alpha auxiliary item. The AV1 data is decoded by dav1d, linked statically
//! from the source that `libdav1d-sys` bundles, through the few calls below. The YUV planes are turned
//! into 8-bit RGB(A) here, the way libavif does it for Pillow: bit depth 8/10/12, 4:2:0, 4:2:2, 4:4:4 and
//! monochrome (bilinear, centre-sited chroma), limited or full range, and the matrix coefficients of the
//! `colr` box, else of the AV1 sequence header, BT.601 when neither says.
//!
//! Not decoded: grid images (a picture tiled from several AV1 items), image sequences without a still
//! primary image, and the matrices libavif refuses too (BT.2020 constant luminance, SMPTE 2085, ICtCp):
//! they fail with `image_unsupported_format`. The clean aperture (`clap`) is not applied, as neither
//! libavif nor Pillow applies it by default. ICC profiles are ignored, as for every other format.
//!
//! dav1d runs on the calling thread (`n_threads = 1`), with its frame size capped at
//! `DecodeLimits::max_pixels`; the declared sizes (`ispe`, and the AV1 sequence header's maximum frame
//! size, which bounds what dav1d allocates) are checked against the limits before anything is decoded.

use std::io::Cursor;
use std::mem::MaybeUninit;
use std::os::raw::c_int;
use std::ptr;

use image::metadata::Orientation;
use image::{DynamicImage, RgbImage, RgbaImage};
use libdav1d_sys as dav1d;
use mp4parse::{ImageMirror, ImageRotation, ParseStrictness};

use crate::decode::{DecodeError, DecodeLimits, check_dimensions};

/// Decodes an AVIF file into 8-bit RGB or RGBA (straight alpha) in its stored orientation, and the
/// orientation that makes it upright (from `irot` and `imir`).
pub(crate) fn decode(
    bytes: &[u8],
    limits: &DecodeLimits,
) -> Result<(DynamicImage, Orientation), DecodeError> {
    // Permissive: refuse only what is ambiguous. Pillow (libavif) also accepts a missing `pixi` and an
    // invalid `clap`; a file that says less than the specification asks is still a picture.
    let ctx = mp4parse::read_avif(&mut Cursor::new(bytes), ParseStrictness::Permissive)
        .map_err(parse_error)?;
    let Some(color) = ctx.primary_item_coded_data() else {
        return Err(no_primary_item(&ctx));
    };
    let alpha_data = ctx.alpha_item_coded_data();
    let channels = if alpha_data.is_some() { 4 } else { 3 };
    if let Some((w, h)) = spatial_extents(&ctx)? {
        check_dimensions(w, h, u64::from(w) * u64::from(h) * channels, limits)?;
    }
    // What dav1d will allocate is bounded by each item's sequence header: its planes, the alpha
    // item's, and the 8-bit output must fit the allocation cap together.
    let color_seq = sequence_header(color, "image")?;
    let alpha_seq = alpha_data
        .map(|data| sequence_header(data, "alpha"))
        .transpose()?;
    let (sw, sh) = (color_seq.max_width, color_seq.max_height);
    let output = u64::from(sw) * u64::from(sh) * channels;
    let alpha_bytes = alpha_seq.as_ref().map_or(0, |a| a.frame_bytes);
    check_dimensions(sw, sh, color_seq.frame_bytes + alpha_bytes + output, limits)?;
    if let Some(a) = &alpha_seq {
        check_dimensions(a.max_width, a.max_height, a.frame_bytes, limits)?;
    }
    let nclx = nclx(&ctx)?;
    let orientation = orientation(&ctx)?;

    let picture = decode_av1(color, limits, "image")?;
    let (w, h) = (picture.width(), picture.height());
    let alpha = match alpha_data {
        Some(data) => {
            let alpha = decode_av1(data, limits, "alpha")?;
            if (alpha.width(), alpha.height()) != (w, h) {
                return Err(DecodeError::Corrupt(format!(
                    "AVIF alpha plane is {}x{}, its image {w}x{h}",
                    alpha.width(),
                    alpha.height()
                )));
            }
            Some(alpha)
        }
        None => None,
    };

    let colour = Colour::of(&picture, nclx.as_ref())?;
    let rgb = to_rgb8(&picture, &colour)?;
    let img = match alpha {
        None => DynamicImage::ImageRgb8(rgb),
        Some(alpha) => {
            let a = alpha_to_8bit(&alpha)?;
            DynamicImage::ImageRgba8(join_alpha(rgb, &a, ctx.premultiplied_alpha))
        }
    };
    Ok((img, orientation))
}

fn parse_error(e: mp4parse::Error) -> DecodeError {
    use mp4parse::Error as E;
    match e {
        E::UnexpectedEOF => DecodeError::Truncated("AVIF container ends inside a box".into()),
        E::Io(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
            DecodeError::Truncated(format!("AVIF container: {io}"))
        }
        E::OutOfMemory => {
            DecodeError::TooLarge("AVIF container declares more data than can be held".into())
        }
        // Box versions, flags and values the parser does not know: in practice damaged headers
        // (the features it lacks, such as grids, come back as a missing image instead).
        E::Unsupported(what) => DecodeError::Corrupt(format!("AVIF container: {what}")),
        other => DecodeError::Corrupt(format!("AVIF container: {other}")),
    }
}

fn no_primary_item(ctx: &mp4parse::AvifContext) -> DecodeError {
    use mp4parse::Feature;
    let unsupported = &ctx.unsupported_features;
    if unsupported.contains(Feature::Grid) {
        DecodeError::UnsupportedFormat("AVIF grid (tiled) images are not supported".into())
    } else if ctx.sequence.is_some() {
        DecodeError::UnsupportedFormat(
            "AVIF image sequence without a still image is not supported".into(),
        )
    } else if !unsupported.is_empty() {
        DecodeError::UnsupportedFormat(format!(
            "AVIF primary image needs properties not supported (feature set {:#x})",
            unsupported.into_bitfield()
        ))
    } else {
        DecodeError::Corrupt("AVIF file has no primary image".into())
    }
}

/// `ispe`, the size the primary item declares. mp4parse hands it out as a pointer to a `#[repr(C)]`
/// struct of two `u32` (its C API's layout), fields private.
fn spatial_extents(ctx: &mp4parse::AvifContext) -> Result<Option<(u32, u32)>, DecodeError> {
    const _: () = assert!(size_of::<mp4parse::ImageSpatialExtentsProperty>() == 8);
    let ispe = ctx.spatial_extents_ptr().map_err(parse_error)?;
    if ispe.is_null() {
        return Ok(None);
    }
    // SAFETY: non-null, points into `ctx`, which outlives this read; `#[repr(C)]` of
    // { image_width: u32, image_height: u32 }.
    let [w, h] = unsafe { ptr::read(ispe.cast::<[u32; 2]>()) };
    Ok(Some((w, h)))
}

/// The primary item's `colr` box of type nclx, if any.
#[derive(Debug, Clone, Copy)]
struct Nclx {
    colour_primaries: u8,
    matrix_coefficients: u8,
}

fn nclx(ctx: &mp4parse::AvifContext) -> Result<Option<Nclx>, DecodeError> {
    // `#[repr(C)]` { colour_primaries: u8, transfer_characteristics: u8, matrix_coefficients: u8,
    // full_range_flag: bool }, fields private.
    const _: () = assert!(size_of::<mp4parse::NclxColourInformation>() == 4);
    match ctx.nclx_colour_information_ptr() {
        None => Ok(None),
        Some(Err(e)) => Err(parse_error(e)),
        Some(Ok(p)) if p.is_null() => Ok(None),
        Some(Ok(p)) => {
            // SAFETY: non-null, points into `ctx`; read as plain bytes (the bool is not needed).
            let [colour_primaries, _, matrix_coefficients, _] =
                unsafe { ptr::read(p.cast::<[u8; 4]>()) };
            Ok(Some(Nclx {
                colour_primaries,
                matrix_coefficients,
            }))
        }
    }
}

/// `irot` (anticlockwise quarter turns) then `imir` (MIAF's order), as the EXIF orientation that
/// undoes them: the mapping Pillow's AVIF plugin uses.
fn orientation(ctx: &mp4parse::AvifContext) -> Result<Orientation, DecodeError> {
    let turns = match ctx.image_rotation().map_err(parse_error)? {
        ImageRotation::D0 => 0,
        ImageRotation::D90 => 1,
        ImageRotation::D180 => 2,
        ImageRotation::D270 => 3,
    };
    let mirror = ctx.image_mirror_ptr().map_err(parse_error)?;
    // SAFETY: when non-null, points to a (fieldless, valid) enum inside `ctx`.
    let mirror = unsafe { mirror.as_ref() };
    // (top and bottom exchanged, left and right exchanged)
    let exif = match (turns, mirror) {
        (0, None) => 1,
        (0, Some(ImageMirror::LeftRight)) => 2,
        (0, Some(ImageMirror::TopBottom)) => 4,
        (1, None) => 8,
        (1, Some(ImageMirror::LeftRight)) => 7,
        (1, Some(ImageMirror::TopBottom)) => 5,
        (2, None) => 3,
        (2, Some(ImageMirror::LeftRight)) => 4,
        (2, Some(ImageMirror::TopBottom)) => 2,
        (_, None) => 6,
        (_, Some(ImageMirror::LeftRight)) => 5,
        (_, Some(ImageMirror::TopBottom)) => 7,
    };
    Ok(Orientation::from_exif(exif).unwrap_or(Orientation::NoTransforms))
}

// --- dav1d ---

/// A decoded AV1 picture, released when dropped.
struct Picture(dav1d::Dav1dPicture);

impl Drop for Picture {
    fn drop(&mut self) {
        // SAFETY: a picture dav1d_get_picture returned, unreferenced once.
        unsafe { dav1d::dav1d_picture_unref(&mut self.0) }
    }
}

impl Picture {
    fn width(&self) -> u32 {
        self.0.p.w as u32
    }
    fn height(&self) -> u32 {
        self.0.p.h as u32
    }
    fn bits(&self) -> u32 {
        self.0.p.bpc as u32
    }
    /// 0 monochrome, 1 4:2:0, 2 4:2:2, 3 4:4:4 (dav1d sets it, never from raw bitstream bits; read
    /// as an integer all the same, so a value the Rust enum lacks is never made).
    fn layout(&self) -> u32 {
        // SAFETY: reading a `#[repr(u32)]` field as the `u32` it is.
        unsafe { ptr::addr_of!(self.0.p.layout).cast::<u32>().read() }
    }
    /// The sequence header's colour description: matrix coefficients, colour primaries, full range.
    /// `mtrx` and `pri` are the bitstream's 8 bits, which may be values the bindings' enums lack:
    /// read as integers.
    fn colour_description(&self) -> (u32, u32, bool) {
        let seq = self.0.seq_hdr;
        if seq.is_null() {
            return (2, 2, false);
        }
        // SAFETY: dav1d keeps the sequence header alive as long as the picture holds its reference.
        unsafe {
            (
                ptr::addr_of!((*seq).mtrx).cast::<u32>().read(),
                ptr::addr_of!((*seq).pri).cast::<u32>().read(),
                ptr::addr_of!((*seq).color_range).read() != 0,
            )
        }
    }

    /// Plane `i` (0 luma, 1 and 2 chroma) as rows of samples widened to u16.
    fn plane(&self, i: usize) -> Result<Plane<'_>, DecodeError> {
        let (sx, sy) = match (i, self.layout()) {
            (0, _) | (_, 3) => (0, 0),
            (_, 1) => (1, 1),
            (_, 2) => (1, 0),
            _ => {
                return Err(DecodeError::Corrupt(
                    "AV1 picture has no chroma planes".into(),
                ));
            }
        };
        let width = ((self.width() + sx) >> sx) as usize;
        let height = ((self.height() + sy) >> sy) as usize;
        let wide = self.bits() > 8;
        let stride = self.0.stride[usize::from(i > 0)];
        let data = self.0.data[i].cast::<u8>().cast_const();
        let row_bytes = width * if wide { 2 } else { 1 };
        let misaligned =
            wide && !((data as usize).is_multiple_of(2) && stride.unsigned_abs().is_multiple_of(2));
        if data.is_null()
            || stride < 0
            || (stride as usize) < row_bytes
            || height == 0
            || misaligned
        {
            return Err(DecodeError::Corrupt(format!(
                "AV1 picture plane {i} has an unusable layout"
            )));
        }
        Ok(Plane {
            data,
            stride: stride as usize,
            width,
            height,
            wide,
            _picture: self,
        })
    }
}

struct Plane<'a> {
    data: *const u8,
    stride: usize,
    width: usize,
    height: usize,
    wide: bool,
    _picture: &'a Picture,
}

impl Plane<'_> {
    /// Row `y` (clamped to the plane) into `out`, one sample per entry.
    fn row(&self, y: usize, out: &mut Vec<u16>) {
        let y = y.min(self.height - 1);
        out.clear();
        // SAFETY: dav1d allocates `stride` bytes per row for `height` rows, each row holding `width`
        // samples of one (8-bit) or two (10/12-bit, native endian, aligned) bytes; the picture is kept
        // alive by `_picture`.
        unsafe {
            let start = self.data.add(y * self.stride);
            if self.wide {
                let row = std::slice::from_raw_parts(start.cast::<u16>(), self.width);
                out.extend_from_slice(row);
            } else {
                let row = std::slice::from_raw_parts(start, self.width);
                out.extend(row.iter().map(|&v| u16::from(v)));
            }
        }
    }
}

/// An AV1 decoder instance, closed when dropped.
struct Decoder(*mut dav1d::Dav1dContext);

impl Drop for Decoder {
    fn drop(&mut self) {
        // SAFETY: opened by dav1d_open, closed once.
        unsafe { dav1d::dav1d_close(&mut self.0) }
    }
}

/// Bitstream data handed to dav1d, released if dav1d did not take it all.
struct Data(dav1d::Dav1dData);

impl Drop for Data {
    fn drop(&mut self) {
        // SAFETY: created by dav1d_data_create; a no-op once dav1d consumed (and zeroed) it.
        unsafe { dav1d::dav1d_data_unref(&mut self.0) }
    }
}

/// Decodes one AV1 item (`what` names it in errors) into its first shown picture.
fn decode_av1(data: &[u8], limits: &DecodeLimits, what: &str) -> Result<Picture, DecodeError> {
    if data.is_empty() {
        return Err(DecodeError::Corrupt(format!(
            "AVIF {what} item has no data"
        )));
    }

    // SAFETY (this block): plain C calls on structures dav1d initialises, each result checked.
    unsafe {
        let mut settings = MaybeUninit::<dav1d::Dav1dSettings>::uninit();
        dav1d::dav1d_default_settings(settings.as_mut_ptr());
        let mut settings = settings.assume_init();
        // On this thread, one frame at a time: the worker already decodes images in parallel, and
        // a thread of dav1d's own would outlive a panic on ours.
        settings.n_threads = 1;
        settings.max_frame_delay = 1;
        // Only the highest spatial layer of a layered image.
        settings.all_layers = 0;
        settings.frame_size_limit = u32::try_from(limits.max_pixels).unwrap_or(u32::MAX);
        // No messages on stderr: failures come back as return codes.
        settings.logger.callback = None;

        let mut ctx = ptr::null_mut();
        if dav1d::dav1d_open(&mut ctx, &settings) < 0 || ctx.is_null() {
            return Err(DecodeError::TooLarge(
                "could not allocate an AV1 decoder".into(),
            ));
        }
        let decoder = Decoder(ctx);

        let mut input = Data(std::mem::zeroed());
        let buf = dav1d::dav1d_data_create(&mut input.0, data.len());
        if buf.is_null() {
            return Err(DecodeError::TooLarge(format!(
                "could not allocate {} bytes for AV1 data",
                data.len()
            )));
        }
        ptr::copy_nonoverlapping(data.as_ptr(), buf, data.len());

        let mut picture = Picture(std::mem::zeroed());
        // Each turn either hands dav1d more data or gets a picture; a stream that does neither for
        // this long is not a still image.
        for _ in 0..1_000 {
            if input.0.sz > 0 {
                let res = dav1d::dav1d_send_data(decoder.0, &mut input.0);
                if res < 0 && res != dav1d::DAV1D_ERR_AGAIN {
                    return Err(av1_error(res, what));
                }
            }
            let res = dav1d::dav1d_get_picture(decoder.0, &mut picture.0);
            if res == 0 {
                return check_picture(picture, limits, what);
            }
            if res != dav1d::DAV1D_ERR_AGAIN {
                return Err(av1_error(res, what));
            }
            if input.0.sz == 0 {
                break;
            }
        }
        // Nothing was decoded yet: `picture` is still zeroed, which dav1d_picture_unref ignores.
        Err(DecodeError::Corrupt(format!(
            "AVIF {what} item holds no complete AV1 frame"
        )))
    }
}

fn av1_error(res: c_int, what: &str) -> DecodeError {
    if res == dav1d::DAV1D_ERR_NOMEM {
        DecodeError::TooLarge(format!("AV1 decoder ran out of memory on the {what}"))
    } else {
        DecodeError::Corrupt(format!(
            "AV1 decoding of the {what} failed (dav1d error {res})"
        ))
    }
}

/// What an AV1 sequence header promises, read before any frame is decoded.
struct SequenceHeader {
    /// No frame of the stream is larger than this.
    max_width: u32,
    max_height: u32,
    /// The bytes of the planes of the frames dav1d may hold at once for this item: each frame the
    /// item codes (a still image codes one; more are hidden reference frames, or layers) at the
    /// maximum size, bit depth and subsampling, at most the 8 reference slots and the output.
    frame_bytes: u64,
}

/// The frames an AV1 item codes: its frame and frame-header OBUs, walked by their size fields
/// (AVIF requires them). A stream that stops making sense ends the count; dav1d judges the rest.
fn coded_frames(mut data: &[u8]) -> u64 {
    let mut frames = 0;
    while let Some((&header, rest)) = data.split_first() {
        let kind = (header >> 3) & 0x0F;
        let has_extension = header & 0x04 != 0;
        let has_size = header & 0x02 != 0;
        let mut rest = if has_extension {
            rest.get(1..).unwrap_or_default()
        } else {
            rest
        };
        // OBU_FRAME_HEADER (3), OBU_FRAME (6).
        if matches!(kind, 3 | 6) {
            frames += 1;
        }
        if !has_size {
            break;
        }
        // LEB128 size, at most 8 bytes.
        let mut size = 0u64;
        let mut done = false;
        for i in 0..8 {
            let Some((&byte, tail)) = rest.split_first() else {
                break;
            };
            rest = tail;
            size |= u64::from(byte & 0x7F) << (7 * i);
            if byte & 0x80 == 0 {
                done = true;
                break;
            }
        }
        let Some(next) = usize::try_from(size)
            .ok()
            .filter(|_| done)
            .and_then(|n| rest.get(n..))
        else {
            break;
        };
        data = next;
    }
    frames.max(1)
}

fn sequence_header(data: &[u8], what: &str) -> Result<SequenceHeader, DecodeError> {
    let mut seq = MaybeUninit::<dav1d::Dav1dSequenceHeader>::zeroed();
    // SAFETY: dav1d reads `data` and fills `seq`.
    let res =
        unsafe { dav1d::dav1d_parse_sequence_header(seq.as_mut_ptr(), data.as_ptr(), data.len()) };
    if res < 0 {
        return Err(DecodeError::Corrupt(format!(
            "AVIF {what} item has no valid AV1 sequence header (dav1d error {res})"
        )));
    }
    let seq = seq.as_ptr();
    // SAFETY: fields of a struct that was zeroed, then filled by dav1d; the layout (a C enum that
    // dav1d derives, never copies from the bitstream) is read as the integer it is.
    let (w, h, layout, hbd) = unsafe {
        (
            (*seq).max_width,
            (*seq).max_height,
            ptr::addr_of!((*seq).layout).cast::<u32>().read(),
            (*seq).hbd,
        )
    };
    let (max_width, max_height) = (u32::try_from(w).unwrap_or(0), u32::try_from(h).unwrap_or(0));
    let luma = u64::from(max_width) * u64::from(max_height);
    let chroma = match layout {
        0 => 0,
        1 => 2 * luma.div_ceil(4),
        2 => 2 * luma.div_ceil(2),
        _ => 2 * luma,
    };
    let sample_bytes = if hbd > 0 { 2 } else { 1 };
    let frames = coded_frames(data).min(9);
    Ok(SequenceHeader {
        max_width,
        max_height,
        frame_bytes: (luma + chroma) * sample_bytes * frames,
    })
}

fn check_picture(
    picture: Picture,
    limits: &DecodeLimits,
    what: &str,
) -> Result<Picture, DecodeError> {
    let p = &picture.0.p;
    if p.w <= 0 || p.h <= 0 || !matches!(p.bpc, 8 | 10 | 12) || picture.layout() > 3 {
        return Err(DecodeError::Corrupt(format!(
            "AVIF {what}: AV1 picture of {}x{} at {} bits",
            p.w, p.h, p.bpc
        )));
    }
    // dav1d's frame_size_limit already holds it to max_pixels; the sides are checked here.
    let (w, h) = (picture.width(), picture.height());
    check_dimensions(w, h, 0, limits)?;
    Ok(picture)
}

// --- YUV to RGB ---

/// How to turn one picture's samples into RGB.
struct Colour {
    matrix: Matrix,
    full_range: bool,
}

enum Matrix {
    /// R, G, B from Y, Cb, Cr with these luma weights of red and blue.
    YCbCr { kr: f32, kb: f32 },
    /// GBR coded as is (matrix_coefficients 0).
    Identity,
    /// matrix_coefficients 8.
    YCgCo,
}

impl Colour {
    fn of(picture: &Picture, nclx: Option<&Nclx>) -> Result<Self, DecodeError> {
        let (seq_mc, seq_cp, full_range) = picture.colour_description();
        // libavif's rule: the container's `colr` wins over the bitstream for the matrix; the range
        // is the bitstream's.
        let (mc, cp) = match nclx {
            Some(n) => (
                u32::from(n.matrix_coefficients),
                u32::from(n.colour_primaries),
            ),
            None => (seq_mc, seq_cp),
        };
        let matrix = match mc {
            0 => Matrix::Identity,
            1 => Matrix::YCbCr {
                kr: 0.2126,
                kb: 0.0722,
            },
            4 => Matrix::YCbCr { kr: 0.30, kb: 0.11 },
            7 => Matrix::YCbCr {
                kr: 0.212,
                kb: 0.087,
            },
            8 => Matrix::YCgCo,
            9 => Matrix::YCbCr {
                kr: 0.2627,
                kb: 0.0593,
            },
            10 | 11 | 13 | 14.. => {
                return Err(DecodeError::UnsupportedFormat(format!(
                    "AVIF with matrix coefficients {mc} is not supported"
                )));
            }
            12 => match luma_weights(cp) {
                Some((kr, kb)) => Matrix::YCbCr { kr, kb },
                None => BT601,
            },
            // 5 and 6 (BT.601), 2 (unspecified: MIAF's default is BT.601) and the reserved 3.
            _ => BT601,
        };
        Ok(Self { matrix, full_range })
    }
}

const BT601: Matrix = Matrix::YCbCr {
    kr: 0.299,
    kb: 0.114,
};

/// Luma weights of red and blue derived from colour primaries (matrix_coefficients 12, H.273 eq. 39-44).
fn luma_weights(primaries: u32) -> Option<(f32, f32)> {
    // (xr, yr, xg, yg, xb, yb, xw, yw)
    let p: [f64; 8] = match primaries {
        1 => [0.64, 0.33, 0.30, 0.60, 0.15, 0.06, 0.3127, 0.3290],
        4 => [0.67, 0.33, 0.21, 0.71, 0.14, 0.08, 0.310, 0.316],
        5 => [0.64, 0.33, 0.29, 0.60, 0.15, 0.06, 0.3127, 0.3290],
        6 | 7 => [0.630, 0.340, 0.310, 0.595, 0.155, 0.070, 0.3127, 0.3290],
        8 => [0.681, 0.319, 0.243, 0.692, 0.145, 0.049, 0.310, 0.316],
        9 => [0.708, 0.292, 0.170, 0.797, 0.131, 0.046, 0.3127, 0.3290],
        10 => [1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 1.0 / 3.0, 1.0 / 3.0],
        11 => [0.680, 0.320, 0.265, 0.690, 0.150, 0.060, 0.314, 0.351],
        12 => [0.680, 0.320, 0.265, 0.690, 0.150, 0.060, 0.3127, 0.3290],
        22 => [0.630, 0.340, 0.295, 0.605, 0.155, 0.077, 0.3127, 0.3290],
        _ => return None,
    };
    let [xr, yr, xg, yg, xb, yb, xw, yw] = p;
    let z = |x: f64, y: f64| 1.0 - (x + y);
    let (zr, zg, zb, zw) = (z(xr, yr), z(xg, yg), z(xb, yb), z(xw, yw));
    let denom =
        yw * (xr * (yg * zb - yb * zg) + xg * (yb * zr - yr * zb) + xb * (yr * zg - yg * zr));
    if denom.abs() < 1e-12 {
        return None;
    }
    let kr = (yr
        * (xw * (yg * zb - yb * zg) + yw * (xb * zg - xg * zb) + zw * (xg * yb - xb * yg)))
        / denom;
    let kb = (yb
        * (xw * (yr * zg - yg * zr) + yw * (xg * zr - xr * zg) + zw * (xr * yg - xg * yr)))
        / denom;
    (kr.is_finite() && kb.is_finite() && kr > 0.0 && kb > 0.0 && kr + kb < 1.0)
        .then_some((kr as f32, kb as f32))
}

/// Sample values to [0, 1] (luma, or every channel of GBR) and to [-0.5, 0.5] (chroma).
struct Scale {
    y_offset: f32,
    y_range: f32,
    c_offset: f32,
    c_range: f32,
}

impl Scale {
    fn new(bits: u32, full_range: bool, chroma_like_luma: bool) -> Self {
        let max = ((1u32 << bits) - 1) as f32;
        let shift = bits - 8;
        let (y_offset, y_range) = if full_range {
            (0.0, max)
        } else {
            ((16u32 << shift) as f32, (219u32 << shift) as f32)
        };
        let (c_offset, c_range) = if chroma_like_luma {
            (y_offset, y_range)
        } else if full_range {
            ((1u32 << (bits - 1)) as f32, max)
        } else {
            ((1u32 << (bits - 1)) as f32, (224u32 << shift) as f32)
        };
        Self {
            y_offset,
            y_range,
            c_offset,
            c_range,
        }
    }
}

fn to_8bit(v: f32) -> u8 {
    (v.clamp(0.0, 1.0) * 255.0 + 0.5) as u8
}

/// One row of a chroma plane, upsampled to the luma width (bilinear, centre-sited: each output
/// sample is 3/4 its own chroma sample and 1/4 the next one on its side), as values in [-0.5, 0.5].
fn chroma_row(samples: &[u16], width: usize, sx: u32, offset: f32, range: f32, out: &mut Vec<f32>) {
    out.clear();
    let c = |i: usize| (f32::from(samples[i.min(samples.len() - 1)]) - offset) / range;
    if sx == 0 {
        out.extend((0..width).map(c));
        return;
    }
    let last = samples.len() - 1;
    out.extend((0..width).map(|x| {
        let own = x >> 1;
        let other = if x & 1 == 1 {
            (own + 1).min(last)
        } else {
            own.saturating_sub(1)
        };
        0.75 * c(own) + 0.25 * c(other)
    }));
}

fn to_rgb8(picture: &Picture, colour: &Colour) -> Result<RgbImage, DecodeError> {
    let (w, h) = (picture.width() as usize, picture.height() as usize);
    let bits = picture.bits();
    let layout = picture.layout();
    let chroma_like_luma = matches!(colour.matrix, Matrix::Identity);
    let scale = Scale::new(bits, colour.full_range, chroma_like_luma);
    let luma = picture.plane(0)?;
    let chroma = if layout == 0 {
        None
    } else {
        Some((picture.plane(1)?, picture.plane(2)?))
    };
    let (sx, sy) = match layout {
        1 => (1, 1),
        2 => (1, 0),
        _ => (0, 0),
    };

    let mut out = Vec::new();
    out.try_reserve_exact(w * h * 3)
        .map_err(|_| DecodeError::TooLarge(format!("no memory for {w}x{h} RGB pixels")))?;
    let (mut ys, mut raw) = (Vec::with_capacity(w), Vec::new());
    let (mut cb, mut cr) = (Vec::with_capacity(w), Vec::with_capacity(w));
    let (mut near, mut far) = (Vec::with_capacity(w), Vec::with_capacity(w));
    for y in 0..h {
        luma.row(y, &mut ys);
        let Some((u, v)) = &chroma else {
            for &s in &ys {
                let g = to_8bit((f32::from(s) - scale.y_offset) / scale.y_range);
                out.extend_from_slice(&[g, g, g]);
            }
            continue;
        };
        // The chroma row of this luma row and, for 4:2:0, its neighbour on the same side.
        let own = y >> sy;
        let other = if sy == 0 {
            own
        } else if y & 1 == 1 {
            own + 1
        } else {
            own.saturating_sub(1)
        };
        for (plane, dest) in [(u, &mut cb), (v, &mut cr)] {
            plane.row(own, &mut raw);
            chroma_row(&raw, w, sx, scale.c_offset, scale.c_range, &mut near);
            if other == own {
                std::mem::swap(dest, &mut near);
            } else {
                plane.row(other, &mut raw);
                chroma_row(&raw, w, sx, scale.c_offset, scale.c_range, &mut far);
                dest.clear();
                dest.extend(near.iter().zip(&far).map(|(a, b)| 0.75 * a + 0.25 * b));
            }
        }
        for x in 0..w {
            let yv = (f32::from(ys[x]) - scale.y_offset) / scale.y_range;
            let (cbv, crv) = (cb[x], cr[x]);
            let (r, g, b) = match colour.matrix {
                Matrix::YCbCr { kr, kb } => {
                    let kg = 1.0 - kr - kb;
                    let r = yv + 2.0 * (1.0 - kr) * crv;
                    let b = yv + 2.0 * (1.0 - kb) * cbv;
                    let g = yv - 2.0 * (kr * (1.0 - kr) * crv + kb * (1.0 - kb) * cbv) / kg;
                    (r, g, b)
                }
                // Chroma was scaled like luma, to [0, 1].
                Matrix::Identity => (crv, yv, cbv),
                Matrix::YCgCo => {
                    let t = yv - cbv;
                    (t + crv, yv + cbv, t - crv)
                }
            };
            out.extend_from_slice(&[to_8bit(r), to_8bit(g), to_8bit(b)]);
        }
    }
    RgbImage::from_raw(w as u32, h as u32, out)
        .ok_or_else(|| DecodeError::Corrupt("AVIF pixel buffer of the wrong size".into()))
}

/// The alpha item's luma plane as 8-bit full-range alpha.
fn alpha_to_8bit(picture: &Picture) -> Result<Vec<u8>, DecodeError> {
    let (w, h) = (picture.width() as usize, picture.height() as usize);
    let (_, _, full_range) = picture.colour_description();
    let scale = Scale::new(picture.bits(), full_range, true);
    let plane = picture.plane(0)?;
    let mut out = Vec::new();
    out.try_reserve_exact(w * h)
        .map_err(|_| DecodeError::TooLarge(format!("no memory for {w}x{h} alpha")))?;
    let mut row = Vec::with_capacity(w);
    for y in 0..h {
        plane.row(y, &mut row);
        out.extend(
            row.iter()
                .map(|&s| to_8bit((f32::from(s) - scale.y_offset) / scale.y_range)),
        );
    }
    Ok(out)
}

/// RGB and alpha as straight (not premultiplied) RGBA.
fn join_alpha(rgb: RgbImage, alpha: &[u8], premultiplied: bool) -> RgbaImage {
    let (w, h) = rgb.dimensions();
    let mut out = Vec::with_capacity(alpha.len() * 4);
    for (px, &a) in rgb.as_raw().chunks_exact(3).zip(alpha) {
        if premultiplied {
            for &c in px {
                // Colour was stored multiplied by alpha: undo it (libavif's rounding), none when
                // fully transparent.
                let c = match a {
                    0 => 0,
                    255 => c,
                    a => ((u32::from(c) * 255 + u32::from(a) / 2) / u32::from(a)).min(255) as u8,
                };
                out.push(c);
            }
        } else {
            out.extend_from_slice(px);
        }
        out.push(a);
    }
    // Length is exactly w*h*4 by construction; the fallback only keeps this panic-free.
    RgbaImage::from_raw(w, h, out).unwrap_or_else(|| RgbaImage::new(w, h))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn luma_weights_from_primaries_match_the_published_matrices() {
        // H.273: BT.709 primaries give the BT.709 matrix, BT.2020's the BT.2020 one.
        let (kr, kb) = luma_weights(1).unwrap();
        assert!(
            (kr - 0.2126).abs() < 1e-3 && (kb - 0.0722).abs() < 1e-3,
            "{kr} {kb}"
        );
        let (kr, kb) = luma_weights(9).unwrap();
        assert!(
            (kr - 0.2627).abs() < 1e-3 && (kb - 0.0593).abs() < 1e-3,
            "{kr} {kb}"
        );
        assert_eq!(luma_weights(2), None);
    }

    #[test]
    fn coded_frames_counts_frame_obus_by_their_sizes() {
        // Temporal delimiter (type 2, empty), sequence header (type 1, 2 bytes), then frames (type 6).
        let delimiter = [0x12, 0x00];
        let sequence = [0x0A, 0x02, 0xAA, 0xBB];
        let frame = [0x32, 0x03, 0x06, 0x06, 0x06];
        let stream = |frames: usize| {
            let mut s = [delimiter.as_slice(), &sequence].concat();
            for _ in 0..frames {
                s.extend_from_slice(&frame);
            }
            s
        };
        assert_eq!(coded_frames(&stream(1)), 1);
        assert_eq!(coded_frames(&stream(3)), 3);
        // A frame header (type 3) with an extension byte, and a two-byte LEB128 size (130).
        let mut long = stream(1);
        long.extend_from_slice(&[0x1E, 0x00, 0x82, 0x01]);
        long.extend_from_slice(&[0u8; 130]);
        long.extend_from_slice(&frame);
        assert_eq!(coded_frames(&long), 3);
        // Sizes past the end stop the count instead of reading beyond the data.
        assert_eq!(coded_frames(&[0x32, 0xFF, 0xFF, 0xFF, 0x0F]), 1);
        assert_eq!(coded_frames(&[]), 1);
    }

    #[test]
    fn premultiplied_colour_is_divided_by_alpha() {
        let rgb = RgbImage::from_raw(3, 1, vec![64, 32, 0, 200, 100, 50, 9, 9, 9]).unwrap();
        let out = join_alpha(rgb, &[128, 255, 0], true);
        assert_eq!(
            out.as_raw(),
            &[128, 64, 0, 128, 200, 100, 50, 255, 0, 0, 0, 0]
        );
    }
}
