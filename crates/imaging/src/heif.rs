//! HEIC/HEIF and AVIF through libheif (the system library; Debian's `libheif1`), with the
//! HEVC (libde265) and AV1 (dav1d/libaom) decoders it was built with.

use std::sync::OnceLock;

use libheif_rs::{ColorSpace, DecodingOptions, HeifContext, HeifErrorCode, LibHeif, RgbChroma};

use super::decode::DecodeError;

pub(super) enum HeifError {
    /// The pixel limit refused the photo (checked before decoding).
    Limit(DecodeError),
    /// libheif lacks what this file needs (a codec, a feature).
    Unsupported(String),
    Decode(String),
}

fn from_libheif(e: libheif_rs::HeifError) -> HeifError {
    let reason = e.message.clone();
    let reason = if reason.is_empty() { format!("{:?}/{:?}", e.code, e.sub_code) } else { reason };
    match e.code {
        HeifErrorCode::UnsupportedFeature
        | HeifErrorCode::UnsupportedFileType
        | HeifErrorCode::PluginLoadingError => HeifError::Unsupported(reason),
        _ => HeifError::Decode(reason),
    }
}

/// Decodes the primary image of a HEIF/AVIF file to 8-bit RGB, its rotation and mirroring
/// applied. `check_pixels` sees the size (as displayed) before anything is decoded.
pub(super) fn decode(
    data: &[u8],
    check_pixels: impl Fn(u64, u64) -> Result<(), DecodeError>,
) -> Result<image::RgbImage, HeifError> {
    // Initialized once for the process: each `LibHeif` dropped de-initializes libheif
    // (unloading its plugins) while other workers may be decoding.
    static LIBHEIF: OnceLock<LibHeif> = OnceLock::new();
    let lib = LIBHEIF.get_or_init(LibHeif::new);
    let context = HeifContext::read_from_bytes(data).map_err(from_libheif)?;
    let handle = context.primary_image_handle().map_err(from_libheif)?;
    check_pixels(u64::from(handle.width()), u64::from(handle.height())).map_err(HeifError::Limit)?;
    let mut options = DecodingOptions::new().ok_or_else(|| HeifError::Decode("out of memory".into()))?;
    // 10- and 12-bit photos (some phones, HDR) down to 8 bits, as every other format here.
    options.set_convert_hdr_to_8bit(true);
    let decoded =
        lib.decode(&handle, ColorSpace::Rgb(RgbChroma::Rgb), Some(options)).map_err(from_libheif)?;
    let planes = decoded.planes();
    let plane = planes.interleaved.ok_or_else(|| HeifError::Decode("no interleaved RGB plane".into()))?;
    let (width, height) = (plane.width as usize, plane.height as usize);
    if plane.storage_bits_per_pixel != 24
        || plane.stride < width * 3
        || plane.data.len() < plane.stride * height
    {
        return Err(HeifError::Decode(format!(
            "unexpected RGB plane ({} bits per pixel, stride {})",
            plane.storage_bits_per_pixel, plane.stride
        )));
    }
    let mut rgb = Vec::with_capacity(width * height * 3);
    for row in plane.data.chunks(plane.stride).take(height) {
        rgb.extend_from_slice(&row[..width * 3]);
    }
    image::RgbImage::from_raw(width as u32, height as u32, rgb)
        .ok_or_else(|| HeifError::Decode("short RGB plane".into()))
}
