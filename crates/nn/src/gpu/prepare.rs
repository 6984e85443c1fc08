//! What `prepare` does for a node: pack its weights on the device (conv weights re-laid out
//! for the conv kernel) and compile the kernel its attributes choose.

use std::sync::Arc;

use super::context::Ctx;
use super::exec::upload;
use super::keys::{ShapeChoice, kernel_key};
use super::params::FusedActivation;
use crate::ir::{Activation, Conv, Graph, Node, Op};
use crate::{NnError, Tensor};

/// What `prepare` packed for one node.
pub enum Prepared {
    Plain,
    Conv(ConvPacked),
    Gemm(GemmPacked),
}

pub struct ConvPacked {
    /// [group][k][out channel of group]; for depthwise, [channel][kh·kw].
    pub weights: wgpu::Buffer,
    /// bias[M], then the PRelu slopes[M].
    pub chan: wgpu::Buffer,
    /// Per k = (input channel of the group, ky, kx): (channel, ky · dh, kx · dw, 0) as u32.
    pub taps: wgpu::Buffer,
    pub weight_shape: Vec<usize>,
    pub depthwise: bool,
    pub tile: ConvTile,
    pub act: FusedActivation,
    pub alpha: f32,
}

pub struct GemmPacked {
    pub slopes: Option<wgpu::Buffer>,
    /// Whether C is read: beta is nonzero and the node has a third input.
    pub has_c: bool,
    pub act: FusedActivation,
    pub alpha: f32,
}

/// Output channels × pixels × depth of one conv workgroup tile (conv2d.wgsl).
#[derive(Clone, Copy, Debug)]
pub struct ConvTile {
    pub bm: u32,
    pub bn: u32,
    pub bk: u32,
}

impl ConvTile {
    fn for_channels(out_per_group: usize) -> ConvTile {
        if out_per_group >= 64 {
            ConvTile { bm: 64, bn: 64, bk: 16 }
        } else if out_per_group > 16 {
            ConvTile { bm: 32, bn: 128, bk: 16 }
        } else {
            ConvTile { bm: 16, bn: 256, bk: 8 }
        }
    }
}

/// The activation's kernel code, LeakyRelu slope and per-channel PRelu slopes.
fn fused_activation(activation: &Activation) -> (FusedActivation, f32, Option<&Arc<Tensor>>) {
    match activation {
        Activation::None => (FusedActivation::None, 0.0, None),
        Activation::Relu => (FusedActivation::Relu, 0.0, None),
        Activation::LeakyRelu(alpha) => (FusedActivation::LeakyRelu, *alpha, None),
        Activation::PRelu(slopes) => (FusedActivation::PRelu, 0.0, Some(slopes)),
    }
}

fn graph_error(fault: crate::GraphFault) -> NnError {
    NnError::invalid_graph(fault)
}

/// Packs `node`'s weights and compiles the kernel its attributes choose (kernels that input
/// shapes choose compile when the first plan needs them).
pub fn prepare(ctx: &Ctx, graph: &Graph, node: &Node) -> Result<Prepared, NnError> {
    let device = &ctx.device;
    let prepared = match &node.op {
        Op::Conv(conv) => Prepared::Conv(pack_conv(device, graph, node, conv)?),
        Op::Gemm(g) => {
            let (act, alpha, slopes) = fused_activation(&g.activation);
            Prepared::Gemm(GemmPacked {
                slopes: slopes.map(|s| upload(device, "slopes", s.data())),
                has_c: g.beta != 0.0 && node.inputs.get(2).copied().flatten().is_some(),
                act,
                alpha,
            })
        }
        _ => Prepared::Plain,
    };
    if let Some(key) = kernel_key(node, &prepared, ShapeChoice::Unknown) {
        ctx.kernels.get(device, &key)?;
    }
    Ok(prepared)
}

fn pack_conv(device: &wgpu::Device, graph: &Graph, node: &Node, conv: &Conv) -> Result<ConvPacked, NnError> {
    let w = node
        .inputs
        .get(1)
        .copied()
        .flatten()
        .and_then(|id| graph.constant(id))
        .ok_or_else(|| graph_error(crate::GraphFault::NotConstant { what: "weights tensor" }))?;
    if conv.residual {
        // `optimize::fuse_residual_adds` runs for the CPU backend alone: never reached.
        return Err(graph_error(crate::GraphFault::Attribute {
            name: "residual".into(),
            problem: "a residual Add fused into the conv runs on the CPU backend only".into(),
        }));
    }
    let ws = w.shape();
    if ws.len() != 4 {
        return Err(graph_error(crate::GraphFault::Weights {
            shape: ws.to_vec(),
            problem: "are not 4-D".into(),
        }));
    }
    let (m, cin_g) = (ws[0], ws[1]);
    let groups = conv.group;
    if groups == 0 || !m.is_multiple_of(groups) {
        let problem = format!("has {m} output channels, which do not split into {groups} groups");
        return Err(graph_error(crate::GraphFault::Weights { shape: ws.to_vec(), problem }));
    }
    let [kh, kw] = conv.window.kernel;
    let k = cin_g * kh * kw;
    if w.len() != m * k {
        let problem = format!("do not match the kernel {kh}x{kw}");
        return Err(graph_error(crate::GraphFault::Weights { shape: ws.to_vec(), problem }));
    }
    let mg = m / groups;
    let depthwise = cin_g == 1 && mg == 1;
    let weights = if depthwise {
        w.data().to_vec()
    } else {
        // [M = groups · mg, k] → [groups][k][mg]
        let mut t = vec![0.0f32; w.len()];
        let src = w.data();
        for g in 0..groups {
            for j in 0..mg {
                let row = &src[(g * mg + j) * k..][..k];
                for (kk, &v) in row.iter().enumerate() {
                    t[(g * k + kk) * mg + j] = v;
                }
            }
        }
        t
    };
    let mut chan = match node.inputs.get(2).copied().flatten() {
        Some(id) => {
            let bias = graph
                .constant(id)
                .ok_or_else(|| graph_error(crate::GraphFault::NotConstant { what: "bias" }))?;
            if bias.len() != m {
                let fault = crate::GraphFault::PerChannel { what: "biases", got: bias.len(), channels: m };
                return Err(graph_error(fault));
            }
            bias.data().to_vec()
        }
        None => vec![0.0; m],
    };
    let (act, alpha, slopes) = fused_activation(&conv.activation);
    if let Some(slopes) = slopes {
        if slopes.len() != m {
            let fault =
                crate::GraphFault::PerChannel { what: "PRelu slopes", got: slopes.len(), channels: m };
            return Err(graph_error(fault));
        }
        chan.extend_from_slice(slopes.data());
    }
    let mut taps: Vec<u32> = Vec::with_capacity(if depthwise { 4 } else { 4 * k });
    if !depthwise {
        for kk in 0..k {
            let (c, ky, kx) = (kk / (kh * kw), kk / kw % kh, kk % kw);
            taps.extend(
                [c, ky * conv.window.dilations[0], kx * conv.window.dilations[1], 0].map(|v| v as u32),
            );
        }
    }
    if taps.is_empty() {
        // The shader binds the taps as vec4s: depthwise convs and convs over no input
        // channels read none, but the binding must hold one.
        taps.extend([0; 4]);
    }
    let name = &node.name;
    Ok(ConvPacked {
        weights: upload(device, &format!("{name}/weights"), &weights),
        chan: upload(device, &format!("{name}/bias"), &chan),
        taps: upload(device, &format!("{name}/taps"), bytemuck::cast_slice(&taps)),
        weight_shape: ws.to_vec(),
        depthwise,
        tile: ConvTile::for_channels(mg),
        act,
        alpha,
    })
}
