//! Graph rewrites every backend profits from: batch norms and per-channel affines folded into
//! convolution weights, `MatMul + Add` turned into `Gemm`, and activations fused into the
//! convolution or GEMM that produces their input, so each layer is one pass over memory.

use std::sync::Arc;

use super::Tensor;
use super::ir::{Activation, Binary, Gemm, Graph, Node, Op, Unary, ValueId};

pub fn optimize(mut graph: Graph) -> Graph {
    // Each rule fuses a consumer into its producer; repeat until nothing changes so chains
    // like Conv → BatchNorm → Relu collapse fully.
    loop {
        let mut changed = false;
        for consumer in 0..graph.nodes.len() {
            if let Some(producer) = fusable_producer(&graph, consumer)
                && fuse(&mut graph, producer, consumer)
            {
                changed = true;
            }
        }
        let before = graph.nodes.len();
        graph.nodes.retain(|n| !n.outputs.is_empty());
        if !changed && graph.nodes.len() == before {
            return graph;
        }
    }
}

/// The node producing `consumer`'s first input, when nothing else reads that value.
fn fusable_producer(graph: &Graph, consumer: usize) -> Option<usize> {
    let node = &graph.nodes[consumer];
    if node.outputs.is_empty() {
        return None;
    }
    let value = node.inputs.first().copied().flatten()?;
    if graph.use_counts()[value] != 1 {
        return None;
    }
    graph.nodes[..consumer].iter().position(|n| n.outputs.first() == Some(&value))
}

/// Fuses node `c` into node `p` when a rule applies; returns whether it did.
fn fuse(graph: &mut Graph, p: usize, c: usize) -> bool {
    let consumer = graph.nodes[c].clone();
    let second = consumer.inputs.get(1).copied().flatten();
    let second_const = second.and_then(|id| graph.constant(id).cloned());
    let producer_op = graph.nodes[p].op.clone();

    let fused = match (&producer_op, &consumer.op) {
        (Op::Conv(conv), Op::BatchNorm { epsilon }) if conv.activation == Activation::None => {
            let params: Option<Vec<Arc<Tensor>>> =
                consumer.inputs[1..].iter().map(|i| i.and_then(|id| graph.constant(id).cloned())).collect();
            match params {
                Some(params) if params.len() == 4 => {
                    let (scale, bias, mean, var) = (&params[0], &params[1], &params[2], &params[3]);
                    let factor: Vec<f32> =
                        scale.data().iter().zip(var.data()).map(|(s, v)| s / (v + epsilon).sqrt()).collect();
                    let shift: Vec<f32> = bias
                        .data()
                        .iter()
                        .zip(mean.data())
                        .zip(&factor)
                        .map(|((b, m), f)| b - m * f)
                        .collect();
                    rescale_conv(graph, p, &factor, &shift)
                }
                _ => false,
            }
        }
        (Op::Conv(conv), Op::Binary(op @ (Binary::Add | Binary::Mul)))
            if conv.activation == Activation::None =>
        {
            let channels = conv_channels(graph, p);
            match second_const.as_deref().and_then(|t| per_channel(t, channels, 4)) {
                Some(values) if *op == Binary::Mul => rescale_conv(graph, p, &values, &vec![0.0; channels]),
                Some(values) => rescale_conv(graph, p, &vec![1.0; channels], &values),
                None => false,
            }
        }
        (Op::MatMul, Op::Binary(Binary::Add)) => {
            let weights = graph.nodes[p].inputs.get(1).copied().flatten();
            let n = weights.and_then(|w| graph.constant(w)).filter(|w| w.rank() == 2).map(|w| w.shape()[1]);
            let bias_ok = second_const.as_ref().is_some_and(|b| {
                b.rank() <= 2 && b.len() == n.unwrap_or(0) && b.shape().iter().rev().skip(1).all(|&d| d == 1)
            });
            if n.is_some() && bias_ok && input_is_2d(graph, p) {
                let node = &mut graph.nodes[p];
                node.op = Op::Gemm(Gemm {
                    alpha: 1.0,
                    beta: 1.0,
                    trans_a: false,
                    trans_b: false,
                    activation: Activation::None,
                });
                node.inputs.push(second);
                true
            } else {
                false
            }
        }
        (Op::Conv(_) | Op::Gemm(_), _) => {
            let activation = match (&consumer.op, &second_const) {
                (Op::Unary(Unary::Relu), _) => Some(Activation::Relu),
                (Op::Unary(Unary::LeakyRelu(alpha)), _) => Some(Activation::LeakyRelu(*alpha)),
                (Op::PRelu, Some(slope)) => {
                    // A Gemm whose B is not constant has no known column count: not fused
                    // (a scalar slope would otherwise become an empty per-column table).
                    let (channels, rank) = match producer_op {
                        Op::Conv(_) => (Some(conv_channels(graph, p)), 4),
                        _ => (gemm_columns(graph, p), 2),
                    };
                    channels.and_then(|channels| {
                        per_channel(slope, channels, rank).map(|v| {
                            Activation::PRelu(Arc::new(
                                Tensor::new(vec![channels], v).expect("length checked"),
                            ))
                        })
                    })
                }
                _ => None,
            };
            match (activation, &mut graph.nodes[p].op) {
                (Some(a), Op::Conv(conv)) if conv.activation == Activation::None => {
                    conv.activation = a;
                    true
                }
                (Some(a), Op::Gemm(gemm)) if gemm.activation == Activation::None => {
                    gemm.activation = a;
                    true
                }
                _ => false,
            }
        }
        _ => false,
    };
    if fused {
        graph.nodes[p].outputs = consumer.outputs;
        graph.nodes[c] = Node { outputs: vec![], ..consumer };
    }
    fused
}

/// `Add(r, Conv(x))`, with the Relu or LeakyRelu that alone reads its sum, as one Conv that
/// adds `r` to its output before the activation (onnxruntime's FusedConv does the same). The
/// CPU backend then writes the conv's output over r's values where r is not read again (a
/// residual block's input, which its branches have just read, so its lines are in cache),
/// instead of into fresh memory that the Add and the activation read and write again. For
/// the CPU backend; the GPU's kernels take no residual.
///
/// FaceNet at batch 16 by nn_layers, six alternating runs each (2-core VM, 2026-12-06): its
/// block17s' residual convs, Adds and Relus 43.1 -> 37.8 ms (medians), its block35s' 12.4 ->
/// 9.1 ms, the whole graph 236.0 -> 213.7 ms. An earlier fusion that wrote into fresh memory
/// and read the residual from its own (the Add's inputs both kept) saved nothing.
///
/// A conv is fused when the Add is the only reader of its output and `r` is computed before
/// the conv runs. Linear in the graph's size.
pub fn fuse_residual_adds(mut graph: Graph) -> Graph {
    let uses = graph.use_counts();
    let last_use = graph.last_uses();
    let mut producer: Vec<Option<usize>> = vec![None; graph.values.len()];
    for (i, node) in graph.nodes.iter().enumerate() {
        node.outputs.iter().for_each(|&v| producer[v] = Some(i));
    }
    let mut fused = false;
    for a in 0..graph.nodes.len() {
        let add = &graph.nodes[a];
        let (Op::Binary(Binary::Add), [Some(left), Some(right)], [sum]) =
            (&add.op, add.inputs.as_slice(), add.outputs.as_slice())
        else {
            continue;
        };
        let (sum, [left, right]) = (*sum, [*left, *right]);
        let fusable = |(conv_out, residual): (ValueId, ValueId)| {
            let p = producer[conv_out]?;
            let plain_conv =
                matches!(&graph.nodes[p].op, Op::Conv(c) if c.activation == Activation::None && !c.residual);
            let residual_ready = producer[residual].is_none_or(|r| r < p);
            (conv_out != residual && uses[conv_out] == 1 && plain_conv && p < a && residual_ready)
                .then_some((p, residual))
        };
        let Some((p, residual)) = fusable((right, left)).or_else(|| fusable((left, right))) else {
            continue;
        };
        // The activation that alone reads the sum, if any.
        let reader = (uses[sum] == 1).then(|| last_use[sum]).filter(|&q| q < graph.nodes.len());
        let activation = reader.and_then(|q| match &graph.nodes[q].op {
            Op::Unary(Unary::Relu) => Some((q, Activation::Relu)),
            Op::Unary(Unary::LeakyRelu(alpha)) => Some((q, Activation::LeakyRelu(*alpha))),
            _ => None,
        });
        let (output, activation) = match activation {
            Some((q, activation)) => (std::mem::take(&mut graph.nodes[q].outputs), activation),
            None => (vec![sum], Activation::None),
        };
        graph.nodes[a].outputs.clear();
        output.iter().for_each(|&v| producer[v] = Some(p));
        let conv = &mut graph.nodes[p];
        let Op::Conv(c) = &mut conv.op else { unreachable!("checked above") };
        c.activation = activation;
        c.residual = true;
        conv.inputs.resize(3, None);
        conv.inputs.push(Some(residual));
        conv.outputs = output;
        fused = true;
    }
    if fused {
        graph.nodes.retain(|n| !n.outputs.is_empty());
    }
    graph
}

fn conv_channels(graph: &Graph, conv: usize) -> usize {
    let w = graph.nodes[conv].inputs[1].expect("Conv has weights");
    graph.constant(w).map(|t| t.shape()[0]).expect("Conv weights are constant")
}

fn gemm_columns(graph: &Graph, gemm: usize) -> Option<usize> {
    let Op::Gemm(g) = &graph.nodes[gemm].op else { return None };
    let b = graph.constant(graph.nodes[gemm].inputs.get(1).copied().flatten()?)?;
    (b.rank() == 2).then(|| if g.trans_b { b.shape()[0] } else { b.shape()[1] })
}

/// Whether the first input of node `n` is certainly 2-D (so MatMul equals Gemm).
fn input_is_2d(graph: &Graph, n: usize) -> bool {
    let Some(x) = graph.nodes[n].inputs[0] else { return false };
    if let Some(input) = graph.inputs.iter().find(|i| i.value == x) {
        return input.dims.len() == 2;
    }
    graph
        .nodes
        .iter()
        .any(|node| node.outputs.first() == Some(&x) && matches!(node.op, Op::Flatten { .. } | Op::Gemm(_)))
}

/// The per-channel values of `t` when it broadcasts over channel dimension 1 of a rank-`rank`
/// tensor with `channels` channels (rank 2: over the last dimension), or is a scalar.
fn per_channel(t: &Tensor, channels: usize, rank: usize) -> Option<Vec<f32>> {
    if t.len() == 1 {
        return Some(vec![t.data()[0]; channels]);
    }
    if t.len() != channels || t.rank() > rank {
        return None;
    }
    // Align t's shape to the right of the output shape; the channel axis (1 for both NCHW and
    // [rows, columns]) must carry `channels`.
    let channel_axis = 1;
    let offset = rank - t.rank();
    let ok = t
        .shape()
        .iter()
        .enumerate()
        .all(|(i, &d)| if i + offset == channel_axis { d == channels } else { d == 1 });
    ok.then(|| t.data().to_vec())
}

/// Replaces conv `p`'s weights W and bias B with W·factor and B·factor + shift (per output channel).
fn rescale_conv(graph: &mut Graph, p: usize, factor: &[f32], shift: &[f32]) -> bool {
    let node = graph.nodes[p].clone();
    let Some(w) = node.inputs[1].and_then(|id| graph.constant(id).cloned()) else { return false };
    let channels = w.shape()[0];
    if factor.len() != channels || shift.len() != channels {
        return false;
    }
    let per_channel = w.len() / channels;
    let mut weights = w.as_ref().clone();
    for (c, chunk) in weights.data_mut().chunks_mut(per_channel).enumerate() {
        chunk.iter_mut().for_each(|v| *v *= factor[c]);
    }
    let old_bias = node.inputs.get(2).copied().flatten().and_then(|id| graph.constant(id).cloned());
    let bias: Vec<f32> = (0..channels)
        .map(|c| old_bias.as_ref().map_or(0.0, |b| b.data()[c]) * factor[c] + shift[c])
        .collect();
    let w_id = graph.add_constant(format!("{}/folded_weights", node.name), weights);
    let b_id: ValueId = graph.add_constant(
        format!("{}/folded_bias", node.name),
        Tensor::new(vec![channels], bias).expect("length"),
    );
    let node = &mut graph.nodes[p];
    node.inputs.truncate(1);
    node.inputs.push(Some(w_id));
    node.inputs.push(Some(b_id));
    true
}
