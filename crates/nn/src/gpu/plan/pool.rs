//! MaxPool, AveragePool and their global forms (shaders/pool.wgsl), split by planes when a
//! tensor exceeds one binding.

use super::Step;
use super::{WG, too_large};
use crate::gpu::builder::{Builder, Loc};
use crate::gpu::keys::ShapeChoice;
use crate::gpu::params::{GlobalPoolParams, PoolParams, Window2d, u};
use crate::ir::Pool;
use crate::{NnError, shape};

pub fn plan_pool(b: &mut Builder, step: Step, pool: &Pool) -> Result<Loc, NnError> {
    let Step { index, node, out_shape } = step;
    let total: usize = out_shape.iter().product();
    let x = b.input(node, 0)?.clone();
    let ([oh, ow], pads) = shape::pool_geometry(pool, &x.shape)?;
    let [_, _, pb, pr] = pads;
    let out = b.output(out_shape)?;
    let s = &x.shape;
    let (planes, in_plane, out_plane) = (s[0] * s[1], s[2] * s[3], oh * ow);
    if total == 0 {
        return Ok(out);
    }
    let key = b.kernel(index, node, ShapeChoice::Unknown)?;
    let chunks = b
        .chunks(planes, in_plane.max(out_plane), x.elements().max(total))
        .ok_or_else(|| too_large("one plane of a pooling", &x.shape))?;
    for chunk in chunks {
        let count = chunk.len();
        let (xb, x_sub) = b.window(&x, chunk.start * in_plane, count * in_plane);
        let (yb, y_sub) = b.window(&out, chunk.start * out_plane, count * out_plane);
        let params = PoolParams {
            planes: u(count),
            win: Window2d::new([s[2], s[3]], [oh, ow], &pool.window, &pads),
            pad_b: u(pb),
            pad_r: u(pr),
            base: u(chunk.start),
            x_sub,
            y_sub,
        };
        let grid = b.grid(((count * out_plane) as u64).div_ceil(WG))?;
        b.dispatch(key.clone(), &params, &[xb], yb, grid)?;
    }
    Ok(out)
}

pub fn plan_global_pool(b: &mut Builder, step: Step) -> Result<Loc, NnError> {
    let Step { index, node, out_shape } = step;
    let x = b.input(node, 0)?.clone();
    let planes = x.shape[0] * x.shape[1];
    let size: usize = x.shape[2..].iter().product();
    let out = b.output(out_shape)?;
    if planes == 0 {
        return Ok(out);
    }
    let key = b.kernel(index, node, ShapeChoice::Unknown)?;
    let chunks =
        b.chunks(planes, size, x.elements()).ok_or_else(|| too_large("one plane of a pooling", &x.shape))?;
    for chunk in chunks {
        let (xb, x_sub) = b.window(&x, chunk.start * size, chunk.len() * size);
        let (yb, y_sub) = b.window(&out, chunk.start, chunk.len());
        let params =
            GlobalPoolParams { planes: u(chunk.len()), size: u(size), base: u(chunk.start), x_sub, y_sub };
        let grid = b.grid(chunk.len() as u64)?;
        b.dispatch(key.clone(), &params, &[xb], yb, grid)?;
    }
    Ok(out)
}
