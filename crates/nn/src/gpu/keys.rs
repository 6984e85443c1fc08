//! Which kernel (entry point and specialization) a node dispatches. `prepare` asks here to
//! compile it ahead of the first run and planning asks here to dispatch it, so the two
//! cannot disagree.

use super::kernels::{KernelKey, Shader};
use super::params::{BinaryOp, FusedActivation, UnaryOp};
use super::prepare::{ConvPacked, Prepared};
use crate::ir::{Binary, Conv, Node, Op, Padding, PoolKind, Unary};

/// What the input shapes decide about a node's kernel.
#[derive(Clone, Copy, Debug)]
pub enum ShapeChoice {
    /// At prepare time, before any shape is known: nodes whose kernel depends on shapes
    /// have none yet.
    Unknown,
    /// Binary and PRelu: whether both operands have the output's shape (no broadcasting).
    SameShape(bool),
    /// Softmax: whether rows are long enough to give each its own workgroup.
    WideRows(bool),
}

/// The kernel `node` dispatches, given what `prepare` packed for it; `None` for nodes that
/// alias their input, and for kernels that `choice` does not decide.
pub fn kernel_key(node: &Node, prepared: &Prepared, choice: ShapeChoice) -> Option<KernelKey> {
    Some(match &node.op {
        Op::Conv(conv) => {
            let Prepared::Conv(packed) = prepared else { return None };
            conv_key(conv, packed)
        }
        Op::Gemm(g) => {
            let Prepared::Gemm(packed) = prepared else { return None };
            gemm_key(packed.has_c, packed.act, !g.trans_a, g.trans_b)
        }
        // Row-major A and B: A's k is its fast index, B's is not.
        Op::MatMul => gemm_key(false, FusedActivation::None, true, false),
        Op::Pool(pool) => KernelKey::new(Shader::Pool, "pool2d")
            .flag("MAX", pool.kind == PoolKind::Max)
            .flag("COUNT_PAD", pool.count_include_pad),
        Op::GlobalPool(kind) => {
            KernelKey::new(Shader::Pool, "global_pool").flag("MAX", *kind == PoolKind::Max)
        }
        Op::Unary(op) => {
            let code = match op {
                Unary::Relu => UnaryOp::Relu,
                Unary::LeakyRelu(_) => UnaryOp::LeakyRelu,
                Unary::Sigmoid => UnaryOp::Sigmoid,
                Unary::Tanh => UnaryOp::Tanh,
                Unary::Clip { .. } => UnaryOp::Clip,
                Unary::Sqrt => UnaryOp::Sqrt,
                Unary::Exp => UnaryOp::Exp,
                Unary::HardSigmoid { .. } => UnaryOp::HardSigmoid,
                Unary::HardSwish => UnaryOp::HardSwish,
                Unary::Identity => return None,
            };
            KernelKey::new(Shader::Eltwise, "unary").with("UNARY_OP", code as u32)
        }
        Op::Binary(op) => {
            let code = match op {
                Binary::Add => BinaryOp::Add,
                Binary::Sub => BinaryOp::Sub,
                Binary::Mul => BinaryOp::Mul,
                Binary::Div => BinaryOp::Div,
                Binary::Pow => BinaryOp::Pow,
                Binary::Max => BinaryOp::Max,
                Binary::Min => BinaryOp::Min,
            };
            binary_key(code, choice)?
        }
        Op::PRelu => binary_key(BinaryOp::PRelu, choice)?,
        Op::BatchNorm { .. } => KernelKey::new(Shader::Eltwise, "batch_norm"),
        Op::Softmax { .. } => {
            let ShapeChoice::WideRows(wide) = choice else { return None };
            KernelKey::new(Shader::Softmax, if wide { "softmax_wide" } else { "softmax_rows" })
        }
        Op::Transpose { .. } => KernelKey::new(Shader::Layout, "transpose"),
        Op::Concat { .. } => KernelKey::new(Shader::Layout, "concat"),
        Op::Pad { .. } | Op::Slice { .. } | Op::Gather { .. } => KernelKey::new(Shader::Gather, "index_map"),
        Op::Resize(_) => KernelKey::new(Shader::Gather, "resize_axis"),
        Op::Reduce(_) => KernelKey::new(Shader::Gather, "reduce"),
        Op::Flatten { .. } | Op::Reshape { .. } | Op::Squeeze { .. } | Op::Unsqueeze { .. } => {
            return None;
        }
        Op::ConvTranspose(_) => KernelKey::new(Shader::ConvTranspose, "conv_transpose")
            .flag("HAS_BIAS", node.inputs.get(2).copied().flatten().is_some()),
    })
}

fn conv_key(conv: &Conv, packed: &ConvPacked) -> KernelKey {
    if packed.depthwise {
        return KernelKey::new(Shader::Conv, "depthwise").with("ACT", packed.act as u32);
    }
    // SAME padding of a 1x1 stride-1 kernel is no padding.
    let unpadded = matches!(conv.window.padding, Padding::SameUpper | Padding::SameLower | Padding::NONE);
    let pointwise = conv.window.kernel == [1, 1] && conv.window.strides == [1, 1] && unpadded;
    KernelKey::new(Shader::Conv, "conv2d")
        .with("BM", packed.tile.bm)
        .with("BN", packed.tile.bn)
        .with("BK", packed.tile.bk)
        .with("ACT", packed.act as u32)
        .flag("POINTWISE", pointwise)
}

fn gemm_key(has_c: bool, act: FusedActivation, a_k_fast: bool, b_k_fast: bool) -> KernelKey {
    KernelKey::new(Shader::Gemm, "gemm")
        .flag("HAS_C", has_c)
        .with("ACT", act as u32)
        .flag("A_K_FAST", a_k_fast)
        .flag("B_K_FAST", b_k_fast)
}

fn binary_key(op: BinaryOp, choice: ShapeChoice) -> Option<KernelKey> {
    let ShapeChoice::SameShape(same_shape) = choice else { return None };
    Some(
        KernelKey::new(Shader::Eltwise, "binary").with("BINARY_OP", op as u32).flag("SAME_SHAPE", same_shape),
    )
}
