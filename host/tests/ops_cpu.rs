//! The op conformance suite (`tests/conformance`) on the CPU backend.

mod conformance;

use refacen::nn::cpu::CpuBackend;

#[test]
fn cpu_matches_onnxruntime_on_every_case() {
    conformance::check_all(&CpuBackend::default());
}

#[test]
fn every_supported_op_has_a_case() {
    conformance::check_coverage();
}

#[test]
fn unsupported_and_invalid_models_are_refused() {
    conformance::check_load_refusals();
}

#[test]
fn cpu_refuses_inputs_of_the_wrong_shape() {
    conformance::check_run_refusals(&CpuBackend::default());
}

#[test]
fn suite_comparison_and_npy_reader() {
    conformance::self_test();
}
