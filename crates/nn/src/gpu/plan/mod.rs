//! Per-op planning: the dispatches (kernel, parameters, bindings, grid) a node adds to a plan
//! for given input shapes, one module per kernel family. Kernels come from
//! [`super::keys::kernel_key`], parameters are the structs of [`super::params`].

mod conv;
mod conv_transpose;
mod eltwise;
mod gather;
mod gemm;
mod layout;
mod pool;

use super::abi::KernelParams;
use super::builder::{Bind, Builder, Loc};
use super::keys::ShapeChoice;
use super::params::{Broadcast, MAX_RANK, dims, u};
use crate::NnError;
use crate::ir::{Node, Op, Unary};

/// Invocations per workgroup (`WG` in shaders/prelude.wgsl).
const WG: u64 = 256;

/// Adds `node`'s dispatches to the plan and returns where its output lives.
pub fn plan(b: &mut Builder, index: usize, node: &Node, out_shape: Vec<usize>) -> Result<Loc, NnError> {
    let step = Step { index, node, out_shape };
    match &node.op {
        Op::Flatten { .. }
        | Op::Reshape { .. }
        | Op::Squeeze { .. }
        | Op::Unsqueeze { .. }
        | Op::Unary(Unary::Identity) => Ok(b.alias(b.input(node, 0)?, step.out_shape)),
        Op::Conv(conv) => conv::plan_conv(b, step, conv),
        Op::Gemm(g) => gemm::plan_gemm(b, step, g),
        Op::MatMul => gemm::plan_matmul(b, step),
        Op::Pool(pool) => pool::plan_pool(b, step, pool),
        Op::GlobalPool(_) => pool::plan_global_pool(b, step),
        Op::Unary(op) => eltwise::plan_unary(b, step, *op),
        Op::Binary(_) | Op::PRelu => eltwise::plan_binary(b, step),
        Op::BatchNorm { epsilon } => eltwise::plan_batch_norm(b, step, *epsilon),
        Op::Softmax { axis, coerce_2d } => eltwise::plan_softmax(b, step, *axis, *coerce_2d),
        Op::Transpose { perm } => layout::plan_transpose(b, step, perm),
        Op::Concat { axis } => layout::plan_concat(b, step, *axis),
        Op::Pad { pads, value, mode, axes } => {
            gather::plan_pad(b, step, pads, axes.as_deref(), *mode, *value)
        }
        Op::Slice { starts, ends, axes, steps } => {
            gather::plan_slice(b, step, starts, ends, axes.as_deref(), steps.as_deref())
        }
        Op::Gather { axis, indices, .. } => gather::plan_gather(b, step, *axis, indices),
        Op::Resize(r) => gather::plan_resize(b, step, r),
        Op::Reduce(r) => gather::plan_reduce(b, step, r),
        Op::ConvTranspose(ct) => conv_transpose::plan_conv_transpose(b, step, ct),
    }
}

/// The node being planned: its index in the graph, the node, and its output's shape.
pub struct Step<'n> {
    index: usize,
    node: &'n Node,
    out_shape: Vec<usize>,
}

/// `step`'s output, written by its kernel with one invocation per value, none for an empty
/// output: `params` makes the kernel's parameters from the number of values.
fn per_value<P: KernelParams>(
    b: &mut Builder,
    step: Step,
    inputs: &[Bind],
    params: impl FnOnce(u32) -> P,
) -> Result<Loc, NnError> {
    let total: usize = step.out_shape.iter().product();
    let out = b.output(step.out_shape)?;
    if total > 0 {
        let grid = b.grid((total as u64).div_ceil(WG))?;
        let key = b.kernel(step.index, step.node, ShapeChoice::Unknown)?;
        b.dispatch(key, &params(u(total)), inputs, out.whole(), grid)?;
    }
    Ok(out)
}

fn too_large(what: &str, shape: &[usize]) -> NnError {
    NnError::too_large(crate::Excess::GpuBinding {
        what: format!("{what} of a tensor of shape {shape:?}"),
        limit: None,
    })
}

fn row_major_strides(shape: &[usize]) -> Vec<usize> {
    let mut strides = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        strides[i] = strides[i + 1] * shape[i + 1];
    }
    strides
}

/// Drops size-1 dimensions of (extent, stride) pairs and merges neighbours that are
/// contiguous with each other (stride[i] == stride[i + 1] · extent[i + 1]).
fn merge_dims(dims: &[(usize, usize)]) -> Vec<(usize, usize)> {
    let mut out: Vec<(usize, usize)> = Vec::new();
    for &(extent, stride) in dims.iter().filter(|d| d.0 != 1) {
        match out.last_mut() {
            Some(last) if last.1 == stride * extent => *last = (last.0 * extent, stride),
            _ => out.push((extent, stride)),
        }
    }
    out
}

/// `shape` read by two operands through per-dimension `strides`, merged as far as both allow,
/// as kernel parameters; `Err` with the number of blocks left when more than MAX_RANK remain.
fn broadcast(shape: &[usize], strides: &[Vec<usize>; 2]) -> Result<Broadcast, usize> {
    let (shape, strides) = merge_multi(shape, strides);
    if shape.len() > MAX_RANK {
        return Err(shape.len());
    }
    Ok(Broadcast {
        rank: u(shape.len()),
        shape: dims(shape),
        a_strides: dims(strides[0].iter().copied()),
        b_strides: dims(strides[1].iter().copied()),
    })
}

/// As [`merge_dims`] for an output shape read by several operands, each with its own strides.
fn merge_multi(shape: &[usize], strides: &[Vec<usize>]) -> (Vec<usize>, Vec<Vec<usize>>) {
    let mut out_shape: Vec<usize> = Vec::new();
    let mut out_strides: Vec<Vec<usize>> = vec![Vec::new(); strides.len()];
    for (d, &extent) in shape.iter().enumerate() {
        if extent == 1 {
            continue;
        }
        let mergeable = !out_shape.is_empty()
            && strides
                .iter()
                .zip(&out_strides)
                .all(|(s, o)| *o.last().expect("same length") == s[d] * extent);
        if mergeable {
            *out_shape.last_mut().expect("not empty") *= extent;
            for (s, o) in strides.iter().zip(&mut out_strides) {
                *o.last_mut().expect("not empty") = s[d];
            }
        } else {
            out_shape.push(extent);
            for (s, o) in strides.iter().zip(&mut out_strides) {
                o.push(s[d]);
            }
        }
    }
    (out_shape, out_strides)
}
