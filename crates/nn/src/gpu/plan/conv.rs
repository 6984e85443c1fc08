//! Conv (shaders/conv2d.wgsl): whole images per dispatch, or, when one image exceeds a
//! binding, output channels split across dispatches.

use super::Step;
use super::{WG, too_large};
use crate::gpu::builder::{Bind, Builder, Loc};
use crate::gpu::kernels::KernelKey;
use crate::gpu::keys::ShapeChoice;
use crate::gpu::params::{ConvParams, Window2d, u};
use crate::gpu::prepare::{ConvPacked, Prepared};
use crate::ir::Conv;
use crate::{NnError, shape};

/// One conv's operands and geometry, shared by its dispatches.
struct ConvPlan<'p> {
    conv: &'p Conv,
    packed: &'p ConvPacked,
    key: KernelKey,
    g: shape::ConvGeometry,
    x: Loc,
    out: Loc,
}

pub fn plan_conv(b: &mut Builder, step: Step, conv: &Conv) -> Result<Loc, NnError> {
    let Step { index, node, out_shape } = step;
    let exe = b.exe;
    let Prepared::Conv(packed) = &exe.nodes[index] else { unreachable!("Conv nodes are packed") };
    let x = b.input(node, 0)?.clone();
    let g = shape::conv_geometry(conv, &x.shape, &packed.weight_shape)?;
    let out = b.output(out_shape)?;
    let groups = conv.group;
    let cout_g = g.out_channels / groups;
    let plane = g.out_hw[0] * g.out_hw[1];
    let in_image = g.in_channels * g.in_hw[0] * g.in_hw[1];
    let out_image = g.out_channels * plane;
    if plane * g.batch == 0 || g.out_channels == 0 {
        return Ok(out);
    }
    let key = b.kernel(index, node, ShapeChoice::Unknown)?;
    let whole = x.elements().max(out.elements());
    let p = ConvPlan { conv, packed, key, g, x, out };
    let g = &p.g;
    match b.chunks(g.batch, in_image.max(out_image), whole) {
        // Whole images per dispatch (all of them, unless they exceed one binding).
        Some(chunks) => {
            let m_count = if packed.depthwise { g.out_channels } else { cout_g };
            for chunk in chunks {
                conv_dispatch(b, &p, chunk.start, chunk.len(), 0, m_count)?;
            }
        }
        // One image's output exceeds a binding: split its output channels.
        None => {
            let in_plane = g.in_hw[0] * g.in_hw[1];
            let per_channel = if packed.depthwise {
                plane.max(in_plane)
            } else if groups != 1 {
                return Err(too_large("one output image of a grouped convolution", &p.out.shape));
            } else if in_image as u64 * 4 > b.ctx.max_binding() {
                return Err(too_large("one input image of a convolution", &p.x.shape));
            } else {
                plane
            };
            let chunks = b
                .chunks(g.out_channels, per_channel, usize::MAX)
                .ok_or_else(|| too_large("one channel of a convolution", &p.out.shape))?;
            for n in 0..g.batch {
                for chunk in &chunks {
                    conv_dispatch(b, &p, n, 1, chunk.start, chunk.len())?;
                }
            }
        }
    }
    Ok(p.out)
}

/// One conv dispatch: images [n0, n0 + images), output channels [m0, m0 + m_count) of each
/// group (of the whole tensor for depthwise).
fn conv_dispatch(
    b: &mut Builder,
    p: &ConvPlan,
    n0: usize,
    images: usize,
    m0: usize,
    m_count: usize,
) -> Result<(), NnError> {
    let ConvPlan { conv, packed, g, .. } = p;
    let [kh, kw] = conv.window.kernel;
    let groups = conv.group;
    let (cin_g, cout_g) = (g.in_channels / groups, g.out_channels / groups);
    let in_plane = g.in_hw[0] * g.in_hw[1];
    let plane = g.out_hw[0] * g.out_hw[1];
    let pixels = images * plane;
    let all_channels = m0 == 0 && m_count == if packed.depthwise { g.out_channels } else { cout_g };
    // Input: the images' planes, or (depthwise, split channels) those channels' planes.
    let (x_first, x_count) = if packed.depthwise && !all_channels {
        ((n0 * g.in_channels + m0) * in_plane, m_count * in_plane)
    } else {
        (n0 * g.in_channels * in_plane, images * g.in_channels * in_plane)
    };
    let (y_first, y_count) = if all_channels {
        (n0 * g.out_channels * plane, images * g.out_channels * plane)
    } else {
        ((n0 * g.out_channels + m0) * plane, m_count * plane)
    };
    let (xb, x_sub) = b.window(&p.x, x_first, x_count);
    let (yb, y_sub) = b.window(&p.out, y_first, y_count);
    let tile = packed.tile;
    let m_tiles = m_count.div_ceil(tile.bm as usize);
    let p_tiles = pixels.div_ceil(tile.bn as usize);
    let params = ConvParams {
        batch: u(g.batch),
        in_c: u(g.in_channels),
        out_c: u(g.out_channels),
        in_cg: u(cin_g),
        out_cg: u(cout_g),
        win: Window2d::new(g.in_hw, g.out_hw, &conv.window, &g.pads),
        k: u(cin_g * kh * kw),
        pixels: u(pixels),
        m_tiles: u(m_tiles),
        p_tiles: u(p_tiles),
        groups: u(groups),
        alpha: packed.alpha,
        n_base: u(n0),
        m_base: u(m0),
        m_count: u(m_count),
        x_sub,
        y_sub,
    };
    let workgroups = if packed.depthwise {
        (pixels as u64 * m_count as u64).div_ceil(WG)
    } else {
        (p_tiles * m_tiles * groups) as u64
    };
    let grid = b.grid(workgroups)?;
    b.dispatch(
        p.key.clone(),
        &params,
        &[xb, Bind::buffer(&packed.weights), Bind::buffer(&packed.chan), Bind::buffer(&packed.taps)],
        yb,
        grid,
    )
}
