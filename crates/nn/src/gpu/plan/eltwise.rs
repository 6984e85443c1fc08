//! Unary, Binary (with broadcasting), PRelu, BatchNormalization (shaders/eltwise.wgsl) and
//! Softmax (shaders/softmax.wgsl): split by values, or by blocks of rows, when a tensor
//! exceeds one binding.

use super::Step;
use super::{WG, broadcast, too_large};
use crate::gpu::builder::{Bind, Builder, Loc};
use crate::gpu::keys::ShapeChoice;
use crate::gpu::params::{BatchNormParams, BinaryParams, Broadcast, MAX_RANK, SoftmaxParams, UnaryParams, u};
use crate::ir::Unary;
use crate::{NnError, shape};

pub fn plan_unary(b: &mut Builder, step: Step, op: Unary) -> Result<Loc, NnError> {
    let Step { index, node, out_shape } = step;
    let total: usize = out_shape.iter().product();
    let x = b.input(node, 0)?.clone();
    let out = b.output(out_shape)?;
    let (alpha, lo, hi) = match op {
        Unary::LeakyRelu(a) => (a, 0.0, 0.0),
        Unary::Clip { min, max } => (0.0, min, max),
        Unary::HardSigmoid { alpha, beta } => (alpha, beta, 0.0),
        _ => (0.0, 0.0, 0.0),
    };
    let key = b.kernel(index, node, ShapeChoice::Unknown)?;
    for chunk in b.chunks(total, 1, total).expect("single values fit") {
        let count = chunk.len();
        let (xb, x_sub) = b.window(&x, chunk.start, count);
        let (yb, y_sub) = b.window(&out, chunk.start, count);
        let params = UnaryParams { total: u(count), alpha, lo, hi, base: u(chunk.start), x_sub, y_sub };
        let grid = b.grid((count as u64).div_ceil(WG))?;
        b.dispatch(key.clone(), &params, &[xb], yb, grid)?;
    }
    Ok(out)
}

/// Binary ops and PRelu (the second operand holds the slopes).
pub fn plan_binary(b: &mut Builder, step: Step) -> Result<Loc, NnError> {
    let Step { index, node, out_shape } = step;
    let x = b.input(node, 0)?.clone();
    let y = b.input(node, 1)?.clone();
    let total: usize = out_shape.iter().product();
    let out = b.output(out_shape.clone())?;
    if total == 0 {
        return Ok(out);
    }
    let same_shape = x.shape == y.shape;
    let operands = if same_shape {
        Broadcast::default()
    } else {
        let strides =
            [shape::broadcast_strides(&x.shape, &out_shape), shape::broadcast_strides(&y.shape, &out_shape)];
        broadcast(&out_shape, &strides).map_err(|blocks| {
            NnError::invalid_argument(crate::ArgumentFault::GpuLimit {
                limit: format!(
                    "the GPU backend broadcasts over at most {MAX_RANK} separate blocks of dimensions; {:?} \
                     with {:?} needs {blocks}",
                    x.shape, y.shape
                ),
            })
        })?
    };
    let key = b.kernel(index, node, ShapeChoice::SameShape(same_shape))?;
    for chunk in b.chunks(total, 1, total).expect("single values fit") {
        let count = chunk.len();
        // An operand of the output's shape is read at the output's indices: bind the same
        // range. A broadcast operand is bound whole.
        fn operand<'a>(
            b: &Builder,
            v: &'a Loc,
            out: &[usize],
            first: usize,
            count: usize,
        ) -> (Bind<'a>, u32) {
            if v.shape == out { b.window(v, first, count) } else { (v.whole(), 0) }
        }
        let (xb, a_sub) = operand(b, &x, &out_shape, chunk.start, count);
        let (yb, b_sub) = operand(b, &y, &out_shape, chunk.start, count);
        let (ob, y_sub) = b.window(&out, chunk.start, count);
        let params = BinaryParams { total: u(count), operands, base: u(chunk.start), a_sub, b_sub, y_sub };
        let grid = b.grid((count as u64).div_ceil(WG))?;
        b.dispatch(key.clone(), &params, &[xb, yb], ob, grid)?;
    }
    Ok(out)
}

pub fn plan_batch_norm(b: &mut Builder, step: Step, epsilon: f32) -> Result<Loc, NnError> {
    let Step { index, node, out_shape } = step;
    let total: usize = out_shape.iter().product();
    let x = b.input(node, 0)?.clone();
    let stats: Vec<Loc> = (1..5).map(|i| b.input(node, i).cloned()).collect::<Result<_, _>>()?;
    let out = b.output(out_shape)?;
    let plane: usize = x.shape[2..].iter().product();
    let key = b.kernel(index, node, ShapeChoice::Unknown)?;
    for chunk in b.chunks(total, 1, total).expect("single values fit") {
        let count = chunk.len();
        let (xb, x_sub) = b.window(&x, chunk.start, count);
        let (yb, y_sub) = b.window(&out, chunk.start, count);
        let mut inputs = vec![xb];
        inputs.extend(stats.iter().map(Loc::whole));
        let params = BatchNormParams {
            total: u(count),
            channels: u(x.shape[1]),
            plane: u(plane),
            epsilon,
            base: u(chunk.start),
            x_sub,
            y_sub,
        };
        let grid = b.grid((count as u64).div_ceil(WG))?;
        b.dispatch(key.clone(), &params, &inputs, yb, grid)?;
    }
    Ok(out)
}

pub fn plan_softmax(b: &mut Builder, step: Step, axis: i64, coerce_2d: bool) -> Result<Loc, NnError> {
    let Step { index, node, out_shape } = step;
    let total: usize = out_shape.iter().product();
    let x = b.input(node, 0)?.clone();
    let s = &x.shape;
    let a = shape::normalize_axis(axis, s.len(), 0)?;
    let (len, inner) = if coerce_2d {
        (s[a..].iter().product::<usize>(), 1)
    } else {
        (s[a], s[a + 1..].iter().product::<usize>())
    };
    let out = b.output(out_shape)?;
    if total == 0 || len == 0 {
        return Ok(out);
    }
    let block = len * inner;
    let blocks = total / block;
    let chunks = b.chunks(blocks, block, total).ok_or_else(|| too_large("one softmax block", &x.shape))?;
    let wide = len > 64;
    let key = b.kernel(index, node, ShapeChoice::WideRows(wide))?;
    for chunk in chunks {
        let (xb, x_sub) = b.window(&x, chunk.start * block, chunk.len() * block);
        let (yb, y_sub) = b.window(&out, chunk.start * block, chunk.len() * block);
        let rows = chunk.len() * inner;
        let workgroups = if wide { rows as u64 } else { (rows as u64).div_ceil(WG) };
        let params = SoftmaxParams {
            rows: u(rows),
            len: u(len),
            inner: u(inner),
            base: u(chunk.start * inner),
            x_sub,
            y_sub,
        };
        let grid = b.grid(workgroups)?;
        b.dispatch(key.clone(), &params, &[xb], yb, grid)?;
    }
    Ok(out)
}
