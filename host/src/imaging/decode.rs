//! Decoding photos into RGB with limits checked before anything large is allocated, so a
//! decompression bomb or a forged 60000x60000 header is refused at once.
//!
//! JPEG goes through libjpeg-turbo (TurboJPEG), the decoder behind Pillow, OpenCV and dlib's
//! Python tools: refacen sees the very pixels the reference pipelines see. Other decoders
//! differ by a few levels in ~1% of pixels, enough to flip borderline detections. Other
//! formats use the `image` crate.

use std::path::{Path, PathBuf};

/// Limits on what a photo may cost to decode.
#[derive(Clone, Copy, Debug)]
pub struct DecodeLimits {
    pub max_file_bytes: u64,
    pub max_pixels: u64,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        // 100 MP covers any camera; 256 MiB covers any sane photo file.
        DecodeLimits { max_file_bytes: 256 << 20, max_pixels: 100_000_000 }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("{path}: cannot read: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: empty file")]
    Empty { path: PathBuf },
    #[error("{path}: file of {bytes} bytes exceeds the limit of {limit} bytes")]
    FileTooLarge { path: PathBuf, bytes: u64, limit: u64 },
    #[error("{path}: not a supported image format (JPEG, PNG, BMP, WebP, TIFF, GIF)")]
    UnknownFormat { path: PathBuf },
    #[error("{path}: {width}x{height} pixels exceed the limit of {limit} pixels")]
    TooManyPixels { path: PathBuf, width: u64, height: u64, limit: u64 },
    #[error("{path}: cannot decode {format}: {reason}")]
    Corrupt { path: PathBuf, format: String, reason: String },
}

impl DecodeError {
    /// A short cause for summaries.
    pub fn kind(&self) -> &'static str {
        match self {
            DecodeError::Read { .. } => "unreadable file",
            DecodeError::Empty { .. } => "empty file",
            DecodeError::FileTooLarge { .. } => "file too large",
            DecodeError::UnknownFormat { .. } => "not an image",
            DecodeError::TooManyPixels { .. } => "too many pixels",
            DecodeError::Corrupt { .. } => "corrupt image",
        }
    }
}

/// Decodes the photo at `path` to 8-bit RGB (grey replicated, alpha dropped), as Pillow's
/// `Image.open(p).convert('RGB')` does. EXIF orientation is not applied.
pub fn decode_rgb(path: &Path, limits: &DecodeLimits) -> Result<image::RgbImage, DecodeError> {
    let read_err = |source| DecodeError::Read { path: path.to_path_buf(), source };
    let bytes = std::fs::metadata(path).map_err(read_err)?.len();
    if bytes == 0 {
        return Err(DecodeError::Empty { path: path.to_path_buf() });
    }
    if bytes > limits.max_file_bytes {
        return Err(DecodeError::FileTooLarge {
            path: path.to_path_buf(),
            bytes,
            limit: limits.max_file_bytes,
        });
    }
    let data = std::fs::read(path).map_err(read_err)?;
    decode_rgb_bytes(path, &data, limits)
}

/// Decodes a photo already read into memory; `path` names it in errors.
pub fn decode_rgb_bytes(
    path: &Path,
    data: &[u8],
    limits: &DecodeLimits,
) -> Result<image::RgbImage, DecodeError> {
    if data.is_empty() {
        return Err(DecodeError::Empty { path: path.to_path_buf() });
    }
    if data.len() as u64 > limits.max_file_bytes {
        return Err(DecodeError::FileTooLarge {
            path: path.to_path_buf(),
            bytes: data.len() as u64,
            limit: limits.max_file_bytes,
        });
    }
    let format =
        image::guess_format(data).map_err(|_| DecodeError::UnknownFormat { path: path.to_path_buf() })?;
    let corrupt = |reason: String| DecodeError::Corrupt {
        path: path.to_path_buf(),
        format: format!("{format:?}"),
        reason,
    };
    let check_pixels = |width: u64, height: u64| {
        if width * height > limits.max_pixels {
            Err(DecodeError::TooManyPixels {
                path: path.to_path_buf(),
                width,
                height,
                limit: limits.max_pixels,
            })
        } else {
            Ok(())
        }
    };
    if format == image::ImageFormat::Jpeg {
        let mut decompressor = turbojpeg::Decompressor::new().map_err(|e| corrupt(e.to_string()))?;
        let header = decompressor.read_header(data).map_err(|e| corrupt(e.to_string()))?;
        check_pixels(header.width as u64, header.height as u64)?;
        // Progressive files with thousands of scans cost minutes to decode: refuse them.
        decompressor.set_scan_limit(500).map_err(|e| corrupt(e.to_string()))?;
        let mut image = turbojpeg::Image {
            pixels: vec![0u8; header.width * header.height * 3],
            width: header.width,
            pitch: header.width * 3,
            height: header.height,
            format: turbojpeg::PixelFormat::RGB,
        };
        // Corrupt or truncated data is an error (as in Pillow), not a grey-filled photo.
        match decompressor.decompress(data, image.as_deref_mut()) {
            Ok(()) => {
                return image::RgbImage::from_raw(header.width as u32, header.height as u32, image.pixels)
                    .ok_or_else(|| corrupt("decoder returned a short buffer".into()));
            }
            // CMYK/YCCK JPEGs: TurboJPEG cannot convert them to RGB; the image crate can.
            Err(_)
                if matches!(header.colorspace, turbojpeg::Colorspace::CMYK | turbojpeg::Colorspace::YCCK) => {
            }
            Err(e) => return Err(corrupt(e.to_string())),
        }
    }
    let mut decoder = image::ImageReader::with_format(std::io::Cursor::new(data), format)
        .into_decoder()
        .map_err(|e| corrupt(e.to_string()))?;
    let (width, height) = image::ImageDecoder::dimensions(&decoder);
    check_pixels(width as u64, height as u64)?;
    let mut alloc_limits = image::Limits::default();
    alloc_limits.max_alloc = Some(limits.max_pixels * 8);
    image::ImageDecoder::set_limits(&mut decoder, alloc_limits).map_err(|e| corrupt(e.to_string()))?;
    let decoded = image::DynamicImage::from_decoder(decoder).map_err(|e| corrupt(e.to_string()))?;
    Ok(decoded.into_rgb8())
}
