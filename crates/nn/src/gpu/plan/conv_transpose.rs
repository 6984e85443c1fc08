//! ConvTranspose (shaders/conv_transpose.wgsl): one dispatch, a thread per output value.

use super::WG;
use crate::gpu::builder::{Builder, Loc};
use crate::gpu::keys::ShapeChoice;
use crate::gpu::params::{ConvTransposeParams, u};
use crate::ir::{ConvTranspose, Node};
use crate::{NnError, shape};

pub fn plan_conv_transpose(
    b: &mut Builder,
    index: usize,
    node: &Node,
    ct: &ConvTranspose,
    out_shape: Vec<usize>,
) -> Result<Loc, NnError> {
    let x = b.input(node, 0)?.clone();
    let w = b.input(node, 1)?.clone();
    let bias = b.optional_input(node, 2)?.cloned();
    let g =
        shape::conv_transpose_geometry(ct, &x.shape, &w.shape, bias.as_ref().map(|b| b.shape.as_slice()))?;
    let total: usize = out_shape.iter().product();
    let out = b.output(out_shape)?;
    if total == 0 {
        return Ok(out);
    }
    let params = ConvTransposeParams {
        total: u(total),
        in_c: u(g.in_channels),
        in_h: u(g.in_hw[0]),
        in_w: u(g.in_hw[1]),
        out_c: u(g.out_channels),
        out_h: u(g.out_hw[0]),
        out_w: u(g.out_hw[1]),
        kh: u(ct.kernel[0]),
        kw: u(ct.kernel[1]),
        sh: u(ct.strides[0]),
        sw: u(ct.strides[1]),
        dh: u(ct.dilations[0]),
        dw: u(ct.dilations[1]),
        pad_t: u(g.pads[0]),
        pad_l: u(g.pads[1]),
        in_cg: u(g.in_channels / ct.group),
        out_cg: u(g.out_channels / ct.group),
    };
    let grid = b.grid((total as u64).div_ceil(WG))?;
    let key = b.kernel(index, node, ShapeChoice::Unknown)?;
    // Without a bias the kernel never reads binding 3: the weights stand in.
    let bias_bind = bias.as_ref().unwrap_or(&w).whole();
    b.dispatch(key, &params, &[x.whole(), w.whole(), bias_bind], out.whole(), grid)?;
    Ok(out)
}
