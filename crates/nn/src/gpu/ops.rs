//! Per-op planning: what `prepare` packs for a node, and the dispatches (kernel, parameters,
//! bindings, grid) a node adds to a plan for given input shapes. Parameter layouts follow the
//! `Params` structs of the shaders field by field.

use std::sync::Arc;

use super::context::Ctx;
use super::exec::{Bind, Builder, Loc, upload};
use super::kernels::{KernelKey, Shader};
use crate::ir::{Activation, Binary, Conv, Gemm, Graph, Node, Op, Padding, PoolKind, Unary};
use crate::{NnError, Tensor, shape};

const WG: u64 = 256;
/// Dimensions the index-decoding kernels (binary, transpose, pad) handle.
const MAX_RANK: usize = 8;
/// Broadcast batch dimensions of MatMul.
const MAX_BATCH_RANK: usize = 6;

/// What `prepare` packed for one node.
pub enum Prepared {
    Plain,
    Conv(ConvPacked),
    Gemm(GemmPacked),
}

pub struct ConvPacked {
    /// [group][k][out channel of group]; for depthwise, [channel][kh·kw].
    weights: wgpu::Buffer,
    /// bias[M], then the PRelu slopes[M].
    chan: wgpu::Buffer,
    /// Per k = (input channel of the group, ky, kx): (channel, ky · dh, kx · dw, 0) as u32.
    taps: wgpu::Buffer,
    weight_shape: Vec<usize>,
    depthwise: bool,
    tile: ConvTile,
    act: u32,
    alpha: f32,
}

pub struct GemmPacked {
    slopes: Option<wgpu::Buffer>,
    act: u32,
    alpha: f32,
}

/// Output channels × pixels × depth of one conv workgroup tile (conv2d.wgsl).
#[derive(Clone, Copy, Debug)]
struct ConvTile {
    bm: u32,
    bn: u32,
    bk: u32,
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
fn activation_code(activation: &Activation) -> (u32, f32, Option<&Arc<Tensor>>) {
    match activation {
        Activation::None => (0, 0.0, None),
        Activation::Relu => (1, 0.0, None),
        Activation::LeakyRelu(alpha) => (2, *alpha, None),
        Activation::PRelu(slopes) => (3, 0.0, Some(slopes)),
    }
}

fn graph_error(msg: String) -> NnError {
    NnError::InvalidGraph(msg)
}

fn conv_key(conv: &ConvPacked, pointwise: bool) -> KernelKey {
    if conv.depthwise {
        KernelKey::new(Shader::Conv, "depthwise", 4).with("ACT", conv.act)
    } else {
        KernelKey::new(Shader::Conv, "conv2d", 4)
            .with("BM", conv.tile.bm)
            .with("BN", conv.tile.bn)
            .with("BK", conv.tile.bk)
            .with("ACT", conv.act)
            .flag("POINTWISE", pointwise)
    }
}

fn gemm_key(g: &Gemm, has_c: bool, act: u32) -> KernelKey {
    KernelKey::new(Shader::Gemm, "gemm", 4)
        .flag("HAS_C", has_c)
        .with("ACT", act)
        .flag("A_K_FAST", !g.trans_a)
        .flag("B_K_FAST", g.trans_b)
}

fn pool_key(kind: PoolKind, count_include_pad: bool) -> KernelKey {
    KernelKey::new(Shader::Pool, "pool2d", 1)
        .flag("MAX", kind == PoolKind::Max)
        .flag("COUNT_PAD", count_include_pad)
}

fn unary_key(op: Unary) -> Option<KernelKey> {
    let code = match op {
        Unary::Relu => 0,
        Unary::LeakyRelu(_) => 1,
        Unary::Sigmoid => 2,
        Unary::Tanh => 3,
        Unary::Clip { .. } => 4,
        Unary::Identity => return None,
    };
    Some(KernelKey::new(Shader::Eltwise, "unary", 1).with("UNARY_OP", code))
}

fn binary_key(op: Option<Binary>, same_shape: bool) -> KernelKey {
    let code = match op {
        Some(Binary::Add) => 0,
        Some(Binary::Sub) => 1,
        Some(Binary::Mul) => 2,
        Some(Binary::Div) => 3,
        None => 4, // PRelu
    };
    KernelKey::new(Shader::Eltwise, "binary", 2).with("BINARY_OP", code).flag("SAME_SHAPE", same_shape)
}

/// Packs `node`'s weights and compiles the kernels its attributes determine.
pub fn prepare(ctx: &Ctx, graph: &Graph, node: &Node) -> Result<Prepared, NnError> {
    let device = &ctx.device;
    let precompile = |key: KernelKey| ctx.kernels.get(device, &key).map(|_| ());
    Ok(match &node.op {
        Op::Conv(conv) => {
            let packed = pack_conv(device, graph, node, conv)?;
            // SAME padding of a 1x1 stride-1 kernel is no padding.
            let unpadded = matches!(conv.padding, Padding::SameUpper | Padding::SameLower | Padding::NONE);
            let pointwise = conv.kernel == [1, 1] && conv.strides == [1, 1] && unpadded;
            precompile(conv_key(&packed, pointwise))?;
            Prepared::Conv(packed)
        }
        Op::Gemm(g) => {
            let (act, alpha, slopes) = activation_code(&g.activation);
            let has_c = g.beta != 0.0 && node.inputs.get(2).copied().flatten().is_some();
            precompile(gemm_key(g, has_c, act))?;
            Prepared::Gemm(GemmPacked {
                slopes: slopes.map(|s| upload(device, "slopes", s.data())),
                act,
                alpha,
            })
        }
        Op::Pool(p) => {
            precompile(pool_key(p.kind, p.count_include_pad))?;
            Prepared::Plain
        }
        Op::GlobalPool(kind) => {
            precompile(KernelKey::new(Shader::Pool, "global_pool", 1).flag("MAX", *kind == PoolKind::Max))?;
            Prepared::Plain
        }
        Op::Unary(u) => {
            if let Some(key) = unary_key(*u) {
                precompile(key)?;
            }
            Prepared::Plain
        }
        Op::BatchNorm { .. } => {
            precompile(KernelKey::new(Shader::Eltwise, "batch_norm", 5))?;
            Prepared::Plain
        }
        Op::Transpose { .. } => {
            precompile(KernelKey::new(Shader::Layout, "transpose", 1))?;
            Prepared::Plain
        }
        Op::Concat { .. } => {
            precompile(KernelKey::new(Shader::Layout, "concat", 1))?;
            Prepared::Plain
        }
        Op::Pad { .. } => {
            precompile(KernelKey::new(Shader::Layout, "pad", 1))?;
            Prepared::Plain
        }
        // Kernels chosen by shapes (broadcast or not, row lengths) compile at first run.
        Op::MatMul
        | Op::PRelu
        | Op::Binary(_)
        | Op::Softmax { .. }
        | Op::Flatten { .. }
        | Op::Reshape { .. }
        | Op::Squeeze { .. }
        | Op::Unsqueeze { .. } => Prepared::Plain,
    })
}

fn pack_conv(device: &wgpu::Device, graph: &Graph, node: &Node, conv: &Conv) -> Result<ConvPacked, NnError> {
    let w = node
        .inputs
        .get(1)
        .copied()
        .flatten()
        .and_then(|id| graph.constant(id))
        .ok_or_else(|| graph_error("the weights are not a constant".into()))?;
    let ws = w.shape();
    if ws.len() != 4 {
        return Err(graph_error(format!("weights of shape {ws:?} are not 4-D")));
    }
    let (m, cin_g) = (ws[0], ws[1]);
    let groups = conv.group;
    if groups == 0 || !m.is_multiple_of(groups) {
        return Err(graph_error(format!("{m} output channels do not split into {groups} groups")));
    }
    let [kh, kw] = conv.kernel;
    let k = cin_g * kh * kw;
    if w.len() != m * k {
        return Err(graph_error(format!("weights of shape {ws:?} do not match the kernel {kh}x{kw}")));
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
            let bias = graph.constant(id).ok_or_else(|| graph_error("the bias is not a constant".into()))?;
            if bias.len() != m {
                return Err(graph_error(format!("{} biases for {m} channels", bias.len())));
            }
            bias.data().to_vec()
        }
        None => vec![0.0; m],
    };
    let (act, alpha, slopes) = activation_code(&conv.activation);
    if let Some(slopes) = slopes {
        if slopes.len() != m {
            return Err(graph_error(format!("{} PRelu slopes for {m} channels", slopes.len())));
        }
        chan.extend_from_slice(slopes.data());
    }
    let mut taps: Vec<u32> = Vec::with_capacity(if depthwise { 4 } else { 4 * k });
    if !depthwise {
        for kk in 0..k {
            let (c, ky, kx) = (kk / (kh * kw), kk / kw % kh, kk % kw);
            taps.extend([c, ky * conv.dilations[0], kx * conv.dilations[1], 0].map(|v| v as u32));
        }
    } else {
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

fn u(v: usize) -> u32 {
    // Plans refuse tensors of more than u32::MAX values, so every index fits.
    debug_assert!(v <= u32::MAX as usize);
    v as u32
}

/// Adds `node`'s dispatches to the plan and returns where its output lives.
pub fn plan(b: &mut Builder, index: usize, node: &Node, out_shape: Vec<usize>) -> Result<Loc, NnError> {
    let total: usize = out_shape.iter().product();
    match &node.op {
        Op::Flatten { .. } | Op::Reshape { .. } | Op::Squeeze { .. } | Op::Unsqueeze { .. } => {
            Ok(b.alias(b.input(node, 0)?, out_shape))
        }
        Op::Unary(Unary::Identity) => Ok(b.alias(b.input(node, 0)?, out_shape)),
        Op::Conv(conv) => plan_conv(b, index, node, conv, out_shape),
        Op::Gemm(g) => plan_gemm(b, index, node, g, out_shape),
        Op::MatMul => plan_matmul(b, node, out_shape),
        Op::Pool(pool) => {
            let x = b.input(node, 0)?.clone();
            let ([oh, ow], [pt, pl, pb, pr]) = shape::pool_geometry(pool, &x.shape)?;
            let out = b.output(out_shape)?;
            let s = &x.shape;
            let (planes, in_plane, out_plane) = (s[0] * s[1], s[2] * s[3], oh * ow);
            if total == 0 {
                return Ok(out);
            }
            let chunks = b
                .chunks(planes, in_plane.max(out_plane), x.elements().max(total))
                .ok_or_else(|| too_large("one plane of a pooling", &x.shape))?;
            for chunk in chunks {
                let count = chunk.len();
                let (xb, x_sub) = b.window(&x, chunk.start * in_plane, count * in_plane);
                let (yb, y_sub) = b.window(&out, chunk.start * out_plane, count * out_plane);
                let mut params = [
                    count,
                    s[2],
                    s[3],
                    oh,
                    ow,
                    pool.kernel[0],
                    pool.kernel[1],
                    pool.strides[0],
                    pool.strides[1],
                    pool.dilations[0],
                    pool.dilations[1],
                    pt,
                    pl,
                    pb,
                    pr,
                    chunk.start,
                    0,
                    0,
                ]
                .map(u);
                params[16] = x_sub;
                params[17] = y_sub;
                let grid = b.grid(((count * out_plane) as u64).div_ceil(WG))?;
                b.dispatch(pool_key(pool.kind, pool.count_include_pad), &params, &[xb], yb, grid)?;
            }
            Ok(out)
        }
        Op::GlobalPool(kind) => {
            let x = b.input(node, 0)?.clone();
            let planes = x.shape[0] * x.shape[1];
            let size: usize = x.shape[2..].iter().product();
            let out = b.output(out_shape)?;
            if planes == 0 {
                return Ok(out);
            }
            let chunks = b
                .chunks(planes, size, x.elements())
                .ok_or_else(|| too_large("one plane of a pooling", &x.shape))?;
            for chunk in chunks {
                let (xb, x_sub) = b.window(&x, chunk.start * size, chunk.len() * size);
                let (yb, y_sub) = b.window(&out, chunk.start, chunk.len());
                let grid = b.grid(chunk.len() as u64)?;
                b.dispatch(
                    KernelKey::new(Shader::Pool, "global_pool", 1).flag("MAX", *kind == PoolKind::Max),
                    &[u(chunk.len()), u(size), u(chunk.start), x_sub, y_sub],
                    &[xb],
                    yb,
                    grid,
                )?;
            }
            Ok(out)
        }
        Op::Unary(op) => {
            let x = b.input(node, 0)?.clone();
            let out = b.output(out_shape)?;
            let (alpha, lo, hi) = match *op {
                Unary::LeakyRelu(a) => (a, 0.0, 0.0),
                Unary::Clip { min, max } => (0.0, min, max),
                _ => (0.0, 0.0, 0.0),
            };
            let key = unary_key(*op).expect("Identity aliases");
            for chunk in b.chunks(total, 1, total).expect("single values fit") {
                let count = chunk.len();
                let (xb, x_sub) = b.window(&x, chunk.start, count);
                let (yb, y_sub) = b.window(&out, chunk.start, count);
                let params =
                    [u(count), alpha.to_bits(), lo.to_bits(), hi.to_bits(), u(chunk.start), x_sub, y_sub];
                let grid = b.grid((count as u64).div_ceil(WG))?;
                b.dispatch(key.clone(), &params, &[xb], yb, grid)?;
            }
            Ok(out)
        }
        Op::Binary(op) => plan_binary(b, node, Some(*op), out_shape),
        Op::PRelu => plan_binary(b, node, None, out_shape),
        Op::BatchNorm { epsilon } => {
            let x = b.input(node, 0)?.clone();
            let params: Vec<Loc> = (1..5).map(|i| b.input(node, i).cloned()).collect::<Result<_, _>>()?;
            let out = b.output(out_shape)?;
            let plane: usize = x.shape[2..].iter().product();
            for chunk in b.chunks(total, 1, total).expect("single values fit") {
                let count = chunk.len();
                let (xb, x_sub) = b.window(&x, chunk.start, count);
                let (yb, y_sub) = b.window(&out, chunk.start, count);
                let mut inputs = vec![xb];
                inputs.extend(params.iter().map(Loc::whole));
                let grid = b.grid((count as u64).div_ceil(WG))?;
                b.dispatch(
                    KernelKey::new(Shader::Eltwise, "batch_norm", 5),
                    &[u(count), u(x.shape[1]), u(plane), epsilon.to_bits(), u(chunk.start), x_sub, y_sub],
                    &inputs,
                    yb,
                    grid,
                )?;
            }
            Ok(out)
        }
        Op::Softmax { axis, coerce_2d } => {
            let x = b.input(node, 0)?.clone();
            let s = &x.shape;
            let a = shape::normalize_axis(*axis, s.len(), 0)?;
            let (len, inner) = if *coerce_2d {
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
            let chunks =
                b.chunks(blocks, block, total).ok_or_else(|| too_large("one softmax block", &x.shape))?;
            for chunk in chunks {
                let (xb, x_sub) = b.window(&x, chunk.start * block, chunk.len() * block);
                let (yb, y_sub) = b.window(&out, chunk.start * block, chunk.len() * block);
                let rows = chunk.len() * inner;
                let (entry, workgroups) = if len > 64 {
                    ("softmax_wide", rows as u64)
                } else {
                    ("softmax_rows", (rows as u64).div_ceil(WG))
                };
                let grid = b.grid(workgroups)?;
                b.dispatch(
                    KernelKey::new(Shader::Softmax, entry, 1),
                    &[u(rows), u(len), u(inner), u(chunk.start * inner), x_sub, y_sub],
                    &[xb],
                    yb,
                    grid,
                )?;
            }
            Ok(out)
        }
        Op::Transpose { perm } => {
            let x = b.input(node, 0)?.clone();
            let perm = shape::transpose_perm(perm, x.shape.len())?;
            let in_strides = row_major_strides(&x.shape);
            let dims: Vec<(usize, usize)> = perm.iter().map(|&p| (x.shape[p], in_strides[p])).collect();
            let dims = merge_dims(&dims);
            if dims.is_empty() || dims.len() == 1 && dims[0].1 == 1 {
                // The permutation keeps the memory order: no data moves.
                return Ok(b.alias(&x, out_shape));
            }
            if dims.len() > MAX_RANK {
                return Err(NnError::InvalidArgument(format!(
                    "the GPU backend transposes at most {MAX_RANK} separate blocks of dimensions; {perm:?} \
                     on {:?} needs {}",
                    x.shape,
                    dims.len()
                )));
            }
            let out = b.output(out_shape)?;
            let mut params = vec![u(total), u(dims.len())];
            params.extend(padded(dims.iter().map(|d| u(d.0))));
            params.extend(padded(dims.iter().map(|d| u(d.1))));
            let grid = b.grid((total as u64).div_ceil(WG))?;
            b.dispatch(
                KernelKey::new(Shader::Layout, "transpose", 1),
                &params,
                &[x.whole()],
                out.whole(),
                grid,
            )?;
            Ok(out)
        }
        Op::Concat { axis } => {
            let inputs: Vec<Loc> =
                node.inputs.iter().flatten().map(|&id| b.value(id).cloned()).collect::<Result<_, _>>()?;
            let axis = shape::normalize_axis(*axis, out_shape.len(), 0)?;
            let inner: usize = out_shape[axis + 1..].iter().product();
            let out_block = out_shape[axis] * inner;
            let out = b.output(out_shape.clone())?;
            let mut offset = 0;
            for x in &inputs {
                let block = x.shape[axis] * inner;
                let count = x.elements();
                if count > 0 {
                    let grid = b.grid((count as u64).div_ceil(WG))?;
                    b.dispatch(
                        KernelKey::new(Shader::Layout, "concat", 1),
                        &[u(count), u(block), u(out_block), u(offset)],
                        &[x.whole()],
                        out.whole(),
                        grid,
                    )?;
                }
                offset += block;
            }
            Ok(out)
        }
        Op::Pad { pads, value } => {
            let x = b.input(node, 0)?.clone();
            let rank = x.shape.len();
            if rank > MAX_RANK {
                return Err(NnError::InvalidArgument(format!(
                    "the GPU backend pads tensors of rank ≤ {MAX_RANK}, got {:?}",
                    x.shape
                )));
            }
            let out = b.output(out_shape.clone())?;
            if total > 0 {
                let mut params = vec![u(total), u(rank), value.to_bits()];
                params.extend(padded(out_shape.iter().map(|&d| u(d))));
                params.extend(padded(x.shape.iter().map(|&d| u(d))));
                params.extend(padded(row_major_strides(&x.shape).into_iter().map(u)));
                let begins = pads[..rank].iter().map(|&p| {
                    i32::try_from(p)
                        .map(|p| p as u32)
                        .map_err(|_| NnError::InvalidArgument(format!("Pad: padding {p} is out of range")))
                });
                let begins: Vec<u32> = begins.collect::<Result<_, _>>()?;
                params.extend(padded(begins.into_iter()));
                let grid = b.grid((total as u64).div_ceil(WG))?;
                b.dispatch(
                    KernelKey::new(Shader::Layout, "pad", 1),
                    &params,
                    &[x.whole()],
                    out.whole(),
                    grid,
                )?;
            }
            Ok(out)
        }
    }
}

fn too_large(what: &str, shape: &[usize]) -> NnError {
    NnError::TooLarge(format!(
        "{what} of a tensor of shape {shape:?} exceeds the largest buffer binding of the GPU"
    ))
}

/// `values` padded with zeros to MAX_RANK entries.
fn padded(values: impl Iterator<Item = u32>) -> Vec<u32> {
    let mut v: Vec<u32> = values.collect();
    v.resize(MAX_RANK.max(v.len()), 0);
    v
}

fn row_major_strides(shape: &[usize]) -> Vec<usize> {
    let mut strides = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        strides[i] = strides[i + 1] * shape[i + 1];
    }
    strides
}

/// Drops size-1 dimensions of (extent, stride) pairs and merges neighbours that are
/// contiguous with each other (stride[i] == stride[i + 1] · extent[i + 1]).
fn merge_dims(dims: &[(usize, usize)]) -> Vec<(usize, usize)> {
    let mut out: Vec<(usize, usize)> = Vec::new();
    for &(extent, stride) in dims.iter().filter(|d| d.0 != 1) {
        match out.last_mut() {
            Some(last) if last.1 == stride * extent => *last = (last.0 * extent, stride),
            _ => out.push((extent, stride)),
        }
    }
    out
}

/// As [`merge_dims`] for an output shape read by several operands, each with its own strides.
fn merge_multi(shape: &[usize], strides: &[Vec<usize>]) -> (Vec<usize>, Vec<Vec<usize>>) {
    let mut out_shape: Vec<usize> = Vec::new();
    let mut out_strides: Vec<Vec<usize>> = vec![Vec::new(); strides.len()];
    for (d, &extent) in shape.iter().enumerate() {
        if extent == 1 {
            continue;
        }
        let mergeable = !out_shape.is_empty()
            && strides
                .iter()
                .zip(&out_strides)
                .all(|(s, o)| *o.last().expect("same length") == s[d] * extent);
        if mergeable {
            *out_shape.last_mut().expect("not empty") *= extent;
            for (s, o) in strides.iter().zip(&mut out_strides) {
                *o.last_mut().expect("not empty") = s[d];
            }
        } else {
            out_shape.push(extent);
            for (s, o) in strides.iter().zip(&mut out_strides) {
                o.push(s[d]);
            }
        }
    }
    (out_shape, out_strides)
}

fn plan_binary(
    b: &mut Builder,
    node: &Node,
    op: Option<Binary>,
    out_shape: Vec<usize>,
) -> Result<Loc, NnError> {
    let x = b.input(node, 0)?.clone();
    let y = b.input(node, 1)?.clone();
    let total: usize = out_shape.iter().product();
    let out = b.output(out_shape.clone())?;
    if total == 0 {
        return Ok(out);
    }
    let same_shape = x.shape == y.shape;
    let (shape, strides) = if same_shape {
        (vec![], vec![vec![], vec![]])
    } else {
        let strides =
            [shape::broadcast_strides(&x.shape, &out_shape), shape::broadcast_strides(&y.shape, &out_shape)];
        merge_multi(&out_shape, &strides)
    };
    if shape.len() > MAX_RANK {
        return Err(NnError::InvalidArgument(format!(
            "the GPU backend broadcasts over at most {MAX_RANK} separate blocks of dimensions; {:?} with \
             {:?} needs {}",
            x.shape,
            y.shape,
            shape.len()
        )));
    }
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
        let (xb, x_sub) = operand(b, &x, &out_shape, chunk.start, count);
        let (yb, y_sub) = operand(b, &y, &out_shape, chunk.start, count);
        let (ob, o_sub) = b.window(&out, chunk.start, count);
        let mut params = vec![u(count), u(shape.len())];
        params.extend(padded(shape.iter().map(|&d| u(d))));
        params.extend(padded(strides[0].iter().map(|&d| u(d))));
        params.extend(padded(strides[1].iter().map(|&d| u(d))));
        params.extend([u(chunk.start), x_sub, y_sub, o_sub]);
        let grid = b.grid((count as u64).div_ceil(WG))?;
        b.dispatch(binary_key(op, same_shape), &params, &[xb, yb], ob, grid)?;
    }
    Ok(out)
}

fn plan_conv(
    b: &mut Builder,
    index: usize,
    node: &Node,
    conv: &Conv,
    out_shape: Vec<usize>,
) -> Result<Loc, NnError> {
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
    let whole = x.elements().max(out.elements());
    match b.chunks(g.batch, in_image.max(out_image), whole) {
        // Whole images per dispatch (all of them, unless they exceed one binding).
        Some(chunks) => {
            let m_count = if packed.depthwise { g.out_channels } else { cout_g };
            for chunk in chunks {
                conv_dispatch(b, conv, packed, &g, &x, &out, chunk.start, chunk.len(), 0, m_count)?;
            }
        }
        // One image's output exceeds a binding: split its output channels.
        None => {
            let in_plane = g.in_hw[0] * g.in_hw[1];
            let per_channel = if packed.depthwise {
                plane.max(in_plane)
            } else if groups != 1 {
                return Err(too_large("one output image of a grouped convolution", &out.shape));
            } else if in_image as u64 * 4 > b.ctx.max_binding() {
                return Err(too_large("one input image of a convolution", &x.shape));
            } else {
                plane
            };
            let chunks = b
                .chunks(g.out_channels, per_channel, usize::MAX)
                .ok_or_else(|| too_large("one channel of a convolution", &out.shape))?;
            for n in 0..g.batch {
                for chunk in &chunks {
                    conv_dispatch(b, conv, packed, &g, &x, &out, n, 1, chunk.start, chunk.len())?;
                }
            }
        }
    }
    Ok(out)
}

/// One conv dispatch: images [n0, n0 + images), output channels [m0, m0 + m_count) of each
/// group (of the whole tensor for depthwise).
#[allow(clippy::too_many_arguments)]
fn conv_dispatch(
    b: &mut Builder,
    conv: &Conv,
    packed: &ConvPacked,
    g: &shape::ConvGeometry,
    x: &Loc,
    out: &Loc,
    n0: usize,
    images: usize,
    m0: usize,
    m_count: usize,
) -> Result<(), NnError> {
    let [kh, kw] = conv.kernel;
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
    let (xb, x_sub) = b.window(x, x_first, x_count);
    let (yb, y_sub) = b.window(out, y_first, y_count);
    let pointwise = conv.kernel == [1, 1] && conv.strides == [1, 1] && g.pads == [0; 4];
    let tile = packed.tile;
    let m_tiles = m_count.div_ceil(tile.bm as usize);
    let p_tiles = pixels.div_ceil(tile.bn as usize);
    let mut params = [
        g.batch,
        g.in_channels,
        g.in_hw[0],
        g.in_hw[1],
        g.out_channels,
        g.out_hw[0],
        g.out_hw[1],
        kh,
        kw,
        conv.strides[0],
        conv.strides[1],
        conv.dilations[0],
        conv.dilations[1],
        g.pads[0],
        g.pads[1],
        cin_g,
        cout_g,
        cin_g * kh * kw,
        pixels,
        m_tiles,
        p_tiles,
        groups,
        0, // alpha
        n0,
        m0,
        m_count,
        0, // x_sub
        0, // y_sub
    ]
    .map(u);
    params[22] = packed.alpha.to_bits();
    params[26] = x_sub;
    params[27] = y_sub;
    let workgroups = if packed.depthwise {
        (pixels as u64 * m_count as u64).div_ceil(WG)
    } else {
        (p_tiles * m_tiles * groups) as u64
    };
    let grid = b.grid(workgroups)?;
    b.dispatch(
        conv_key(packed, pointwise),
        &params,
        &[xb, Bind::buffer(&packed.weights), Bind::buffer(&packed.chan), Bind::buffer(&packed.taps)],
        yb,
        grid,
    )
}

fn plan_gemm(
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
    let c = if g.beta != 0.0 { b.optional_input(node, 2)?.cloned() } else { None };
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
        return Err(NnError::InvalidArgument(format!("Gemm: fewer PRelu slopes than the {n} columns")));
    }
    let m_tiles = m.div_ceil(64);
    let n_tiles = n.div_ceil(64);
    let mut params: Vec<u32> =
        [m, n, k, a_rs, a_cs, b_rs, b_cs, c_rs, c_cs, m_tiles, n_tiles, 1, 0].into_iter().map(u).collect();
    params.extend([g.alpha.to_bits(), g.beta.to_bits(), packed.alpha.to_bits()]);
    params.extend([0u32; 3 * MAX_BATCH_RANK]);
    let grid = b.grid((m_tiles * n_tiles) as u64)?;
    let dummy = Bind { buffer: &exe.dummy, offset: 0, size: 4 };
    let c_binding = c.as_ref().map_or(dummy, Loc::whole);
    let slopes = packed.slopes.as_ref().map_or(dummy, Bind::buffer);
    b.dispatch(
        gemm_key(g, c.is_some(), packed.act),
        &params,
        &[a.whole(), bm.whole(), c_binding, slopes],
        out.whole(),
        grid,
    )?;
    Ok(out)
}

fn plan_matmul(b: &mut Builder, node: &Node, out_shape: Vec<usize>) -> Result<Loc, NnError> {
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
    let (dims, strides) = merge_multi(&batch, &[a_strides, b_strides]);
    if dims.len() > MAX_BATCH_RANK {
        return Err(NnError::InvalidArgument(format!(
            "the GPU backend broadcasts MatMul over at most {MAX_BATCH_RANK} separate blocks of batch \
             dimensions; {:?} x {:?} needs {}",
            a.shape,
            bm.shape,
            dims.len()
        )));
    }
    let m_tiles = m.div_ceil(64);
    let n_tiles = n.div_ceil(64);
    let mut params: Vec<u32> =
        [m, n, k, k, 1, n, 1, 0, 0, m_tiles, n_tiles, batches, dims.len()].into_iter().map(u).collect();
    params.extend([1f32.to_bits(), 0f32.to_bits(), 0f32.to_bits()]);
    let fill = |v: &[usize]| {
        let mut v: Vec<u32> = v.iter().map(|&d| u(d)).collect();
        v.resize(MAX_BATCH_RANK, 0);
        v
    };
    params.extend(fill(&dims));
    params.extend(fill(&strides[0]));
    params.extend(fill(&strides[1]));
    let grid = b.grid((m_tiles * n_tiles * batches) as u64)?;
    let exe = b.exe;
    let dummy = Bind { buffer: &exe.dummy, offset: 0, size: 4 };
    let key = KernelKey::new(Shader::Gemm, "gemm", 4)
        .flag("HAS_C", false)
        .with("ACT", 0)
        .flag("A_K_FAST", true)
        .flag("B_K_FAST", false);
    b.dispatch(key, &params, &[a.whole(), bm.whole(), dummy, dummy], out.whole(), grid)?;
    Ok(out)
}
