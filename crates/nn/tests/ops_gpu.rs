//! The op conformance suite (`tests/conformance`) on the wgpu backend, plus GPU-against-CPU
//! comparisons: shapes that stress the kernels' tiling (odd sizes, 1x1 maps, groups,
//! strides, batches, grids beyond one dispatch dimension), plan reuse, and the shipped
//! networks (MTCNN, dlib-resnet-128) on random batched inputs.
//!
//! On a machine without a GPU the tests run on Mesa's lavapipe (a Vulkan software
//! rasterizer; `apt-get install mesa-vulkan-drivers libvulkan1`): unless `VK_DRIVER_FILES` or
//! `VK_ICD_FILENAMES` is already set, or `REFACEN_GPU_TEST_ANY_DRIVER=1`, the test process
//! points the Vulkan loader at lavapipe's manifest when it exists, and gives Mesa an
//! `XDG_RUNTIME_DIR` when there is none. With no Vulkan adapter at all the tests FAIL (they
//! never pass without having run a kernel).

mod conformance;
mod vulkan;

use std::sync::{Arc, OnceLock};

use conformance::{compare, compare_backends};
use refacen_nn as nn;
use refacen_nn::cpu::CpuBackend;
use refacen_nn::gpu::{GpuBackend, GpuError, GpuOptions};
use refacen_nn::ir::{
    Activation, Binary, Conv, Gemm, Graph, GraphInput, Node, Op, PadMode, Padding, Pool, PoolKind, Unary,
    Value, Window,
};
use refacen_nn::{Backend, Excess, NnError, RunLimits, Tensor};
use refacen_test_support::random::unit_floats;
use vulkan::vulkan_environment;

/// The backend every test shares (kernels compile once).
fn gpu() -> &'static GpuBackend {
    static BACKEND: OnceLock<GpuBackend> = OnceLock::new();
    BACKEND.get_or_init(|| {
        vulkan_environment();
        match GpuBackend::new(GpuOptions { allow_software: true, limits: RunLimits::default() }) {
            Ok(backend) => {
                eprintln!("{}", backend.describe());
                backend
            }
            Err(e) => panic!(
                "the GPU tests need a Vulkan adapter, and none could be used: {e}\n\
                 On a machine without a GPU install Mesa's software Vulkan driver: \
                 `apt-get install -y --no-install-recommends mesa-vulkan-drivers libvulkan1`"
            ),
        }
    })
}

fn cpu() -> CpuBackend {
    CpuBackend::default()
}

#[test]
fn gpu_matches_onnxruntime_on_every_case() {
    conformance::check_all(gpu());
}

#[test]
fn gpu_refuses_inputs_of_the_wrong_shape() {
    conformance::check_run_refusals(gpu());
}

#[test]
fn without_software_adapters_new_explains_what_it_found() {
    vulkan_environment();
    match GpuBackend::new(GpuOptions { allow_software: false, limits: RunLimits::default() }) {
        // A machine with a real GPU: it must not be a software rasterizer.
        Ok(backend) => {
            assert_ne!(
                backend.device_type(),
                wgpu::DeviceType::Cpu,
                "{} is a software adapter",
                backend.describe()
            );
        }
        Err(e) => {
            let text = e.to_string();
            eprintln!("as expected on a machine without a GPU: {text}");
            match &e {
                GpuError::NoAdapter { found } => {
                    assert!(
                        !found.is_empty(),
                        "no Vulkan adapter at all (install mesa-vulkan-drivers for lavapipe): {text}"
                    );
                    for refused in found {
                        assert!(
                            text.contains(&refused.adapter),
                            "the error must name {}: {text}",
                            refused.adapter
                        );
                    }
                    assert!(text.contains("allow_software"), "the error must say how to allow it: {text}");
                }
                other => panic!("expected NoAdapter, got {other:?}"),
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Graph building

/// Deterministic values in [-1, 1).
fn random(n: usize, seed: u64) -> Vec<f32> {
    unit_floats(seed).take(n).map(|v| 2.0 * v - 1.0).collect()
}

fn tensor(shape: &[usize], seed: u64) -> Tensor {
    Tensor::new(shape.to_vec(), random(shape.iter().product(), seed)).unwrap()
}

enum Arg {
    /// A graph input of this shape (all dimensions dynamic).
    Input(usize),
    Const(Tensor),
    Missing,
}

/// A graph of one node whose inputs are `args`; output `y`.
fn single(op: Op, args: Vec<Arg>) -> Graph {
    let mut g = Graph { name: "test".into(), values: vec![], inputs: vec![], outputs: vec![], nodes: vec![] };
    let mut node_inputs = vec![];
    for (i, arg) in args.into_iter().enumerate() {
        match arg {
            Arg::Input(rank) => {
                g.values.push(Value { name: format!("in{i}"), constant: None });
                g.inputs.push(GraphInput { value: g.values.len() - 1, dims: vec![None; rank] });
                node_inputs.push(Some(g.values.len() - 1));
            }
            Arg::Const(t) => node_inputs.push(Some(g.add_constant(format!("c{i}"), t))),
            Arg::Missing => node_inputs.push(None),
        }
    }
    g.values.push(Value { name: "y".into(), constant: None });
    let y = g.values.len() - 1;
    g.nodes.push(Node { name: "node".into(), op, inputs: node_inputs, outputs: vec![y] });
    g.outputs.push(y);
    g
}

fn check(what: &str, graph: Graph, inputs: Vec<Tensor>) {
    match compare_backends(&cpu(), gpu(), graph, inputs) {
        Ok(d) => eprintln!("{what}: max |diff| {:.2e}, relative {:.2e}", d.max_abs, d.max_rel),
        Err(e) => panic!("{what}: {e}"),
    }
}

/// One Conv of the GPU-against-CPU comparison (`new`: 1x1 strides and dilations, no padding,
/// one group, no activation; cases override fields).
struct ConvCase {
    what: &'static str,
    x: [usize; 4],
    m: usize,
    kernel: [usize; 2],
    strides: [usize; 2],
    dilations: [usize; 2],
    padding: Padding,
    group: usize,
    activation: Activation,
}

impl ConvCase {
    fn new(what: &'static str, x: [usize; 4], m: usize, kernel: [usize; 2]) -> Self {
        let (strides, dilations, padding, group, activation) =
            ([1, 1], [1, 1], Padding::NONE, 1, Activation::None);
        ConvCase { what, x, m, kernel, strides, dilations, padding, group, activation }
    }

    fn check(self) {
        let ConvCase { what, x, m, kernel, strides, dilations, padding, group, activation } = self;
        let w = tensor(&[m, x[1] / group, kernel[0], kernel[1]], 2);
        let bias = tensor(&[m], 3);
        let op = Op::Conv(Conv {
            window: Window { kernel, strides, dilations, padding },
            group,
            activation,
            residual: false,
        });
        check(what, single(op, vec![Arg::Input(4), Arg::Const(w), Arg::Const(bias)]), vec![tensor(&x, 1)]);
    }
}

fn pads(top: usize, left: usize, bottom: usize, right: usize) -> Padding {
    Padding::Explicit { top, left, bottom, right }
}

#[test]
fn conv_tiles_groups_strides_and_batches_match_cpu() {
    let prelu = |m: usize| Activation::PRelu(Arc::new(tensor(&[m], 9)));
    // Tile 64 x 64, two channel tiles, k = 45 (not a multiple of the slice depth).
    ConvCase {
        padding: pads(1, 1, 1, 1),
        ..ConvCase::new("conv 70ch 3x3 pad1 batch3", [3, 5, 7, 9], 70, [3, 3])
    }
    .check();
    // Tile 32 x 128: stride 2, asymmetric pads, dilation.
    ConvCase {
        strides: [2, 2],
        dilations: [2, 1],
        padding: pads(2, 0, 1, 3),
        activation: Activation::Relu,
        ..ConvCase::new("conv 20ch stride2 dil2 asym", [2, 6, 13, 11], 20, [3, 2])
    }
    .check();
    // Tile 16 x 256: 1x1 maps, pointwise, batch 4.
    ConvCase {
        activation: prelu(10),
        ..ConvCase::new("conv pointwise 1x1 map batch4", [4, 7, 1, 1], 10, [1, 1])
    }
    .check();
    ConvCase {
        padding: pads(1, 1, 1, 1),
        ..ConvCase::new("conv 3x3 on 1x1 map pad1", [2, 3, 1, 1], 5, [3, 3])
    }
    .check();
    ConvCase {
        padding: Padding::SameUpper,
        activation: Activation::LeakyRelu(0.1),
        ..ConvCase::new("conv pointwise 33x35 batch2", [2, 40, 33, 35], 96, [1, 1])
    }
    .check();
    ConvCase { strides: [2, 2], ..ConvCase::new("conv pointwise stride2", [2, 8, 9, 9], 12, [1, 1]) }.check();
    ConvCase {
        padding: pads(1, 1, 1, 1),
        group: 4,
        activation: prelu(12),
        ..ConvCase::new("conv groups4", [2, 8, 10, 7], 12, [3, 3])
    }
    .check();
    ConvCase {
        strides: [2, 1],
        padding: Padding::SameLower,
        group: 2,
        ..ConvCase::new("conv groups2 100ch", [1, 64, 9, 9], 130, [3, 3])
    }
    .check();
    ConvCase {
        strides: [2, 2],
        padding: pads(1, 1, 1, 1),
        group: 6,
        activation: prelu(6),
        ..ConvCase::new("conv depthwise stride2 prelu", [3, 6, 11, 10], 6, [3, 3])
    }
    .check();
    ConvCase {
        dilations: [2, 2],
        padding: Padding::SameUpper,
        group: 3,
        ..ConvCase::new("conv depth multiplier 2", [2, 3, 8, 8], 6, [3, 3])
    }
    .check();
    ConvCase { padding: pads(2, 2, 2, 2), ..ConvCase::new("conv 5x5 on 3x3 pad2", [1, 2, 3, 3], 4, [5, 5]) }
        .check();
    // Many pixel tiles: a 300 x 300 map (P-Net-like first layer).
    ConvCase { activation: prelu(10), ..ConvCase::new("conv 300x300", [1, 3, 300, 300], 10, [3, 3]) }.check();
    // Deep k (resnet-like): k = 64 · 9 = 576, 128 output channels.
    ConvCase {
        strides: [2, 2],
        padding: pads(1, 1, 1, 1),
        activation: Activation::Relu,
        ..ConvCase::new("conv deep k", [2, 64, 12, 12], 128, [3, 3])
    }
    .check();
}

#[test]
fn gemm_and_matmul_match_cpu() {
    for (trans_a, trans_b) in [(false, false), (true, false), (false, true), (true, true)] {
        let (m, k, n) = (70, 33, 130);
        let a = if trans_a { [k, m] } else { [m, k] };
        let b = if trans_b { [n, k] } else { [k, n] };
        let op = Op::Gemm(Gemm {
            alpha: 0.7,
            beta: 1.3,
            trans_a,
            trans_b,
            activation: Activation::PRelu(Arc::new(tensor(&[n], 5))),
        });
        let graph =
            single(op, vec![Arg::Input(2), Arg::Const(tensor(&b, 6)), Arg::Const(tensor(&[1, n], 7))]);
        check(&format!("gemm trans_a {trans_a} trans_b {trans_b}"), graph, vec![tensor(&a, 8)]);
    }
    let gemm = |c: Arg| {
        let op = Op::Gemm(Gemm {
            alpha: 1.0,
            beta: 1.0,
            trans_a: false,
            trans_b: false,
            activation: Activation::Relu,
        });
        single(op, vec![Arg::Input(2), Arg::Input(2), c])
    };
    check(
        "gemm C column",
        gemm(Arg::Const(tensor(&[65, 1], 3))),
        vec![tensor(&[65, 3], 1), tensor(&[3, 66], 2)],
    );
    check("gemm no C", gemm(Arg::Missing), vec![tensor(&[1, 300], 1), tensor(&[300, 2], 2)]);

    for (a, b) in [
        (vec![2, 1, 5, 7], vec![3, 7, 4]),
        (vec![7], vec![4, 7, 66]),
        (vec![3, 65, 17], vec![17]),
        (vec![2, 3, 4, 70, 9], vec![9, 65]),
        (vec![129, 300], vec![300, 64]),
    ] {
        let graph = single(Op::MatMul, vec![Arg::Input(a.len()), Arg::Input(b.len())]);
        check(&format!("matmul {a:?} x {b:?}"), graph, vec![tensor(&a, 1), tensor(&b, 2)]);
    }
}

#[test]
fn pooling_softmax_and_layout_match_cpu() {
    let pool = |kind, kernel, strides, padding, ceil_mode, count_include_pad| {
        Op::Pool(Pool {
            kind,
            window: Window { kernel, strides, dilations: [1, 1], padding },
            ceil_mode,
            count_include_pad,
        })
    };
    for (what, op) in [
        ("maxpool 3x3 s2 ceil", pool(PoolKind::Max, [3, 3], [2, 2], Padding::NONE, true, false)),
        ("avgpool 3x3 s2 pads incl", pool(PoolKind::Average, [3, 3], [2, 2], pads(1, 1, 1, 1), true, true)),
        ("avgpool 2x3 same excl", pool(PoolKind::Average, [2, 3], [1, 2], Padding::SameUpper, false, false)),
    ] {
        check(what, single(op, vec![Arg::Input(4)]), vec![tensor(&[3, 5, 23, 17], 4)]);
    }
    check(
        "global avg 50x50",
        single(Op::GlobalPool(PoolKind::Average), vec![Arg::Input(4)]),
        vec![tensor(&[2, 3, 50, 50], 1)],
    );
    check(
        "global max 1x1",
        single(Op::GlobalPool(PoolKind::Max), vec![Arg::Input(4)]),
        vec![tensor(&[2, 7, 1, 1], 1)],
    );
    for (axis, coerce_2d, shape) in [
        (1, false, vec![2, 2, 40, 30]),
        (-1, false, vec![3, 1000]),
        (1, true, vec![2, 3, 7, 11]),
        (0, true, vec![4, 700]),
    ] {
        check(
            &format!("softmax axis {axis} coerce {coerce_2d} {shape:?}"),
            single(Op::Softmax { axis, coerce_2d }, vec![Arg::Input(shape.len())]),
            vec![tensor(&shape, 3)],
        );
    }
    check(
        "transpose 0 2 3 1",
        single(Op::Transpose { perm: Some(vec![0, 2, 3, 1]) }, vec![Arg::Input(4)]),
        vec![tensor(&[2, 3, 5, 7], 1)],
    );
    check(
        "transpose rank 9 (merged)",
        single(Op::Transpose { perm: Some(vec![0, 1, 2, 3, 8, 4, 5, 6, 7]) }, vec![Arg::Input(9)]),
        vec![tensor(&[2, 1, 3, 1, 2, 2, 1, 2, 3], 1)],
    );
    check(
        "concat axis 1 with constant",
        single(Op::Concat { axis: 1 }, vec![Arg::Input(3), Arg::Const(tensor(&[2, 1, 4], 2)), Arg::Input(3)]),
        vec![tensor(&[2, 3, 4], 1), tensor(&[2, 5, 4], 3)],
    );
    check(
        "pad negative and positive",
        single(
            Op::Pad { pads: vec![0, -1, 2, 1, 0, 3, -2, 0], value: 1.5, mode: PadMode::Constant, axes: None },
            vec![Arg::Input(4)],
        ),
        vec![tensor(&[2, 3, 6, 5], 1)],
    );
    check(
        "add broadcast rank 5",
        single(Op::Binary(Binary::Add), vec![Arg::Input(5), Arg::Input(3)]),
        vec![tensor(&[2, 1, 3, 4, 5], 1), tensor(&[3, 1, 5], 2)],
    );
    check(
        "prelu broadcast slope",
        single(Op::PRelu, vec![Arg::Input(4), Arg::Const(tensor(&[3, 1, 1], 2))]),
        vec![tensor(&[2, 3, 4, 5], 1)],
    );
    check(
        "batchnorm",
        single(
            Op::BatchNorm { epsilon: 1e-3 },
            vec![
                Arg::Input(4),
                Arg::Const(tensor(&[3], 2)),
                Arg::Const(tensor(&[3], 3)),
                Arg::Const(tensor(&[3], 4)),
                Arg::Const(Tensor::new(vec![3], vec![0.5, 1.0, 2.0]).unwrap()),
            ],
        ),
        vec![tensor(&[2, 3, 4, 5], 1)],
    );
}

#[test]
fn dispatches_beyond_one_grid_dimension() {
    // 17 M values: more than 65535 workgroups of 256, so the grid folds into 2-D.
    let n = (1 << 24) + 12_345;
    check("relu 17M", single(Op::Unary(Unary::Relu), vec![Arg::Input(1)]), vec![tensor(&[n], 1)]);
}

/// conv → relu → reshape → transpose → softmax → (concat with the conv output reshaped):
/// aliasing, buffer reuse between layers and plan reuse across shapes.
fn chain_graph() -> Graph {
    let mut g =
        Graph { name: "chain".into(), values: vec![], inputs: vec![], outputs: vec![], nodes: vec![] };
    let value = |g: &mut Graph, name: &str| {
        g.values.push(Value { name: name.into(), constant: None });
        g.values.len() - 1
    };
    let x = value(&mut g, "x");
    g.inputs.push(GraphInput { value: x, dims: vec![None, Some(3), None, None] });
    let w = g.add_constant("w".into(), tensor(&[8, 3, 3, 3], 2));
    let c = value(&mut g, "c");
    let r = value(&mut g, "r");
    let f = value(&mut g, "f");
    let t = value(&mut g, "t");
    let s = value(&mut g, "s");
    let p = value(&mut g, "p");
    let out = value(&mut g, "out");
    let node = |name: &str, op: Op, inputs: Vec<usize>, output: usize| Node {
        name: name.into(),
        op,
        inputs: inputs.into_iter().map(Some).collect(),
        outputs: vec![output],
    };
    let conv = Conv {
        window: Window { kernel: [3, 3], strides: [1, 1], dilations: [1, 1], padding: Padding::SameUpper },
        group: 1,
        activation: Activation::None,
        residual: false,
    };
    g.nodes = vec![
        node("conv", Op::Conv(conv), vec![x, w], c),
        node("relu", Op::Unary(Unary::Relu), vec![c], r),
        node("flatten", Op::Flatten { axis: 2 }, vec![r], f),
        node("transpose", Op::Transpose { perm: None }, vec![f], t),
        node("softmax", Op::Softmax { axis: -1, coerce_2d: false }, vec![t], s),
        node(
            "pool",
            Op::Pool(Pool {
                kind: PoolKind::Max,
                window: Window { kernel: [2, 2], strides: [2, 2], dilations: [1, 1], padding: Padding::NONE },
                ceil_mode: true,
                count_include_pad: false,
            }),
            vec![c],
            p,
        ),
        node("identity", Op::Unary(Unary::Identity), vec![p], out),
    ];
    g.outputs = vec![s, out, c];
    g
}

#[test]
fn plans_are_reused_across_shapes_and_threads() {
    let graph = Arc::new(chain_graph());
    let cpu = cpu().prepare(graph.clone()).unwrap();
    let gpu = gpu().prepare(graph).unwrap();
    let shapes = [[1, 3, 9, 7], [3, 3, 16, 16], [1, 3, 2, 3], [2, 3, 5, 30]];
    let run = |round: usize| {
        for (i, shape) in shapes.iter().enumerate() {
            let x = tensor(shape, (round * 10 + i) as u64);
            let want = cpu.run(vec![x.clone()]).unwrap();
            let got = gpu.run(vec![x]).unwrap();
            for (o, (g, w)) in got.iter().zip(&want).enumerate() {
                compare(g, w).unwrap_or_else(|e| panic!("round {round}, shape {shape:?}, output {o}: {e}"));
            }
        }
    };
    run(0);
    run(1);
    std::thread::scope(|s| {
        for round in 2..6 {
            s.spawn(move || run(round));
        }
    });
}

#[test]
fn too_large_tensors_are_refused_like_on_the_cpu() {
    vulkan_environment();
    let limits = RunLimits { max_tensor_elements: 1000 };
    let backend = GpuBackend::new(GpuOptions { allow_software: true, limits }).expect("a Vulkan adapter");
    let graph = Arc::new(single(Op::Unary(Unary::Sigmoid), vec![Arg::Input(2)]));
    let exe = backend.prepare(graph).unwrap();
    assert!(exe.run(vec![tensor(&[10, 100], 1)]).is_ok());
    match exe.run(vec![tensor(&[11, 100], 1)]) {
        Err(NnError::TensorLimit { elements, limit, .. }) => assert_eq!((elements, limit), (1100, 1000)),
        other => panic!("expected TensorLimit, got {other:?}"),
    }
    let conv = Op::Conv(Conv {
        window: Window { kernel: [1, 1], strides: [1, 1], dilations: [1, 1], padding: Padding::NONE },
        group: 1,
        activation: Activation::None,
        residual: false,
    });
    let exe = backend
        .prepare(Arc::new(single(conv, vec![Arg::Input(4), Arg::Const(tensor(&[50, 2, 1, 1], 1))])))
        .unwrap();
    match exe.run(vec![tensor(&[1, 2, 5, 5], 1)]) {
        Err(NnError::TensorLimit { producer, shape, .. }) => {
            assert!(producer.contains("node"), "{producer}");
            assert_eq!(shape, [1, 50, 5, 5]);
        }
        other => panic!("expected TensorLimit, got {other:?}"),
    }
}

/// Tensors larger than one buffer binding are split into several dispatches. The device's
/// limit (128 MiB on lavapipe, 4 GiB on most GPUs) is lowered to 64 KiB so that small
/// tensors take those paths.
#[test]
fn tensors_larger_than_a_binding_are_split() {
    vulkan_environment();
    let small = GpuBackend::new(GpuOptions { allow_software: true, limits: RunLimits::default() })
        .expect("a Vulkan adapter")
        .with_binding_cap(64 << 10);
    let check_small =
        |what: &str, graph: Graph, inputs: Vec<Tensor>| match compare_backends(&cpu(), &small, graph, inputs)
        {
            Ok(d) => eprintln!("{what} (split): max |diff| {:.2e}", d.max_abs),
            Err(e) => panic!("{what} (split): {e}"),
        };
    let conv_graph = |c: usize, m: usize, group: usize, activation: Activation| {
        let op = Op::Conv(Conv {
            window: Window {
                kernel: [3, 3],
                strides: [1, 1],
                dilations: [1, 1],
                padding: Padding::SameUpper,
            },
            group,
            activation,
            residual: false,
        });
        single(
            op,
            vec![Arg::Input(4), Arg::Const(tensor(&[m, c / group, 3, 3], 2)), Arg::Const(tensor(&[m], 3))],
        )
    };
    let prelu = |m: usize| Activation::PRelu(Arc::new(tensor(&[m], 9)));
    // Several images per dispatch (each image 16 K values in, 24 K out).
    check_small("conv by images", conv_graph(4, 6, 1, prelu(6)), vec![tensor(&[9, 4, 64, 64], 1)]);
    // One image's output exceeds a binding: split by output channels.
    check_small("conv by channels", conv_graph(3, 10, 1, Activation::Relu), vec![tensor(&[2, 3, 60, 70], 1)]);
    check_small(
        "depthwise by channels",
        conv_graph(12, 12, 12, prelu(12)),
        vec![tensor(&[2, 12, 40, 50], 1)],
    );
    let pool = Op::Pool(Pool {
        kind: PoolKind::Average,
        window: Window { kernel: [3, 3], strides: [2, 2], dilations: [1, 1], padding: pads(1, 1, 1, 1) },
        ceil_mode: true,
        count_include_pad: false,
    });
    check_small("pool by planes", single(pool, vec![Arg::Input(4)]), vec![tensor(&[3, 7, 60, 50], 1)]);
    check_small(
        "global pool by planes",
        single(Op::GlobalPool(PoolKind::Max), vec![Arg::Input(4)]),
        vec![tensor(&[3, 7, 60, 50], 1)],
    );
    let x = tensor(&[3, 7, 60, 50], 1);
    check_small("tanh by values", single(Op::Unary(Unary::Tanh), vec![Arg::Input(4)]), vec![x.clone()]);
    check_small(
        "add by values",
        single(Op::Binary(Binary::Add), vec![Arg::Input(4), Arg::Input(4)]),
        vec![x.clone(), tensor(&[3, 7, 60, 50], 2)],
    );
    check_small(
        "mul broadcast by values",
        single(Op::Binary(Binary::Mul), vec![Arg::Input(4), Arg::Const(tensor(&[7, 1, 50], 2))]),
        vec![x.clone()],
    );
    check_small(
        "batchnorm by values",
        single(
            Op::BatchNorm { epsilon: 1e-5 },
            vec![
                Arg::Input(4),
                Arg::Const(tensor(&[7], 2)),
                Arg::Const(tensor(&[7], 3)),
                Arg::Const(tensor(&[7], 4)),
                Arg::Const(Tensor::new(vec![7], vec![1.0; 7]).unwrap()),
            ],
        ),
        vec![x.clone()],
    );
    check_small(
        "softmax by blocks",
        single(Op::Softmax { axis: 1, coerce_2d: false }, vec![Arg::Input(4)]),
        vec![tensor(&[3, 7, 20, 50], 1)],
    );
    check_small("P-Net", nn::load_onnx(nnd::PNET_ONNX).unwrap(), vec![tensor(&[1, 57, 43, 3], 1)]);
    // Ops that are not split say so.
    let exe = small.prepare(Arc::new(single(Op::Transpose { perm: None }, vec![Arg::Input(4)]))).unwrap();
    match exe.run(vec![x]) {
        Err(NnError::TooLarge { excess: Excess::GpuBinding { .. }, .. }) => {}
        other => panic!("expected TooLarge, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// The shipped networks

fn check_model(what: &str, onnx: &[u8], inputs: Vec<Tensor>) {
    let graph = nn::load_onnx(onnx).unwrap_or_else(|e| panic!("{what}: {e}"));
    check(what, graph, inputs);
}

#[test]
fn mtcnn_graphs_match_cpu_batched() {
    check_model("P-Net batch 2", nnd::PNET_ONNX, vec![tensor(&[2, 57, 43, 3], 1)]);
    check_model("R-Net batch 7", nnd::RNET_ONNX, vec![tensor(&[7, 24, 24, 3], 2)]);
    check_model("O-Net batch 3", nnd::ONET_ONNX, vec![tensor(&[3, 48, 48, 3], 3)]);
}

#[test]
fn dlib_resnet_matches_cpu_batched() {
    let path = refacen_test_support::repo().join("guests/dlib-resnet-128/weights/dlib_resnet_128.onnx");
    let Ok(onnx) = std::fs::read(&path) else {
        eprintln!("SKIPPED: {} is absent (produce it with `cargo xtask weights`)", path.display());
        return;
    };
    check_model("dlib-resnet-128 batch 2", &onnx, vec![tensor(&[2, 3, 150, 150], 4)]);
}
