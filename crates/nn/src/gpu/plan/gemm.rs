//! Gemm and MatMul (shaders/gemm.wgsl): one dispatch of 64 x 64 output tiles.

use super::{Step, broadcast};
use crate::gpu::builder::{Bind, Builder, Loc};
use crate::gpu::keys::ShapeChoice;
use crate::gpu::params::{GemmParams, MAX_RANK, u};
use crate::gpu::prepare::Prepared;
use crate::ir::Gemm;
use crate::{NnError, shape};

/// Rows and columns of one gemm.wgsl tile.
const TILE: usize = 64;

pub fn plan_gemm(b: &mut Builder, step: Step, g: &Gemm) -> Result<Loc, NnError> {
    let Step { index, node, out_shape } = step;
    let exe = b.exe;
    let Prepared::Gemm(packed) = &exe.nodes[index] else { unreachable!("Gemm nodes are packed") };
    let a = b.input(node, 0)?.clone();
    let bm = b.input(node, 1)?.clone();
    let c = if packed.has_c { b.optional_input(node, 2)?.cloned() } else { None };
    let (m, n) = (out_shape[0], out_shape[1]);
    let k = if g.trans_a { a.shape[0] } else { a.shape[1] };
    let out = b.output(out_shape)?;
    if m * n == 0 {
        return Ok(out);
    }
    let (a_rs, a_cs) = if g.trans_a { (1, m) } else { (k, 1) };
    let (b_rs, b_cs) = if g.trans_b { (1, k) } else { (n, 1) };
    let (c_rs, c_cs) = match &c {
        Some(c) => {
            let s = &c.shape;
            let (rows, cols) = match s.len() {
                0 => (1, 1),
                1 => (1, s[0]),
                _ => (s[s.len() - 2], s[s.len() - 1]),
            };
            (if rows == 1 { 0 } else { cols }, if cols == 1 { 0 } else { 1 })
        }
        None => (0, 0),
    };
    if let Some(slopes) = &packed.slopes
        && slopes.size() < n as u64 * 4
    {
        let rule = format!("Gemm: fewer PRelu slopes than the {n} columns");
        return Err(NnError::invalid_argument(crate::ArgumentFault::Shapes { rule }));
    }
    let params = GemmParams {
        c_rs: u(c_rs),
        c_cs: u(c_cs),
        alpha: g.alpha,
        beta: g.beta,
        leaky: packed.alpha,
        ..product(m, k, n, (a_rs, a_cs), (b_rs, b_cs))
    };
    let grid = b.grid(u64::from(params.m_tiles) * u64::from(params.n_tiles))?;
    let dummy = Bind { buffer: &exe.dummy, offset: 0, size: 4 };
    let c_binding = c.as_ref().map_or(dummy, Loc::whole);
    let slopes = packed.slopes.as_ref().map_or(dummy, Bind::buffer);
    let key = b.kernel(index, node, ShapeChoice::Unknown)?;
    b.dispatch(key, &params, &[a.whole(), bm.whole(), c_binding, slopes], out.whole(), grid)?;
    Ok(out)
}

pub fn plan_matmul(b: &mut Builder, step: Step) -> Result<Loc, NnError> {
    let Step { index, node, out_shape } = step;
    let a = b.input(node, 0)?.clone();
    let bm = b.input(node, 1)?.clone();
    let shape::MatmulDims { m, k, n, batch, a_batch, b_batch } = shape::matmul_dims(&a.shape, &bm.shape)?;
    let batches: usize = batch.iter().product();
    let out = b.output(out_shape)?;
    if batches * m * n == 0 {
        return Ok(out);
    }
    // Element strides of each batch dimension in A and B (0 where broadcast).
    let a_strides: Vec<usize> =
        shape::broadcast_strides(&a_batch, &batch).into_iter().map(|s| s * m * k).collect();
    let b_strides: Vec<usize> =
        shape::broadcast_strides(&b_batch, &batch).into_iter().map(|s| s * k * n).collect();
    let batch_dims = broadcast(&batch, &[a_strides, b_strides]).map_err(|blocks| {
        let limit = format!(
            "the GPU backend broadcasts MatMul over at most {MAX_RANK} separate blocks of batch \
             dimensions; {:?} x {:?} needs {blocks}",
            a.shape, bm.shape
        );
        NnError::invalid_argument(crate::ArgumentFault::GpuLimit { limit })
    })?;
    let params = GemmParams { batches: u(batches), batch_dims, ..product(m, k, n, (k, 1), (n, 1)) };
    let grid = b.grid(u64::from(params.m_tiles) * u64::from(params.n_tiles) * batches as u64)?;
    let exe = b.exe;
    let dummy = Bind { buffer: &exe.dummy, offset: 0, size: 4 };
    let key = b.kernel(index, node, ShapeChoice::Unknown)?;
    b.dispatch(key, &params, &[a.whole(), bm.whole(), dummy, dummy], out.whole(), grid)?;
    Ok(out)
}

/// One m x k by k x n product, A and B read through (row, column) element strides: one batch,
/// alpha 1, no C, no activation, for the callers to extend.
fn product(
    m: usize,
    k: usize,
    n: usize,
    (a_rs, a_cs): (usize, usize),
    (b_rs, b_cs): (usize, usize),
) -> GemmParams {
    GemmParams {
        m: u(m),
        n: u(n),
        k: u(k),
        a_rs: u(a_rs),
        a_cs: u(a_cs),
        b_rs: u(b_rs),
        b_cs: u(b_cs),
        m_tiles: u(m.div_ceil(TILE)),
        n_tiles: u(n.div_ceil(TILE)),
        batches: 1,
        alpha: 1.0,
        ..GemmParams::default()
    }
}
