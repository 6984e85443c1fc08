//! `dlib-resnet-128`: dlib's face-recognition ResNet (`dlib_face_recognition_resnet_model_v1`,
//! CC0, from PyPI face_recognition_models 0.3.0) as a refacen embedder.
//!
//! The network is converted from dlib's serialization to ONNX by `cargo xtask weights`
//! (xtask/src/convert) and embedded; the host runs it through wasi-nn. The graph takes
//! float32 pixel values 0..255, `[N, 3, 150, 150]` planar RGB, and does dlib's input
//! normalization itself (subtracting the per-channel means, dividing by 256), so this guest
//! only lays the chips out: all faces of a call go in one batch, one wasi-nn compute.
//!
//! Facens are returned exactly as dlib's `compute_face_descriptor` returns them (not unit
//! length, norms around 1.4); two faces are the same person when their L2 distance is below
//! 0.6.

use kit::embedder::{EmbedderInfo, Guest, GuestError, Image};
use kit::{EmbedderNetwork, Tensor};

const SIZE: u32 = 150;
const FACEN_SIZE: usize = 128;

/// The converted graph (see build.rs and xtask/src/convert/resnet.rs).
const NETWORK: EmbedderNetwork = EmbedderNetwork {
    onnx: include_bytes!("../weights/dlib_resnet_128.onnx"),
    input_name: "image",
    face_size_px: SIZE,
    facen_size: FACEN_SIZE,
};

struct DlibResnet;

kit::export_embedder!(DlibResnet);

/// The batch `[N, 3, 150, 150]`: each face's interleaved RGB bytes as planar float values.
fn batch(faces: &[Image]) -> Tensor {
    let plane = (SIZE * SIZE) as usize;
    let mut data = vec![0f32; faces.len() * 3 * plane];
    for (face, out) in faces.iter().zip(data.chunks_exact_mut(3 * plane)) {
        let (r, rest) = out.split_at_mut(plane);
        let (g, b) = rest.split_at_mut(plane);
        for (i, px) in face.rgb.chunks_exact(3).enumerate() {
            r[i] = f32::from(px[0]);
            g[i] = f32::from(px[1]);
            b[i] = f32::from(px[2]);
        }
    }
    Tensor::new(vec![faces.len(), 3, SIZE as usize, SIZE as usize], data)
}

impl Guest for DlibResnet {
    fn info() -> EmbedderInfo {
        EmbedderInfo {
            name: "dlib-resnet-128".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "dlib's face-recognition ResNet (dlib_face_recognition_resnet_model_v1, CC0, \
                          from PyPI face_recognition_models 0.3.0) on 150x150 dlib face chips; \
                          128-value descriptors exactly as dlib returns them (not unit length): \
                          same person when the L2 distance is below 0.6"
                .into(),
            facen_size: FACEN_SIZE as u32,
            template: kit::canonical_template(),
        }
    }

    fn embed(faces: Vec<Image>) -> Result<Vec<Vec<f32>>, GuestError> {
        let facens = NETWORK.embed(faces, batch)?;
        Ok(facens.data.chunks_exact(FACEN_SIZE).map(<[f32]>::to_vec).collect())
    }
}
