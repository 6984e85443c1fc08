//! ONNX's protobuf messages, which refacen reads (`refacen_nn::onnx`) and writes (the weight
//! converters in xtask, through [`build`]).
//!
//! Generated at build time from `proto/onnx.proto3`, ONNX 1.17.0's proto3 form of onnx.proto
//! (same messages and field numbers; see build.rs). Nested types keep the schema's nesting:
//! `tensor_proto::DataType`, `type_proto::Value`, `tensor_shape_proto::dimension::Value`.

pub mod build;

include!(concat!(env!("OUT_DIR"), "/onnx.rs"));

pub use attribute_proto::AttributeType;
pub use tensor_proto::DataType;
