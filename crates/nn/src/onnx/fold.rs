//! Load-time constants: Constant nodes, and the integer shape arithmetic (Shape, Gather,
//! Slice, Concat, Add/Sub/Mul, Cast, ...) folded to constants rather than run.

use super::attrs::Attrs;
use super::proto::{DataType, NodeProto};
use super::tensor::{data_type_name, decode_tensor};
use super::{ConstValue, Importer, IntConst};
use crate::ir::{Op, Unary};
use crate::{GraphFault, NnError, Tensor, Unsupported, shape};

impl Importer {
    pub(super) fn constant(&mut self, node: &NodeProto, attrs: &Attrs) -> Result<(), NnError> {
        let out = node.output.first().ok_or_else(|| attrs.error(GraphFault::NoOutput))?;
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
    pub(super) fn fold(&self, node: &NodeProto, attrs: &Attrs) -> Result<Option<ConstValue>, NnError> {
        let int = |i: usize| node.input.get(i).and_then(|n| self.int_constants.get(n));
        let op = node.op_type.as_str();
        Ok(match op {
            "Shape" => {
                let input =
                    node.input.first().ok_or_else(|| attrs.error(GraphFault::MissingInput { index: 0 }))?;
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
                                attrs.error(GraphFault::IndexOutOfRange { index: i, len: data.values.len() })
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
        let input = node.input.first().ok_or_else(|| attrs.error(GraphFault::MissingInput { index: 0 }))?;
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
}
