//! Decoding photos into upright RGB with limits checked before anything large is allocated,
//! so a decompression bomb or a forged 60000x60000 header is refused at once.
//!
//! JPEG goes through libjpeg-turbo (TurboJPEG), the decoder behind Pillow, OpenCV and dlib's
//! Python tools: refacen sees the very pixels the reference pipelines see. Other decoders
//! differ by a few levels in ~1% of pixels, enough to flip borderline detections. HEIC/HEIF
//! and AVIF go through libheif (as in Immich and PhotoPrism); other formats use the `image`
//! crate.
//!
//! Photos come out as they are displayed: the EXIF Orientation tag (JPEG, PNG, WebP; TIFF's
//! own tag) is applied, and HEIF's rotation and mirroring (`irot`/`imir`) too, so faces are
//! detected upright and their boxes lie in the frame every viewer shows.

use std::path::{Path, PathBuf};

use image::metadata::Orientation;

use super::heif;
use super::sniff::{self, Content, PhotoFormat, SUPPORTED_FORMATS};

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

/// A decoded photo, upright.
pub struct Photo {
    pub image: image::RgbImage,
    /// The EXIF orientation (1-8) that was applied to turn the stored pixels upright; 1 when
    /// none was needed (HEIF photos come upright from libheif, which applies `irot`/`imir`).
    pub orientation: u8,
    pub format: PhotoFormat,
}

/// The kinds of outcome a file that yields no photo has: one is a skip, four are failures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub enum DecodeCause {
    /// Not a photo at all (a video, a sidecar, folder metadata): skipped, not failed.
    NotAnImage,
    /// An image in a format refacen does not read.
    UnsupportedFormat,
    /// A photo whose data is damaged (or empty, or not what its name says).
    Corrupt,
    /// The file could not be read.
    Unreadable,
    /// Over the file-size or pixel limit.
    TooLarge,
}

impl DecodeCause {
    /// The cause as summaries count it.
    pub fn as_str(self) -> &'static str {
        match self {
            DecodeCause::NotAnImage => "not an image",
            DecodeCause::UnsupportedFormat => "unsupported format",
            DecodeCause::Corrupt => "corrupt image",
            DecodeCause::Unreadable => "unreadable file",
            DecodeCause::TooLarge => "too large",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("{path}: cannot read: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: not an image ({what}); skipped")]
    NotAnImage { path: PathBuf, what: &'static str },
    #[error(
        "{path}: {format} is not a supported format (refacen reads {SUPPORTED_FORMATS}); convert it to one of them"
    )]
    UnsupportedFormat { path: PathBuf, format: &'static str },
    #[error("{path}: empty file")]
    Empty { path: PathBuf },
    #[error(
        "{path}: named as a {claimed} photo, but its content is no image format (damaged or not a photo)"
    )]
    NotWhatItsNameSays { path: PathBuf, claimed: &'static str },
    #[error("{path}: file of {bytes} bytes exceeds the limit of {limit} bytes")]
    FileTooLarge { path: PathBuf, bytes: u64, limit: u64 },
    #[error("{path}: {width}x{height} pixels exceed the limit of {limit} pixels")]
    TooManyPixels { path: PathBuf, width: u64, height: u64, limit: u64 },
    #[error("{path}: cannot decode {format}: {reason}")]
    Corrupt { path: PathBuf, format: &'static str, reason: String },
}

impl DecodeError {
    pub fn cause(&self) -> DecodeCause {
        match self {
            DecodeError::Read { .. } => DecodeCause::Unreadable,
            DecodeError::NotAnImage { .. } => DecodeCause::NotAnImage,
            DecodeError::UnsupportedFormat { .. } => DecodeCause::UnsupportedFormat,
            DecodeError::Empty { .. }
            | DecodeError::NotWhatItsNameSays { .. }
            | DecodeError::Corrupt { .. } => DecodeCause::Corrupt,
            DecodeError::FileTooLarge { .. } | DecodeError::TooManyPixels { .. } => DecodeCause::TooLarge,
        }
    }

    /// Whether the file is to be skipped rather than counted as a failed photo.
    pub fn is_skip(&self) -> bool {
        self.cause() == DecodeCause::NotAnImage
    }
}

/// Decodes the photo at `path` to upright 8-bit RGB (grey replicated, alpha dropped), as
/// Pillow's `ImageOps.exif_transpose(Image.open(p)).convert('RGB')` does.
pub fn decode_rgb(path: &Path, limits: &DecodeLimits) -> Result<image::RgbImage, DecodeError> {
    decode_photo(path, limits).map(|photo| photo.image)
}

/// [`decode_rgb`], with the orientation applied and the format.
pub fn decode_photo(path: &Path, limits: &DecodeLimits) -> Result<Photo, DecodeError> {
    if let Some(what) = path.file_name().and_then(sniff::junk_name) {
        return Err(DecodeError::NotAnImage { path: path.to_path_buf(), what });
    }
    let read_err = |source| DecodeError::Read { path: path.to_path_buf(), source };
    let bytes = std::fs::metadata(path).map_err(read_err)?.len();
    if bytes > limits.max_file_bytes {
        return Err(DecodeError::FileTooLarge {
            path: path.to_path_buf(),
            bytes,
            limit: limits.max_file_bytes,
        });
    }
    let data = std::fs::read(path).map_err(read_err)?;
    decode_photo_bytes(path, &data, limits)
}

/// Decodes a photo already read into memory; `path` names it in errors.
pub fn decode_rgb_bytes(
    path: &Path,
    data: &[u8],
    limits: &DecodeLimits,
) -> Result<image::RgbImage, DecodeError> {
    decode_photo_bytes(path, data, limits).map(|photo| photo.image)
}

/// [`decode_rgb_bytes`], with the orientation applied and the format.
pub fn decode_photo_bytes(path: &Path, data: &[u8], limits: &DecodeLimits) -> Result<Photo, DecodeError> {
    let claimed = sniff::claimed_format(path);
    if data.is_empty() {
        return Err(match claimed {
            Some(_) => DecodeError::Empty { path: path.to_path_buf() },
            None => DecodeError::NotAnImage { path: path.to_path_buf(), what: "an empty file" },
        });
    }
    if data.len() as u64 > limits.max_file_bytes {
        return Err(DecodeError::FileTooLarge {
            path: path.to_path_buf(),
            bytes: data.len() as u64,
            limit: limits.max_file_bytes,
        });
    }
    let format = match sniff::sniff(data) {
        Content::Photo(format) => format,
        Content::Unsupported(format) => {
            return Err(DecodeError::UnsupportedFormat { path: path.to_path_buf(), format });
        }
        Content::NotAnImage(what) => return Err(DecodeError::NotAnImage { path: path.to_path_buf(), what }),
        // A file named like a photo whose content is no image is a damaged photo, not junk.
        Content::Unknown => {
            return Err(match claimed {
                Some(claimed) => DecodeError::NotWhatItsNameSays { path: path.to_path_buf(), claimed },
                None => DecodeError::NotAnImage { path: path.to_path_buf(), what: "no image signature" },
            });
        }
    };
    let corrupt =
        |reason: String| DecodeError::Corrupt { path: path.to_path_buf(), format: format.name(), reason };
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
    let (image, orientation) = match format {
        PhotoFormat::Heif | PhotoFormat::Avif => {
            let image = heif::decode(data, check_pixels).map_err(|e| match e {
                heif::HeifError::Limit(e) => e,
                heif::HeifError::Unsupported(reason) => DecodeError::UnsupportedFormat {
                    path: path.to_path_buf(),
                    format: unsupported_heif(format, &reason),
                },
                heif::HeifError::Decode(reason) => corrupt(reason),
            })?;
            // libheif has applied the container's rotation and mirroring already.
            return Ok(Photo { image, orientation: 1, format });
        }
        PhotoFormat::Jpeg => match decode_jpeg_turbo(data, &check_pixels, &corrupt)? {
            Some(image) => (image, jpeg_orientation(data)),
            None => decode_with_image_crate(data, image::ImageFormat::Jpeg, limits, &check_pixels, &corrupt)?,
        },
        other => {
            let format = match other {
                PhotoFormat::Png => image::ImageFormat::Png,
                PhotoFormat::Gif => image::ImageFormat::Gif,
                PhotoFormat::Bmp => image::ImageFormat::Bmp,
                PhotoFormat::WebP => image::ImageFormat::WebP,
                _ => image::ImageFormat::Tiff,
            };
            decode_with_image_crate(data, format, limits, &check_pixels, &corrupt)?
        }
    };
    let image = upright(image, orientation);
    Ok(Photo { image, orientation: orientation.to_exif(), format })
}

/// libheif answers "unsupported" when it lacks the codec for this file (e.g. no AV1 decoder).
fn unsupported_heif(format: PhotoFormat, _reason: &str) -> &'static str {
    match format {
        PhotoFormat::Avif => "AVIF (this libheif has no AV1 decoder)",
        _ => "HEIC (this libheif has no HEVC decoder, or the file uses a codec it lacks)",
    }
}

/// Decodes a JPEG with TurboJPEG; `None` for CMYK/YCCK files, which it cannot turn into RGB.
fn decode_jpeg_turbo(
    data: &[u8],
    check_pixels: &dyn Fn(u64, u64) -> Result<(), DecodeError>,
    corrupt: &dyn Fn(String) -> DecodeError,
) -> Result<Option<image::RgbImage>, DecodeError> {
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
        Ok(()) => image::RgbImage::from_raw(header.width as u32, header.height as u32, image.pixels)
            .map(Some)
            .ok_or_else(|| corrupt("decoder returned a short buffer".into())),
        Err(_) if matches!(header.colorspace, turbojpeg::Colorspace::CMYK | turbojpeg::Colorspace::YCCK) => {
            Ok(None)
        }
        Err(e) => Err(corrupt(e.to_string())),
    }
}

fn decode_with_image_crate(
    data: &[u8],
    format: image::ImageFormat,
    limits: &DecodeLimits,
    check_pixels: &dyn Fn(u64, u64) -> Result<(), DecodeError>,
    corrupt: &dyn Fn(String) -> DecodeError,
) -> Result<(image::RgbImage, Orientation), DecodeError> {
    use image::ImageDecoder;
    let mut decoder = image::ImageReader::with_format(std::io::Cursor::new(data), format)
        .into_decoder()
        .map_err(|e| corrupt(e.to_string()))?;
    let (width, height) = decoder.dimensions();
    check_pixels(width as u64, height as u64)?;
    let mut alloc_limits = image::Limits::default();
    alloc_limits.max_alloc = Some(limits.max_pixels * 8);
    decoder.set_limits(alloc_limits).map_err(|e| corrupt(e.to_string()))?;
    // Damaged metadata does not make the pixels unusable: shown as stored, as viewers do.
    let orientation = decoder.orientation().unwrap_or(Orientation::NoTransforms);
    let decoded = image::DynamicImage::from_decoder(decoder).map_err(|e| corrupt(e.to_string()))?;
    Ok((decoded.into_rgb8(), orientation))
}

/// The Orientation tag of a JPEG's EXIF segment (APP1 `Exif\0\0`), read from the markers
/// before the first scan.
fn jpeg_orientation(data: &[u8]) -> Orientation {
    let mut at = 2; // after SOI
    while at + 4 <= data.len() && data[at] == 0xFF {
        let marker = data[at + 1];
        // Fill bytes, and markers without a length.
        if marker == 0xFF {
            at += 1;
            continue;
        }
        if marker == 0xDA || marker == 0xD9 {
            break;
        }
        let length = u16::from_be_bytes([data[at + 2], data[at + 3]]) as usize;
        let segment = data.get(at + 4..at + 2 + length);
        if marker == 0xE1
            && let Some(exif) = segment.and_then(|s| s.strip_prefix(b"Exif\0\0"))
            && let Some(orientation) = Orientation::from_exif_chunk(exif)
        {
            return orientation;
        }
        at += 2 + length;
    }
    Orientation::NoTransforms
}

fn upright(image: image::RgbImage, orientation: Orientation) -> image::RgbImage {
    if orientation == Orientation::NoTransforms {
        return image;
    }
    let mut image = image::DynamicImage::ImageRgb8(image);
    image.apply_orientation(orientation);
    image.into_rgb8()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A JPEG with an APP1 EXIF segment holding only the Orientation tag.
    fn with_orientation(jpeg: &[u8], orientation: u16) -> Vec<u8> {
        let tiff = exif_orientation(orientation);
        let mut app1 = vec![0xFF, 0xE1];
        app1.extend_from_slice(&((tiff.len() + 8) as u16).to_be_bytes());
        app1.extend_from_slice(b"Exif\0\0");
        app1.extend_from_slice(&tiff);
        [&jpeg[..2], &app1, &jpeg[2..]].concat()
    }

    /// The TIFF structure of an EXIF block holding only the Orientation tag, big-endian.
    fn exif_orientation(orientation: u16) -> Vec<u8> {
        let mut tiff = b"MM\0\x2a\0\0\0\x08\0\x01".to_vec();
        tiff.extend_from_slice(&[0x01, 0x12, 0, 3, 0, 0, 0, 1]);
        tiff.extend_from_slice(&orientation.to_be_bytes());
        tiff.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
        tiff
    }

    #[test]
    fn a_png_exif_chunk_turns_the_pixels_upright() {
        use image::ImageEncoder;
        // PNG's chunk checksum is gzip's CRC-32.
        let crc32 = |bytes: &[u8]| {
            let mut crc = flate2::Crc::new();
            crc.update(bytes);
            crc.sum()
        };
        let mut pixels = image::RgbImage::new(4, 2);
        pixels.put_pixel(0, 0, image::Rgb([255, 0, 0]));
        let mut png = Vec::new();
        image::codecs::png::PngEncoder::new(&mut png)
            .write_image(pixels.as_raw(), 4, 2, image::ExtendedColorType::Rgb8)
            .unwrap();
        let exif = exif_orientation(6);
        let mut chunk = (exif.len() as u32).to_be_bytes().to_vec();
        chunk.extend_from_slice(b"eXIf");
        chunk.extend_from_slice(&exif);
        chunk.extend_from_slice(&crc32(&chunk[4..]).to_be_bytes());
        // After the 8-byte signature and the 25-byte IHDR chunk.
        let png = [&png[..33], &chunk, &png[33..]].concat();
        let photo = decode_photo_bytes(Path::new("p.png"), &png, &DecodeLimits::default()).unwrap();
        assert_eq!(photo.orientation, 6);
        assert_eq!(photo.image, upright(pixels, Orientation::Rotate90));
    }

    #[test]
    fn every_exif_orientation_turns_the_pixels_upright() {
        let mut pixels = image::RgbImage::new(4, 2);
        pixels.put_pixel(0, 0, image::Rgb([255, 0, 0]));
        let mut jpeg = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 100).encode_image(&pixels).unwrap();
        let plain = decode_rgb_bytes(Path::new("p.jpg"), &jpeg, &DecodeLimits::default()).unwrap();
        for value in 1..=8u16 {
            let photo = decode_photo_bytes(
                Path::new("p.jpg"),
                &with_orientation(&jpeg, value),
                &DecodeLimits::default(),
            )
            .unwrap();
            assert_eq!(photo.orientation, value as u8);
            let expected = upright(plain.clone(), Orientation::from_exif(value as u8).unwrap());
            assert_eq!(photo.image, expected, "orientation {value}");
            let swapped = value >= 5;
            assert_eq!(photo.image.dimensions(), if swapped { (2, 4) } else { (4, 2) });
        }
    }
}
