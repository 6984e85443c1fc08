//! Weight converters: turn fetched weight files into the ONNX graphs guests embed.
//!
//! Run by `cargo xtask weights` for each `[[convert]]` table of guests/weights.toml. A
//! converter is a pure function of its input file, so its output is pinned by sha256 like a
//! download: the conversion runs only when the output is missing or differs from the pin.
//!
//! - `dlib.rs`: reads dlib's DNN serialization (`.dat`), given the network's C++ type;
//! - `resnet.rs`: dlib's face-recognition ResNet type and its ONNX graph.

pub mod dlib;
pub mod resnet;

use anyhow::{Context, Result, bail};
use prost::Message;

/// The converters, by the name `[[convert]]` tables give.
pub const CONVERTERS: &[&str] = &["dlib-face-recognition-resnet-v1"];

/// Runs converter `name` on the bytes of its input file and returns the output file's bytes.
/// `input_name` is the input's file name, for messages and provenance.
pub fn convert(name: &str, input: &[u8], input_name: &str) -> Result<Vec<u8>> {
    match name {
        "dlib-face-recognition-resnet-v1" => dlib_face_recognition_resnet_v1(input, input_name),
        _ => bail!("unknown converter `{name}`; known: {}", CONVERTERS.join(", ")),
    }
}

fn dlib_face_recognition_resnet_v1(input: &[u8], input_name: &str) -> Result<Vec<u8>> {
    let (loss, layers, spec) = resnet::face_recognition_v1();
    let network = dlib::read_network(input, &loss, &layers, &spec)
        .with_context(|| format!("{input_name} is not dlib's face_recognition_model_v1 network"))?;
    let doc = format!(
        "dlib's face-recognition ResNet ({input_name}, CC0, from PyPI face_recognition_models 0.3.0) \
         converted by refacen's `cargo xtask weights`. Input `{}`: float32 RGB pixel values 0..255, \
         [N, 3, {}, {}], a face chip as dlib's get_face_chip_details(size 150, padding 0.25) cuts it; \
         the graph subtracts the per-channel means ({}, {}, {}) and divides by 256 as dlib does. \
         Output `{}`: [N, 128] descriptors exactly as dlib returns them (not unit length; same person \
         when the L2 distance is below 0.6). dlib's metric loss: margin {}, distance threshold {}.",
        resnet::INPUT,
        network.input.rows,
        network.input.cols,
        network.input.mean[0],
        network.input.mean[1],
        network.input.mean[2],
        resnet::OUTPUT,
        network.loss.margin,
        network.loss.distance_threshold,
    );
    let model = resnet::build_model(&network, &doc)?;
    Ok(model.encode_to_vec())
}
