//! ConvTranspose (shaders/conv_transpose.wgsl): one dispatch, a thread per output value.

use super::{Step, per_value};
use crate::gpu::builder::{Builder, Loc};
use crate::gpu::params::{ConvTransposeParams, Window2d, u};
use crate::ir::ConvTranspose;
use crate::{NnError, shape};

pub fn plan_conv_transpose(b: &mut Builder, step: Step, ct: &ConvTranspose) -> Result<Loc, NnError> {
    let x = b.input(step.node, 0)?.clone();
    let w = b.input(step.node, 1)?.clone();
    let bias = b.optional_input(step.node, 2)?.cloned();
    let g =
        shape::conv_transpose_geometry(ct, &x.shape, &w.shape, bias.as_ref().map(|b| b.shape.as_slice()))?;
    // Without a bias the kernel never reads `bias`: the weights stand in.
    let bias_bind = bias.as_ref().unwrap_or(&w).whole();
    per_value(b, step, &[x.whole(), w.whole(), bias_bind], |total| ConvTransposeParams {
        total,
        in_c: u(g.in_channels),
        out_c: u(g.out_channels),
        in_cg: u(g.in_channels / ct.group),
        out_cg: u(g.out_channels / ct.group),
        win: Window2d::new(g.in_hw, g.out_hw, &ct.window, &g.pads),
    })
}
