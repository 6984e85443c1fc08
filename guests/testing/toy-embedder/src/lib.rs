//! `toy-embedder`: a test double for a second face-recognition model, with another facen size
//! (16) than the real ones. It runs no neural network: a face's facen is the mean red, green,
//! blue and grey level of each quadrant of the 112x112 normalized face (top-left, top-right,
//! bottom-left, bottom-right; R, G, B, grey within each), L2-normalized. It is deterministic,
//! and similar faces give similar facens, which is all tests of the host's plumbing need.

use kit::embedder::{AlignmentTemplate, EmbedderInfo, Guest, GuestError, Image};
use kit::types::{Landmarks, Point};

struct ToyEmbedder;

kit::export_embedder!(ToyEmbedder);

const SIZE: u32 = 112;
const FACEN_SIZE: usize = 16;

/// The standard ArcFace 5-point template, in 112x112 coordinates.
fn template() -> AlignmentTemplate {
    let p = |x, y| Point { x, y };
    AlignmentTemplate {
        width: SIZE,
        height: SIZE,
        landmarks: Landmarks {
            left_eye: p(38.2946, 51.6963),
            right_eye: p(73.5318, 51.5014),
            nose: p(56.0252, 71.7366),
            mouth_left: p(41.5493, 92.3655),
            mouth_right: p(70.7299, 92.2041),
        },
    }
}

/// Quadrant means of R, G, B and grey, L2-normalized.
fn facen(face: &Image) -> Vec<f32> {
    let (w, h) = (face.width as usize, face.height as usize);
    let mut sums = [0f64; FACEN_SIZE];
    let mut counts = [0usize; 4];
    for (i, px) in face.rgb.chunks_exact(3).enumerate() {
        let (x, y) = (i % w, i / w);
        let q = usize::from(x >= w / 2) + 2 * usize::from(y >= h / 2);
        let (r, g, b) = (px[0] as f64, px[1] as f64, px[2] as f64);
        let grey = 0.299 * r + 0.587 * g + 0.114 * b;
        for (k, v) in [r, g, b, grey].into_iter().enumerate() {
            sums[4 * q + k] += v;
        }
        counts[q] += 1;
    }
    let means: Vec<f64> = sums.iter().enumerate().map(|(i, s)| s / counts[i / 4].max(1) as f64).collect();
    let norm = means.iter().map(|v| v * v).sum::<f64>().sqrt();
    if norm == 0.0 {
        // An all-black face: the limit of uniform grey faces.
        return vec![0.25; FACEN_SIZE];
    }
    means.iter().map(|v| (v / norm) as f32).collect()
}

impl Guest for ToyEmbedder {
    fn info() -> EmbedderInfo {
        EmbedderInfo {
            name: "toy-embedder".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description:
                "Test double for a face-recognition model: 16-value facens of quadrant colour means, \
                          no neural network"
                    .into(),
            facen_size: FACEN_SIZE as u32,
            template: template(),
        }
    }

    fn embed(faces: Vec<Image>) -> Result<Vec<Vec<f32>>, GuestError> {
        faces
            .iter()
            .enumerate()
            .map(|(i, face)| {
                kit::check_face(i, face, SIZE, SIZE)?;
                Ok(facen(face))
            })
            .collect()
    }
}
