//! The op conformance suite (`tests/conformance`) on the CPU backend.

mod conformance;

use std::sync::Arc;

use refacen_nn::cpu::CpuBackend;
use refacen_nn::ir::{Binary, Graph, GraphInput, Node, Op, Unary, Value};
use refacen_nn::{Backend, NnError, RunLimits, Tensor};

#[test]
fn cpu_matches_onnxruntime_on_every_case() {
    conformance::check_all(&CpuBackend::default());
}

/// Regression: at 3+ threads a conv item waiting inside `gemm`'s nested parallelism ran
/// another conv item on the same thread, which found the thread's im2col buffer borrowed
/// ("RefCell already borrowed"). Servers have 16-64 cores; CI has 2, so the pools here are
/// oversubscribed on purpose, with several callers as several guest instances.
#[test]
fn cpu_matches_onnxruntime_at_server_core_counts_with_concurrent_callers() {
    let backend = CpuBackend::default();
    for threads in [3, 4, 16, 64] {
        for callers in [1, 4, 16] {
            conformance::check_all_concurrently(&backend, threads, callers, 1);
        }
    }
}

/// The residual cases fuse as their names say: the Add into the conv that feeds it, with the
/// activation that alone reads the sum, unless the other operand is computed after the conv.
/// The conformance run above checks their values.
#[test]
fn residual_adds_fuse_into_the_convs_that_feed_them() {
    let cases: Vec<_> = conformance::case_dirs()
        .into_iter()
        .filter(|dir| dir.file_name().unwrap().to_string_lossy().starts_with("residual_"))
        .collect();
    assert!(cases.len() >= 20, "the residual cases are missing: regenerate the fixtures");
    for dir in cases {
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        let graph = refacen_nn::load_onnx(&std::fs::read(dir.join("model.onnx")).unwrap()).unwrap();
        let fused = refacen_nn::fuse_residual_adds(graph);
        let count = |f: &dyn Fn(&Op) -> bool| fused.nodes.iter().filter(|n| f(&n.op)).count();
        let adds = count(&|op| matches!(op, Op::Binary(Binary::Add)));
        let residual_convs = count(&|op| matches!(op, Op::Conv(c) if c.residual));
        let activations = count(&|op| matches!(op, Op::Unary(Unary::Relu | Unary::LeakyRelu(_))));
        if name.ends_with("_not_fused") {
            assert_eq!((adds, residual_convs), (1, 0), "{name}");
        } else {
            let left = usize::from(name == "residual_sum_also_graph_output");
            assert_eq!((adds, residual_convs, activations), (0, 1, left), "{name}");
        }
    }
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

/// A node whose output would pass `RunLimits::max_tensor_elements` is refused, naming the
/// node, and the same executable still runs inputs under the limit.
#[test]
fn cpu_refuses_tensors_over_the_limit() {
    let values = vec![Value { name: "x".into(), constant: None }, Value { name: "y".into(), constant: None }];
    let graph = Graph {
        name: "limit".into(),
        values,
        inputs: vec![GraphInput { value: 0, dims: vec![None, None] }],
        outputs: vec![1],
        nodes: vec![Node {
            name: "sig".into(),
            op: Op::Unary(Unary::Sigmoid),
            inputs: vec![Some(0)],
            outputs: vec![1],
        }],
    };
    let backend = CpuBackend::new(RunLimits { max_tensor_elements: 1000 });
    let exe = backend.prepare(Arc::new(graph)).unwrap();
    let tensor = |shape: [usize; 2]| Tensor::new(shape.to_vec(), vec![0.5; shape[0] * shape[1]]).unwrap();
    match exe.run(vec![tensor([11, 100])]) {
        Err(NnError::TensorLimit { producer, shape, elements, limit }) => {
            assert_eq!(
                (producer.as_str(), shape.as_slice(), elements, limit),
                ("Sigmoid node `sig`", &[11, 100][..], 1100, 1000)
            );
        }
        other => panic!("expected TensorLimit, got {other:?}"),
    }
    assert_eq!(exe.run(vec![tensor([10, 100])]).unwrap()[0].shape(), [10, 100]);
}

#[test]
fn suite_comparison_and_npy_reader() {
    conformance::self_test();
}

/// The shipped guests' real networks, run by many callers at once on oversubscribed pools,
/// give what one caller on 2 threads gets. Their big convolutions are what nests `gemm`'s
/// parallelism inside conv items, which the small conformance cases rarely do.
#[test]
fn shipped_graphs_at_server_core_counts_match_two_threads() {
    let backend = CpuBackend::default();
    let weights = refacen_test_support::repo().join("guests");
    // (graph, input shape): the shapes nnd and dlib-resnet-128 run.
    let graphs = [
        ("nnd/weights/pnet.onnx", vec![1, 240, 320, 3]),
        ("nnd/weights/rnet.onnx", vec![32, 24, 24, 3]),
        ("nnd/weights/onet.onnx", vec![8, 48, 48, 3]),
        ("dlib-resnet-128/weights/dlib_resnet_128.onnx", vec![2, 3, 150, 150]),
    ];
    let cases: Vec<_> = graphs
        .iter()
        .map(|(file, shape)| {
            let path = weights.join(file);
            let bytes = std::fs::read(&path).unwrap_or_else(|e| {
                panic!("{}: {e}; fetch the weights with `cargo xtask weights`", path.display())
            });
            let graph = Arc::new(refacen_nn::load_onnx(&bytes).expect("a shipped graph loads"));
            let executable = backend.prepare(graph).expect("a shipped graph prepares");
            let input = Tensor::new(shape.clone(), pseudo_random(shape.iter().product())).unwrap();
            let two_threads = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
            let reference = two_threads.install(|| executable.run(vec![input.clone()])).expect("runs");
            (*file, executable, input, reference)
        })
        .collect();
    for threads in [3, 4, 16, 64] {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        std::thread::scope(|scope| {
            for caller in 0..8 {
                let (cases, pool) = (&cases, &pool);
                scope.spawn(move || {
                    for round in 0..2 {
                        for i in 0..cases.len() {
                            let (file, executable, input, reference) = &cases[(i + caller) % cases.len()];
                            let got =
                                pool.install(|| executable.run(vec![input.clone()])).unwrap_or_else(|e| {
                                    panic!("{file}, {threads} threads, caller {caller}, round {round}: {e}")
                                });
                            for (got, want) in got.iter().zip(reference) {
                                assert_eq!(got.shape(), want.shape());
                                let worst = got
                                    .data()
                                    .iter()
                                    .zip(want.data())
                                    .map(|(g, w)| (g - w).abs() / w.abs().max(1.0))
                                    .fold(0.0f32, f32::max);
                                assert!(
                                    worst <= 1e-5,
                                    "{file}, {threads} threads: differs from 2 threads by {worst}"
                                );
                            }
                        }
                    }
                });
            }
        });
    }
}

/// Deterministic values in [-1, 1).
fn pseudo_random(n: usize) -> Vec<f32> {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    (0..n)
        .map(|_| {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}
