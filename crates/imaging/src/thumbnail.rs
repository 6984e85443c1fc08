//! Face thumbnails (the face with some context, as FindFace shows them) and the encoders for
//! what the face store keeps: normalized faces as PNG (lossless), thumbnails as JPEG.

use image::RgbImage;
use image::imageops::FilterType;

/// Why a thumbnail cannot be made or encoded.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum ThumbnailError {
    #[error("face box {bbox:?} is degenerate (not finite, or without positive width and height)")]
    DegenerateBox { bbox: [f32; 4] },
    #[error("margin {margin} is not a finite number >= 0")]
    BadMargin { margin: f32 },
    #[error("thumbnail height must be at least 1 pixel")]
    ZeroHeight,
    #[error("face box {bbox:?} (with its margin) does not overlap the {width}x{height} image")]
    OutsideImage { bbox: [f32; 4], width: u32, height: u32 },
    #[error("cannot encode a {width}x{height} image as {format}: {reason}")]
    Encode { format: &'static str, width: u32, height: u32, reason: String },
}

/// The pixel rectangle `[x, y, width, height]` a thumbnail shows: the face box `[x1, y1, x2, y2]`
/// grown by `margin` times its width (left and right) and height (top and bottom), rounded
/// outwards to whole pixels and clipped to the image.
pub fn thumbnail_region(
    image_width: u32,
    image_height: u32,
    bbox: [f32; 4],
    margin: f32,
) -> Result<[u32; 4], ThumbnailError> {
    let [x1, y1, x2, y2] = bbox;
    if !(bbox.iter().all(|v| v.is_finite()) && x2 > x1 && y2 > y1) {
        return Err(ThumbnailError::DegenerateBox { bbox });
    }
    if !(margin.is_finite() && margin >= 0.0) {
        return Err(ThumbnailError::BadMargin { margin });
    }
    let (mx, my) = (f64::from(x2 - x1) * f64::from(margin), f64::from(y2 - y1) * f64::from(margin));
    let left = (f64::from(x1) - mx).floor().max(0.0);
    let top = (f64::from(y1) - my).floor().max(0.0);
    let right = (f64::from(x2) + mx).ceil().min(f64::from(image_width));
    let bottom = (f64::from(y2) + my).ceil().min(f64::from(image_height));
    if !(right > left && bottom > top) {
        return Err(ThumbnailError::OutsideImage { bbox, width: image_width, height: image_height });
    }
    Ok([left as u32, top as u32, (right - left) as u32, (bottom - top) as u32])
}

/// The face box `[x1, y1, x2, y2]` grown by `margin` (a fraction of the box's width and height,
/// on every side; e.g. 0.5), clipped to the image, scaled to `height` pixels high keeping its
/// aspect ratio (Catmull-Rom, which filters over the whole footprint when shrinking).
pub fn thumbnail(
    image: &RgbImage,
    bbox: [f32; 4],
    margin: f32,
    height: u32,
) -> Result<RgbImage, ThumbnailError> {
    if height == 0 {
        return Err(ThumbnailError::ZeroHeight);
    }
    let [x, y, w, h] = thumbnail_region(image.width(), image.height(), bbox, margin)?;
    let crop = image::imageops::crop_imm(image, x, y, w, h);
    let out_w = ((f64::from(w) * f64::from(height) / f64::from(h)).round() as u32).max(1);
    if (out_w, height) == (w, h) {
        return Ok(crop.to_image());
    }
    Ok(image::imageops::resize(&*crop, out_w, height, FilterType::CatmullRom))
}

/// Encodes as baseline JPEG with libjpeg-turbo, 4:2:0 chroma subsampling (Pillow's default);
/// `quality` is clamped to 1..=100.
pub fn encode_jpeg(image: &RgbImage, quality: u8) -> Result<Vec<u8>, ThumbnailError> {
    let err = |reason: String| ThumbnailError::Encode {
        format: "JPEG",
        width: image.width(),
        height: image.height(),
        reason,
    };
    let mut compressor = turbojpeg::Compressor::new().map_err(|e| err(e.to_string()))?;
    compressor.set_quality(i32::from(quality.clamp(1, 100))).map_err(|e| err(e.to_string()))?;
    compressor.set_subsamp(turbojpeg::Subsamp::Sub2x2).map_err(|e| err(e.to_string()))?;
    let (width, height) = (image.width() as usize, image.height() as usize);
    let pixels = turbojpeg::Image {
        pixels: image.as_raw().as_slice(),
        width,
        pitch: width * 3,
        height,
        format: turbojpeg::PixelFormat::RGB,
    };
    compressor.compress_to_vec(pixels).map_err(|e| err(e.to_string()))
}

/// Encodes as 8-bit RGB PNG (lossless).
pub fn encode_png(image: &RgbImage) -> Result<Vec<u8>, ThumbnailError> {
    let mut out = Vec::new();
    image::ImageEncoder::write_image(
        image::codecs::png::PngEncoder::new(&mut out),
        image.as_raw(),
        image.width(),
        image.height(),
        image::ExtendedColorType::Rgb8,
    )
    .map_err(|e| ThumbnailError::Encode {
        format: "PNG",
        width: image.width(),
        height: image.height(),
        reason: e.to_string(),
    })?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gradient(w: u32, h: u32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| image::Rgb([(x % 256) as u8, (y % 256) as u8, ((x + y) % 256) as u8]))
    }

    #[test]
    fn size_and_aspect() {
        let image = gradient(1000, 800);
        // 200x300 box, margin 0.5: 400x600 region, scaled to 160 high: 107 wide.
        let thumb = thumbnail(&image, [300.0, 200.0, 500.0, 500.0], 0.5, 160).unwrap();
        assert_eq!(thumb.dimensions(), (107, 160));
        assert_eq!(thumbnail_region(1000, 800, [300.0, 200.0, 500.0, 500.0], 0.5), Ok([200, 50, 400, 600]));
        // Margin 0: the box itself; fractional coordinates round outwards.
        assert_eq!(thumbnail_region(1000, 800, [10.4, 20.6, 50.2, 60.0], 0.0), Ok([10, 20, 41, 40]));
        // Same size: an exact crop.
        let thumb = thumbnail(&image, [100.0, 100.0, 200.0, 200.0], 0.0, 100).unwrap();
        assert_eq!(thumb, image::imageops::crop_imm(&image, 100, 100, 100, 100).to_image());
    }

    #[test]
    fn box_partly_outside_the_image_is_clipped() {
        let image = gradient(640, 480);
        // Grown box [-100, 300, 200, 600] clips to [0, 300, 200, 480]: 200x180.
        assert_eq!(thumbnail_region(640, 480, [0.0, 400.0, 100.0, 500.0], 1.0), Ok([0, 300, 200, 180]));
        let thumb = thumbnail(&image, [0.0, 400.0, 100.0, 500.0], 1.0, 90).unwrap();
        assert_eq!(thumb.dimensions(), (100, 90));
        // Top-left pixel of the thumbnail shows the image's left edge, rows near 300.
        let p = thumb.get_pixel(0, 0).0;
        assert!(p[0] <= 2 && (p[1] as i32 - 300 % 256).abs() <= 2, "{p:?}");
        assert!(matches!(
            thumbnail(&image, [700.0, 10.0, 800.0, 110.0], 0.0, 90),
            Err(ThumbnailError::OutsideImage { .. })
        ));
    }

    #[test]
    fn degenerate_inputs_are_errors() {
        let image = gradient(100, 100);
        for bbox in [[10.0, 10.0, 10.0, 50.0], [10.0, 50.0, 40.0, 20.0], [f32::NAN, 0.0, 10.0, 10.0]] {
            assert!(
                matches!(thumbnail(&image, bbox, 0.5, 64), Err(ThumbnailError::DegenerateBox { .. })),
                "{bbox:?}"
            );
        }
        assert!(matches!(
            thumbnail(&image, [10.0, 10.0, 50.0, 50.0], f32::INFINITY, 64),
            Err(ThumbnailError::BadMargin { .. })
        ));
        assert_eq!(thumbnail(&image, [10.0, 10.0, 50.0, 50.0], 0.5, 0), Err(ThumbnailError::ZeroHeight));
    }

    #[test]
    fn encoders_round_trip() {
        let image = gradient(120, 90);
        let png = encode_png(&image).unwrap();
        assert_eq!(image::load_from_memory(&png).unwrap().into_rgb8(), image);
        let jpeg = encode_jpeg(&image, 90).unwrap();
        assert_eq!(&jpeg[..3], &[0xFF, 0xD8, 0xFF]);
        let decoded = image::load_from_memory(&jpeg).unwrap().into_rgb8();
        assert_eq!(decoded.dimensions(), (120, 90));
        let mean: f64 =
            decoded.as_raw().iter().zip(image.as_raw()).map(|(a, b)| f64::from(a.abs_diff(*b))).sum::<f64>()
                / image.as_raw().len() as f64;
        assert!(mean < 3.0, "mean abs diff {mean}");
        assert!(encode_jpeg(&image, 0).is_ok());
    }
}
