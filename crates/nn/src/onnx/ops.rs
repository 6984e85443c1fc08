//! The node dispatch from ONNX op type to IR op, and the ops whose parameters are
//! attributes or constant inputs (Clip, Dropout, Pad, Reshape/Squeeze/Unsqueeze, Reduce, Slice).

use std::sync::Arc;

use super::Importer;
use super::attrs::Attrs;
use super::conv::pool;
use super::proto::NodeProto;
use crate::ir::{Binary, Gemm, Op, PadMode, PoolKind, Reduce, ReduceKind, Unary, ValueId};
use crate::{GraphFault, NnError, Unsupported};

impl Importer {
    /// Clip's bounds when both are constants (or absent).
    pub(super) fn clip_bounds(&self, node: &NodeProto, attrs: &Attrs) -> Result<Option<(f32, f32)>, NnError> {
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
    pub(super) fn dynamic_clip(
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

    /// The node's op, and how many of its leading inputs are real tensors (the rest
    /// parameterize the op and must be constants).
    pub(super) fn op(&self, node: &NodeProto, attrs: &Attrs) -> Result<(Op, usize), NnError> {
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
                attrs.only_zero("training_mode", "0 (inference)")?;
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
    pub(super) fn reshape(&self, node: &NodeProto, attrs: &Attrs) -> Result<(Op, usize), NnError> {
        let (as_input_from, attribute) = match node.op_type.as_str() {
            "Reshape" => (5, "shape"),
            _ => (13, "axes"),
        };
        let (values, tensor_inputs) = self.attribute_or_input(node, attrs, attribute, as_input_from)?;
        let op = match node.op_type.as_str() {
            "Reshape" => Op::Reshape {
                shape: values.ok_or_else(|| attrs.error(GraphFault::Missing { what: "a shape".into() }))?,
                allow_zero: attrs.int("allowzero", 0)? != 0,
            },
            "Squeeze" => Op::Squeeze { axes: values },
            _ => Op::Unsqueeze {
                axes: values.ok_or_else(|| attrs.error(GraphFault::Missing { what: "axes".into() }))?,
            },
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

    pub(super) fn slice(&self, node: &NodeProto, attrs: &Attrs) -> Result<(Op, usize), NnError> {
        if self.opset < 10 {
            let starts = attrs
                .ints("starts")?
                .ok_or_else(|| attrs.error(GraphFault::Missing { what: "starts".into() }))?;
            let ends = attrs
                .ints("ends")?
                .ok_or_else(|| attrs.error(GraphFault::Missing { what: "ends".into() }))?;
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
}
