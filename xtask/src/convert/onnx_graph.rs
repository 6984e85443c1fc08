//! The converters' one ONNX graph builder: nodes and initializers appended in the order the
//! converter visits the network, then the model around them.
//!
//! Every converter writes opset 13 models produced by "refacen-xtask", one float32 input and
//! one float32 output. Converters are pinned by the sha256 of their output, so what this
//! writes, and in which order, is part of every pin: change it only with the pins.

use anyhow::{Result, ensure};
use onnx_proto::build::{self, Dim, attr_ints, node};
use onnx_proto::{AttributeProto, GraphProto, ModelProto, NodeProto, TensorProto};

/// The attributes of a Conv or pooling node: its `kernel` window, `strides` and `pads` (begin
/// rows, begin columns, end rows, end columns).
pub fn window_attrs(kernel: [usize; 2], strides: [usize; 2], pads: [usize; 4]) -> Vec<AttributeProto> {
    let ints = |values: &[usize]| values.iter().map(|&v| v as i64).collect::<Vec<_>>();
    vec![
        attr_ints("kernel_shape", &ints(&kernel)),
        attr_ints("strides", &ints(&strides)),
        attr_ints("pads", &ints(&pads)),
    ]
}

/// The opset every converted model imports.
pub const OPSET: i64 = 13;

/// An ONNX graph being built. Each node has one output, named after the node, so a node's
/// name is also the value it computes.
#[derive(Default)]
pub struct GraphBuilder {
    nodes: Vec<NodeProto>,
    initializers: Vec<TensorProto>,
}

impl GraphBuilder {
    /// Adds a node `name` of `op`: its output.
    pub fn op(&mut self, op: &str, name: &str, inputs: &[&str], attrs: Vec<AttributeProto>) -> String {
        self.nodes.push(node(op, name, inputs, &[name], attrs));
        name.to_string()
    }

    /// A Conv node `name` reading `inputs` (x, weights, and a bias when there is one), with
    /// [`window_attrs`]: its output.
    pub fn conv(
        &mut self,
        name: &str,
        inputs: &[&str],
        kernel: [usize; 2],
        strides: [usize; 2],
        pads: [usize; 4],
    ) -> String {
        self.op("Conv", name, inputs, window_attrs(kernel, strides, pads))
    }

    /// A float32 initializer `name` of shape `dims`: its name.
    pub fn constant(&mut self, name: &str, dims: &[usize], values: &[f32]) -> String {
        self.initializers.push(build::tensor_f32(name, dims, values));
        name.to_string()
    }

    /// A one-dimensional int64 initializer `name` (shapes, pads): its name.
    pub fn int_constant(&mut self, name: &str, values: &[i64]) -> String {
        self.initializers.push(build::tensor_i64(name, values));
        name.to_string()
    }

    /// The model of graph `name`: float32 `input` and `output` of the dimensions given, where
    /// `output` is what the last node computes, `value` until now.
    pub fn finish(
        mut self,
        name: &str,
        input: (&str, &[Dim]),
        output: (&str, &[Dim]),
        value: &str,
        doc: &str,
    ) -> Result<ModelProto> {
        let last = self.nodes.last_mut();
        ensure!(
            last.as_ref().and_then(|n| n.output.first()).map(String::as_str) == Some(value),
            "the graph's output `{value}` is not computed by its last node"
        );
        last.expect("checked above").output = vec![output.0.to_string()];
        let graph = GraphProto {
            node: self.nodes,
            name: name.into(),
            initializer: self.initializers,
            input: vec![build::value_info_f32(input.0, input.1)],
            output: vec![build::value_info_f32(output.0, output.1)],
            ..Default::default()
        };
        Ok(build::model(graph, OPSET, "refacen-xtask", env!("CARGO_PKG_VERSION"), doc))
    }
}
