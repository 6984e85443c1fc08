//! Checks that the ONNX graph the guest embeds is there: `cargo xtask weights` converts it
//! from dlib's `dlib_face_recognition_resnet_model_v1.dat` (PyPI face_recognition_models
//! 0.3.0, sha256-checked) and pins the output's sha256.

fn main() {
    kit_build::weight_file(
        "dlib_resnet_128.onnx",
        "PyPI face_recognition_models 0.3.0 and converts dlib's ResNet to ONNX",
    );
}
