//! The kernels' ABI, declared once with abi.rs's macros: each params struct is a `#[repr(C)]`
//! Rust struct and, from the same macro, its WGSL declaration, as are the storage buffers its
//! entry points bind after it (name, binding, element type, access), the op codes the kernels
//! are specialized on and the array dimensions. The shader files use these names without
//! declaring them: a shader module is `wgsl_declarations`, then `shaders/prelude.wgsl`, then
//! the file. The host builds its bind group layouts and bind groups from the same buffer lists
//! (`storage_buffers`, `KernelParams::BUFFERS`). `abi_tests` reflects the modules through naga
//! and checks that the WGSL layout (field names, order, offsets, types, size) is the Rust one,
//! that each entry point reads the struct the host writes for it, and that it uses the
//! buffers its struct declares (names, bindings, types, access) and no others.

use super::abi::{StorageBuffer, kernel_codes, kernel_params, shared_dims, shared_structs};
use super::kernels::Shader;
use crate::ir::Window;

shared_dims! {
    /// Dimensions the index-decoding kernels (binary, MatMul's batch, transpose, gather) handle.
    MAX_RANK = 8;
}

shared_structs! {
    /// The sliding window of a 2-D convolution or pooling: the input and output planes, the
    /// kernel, strides, dilations, and the padding before the first row and column.
    Window2d {
        in_h: u32,
        in_w: u32,
        out_h: u32,
        out_w: u32,
        kh: u32,
        kw: u32,
        sh: u32,
        sw: u32,
        dh: u32,
        dw: u32,
        pad_t: u32,
        pad_l: u32,
    }

    /// A shape read by two operands, A and B, through per-dimension element strides (0 along
    /// a dimension an operand broadcasts over), adjacent dimensions merged where both allow:
    /// a binary op's output, MatMul's batch. prelude.wgsl's `broadcast_offsets` decodes it.
    Broadcast {
        rank: u32,
        shape: [u32; MAX_RANK],
        a_strides: [u32; MAX_RANK],
        b_strides: [u32; MAX_RANK],
    }
}

impl Window2d {
    /// `window` from `in_hw` to `out_hw`; `pads`: resolved, top and left first (the window
    /// keeps those two).
    pub fn new(in_hw: [usize; 2], out_hw: [usize; 2], window: &Window, pads: &[usize]) -> Self {
        let [in_h, in_w] = in_hw.map(u);
        let [out_h, out_w] = out_hw.map(u);
        let [kh, kw] = window.kernel.map(u);
        let [sh, sw] = window.strides.map(u);
        let [dh, dw] = window.dilations.map(u);
        Window2d { in_h, in_w, out_h, out_w, kh, kw, sh, sw, dh, dw, pad_t: u(pads[0]), pad_l: u(pads[1]) }
    }
}

kernel_params! {
    /// conv2d.wgsl. A dispatch covers images [n_base, ..) and, per group, output channels
    /// [m_base, m_base + m_count); `x_sub`, `y_sub`: the element where each binding starts.
    ConvParams in Conv ["conv2d", "depthwise"] as prm
    reads [
        x: f32,
        /// Weights: conv2d [group][k][m], m fastest; depthwise [C][kh · kw].
        wt: f32,
        /// bias[out_c], then the PRelu slopes[out_c] when ACT == ACT_PRELU.
        chan: f32,
        /// Per k (conv2d only): (input channel within the group, ky · dh, kx · dw, 0), so that
        /// the gather needs no division.
        taps: vec4u,
    ]
    writes y: f32
    {
        batch: u32,
        in_c: u32,
        out_c: u32,
        /// Channels per group, in and out; k = in_cg · kh · kw.
        in_cg: u32,
        out_cg: u32,
        win: Window2d,
        k: u32,
        /// Output pixels of this dispatch: images · out_h · out_w.
        pixels: u32,
        m_tiles: u32,
        p_tiles: u32,
        groups: u32,
        /// LeakyRelu's slope (ACT == ACT_LEAKY_RELU).
        alpha: f32,
        n_base: u32,
        m_base: u32,
        m_count: u32,
        x_sub: u32,
        y_sub: u32,
    }

    /// gemm.wgsl: Gemm, and MatMul with broadcast batch dimensions.
    GemmParams in Gemm ["gemm"] as prm
    reads [
        a: f32,
        b: f32,
        c: f32,
        /// PRelu slopes, one per output column (ACT == ACT_PRELU).
        slopes: f32,
    ]
    writes out: f32
    {
        m: u32,
        n: u32,
        k: u32,
        a_rs: u32,
        a_cs: u32,
        b_rs: u32,
        b_cs: u32,
        c_rs: u32,
        c_cs: u32,
        m_tiles: u32,
        n_tiles: u32,
        batches: u32,
        alpha: f32,
        beta: f32,
        /// LeakyRelu's slope (ACT == ACT_LEAKY_RELU).
        leaky: f32,
        /// The output's batch dimensions, and where each batch starts in A and in B.
        batch_dims: Broadcast,
    }

    /// pool.wgsl: MaxPool and AveragePool over planes [base, base + planes).
    PoolParams in Pool ["pool2d"] as prm reads [x: f32] writes y: f32 {
        /// batch · channels
        planes: u32,
        win: Window2d,
        /// The padding after the last row and column (which the average may count).
        pad_b: u32,
        pad_r: u32,
        /// The first plane of this dispatch, and where the bindings of x and y start (elements).
        base: u32,
        x_sub: u32,
        y_sub: u32,
    }

    /// pool.wgsl: GlobalMaxPool and GlobalAveragePool.
    GlobalPoolParams in Pool ["global_pool"] as gprm reads [x: f32] writes y: f32 {
        planes: u32,
        /// Values per plane (the product of the spatial dimensions).
        size: u32,
        base: u32,
        x_sub: u32,
        y_sub: u32,
    }

    /// softmax.wgsl. Rows of this dispatch, from row `base` on; x_sub / y_sub: the elements
    /// where the bindings start (tensors larger than one binding are split by whole blocks of rows).
    SoftmaxParams in Softmax ["softmax_rows", "softmax_wide"] as prm reads [x: f32] writes y: f32 {
        rows: u32,
        len: u32,
        inner: u32,
        base: u32,
        x_sub: u32,
        y_sub: u32,
    }

    /// eltwise.wgsl.
    UnaryParams in Eltwise ["unary"] as uprm reads [in0: f32] writes unary_out: f32 {
        total: u32,
        alpha: f32,
        lo: f32,
        hi: f32,
        base: u32,
        x_sub: u32,
        y_sub: u32,
    }

    /// eltwise.wgsl: Add, Sub, Mul, Div and PRelu, broadcast through per-dimension strides.
    BinaryParams in Eltwise ["binary"] as bprm reads [in0: f32, in1: f32] writes binary_out: f32 {
        total: u32,
        /// The output's dimensions, read by the two operands (unused with SAME_SHAPE).
        operands: Broadcast,
        base: u32,
        a_sub: u32,
        b_sub: u32,
        y_sub: u32,
    }

    /// eltwise.wgsl: inference BatchNormalization.
    BatchNormParams in Eltwise ["batch_norm"] as nprm
    // x, scale, bias, mean, var.
    reads [
        in0: f32,
        in1: f32,
        in2: f32,
        in3: f32,
        in4: f32,
    ]
    writes norm_out: f32
    {
        total: u32,
        channels: u32,
        plane: u32,
        epsilon: f32,
        base: u32,
        x_sub: u32,
        y_sub: u32,
    }

    /// layout.wgsl.
    TransposeParams in Layout ["transpose"] as tprm reads [x: f32] writes y: f32 {
        total: u32,
        rank: u32,
        /// Output dimensions, and for each the stride of the input along it.
        shape: [u32; MAX_RANK],
        strides: [u32; MAX_RANK],
    }

    /// layout.wgsl: one input of a Concat.
    ConcatParams in Layout ["concat"] as cprm reads [x: f32] writes y: f32 {
        /// Values of this input: outer · block.
        total: u32,
        /// Values of this input per outer index (its extent along the axis times the inner size).
        block: u32,
        /// Values of the output per outer index, and where this input's block starts in it.
        out_block: u32,
        offset: u32,
    }

    /// gather.wgsl: Slice, Gather and Pad through per-dimension offset tables.
    IndexMapParams in Gather ["index_map"] as mprm
    reads [
        x: f32,
        /// index_map: u32 offsets. resize_axis: per output coordinate (i0, i1, bits of w0, bits of w1).
        table: u32,
    ]
    writes y: f32
    {
        total: u32,
        rank: u32,
        /// Pad's constant, for outputs with a NO_SOURCE coordinate.
        value: f32,
        out_shape: [u32; MAX_RANK],
        /// Where each output dimension's entries start in the table: entry `table_base[d] + c`
        /// is the input element offset contributed by coordinate c of dimension d.
        table_base: [u32; MAX_RANK],
    }

    /// gather.wgsl: one axis of a Resize.
    ResizeAxisParams in Gather ["resize_axis"] as aprm
    // `table` as index_map binds it.
    reads [x: f32, table: u32]
    writes y: f32
    {
        total: u32,
        /// The resized axis: its input and output lengths, and the values after it.
        len_in: u32,
        len_out: u32,
        inner: u32,
    }

    /// conv_transpose.wgsl.
    ConvTransposeParams in ConvTranspose ["conv_transpose"] as prm
    reads [
        x: f32,
        /// [in_c, out_cg, kh, kw]
        w: f32,
        /// Read when HAS_BIAS (otherwise a placeholder).
        bias: f32,
    ]
    writes y: f32
    {
        total: u32,
        in_c: u32,
        out_c: u32,
        /// Input and output channels per group.
        in_cg: u32,
        out_cg: u32,
        win: Window2d,
    }

    /// gather.wgsl: ReduceSum and ReduceMean. An output index decodes over the kept dimensions
    /// (in order), a reduced value's number over the reduced ones; each has its input stride.
    ReduceParams in Gather ["reduce"] as rprm
    reads [x: f32]
    // Binding 2, which index_map and resize_axis bind to `table`: WGSL allows it, as no
    // entry point uses both.
    writes reduce_out: f32
    {
        total: u32,
        /// Reduced values per output value.
        count: u32,
        /// 1 for ReduceSum, 1 / count for ReduceMean.
        scale: f32,
        kept_rank: u32,
        reduced_rank: u32,
        kept_shape: [u32; MAX_RANK],
        kept_strides: [u32; MAX_RANK],
        reduced_shape: [u32; MAX_RANK],
        reduced_strides: [u32; MAX_RANK],
    }
}

kernel_codes! {
    /// The activation conv2d.wgsl and gemm.wgsl fuse into their epilogue (override `ACT`,
    /// applied by prelude.wgsl's `fused_activation`).
    FusedActivation in Conv prefix "ACT_" {
        None = 0 as "ACT_NONE",
        Relu = 1 as "ACT_RELU",
        /// Slope in the params' `alpha` (conv) or `leaky` (gemm).
        LeakyRelu = 2 as "ACT_LEAKY_RELU",
        /// Per-channel slopes after the bias (conv) or in their own binding (gemm).
        PRelu = 3 as "ACT_PRELU",
    }

    /// eltwise.wgsl's `unary` op (override `UNARY_OP`).
    UnaryOp in Eltwise prefix "UNARY_" {
        Relu = 0 as "UNARY_RELU",
        LeakyRelu = 1 as "UNARY_LEAKY_RELU",
        Sigmoid = 2 as "UNARY_SIGMOID",
        Tanh = 3 as "UNARY_TANH",
        Clip = 4 as "UNARY_CLIP",
        Sqrt = 5 as "UNARY_SQRT",
        Exp = 6 as "UNARY_EXP",
        /// alpha in `alpha`, beta in `lo`.
        HardSigmoid = 7 as "UNARY_HARD_SIGMOID",
        HardSwish = 8 as "UNARY_HARD_SWISH",
    }

    /// eltwise.wgsl's `binary` op (override `BINARY_OP`).
    BinaryOp in Eltwise prefix "BINARY_" {
        Add = 0 as "BINARY_ADD",
        Sub = 1 as "BINARY_SUB",
        Mul = 2 as "BINARY_MUL",
        Div = 3 as "BINARY_DIV",
        /// The second operand is the slope.
        PRelu = 4 as "BINARY_PRELU",
        Pow = 5 as "BINARY_POW",
        Max = 6 as "BINARY_MAX",
        Min = 7 as "BINARY_MIN",
    }
}

/// What `shader`'s file uses without declaring, as WGSL: the shared dimensions, every op
/// code, the shared structs, the params structs of its entry points with their bindings, and
/// the storage buffers those entry points bind (`Shader::source` puts it before the prelude
/// and the file).
pub fn wgsl_declarations(shader: Shader) -> String {
    let mut wgsl = format!("// Declared by crates/nn/src/gpu/params.rs.\n{WGSL_DIMS}{WGSL_CODES}");
    for decl in WGSL_SHARED {
        wgsl.push_str(decl);
    }
    let kernels = || KERNELS.iter().filter(|k| k.shader == shader);
    for kernel in kernels() {
        wgsl.push_str(kernel.wgsl);
        wgsl.push_str(kernel.params);
    }
    // Entry points of a file share their buffers where name, binding, type and access agree.
    let mut declared: Vec<&StorageBuffer> = Vec::new();
    for buffer in kernels().flat_map(|k| k.buffers) {
        if !declared.iter().any(|d| d.same_variable(buffer)) {
            declared.push(buffer);
            wgsl.push_str(&buffer.wgsl());
        }
    }
    wgsl
}

/// The storage buffers that `entry` of `shader` binds after its params, in binding order
/// (the pipelines' bind group layouts follow them).
pub fn storage_buffers(shader: Shader, entry: &str) -> &'static [StorageBuffer] {
    KERNELS
        .iter()
        .find(|k| k.shader == shader && k.entries.contains(&entry))
        .unwrap_or_else(|| panic!("no params struct of params.rs is read by {}:{entry}", shader.file()))
        .buffers
}

/// `values` as a fixed-size WGSL array, zero-filled (callers check that they fit).
pub fn dims<const N: usize>(values: impl IntoIterator<Item = usize>) -> [u32; N] {
    let mut out = [0; N];
    for (slot, v) in out.iter_mut().zip(values) {
        *slot = u(v);
    }
    out
}

/// A size or index as a kernel parameter.
pub fn u(v: usize) -> u32 {
    // Plans refuse tensors of more than u32::MAX values, so every index fits.
    debug_assert!(v <= u32::MAX as usize);
    v as u32
}
