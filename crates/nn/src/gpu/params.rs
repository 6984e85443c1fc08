//! The host side of the kernels' ABI: one `#[repr(C)]` struct per WGSL params struct in
//! `shaders/` (same name, same fields in the same order), and the op codes the kernels are
//! specialized on. `abi_tests` reflects the WGSL through naga and checks that both sides
//! agree, so that a field added, moved or retyped on one side only fails a test instead of
//! feeding a kernel shifted parameters.

use bytemuck::{Pod, Zeroable};

use super::kernels::Shader;

/// Dimensions the index-decoding kernels (binary, transpose, pad) handle.
pub const MAX_RANK: usize = 8;
/// Broadcast batch dimensions of MatMul.
pub const MAX_BATCH_RANK: usize = 6;

/// A kernel's parameters, written to binding 0 of its dispatch.
pub trait KernelParams: Pod {
    /// The shader file declaring the WGSL struct.
    const SHADER: Shader;
    /// The entry points that read it.
    const ENTRIES: &'static [&'static str];

    /// The fields in declaration order, for the WGSL reflection test.
    #[cfg(test)]
    fn fields() -> Vec<Field>;
}

/// One field of a params struct as the reflection test compares it with the WGSL.
#[cfg(test)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Field {
    pub name: String,
    pub offset: usize,
    /// The type as WGSL spells it: `u32`, `f32`, `array<u32, 8>`.
    pub wgsl_type: String,
}

/// How WGSL spells a field type.
#[cfg(test)]
pub trait WgslType {
    fn wgsl() -> String;
}

#[cfg(test)]
mod wgsl_types {
    use super::WgslType;

    impl WgslType for u32 {
        fn wgsl() -> String {
            "u32".into()
        }
    }
    impl WgslType for i32 {
        fn wgsl() -> String {
            "i32".into()
        }
    }
    impl WgslType for f32 {
        fn wgsl() -> String {
            "f32".into()
        }
    }
    impl<T: WgslType, const N: usize> WgslType for [T; N] {
        fn wgsl() -> String {
            format!("array<{}, {N}>", T::wgsl())
        }
    }
}

/// Declares params structs: `Name in Shader [entry points] { field: type, ... }`.
macro_rules! kernel_params {
    ($(
        $(#[$doc:meta])*
        $name:ident in $shader:ident [$($entry:literal),+] {
            $( $(#[$field_doc:meta])* $field:ident: $ty:ty, )+
        }
    )+) => {$(
        $(#[$doc])*
        #[repr(C)]
        #[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
        pub struct $name {
            $( $(#[$field_doc])* pub $field: $ty, )+
        }

        impl KernelParams for $name {
            const SHADER: Shader = Shader::$shader;
            const ENTRIES: &'static [&'static str] = &[$($entry),+];

            #[cfg(test)]
            fn fields() -> Vec<Field> {
                vec![$(Field {
                    name: stringify!($field).to_string(),
                    offset: std::mem::offset_of!($name, $field),
                    wgsl_type: <$ty as WgslType>::wgsl(),
                }),+]
            }
        }
    )+};
}

kernel_params! {
    /// conv2d.wgsl. A dispatch covers images [n_base, ..) and, per group, output channels
    /// [m_base, m_base + m_count); `x_sub`, `y_sub`: the element where each binding starts.
    ConvParams in Conv ["conv2d", "depthwise"] {
        batch: u32,
        in_c: u32,
        in_h: u32,
        in_w: u32,
        out_c: u32,
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
        in_cg: u32,
        out_cg: u32,
        k: u32,
        pixels: u32,
        m_tiles: u32,
        p_tiles: u32,
        groups: u32,
        /// LeakyRelu's slope.
        alpha: f32,
        n_base: u32,
        m_base: u32,
        m_count: u32,
        x_sub: u32,
        y_sub: u32,
    }

    /// gemm.wgsl: Gemm, and MatMul with broadcast batch dimensions.
    GemmParams in Gemm ["gemm"] {
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
        batch_rank: u32,
        alpha: f32,
        beta: f32,
        /// LeakyRelu's slope.
        leaky: f32,
        batch_shape: [u32; MAX_BATCH_RANK],
        a_batch: [u32; MAX_BATCH_RANK],
        b_batch: [u32; MAX_BATCH_RANK],
    }

    /// pool.wgsl: MaxPool and AveragePool over planes [base, base + planes).
    PoolParams in Pool ["pool2d"] {
        planes: u32,
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
        pad_b: u32,
        pad_r: u32,
        base: u32,
        x_sub: u32,
        y_sub: u32,
    }

    /// pool.wgsl: GlobalMaxPool and GlobalAveragePool.
    GlobalPoolParams in Pool ["global_pool"] {
        planes: u32,
        size: u32,
        base: u32,
        x_sub: u32,
        y_sub: u32,
    }

    /// softmax.wgsl.
    SoftmaxParams in Softmax ["softmax_rows", "softmax_wide"] {
        rows: u32,
        len: u32,
        inner: u32,
        base: u32,
        x_sub: u32,
        y_sub: u32,
    }

    /// eltwise.wgsl.
    UnaryParams in Eltwise ["unary"] {
        total: u32,
        alpha: f32,
        lo: f32,
        hi: f32,
        base: u32,
        x_sub: u32,
        y_sub: u32,
    }

    /// eltwise.wgsl: Add, Sub, Mul, Div and PRelu, broadcast through per-dimension strides.
    BinaryParams in Eltwise ["binary"] {
        total: u32,
        rank: u32,
        shape: [u32; MAX_RANK],
        a_strides: [u32; MAX_RANK],
        b_strides: [u32; MAX_RANK],
        base: u32,
        a_sub: u32,
        b_sub: u32,
        y_sub: u32,
    }

    /// eltwise.wgsl: inference BatchNormalization.
    BatchNormParams in Eltwise ["batch_norm"] {
        total: u32,
        channels: u32,
        plane: u32,
        epsilon: f32,
        base: u32,
        x_sub: u32,
        y_sub: u32,
    }

    /// layout.wgsl.
    TransposeParams in Layout ["transpose"] {
        total: u32,
        rank: u32,
        shape: [u32; MAX_RANK],
        strides: [u32; MAX_RANK],
    }

    /// layout.wgsl: constant Pad; a negative `begin` crops.
    PadParams in Layout ["pad"] {
        total: u32,
        rank: u32,
        value: f32,
        out_shape: [u32; MAX_RANK],
        in_shape: [u32; MAX_RANK],
        in_strides: [u32; MAX_RANK],
        begin: [i32; MAX_RANK],
    }

    /// layout.wgsl: one input of a Concat.
    ConcatParams in Layout ["concat"] {
        total: u32,
        block: u32,
        out_block: u32,
        offset: u32,
    }

    /// gather.wgsl: Slice, Gather and Pad through per-dimension offset tables.
    IndexMapParams in Gather ["index_map"] {
        total: u32,
        rank: u32,
        value: f32,
        out_shape: [u32; MAX_RANK],
        table_base: [u32; MAX_RANK],
    }

    /// gather.wgsl: one axis of a Resize.
    ResizeAxisParams in Gather ["resize_axis"] {
        total: u32,
        len_in: u32,
        len_out: u32,
        inner: u32,
    }

    /// conv_transpose.wgsl.
    ConvTransposeParams in ConvTranspose ["conv_transpose"] {
        total: u32,
        in_c: u32,
        in_h: u32,
        in_w: u32,
        out_c: u32,
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
        in_cg: u32,
        out_cg: u32,
    }

    /// gather.wgsl: ReduceSum and ReduceMean.
    ReduceParams in Gather ["reduce"] {
        total: u32,
        rank: u32,
        count: u32,
        scale: f32,
        in_shape: [u32; MAX_RANK],
        in_strides: [u32; MAX_RANK],
        reduced: [u32; MAX_RANK],
    }
}

/// Declares `#[repr(u32)]` code enums mirroring WGSL constants: `Name in Shader prefix
/// "PREFIX_" { Variant = value as "WGSL_CONSTANT", ... }`. Every WGSL constant of the shader
/// named with the prefix must be a variant, with the same value (the reflection test checks).
macro_rules! kernel_codes {
    ($(
        $(#[$doc:meta])*
        $name:ident in $shader:ident prefix $prefix:literal {
            $( $(#[$variant_doc:meta])* $variant:ident = $value:literal as $wgsl:literal, )+
        }
    )+) => {$(
        $(#[$doc])*
        #[repr(u32)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum $name {
            $( $(#[$variant_doc])* $variant = $value, )+
        }

        #[cfg(test)]
        impl $name {
            pub const SHADER: Shader = Shader::$shader;
            pub const WGSL_PREFIX: &'static str = $prefix;
            /// Each variant's WGSL constant and value.
            pub const WGSL: &'static [(&'static str, u32)] = &[$( ($wgsl, $name::$variant as u32) ),+];
        }
    )+};
}

kernel_codes! {
    /// The activation conv2d.wgsl and gemm.wgsl fuse into their epilogue (override `ACT`;
    /// the constants are in prelude.wgsl).
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
