//! ONNX import: protobuf in, [`Graph`] out. Everything refacen cannot run is refused here,
//! at load time, with the op and the node named.

pub use onnx_proto as proto;

use std::collections::HashMap;
use std::sync::Arc;

use prost::Message;

use super::ir::{
    Binary, Conv, Gemm, Graph, GraphInput, Node, Op, Padding, Pool, PoolKind, Unary, Value, ValueId,
};
use super::{NnError, Tensor, element_count};
use proto::{AttributeProto, DataType, DimensionValue, NodeProto, TensorProto};

/// The ops the importer accepts, for `refacen guests` and error messages.
pub const SUPPORTED_OPS: &[&str] = &[
    "Add",
    "AveragePool",
    "BatchNormalization",
    "Clip",
    "Concat",
    "Constant",
    "Conv",
    "Div",
    "Dropout",
    "Flatten",
    "Gemm",
    "GlobalAveragePool",
    "GlobalMaxPool",
    "Identity",
    "LeakyRelu",
    "MatMul",
    "MaxPool",
    "Mul",
    "PRelu",
    "Pad",
    "Relu",
    "Reshape",
    "Sigmoid",
    "Softmax",
    "Squeeze",
    "Sub",
    "Tanh",
    "Transpose",
    "Unsqueeze",
];

/// A decoded initializer or Constant: float tensors feed computation, integer ones only
/// parameterize ops (shapes, pads, axes).
enum ConstValue {
    Float(Tensor),
    Int(Vec<i64>),
}

/// Parses an ONNX model into the IR.
pub fn import(bytes: &[u8]) -> Result<Graph, NnError> {
    let model = proto::ModelProto::decode(bytes)
        .map_err(|e| NnError::InvalidEncoding(format!("protobuf decoding failed: {e}")))?;
    let opset = model
        .opset_import
        .iter()
        .find(|o| o.domain.is_empty() || o.domain == "ai.onnx")
        .map(|o| o.version)
        .unwrap_or(1);
    let graph = model.graph.ok_or_else(|| NnError::InvalidEncoding("the model has no graph".into()))?;
    Importer::new(opset, graph.name.clone()).run(graph)
}

struct Importer {
    opset: i64,
    graph: Graph,
    ids: HashMap<String, ValueId>,
    int_constants: HashMap<String, Vec<i64>>,
}

impl Importer {
    fn new(opset: i64, name: String) -> Self {
        Importer {
            opset,
            graph: Graph { name, values: vec![], inputs: vec![], outputs: vec![], nodes: vec![] },
            ids: HashMap::new(),
            int_constants: HashMap::new(),
        }
    }

    fn define(&mut self, name: &str, constant: Option<Tensor>) -> Result<ValueId, NnError> {
        if self.ids.contains_key(name) {
            return Err(NnError::InvalidGraph(format!("value `{name}` is defined twice")));
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
            let tensor_type = input.r#type.as_ref().and_then(|t| t.tensor_type.as_ref());
            if let Some(t) = tensor_type
                && t.elem_type != DataType::Float as i32
            {
                return Err(NnError::InvalidGraph(format!(
                    "graph input `{}` has element type {}; refacen runs float32 graphs",
                    input.name,
                    data_type_name(t.elem_type)
                )));
            }
            let dims = tensor_type
                .and_then(|t| t.shape.as_ref())
                .map(|s| {
                    s.dim
                        .iter()
                        .map(|d| match d.value {
                            Some(DimensionValue::DimValue(v)) if v > 0 => Some(v as usize),
                            _ => None,
                        })
                        .collect()
                })
                .unwrap_or_default();
            let value = self.define(&input.name, None)?;
            self.graph.inputs.push(GraphInput { value, dims });
        }
        for node in &graph.node {
            self.node(node)?;
        }
        for output in &graph.output {
            let id = *self.ids.get(&output.name).ok_or_else(|| {
                NnError::InvalidGraph(format!("graph output `{}` is never computed", output.name))
            })?;
            self.graph.outputs.push(id);
        }
        if self.graph.outputs.is_empty() {
            return Err(NnError::InvalidGraph("the graph has no outputs".into()));
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
            return Err(attrs.unsupported(format!(" (custom domain `{}`)", node.domain)));
        }
        if node.op_type == "Constant" {
            return self.constant(node, &attrs);
        }
        let (op, tensor_inputs) = self.op(node, &attrs)?;
        let inputs = self.node_inputs(node, tensor_inputs, &attrs)?;
        if let Op::Conv(_) = op {
            // Weights must be known at load time so backends can pack them once.
            self.float_constant(node, 1, &attrs)?;
        }
        let output =
            node.output.first().filter(|o| !o.is_empty()).ok_or_else(|| attrs.error("has no output"))?;
        let output = self.define(output, None)?;
        self.graph.nodes.push(Node { name, op, inputs, outputs: vec![output] });
        Ok(())
    }

    fn constant(&mut self, node: &NodeProto, attrs: &Attrs) -> Result<(), NnError> {
        let out = node.output.first().ok_or_else(|| attrs.error("has no output"))?;
        let value = match node.attribute.first().map(|a| a.name.as_str()) {
            Some("value") => decode_tensor(attrs.tensor("value")?)?,
            Some("value_float") => ConstValue::Float(Tensor::scalar(attrs.float("value_float", 0.0)?)),
            Some("value_floats") => {
                let v = attrs.floats("value_floats")?.unwrap_or_default();
                ConstValue::Float(Tensor::new(vec![v.len()], v)?)
            }
            Some("value_int") => ConstValue::Int(vec![attrs.int("value_int", 0)?]),
            Some("value_ints") => ConstValue::Int(attrs.ints("value_ints")?.unwrap_or_default()),
            other => return Err(attrs.unsupported(format!(" (Constant with attribute {other:?})"))),
        };
        self.define_constant(out, value)
    }

    /// The node's op, and how many of its leading inputs are real tensors (the rest
    /// parameterize the op and must be constants).
    fn op(&self, node: &NodeProto, attrs: &Attrs) -> Result<(Op, usize), NnError> {
        const ALL: usize = usize::MAX;
        let op = match node.op_type.as_str() {
            "Conv" => self.conv(node, attrs)?,
            "MaxPool" | "AveragePool" => pool(node, attrs)?,
            "GlobalAveragePool" => Op::GlobalPool(PoolKind::Average),
            "GlobalMaxPool" => Op::GlobalPool(PoolKind::Max),
            "Gemm" => Op::Gemm(Gemm {
                alpha: attrs.float("alpha", 1.0)?,
                beta: attrs.float("beta", 1.0)?,
                trans_a: attrs.int("transA", 0)? != 0,
                trans_b: attrs.int("transB", 0)? != 0,
                activation: Default::default(),
            }),
            "MatMul" => Op::MatMul,
            "Relu" => Op::Unary(Unary::Relu),
            "LeakyRelu" => Op::Unary(Unary::LeakyRelu(attrs.float("alpha", 0.01)?)),
            "Sigmoid" => Op::Unary(Unary::Sigmoid),
            "Tanh" => Op::Unary(Unary::Tanh),
            "Identity" => Op::Unary(Unary::Identity),
            "Dropout" => return Ok((self.dropout(node, attrs)?, 1)),
            "Clip" if self.opset < 11 => Op::Unary(Unary::Clip {
                min: attrs.float("min", f32::NEG_INFINITY)?,
                max: attrs.float("max", f32::INFINITY)?,
            }),
            "Clip" => {
                let min = self.optional_scalar(node, 1, attrs)?.unwrap_or(f32::NEG_INFINITY);
                let max = self.optional_scalar(node, 2, attrs)?.unwrap_or(f32::INFINITY);
                return Ok((Op::Unary(Unary::Clip { min, max }), 1));
            }
            "PRelu" => Op::PRelu,
            "Add" => Op::Binary(Binary::Add),
            "Sub" => Op::Binary(Binary::Sub),
            "Mul" => Op::Binary(Binary::Mul),
            "Div" => Op::Binary(Binary::Div),
            "BatchNormalization" => {
                if attrs.int("training_mode", 0)? != 0 || node.output.iter().skip(1).any(|o| !o.is_empty()) {
                    return Err(attrs.unsupported(" (training mode)"));
                }
                Op::BatchNorm { epsilon: attrs.float("epsilon", 1e-5)? }
            }
            "Softmax" => {
                let legacy = self.opset < 13;
                Op::Softmax { axis: attrs.int("axis", if legacy { 1 } else { -1 })?, coerce_2d: legacy }
            }
            "Flatten" => Op::Flatten { axis: attrs.int("axis", 1)? },
            "Transpose" => Op::Transpose {
                perm: attrs.ints("perm")?.map(|p| p.into_iter().map(|v| v.max(0) as usize).collect()),
            },
            "Concat" => Op::Concat { axis: attrs.int_required("axis")? },
            "Pad" => return self.pad(node, attrs),
            "Reshape" | "Squeeze" | "Unsqueeze" => return self.reshape(node, attrs),
            _ => return Err(attrs.unsupported("")),
        };
        Ok((op, ALL))
    }

    fn conv(&self, node: &NodeProto, attrs: &Attrs) -> Result<Op, NnError> {
        let kernel = attrs.ints("kernel_shape")?;
        let rank = kernel.as_ref().map(|k| k.len()).unwrap_or(2);
        if rank != 2 {
            return Err(attrs.unsupported(format!(" ({rank}-D convolution; only 2-D is supported)")));
        }
        let kernel = match kernel {
            Some(k) => pair(&k, attrs, "kernel_shape")?,
            None => {
                let w = self.float_constant(node, 1, attrs)?;
                if w.rank() != 4 {
                    return Err(attrs.error("weights must be 4-D"));
                }
                [w.shape()[2], w.shape()[3]]
            }
        };
        Ok(Op::Conv(Conv {
            kernel,
            strides: attrs.pair_or("strides", [1, 1])?,
            dilations: attrs.pair_or("dilations", [1, 1])?,
            padding: attrs.padding()?,
            group: attrs.int("group", 1)?.max(1) as usize,
            activation: Default::default(),
        }))
    }

    fn dropout(&self, node: &NodeProto, attrs: &Attrs) -> Result<Op, NnError> {
        if self.opset >= 12 && node.input.len() > 2 && !node.input[2].is_empty() {
            let training = self.int_input(node, 2, attrs)?;
            if training.first().copied().unwrap_or(0) != 0 {
                return Err(attrs.unsupported(" (training mode)"));
            }
        }
        Ok(Op::Unary(Unary::Identity))
    }

    fn pad(&self, node: &NodeProto, attrs: &Attrs) -> Result<(Op, usize), NnError> {
        let mode = attrs.string("mode")?.unwrap_or_else(|| "constant".into());
        if mode != "constant" {
            return Err(attrs.unsupported(format!(" (mode `{mode}`; only constant)")));
        }
        if self.opset < 11 {
            let pads = attrs.ints(if self.opset < 2 { "paddings" } else { "pads" })?.unwrap_or_default();
            return Ok((Op::Pad { pads, value: attrs.float("value", 0.0)? }, usize::MAX));
        }
        if node.input.len() > 3 && !node.input[3].is_empty() {
            return Err(attrs.unsupported(" (the axes input)"));
        }
        let pads = self.int_input(node, 1, attrs)?;
        let value = self.optional_scalar(node, 2, attrs)?.unwrap_or(0.0);
        Ok((Op::Pad { pads, value }, 1))
    }

    /// Reshape, Squeeze and Unsqueeze: their shape or axes are attributes before the opset
    /// that made them a second input.
    fn reshape(&self, node: &NodeProto, attrs: &Attrs) -> Result<(Op, usize), NnError> {
        let (as_input_from, attribute) = match node.op_type.as_str() {
            "Reshape" => (5, "shape"),
            _ => (13, "axes"),
        };
        let (values, tensor_inputs) = if self.opset < as_input_from {
            (attrs.ints(attribute)?, usize::MAX)
        } else {
            match node.input.get(1).filter(|n| !n.is_empty()) {
                Some(_) => (Some(self.int_input(node, 1, attrs)?), 1),
                None => (None, 1),
            }
        };
        let op = match node.op_type.as_str() {
            "Reshape" => Op::Reshape {
                shape: values.ok_or_else(|| attrs.error("needs a shape"))?,
                allow_zero: attrs.int("allowzero", 0)? != 0,
            },
            "Squeeze" => Op::Squeeze { axes: values },
            _ => Op::Unsqueeze { axes: values.ok_or_else(|| attrs.error("needs axes"))? },
        };
        Ok((op, tensor_inputs))
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
                    attrs.error(&format!(
                        "input `{input_name}` is an integer tensor; refacen computes in float32"
                    ))
                } else {
                    attrs.error(&format!("input `{input_name}` is not defined before this node"))
                }
            })?;
            inputs.push(Some(id));
        }
        if inputs.first().copied().flatten().is_none() {
            return Err(attrs.error("has no input"));
        }
        Ok(inputs)
    }

    fn float_constant(&self, node: &NodeProto, index: usize, attrs: &Attrs) -> Result<Arc<Tensor>, NnError> {
        node.input
            .get(index)
            .and_then(|n| self.ids.get(n))
            .and_then(|&id| self.graph.values[id].constant.clone())
            .ok_or_else(|| attrs.error(&format!("input {index} must be a constant (an initializer)")))
    }

    fn int_input(&self, node: &NodeProto, index: usize, attrs: &Attrs) -> Result<Vec<i64>, NnError> {
        let name = node.input.get(index).ok_or_else(|| attrs.error(&format!("needs input {index}")))?;
        self.int_constants
            .get(name)
            .cloned()
            .ok_or_else(|| attrs.error(&format!("input `{name}` must be a constant int64 initializer")))
    }

    fn optional_scalar(&self, node: &NodeProto, index: usize, attrs: &Attrs) -> Result<Option<f32>, NnError> {
        match node.input.get(index).filter(|n| !n.is_empty()) {
            None => Ok(None),
            Some(_) => {
                let t = self.float_constant(node, index, attrs)?;
                match t.data() {
                    [v] => Ok(Some(*v)),
                    _ => Err(attrs.error(&format!("input {index} must be a scalar"))),
                }
            }
        }
    }
}

struct Attrs<'a> {
    node: &'a NodeProto,
    name: &'a str,
}

/// A node's pooling op.
fn pool(node: &NodeProto, attrs: &Attrs) -> Result<Op, NnError> {
    if node.output.len() > 1 && !node.output[1].is_empty() {
        return Err(attrs.unsupported(" (the Indices output)"));
    }
    let kernel = attrs.ints("kernel_shape")?.ok_or_else(|| attrs.error("needs kernel_shape"))?;
    if kernel.len() != 2 {
        return Err(attrs.unsupported(format!(" ({}-D pooling; only 2-D is supported)", kernel.len())));
    }
    Ok(Op::Pool(Pool {
        kind: if node.op_type == "MaxPool" { PoolKind::Max } else { PoolKind::Average },
        kernel: pair(&kernel, attrs, "kernel_shape")?,
        strides: attrs.pair_or("strides", [1, 1])?,
        dilations: attrs.pair_or("dilations", [1, 1])?,
        padding: attrs.padding()?,
        ceil_mode: attrs.int("ceil_mode", 0)? != 0,
        count_include_pad: attrs.int("count_include_pad", 0)? != 0,
    }))
}

impl Attrs<'_> {
    /// The node's op is not supported as it is used; `detail` says how (or is empty).
    fn unsupported(&self, detail: impl Into<String>) -> NnError {
        NnError::UnsupportedOp {
            op: self.node.op_type.clone(),
            node: self.name.to_string(),
            detail: detail.into(),
        }
    }

    fn error(&self, msg: &str) -> NnError {
        NnError::InvalidGraph(format!("{} node `{}` {msg}", self.node.op_type, self.name))
    }

    fn get(&self, name: &str) -> Option<&AttributeProto> {
        self.node.attribute.iter().find(|a| a.name == name)
    }

    fn int(&self, name: &str, default: i64) -> Result<i64, NnError> {
        Ok(self.get(name).map(|a| a.i).unwrap_or(default))
    }

    fn int_required(&self, name: &str) -> Result<i64, NnError> {
        self.get(name).map(|a| a.i).ok_or_else(|| self.error(&format!("needs attribute `{name}`")))
    }

    fn float(&self, name: &str, default: f32) -> Result<f32, NnError> {
        Ok(self.get(name).map(|a| a.f).unwrap_or(default))
    }

    fn ints(&self, name: &str) -> Result<Option<Vec<i64>>, NnError> {
        Ok(self.get(name).map(|a| a.ints.clone()))
    }

    fn floats(&self, name: &str) -> Result<Option<Vec<f32>>, NnError> {
        Ok(self.get(name).map(|a| a.floats.clone()))
    }

    fn string(&self, name: &str) -> Result<Option<String>, NnError> {
        self.get(name)
            .map(|a| {
                String::from_utf8(a.s.clone())
                    .map_err(|_| self.error(&format!("attribute `{name}` is not UTF-8")))
            })
            .transpose()
    }

    fn tensor(&self, name: &str) -> Result<&TensorProto, NnError> {
        self.get(name)
            .and_then(|a| a.t.as_ref())
            .ok_or_else(|| self.error(&format!("needs tensor attribute `{name}`")))
    }

    fn pair_or(&self, name: &str, default: [usize; 2]) -> Result<[usize; 2], NnError> {
        match self.ints(name)? {
            None => Ok(default),
            Some(v) => pair(&v, self, name),
        }
    }

    fn padding(&self) -> Result<Padding, NnError> {
        let auto_pad = self.string("auto_pad")?.unwrap_or_else(|| "NOTSET".into());
        match auto_pad.as_str() {
            "SAME_UPPER" => Ok(Padding::SameUpper),
            "SAME_LOWER" => Ok(Padding::SameLower),
            "VALID" => Ok(Padding::NONE),
            "NOTSET" => match self.ints("pads")? {
                None => Ok(Padding::NONE),
                Some(p) if p.len() == 4 && p.iter().all(|&v| v >= 0) => Ok(Padding::Explicit {
                    top: p[0] as usize,
                    left: p[1] as usize,
                    bottom: p[2] as usize,
                    right: p[3] as usize,
                }),
                Some(p) => Err(self.error(&format!("has invalid pads {p:?}"))),
            },
            other => Err(self.error(&format!("has unknown auto_pad `{other}`"))),
        }
    }
}

fn pair(values: &[i64], attrs: &Attrs, name: &str) -> Result<[usize; 2], NnError> {
    match values {
        [a, b] if *a > 0 && *b > 0 => Ok([*a as usize, *b as usize]),
        _ => Err(attrs.error(&format!("attribute `{name}` must be two positive values, got {values:?}"))),
    }
}

fn data_type_name(t: i32) -> String {
    DataType::try_from(t).map(|d| format!("{d:?}")).unwrap_or_else(|_| format!("#{t}"))
}

fn decode_tensor(t: &TensorProto) -> Result<ConstValue, NnError> {
    let bad = |msg: String| NnError::InvalidEncoding(format!("tensor `{}`: {msg}", t.name));
    if t.data_location == 1 {
        return Err(bad("weights stored in an external file are not supported; embed them".into()));
    }
    let dims = t
        .dims
        .iter()
        .map(|&d| usize::try_from(d).map_err(|_| bad(format!("negative dimension {d}"))))
        .collect::<Result<Vec<_>, _>>()?;
    let n = element_count(&dims)?;
    let raw = &t.raw_data;
    let check = |len: usize| {
        if len == n { Ok(()) } else { Err(bad(format!("holds {len} values, its shape {dims:?} needs {n}"))) }
    };
    let data_type = DataType::try_from(t.data_type).unwrap_or(DataType::Undefined);
    match data_type {
        DataType::Float | DataType::Double | DataType::Float16 => {
            let values: Vec<f32> = if !raw.is_empty() {
                match data_type {
                    DataType::Float => {
                        raw.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect()
                    }
                    DataType::Double => raw
                        .chunks_exact(8)
                        .map(|c| f64::from_le_bytes(c.try_into().unwrap()) as f32)
                        .collect(),
                    _ => raw.chunks_exact(2).map(|c| f16_to_f32(u16::from_le_bytes([c[0], c[1]]))).collect(),
                }
            } else {
                match data_type {
                    DataType::Float => t.float_data.clone(),
                    DataType::Double => t.double_data.iter().map(|&v| v as f32).collect(),
                    _ => t.int32_data.iter().map(|&v| f16_to_f32(v as u16)).collect(),
                }
            };
            check(values.len())?;
            Ok(ConstValue::Float(Tensor::new(dims, values)?))
        }
        DataType::Int64 | DataType::Int32 => {
            let values: Vec<i64> = if !raw.is_empty() {
                if data_type == DataType::Int64 {
                    raw.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap())).collect()
                } else {
                    raw.chunks_exact(4).map(|c| i32::from_le_bytes(c.try_into().unwrap()) as i64).collect()
                }
            } else if data_type == DataType::Int64 {
                t.int64_data.clone()
            } else {
                t.int32_data.iter().map(|&v| v as i64).collect()
            };
            check(values.len())?;
            Ok(ConstValue::Int(values))
        }
        DataType::Bool => {
            // Flags such as Dropout's training_mode: one byte per value in raw_data, else int32_data.
            let values: Vec<i64> = if !raw.is_empty() {
                raw.iter().map(|&b| b as i64).collect()
            } else {
                t.int32_data.iter().map(|&v| v as i64).collect()
            };
            check(values.len())?;
            Ok(ConstValue::Int(values))
        }
        _ => Err(bad(format!("element type {} is not supported", data_type_name(t.data_type)))),
    }
}

fn f16_to_f32(bits: u16) -> f32 {
    let sign = ((bits >> 15) as u32) << 31;
    let exp = ((bits >> 10) & 0x1f) as u32;
    let frac = (bits & 0x3ff) as u32;
    let magnitude = match exp {
        0 => {
            let subnormal = frac as f32 * 2f32.powi(-24);
            return if sign != 0 { -subnormal } else { subnormal };
        }
        0x1f => 0xff << 23 | frac << 13,
        _ => (exp + 112) << 23 | frac << 13,
    };
    f32::from_bits(sign | magnitude)
}
