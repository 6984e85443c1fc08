//! dlib's CNN face detector (`mmod_human_face_detector.dat`) as an ONNX graph.
//!
//! The network type is the `net_type` of dlib's tools/python/src/cnn_face_detector.cpp (and
//! examples/dnn_mmod_face_detection_ex.cpp):
//!
//! ```text
//! loss_mmod<con<1,9,9,1,1, rcon5<rcon5<rcon5<downsampler<input_rgb_image_pyramid<pyramid_down<6>>>>>>>>
//! downsampler = relu<affine<con5d<32, relu<affine<con5d<32, relu<affine<con5d<16, ·>>>>>>>>>
//! rcon5<N>    = relu<affine<con5<45, ·>>>
//! ```
//!
//! with `con5d<N>` a 5x5 stride-2 convolution (unpadded, dlib's default for stride 2) and `con5`
//! a 5x5 stride-1 one (padded by 2). The graph is the convolutional part only: its input
//! `image` is the whole tiled pyramid `[1, 3, H, W]`, already normalized as dlib's
//! `input_rgb_image_pyramid::to_tensor` does (`(pixel - mean[c]) / 256`, then the pyramid
//! levels resampled from it), since building the pyramid and decoding the detections are the
//! guest's work (guests/dlib). Its output `scores` is `[1, windows, h, w]`, one score map per
//! detector window. The values decoding needs are checked here against what the guest
//! assumes (`EXPECTED_*`), so a different file fails the conversion instead of decoding wrong.

use anyhow::{Result, ensure};
use onnx_proto::ModelProto;
use onnx_proto::build::Dim;

use super::dlib::{Details, InputSpec, Layer, LossSpec, MmodLoss, Network, PyramidInput};
use super::onnx_graph::GraphBuilder;
use super::resnet::{affine, conv};

/// The graph's input: the normalized tiled pyramid, `[1, 3, H, W]`.
pub const INPUT: &str = "image";
/// The graph's output: `[1, windows, h, w]` detection scores.
pub const OUTPUT: &str = "scores";

/// What the `dlib` guest's decoding assumes (guests/dlib/src/mmod.rs).
const EXPECTED_MEAN: [f32; 3] = [122.782, 117.001, 104.298];
const EXPECTED_PADDING: (usize, usize) = (10, 11);
const EXPECTED_WINDOWS: &[(usize, usize)] = &[(80, 80)];
const EXPECTED_NMS: (f64, f64) = (0.3382761351109955, 1.0);

/// The C++ type of `mmod_human_face_detector.dat`, outermost layer first.
pub fn human_face_detector() -> (LossSpec, Vec<Layer>, InputSpec) {
    let con = |filters, k: usize, s: usize| Layer::Con { filters, size: [k, k], stride: [s, s] };
    let mut layers = vec![con(1, 9, 1)];
    for _ in 0..3 {
        layers.extend([Layer::Relu, Layer::Affine, con(45, 5, 1)]);
    }
    for filters in [32, 32, 16] {
        layers.extend([Layer::Relu, Layer::Affine, con(filters, 5, 2)]);
    }
    (LossSpec::Mmod, layers, InputSpec::RgbImagePyramid)
}

/// Checks that `loss` and `input` are what the guest decodes with.
pub fn check_decoding(loss: &MmodLoss, input: &PyramidInput) -> Result<()> {
    ensure!(
        input.mean == EXPECTED_MEAN,
        "pyramid input means {:?}, the guest assumes {EXPECTED_MEAN:?}",
        input.mean
    );
    ensure!(
        (input.padding, input.outer_padding) == EXPECTED_PADDING,
        "pyramid paddings {}/{}, the guest assumes {EXPECTED_PADDING:?}",
        input.padding,
        input.outer_padding
    );
    let windows: Vec<(usize, usize)> = loss.windows.iter().map(|(w, h, _)| (*w, *h)).collect();
    ensure!(
        windows == EXPECTED_WINDOWS,
        "detector windows {windows:?}, the guest assumes {EXPECTED_WINDOWS:?}"
    );
    ensure!(
        (loss.nms_iou, loss.nms_covered) == EXPECTED_NMS,
        "non-max suppression thresholds {}/{}, the guest assumes {EXPECTED_NMS:?}",
        loss.nms_iou,
        loss.nms_covered
    );
    ensure!(!loss.bounding_box_regression, "bounding box regression is on; the guest does not apply it");
    Ok(())
}

/// Builds the ONNX graph of the detector's convolutions.
pub fn build_model(network: &Network, doc: &str) -> Result<ModelProto> {
    let mut b = GraphBuilder::default();
    let mut x = INPUT.to_string();
    for (i, details) in network.layers.iter().enumerate().rev() {
        let name = |what: &str| format!("l{i:02}/{what}");
        x = match details {
            Details::Con { .. } => conv(&mut b, &name("con"), &x, details)?,
            Details::Affine { gamma, beta } => affine(&mut b, &name("affine"), &x, gamma, beta),
            Details::Disabled => x,
            Details::Relu => b.op("Relu", &name("relu"), &[&x], vec![]),
            other => anyhow::bail!("layer {i}: {other:?} is not part of the MMOD detector type"),
        };
    }
    let dims =
        |c: usize| [Dim::Fixed(1), Dim::Fixed(c), Dim::Symbolic("H".into()), Dim::Symbolic("W".into())];
    let windows = match &network.loss {
        super::dlib::Loss::Mmod(loss) => loss.windows.len(),
        super::dlib::Loss::Metric(_) => 1,
    };
    let mut output_dims = dims(windows);
    output_dims[2] = Dim::Symbolic("h".into());
    output_dims[3] = Dim::Symbolic("w".into());
    b.finish("mmod_human_face_detector", (INPUT, &dims(3)), (OUTPUT, &output_dims), &x, doc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_network_type_has_dlibs_layers() {
        let (_, layers, _) = human_face_detector();
        assert_eq!(layers.len(), 19);
        assert_eq!(layers.iter().filter(|l| matches!(l, Layer::Con { .. })).count(), 7);
        assert_eq!(layers.last(), Some(&Layer::Con { filters: 16, size: [5, 5], stride: [2, 2] }));
    }
}
