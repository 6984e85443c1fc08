//! What running a graph on given input shapes costs, estimated from the shapes alone before
//! anything is computed: the work (flops) and the most memory its values hold at once. The
//! wasi-nn host refuses a compute over its ceilings before spending either.

use super::ir::{Graph, Node, Op};
use super::{Excess, NnError, element_count, shape};

/// The estimated cost of one run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Cost {
    /// Multiply-add work of the Conv, Gemm and MatMul nodes, 2 flops per multiply-add.
    pub flops: u64,
    /// Most bytes the inputs and intermediate values hold at once (constants excluded: they
    /// are held whether the graph runs or not).
    pub peak_bytes: u64,
}

/// Multiply-add work of a node given its inputs' shapes, 2 flops per multiply-add (what
/// every backend reports as GFLOP/s).
pub fn node_flops(node: &Node, shapes: &[Option<&[usize]>]) -> u64 {
    match (&node.op, shapes.first().copied().flatten(), shapes.get(1).copied().flatten()) {
        (Op::Conv(conv), Some(x), Some(w)) => shape::conv_geometry(conv, x, w).map_or(0, |g| {
            saturating_product(&[2, g.batch, g.out_channels, g.out_hw[0], g.out_hw[1], w[1], w[2], w[3]])
        }),
        (Op::Gemm(_) | Op::MatMul, Some(a), Some(b)) if a.len() >= 2 && b.len() >= 2 => {
            saturating_product(&a[..a.len() - 1]).saturating_mul(saturating_product(&[
                2,
                a[a.len() - 1],
                b[b.len() - 1],
            ]))
        }
        _ => 0,
    }
}

/// The product of `dims`, saturating: a guest's shapes may be crafted to overflow, and a
/// saturated estimate is refused by any ceiling.
fn saturating_product(dims: &[usize]) -> u64 {
    dims.iter().fold(1u64, |acc, &d| acc.saturating_mul(d as u64))
}

impl Graph {
    /// The cost of running the graph on inputs of `input_shapes` (in `Graph::inputs` order).
    /// Fails as a run would on shapes that do not fit the graph.
    pub fn cost(&self, input_shapes: &[Vec<usize>]) -> Result<Cost, NnError> {
        let mut shapes: Vec<Option<Vec<usize>>> =
            self.values.iter().map(|v| v.constant.as_ref().map(|c| c.shape().to_vec())).collect();
        let last_use = self.last_uses();
        let bytes = |shape: &[usize]| {
            element_count(shape).and_then(|n| {
                (n as u64)
                    .checked_mul(4)
                    .ok_or_else(|| NnError::too_large(Excess::Bytes { shape: shape.to_vec() }))
            })
        };
        let mut live = 0u64;
        for (input, shape) in self.inputs.iter().zip(input_shapes) {
            live = live.saturating_add(bytes(shape)?);
            shapes[input.value] = Some(shape.clone());
        }
        let mut cost = Cost { flops: 0, peak_bytes: live };
        for (i, node) in self.nodes.iter().enumerate() {
            let inputs: Vec<Option<&[usize]>> =
                node.inputs.iter().map(|id| id.and_then(|id| shapes[id].as_deref())).collect();
            cost.flops = cost.flops.saturating_add(node_flops(node, &inputs));
            let outputs = shape::infer(&node.op, &inputs)?;
            for (&id, shape) in node.outputs.iter().zip(outputs) {
                live = live.saturating_add(bytes(&shape)?);
                shapes[id] = Some(shape);
            }
            cost.peak_bytes = cost.peak_bytes.max(live);
            let mut freed: Vec<usize> = node.inputs.iter().flatten().copied().collect();
            freed.sort_unstable();
            freed.dedup();
            for id in freed {
                if last_use[id] == i && self.values[id].constant.is_none() {
                    live = live.saturating_sub(shapes[id].as_deref().map_or(Ok(0), bytes)?);
                }
            }
        }
        Ok(cost)
    }
}

#[cfg(test)]
mod tests {
    use onnx_proto::build::{Dim, attr_ints, model, node, tensor_f32, value_info_f32};
    use prost::Message;

    use super::Cost;

    /// x [1, 3, 8, 8] -> Conv (4 filters 3x3, pad 1) -> Relu -> MatMul by [8, 2].
    fn graph() -> crate::Graph {
        let graph = onnx_proto::GraphProto {
            name: "cost".into(),
            node: vec![
                node("Conv", "conv", &["x", "w"], &["c"], vec![attr_ints("pads", &[1, 1, 1, 1])]),
                node("Relu", "relu", &["c"], &["r"], vec![]),
                node("MatMul", "matmul", &["r", "m"], &["y"], vec![]),
            ],
            initializer: vec![
                tensor_f32("w", &[4, 3, 3, 3], &[0.1; 108]),
                tensor_f32("m", &[8, 2], &[0.5; 16]),
            ],
            input: vec![value_info_f32(
                "x",
                &[Dim::Fixed(1), Dim::Fixed(3), Dim::Symbolic("H".into()), Dim::Fixed(8)],
            )],
            output: vec![value_info_f32(
                "y",
                &[Dim::Fixed(1), Dim::Fixed(4), Dim::Symbolic("H".into()), Dim::Fixed(2)],
            )],
            ..Default::default()
        };
        crate::load_onnx(&model(graph, 13, "test", "0", "").encode_to_vec()).unwrap()
    }

    #[test]
    fn cost_counts_the_work_and_the_most_memory_held_at_once() {
        let graph = graph();
        // Conv: 2 * (4 * 8 * 8 outputs) * (3 * 3 * 3) = 13824; MatMul: 2 * (4 * 8 rows) * 8 * 2 = 1024.
        // Memory: input 768 B + conv output 1024 B at once (Relu is fused or in place at most
        // as much again); the MatMul output is 256 B.
        let cost = graph.cost(&[vec![1, 3, 8, 8]]).unwrap();
        assert_eq!(cost.flops, 13824 + 1024);
        assert!((1792..=2816).contains(&cost.peak_bytes), "{cost:?}");
        // Twice the height: twice the work and memory.
        let taller = graph.cost(&[vec![1, 3, 16, 8]]).unwrap();
        assert_eq!(taller, Cost { flops: 2 * cost.flops, peak_bytes: 2 * cost.peak_bytes });
        assert!(graph.cost(&[vec![1, 5, 8, 8]]).is_err(), "shapes that do not fit the graph are refused");
    }
}
