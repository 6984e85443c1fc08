//! Gemm and MatMul (shaders/gemm.wgsl): one dispatch of 64 x 64 output tiles.

use super::merge_multi;
use crate::gpu::builder::{Bind, Builder, Loc};
use crate::gpu::keys::ShapeChoice;
use crate::gpu::params::{GemmParams, MAX_BATCH_RANK, dims, u};
use crate::gpu::prepare::Prepared;
use crate::ir::{Gemm, Node};
use crate::{NnError, shape};

/// Rows and columns of one gemm.wgsl tile.
const TILE: usize = 64;

pub fn plan_gemm(
    b: &mut Builder,
    index: usize,
    node: &Node,
    g: &Gemm,
    out_shape: Vec<usize>,
) -> Result<Loc, NnError> {
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
    let (m_tiles, n_tiles) = (m.div_ceil(TILE), n.div_ceil(TILE));
    let params = GemmParams {
        m: u(m),
        n: u(n),
        k: u(k),
        a_rs: u(a_rs),
        a_cs: u(a_cs),
        b_rs: u(b_rs),
        b_cs: u(b_cs),
        c_rs: u(c_rs),
        c_cs: u(c_cs),
        m_tiles: u(m_tiles),
        n_tiles: u(n_tiles),
        batches: 1,
        batch_rank: 0,
        alpha: g.alpha,
        beta: g.beta,
        leaky: packed.alpha,
        ..GemmParams::default()
    };
    let grid = b.grid((m_tiles * n_tiles) as u64)?;
    let dummy = Bind { buffer: &exe.dummy, offset: 0, size: 4 };
    let c_binding = c.as_ref().map_or(dummy, Loc::whole);
    let slopes = packed.slopes.as_ref().map_or(dummy, Bind::buffer);
    let key = b.kernel(index, node, ShapeChoice::Unknown)?;
    b.dispatch(key, &params, &[a.whole(), bm.whole(), c_binding, slopes], out.whole(), grid)?;
    Ok(out)
}

pub fn plan_matmul(
    b: &mut Builder,
    index: usize,
    node: &Node,
    out_shape: Vec<usize>,
) -> Result<Loc, NnError> {
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
    let (batch_dims, strides) = merge_multi(&batch, &[a_strides, b_strides]);
    if batch_dims.len() > MAX_BATCH_RANK {
        let limit = format!(
            "the GPU backend broadcasts MatMul over at most {MAX_BATCH_RANK} separate blocks of batch \
             dimensions; {:?} x {:?} needs {}",
            a.shape,
            bm.shape,
            batch_dims.len()
        );
        return Err(NnError::invalid_argument(crate::ArgumentFault::GpuLimit { limit }));
    }
    let (m_tiles, n_tiles) = (m.div_ceil(TILE), n.div_ceil(TILE));
    let params = GemmParams {
        m: u(m),
        n: u(n),
        k: u(k),
        a_rs: u(k),
        a_cs: 1,
        b_rs: u(n),
        b_cs: 1,
        c_rs: 0,
        c_cs: 0,
        m_tiles: u(m_tiles),
        n_tiles: u(n_tiles),
        batches: u(batches),
        batch_rank: u(batch_dims.len()),
        alpha: 1.0,
        beta: 0.0,
        leaky: 0.0,
        batch_shape: dims(batch_dims.iter().copied()),
        a_batch: dims(strides[0].iter().copied()),
        b_batch: dims(strides[1].iter().copied()),
    };
    let grid = b.grid((m_tiles * n_tiles * batches) as u64)?;
    let exe = b.exe;
    let dummy = Bind { buffer: &exe.dummy, offset: 0, size: 4 };
    let key = b.kernel(index, node, ShapeChoice::Unknown)?;
    b.dispatch(key, &params, &[a.whole(), bm.whole(), dummy, dummy], out.whole(), grid)?;
    Ok(out)
}
