//! ONNX import: protobuf in, [`Graph`] out. Everything refacen cannot run is refused here,
//! at load time, with the op and the node named.

pub use onnx_proto as proto;

use std::collections::HashMap;
use std::sync::Arc;

use prost::Message;

use super::ir::{
    AspectPolicy, Binary, Conv, ConvTranspose, CoordinateMode, Gemm, Graph, GraphInput, NearestMode, Node,
    Op, PadMode, Padding, Pool, PoolKind, Reduce, ReduceKind, Resize, ResizeMode, ResizeTarget, Unary, Value,
    ValueId,
};
use super::{NnError, Tensor, Unsupported, element_count, shape};
use proto::{AttributeProto, DataType, DimensionValue, NodeProto, TensorProto};

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
            return Err(NnError::InvalidGraph(format!("value `{name}` is defined twice")));
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
                            Some(DimensionValue::DimValue(v)) if v > 0 => Some(v as usize),
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
            .ok_or_else(|| attrs.error("has no output"))?
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

    /// Clip's bounds when both are constants (or absent).
    fn clip_bounds(&self, node: &NodeProto, attrs: &Attrs) -> Result<Option<(f32, f32)>, NnError> {
        let bound = |index: usize| -> Result<Option<Option<f32>>, NnError> {
            match node.input.get(index).filter(|n| !n.is_empty()) {
                None => Ok(Some(None)),
                Some(n) if self.ids.get(n).is_some_and(|&id| self.graph.values[id].constant.is_none()) => {
                    Ok(None)
                }
                Some(_) => self.optional_scalar(node, index, attrs).map(Some),
            }
        };
        Ok(match (bound(1)?, bound(2)?) {
            (Some(min), Some(max)) => Some((min.unwrap_or(f32::NEG_INFINITY), max.unwrap_or(f32::INFINITY))),
            _ => None,
        })
    }

    /// Clip with bounds computed at run time: Max with the lower bound, then Min with the upper
    /// (which gives `max` where min > max, as ONNX specifies).
    fn dynamic_clip(
        &mut self,
        node: &NodeProto,
        attrs: &Attrs,
        name: String,
        output: &str,
    ) -> Result<(), NnError> {
        let inputs = self.node_inputs(node, 3, attrs)?;
        let (x, min, max) = (inputs[0], inputs.get(1).copied().flatten(), inputs.get(2).copied().flatten());
        let mut current = x;
        let steps: Vec<(Binary, ValueId)> = [(Binary::Max, min), (Binary::Min, max)]
            .into_iter()
            .filter_map(|(op, b)| b.map(|b| (op, b)))
            .collect();
        for (i, (op, bound)) in steps.iter().enumerate() {
            let out = if i + 1 == steps.len() { output.to_string() } else { format!("{output}::clip_min") };
            self.push_node(name.clone(), Op::Binary(*op), vec![current, Some(*bound)], &out)?;
            current = Some(self.ids[&out]);
        }
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
            Some("value_int") => {
                ConstValue::Int(IntConst { dims: vec![], values: vec![attrs.int("value_int", 0)?] })
            }
            Some("value_ints") => {
                ConstValue::Int(IntConst::vector(attrs.ints("value_ints")?.unwrap_or_default()))
            }
            other => {
                return Err(attrs.unsupported(Unsupported::Attribute {
                    name: other.unwrap_or("(none)").to_string(),
                    value: "set".into(),
                    supported: "value, value_float(s), value_int(s)",
                }));
            }
        };
        self.define_constant(out, value)
    }

    /// The node's value computed at load, when it works on integer constants (shape
    /// arithmetic) or is a Shape or a Cast that needs no kernel.
    fn fold(&self, node: &NodeProto, attrs: &Attrs) -> Result<Option<ConstValue>, NnError> {
        let int = |i: usize| node.input.get(i).and_then(|n| self.int_constants.get(n));
        let op = node.op_type.as_str();
        Ok(match op {
            "Shape" => {
                let input = node.input.first().ok_or_else(|| attrs.error("has no input"))?;
                let dims: Vec<usize> =
                    match (int(0), self.ids.get(input).and_then(|id| self.static_shapes.get(id))) {
                        (Some(c), _) => c.dims.clone(),
                        (None, Some(s)) => s.clone(),
                        (None, None) => {
                            return Err(attrs.unsupported(Unsupported::DynamicShape { value: input.clone() }));
                        }
                    };
                let rank = dims.len() as i64;
                let clamp = |v: i64| (if v < 0 { v + rank } else { v }).clamp(0, rank) as usize;
                let start = clamp(attrs.int("start", 0)?);
                let end = clamp(attrs.int("end", rank)?).max(start);
                Some(ConstValue::Int(IntConst::vector(dims[start..end].iter().map(|&d| d as i64).collect())))
            }
            "Cast" => return self.cast(node, attrs),
            "Identity" | "Unsqueeze" | "Squeeze" | "Reshape" | "Flatten" => match int(0) {
                Some(c) => {
                    let (reshape, _) = match op {
                        "Identity" => (Op::Unary(Unary::Identity), 1),
                        "Flatten" => (Op::Flatten { axis: attrs.int("axis", 1)? }, 1),
                        _ => self.reshape(node, attrs)?,
                    };
                    let dims = shape::infer(&reshape, &[Some(&c.dims)])?.remove(0);
                    Some(ConstValue::Int(IntConst { dims, values: c.values.clone() }))
                }
                None => None,
            },
            "Concat" => {
                let parts: Option<Vec<&IntConst>> = (0..node.input.len()).map(int).collect();
                match parts {
                    Some(parts) if parts.iter().all(|p| p.dims.len() == 1) => Some(ConstValue::Int(
                        IntConst::vector(parts.iter().flat_map(|p| p.values.iter().copied()).collect()),
                    )),
                    _ => None,
                }
            }
            "Gather" => match (int(0), int(1)) {
                (Some(data), Some(indices)) if data.dims.len() == 1 => {
                    let n = data.values.len() as i64;
                    let values = indices
                        .values
                        .iter()
                        .map(|&i| {
                            let r = if i < 0 { i + n } else { i };
                            data.values.get(r as usize).copied().filter(|_| r >= 0).ok_or_else(|| {
                                attrs.error(&format!("index {i} is out of range for {n} values"))
                            })
                        })
                        .collect::<Result<_, _>>()?;
                    Some(ConstValue::Int(IntConst { dims: indices.dims.clone(), values }))
                }
                _ => None,
            },
            "Slice" if self.opset >= 10 => match int(0) {
                Some(data) if data.dims.len() == 1 => {
                    let (slice, _) = self.slice(node, attrs)?;
                    let Op::Slice { starts, ends, axes, steps } = slice else { unreachable!() };
                    let r =
                        shape::slice_ranges(&data.dims, &starts, &ends, axes.as_deref(), steps.as_deref())?
                            [0];
                    let values =
                        (0..r.len).map(|i| data.values[(r.start + i as i64 * r.step) as usize]).collect();
                    Some(ConstValue::Int(IntConst::vector(values)))
                }
                _ => None,
            },
            "Add" | "Sub" | "Mul" => match (int(0), int(1)) {
                (Some(a), Some(b))
                    if a.values.len() == b.values.len() || a.values.len() == 1 || b.values.len() == 1 =>
                {
                    let n = a.values.len().max(b.values.len());
                    let at = |c: &IntConst, i: usize| c.values[if c.values.len() == 1 { 0 } else { i }];
                    let values = (0..n)
                        .map(|i| {
                            let (x, y) = (at(a, i), at(b, i));
                            match op {
                                "Add" => x.wrapping_add(y),
                                "Sub" => x.wrapping_sub(y),
                                _ => x.wrapping_mul(y),
                            }
                        })
                        .collect();
                    let dims = if a.values.len() >= b.values.len() { a.dims.clone() } else { b.dims.clone() };
                    Some(ConstValue::Int(IntConst { dims, values }))
                }
                _ => None,
            },
            _ => None,
        })
    }

    /// Cast: float to float is an identity; integer constants convert at load; every other
    /// target type is refused.
    fn cast(&self, node: &NodeProto, attrs: &Attrs) -> Result<Option<ConstValue>, NnError> {
        let to_code = attrs.int_required("to")? as i32;
        let to = DataType::try_from(to_code).unwrap_or(DataType::Undefined);
        let input = node.input.first().ok_or_else(|| attrs.error("has no input"))?;
        let refuse = || {
            attrs.unsupported(Unsupported::Attribute {
                name: "to".into(),
                value: data_type_name(to_code),
                supported: "FLOAT, and INT64/INT32 of integer constants",
            })
        };
        if let Some(c) = self.int_constants.get(input) {
            return match to {
                DataType::Int64 | DataType::Int32 => Ok(Some(ConstValue::Int(c.clone()))),
                DataType::Float => Ok(Some(ConstValue::Float(Tensor::new(
                    c.dims.clone(),
                    c.values.iter().map(|&v| v as f32).collect(),
                )?))),
                _ => Err(refuse()),
            };
        }
        match to {
            DataType::Float => Ok(None),
            DataType::Int64 | DataType::Int32 => {
                match self.ids.get(input).and_then(|&id| self.graph.constant(id)) {
                    Some(t) => Ok(Some(ConstValue::Int(IntConst {
                        dims: t.shape().to_vec(),
                        values: t.data().iter().map(|&v| v as i64).collect(),
                    }))),
                    None => Err(refuse()),
                }
            }
            _ => Err(refuse()),
        }
    }

    /// The node's op, and how many of its leading inputs are real tensors (the rest
    /// parameterize the op and must be constants).
    fn op(&self, node: &NodeProto, attrs: &Attrs) -> Result<(Op, usize), NnError> {
        const ALL: usize = usize::MAX;
        let op = match node.op_type.as_str() {
            "Conv" => self.conv(node, attrs)?,
            "ConvTranspose" => return self.conv_transpose(node, attrs),
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
            "Sqrt" => Op::Unary(Unary::Sqrt),
            "Exp" => Op::Unary(Unary::Exp),
            "HardSigmoid" => Op::Unary(Unary::HardSigmoid {
                alpha: attrs.float("alpha", 0.2)?,
                beta: attrs.float("beta", 0.5)?,
            }),
            "HardSwish" => Op::Unary(Unary::HardSwish),
            "Identity" | "Cast" => Op::Unary(Unary::Identity),
            "Dropout" => return Ok((self.dropout(node, attrs)?, 1)),
            "Clip" if self.opset < 11 => Op::Unary(Unary::Clip {
                min: attrs.float("min", f32::NEG_INFINITY)?,
                max: attrs.float("max", f32::INFINITY)?,
            }),
            "Clip" => {
                let (min, max) = self.clip_bounds(node, attrs)?.expect("dynamic bounds are planned apart");
                return Ok((Op::Unary(Unary::Clip { min, max }), 1));
            }
            "PRelu" => Op::PRelu,
            "Add" => Op::Binary(Binary::Add),
            "Sub" => Op::Binary(Binary::Sub),
            "Mul" => Op::Binary(Binary::Mul),
            "Div" => Op::Binary(Binary::Div),
            "Pow" => Op::Binary(Binary::Pow),
            "BatchNormalization" => {
                let training = attrs.int("training_mode", 0)?;
                if training != 0 {
                    return Err(attrs.unsupported(Unsupported::Attribute {
                        name: "training_mode".into(),
                        value: training.to_string(),
                        supported: "0 (inference)",
                    }));
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
            "ReduceSum" | "ReduceMean" => return self.reduce(node, attrs),
            "Slice" => return self.slice(node, attrs),
            "Gather" => {
                let indices = self.int_input(node, 1, attrs)?;
                return Ok((
                    Op::Gather {
                        axis: attrs.int("axis", 0)?,
                        indices: Arc::new(indices.values),
                        indices_shape: indices.dims,
                    },
                    1,
                ));
            }
            "Resize" | "Upsample" => return self.resize(node, attrs),
            _ => return Err(attrs.unsupported(Unsupported::Op)),
        };
        Ok((op, ALL))
    }

    fn conv(&self, node: &NodeProto, attrs: &Attrs) -> Result<Op, NnError> {
        let kernel = self.kernel_2d(node, attrs)?;
        Ok(Op::Conv(Conv {
            kernel,
            strides: attrs.pair_or("strides", [1, 1])?,
            dilations: attrs.pair_or("dilations", [1, 1])?,
            padding: attrs.padding()?,
            group: attrs.int("group", 1)?.max(1) as usize,
            activation: Default::default(),
        }))
    }

    /// A (transposed) convolution's kernel: the attribute, or the weights' last two dimensions.
    fn kernel_2d(&self, node: &NodeProto, attrs: &Attrs) -> Result<[usize; 2], NnError> {
        let kernel = match attrs.ints("kernel_shape")? {
            Some(k) => k,
            None => {
                let w =
                    node.input.get(1).and_then(|n| self.ids.get(n)).and_then(|id| self.static_shapes.get(id));
                let w = w.ok_or_else(|| {
                    attrs.unsupported(Unsupported::DynamicInput {
                        index: 1,
                        name: node.input.get(1).cloned().unwrap_or_default(),
                    })
                })?;
                w.iter().skip(2).map(|&d| d as i64).collect()
            }
        };
        if kernel.len() != 2 {
            return Err(attrs.unsupported(Unsupported::Attribute {
                name: "kernel_shape".into(),
                value: format!("{kernel:?} ({}-D)", kernel.len()),
                supported: "2-D kernels",
            }));
        }
        pair(&kernel, attrs, "kernel_shape")
    }

    fn conv_transpose(&self, node: &NodeProto, attrs: &Attrs) -> Result<(Op, usize), NnError> {
        let kernel = self.kernel_2d(node, attrs)?;
        let output_padding = match attrs.ints("output_padding")? {
            None => [0, 0],
            Some(p) if p.len() == 2 && p.iter().all(|&v| v >= 0) => [p[0] as usize, p[1] as usize],
            Some(p) => return Err(attrs.error(&format!("has invalid output_padding {p:?}"))),
        };
        let output_shape = match attrs.ints("output_shape")? {
            None => None,
            // Some exporters give the full N, C, H, W shape.
            Some(s) if s.len() == 2 || s.len() == 4 => {
                let hw = &s[s.len() - 2..];
                Some(pair(hw, attrs, "output_shape")?)
            }
            Some(s) => return Err(attrs.error(&format!("has invalid output_shape {s:?}"))),
        };
        let padding = attrs.padding()?;
        Ok((
            Op::ConvTranspose(ConvTranspose {
                kernel,
                strides: attrs.pair_or("strides", [1, 1])?,
                dilations: attrs.pair_or("dilations", [1, 1])?,
                group: attrs.int("group", 1)?.max(1) as usize,
                output_padding,
                padding,
                output_shape,
            }),
            usize::MAX,
        ))
    }

    fn dropout(&self, node: &NodeProto, attrs: &Attrs) -> Result<Op, NnError> {
        if self.opset >= 12 && node.input.len() > 2 && !node.input[2].is_empty() {
            let training = self.int_input(node, 2, attrs)?;
            if let Some(&t) = training.values.first()
                && t != 0
            {
                return Err(attrs.unsupported(Unsupported::Attribute {
                    name: "training_mode".into(),
                    value: t.to_string(),
                    supported: "0 (inference)",
                }));
            }
        }
        Ok(Op::Unary(Unary::Identity))
    }

    fn pad(&self, node: &NodeProto, attrs: &Attrs) -> Result<(Op, usize), NnError> {
        let mode = attrs.string("mode")?.unwrap_or_else(|| "constant".into());
        let mode = match mode.as_str() {
            "constant" => PadMode::Constant,
            "reflect" => PadMode::Reflect,
            "edge" => PadMode::Edge,
            "wrap" if self.opset >= 19 => PadMode::Wrap,
            other => {
                return Err(attrs.unsupported(Unsupported::Attribute {
                    name: "mode".into(),
                    value: other.into(),
                    supported: "constant, reflect, edge, wrap",
                }));
            }
        };
        if self.opset < 11 {
            let pads = attrs.ints(if self.opset < 2 { "paddings" } else { "pads" })?.unwrap_or_default();
            return Ok((Op::Pad { pads, value: attrs.float("value", 0.0)?, mode, axes: None }, usize::MAX));
        }
        let pads = self.int_input(node, 1, attrs)?.values;
        let value = self.optional_scalar(node, 2, attrs)?.unwrap_or(0.0);
        let axes = match node.input.get(3).filter(|n| !n.is_empty()) {
            Some(_) => Some(self.int_input(node, 3, attrs)?.values),
            None => None,
        };
        Ok((Op::Pad { pads, value, mode, axes }, 1))
    }

    /// Reshape, Squeeze and Unsqueeze: their shape or axes are attributes before the opset
    /// that made them a second input.
    fn reshape(&self, node: &NodeProto, attrs: &Attrs) -> Result<(Op, usize), NnError> {
        let (as_input_from, attribute) = match node.op_type.as_str() {
            "Reshape" => (5, "shape"),
            _ => (13, "axes"),
        };
        let (values, tensor_inputs) = self.attribute_or_input(node, attrs, attribute, as_input_from)?;
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

    /// Integers given by attribute `attribute` before opset `as_input_from`, by input 1 from
    /// then on; and how many leading inputs are tensors.
    fn attribute_or_input(
        &self,
        node: &NodeProto,
        attrs: &Attrs,
        attribute: &str,
        as_input_from: i64,
    ) -> Result<(Option<Vec<i64>>, usize), NnError> {
        Ok(if self.opset < as_input_from {
            (attrs.ints(attribute)?, usize::MAX)
        } else {
            match node.input.get(1).filter(|n| !n.is_empty()) {
                Some(_) => (Some(self.int_input(node, 1, attrs)?.values), 1),
                None => (None, 1),
            }
        })
    }

    fn reduce(&self, node: &NodeProto, attrs: &Attrs) -> Result<(Op, usize), NnError> {
        let (kind, as_input_from) = match node.op_type.as_str() {
            "ReduceSum" => (ReduceKind::Sum, 13),
            _ => (ReduceKind::Mean, 18),
        };
        let (axes, tensor_inputs) = self.attribute_or_input(node, attrs, "axes", as_input_from)?;
        Ok((
            Op::Reduce(Reduce {
                kind,
                // An empty axes input means "not given".
                axes: axes.filter(|a| !a.is_empty()),
                keepdims: attrs.int("keepdims", 1)? != 0,
                noop_with_empty_axes: attrs.int("noop_with_empty_axes", 0)? != 0,
            }),
            tensor_inputs,
        ))
    }

    fn slice(&self, node: &NodeProto, attrs: &Attrs) -> Result<(Op, usize), NnError> {
        if self.opset < 10 {
            let starts = attrs.ints("starts")?.ok_or_else(|| attrs.error("needs starts"))?;
            let ends = attrs.ints("ends")?.ok_or_else(|| attrs.error("needs ends"))?;
            return Ok((Op::Slice { starts, ends, axes: attrs.ints("axes")?, steps: None }, usize::MAX));
        }
        let optional = |i: usize| -> Result<Option<Vec<i64>>, NnError> {
            match node.input.get(i).filter(|n| !n.is_empty()) {
                Some(_) => Ok(Some(self.int_input(node, i, attrs)?.values)),
                None => Ok(None),
            }
        };
        let starts = self.int_input(node, 1, attrs)?.values;
        let ends = self.int_input(node, 2, attrs)?.values;
        Ok((Op::Slice { starts, ends, axes: optional(3)?, steps: optional(4)? }, 1))
    }

    fn resize(&self, node: &NodeProto, attrs: &Attrs) -> Result<(Op, usize), NnError> {
        let refuse = |name: &str, value: String, supported: &'static str| {
            attrs.unsupported(Unsupported::Attribute { name: name.into(), value, supported })
        };
        let mode_name = attrs.string("mode")?.unwrap_or_else(|| "nearest".into());
        let upsample = node.op_type == "Upsample";
        // Upsample and Resize-10 map coordinates asymmetrically and round nearest down.
        let legacy = upsample || self.opset < 11;
        let nearest = match attrs.string("nearest_mode")?.as_deref() {
            _ if legacy => NearestMode::Floor,
            None | Some("round_prefer_floor") => NearestMode::RoundPreferFloor,
            Some("round_prefer_ceil") => NearestMode::RoundPreferCeil,
            Some("floor") => NearestMode::Floor,
            Some("ceil") => NearestMode::Ceil,
            Some(other) => {
                return Err(refuse(
                    "nearest_mode",
                    other.into(),
                    "round_prefer_floor, round_prefer_ceil, floor, ceil",
                ));
            }
        };
        let mode = match mode_name.as_str() {
            "nearest" => ResizeMode::Nearest(nearest),
            "linear" | "bilinear" => ResizeMode::Linear,
            other => return Err(refuse("mode", other.into(), "nearest, linear")),
        };
        let coordinates = match attrs.string("coordinate_transformation_mode")?.as_deref() {
            _ if legacy => CoordinateMode::Asymmetric,
            None | Some("half_pixel") => CoordinateMode::HalfPixel,
            Some("half_pixel_symmetric") => CoordinateMode::HalfPixelSymmetric,
            Some("pytorch_half_pixel") => CoordinateMode::PytorchHalfPixel,
            Some("align_corners") => CoordinateMode::AlignCorners,
            Some("asymmetric") => CoordinateMode::Asymmetric,
            Some(other) => {
                return Err(refuse(
                    "coordinate_transformation_mode",
                    other.into(),
                    "half_pixel, half_pixel_symmetric, pytorch_half_pixel, align_corners, asymmetric",
                ));
            }
        };
        let antialias = attrs.int("antialias", 0)?;
        if antialias != 0 {
            return Err(refuse("antialias", antialias.to_string(), "0"));
        }
        let exclude_outside = attrs.int("exclude_outside", 0)?;
        if exclude_outside != 0 {
            return Err(refuse("exclude_outside", exclude_outside.to_string(), "0"));
        }
        let aspect = match attrs.string("keep_aspect_ratio_policy")?.as_deref() {
            None | Some("stretch") => AspectPolicy::Stretch,
            Some("not_larger") => AspectPolicy::NotLarger,
            Some("not_smaller") => AspectPolicy::NotSmaller,
            Some(other) => {
                return Err(refuse(
                    "keep_aspect_ratio_policy",
                    other.into(),
                    "stretch, not_larger, not_smaller",
                ));
            }
        };
        let present = |i: usize| node.input.get(i).filter(|n| !n.is_empty()).is_some();
        let target = if upsample && self.opset < 9 {
            ResizeTarget::Scales(attrs.floats("scales")?.ok_or_else(|| attrs.error("needs scales"))?)
        } else {
            // Upsample-9 and Resize-10: X, scales. Resize-11+: X, roi, scales, sizes.
            let scales_at = if legacy { 1 } else { 2 };
            let scales =
                if present(scales_at) { Some(self.float_constant(node, scales_at, attrs)?) } else { None };
            match scales.filter(|s| !s.is_empty()) {
                Some(s) => ResizeTarget::Scales(s.data().to_vec()),
                None if !legacy && present(3) => ResizeTarget::Sizes(self.int_input(node, 3, attrs)?.values),
                None => return Err(attrs.error("needs scales or sizes")),
            }
        };
        let axes = attrs.ints("axes")?;
        Ok((Op::Resize(Resize { mode, coordinates, target, axes, aspect }), 1))
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
        let name = node.input.get(index).ok_or_else(|| attrs.error(&format!("needs input {index}")))?;
        if let Some(c) = self.int_constants.get(name) {
            return Ok(Arc::new(Tensor::new(c.dims.clone(), c.values.iter().map(|&v| v as f32).collect())?));
        }
        self.ids
            .get(name)
            .and_then(|&id| self.graph.values[id].constant.clone())
            .ok_or_else(|| attrs.unsupported(Unsupported::DynamicInput { index, name: name.clone() }))
    }

    fn int_input(&self, node: &NodeProto, index: usize, attrs: &Attrs) -> Result<IntConst, NnError> {
        let name = node.input.get(index).ok_or_else(|| attrs.error(&format!("needs input {index}")))?;
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
    let kernel = attrs.ints("kernel_shape")?.ok_or_else(|| attrs.error("needs kernel_shape"))?;
    if kernel.len() != 2 {
        return Err(attrs.unsupported(Unsupported::Attribute {
            name: "kernel_shape".into(),
            value: format!("{kernel:?} ({}-D)", kernel.len()),
            supported: "2-D pooling",
        }));
    }
    let storage_order = attrs.int("storage_order", 0)?;
    if storage_order != 0 {
        return Err(attrs.unsupported(Unsupported::Attribute {
            name: "storage_order".into(),
            value: storage_order.to_string(),
            supported: "0",
        }));
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
    fn unsupported(&self, detail: Unsupported) -> NnError {
        NnError::UnsupportedOp { op: self.node.op_type.clone(), node: self.name.to_string(), detail }
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

/// The tensor type of a graph input or output, refusing any element type but float32 (and
/// values that are not tensors: sequences, maps, optionals).
fn check_float_value<'v>(
    value: &'v proto::ValueInfoProto,
    what: &str,
) -> Result<Option<&'v proto::TypeProtoTensor>, NnError> {
    let refuse = |elem_type: String| NnError::UnsupportedOp {
        op: format!("graph {what}"),
        node: value.name.clone(),
        detail: Unsupported::ElementType { value: value.name.clone(), elem_type },
    };
    let Some(t) = value.r#type.as_ref() else { return Ok(None) };
    match t.tensor_type.as_ref() {
        Some(tensor) if tensor.elem_type == DataType::Float as i32 => Ok(Some(tensor)),
        Some(tensor) => Err(refuse(data_type_name(tensor.elem_type))),
        None => Err(refuse("a non-tensor type (sequence, map or optional)".into())),
    }
}

/// ONNX's name of element type `t` (TensorProto.DataType).
fn data_type_name(t: i32) -> String {
    const NAMES: [&str; 24] = [
        "UNDEFINED",
        "FLOAT",
        "UINT8",
        "INT8",
        "UINT16",
        "INT16",
        "INT32",
        "INT64",
        "STRING",
        "BOOL",
        "FLOAT16",
        "DOUBLE",
        "UINT32",
        "UINT64",
        "COMPLEX64",
        "COMPLEX128",
        "BFLOAT16",
        "FLOAT8E4M3FN",
        "FLOAT8E4M3FNUZ",
        "FLOAT8E5M2",
        "FLOAT8E5M2FNUZ",
        "UINT4",
        "INT4",
        "FLOAT4E2M1",
    ];
    usize::try_from(t).ok().and_then(|i| NAMES.get(i)).map_or_else(|| format!("#{t}"), |n| n.to_string())
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
            Ok(ConstValue::Int(IntConst { dims, values }))
        }
        DataType::Bool => {
            // Flags such as Dropout's training_mode: one byte per value in raw_data, else int32_data.
            let values: Vec<i64> = if !raw.is_empty() {
                raw.iter().map(|&b| b as i64).collect()
            } else {
                t.int32_data.iter().map(|&v| v as i64).collect()
            };
            check(values.len())?;
            Ok(ConstValue::Int(IntConst { dims, values }))
        }
        _ => Err(NnError::UnsupportedOp {
            op: "initializer".into(),
            node: t.name.clone(),
            detail: Unsupported::ElementType {
                value: t.name.clone(),
                elem_type: data_type_name(t.data_type),
            },
        }),
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
