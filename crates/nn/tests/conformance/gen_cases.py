#!/usr/bin/env python3
"""Generates the op conformance fixtures under crates/nn/tests/fixtures/.

Every case is a small ONNX model built with onnx.helper, random inputs drawn with a fixed
seed, and the outputs onnxruntime (CPU, graph optimizations off) computes for them. The
reference values never come from refacen. The Rust suite (crates/nn/tests/conformance/mod.rs)
runs each model on a refacen backend and compares.

Layout written:
    crates/nn/tests/fixtures/ops/<case>/model.onnx, input_<i>.npy, output_<i>.npy
        (float32, little-endian, C order; inputs in graph-input order, outputs in
        graph-output order)
    crates/nn/tests/fixtures/refusals/<case>/model.onnx
        (models refacen must refuse; the expectations live in the Rust suite)

Both directories are rebuilt from scratch on every run (into *.new siblings that replace
them only when every case succeeded), so the output is a pure function of this script: the
same numpy/onnx/onnxruntime versions give the same bytes. Each case draws its random values
from numpy's default_rng seeded with the CRC-32 of its name.

Requirements (the fixtures were generated with onnx 1.23.2, onnxruntime 1.32.0, numpy 2.4.6):
    pip install onnx onnxruntime numpy

Regenerate (from the repository root):
    python3 crates/nn/tests/conformance/gen_cases.py
"""

import os
import shutil
import zlib

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures"))
# Cases are written to *.new directories, which replace ops/ and refusals/ only once every case
# has been generated: a failing run leaves the committed fixtures untouched.
OPS_DIR = os.path.join(ROOT, "ops.new")
REFUSALS_DIR = os.path.join(ROOT, "refusals.new")
DEFAULT_OPSET = 13
IR_VERSION = 8  # accepted by every onnxruntime release that knows opset 13+

CASE_NAMES = set()


# ---------------------------------------------------------------------------------------------
# Helpers


def rng_for(name):
    """A generator seeded by the case name: adding or reordering cases changes nothing else."""
    return np.random.default_rng(zlib.crc32(name.encode()))


def f32(a):
    # np.array, not np.ascontiguousarray: the latter turns 0-d (scalar) arrays into 1-d ones.
    return np.array(a, dtype=np.float32, order="C")


def i64(values):
    return np.asarray(values, dtype=np.int64)


def tensor_proto(name, a, raw):
    if raw:
        return numpy_helper.from_array(a, name)
    # The typed repeated fields (float_data, int64_data, int32_data for bool) instead of raw_data.
    dtype = {np.float32: TensorProto.FLOAT, np.int64: TensorProto.INT64, np.bool_: TensorProto.BOOL}[a.dtype.type]
    return helper.make_tensor(name, dtype, list(a.shape), a.flatten().tolist(), raw=False)


def make_model(
    name,
    nodes,
    inputs,
    outputs,
    initializers,
    opset,
    output_shapes=None,
    check=True,
    input_dims=None,
    initializers_as_inputs=False,
    raw_initializers=True,
    ir_version=IR_VERSION,
):
    """The model; graph outputs get `output_shapes` when given (the checker wants shapes).

    input_dims: declared dims per graph input (strings for symbolic dims); default the
    arrays' shapes. initializers_as_inputs: also list the initializers among the graph
    inputs (the IR < 4 convention). raw_initializers=False: store initializers in the typed
    fields rather than raw_data.
    """
    shapes = output_shapes or [None] * len(outputs)
    dims = input_dims or [list(a.shape) for _, a in inputs]
    graph_inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, d) for (n, _), d in zip(inputs, dims)]
    if initializers_as_inputs:
        graph_inputs += [
            helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(a.dtype), list(a.shape))
            for n, a in initializers.items()
        ]
    graph = helper.make_graph(
        nodes,
        name,
        graph_inputs,
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in zip(outputs, shapes)],
        initializer=[tensor_proto(n, a, raw_initializers) for n, a in initializers.items()],
    )
    model = helper.make_model(
        graph,
        producer_name="refacen-conformance",
        opset_imports=[helper.make_opsetid("", opset)],
    )
    model.ir_version = ir_version
    if check:
        # full_check runs strict shape inference: it also cross-checks the declared output
        # shapes (taken from onnxruntime's results) against the ONNX shape rules.
        onnx.checker.check_model(model, full_check=True)
    return model


def typed(initializers):
    """float32 unless int64 (shapes, axes, pads) or bool (flags)."""
    return {
        n: (a if a.dtype in (np.int64, np.bool_) else f32(a)) for n, a in (initializers or {}).items()
    }


def case(name, nodes, inputs, outputs, initializers=None, opset=DEFAULT_OPSET, **model_options):
    """Writes one conformance case.

    inputs: list of (name, float32 array) graph inputs, in order.
    outputs: list of graph output names, in order.
    initializers: dict name -> array (float32 weights, int64 shapes/axes/pads, bool flags).
    model_options: passed to make_model (input_dims, initializers_as_inputs, ...).
    """
    assert name not in CASE_NAMES, f"duplicate case {name}"
    CASE_NAMES.add(name)
    inputs = [(n, f32(a)) for n, a in inputs]
    initializers = typed(initializers)
    draft = make_model(name, nodes, inputs, outputs, initializers, opset, check=False, **model_options)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3  # no "opset < 7" warnings for the legacy-opset cases
    session = ort.InferenceSession(
        draft.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    results = session.run(outputs, {n: a for n, a in inputs})
    shapes = [list(np.asarray(r).shape) for r in results]
    if "input_dims" in model_options:
        # Dynamic inputs: declare the outputs' ranks only, with symbolic dimensions.
        shapes = [[f"out{i}_d{d}" for d in range(len(sh))] for i, sh in enumerate(shapes)]
    model = make_model(name, nodes, inputs, outputs, initializers, opset, output_shapes=shapes, **model_options)

    out_dir = os.path.join(OPS_DIR, name)
    os.makedirs(out_dir)
    onnx.save(model, os.path.join(out_dir, "model.onnx"))
    for i, (_, a) in enumerate(inputs):
        np.save(os.path.join(out_dir, f"input_{i}.npy"), a)
    for i, r in enumerate(results):
        r = np.asarray(r)
        assert r.dtype == np.float32, f"{name}: output {i} is {r.dtype}"
        np.save(os.path.join(out_dir, f"output_{i}.npy"), f32(r))


def x_case(name, x, outputs=("y",), **options):
    """Writes the case `name` on one graph input "x" of shape `x`: the decorated function returns
    the nodes and puts the weights it draws from the case's generator `r` into `init`. options: as
    for case (opset, model options)."""

    def write(build):
        r, init = rng_for(name), {}
        nodes = build(r, init)
        case(name, nodes, [("x", normal(r, *x))], list(outputs), init, **options)

    return write


def refusal(name, nodes, inputs, outputs, output_shapes, initializers=None, opset=DEFAULT_OPSET):
    """Writes a model refacen must refuse (no reference outputs; still a checked, valid model)."""
    inputs = [(n, f32(a)) for n, a in inputs]
    initializers = typed(initializers)
    model = make_model(name, nodes, inputs, outputs, initializers, opset, output_shapes=output_shapes)
    out_dir = os.path.join(REFUSALS_DIR, name)
    os.makedirs(out_dir)
    onnx.save(model, os.path.join(out_dir, "model.onnx"))


def normal(r, *shape, scale=1.0):
    return f32(r.standard_normal(shape) * scale)


def away_from_zero(r, *shape):
    """Values in ±[0.5, 2]: safe divisors."""
    return f32(r.uniform(0.5, 2.0, shape) * r.choice([-1.0, 1.0], shape))


def conv_weights(r, m, c_per_group, kh, kw):
    return normal(r, m, c_per_group, kh, kw, scale=1.0 / np.sqrt(max(1, c_per_group * kh * kw)))


# ---------------------------------------------------------------------------------------------
# Conv


def conv_case(name, x_shape, w_shape, bias=True, **attrs):
    r = rng_for(name)
    x = normal(r, *x_shape)
    w = conv_weights(r, *w_shape)
    init = {"W": w}
    node_inputs = ["x", "W"]
    if bias:
        init["B"] = normal(r, w_shape[0], scale=0.5)
        node_inputs.append("B")
    node = helper.make_node("Conv", node_inputs, ["y"], name="conv", **attrs)
    case(name, [node], [("x", x)], ["y"], init)


def conv_cases():
    conv_case("conv_3x3_pad1", [1, 3, 8, 8], [4, 3, 3, 3], kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    conv_case("conv_no_bias", [1, 3, 7, 9], [5, 3, 3, 3], bias=False, kernel_shape=[3, 3])
    conv_case("conv_no_kernel_shape_attr", [1, 2, 6, 5], [3, 2, 2, 3], pads=[1, 0, 0, 1])
    conv_case(
        "conv_stride2", [1, 4, 11, 13], [6, 4, 3, 3], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]
    )
    conv_case(
        "conv_stride_2x1", [1, 3, 9, 8], [4, 3, 3, 2], kernel_shape=[3, 2], strides=[2, 1], pads=[0, 1, 1, 0]
    )
    conv_case(
        "conv_dilation2", [1, 3, 12, 10], [4, 3, 3, 3], kernel_shape=[3, 3], dilations=[2, 2], pads=[2, 2, 2, 2]
    )
    conv_case(
        "conv_dilation_1x2_stride2", [1, 2, 11, 15], [3, 2, 3, 3], kernel_shape=[3, 3], dilations=[1, 2], strides=[2, 2]
    )
    # ONNX pads are [top, left, bottom, right].
    conv_case("conv_asymmetric_pads", [1, 2, 9, 7], [3, 2, 3, 3], kernel_shape=[3, 3], pads=[0, 1, 2, 0])
    conv_case("conv_big_pads", [1, 2, 4, 5], [3, 2, 3, 3], kernel_shape=[3, 3], pads=[3, 2, 1, 4])
    # Even kernels with stride 2 need an odd total padding: upper/lower differ.
    conv_case(
        "conv_same_upper", [1, 3, 9, 10], [4, 3, 4, 3], kernel_shape=[4, 3], strides=[2, 2], auto_pad="SAME_UPPER"
    )
    conv_case(
        "conv_same_lower", [1, 3, 9, 10], [4, 3, 4, 3], kernel_shape=[4, 3], strides=[2, 2], auto_pad="SAME_LOWER"
    )
    conv_case("conv_same_upper_stride1", [1, 2, 7, 6], [3, 2, 2, 2], kernel_shape=[2, 2], auto_pad="SAME_UPPER")
    conv_case("conv_valid", [1, 3, 10, 9], [2, 3, 3, 2], kernel_shape=[3, 2], auto_pad="VALID")
    conv_case("conv_pointwise", [1, 8, 5, 7], [16, 8, 1, 1], kernel_shape=[1, 1])
    conv_case("conv_pointwise_batch2", [2, 5, 3, 3], [4, 5, 1, 1], kernel_shape=[1, 1])
    conv_case("conv_pointwise_stride2", [1, 4, 9, 7], [6, 4, 1, 1], kernel_shape=[1, 1], strides=[2, 2])
    conv_case("conv_pointwise_padded", [1, 4, 5, 6], [3, 4, 1, 1], kernel_shape=[1, 1], pads=[1, 0, 0, 2])
    conv_case("conv_kernel_1x5", [1, 3, 9, 11], [4, 3, 1, 5], kernel_shape=[1, 5], pads=[0, 2, 0, 2])
    conv_case("conv_kernel_5x1_stride_1x2", [1, 3, 11, 9], [4, 3, 5, 1], kernel_shape=[5, 1], strides=[1, 2])
    # 16 output channels or more run on the CPU's channel kernel: in place along rows 8 wide or
    # more at stride 1 or 2, lowered across images otherwise; 40 and 24 channels end in a
    # partial panel.
    for name, x_shape, w_shape, attrs in [
        ("conv_channels_in_place", [2, 8, 13, 19], [40, 8, 3, 3], dict(pads=[1, 1, 1, 1])),
        ("conv_channels_stride2_asymmetric_pads", [1, 6, 21, 25], [32, 6, 3, 3], dict(strides=[2, 2], pads=[1, 0, 1, 2])),
        ("conv_channels_narrow_across_images", [3, 20, 5, 4], [24, 20, 3, 3], dict(strides=[2, 2], pads=[1, 1, 1, 1])),
        ("conv_channels_one_column", [5, 16, 3, 3], [48, 16, 3, 3], dict(bias=False)),
        ("conv_channels_stride3_dilation2", [1, 4, 30, 31], [16, 4, 3, 3], dict(strides=[3, 3], dilations=[2, 2], pads=[2, 2, 2, 2])),
        ("conv_channels_groups", [1, 12, 10, 12], [36, 6, 3, 3], dict(pads=[1, 1, 1, 1], group=2)),
        ("conv_channels_pointwise", [2, 24, 9, 11], [64, 24, 1, 1], {}),
        # 360 taps: two passes over the taps, the sums carried between them.
        ("conv_channels_two_passes", [1, 40, 12, 14], [48, 40, 3, 3], dict(pads=[1, 1, 1, 1])),
        ("conv_channels_three_passes_stride2", [2, 70, 17, 19], [32, 70, 3, 3], dict(strides=[2, 2])),
        ("conv_channels_big_pads", [1, 4, 4, 5], [16, 4, 3, 3], dict(pads=[3, 2, 1, 4])),
        # Rows whose window reaches into the top or bottom padding skip the taps there (a 7x1
        # conv on 8 rows, as in FaceNet's block17), over two passes of the taps.
        ("conv_channels_7x1_two_passes", [2, 40, 8, 9], [24, 40, 7, 1], dict(pads=[3, 0, 3, 0])),
        # No input channels: the output is the bias.
        ("conv_no_input_channels", [1, 0, 4, 5], [16, 0, 3, 3], dict(pads=[1, 1, 1, 1])),
        # An empty batch: an empty output.
        ("conv_empty_batch", [0, 3, 4, 9], [16, 3, 3, 3], dict(pads=[1, 1, 1, 1])),
        # Stride-1 convs with fewer than 16 output channels, or 24 columns wide or more over
        # fewer than 64 taps, run on the column kernel in blocks that span output rows over the
        # padded input: padded and not, a last block of 1 or 13 positions, panels of 1 to 8
        # channels, two ranges of blocks and the panels shared out (batch 1), groups with
        # dilation and asymmetric pads, non-square kernels.
        ("conv_flat_17_pad1", [2, 8, 17, 17], [12, 8, 3, 3], dict(pads=[1, 1, 1, 1])),
        ("conv_flat_35_ranges", [1, 64, 35, 35], [12, 64, 3, 3], dict(pads=[1, 1, 1, 1])),
        ("conv_flat_35_pad1", [1, 4, 35, 35], [10, 4, 3, 3], dict(pads=[1, 1, 1, 1])),
        ("conv_flat_36_unpadded", [1, 5, 38, 38], [16, 5, 3, 3], {}),
        ("conv_flat_group2_dilation2", [2, 6, 21, 19], [6, 3, 3, 3], dict(dilations=[2, 2], pads=[2, 1, 2, 3], group=2)),
        ("conv_flat_one_channel", [1, 3, 12, 12], [1, 3, 3, 3], dict(pads=[1, 1, 1, 1])),
        ("conv_flat_kernel_1x3", [1, 2, 9, 17], [2, 2, 1, 3], dict(pads=[0, 1, 0, 1])),
        # Stride 2 over the input's four phases: FaceNet's first conv (27 taps, 32 channels)
        # on an odd height, with symmetric and asymmetric pads, a 5x5 kernel, groups.
        ("conv_flat_stride2_27_taps", [2, 3, 41, 50], [32, 3, 3, 3], dict(strides=[2, 2])),
        ("conv_flat_stride2_pads", [1, 5, 30, 37], [12, 5, 3, 3], dict(strides=[2, 2], pads=[1, 1, 1, 1])),
        ("conv_flat_stride2_5x5_asymmetric_pads", [1, 4, 33, 40], [8, 4, 5, 5], dict(strides=[2, 2], pads=[2, 1, 1, 2])),
        ("conv_flat_stride2_group2", [1, 6, 34, 35], [10, 3, 3, 3], dict(strides=[2, 2], pads=[0, 1, 1, 0], group=2)),
        # Maps smaller than 32 positions with 16 output channels or more, over images that fill
        # 32 positions at least, run on the column kernel with the batch folded into the positions
        # (blocks of 32 that span images): 4x4, 5x5, 3x3 and 2x2 maps, a last block of 16, 18 or
        # 4 positions, a last panel of 4 channels, stride 2, asymmetric pads, groups, a 1x1 conv.
        # At batch 1 such a map stays on the channel kernel.
        ("conv_batched_4x4_batch3", [3, 40, 4, 4], [20, 40, 3, 3], dict(pads=[1, 1, 1, 1])),
        ("conv_batched_5x5_batch2", [2, 16, 5, 5], [24, 16, 3, 3], dict(pads=[1, 1, 1, 1])),
        ("conv_batched_stride2_to_4x4", [5, 12, 8, 8], [16, 12, 3, 3], dict(strides=[2, 2], pads=[1, 1, 1, 1])),
        ("conv_batched_stride2_to_3x3", [4, 16, 8, 8], [32, 16, 3, 3], dict(strides=[2, 2])),
        ("conv_batched_asymmetric_pads", [3, 16, 5, 4], [16, 16, 3, 3], dict(pads=[0, 2, 1, 0])),
        ("conv_batched_groups", [3, 12, 4, 4], [32, 6, 3, 3], dict(pads=[1, 1, 1, 1], group=2)),
        ("conv_batched_pointwise_2x2", [9, 40, 2, 2], [24, 40, 1, 1], dict(bias=False)),
        ("conv_small_map_batch1", [1, 20, 4, 4], [16, 20, 3, 3], dict(pads=[1, 1, 1, 1])),
        # 3x3 stride-1 convs with enough channels and tiles run by Winograd's F(2x2, 3x3) on
        # the CPU: odd output heights and widths (a last tile half outside), items that span
        # images (batch 4), three vectors of tiles per tile row (33 tiles), no padding and
        # asymmetric padding, a last panel of 4 channels.
        ("conv_winograd_odd_batch4", [4, 64, 15, 17], [64, 64, 3, 3], dict(pads=[1, 1, 1, 1])),
        ("conv_winograd_f2_unpadded", [2, 48, 12, 36], [52, 48, 3, 3], {}),
        ("conv_winograd_f2_wide_asymmetric_pads", [1, 32, 14, 66], [48, 32, 3, 3], dict(pads=[0, 1, 1, 0])),
        # Maps of 16 and more a side on F(4x4, 3x3): the same, and last tiles with one, two
        # and three of their four output rows and columns inside, and two vectors of tiles
        # per tile row (18 tiles).
        ("conv_winograd_unpadded", [2, 48, 20, 36], [52, 48, 3, 3], {}),
        ("conv_winograd_wide_asymmetric_pads", [1, 32, 40, 66], [48, 32, 3, 3], dict(pads=[0, 1, 1, 0])),
        ("conv_winograd_f4_odd", [1, 64, 19, 37], [40, 64, 3, 3], dict(pads=[1, 1, 1, 1])),
        ("conv_winograd_f4_two_vectors_of_tiles", [1, 40, 17, 66], [40, 40, 3, 3], dict(pads=[1, 1, 1, 1])),
    ]:
        conv_case(name, x_shape, w_shape, kernel_shape=w_shape[2:], **attrs)
    conv_case("conv_group2", [1, 4, 8, 8], [6, 2, 3, 3], kernel_shape=[3, 3], pads=[1, 1, 1, 1], group=2)
    conv_case("conv_group3_no_bias", [2, 6, 7, 5], [9, 2, 2, 2], bias=False, kernel_shape=[2, 2], group=3)
    conv_case("conv_depthwise", [1, 6, 9, 9], [6, 1, 3, 3], kernel_shape=[3, 3], pads=[1, 1, 1, 1], group=6)
    conv_case(
        "conv_depthwise_stride2_dilation2",
        [1, 5, 13, 11],
        [5, 1, 3, 3],
        kernel_shape=[3, 3],
        strides=[2, 2],
        dilations=[2, 2],
        pads=[1, 2, 0, 1],
        group=5,
    )
    conv_case(
        "conv_depthwise_same_upper_batch2",
        [2, 4, 7, 8],
        [4, 1, 3, 3],
        bias=False,
        kernel_shape=[3, 3],
        strides=[2, 2],
        auto_pad="SAME_UPPER",
        group=4,
    )
    conv_case("conv_depth_multiplier2", [1, 3, 8, 8], [6, 1, 3, 3], kernel_shape=[3, 3], pads=[1, 1, 1, 1], group=3)
    conv_case("conv_batch3", [3, 3, 7, 7], [4, 3, 3, 3], kernel_shape=[3, 3])
    conv_case("conv_1x1_map_pointwise", [2, 5, 1, 1], [7, 5, 1, 1], kernel_shape=[1, 1])
    conv_case("conv_1x1_map_3x3_pad1", [1, 4, 1, 1], [3, 4, 3, 3], kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    conv_case("conv_kernel_covers_input", [2, 3, 3, 3], [5, 3, 3, 3], kernel_shape=[3, 3])
    # Taps that only ever read padding, which the CPU backend cuts off (`cpu/trim.rs`): both
    # ends of both axes, one axis, stride 2, dilation 2, groups, a batch, a channel-kernel
    # sized conv (dlib-resnet-128's last 3x3 conv over a 1x1 map).
    conv_case("conv_dead_taps_5x5_on_2x2", [1, 4, 2, 2], [3, 4, 5, 5], kernel_shape=[5, 5], pads=[2, 2, 2, 2])
    conv_case("conv_dead_taps_rows_only", [2, 3, 1, 6], [4, 3, 3, 3], kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    conv_case("conv_dead_taps_asymmetric_pads", [1, 3, 2, 5], [4, 3, 5, 3], kernel_shape=[5, 3], pads=[3, 1, 1, 1])
    conv_case("conv_dead_taps_stride2", [1, 3, 1, 5], [4, 3, 3, 3], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    conv_case("conv_dead_taps_dilation2", [1, 3, 2, 2], [4, 3, 3, 3], kernel_shape=[3, 3], dilations=[2, 2], pads=[2, 2, 2, 2])
    conv_case("conv_dead_taps_group2", [1, 4, 1, 1], [6, 2, 3, 3], kernel_shape=[3, 3], group=2, pads=[1, 1, 1, 1])
    conv_case("conv_dead_taps_1x1_map_batch16", [16, 64, 1, 1], [64, 64, 3, 3], kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    conv_case("conv_odd_sizes", [1, 17, 13, 19], [33, 17, 3, 3], kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    # 10000 output columns with k = 27: several im2col column tiles.
    # k = 41·5·5 = 1025 gives the smallest tile (64 columns): 90 columns in two tiles, for
    # each of 2 images and 2 groups.
    conv_case(
        "conv_min_tile_group2_batch2", [2, 82, 9, 10], [6, 41, 5, 5], kernel_shape=[5, 5], pads=[2, 2, 2, 2], group=2
    )
    conv_case("conv_pointwise_group2_batch2", [2, 6, 4, 5], [4, 3, 1, 1], kernel_shape=[1, 1], group=2)
    # (auto_pad SAME_* with dilations > 1: onnxruntime refuses it, so there is no case.)
    conv_case(
        "conv_same_upper_stride_gt_kernel", [1, 2, 11, 10], [3, 2, 2, 2], kernel_shape=[2, 2], strides=[3, 3], auto_pad="SAME_UPPER"
    )
    conv_case("conv_kernel_5_on_3x3_pad1", [1, 2, 3, 3], [2, 2, 5, 5], kernel_shape=[5, 5], pads=[1, 1, 1, 1])
    conv_case("conv_100x100_3x3", [1, 3, 100, 100], [4, 3, 3, 3], kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    # k = 3 gives the largest tile (8192 columns); 92x92 = 8464 and 91x91 = 8281 columns
    # cross it (im2col path and the direct pointwise path).
    conv_case("conv_90x90_1x1_padded", [1, 3, 90, 90], [2, 3, 1, 1], kernel_shape=[1, 1], pads=[1, 1, 1, 1])
    conv_case("conv_91x91_pointwise", [1, 3, 91, 91], [2, 3, 1, 1], kernel_shape=[1, 1])


# ---------------------------------------------------------------------------------------------
# Activations


def unary_case(name, op, shape=(2, 3, 4, 5), scale=2.0, opset=DEFAULT_OPSET, **attrs):
    r = rng_for(name)
    x = normal(r, *shape, scale=scale)
    case(name, [helper.make_node(op, ["x"], ["y"], name=op.lower(), **attrs)], [("x", x)], ["y"], opset=opset)


def activation_cases():
    unary_case("relu", "Relu")
    unary_case("relu_2d", "Relu", shape=(3, 17))
    unary_case("leaky_relu_default_alpha", "LeakyRelu")
    unary_case("leaky_relu_alpha_0_2", "LeakyRelu", alpha=0.2)
    unary_case("sigmoid", "Sigmoid", scale=4.0)
    unary_case("sigmoid_saturated", "Sigmoid", shape=(4, 9), scale=40.0)
    unary_case("tanh", "Tanh", scale=2.0)
    unary_case("tanh_saturated", "Tanh", shape=(4, 9), scale=30.0)
    unary_case("identity", "Identity", shape=(2, 3, 5))
    unary_case("relu_odd_size", "Relu", shape=(1, 3, 17, 23))

    def prelu(name, x_shape, slope):
        r = rng_for(name)
        x = normal(r, *x_shape)
        node = helper.make_node("PRelu", ["x", "slope"], ["y"], name="prelu")
        case(name, [node], [("x", x)], ["y"], {"slope": slope})

    r = rng_for("prelu-slopes")
    prelu("prelu_per_channel", [2, 4, 5, 6], f32(r.uniform(0.05, 0.5, (4, 1, 1))))
    prelu("prelu_scalar_slope", [1, 3, 4, 5], f32([0.25]))
    prelu("prelu_rank0_slope", [1, 3, 4, 5], f32(np.array(0.1)))
    prelu("prelu_2d", [3, 7], f32(r.uniform(0.05, 0.5, (7,))))
    prelu("prelu_last_axis_slope", [1, 3, 4, 5], f32(r.uniform(0.05, 0.5, (5,))))
    # Slope as a second graph input, not an initializer.
    name = "prelu_slope_input"
    rr = rng_for(name)
    case(
        name,
        [helper.make_node("PRelu", ["x", "slope"], ["y"], name="prelu")],
        [("x", normal(rr, 2, 3, 4)), ("slope", f32(rr.uniform(0.05, 0.5, (3, 1))))],
        ["y"],
    )

    # Clip
    def clip(name, inputs_for_node, init, opset, **attrs):
        r = rng_for(name)
        x = normal(r, 2, 3, 4, 5, scale=2.0)
        node = helper.make_node("Clip", inputs_for_node, ["y"], name="clip", **attrs)
        case(name, [node], [("x", x)], ["y"], init, opset=opset)

    clip("clip_opset6_attributes", ["x"], None, 6, min=-0.5, max=0.7)
    clip("clip_opset6_min_only", ["x"], None, 6, min=-0.3)
    clip("clip_opset13_min_max", ["x", "min", "max"], {"min": f32(np.array(-0.5)), "max": f32(np.array(0.7))}, 13)
    clip("clip_opset13_min_only", ["x", "min"], {"min": f32(np.array(-0.2))}, 13)
    clip("clip_opset13_max_only", ["x", "", "max"], {"max": f32(np.array(0.4))}, 13)
    clip("clip_opset13_no_bounds", ["x"], None, 13)
    clip("clip_opset11_min_max", ["x", "min", "max"], {"min": f32(np.array(0.0)), "max": f32(np.array(6.0))}, 11)


# ---------------------------------------------------------------------------------------------
# Pooling


def pool_case(name, op, x_shape, opset=DEFAULT_OPSET, **attrs):
    r = rng_for(name)
    x = normal(r, *x_shape)
    node = helper.make_node(op, ["x"], ["y"], name=op.lower(), **attrs)
    case(name, [node], [("x", x)], ["y"], opset=opset)


def pool_cases():
    # The window most cases slide: 3x3, stride 2.
    k3s2 = dict(kernel_shape=[3, 3], strides=[2, 2])
    pads1 = dict(pads=[1, 1, 1, 1])
    pool_case("maxpool_2x2_s2", "MaxPool", [1, 3, 8, 8], kernel_shape=[2, 2], strides=[2, 2])
    pool_case("maxpool_2x2_s2_odd_floor", "MaxPool", [1, 2, 7, 9], kernel_shape=[2, 2], strides=[2, 2])
    pool_case("maxpool_3x3_s2", "MaxPool", [2, 2, 9, 11], **k3s2)
    pool_case("maxpool_3x3_s2_ceil", "MaxPool", [1, 2, 8, 10], **k3s2, ceil_mode=1)
    pool_case("maxpool_2x2_s2_ceil_odd", "MaxPool", [1, 2, 7, 9], kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1)
    pool_case("maxpool_pads", "MaxPool", [1, 2, 7, 7], **k3s2, **pads1)
    pool_case("maxpool_asymmetric_pads", "MaxPool", [1, 2, 6, 7], kernel_shape=[3, 2], pads=[0, 1, 2, 0])
    # The last window would start inside the end padding: onnxruntime drops it.
    pool_case("maxpool_ceil_pads", "MaxPool", [1, 2, 6, 6], **k3s2, **pads1, ceil_mode=1)
    pool_case("maxpool_same_upper", "MaxPool", [1, 3, 9, 10], **k3s2, auto_pad="SAME_UPPER")
    pool_case("maxpool_same_upper_2x2_odd", "MaxPool", [1, 3, 11, 7], kernel_shape=[2, 2], strides=[2, 2], auto_pad="SAME_UPPER")
    pool_case("maxpool_same_lower", "MaxPool", [1, 3, 9, 10], kernel_shape=[4, 3], strides=[2, 2], auto_pad="SAME_LOWER")
    pool_case("maxpool_valid", "MaxPool", [1, 2, 8, 7], kernel_shape=[3, 2], strides=[2, 2], auto_pad="VALID")
    pool_case("maxpool_dilation2", "MaxPool", [1, 2, 10, 10], kernel_shape=[2, 2], dilations=[2, 2])
    pool_case(
        "maxpool_dilation2_stride2_pads", "MaxPool", [1, 2, 11, 9], kernel_shape=[3, 2], strides=[2, 2], dilations=[2, 2], **pads1
    )
    pool_case(
        "maxpool_same_upper_stride_gt_kernel", "MaxPool", [1, 2, 11, 10], kernel_shape=[2, 2], strides=[3, 3], auto_pad="SAME_UPPER"
    )
    pool_case("maxpool_nonsquare", "MaxPool", [1, 2, 8, 11], kernel_shape=[2, 3], strides=[1, 2])
    pool_case("maxpool_1x1_map", "MaxPool", [1, 4, 1, 1], kernel_shape=[1, 1])
    # Outputs narrower than 32 with 16 planes or more: max-pooled sixteen planes at a time on
    # AVX-512 (the last planes, fewer than sixteen, one by one), as R-Net's and O-Net's are.
    pool_case("maxpool_planes_in_groups_ceil", "MaxPool", [2, 20, 22, 22], **k3s2, ceil_mode=1)
    pool_case(
        "maxpool_planes_in_groups_dilation_pads", "MaxPool", [1, 33, 11, 9],
        kernel_shape=[3, 2], strides=[2, 2], dilations=[2, 2], **pads1,
    )
    pool_case("maxpool_planes_in_groups_same_upper", "MaxPool", [3, 16, 8, 8], **k3s2, auto_pad="SAME_UPPER")

    pool_case("avgpool_2x2_s2", "AveragePool", [1, 3, 8, 8], kernel_shape=[2, 2], strides=[2, 2])
    pool_case("avgpool_pads_exclude_pad", "AveragePool", [1, 2, 7, 7], **k3s2, **pads1, count_include_pad=0)
    pool_case("avgpool_pads_include_pad", "AveragePool", [1, 2, 7, 7], **k3s2, **pads1, count_include_pad=1)
    pool_case(
        "avgpool_asymmetric_pads_include_pad", "AveragePool", [1, 2, 6, 7],
        kernel_shape=[3, 3], pads=[0, 2, 1, 0], count_include_pad=1,
    )
    pool_case("avgpool_ceil", "AveragePool", [1, 2, 8, 10], **k3s2, ceil_mode=1)
    pool_case("avgpool_ceil_pads_exclude_pad", "AveragePool", [1, 2, 6, 9], **k3s2, **pads1, ceil_mode=1, count_include_pad=0)
    pool_case("avgpool_ceil_pads_include_pad", "AveragePool", [1, 2, 6, 9], **k3s2, **pads1, ceil_mode=1, count_include_pad=1)
    pool_case("avgpool_same_upper", "AveragePool", [1, 3, 9, 10], **k3s2, auto_pad="SAME_UPPER")
    pool_case("avgpool_same_upper_include_pad", "AveragePool", [1, 3, 9, 10], **k3s2, auto_pad="SAME_UPPER", count_include_pad=1)
    pool_case("avgpool_nonsquare_batch2", "AveragePool", [2, 3, 7, 11], kernel_shape=[3, 2], strides=[2, 3])

    # Averaged sixteen planes at a time, as dlib-resnet-128's are: divisors with and without
    # the padding, windows cut by ceil mode, SAME_UPPER, a window over the whole map (FaceNet's).
    pool_case(
        "avgpool_planes_in_groups_include_pad", "AveragePool", [1, 18, 7, 9], **k3s2, **pads1,
        count_include_pad=1,
    )
    pool_case(
        "avgpool_planes_in_groups_ceil_exclude_pad", "AveragePool", [2, 9, 6, 9], **k3s2, **pads1,
        ceil_mode=1, count_include_pad=0,
    )
    pool_case("avgpool_planes_in_groups_same_upper", "AveragePool", [1, 35, 9, 10], **k3s2, auto_pad="SAME_UPPER")
    pool_case("avgpool_planes_in_groups_whole_map", "AveragePool", [2, 24, 3, 3], kernel_shape=[3, 3])
    pool_case("global_avgpool", "GlobalAveragePool", [2, 3, 5, 7])
    pool_case("global_avgpool_1x1", "GlobalAveragePool", [1, 4, 1, 1])
    pool_case("global_avgpool_large", "GlobalAveragePool", [1, 2, 33, 31])
    pool_case("global_maxpool", "GlobalMaxPool", [2, 3, 5, 7])
    pool_case("global_maxpool_1x1", "GlobalMaxPool", [1, 4, 1, 1])


# ---------------------------------------------------------------------------------------------
# Element-wise binary ops and BatchNormalization


def binary_cases():
    def binary(name, op, a, b, a_const=False, b_const=False, opset=DEFAULT_OPSET):
        inputs, init = [], {}
        for n, v, const in (("a", a, a_const), ("b", b, b_const)):
            if const:
                init[n] = v
            else:
                inputs.append((n, v))
        node = helper.make_node(op, ["a", "b"], ["y"], name=op.lower())
        case(name, [node], inputs, ["y"], init, opset=opset)

    for op in ("Add", "Sub", "Mul", "Div"):
        low = op.lower()
        r = rng_for(low)

        def second(*shape):
            return away_from_zero(r, *shape) if op == "Div" else normal(r, *shape)

        binary(f"{low}_same_shape", op, normal(r, 2, 3, 4, 5), second(2, 3, 4, 5))
        binary(f"{low}_scalar_initializer", op, normal(r, 2, 3, 4), second(), b_const=True)
        binary(f"{low}_scalar_first", op, f32(np.array(1.5)), second(3, 4), a_const=True)
        binary(f"{low}_one_element", op, normal(r, 2, 3, 4), second(1), b_const=True)
        binary(f"{low}_per_channel", op, normal(r, 2, 4, 5, 6), second(4, 1, 1), b_const=True)
        binary(f"{low}_last_axis", op, normal(r, 2, 3, 5), second(5))
        binary(f"{low}_broadcast_both_ways", op, normal(r, 2, 1, 4), second(3, 1))
        binary(f"{low}_broadcast_4d_both_ways", op, normal(r, 1, 3, 1, 5), second(2, 1, 4, 1))
        binary(f"{low}_lower_rank_first", op, normal(r, 5) if op != "Div" else second(5), second(2, 3, 4, 5))
    r = rng_for("add-large")
    binary("add_broadcast_batch_channel", "Add", normal(r, 2, 8, 10, 13), normal(r, 8, 1, 1), b_const=True)
    binary("add_broadcast_last_dim_1", "Add", normal(r, 3, 1), normal(r, 2, 1, 1))
    binary("mul_broadcast_rank5", "Mul", normal(r, 2, 1, 3, 1, 2), normal(r, 4, 1, 2, 1))
    binary("add_opset7", "Add", normal(r, 2, 3), normal(r, 3), opset=7)

    def batch_norm(name, x_shape, epsilon=None):
        r = rng_for(name)
        c = x_shape[1]
        init = {
            "scale": f32(r.uniform(0.5, 1.5, c)),
            "bias": normal(r, c),
            "mean": normal(r, c),
            "var": f32(r.uniform(0.1, 2.0, c)),
        }
        attrs = {} if epsilon is None else {"epsilon": epsilon}
        node = helper.make_node(
            "BatchNormalization", ["x", "scale", "bias", "mean", "var"], ["y"], name="bn", **attrs
        )
        case(name, [node], [("x", normal(r, *x_shape))], ["y"], init)

    batch_norm("batchnorm_4d", [2, 3, 4, 5])
    batch_norm("batchnorm_epsilon_1e-3", [1, 5, 3, 7], epsilon=1e-3)
    batch_norm("batchnorm_2d", [4, 6])
    batch_norm("batchnorm_3d", [2, 3, 7])


# ---------------------------------------------------------------------------------------------
# Gemm and MatMul


def gemm_cases():
    def a_and_b(r, a_shape, b_shape, b_const):
        """The graph inputs and initializers for the operands "a" (an input) and "b"."""
        inputs = [("a", normal(r, *a_shape))]
        init = {}
        b = normal(r, *b_shape)
        if b_const:
            init["b"] = b
        else:
            inputs.append(("b", b))
        return inputs, init

    def gemm(name, a_shape, b_shape, c_shape=None, b_const=True, **attrs):
        r = rng_for(name)
        inputs, init = a_and_b(r, a_shape, b_shape, b_const)
        node_inputs = ["a", "b"]
        if c_shape is not None:
            init["c"] = normal(r, *c_shape)
            node_inputs.append("c")
        node = helper.make_node("Gemm", node_inputs, ["y"], name="gemm", **attrs)
        case(name, [node], inputs, ["y"], init)

    gemm("gemm_bias_row", [3, 5], [5, 4], [4])
    gemm("gemm_no_c", [3, 5], [5, 4])
    gemm("gemm_trans_a", [5, 3], [5, 4], [4], transA=1)
    gemm("gemm_trans_b", [3, 5], [4, 5], [4], transB=1)
    gemm("gemm_trans_both", [5, 3], [4, 5], [3, 4], transA=1, transB=1)
    gemm("gemm_alpha_beta_full_c", [3, 5], [5, 4], [3, 4], alpha=0.5, beta=2.0)
    gemm("gemm_c_scalar", [3, 5], [5, 4], [], beta=0.75)
    gemm("gemm_c_one_element", [3, 5], [5, 4], [1])
    gemm("gemm_c_column", [3, 5], [5, 4], [3, 1])
    gemm("gemm_c_row_2d", [3, 5], [5, 4], [1, 4], alpha=-1.5)
    gemm("gemm_beta_zero", [3, 5], [5, 4], [3, 4], beta=0.0)
    gemm("gemm_b_input", [4, 6], [6, 3], [3], b_const=False)
    gemm("gemm_b_input_trans_b", [4, 6], [3, 6], [3], b_const=False, transB=1)
    gemm("gemm_large", [64, 70], [80, 70], [80], transB=1)
    gemm("gemm_vector_rows", [1, 17], [17, 9], [9])
    # Constant weights over 16 columns or more, under 32 rows and at 32, the shapes of FaceNet's
    # last layer (16 x 1792 by 1792 x 512). On the CPU such weights of 2 MiB or more run as a
    # 1x1 conv (alpha into the weights, beta·C into the biases); cpu/matmul.rs's unit test
    # holds that path to SGEMM's on these small ones, and the FaceNet parity tests run it.
    gemm("gemm_const_b_few_rows", [5, 40], [40, 24], [24])
    gemm("gemm_const_b_one_row", [1, 300], [300, 33], [1, 33], alpha=0.5, beta=-2.0)
    gemm("gemm_const_b_trans_b_scalar_c", [7, 20], [18, 20], [], transB=1, beta=0.75)
    gemm("gemm_const_b_full_c", [6, 20], [20, 16], [6, 16], beta=1.5)
    gemm("gemm_const_b_no_c_alpha", [31, 64], [64, 48], alpha=-1.25)
    gemm("gemm_const_b_32_rows", [32, 64], [64, 48], [48])

    def matmul(name, a_shape, b_shape, b_const=False):
        inputs, init = a_and_b(rng_for(name), a_shape, b_shape, b_const)
        case(name, [helper.make_node("MatMul", ["a", "b"], ["y"], name="matmul")], inputs, ["y"], init)

    matmul("matmul_2d", [3, 5], [5, 4])
    matmul("matmul_2d_const", [3, 5], [5, 4], b_const=True)
    matmul("matmul_batched_3d", [2, 3, 4], [2, 4, 5])
    matmul("matmul_batched_rhs_2d", [2, 3, 4, 5], [5, 6], b_const=True)
    matmul("matmul_batched_lhs_2d", [4, 5], [3, 5, 2])
    matmul("matmul_broadcast_batch", [2, 1, 3, 4], [3, 4, 5])
    matmul("matmul_broadcast_both_batches", [2, 1, 3, 4], [1, 5, 4, 2])
    matmul("matmul_1d_lhs", [5], [2, 5, 3])
    matmul("matmul_1d_rhs", [2, 3, 5], [5])
    matmul("matmul_1d_both", [7], [7])
    matmul("matmul_1d_lhs_2d_rhs", [4], [4, 6])
    matmul("matmul_large", [64, 70], [70, 80], b_const=True)

    # MatMul + Add that must not become a Gemm (a 3-D input, a full non-row bias), and one with
    # the bias as the Add's first operand.
    for name, x, b, bias_first in (
        ("matmul_add_3d_input", (2, 3, 5), (4,), False),
        ("matmul_add_full_bias", (3, 5), (3, 4), False),
        ("matmul_add_bias_first", (3, 5), (4,), True),
    ):
        r = rng_for(name)
        add = helper.make_node("Add", ["b", "t"] if bias_first else ["t", "b"], ["y"], name="add")
        case(
            name,
            [helper.make_node("MatMul", ["x", "w"], ["t"], name="mm"), add],
            [("x", normal(r, *x))],
            ["y"],
            {"w": normal(r, 5, 4), "b": normal(r, *b)},
        )


# ---------------------------------------------------------------------------------------------
# Layout ops


def layout_cases():
    def single(name, op, x_shape, extra_inputs=(), init=None, opset=DEFAULT_OPSET, **attrs):
        r = rng_for(name)
        node = helper.make_node(op, ["x", *extra_inputs], ["y"], name=op.lower(), **attrs)
        case(name, [node], [("x", normal(r, *x_shape))], ["y"], init, opset=opset)

    for axis in (0, 1, 2, 4, -1, -3):
        single(f"flatten_axis_{axis}".replace("-", "neg"), "Flatten", [2, 3, 4, 5], axis=axis)
    single("flatten_default_axis", "Flatten", [2, 3, 4, 5])

    for name, spec in (
        ("reshape_0_neg1", [0, -1]),
        ("reshape_neg1_first", [-1, 10]),
        ("reshape_0_0_neg1", [0, 0, -1]),
        ("reshape_0_neg1_5", [0, -1, 5]),
        ("reshape_explicit_5d", [2, 3, 2, 2, 5]),
        ("reshape_to_1d", [-1]),
    ):
        single(name, "Reshape", [2, 3, 4, 5], ["shape"], {"shape": i64(spec)})
    # Shape from a Constant node rather than an initializer.
    @x_case("reshape_shape_from_constant", x=[2, 3, 4])
    def _(r, init):
        return [
            helper.make_node(
                "Constant", [], ["shape"], name="shape_const", value=numpy_helper.from_array(i64([3, -1]), "v")
            ),
            helper.make_node("Reshape", ["x", "shape"], ["y"], name="reshape"),
        ]

    for name, shape, perm in (
        ("transpose_nchw_to_nhwc", [2, 3, 4, 5], [0, 2, 3, 1]),
        ("transpose_nhwc_to_nchw", [2, 4, 5, 3], [0, 3, 1, 2]),
        ("transpose_swap_hw", [1, 3, 4, 5], [0, 1, 3, 2]),
        ("transpose_3d", [2, 3, 4], [2, 0, 1]),
        ("transpose_2d", [3, 7], [1, 0]),
        ("transpose_5d", [2, 3, 2, 4, 3], [0, 2, 1, 4, 3]),
        ("transpose_identity_perm", [2, 3, 4], [0, 1, 2]),
    ):
        single(name, "Transpose", shape, perm=perm)
    single("transpose_no_perm_4d", "Transpose", [2, 3, 4, 5])
    single("transpose_no_perm_2d", "Transpose", [3, 5])

    def softmax(name, shape, opset, scale=2.0, **attrs):
        r = rng_for(name)
        node = helper.make_node("Softmax", ["x"], ["y"], name="softmax", **attrs)
        case(name, [node], [("x", normal(r, *shape, scale=scale))], ["y"], opset=opset)

    # Opset < 13: the input is coerced to 2-D at `axis`, softmax over all trailing dims.
    softmax("softmax_opset12_axis1_4d", [2, 3, 4, 5], 12, axis=1)
    softmax("softmax_opset11_default_axis_3d", [2, 3, 4], 11)
    softmax("softmax_opset11_axis2_4d", [2, 3, 4, 5], 11, axis=2)
    softmax("softmax_opset13_axis1_4d", [2, 3, 4, 5], 13, axis=1)
    softmax("softmax_opset13_axis_neg2", [2, 3, 4, 5], 13, axis=-2)
    softmax("softmax_opset13_default_axis", [2, 3, 4, 5], 13)
    softmax("softmax_opset13_2d", [4, 10], 13)
    softmax("softmax_opset13_large_values", [3, 7], 13, scale=60.0)

    def concat(name, shapes, axis, const_index=None):
        r = rng_for(name)
        inputs, init, names = [], {}, []
        for i, s in enumerate(shapes):
            n = f"x{i}"
            names.append(n)
            if i == const_index:
                init[n] = normal(r, *s)
            else:
                inputs.append((n, normal(r, *s)))
        node = helper.make_node("Concat", names, ["y"], name="concat", axis=axis)
        case(name, [node], inputs, ["y"], init)

    concat("concat_axis1", [[2, 3, 4, 5], [2, 2, 4, 5]], 1)
    concat("concat_axis_neg1_three", [[2, 3, 4], [2, 3, 1], [2, 3, 5]], -1)
    concat("concat_axis0_with_initializer", [[2, 3], [1, 3]], 0, const_index=1)
    concat("concat_axis2_4d", [[1, 2, 3, 4], [1, 2, 5, 4]], 2)
    concat("concat_single_input", [[2, 3]], 1)

    # Dropout in inference is the identity.
    single("dropout_opset13_ratio_input", "Dropout", [2, 3, 4], ["ratio"], {"ratio": f32(np.array(0.3))})
    single("dropout_opset13_no_ratio", "Dropout", [2, 3, 4])
    single("dropout_opset10_ratio_attr", "Dropout", [2, 3, 4], opset=10, ratio=0.5)
    name = "dropout_opset13_mask_unused"
    r = rng_for(name)
    case(
        name,
        [helper.make_node("Dropout", ["x"], ["y", "mask"], name="dropout")],
        [("x", normal(r, 3, 4))],
        ["y"],
    )

    def pad(name, x_shape, pads, value=None, opset=DEFAULT_OPSET):
        r = rng_for(name)
        init = {"pads": i64(pads)}
        node_inputs = ["x", "pads"]
        if value is not None:
            init["value"] = f32(np.array(value))
            node_inputs.append("value")
        node = helper.make_node("Pad", node_inputs, ["y"], name="pad", mode="constant")
        case(name, [node], [("x", normal(r, *x_shape))], ["y"], init, opset=opset)

    pad("pad_opset11_constant_value", [1, 2, 4, 5], [0, 0, 1, 2, 0, 0, 2, 1], 1.5, opset=11)
    pad("pad_opset11_default_zero", [1, 2, 3, 3], [0, 0, 1, 1, 0, 0, 1, 1], opset=11)
    pad("pad_opset11_negative", [1, 2, 5, 6], [0, 0, -1, 1, 0, 0, 2, -2], -0.5, opset=11)
    pad("pad_opset13_all_dims", [2, 3, 4], [1, 0, 2, 0, 1, 1], 0.25)
    pad("pad_opset13_1d", [7], [2, 3], -2.0)
    pad("pad_opset13_2d_negative_begin", [4, 6], [-2, -1, 1, 0], 3.0)
    name = "pad_opset2_attributes"
    r = rng_for(name)
    case(
        name,
        [helper.make_node("Pad", ["x"], ["y"], name="pad", pads=[0, 1, 1, 0, 2, 0], value=-1.0)],
        [("x", normal(r, 2, 3, 4))],
        ["y"],
        opset=2,
    )

    single("squeeze_opset11_axes_attr", "Squeeze", [2, 1, 3, 1], opset=11, axes=[1, 3])
    single("squeeze_opset11_negative_axes", "Squeeze", [1, 3, 1, 4], opset=11, axes=[-2, 0])
    single("squeeze_opset11_no_axes", "Squeeze", [1, 3, 1, 4], opset=11)
    single("squeeze_opset13_axes_input", "Squeeze", [2, 1, 3, 1], ["axes"], {"axes": i64([3, 1])})
    single("squeeze_opset13_no_axes", "Squeeze", [1, 3, 1, 4])
    single("unsqueeze_opset11_axes_attr", "Unsqueeze", [2, 3], opset=11, axes=[0, 3])
    single("unsqueeze_opset13_axes_input", "Unsqueeze", [2, 3, 4], ["axes"], {"axes": i64([-1, 1])})
    single("unsqueeze_opset13_to_nchw", "Unsqueeze", [5], ["axes"], {"axes": i64([0, 2, 3])})

    # Constant feeding an Add (and a Mul with the value_float form).
    @x_case("constant_tensor_add", x=[2, 3, 4])
    def _(r, init):
        return [
            helper.make_node(
                "Constant", [], ["c"], name="const", value=numpy_helper.from_array(normal(r, 3, 1), "c_value")
            ),
            helper.make_node("Add", ["x", "c"], ["y"], name="add"),
        ]

    @x_case("constant_value_float_mul", x=[2, 5])
    def _(r, init):
        return [
            helper.make_node("Constant", [], ["c"], name="const", value_float=-2.5),
            helper.make_node("Mul", ["x", "c"], ["y"], name="mul"),
        ]

    @x_case("constant_value_floats_sub", x=[4, 3])
    def _(r, init):
        return [
            helper.make_node("Constant", [], ["c"], name="const", value_floats=[0.5, -1.0, 2.0]),
            helper.make_node("Sub", ["c", "x"], ["y"], name="sub"),
        ]


def empty_batch_cases():
    """A batch of no images through the ops a face model uses: empty outputs, no failure."""
    mk = helper.make_node
    for name, nodes in [
        ("empty_batch_max_pool", [mk("MaxPool", ["x"], ["y"], kernel_shape=[3, 3], strides=[2, 2])]),
        ("empty_batch_average_pool", [mk("AveragePool", ["x"], ["y"], kernel_shape=[3, 3], pads=[1, 1, 1, 1])]),
        ("empty_batch_global_average_pool", [mk("GlobalAveragePool", ["x"], ["y"])]),
        ("empty_batch_relu", [mk("Relu", ["x"], ["y"])]),
        ("empty_batch_softmax", [mk("Softmax", ["x"], ["y"], axis=1)]),
        ("empty_batch_flatten", [mk("Flatten", ["x"], ["y"])]),
    ]:
        r = rng_for(name)
        case(name, nodes, [("x", normal(r, 0, 4, 7, 6))], ["y"])
    r = rng_for("empty_batch_matmul")
    case("empty_batch_matmul", [mk("MatMul", ["x", "w"], ["y"])], [("x", normal(r, 0, 8))], ["y"], {"w": normal(r, 8, 5)})


# ---------------------------------------------------------------------------------------------
# Fused graphs (exercise optimize.rs)


def fused_cases():
    def conv(r, name, x, y, m, c, k=3, bias=True, init=None, **attrs):
        init[f"{name}_w"] = conv_weights(r, m, c, k, k)
        inputs = [x, f"{name}_w"]
        if bias:
            init[f"{name}_b"] = normal(r, m, scale=0.5)
            inputs.append(f"{name}_b")
        return helper.make_node("Conv", inputs, [y], name=name, kernel_shape=[k, k], **attrs)

    def bn(r, name, x, y, c, init):
        for p, v in (
            ("scale", f32(r.uniform(0.5, 1.5, c))),
            ("bias", normal(r, c)),
            ("mean", normal(r, c, scale=0.5)),
            ("var", f32(r.uniform(0.2, 2.0, c))),
        ):
            init[f"{name}_{p}"] = v
        return helper.make_node(
            "BatchNormalization",
            [x, f"{name}_scale", f"{name}_bias", f"{name}_mean", f"{name}_var"],
            [y],
            name=name,
            epsilon=1e-3,
        )

    def fc(init, x, y, w, b):
        """A dense layer from `x` into `y`: MatMul by the initializer "w" (= `w`), then Add of "b" (= `b`)."""
        init["w"], init["b"] = w, b
        return [
            helper.make_node("MatMul", [x, "w"], ["mm"], name="fc"),
            helper.make_node("Add", ["mm", "b"], [y], name="fc_bias"),
        ]

    def conv_act(r, init, cout, k, op, name, act=None, **attrs):
        """A Conv from "x", then the activation `op` (node `name`, attributes `act`) into "y"."""
        return [
            conv(r, "conv", "x", "c", cout, k, init=init, **attrs),
            helper.make_node(op, ["c"], ["y"], name=name, **(act or {})),
        ]

    def conv_then(r, init, cout, k, op, const, value, **attrs):
        """A Conv from "x", then `op` of its output and the initializer `const` (= `value`) into "y"."""
        init[const] = value
        return [
            conv(r, "conv", "x", "c", cout, k, init=init, **attrs),
            helper.make_node(op, ["c", const], ["y"], name=op.lower()),
        ]

    @x_case("fused_conv_bn_relu", x=[2, 3, 7, 8])
    def _(r, init):
        return [
            conv(r, "conv", "x", "c", 6, 3, init=init, pads=[1, 1, 1, 1]),
            bn(r, "bn", "c", "b", 6, init),
            helper.make_node("Relu", ["b"], ["y"], name="relu"),
        ]

    @x_case("fused_conv_nobias_bn", x=[1, 4, 9, 9])
    def _(r, init):
        return [conv(r, "conv", "x", "c", 5, 4, bias=False, init=init, strides=[2, 2]), bn(r, "bn", "c", "y", 5, init)]

    @x_case("fused_conv_prelu", x=[1, 3, 10, 12])
    def _(r, init):
        return conv_then(r, init, 8, 3, "PRelu", "slope", f32(r.uniform(0.05, 0.5, (8, 1, 1))))

    @x_case("fused_depthwise_bn_prelu_scalar", x=[1, 4, 6, 7])
    def _(r, init):
        init["slope"] = f32([0.2])
        return [
            conv(r, "dw", "x", "c", 4, 1, bias=False, init=init, group=4, pads=[1, 1, 1, 1]),
            bn(r, "bn", "c", "b", 4, init),
            helper.make_node("PRelu", ["b", "slope"], ["y"], name="prelu"),
        ]

    # The same activations on the channel kernel (16 channels or more).
    @x_case("fused_conv_channels_prelu", x=[2, 5, 9, 12])
    def _(r, init):
        return conv_then(r, init, 36, 5, "PRelu", "slope", f32(r.uniform(0.05, 0.5, (36, 1, 1))), pads=[1, 1, 1, 1])

    @x_case("fused_conv_channels_relu_narrow", x=[3, 6, 4, 4])
    def _(r, init):
        return conv_act(r, init, 20, 6, "Relu", "relu", pads=[1, 1, 1, 1])

    @x_case("fused_conv_channels_leaky_relu", x=[1, 3, 21, 23])
    def _(r, init):
        return conv_act(r, init, 16, 3, "LeakyRelu", "leaky", act={"alpha": 0.1}, strides=[2, 2])

    # The same activations with the batch folded into the positions (maps under 32 positions).
    @x_case("fused_conv_batched_relu", x=[5, 30, 4, 4])
    def _(r, init):
        return conv_act(r, init, 20, 30, "Relu", "relu", pads=[1, 1, 1, 1])

    @x_case("fused_conv_batched_prelu", x=[4, 16, 7, 7])
    def _(r, init):
        return conv_then(r, init, 36, 16, "PRelu", "slope", f32(r.uniform(0.05, 0.5, (36, 1, 1))), strides=[2, 2])

    # The same activations in blocks that span output rows (stride 1, 20 to 35 wide).
    @x_case("fused_conv_flat_relu", x=[2, 4, 35, 35])
    def _(r, init):
        return conv_act(r, init, 12, 4, "Relu", "relu", pads=[1, 1, 1, 1])

    @x_case("fused_conv_flat_prelu", x=[1, 3, 21, 18])
    def _(r, init):
        return conv_then(r, init, 9, 3, "PRelu", "slope", f32(r.uniform(0.05, 0.5, (9, 1, 1))), pads=[2, 2, 2, 2])

    @x_case("fused_conv_flat_leaky_relu", x=[1, 6, 26, 26])
    def _(r, init):
        return conv_act(r, init, 18, 6, "LeakyRelu", "leaky", act={"alpha": 0.1})

    @x_case("fused_conv_leaky_relu", x=[1, 3, 6, 6])
    def _(r, init):
        return conv_act(r, init, 4, 3, "LeakyRelu", "leaky", act={"alpha": 0.1})

    # The CPU's column kernel runs more than 128 taps in ranges, the partial sums carried through
    # the output and the activation applied after the last range only: 300 taps of a 1x1 conv
    # read in place (an 8x8 map, three ranges) and 25·12 = 300 taps of an im2col tile (8
    # channels, under the channel kernel's 16, at stride 2).
    @x_case("fused_conv_pointwise_relu_tap_ranges", x=[2, 300, 8, 8])
    def _(r, init):
        return [
            conv(r, "conv", "x", "c", 24, 300, k=1, init=init),
            helper.make_node("Relu", ["c"], ["y"], name="relu"),
        ]

    @x_case("fused_conv_5x5_prelu_tap_ranges", x=[1, 12, 15, 17])
    def _(r, init):
        init["slope"] = f32(r.uniform(0.05, 0.3, (8, 1, 1)))
        return [
            conv(r, "conv", "x", "c", 8, 12, k=5, init=init, pads=[2, 2, 2, 2], strides=[2, 2]),
            helper.make_node("PRelu", ["c", "slope"], ["y"], name="prelu"),
        ]

    # Winograd's output transform applies the bias and the activation.
    @x_case("fused_conv_winograd_relu", x=[4, 64, 17, 18])
    def _(r, init):
        return [
            conv(r, "conv", "x", "c", 64, 64, init=init, pads=[1, 1, 1, 1]),
            helper.make_node("Relu", ["c"], ["y"], name="relu"),
        ]

    # On F(2x2), and on F(4x4) (a map of 16 and more a side).
    for name, x, m in [
        ("fused_conv_winograd_prelu", [4, 64, 17, 18], 64),
        ("fused_conv_winograd_f4_prelu", [1, 64, 17, 23], 56),
    ]:

        @x_case(name, x=x)
        def _(r, init, m=m):
            init["slope"] = f32(r.uniform(0.05, 0.3, (m, 1, 1)))
            return [
                conv(r, "conv", "x", "c", m, 64, init=init, pads=[1, 1, 1, 1]),
                helper.make_node("PRelu", ["c", "slope"], ["y"], name="prelu"),
            ]

    @x_case("fused_conv_mul_add", x=[1, 3, 7, 5])
    def _(r, init):
        init["mul_c"] = f32(r.uniform(0.5, 2.0, (1, 6, 1, 1)))
        init["add_c"] = normal(r, 6, 1, 1)
        return [
            conv(r, "conv", "x", "c", 6, 3, init=init, pads=[1, 1, 1, 1]),
            helper.make_node("Mul", ["c", "mul_c"], ["m"], name="mul"),
            helper.make_node("Add", ["m", "add_c"], ["y"], name="add"),
        ]

    @x_case("fused_conv_add_scalar_relu", x=[1, 2, 6, 6])
    def _(r, init):
        init["add_c"] = f32(np.array(-0.3))
        return [
            conv(r, "conv", "x", "c", 4, 2, init=init),
            helper.make_node("Add", ["c", "add_c"], ["a"], name="add"),
            helper.make_node("Relu", ["a"], ["y"], name="relu"),
        ]

    # Traps for the per-channel folding: a constant as long as the channel count but laid
    # along the last axis (W == C), and a full-size constant. Neither may be folded.
    @x_case("conv_mul_last_axis_not_folded", x=[1, 3, 5, 4])
    def _(r, init):
        return conv_then(r, init, 4, 3, "Mul", "mul_c", f32(r.uniform(0.5, 2.0, (4,))), pads=[1, 1, 1, 1])

    @x_case("conv_prelu_last_axis_not_folded", x=[1, 3, 5, 4])
    def _(r, init):
        return conv_then(r, init, 4, 3, "PRelu", "slope", f32(r.uniform(0.05, 0.5, (4,))), pads=[1, 1, 1, 1])

    @x_case("conv_add_full_tensor_not_folded", x=[1, 2, 6, 6])
    def _(r, init):
        return conv_then(r, init, 3, 2, "Add", "add_c", normal(r, 1, 3, 4, 4))

    # The conv output is read twice: nothing may be fused into it.
    @x_case("conv_shared_output_not_fused", x=[1, 3, 6, 6], outputs=["y0", "y1"])
    def _(r, init):
        return [
            conv(r, "conv", "x", "c", 4, 3, init=init),
            helper.make_node("Relu", ["c"], ["y0"], name="relu"),
            bn(r, "bn", "c", "y1", 4, init),
        ]

    # The conv output is a graph output and also feeds a Relu.
    @x_case("conv_output_also_graph_output", x=[1, 3, 6, 6], outputs=["c", "y"])
    def _(r, init):
        return conv_act(r, init, 4, 3, "Relu", "relu")

    @x_case("fused_mlp_head", x=[2, 3, 4, 4])
    def _(r, init):
        dense = fc(init, "f", "fc_out", normal(r, 48, 10, scale=1 / np.sqrt(48)), normal(r, 10))
        init["slope"] = f32(r.uniform(0.05, 0.5, (10,)))
        return [
            helper.make_node("Flatten", ["x"], ["f"], name="flatten"),
            *dense,
            helper.make_node("PRelu", ["fc_out", "slope"], ["y"], name="prelu"),
        ]

    @x_case("fused_matmul_add_2d_input_relu", x=[3, 6])
    def _(r, init):
        dense = fc(init, "x", "a", normal(r, 6, 5), normal(r, 1, 5))
        return [*dense, helper.make_node("Relu", ["a"], ["y"], name="relu")]

    @x_case("fused_gemm_prelu_relu_chain", x=[4, 6])
    def _(r, init):
        init["w"] = normal(r, 7, 6)
        init["b"] = normal(r, 7)
        init["slope"] = f32(r.uniform(0.05, 0.5, (1, 7)))
        return [
            helper.make_node("Gemm", ["x", "w", "b"], ["g"], name="gemm", transB=1),
            helper.make_node("PRelu", ["g", "slope"], ["p"], name="prelu"),
            helper.make_node("Relu", ["p"], ["y"], name="relu"),
        ]

    @x_case("fused_gemm_leaky_relu", x=[4, 6])
    def _(r, init):
        init["w"] = normal(r, 6, 7)
        init["b"] = normal(r, 7)
        return [
            helper.make_node("Gemm", ["x", "w", "b"], ["g"], name="gemm"),
            helper.make_node("LeakyRelu", ["g"], ["y"], name="leaky", alpha=0.3),
        ]

    # The same activations over 16 columns or more.
    @x_case("fused_gemm_const_b_prelu", x=[4, 30])
    def _(r, init):
        init["w"] = normal(r, 20, 30)
        init["b"] = normal(r, 20)
        init["slope"] = f32(r.uniform(0.05, 0.5, (1, 20)))
        return [
            helper.make_node("Gemm", ["x", "w", "b"], ["g"], name="gemm", transB=1),
            helper.make_node("PRelu", ["g", "slope"], ["y"], name="prelu"),
        ]

    @x_case("fused_gemm_const_b_relu", x=[9, 30])
    def _(r, init):
        init["w"] = normal(r, 30, 17)
        init["b"] = normal(r, 17)
        return [
            helper.make_node("Gemm", ["x", "w", "b"], ["g"], name="gemm"),
            helper.make_node("Relu", ["g"], ["y"], name="relu"),
        ]

    # Gemm whose B is a graph input (column count unknown at load time), then PRelu.
    name = "gemm_b_input_prelu_scalar"
    r = rng_for(name)
    nodes = [
        helper.make_node("Gemm", ["a", "b"], ["g"], name="gemm"),
        helper.make_node("PRelu", ["g", "slope"], ["y"], name="prelu"),
    ]
    case(name, nodes, [("a", normal(r, 3, 4)), ("b", normal(r, 4, 5))], ["y"], {"slope": f32([0.2])})

    name = "gemm_b_input_prelu_per_column"
    r = rng_for(name)
    case(
        name,
        nodes,
        [("a", normal(r, 3, 4)), ("b", normal(r, 4, 5))],
        ["y"],
        {"slope": f32(r.uniform(0.05, 0.5, (5,)))},
    )

    # An activation already fused: the following per-channel Add must stay separate.
    @x_case("conv_relu_then_add_not_folded", x=[1, 3, 6, 6])
    def _(r, init):
        init["add_c"] = normal(r, 4, 1, 1)
        return [
            conv(r, "conv", "x", "c", 4, 3, init=init),
            helper.make_node("Relu", ["c"], ["a"], name="relu"),
            helper.make_node("Add", ["a", "add_c"], ["y"], name="add"),
        ]

    # Residual blocks: `Add(r, Conv(..))` and the activation after it are fused into the conv
    # (on the CPU). The column kernel and the batched small maps start their sums from r where
    # the output lies; the other paths add r in one pass after the conv. r comes from a conv
    # and Relu before the block; the conv reads either r itself (then r is copied into the
    # output) or a branch computed from r (then the output is written over r's values).
    def residual_block(r, init, cin, c, k, act="Relu", order="rc", branch=None, **conv_attrs):
        nodes = [
            conv(r, "stem", "x", "s", c, cin, k=1, init=init),
            helper.make_node("Relu", ["s"], ["res"], name="stem_relu"),
        ]
        source, channels = "res", c
        if branch is not None:
            nodes += [
                conv(r, "branch", "res", "bc", branch, c, k=1, init=init),
                helper.make_node("Relu", ["bc"], ["b"], name="branch_relu"),
            ]
            source, channels = "b", branch
        nodes.append(conv(r, "conv", source, "c", c, channels // conv_attrs.get("group", 1), k=k, init=init,
                          pads=[k // 2] * 4, **conv_attrs))
        operands = ["res", "c"] if order == "rc" else ["c", "res"]
        if act is None:
            return [*nodes, helper.make_node("Add", operands, ["y"], name="add")]
        attrs = {"alpha": 0.2} if act == "LeakyRelu" else {}
        return [
            *nodes,
            helper.make_node("Add", operands, ["sum"], name="add"),
            helper.make_node(act, ["sum"], ["y"], name="act", **attrs),
        ]

    for name, x, c, k, options in [
        # 1x1 on 17x17 (FaceNet's block35), read in place: the column kernel.
        ("residual_conv_1x1_columns", [2, 16, 17, 17], 24, 1, {}),
        ("residual_conv_1x1_columns_sum_first", [2, 16, 17, 17], 24, 1, {"order": "cr"}),
        ("residual_conv_1x1_columns_leaky_relu", [1, 16, 9, 9], 24, 1, {"act": "LeakyRelu"}),
        ("residual_conv_1x1_columns_no_activation", [1, 16, 9, 9], 24, 1, {"act": None}),
        # The same over a branch: the output written over the residual's values.
        ("residual_branch_1x1_columns", [2, 16, 17, 17], 24, 1, {"branch": 20}),
        ("residual_branch_1x1_columns_sum_first", [2, 16, 17, 17], 24, 1, {"branch": 20, "order": "cr"}),
        # More taps than one range of the column kernel (FaceNet's block17: 256 -> 896 on 8x8).
        ("residual_branch_1x1_tap_ranges", [1, 16, 8, 8], 40, 1, {"branch": 160}),
        # 1x1 on 3x3 maps over a batch (FaceNet's block8): the batched column kernel.
        ("residual_conv_1x1_batched", [8, 24, 3, 3], 40, 1, {}),
        ("residual_branch_1x1_batched", [8, 24, 3, 3], 40, 1, {"branch": 48}),
        ("residual_conv_3x3_batched", [16, 8, 4, 4], 32, 3, {"order": "cr"}),
        # 3x3 stride 1 with many channels (dlib-resnet-128's blocks): Winograd F(2x2), F(4x4).
        ("residual_conv_winograd_f2", [4, 16, 17, 18], 64, 3, {}),
        ("residual_conv_winograd_f4", [1, 16, 17, 23], 64, 3, {"order": "cr"}),
        ("residual_branch_winograd_f2", [2, 16, 12, 12], 32, 3, {"branch": 32}),
        # The channel kernel on 8-wide maps, few output channels, and depthwise.
        ("residual_branch_3x3_channels", [1, 8, 8, 8], 32, 3, {"branch": 24}),
        ("residual_conv_flat", [1, 3, 12, 12], 8, 3, {}),
        ("residual_conv_depthwise", [1, 8, 10, 10], 8, 3, {"group": 8}),
    ]:
        x_case(name, x=x)(lambda r, init, c=c, k=k, cin=x[1], options=options:
                          residual_block(r, init, cin, c, k, **options))

    # Taps past one range of the column kernel (partial sums through the output), the graph's
    # input as the residual.
    @x_case("residual_conv_1x1_tap_ranges_graph_input", x=[1, 160, 9, 9])
    def _(r, init):
        return [
            conv(r, "conv", "x", "c", 160, 160, k=1, init=init),
            helper.make_node("Add", ["x", "c"], ["sum"], name="add"),
            helper.make_node("Relu", ["sum"], ["y"], name="relu"),
        ]

    # The residual is read again after the block: the conv writes over a copy of it.
    @x_case("residual_read_after_the_block", x=[2, 16, 17, 17])
    def _(r, init):
        return [
            *residual_block(r, init, 16, 24, 1, branch=20)[:-1],
            helper.make_node("Relu", ["sum"], ["block"], name="act"),
            helper.make_node("Mul", ["block", "res"], ["y"], name="mul_res"),
        ]

    # A residual that broadcasts over the channels, and one that widens the batch.
    for name, x, residual in [
        ("residual_conv_broadcast_over_channels", [2, 3, 6, 6], [2, 1, 6, 6]),
        ("residual_conv_broadcast_widens_batch", [1, 3, 6, 6], [3, 4, 6, 6]),
    ]:
        r = rng_for(name)
        init = {}
        nodes = [
            conv(r, "conv", "x", "c", 4, 3, init=init, pads=[1, 1, 1, 1]),
            helper.make_node("Add", ["r", "c"], ["sum"], name="add"),
            helper.make_node("Relu", ["sum"], ["y"], name="relu"),
        ]
        case(name, nodes, [("x", normal(r, *x)), ("r", normal(r, *residual))], ["y"], init)

    # The other operand is computed after the conv: nothing fused.
    @x_case("residual_computed_after_conv_not_fused", x=[1, 4, 6, 6])
    def _(r, init):
        return [
            conv(r, "conv", "x", "c", 4, 4, init=init, pads=[1, 1, 1, 1]),
            conv(r, "other", "x", "o", 4, 4, init=init, pads=[1, 1, 1, 1]),
            helper.make_node("Relu", ["o"], ["res"], name="relu_other"),
            helper.make_node("Add", ["c", "res"], ["y"], name="add"),
        ]

    # The sum is also a graph output: the Add is fused, the Relu stays apart.
    @x_case("residual_sum_also_graph_output", x=[1, 4, 6, 6], outputs=["sum", "y"])
    def _(r, init):
        return [
            conv(r, "conv", "x", "c", 4, 4, init=init, pads=[1, 1, 1, 1]),
            helper.make_node("Add", ["x", "c"], ["sum"], name="add"),
            helper.make_node("Relu", ["sum"], ["y"], name="relu"),
        ]


# ---------------------------------------------------------------------------------------------
# Import paths: dynamic shapes, encodings, optional inputs, legacy conventions


def import_cases():
    # Symbolic batch and spatial dims: shapes are resolved at run time.
    name = "conv_dynamic_input_dims"
    r, init = rng_for(name), {}
    init["w"] = conv_weights(r, 4, 3, 3, 3)
    init["b"] = normal(r, 4)
    case(
        name,
        [helper.make_node("Conv", ["x", "w", "b"], ["y"], name="conv", kernel_shape=[3, 3], pads=[1, 1, 1, 1])],
        [("x", normal(r, 2, 3, 7, 9))],
        ["y"],
        init,
        input_dims=[["N", 3, "H", "W"]],
    )
    name = "matmul_add_dynamic_batch"
    r, init = rng_for(name), {}
    init["w"] = normal(r, 6, 5)
    init["b"] = normal(r, 5)
    case(
        name,
        [helper.make_node("MatMul", ["x", "w"], ["mm"], name="fc"), helper.make_node("Add", ["mm", "b"], ["y"], name="fc_bias")],
        [("x", normal(r, 3, 6))],
        ["y"],
        init,
        input_dims=[["batch", 6]],
    )

    # Initializers in float_data / int64_data rather than raw_data.
    @x_case("initializers_in_typed_fields", x=[1, 2, 5, 6], raw_initializers=False)
    def _(r, init):
        init["w"] = conv_weights(r, 4, 2, 3, 3)
        init["b"] = normal(r, 4)
        init["shape"] = i64([0, -1])
        return [
            helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv", kernel_shape=[3, 3]),
            helper.make_node("Reshape", ["c", "shape"], ["y"], name="reshape"),
        ]

    # IR 3: every initializer is also listed as a graph input.
    @x_case("initializers_listed_as_inputs_ir3", x=[1, 2, 6, 5], opset=7, ir_version=3, initializers_as_inputs=True)
    def _(r, init):
        init["w"] = conv_weights(r, 3, 2, 3, 3)
        init["b"] = normal(r, 3)
        init["slope"] = f32(r.uniform(0.05, 0.5, (3, 1, 1)))
        return [
            helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv", kernel_shape=[3, 3]),
            helper.make_node("PRelu", ["c", "slope"], ["y"], name="prelu"),
        ]

    # Optional inputs omitted with an empty name.
    name = "conv_empty_bias_name"
    r = rng_for(name)
    case(
        name,
        [helper.make_node("Conv", ["x", "w", ""], ["y"], name="conv", kernel_shape=[3, 3])],
        [("x", normal(r, 1, 2, 5, 5))],
        ["y"],
        {"w": conv_weights(r, 3, 2, 3, 3)},
    )
    name = "gemm_empty_c_name"
    r = rng_for(name)
    case(
        name,
        [helper.make_node("Gemm", ["a", "b", ""], ["y"], name="gemm", alpha=2.0)],
        [("a", normal(r, 3, 4))],
        ["y"],
        {"b": normal(r, 4, 5)},
    )

    # Dropout with an explicit training_mode = false (a bool initializer).
    name = "dropout_opset13_training_mode_false"
    r = rng_for(name)
    case(
        name,
        [helper.make_node("Dropout", ["x", "ratio", "training"], ["y"], name="dropout")],
        [("x", normal(r, 2, 3, 4))],
        ["y"],
        {"ratio": f32(np.array(0.5)), "training": np.array(False)},
    )

    # Shapes and bounds from Constant nodes in their other forms.
    @x_case("reshape_shape_from_constant_value_ints", x=[2, 3, 4])
    def _(r, init):
        return [
            helper.make_node("Constant", [], ["shape"], name="shape_const", value_ints=[2, -1, 3]),
            helper.make_node("Reshape", ["x", "shape"], ["y"], name="reshape"),
        ]

    @x_case("clip_bounds_from_constant_nodes", x=[3, 5])
    def _(r, init):
        return [
            helper.make_node("Constant", [], ["lo"], name="lo", value_float=-0.25),
            helper.make_node("Constant", [], ["hi"], name="hi", value=numpy_helper.from_array(f32(np.array(0.5)), "hi")),
            helper.make_node("Clip", ["x", "lo", "hi"], ["y"], name="clip"),
        ]

    # One value read twice by the same node.
    name = "mul_same_input_twice"
    r = rng_for(name)
    case(name, [helper.make_node("Mul", ["x", "x"], ["y"], name="square")], [("x", normal(r, 2, 7))], ["y"])

    # Ops on constants only, feeding a graph-input op.
    name = "relu_of_initializer_added"
    r = rng_for(name)
    case(
        name,
        [
            helper.make_node("Relu", ["c"], ["rc"], name="relu_const"),
            helper.make_node("Add", ["x", "rc"], ["y"], name="add"),
        ],
        [("x", normal(r, 2, 4))],
        ["y"],
        {"c": normal(r, 2, 4)},
    )

    # Slices of step 1 are copied a run at a time: here the runs are channels 2..5 of each
    # image from the second on.
    name = "slice_channels_of_later_images"
    r = rng_for(name)
    case(
        name,
        [helper.make_node("Slice", ["x", "starts", "ends", "axes"], ["y"], name="slice")],
        [("x", normal(r, 3, 6, 4, 5))],
        ["y"],
        {"starts": i64([1, 2]), "ends": i64([3, 5]), "axes": i64([0, 1])},
    )

    pool_case("global_avgpool_3d", "GlobalAveragePool", [2, 3, 7])
    pool_case("global_maxpool_3d", "GlobalMaxPool", [2, 3, 7])


# ---------------------------------------------------------------------------------------------
# An MTCNN-like network: NHWC input, conv trunk, two fully connected heads.


def mtcnn_like_case():
    name = "mtcnn_like"
    r, init = rng_for(name), {}
    init["conv_w"] = conv_weights(r, 10, 3, 3, 3)
    init["conv_b"] = normal(r, 10, scale=0.3)
    init["slope"] = f32(r.uniform(0.05, 0.5, (10, 1, 1)))
    init["conv2_w"] = conv_weights(r, 16, 10, 3, 3)
    init["conv2_b"] = normal(r, 16, scale=0.3)
    init["slope2"] = f32(r.uniform(0.05, 0.5, (16, 1, 1)))
    features = 16 * 4 * 4
    init["fc_w"] = normal(r, features, 32, scale=1 / np.sqrt(features))
    init["fc_b"] = normal(r, 32, scale=0.3)
    init["fc_slope"] = f32(r.uniform(0.05, 0.5, (32,)))
    init["cls_w"] = normal(r, 32, 2, scale=1 / np.sqrt(32))
    init["cls_b"] = normal(r, 2)
    init["box_w"] = normal(r, 32, 4, scale=1 / np.sqrt(32))
    init["box_b"] = normal(r, 4)
    nodes = [
        helper.make_node("Transpose", ["image"], ["nchw"], name="to_nchw", perm=[0, 3, 1, 2]),
        helper.make_node("Conv", ["nchw", "conv_w", "conv_b"], ["c1"], name="conv1", kernel_shape=[3, 3]),
        helper.make_node("PRelu", ["c1", "slope"], ["p1"], name="prelu1"),
        helper.make_node("MaxPool", ["p1"], ["m1"], name="pool1", kernel_shape=[3, 3], strides=[2, 2], auto_pad="SAME_UPPER"),
        helper.make_node("Conv", ["m1", "conv2_w", "conv2_b"], ["c2"], name="conv2", kernel_shape=[3, 3]),
        helper.make_node("PRelu", ["c2", "slope2"], ["p2"], name="prelu2"),
        helper.make_node("Transpose", ["p2"], ["t"], name="to_nwhc", perm=[0, 3, 2, 1]),
        helper.make_node("Flatten", ["t"], ["flat"], name="flatten"),
        helper.make_node("MatMul", ["flat", "fc_w"], ["fc"], name="fc"),
        helper.make_node("Add", ["fc", "fc_b"], ["fcb"], name="fc_bias"),
        helper.make_node("PRelu", ["fcb", "fc_slope"], ["fca"], name="fc_prelu"),
        helper.make_node("MatMul", ["fca", "cls_w"], ["cls"], name="cls"),
        helper.make_node("Add", ["cls", "cls_b"], ["logits"], name="cls_bias"),
        helper.make_node("Softmax", ["logits"], ["prob"], name="softmax", axis=1),
        helper.make_node("MatMul", ["fca", "box_w"], ["box"], name="box"),
        helper.make_node("Add", ["box", "box_b"], ["bbox"], name="box_bias"),
    ]
    # 14x14 -> conv 12x12 -> pool (SAME_UPPER, /2) 6x6 -> conv 4x4.
    case(name, nodes, [("image", normal(r, 1, 14, 14, 3))], ["bbox", "prob"], init)


# ---------------------------------------------------------------------------------------------
# Ops of the common face models' exports (RetinaFace, SCRFD, ArcFace, MobileFaceNet, YuNet)


def face_model_cases():
    mk = helper.make_node
    r = rng_for("face-models")
    x = normal(r, 2, 3, 4, 5)
    # PyTorch's x.view(x.size(0), -1): Shape, Gather, Unsqueeze, Concat, Reshape folded at load.
    case(
        "shape_gather_concat_reshape",
        [
            mk("Shape", ["x"], ["s"], name="shape"),
            mk("Gather", ["s", "zero"], ["n"], name="batch", axis=0),
            mk("Unsqueeze", ["n", "axes0"], ["n1"], name="unsqueeze"),
            mk("Concat", ["n1", "minus_one"], ["target"], name="concat", axis=0),
            mk("Reshape", ["x", "target"], ["y"], name="flatten"),
        ],
        [("x", x)],
        ["y"],
        {"zero": i64(0), "axes0": i64([0]), "minus_one": i64([-1])},
    )
    case(
        "shape_cast_div",
        [
            mk("Shape", ["x"], ["s"], name="shape", start=1, end=2),
            mk("Cast", ["s"], ["c"], name="cast", to=TensorProto.FLOAT),
            mk("Cast", ["x"], ["xf"], name="cast_identity", to=TensorProto.FLOAT),
            mk("Div", ["xf", "c"], ["y"], name="div"),
        ],
        [("x", x)],
        ["y"],
        opset=15,
    )
    img = normal(r, 1, 3, 5, 7)
    case(
        "resize_nearest_scales_2x_asymmetric_floor",
        [mk("Resize", ["x", "", "scales"], ["y"], name="upsample", mode="nearest",
            coordinate_transformation_mode="asymmetric", nearest_mode="floor")],
        [("x", img)],
        ["y"],
        {"scales": f32([1, 1, 2, 2])},
    )
    case(
        "resize_linear_half_pixel_sizes",
        [mk("Resize", ["x", "", "", "sizes"], ["y"], name="resize", mode="linear")],
        [("x", img)],
        ["y"],
        {"sizes": i64([1, 3, 9, 11])},
    )
    case(
        "resize_linear_align_corners_opset11",
        [mk("Resize", ["x", "roi", "scales"], ["y"], name="resize", mode="linear",
            coordinate_transformation_mode="align_corners")],
        [("x", img)],
        ["y"],
        {"roi": f32([]), "scales": f32([1, 1, 2, 2])},
        opset=11,
    )
    case(
        "upsample_nearest_opset9",
        [mk("Upsample", ["x", "scales"], ["y"], name="upsample", mode="nearest")],
        [("x", img)],
        ["y"],
        {"scales": f32([1, 1, 2, 3])},
        opset=9,
    )
    case(
        "conv_transpose_stride2_pads_output_padding",
        [mk("ConvTranspose", ["x", "w", "b"], ["y"], name="deconv", strides=[2, 2], pads=[1, 1, 1, 1],
            output_padding=[1, 1])],
        [("x", normal(r, 1, 4, 5, 6))],
        ["y"],
        {"w": normal(r, 4, 3, 3, 3, scale=0.3), "b": normal(r, 3)},
    )
    case(
        "conv_transpose_group2_dilation",
        [mk("ConvTranspose", ["x", "w"], ["y"], name="deconv", group=2, dilations=[2, 1], kernel_shape=[2, 3])],
        [("x", normal(r, 2, 4, 3, 4))],
        ["y"],
        {"w": normal(r, 4, 2, 2, 3, scale=0.3)},
    )
    case(
        "slice_axes_steps",
        [mk("Slice", ["x", "starts", "ends", "axes", "steps"], ["y"], name="slice")],
        [("x", normal(r, 2, 6, 8))],
        ["y"],
        {"starts": i64([1, -7]), "ends": i64([6, 8]), "axes": i64([1, 2]), "steps": i64([2, 3])},
    )
    case(
        "slice_negative_step",
        [mk("Slice", ["x", "starts", "ends", "axes", "steps"], ["y"], name="slice")],
        [("x", normal(r, 3, 7))],
        ["y"],
        {"starts": i64([-1]), "ends": i64([-100]), "axes": i64([1]), "steps": i64([-2])},
    )
    case(
        "gather_axis1_2d_indices",
        [mk("Gather", ["x", "indices"], ["y"], name="gather", axis=1)],
        [("x", normal(r, 3, 5, 4))],
        ["y"],
        {"indices": i64([[0, 4], [-1, 2]])},
    )
    case(
        "reduce_mean_spatial_keepdims",
        [mk("ReduceMean", ["x"], ["y"], name="mean", axes=[2, 3])],
        [("x", normal(r, 2, 3, 4, 5))],
        ["y"],
    )
    case(
        "reduce_sum_axes_input_no_keepdims",
        [mk("ReduceSum", ["x", "axes"], ["y"], name="sum", keepdims=0)],
        [("x", normal(r, 2, 3, 4))],
        ["y"],
        {"axes": i64([1])},
    )
    positive = f32(np.abs(normal(r, 2, 3, 4, 5)) + 0.1)
    case("sqrt", [mk("Sqrt", ["x"], ["y"], name="sqrt")], [("x", positive)], ["y"])
    unary_case("exp", "Exp", scale=3.0)
    unary_case("hard_swish", "HardSwish", scale=5.0, opset=14)
    unary_case("hard_sigmoid", "HardSigmoid", scale=5.0, alpha=0.3, beta=0.4)
    case(
        "pow_tensor_exponent",
        [mk("Pow", ["x", "e"], ["y"], name="pow")],
        [("x", positive), ("e", normal(r, 5, scale=1.5))],
        ["y"],
    )
    case(
        "pow_square_of_negatives",
        [mk("Pow", ["x", "two"], ["y"], name="pow")],
        [("x", normal(r, 2, 3, 4))],
        ["y"],
        {"two": f32(np.array(2.0))},
    )
    case(
        "clip_opset11_constant_bounds",
        [mk("Clip", ["x", "lo", "hi"], ["y"], name="relu6")],
        [("x", normal(r, 2, 3, 4, scale=8.0))],
        ["y"],
        {"lo": f32(np.array(0.0)), "hi": f32(np.array(6.0))},
        opset=11,
    )
    case(
        "clip_dynamic_bounds",
        [mk("Clip", ["x", "lo", "hi"], ["y"], name="clip")],
        [("x", normal(r, 2, 3, 4, scale=3.0)), ("lo", f32(np.array(-1.0))), ("hi", f32(np.array(0.5)))],
        ["y"],
    )
    for mode in ("reflect", "edge"):
        case(
            f"pad_{mode}",
            [mk("Pad", ["x", "pads"], ["y"], name="pad", mode=mode)],
            [("x", normal(r, 1, 2, 4, 5))],
            ["y"],
            {"pads": i64([0, 0, 2, 1, 0, 0, 1, 3])},
        )


# ---------------------------------------------------------------------------------------------
# Models refacen must refuse


def refusal_cases():
    r = rng_for("refusals")
    refusal(
        "unsupported_resize_mode",
        [helper.make_node("Resize", ["x", "", "scales"], ["y"], name="upsample_by_2", mode="cubic")],
        [("x", normal(r, 1, 2, 3, 3))],
        ["y"],
        [[1, 2, 6, 6]],
        {"scales": f32([1.0, 1.0, 2.0, 2.0])},
    )
    hidden = 4
    refusal(
        "unsupported_lstm",
        [
            helper.make_node("Relu", ["x"], ["xr"], name="relu_before"),
            helper.make_node("LSTM", ["xr", "W", "R"], ["y"], name="encoder_lstm", hidden_size=hidden),
        ],
        [("x", normal(r, 5, 1, 3))],
        ["y"],
        [[5, 1, 1, hidden]],
        {"W": normal(r, 1, 4 * hidden, 3), "R": normal(r, 1, 4 * hidden, hidden)},
    )
    refusal(
        "conv_weights_as_input",
        [helper.make_node("Conv", ["x", "w"], ["y"], name="dynamic_conv", kernel_shape=[3, 3])],
        [("x", normal(r, 1, 2, 5, 5)), ("w", normal(r, 3, 2, 3, 3))],
        ["y"],
        [[1, 3, 3, 3]],
    )
    refusal(
        "conv_weights_as_input_no_kernel_shape",
        [helper.make_node("Conv", ["x", "w"], ["y"], name="dynamic_conv_2")],
        [("x", normal(r, 1, 2, 5, 5)), ("w", normal(r, 3, 2, 3, 3))],
        ["y"],
        [[1, 3, 3, 3]],
    )
    refusal(
        "dropout_training_mode_true",
        [helper.make_node("Dropout", ["x", "ratio", "training"], ["y"], name="train_dropout")],
        [("x", normal(r, 2, 3))],
        ["y"],
        [[2, 3]],
        {"ratio": f32(np.array(0.5)), "training": np.array(True)},
    )
    # Valid models run with inputs of the wrong shape (the suite supplies the bad inputs).
    refusal(
        "static_shape_relu",
        [helper.make_node("Relu", ["pixels"], ["y"], name="relu")],
        [("pixels", normal(r, 1, 3, 4, 4))],
        ["y"],
        [[1, 3, 4, 4]],
    )


def main():
    for d in (OPS_DIR, REFUSALS_DIR):
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(d)
    conv_cases()
    empty_batch_cases()
    activation_cases()
    pool_cases()
    binary_cases()
    gemm_cases()
    layout_cases()
    fused_cases()
    import_cases()
    mtcnn_like_case()
    face_model_cases()
    refusal_cases()
    for new, final in ((OPS_DIR, "ops"), (REFUSALS_DIR, "refusals")):
        final = os.path.join(ROOT, final)
        shutil.rmtree(final, ignore_errors=True)
        os.rename(new, final)
    total = 0
    for base, _, files in os.walk(ROOT):
        total += sum(os.path.getsize(os.path.join(base, f)) for f in files)
    print(f"{len(CASE_NAMES)} cases, {total / 1024:.0f} KiB under {ROOT}")


if __name__ == "__main__":
    main()
