//! Transpose and Concat (shaders/layout.wgsl).

use super::Step;
use super::{WG, merge_dims, per_value, row_major_strides};
use crate::gpu::builder::{Builder, Loc};
use crate::gpu::keys::ShapeChoice;
use crate::gpu::params::{ConcatParams, MAX_RANK, TransposeParams, dims, u};
use crate::{NnError, shape};

pub fn plan_transpose(b: &mut Builder, step: Step, perm: &Option<Vec<usize>>) -> Result<Loc, NnError> {
    let x = b.input(step.node, 0)?.clone();
    let perm = shape::transpose_perm(perm, x.shape.len())?;
    let in_strides = row_major_strides(&x.shape);
    let moved: Vec<(usize, usize)> = perm.iter().map(|&p| (x.shape[p], in_strides[p])).collect();
    let moved = merge_dims(&moved);
    if moved.is_empty() || moved.len() == 1 && moved[0].1 == 1 {
        // The permutation keeps the memory order: no data moves.
        return Ok(b.alias(&x, step.out_shape));
    }
    if moved.len() > MAX_RANK {
        return Err(NnError::invalid_argument(crate::ArgumentFault::GpuLimit {
            limit: format!(
                "the GPU backend transposes at most {MAX_RANK} separate blocks of dimensions; {perm:?} \
                 on {:?} needs {}",
                x.shape,
                moved.len()
            ),
        }));
    }
    per_value(b, step, &[x.whole()], |total| TransposeParams {
        total,
        rank: u(moved.len()),
        shape: dims(moved.iter().map(|d| d.0)),
        strides: dims(moved.iter().map(|d| d.1)),
    })
}

pub fn plan_concat(b: &mut Builder, step: Step, axis: i64) -> Result<Loc, NnError> {
    let Step { index, node, out_shape } = step;
    let inputs: Vec<Loc> =
        node.inputs.iter().flatten().map(|&id| b.value(id).cloned()).collect::<Result<_, _>>()?;
    let axis = shape::normalize_axis(axis, out_shape.len(), 0)?;
    let inner: usize = out_shape[axis + 1..].iter().product();
    let out_block = out_shape[axis] * inner;
    let out = b.output(out_shape.clone())?;
    let key = b.kernel(index, node, ShapeChoice::Unknown)?;
    let mut offset = 0;
    for x in &inputs {
        let block = x.shape[axis] * inner;
        let count = x.elements();
        if count > 0 {
            let params =
                ConcatParams { total: u(count), block: u(block), out_block: u(out_block), offset: u(offset) };
            let grid = b.grid((count as u64).div_ceil(WG))?;
            b.dispatch(key.clone(), &params, &[x.whole()], out.whole(), grid)?;
        }
        offset += block;
    }
    Ok(out)
}
