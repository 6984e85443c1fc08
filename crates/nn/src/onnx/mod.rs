//! ONNX import: protobuf in, [`Graph`] out. Everything refacen cannot run is refused here,
//! at load time, with the op and the node named.

mod attrs;
mod conv;
mod fold;
mod ops;
mod resize;
mod tensor;

pub use onnx_proto as proto;

use std::collections::HashMap;
use std::sync::Arc;

use prost::Message;

use super::ir::{Graph, GraphInput, Node, Op, Value, ValueId};
use super::{Encoding, GraphFault, NnError, Tensor, Unsupported, shape};
use attrs::Attrs;
use proto::tensor_shape_proto::dimension;
use proto::type_proto;
use proto::{DataType, NodeProto};
use tensor::{data_type_name, decode_tensor};

/// The ops the importer accepts, for `refacen guests` and error messages.
pub const SUPPORTED_OPS: &[&str] = &[
    "Add",
    "AveragePool",
    "BatchNormalization",
    "Cast",
    "Clip",
    "Concat",
    "Constant",
    "Conv",
    "ConvTranspose",
    "Div",
    "Dropout",
    "Exp",
    "Flatten",
    "Gather",
    "Gemm",
    "GlobalAveragePool",
    "GlobalMaxPool",
    "HardSigmoid",
    "HardSwish",
    "Identity",
    "LeakyRelu",
    "MatMul",
    "MaxPool",
    "Mul",
    "PRelu",
    "Pad",
    "Pow",
    "ReduceMean",
    "ReduceSum",
    "Relu",
    "Reshape",
    "Resize",
    "Shape",
    "Sigmoid",
    "Slice",
    "Softmax",
    "Sqrt",
    "Squeeze",
    "Sub",
    "Tanh",
    "Transpose",
    "Unsqueeze",
    "Upsample",
];

/// A decoded initializer or Constant: float tensors feed computation, integer ones only
/// parameterize ops (shapes, pads, axes, indices) and are folded at load.
enum ConstValue {
    Float(Tensor),
    Int(IntConst),
}

/// An integer (int64, int32 or bool) constant: only known at load, never a run-time tensor.
#[derive(Clone, Debug)]
struct IntConst {
    dims: Vec<usize>,
    values: Vec<i64>,
}

impl IntConst {
    fn vector(values: Vec<i64>) -> Self {
        IntConst { dims: vec![values.len()], values }
    }
}

/// Parses an ONNX model into the IR.
pub fn import(bytes: &[u8]) -> Result<Graph, NnError> {
    let model =
        proto::ModelProto::decode(bytes).map_err(|e| NnError::InvalidEncoding(Encoding::Protobuf(e)))?;
    let opset = model
        .opset_import
        .iter()
        .find(|o| o.domain.is_empty() || o.domain == "ai.onnx")
        .map(|o| o.version)
        .unwrap_or(1);
    let graph = model.graph.ok_or(NnError::InvalidEncoding(Encoding::NoGraph))?;
    Importer::new(opset, graph.name.clone()).run(graph)
}

struct Importer {
    opset: i64,
    graph: Graph,
    ids: HashMap<String, ValueId>,
    int_constants: HashMap<String, IntConst>,
    /// Shapes known at load (constants, inputs with fixed dimensions, and what follows from
    /// them), for folding Shape.
    static_shapes: HashMap<ValueId, Vec<usize>>,
    /// Optional outputs refacen does not compute, and the refusal for whatever reads them.
    uncomputed: HashMap<String, (String, String, Unsupported)>,
}

impl Importer {
    fn new(opset: i64, name: String) -> Self {
        Importer {
            opset,
            graph: Graph { name, values: vec![], inputs: vec![], outputs: vec![], nodes: vec![] },
            ids: HashMap::new(),
            int_constants: HashMap::new(),
            static_shapes: HashMap::new(),
            uncomputed: HashMap::new(),
        }
    }

    fn define(&mut self, name: &str, constant: Option<Tensor>) -> Result<ValueId, NnError> {
        if self.ids.contains_key(name) {
            return Err(NnError::invalid_graph(GraphFault::DefinedTwice { value: name.to_string() }));
        }
        if let Some(t) = &constant {
            self.static_shapes.insert(self.graph.values.len(), t.shape().to_vec());
        }
        self.graph.values.push(Value { name: name.to_string(), constant: constant.map(Arc::new) });
        let id = self.graph.values.len() - 1;
        self.ids.insert(name.to_string(), id);
        Ok(id)
    }

    fn define_constant(&mut self, name: &str, value: ConstValue) -> Result<(), NnError> {
        match value {
            ConstValue::Float(t) => {
                self.define(name, Some(t))?;
            }
            ConstValue::Int(v) => {
                self.int_constants.insert(name.to_string(), v);
            }
        }
        Ok(())
    }

    fn run(mut self, graph: proto::GraphProto) -> Result<Graph, NnError> {
        for init in &graph.initializer {
            let value = decode_tensor(init)?;
            self.define_constant(&init.name, value)?;
        }
        for input in &graph.input {
            if self.ids.contains_key(&input.name) || self.int_constants.contains_key(&input.name) {
                continue; // an initializer listed as input (IR < 4 style): a constant
            }
            let tensor_type = check_float_value(input, "input")?;
            let dims: Vec<Option<usize>> = tensor_type
                .and_then(|t| t.shape.as_ref())
                .map(|s| {
                    s.dim
                        .iter()
                        .map(|d| match d.value {
                            Some(dimension::Value::DimValue(v)) if v > 0 => Some(v as usize),
                            _ => None,
                        })
                        .collect()
                })
                .unwrap_or_default();
            let value = self.define(&input.name, None)?;
            if !dims.is_empty() && dims.iter().all(Option::is_some) {
                self.static_shapes.insert(value, dims.iter().flatten().copied().collect());
            }
            self.graph.inputs.push(GraphInput { value, dims });
        }
        for node in &graph.node {
            self.node(node)?;
        }
        for output in &graph.output {
            if let Some((op, node, detail)) = self.uncomputed.remove(&output.name) {
                return Err(NnError::UnsupportedOp { op, node, detail });
            }
            check_float_value(output, "output")?;
            if let Some(c) = self.int_constants.get(&output.name) {
                return Err(NnError::UnsupportedOp {
                    op: "graph output".into(),
                    node: output.name.clone(),
                    detail: Unsupported::ElementType {
                        value: output.name.clone(),
                        elem_type: format!("INT64 (a constant of {} values)", c.values.len()),
                    },
                });
            }
            let id = *self.ids.get(&output.name).ok_or_else(|| {
                NnError::invalid_graph(GraphFault::OutputNeverComputed { output: output.name.clone() })
            })?;
            self.graph.outputs.push(id);
        }
        if self.graph.outputs.is_empty() {
            return Err(NnError::invalid_graph(GraphFault::NoOutputs));
        }
        Ok(self.graph)
    }

    fn node(&mut self, node: &NodeProto) -> Result<(), NnError> {
        let name = if node.name.is_empty() {
            node.output.first().cloned().unwrap_or_default()
        } else {
            node.name.clone()
        };
        let attrs = Attrs { node, name: &name };
        if !(node.domain.is_empty() || node.domain == "ai.onnx") {
            return Err(attrs.unsupported(Unsupported::Domain(node.domain.clone())));
        }
        if let Some((op, node, detail)) = node.input.iter().find_map(|i| self.uncomputed.get(i)) {
            return Err(NnError::UnsupportedOp {
                op: op.clone(),
                node: node.clone(),
                detail: detail.clone(),
            });
        }
        // Optional outputs refacen does not compute: refused if anything reads them.
        for (index, o) in node.output.iter().enumerate().skip(1).filter(|(_, o)| !o.is_empty()) {
            let what = match node.op_type.as_str() {
                "Dropout" => "the dropout mask",
                "MaxPool" => "the argmax indices",
                "BatchNormalization" => "training statistics",
                _ => "an optional output",
            };
            let refusal = (node.op_type.clone(), name.clone(), Unsupported::Output { index, what });
            self.uncomputed.insert(o.clone(), refusal);
        }
        let output = node
            .output
            .first()
            .filter(|o| !o.is_empty())
            .ok_or_else(|| attrs.error(GraphFault::NoOutput))?
            .clone();
        if node.op_type == "Constant" {
            return self.constant(node, &attrs);
        }
        if let Some(value) = self.fold(node, &attrs)? {
            return self.define_constant(&output, value);
        }
        if node.op_type == "Clip" && self.opset >= 11 && self.clip_bounds(node, &attrs)?.is_none() {
            return self.dynamic_clip(node, &attrs, name.clone(), &output);
        }
        if node.op_type == "Pow"
            && let Some(exponent) = node.input.get(1).filter(|n| self.int_constants.contains_key(*n))
        {
            // An integer exponent (Pow's T2) promoted to float.
            let t = self.float_constant(node, 1, &attrs)?;
            let id = self.graph.values.len();
            self.graph.values.push(Value { name: exponent.clone(), constant: Some(t.clone()) });
            self.static_shapes.insert(id, t.shape().to_vec());
            self.ids.insert(exponent.clone(), id);
        }
        let (op, tensor_inputs) = self.op(node, &attrs)?;
        let inputs = self.node_inputs(node, tensor_inputs, &attrs)?;
        if let Op::Conv(_) = op {
            // Weights must be known at load time so backends can pack them once.
            self.float_constant(node, 1, &attrs)?;
        }
        self.push_node(name, op, inputs, &output)
    }

    /// Adds a node and, where its input shapes are known at load, records its output shape.
    fn push_node(
        &mut self,
        name: String,
        op: Op,
        inputs: Vec<Option<ValueId>>,
        output: &str,
    ) -> Result<(), NnError> {
        let output = self.define(output, None)?;
        let known: Option<Vec<Option<&[usize]>>> = inputs
            .iter()
            .map(|id| match id {
                None => Some(None),
                Some(id) => self.static_shapes.get(id).map(|s| Some(s.as_slice())),
            })
            .collect();
        if let Some(shapes) = known
            && let Ok(mut out) = shape::infer(&op, &shapes)
        {
            self.static_shapes.insert(output, out.remove(0));
        }
        self.graph.nodes.push(Node { name, op, inputs, outputs: vec![output] });
        Ok(())
    }
    /// The value ids of the node's first `count` inputs (`None` for an omitted optional one).
    fn node_inputs(
        &self,
        node: &NodeProto,
        count: usize,
        attrs: &Attrs,
    ) -> Result<Vec<Option<ValueId>>, NnError> {
        let mut inputs = Vec::new();
        for input_name in node.input.iter().take(count) {
            if input_name.is_empty() {
                inputs.push(None);
                continue;
            }
            let id = *self.ids.get(input_name).ok_or_else(|| {
                if self.int_constants.contains_key(input_name) {
                    attrs.unsupported(Unsupported::ElementType {
                        value: input_name.clone(),
                        elem_type: "INT64 (an integer constant)".into(),
                    })
                } else {
                    attrs.error(GraphFault::UndefinedInput { input: input_name.clone() })
                }
            })?;
            inputs.push(Some(id));
        }
        if inputs.first().copied().flatten().is_none() {
            return Err(attrs.error(GraphFault::MissingInput { index: 0 }));
        }
        Ok(inputs)
    }

    fn float_constant(&self, node: &NodeProto, index: usize, attrs: &Attrs) -> Result<Arc<Tensor>, NnError> {
        let name = node.input.get(index).ok_or_else(|| attrs.error(GraphFault::MissingInput { index }))?;
        if let Some(c) = self.int_constants.get(name) {
            return Ok(Arc::new(Tensor::new(c.dims.clone(), c.values.iter().map(|&v| v as f32).collect())?));
        }
        self.ids
            .get(name)
            .and_then(|&id| self.graph.values[id].constant.clone())
            .ok_or_else(|| attrs.unsupported(Unsupported::DynamicInput { index, name: name.clone() }))
    }

    fn int_input(&self, node: &NodeProto, index: usize, attrs: &Attrs) -> Result<IntConst, NnError> {
        let name = node.input.get(index).ok_or_else(|| attrs.error(GraphFault::MissingInput { index }))?;
        self.int_constants
            .get(name)
            .cloned()
            .ok_or_else(|| attrs.unsupported(Unsupported::DynamicInput { index, name: name.clone() }))
    }

    fn optional_scalar(&self, node: &NodeProto, index: usize, attrs: &Attrs) -> Result<Option<f32>, NnError> {
        match node.input.get(index).filter(|n| !n.is_empty()) {
            None => Ok(None),
            Some(_) => {
                let t = self.float_constant(node, index, attrs)?;
                match t.data() {
                    [v] => Ok(Some(*v)),
                    _ => Err(attrs.error(GraphFault::NotScalar { index })),
                }
            }
        }
    }
}

/// The tensor type of a graph input or output, refusing any element type but float32 (and
/// values that are not tensors: sequences, maps, optionals).
fn check_float_value<'v>(
    value: &'v proto::ValueInfoProto,
    what: &str,
) -> Result<Option<&'v type_proto::Tensor>, NnError> {
    let refuse = |elem_type: String| NnError::UnsupportedOp {
        op: format!("graph {what}"),
        node: value.name.clone(),
        detail: Unsupported::ElementType { value: value.name.clone(), elem_type },
    };
    let Some(t) = value.r#type.as_ref() else { return Ok(None) };
    match &t.value {
        Some(type_proto::Value::TensorType(tensor)) if tensor.elem_type == DataType::Float as i32 => {
            Ok(Some(tensor))
        }
        Some(type_proto::Value::TensorType(tensor)) => Err(refuse(data_type_name(tensor.elem_type))),
        _ => Err(refuse(
            "a type other than a dense tensor (a sequence, map, optional, sparse tensor or none)".into(),
        )),
    }
}
