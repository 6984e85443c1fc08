//! Synthetic Uploads for long runs and benchmarks: many distinct photos made from the sample
//! photos, each still showing their faces. Shared by `tests/bench/{gpu,soak}.rs` and the
//! short soak in `tests/e2e/long_runs.rs`.

use std::path::Path;

use image::RgbImage;
use image::imageops::{self, FilterType};
use rayon::prelude::*;

/// Scales `image` to about `pixels` pixels, keeping its aspect ratio.
pub fn to_area(image: &RgbImage, pixels: f64) -> RgbImage {
    let scale = (pixels / (image.width() as f64 * image.height() as f64)).sqrt();
    let (w, h) =
        ((image.width() as f64 * scale).round() as u32, (image.height() as f64 * scale).round() as u32);
    imageops::resize(image, w.max(1), h.max(1), FilterType::Triangle)
}

/// Photo `i` of a synthetic Uploads of about `megapixels`: a sample photo shifted by a few
/// pixels, then scaled, scaled and mirrored, tiled 2x2 with three others, or scaled to 3/4 of
/// the area and mirrored.
pub fn synthetic_photo(samples: &[RgbImage], i: usize, megapixels: f64) -> RgbImage {
    let pixels = megapixels * 1e6;
    let source = &samples[i % samples.len()];
    let shift = ((i / (samples.len() * 4)) % 7) as u32 * 3;
    let shifted =
        imageops::crop_imm(source, shift, shift, source.width() - shift, source.height() - shift).to_image();
    match (i / samples.len()) % 4 {
        0 => to_area(&shifted, pixels),
        1 => imageops::flip_horizontal(&to_area(&shifted, pixels)),
        2 => {
            let half = (pixels.sqrt() / 2.0).round().max(1.0) as u32;
            let mut tiled = RgbImage::new(2 * half, 2 * half);
            for k in 0..4 {
                let tile = if k == 0 { &shifted } else { &samples[(i + k) % samples.len()] };
                let tile = imageops::resize(tile, half, half, FilterType::Triangle);
                imageops::replace(
                    &mut tiled,
                    &tile,
                    (k as i64 % 2) * half as i64,
                    (k as i64 / 2) * half as i64,
                );
            }
            tiled
        }
        _ => imageops::flip_horizontal(&to_area(&shifted, 0.75 * pixels)),
    }
}

/// Writes photos `0..count` as JPEGs into `dir`, 100 per subdirectory, in parallel; returns
/// the bytes written.
pub fn write_uploads(samples: &[RgbImage], dir: &Path, count: usize, megapixels: f64) -> u64 {
    (0..count)
        .into_par_iter()
        .map(|i| {
            let photo = synthetic_photo(samples, i, megapixels);
            let sub = dir.join(format!("{:03}", i / 100));
            std::fs::create_dir_all(&sub).unwrap();
            let path = sub.join(format!("photo-{i:05}.jpg"));
            let mut file = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
            image::codecs::jpeg::JpegEncoder::new_with_quality(&mut file, 90).encode_image(&photo).unwrap();
            drop(file);
            std::fs::metadata(&path).unwrap().len()
        })
        .sum()
}
