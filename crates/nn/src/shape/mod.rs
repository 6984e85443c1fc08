//! Output shapes of every op, computed at run time from the actual input shapes, so graphs
//! with dynamic batch and spatial dimensions run at any size. Shared by all backends.

mod layout;
mod matmul;
mod resize;
mod window;

use super::ir::Op;
use super::{ArgumentFault, NnError, element_count};
pub use layout::{
    SliceRange, full_pads, gather_indices, pad_maps, reduce_axes, reshape, slice_ranges, transpose_perm,
};
use layout::{concat, pad, reduce, squeeze, unsqueeze};
use matmul::gemm;
pub use matmul::{MatmulDims, matmul, matmul_dims};
pub use resize::{ResizeAxis, resize_geometry, resize_taps};
pub use window::{
    ConvGeometry, ConvTransposeGeometry, conv_geometry, conv_transpose_geometry, pool_geometry, window_2d,
    window_axis,
};

/// Input shapes that break an op's rule; `rule` names the op, the shapes and the rule.
fn invalid(rule: String) -> NnError {
    NnError::invalid_argument(ArgumentFault::Shapes { rule })
}

/// Resolves a possibly negative ONNX axis against `rank`. `extra` = 1 also accepts
/// axis == rank (Flatten's range is [-r, r]).
pub fn normalize_axis(axis: i64, rank: usize, extra: usize) -> Result<usize, NnError> {
    let resolved = if axis < 0 { axis + rank as i64 } else { axis };
    if !(0..(rank + extra) as i64).contains(&resolved) {
        return Err(invalid(format!("axis {axis} is out of range for rank {rank}")));
    }
    Ok(resolved as usize)
}

/// numpy (multidirectional) broadcasting of two shapes.
pub fn broadcast(a: &[usize], b: &[usize]) -> Result<Vec<usize>, NnError> {
    let rank = a.len().max(b.len());
    let mut out = vec![0; rank];
    for i in 0..rank {
        let da = if i + a.len() >= rank { a[i + a.len() - rank] } else { 1 };
        let db = if i + b.len() >= rank { b[i + b.len() - rank] } else { 1 };
        out[i] = match (da, db) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => return Err(invalid(format!("shapes {a:?} and {b:?} do not broadcast"))),
        };
    }
    Ok(out)
}

/// Output shapes of `op` given the shapes of its inputs (`None` for omitted optional inputs).
pub fn infer(op: &Op, inputs: &[Option<&[usize]>]) -> Result<Vec<Vec<usize>>, NnError> {
    let input = |i: usize| -> Result<&[usize], NnError> {
        inputs
            .get(i)
            .copied()
            .flatten()
            .ok_or_else(|| invalid(format!("{} is missing input {i}", op.onnx_name())))
    };
    let x = input(0)?;
    let shape = match op {
        Op::Conv(conv) => {
            let g = conv_geometry(conv, x, input(1)?)?;
            let out = vec![g.batch, g.out_channels, g.out_hw[0], g.out_hw[1]];
            if conv.residual { broadcast(&out, input(3)?)? } else { out }
        }
        Op::Pool(pool) => {
            let (hw, _) = pool_geometry(pool, x)?;
            vec![x[0], x[1], hw[0], hw[1]]
        }
        Op::GlobalPool(_) => {
            if x.len() < 3 {
                return Err(invalid(format!("global pooling needs rank ≥ 3, got {x:?}")));
            }
            let mut s = x.to_vec();
            s[2..].iter_mut().for_each(|d| *d = 1);
            s
        }
        Op::Gemm(g) => gemm(g, x, input(1)?, inputs.get(2).copied().flatten())?,
        Op::MatMul => matmul(x, input(1)?)?,
        Op::Unary(_) => x.to_vec(),
        Op::PRelu => {
            let slope = input(1)?;
            if broadcast(x, slope)? != x {
                return Err(invalid(format!("PRelu slope {slope:?} does not broadcast to {x:?}")));
            }
            x.to_vec()
        }
        Op::Binary(_) => broadcast(x, input(1)?)?,
        Op::BatchNorm { .. } => {
            if x.len() < 2 {
                return Err(invalid(format!("BatchNormalization needs rank ≥ 2, got {x:?}")));
            }
            for i in 1..5 {
                if input(i)? != [x[1]] {
                    return Err(invalid(format!(
                        "BatchNormalization parameter {i} must have shape [{}]",
                        x[1]
                    )));
                }
            }
            x.to_vec()
        }
        Op::Softmax { axis, .. } => {
            normalize_axis(*axis, x.len(), 0)?;
            x.to_vec()
        }
        Op::Flatten { axis } => {
            let a = normalize_axis(*axis, x.len(), 1)?;
            vec![element_count(&x[..a])?, element_count(&x[a..])?]
        }
        Op::Reshape { shape, allow_zero } => reshape(x, shape, *allow_zero)?,
        Op::Transpose { perm } => {
            let perm = transpose_perm(perm, x.len())?;
            perm.iter().map(|&p| x[p]).collect()
        }
        Op::Concat { axis } => concat(*axis, x, &inputs[1..])?,
        Op::Pad { pads, axes, .. } => pad(&full_pads(pads, axes.as_deref(), x.len())?, x)?,
        Op::Squeeze { axes } => squeeze(x, axes.as_deref())?,
        Op::Unsqueeze { axes } => unsqueeze(x, axes)?,
        Op::Reduce(r) => reduce(r, x)?,
        Op::Slice { starts, ends, axes, steps } => {
            slice_ranges(x, starts, ends, axes.as_deref(), steps.as_deref())?.iter().map(|r| r.len).collect()
        }
        Op::Gather { axis, indices_shape, .. } => {
            let a = normalize_axis(*axis, x.len(), 0)?;
            let mut out = x[..a].to_vec();
            out.extend_from_slice(indices_shape);
            out.extend_from_slice(&x[a + 1..]);
            out
        }
        Op::Resize(r) => resize_geometry(r, x)?.iter().map(|a| a.output).collect(),
        Op::ConvTranspose(ct) => {
            let g = conv_transpose_geometry(ct, x, input(1)?, inputs.get(2).copied().flatten())?;
            vec![g.batch, g.out_channels, g.out_hw[0], g.out_hw[1]]
        }
    };
    Ok(vec![shape])
}

/// Strides of a tensor of `shape` read as `full` (right-aligned; broadcast dimensions get 0).
pub fn broadcast_strides(shape: &[usize], full: &[usize]) -> Vec<usize> {
    let mut strides = vec![0; full.len()];
    let mut stride = 1;
    for i in (0..shape.len()).rev() {
        let j = i + full.len() - shape.len();
        strides[j] = if shape[i] == 1 { 0 } else { stride };
        stride *= shape[i];
    }
    strides
}
