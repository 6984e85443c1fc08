//! Generates the ONNX messages from `proto/onnx.proto3` (ONNX 1.17.0's, vendored unchanged)
//! with protox, a protobuf compiler in Rust, so building needs no `protoc`.

use std::path::Path;

fn main() {
    let proto = Path::new("proto/onnx.proto3");
    println!("cargo:rerun-if-changed={}", proto.display());
    let files = protox::compile([proto.file_name().unwrap()], [proto.parent().unwrap()])
        .unwrap_or_else(|e| panic!("{} does not compile: {e}", proto.display()));
    let mut config = prost_build::Config::new();
    // onnx.proto, the proto2 original that onnx and onnxruntime compile, leaves these repeated
    // scalars unpacked (proto3 packs them). Every reader accepts both; writing them as onnx's
    // own writers do keeps the converted weights byte-identical to their pinned sha256.
    for field in [".onnx.TensorProto.dims", ".onnx.AttributeProto.floats", ".onnx.AttributeProto.ints"] {
        config.field_attribute(field, r#"#[prost(packed = "false")]"#);
    }
    // The schema's comments are ONNX's documentation, read in the .proto file; as Rust doc
    // comments their indented examples would run as doctests.
    config.disable_comments(["."]);
    config.compile_fds(files).unwrap_or_else(|e| panic!("generating Rust from {}: {e}", proto.display()));
}
