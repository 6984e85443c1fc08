//! A node's attributes read with defaults, and the errors that name the node.

use super::proto::{AttributeProto, NodeProto, TensorProto};
use crate::ir::{Padding, Window};
use crate::{GraphFault, NnError, NodeRef, Unsupported};

/// A node's attributes, and its name for errors.
pub(super) struct Attrs<'a> {
    pub(super) node: &'a NodeProto,
    pub(super) name: &'a str,
}

impl Attrs<'_> {
    /// The node's op is not supported as it is used; `detail` says how (or is empty).
    pub(super) fn unsupported(&self, detail: Unsupported) -> NnError {
        NnError::UnsupportedOp { op: self.node.op_type.clone(), node: self.name.to_string(), detail }
    }

    /// The node is malformed; `fault` says how.
    pub(super) fn error(&self, fault: GraphFault) -> NnError {
        let node = NodeRef { op: self.node.op_type.clone(), name: self.name.to_string() };
        NnError::InvalidGraph { node: Some(node), fault }
    }

    pub(super) fn get(&self, name: &str) -> Option<&AttributeProto> {
        self.node.attribute.iter().find(|a| a.name == name)
    }

    pub(super) fn int(&self, name: &str, default: i64) -> Result<i64, NnError> {
        Ok(self.get(name).map(|a| a.i).unwrap_or(default))
    }

    pub(super) fn int_required(&self, name: &str) -> Result<i64, NnError> {
        self.get(name)
            .map(|a| a.i)
            .ok_or_else(|| self.error(GraphFault::Missing { what: format!("attribute `{name}`") }))
    }

    pub(super) fn float(&self, name: &str, default: f32) -> Result<f32, NnError> {
        Ok(self.get(name).map(|a| a.f).unwrap_or(default))
    }

    pub(super) fn ints(&self, name: &str) -> Result<Option<Vec<i64>>, NnError> {
        Ok(self.get(name).map(|a| a.ints.clone()))
    }

    pub(super) fn floats(&self, name: &str) -> Result<Option<Vec<f32>>, NnError> {
        Ok(self.get(name).map(|a| a.floats.clone()))
    }

    pub(super) fn string(&self, name: &str) -> Result<Option<String>, NnError> {
        self.get(name)
            .map(|a| {
                String::from_utf8(a.s.clone()).map_err(|_| {
                    self.error(GraphFault::Attribute { name: name.into(), problem: "is not UTF-8".into() })
                })
            })
            .transpose()
    }

    /// String attribute `name` as one of `values`, which `names` names in order (comma-separated:
    /// the list an error shows); the first value when the attribute is absent.
    pub(super) fn choice<T: Copy, const N: usize>(
        &self,
        name: &str,
        names: &'static str,
        values: [T; N],
    ) -> Result<T, NnError> {
        debug_assert_eq!(names.split(", ").count(), N, "`{name}`: one name per value");
        let Some(given) = self.string(name)? else {
            return Ok(values[0]);
        };
        match names.split(", ").position(|choice| choice == given) {
            Some(i) => Ok(values[i]),
            None => Err(self.unsupported(Unsupported::Attribute {
                name: name.into(),
                value: given,
                supported: names,
            })),
        }
    }

    /// Refuses the node unless int attribute `name` is absent or 0, the only value refacen
    /// supports (`supported` says what 0 means, e.g. "0 (inference)").
    pub(super) fn only_zero(&self, name: &str, supported: &'static str) -> Result<(), NnError> {
        match self.int(name, 0)? {
            0 => Ok(()),
            other => Err(self.unsupported(Unsupported::Attribute {
                name: name.into(),
                value: other.to_string(),
                supported,
            })),
        }
    }

    pub(super) fn tensor(&self, name: &str) -> Result<&TensorProto, NnError> {
        self.get(name)
            .and_then(|a| a.t.as_ref())
            .ok_or_else(|| self.error(GraphFault::Missing { what: format!("tensor attribute `{name}`") }))
    }

    pub(super) fn pair_or(&self, name: &str, default: [usize; 2]) -> Result<[usize; 2], NnError> {
        match self.ints(name)? {
            None => Ok(default),
            Some(v) => pair(&v, self, name),
        }
    }

    /// A convolution's or pooling's window of `kernel`: strides, dilations and padding.
    pub(super) fn window(&self, kernel: [usize; 2]) -> Result<Window, NnError> {
        Ok(Window {
            kernel,
            strides: self.pair_or("strides", [1, 1])?,
            dilations: self.pair_or("dilations", [1, 1])?,
            padding: self.padding()?,
        })
    }

    pub(super) fn padding(&self) -> Result<Padding, NnError> {
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
                Some(p) => Err(self.error(GraphFault::Attribute {
                    name: "pads".into(),
                    problem: format!("is invalid: {p:?}"),
                })),
            },
            other => Err(self.error(GraphFault::Attribute {
                name: "auto_pad".into(),
                problem: format!("has the unknown value `{other}`"),
            })),
        }
    }
}

pub(super) fn pair(values: &[i64], attrs: &Attrs, name: &str) -> Result<[usize; 2], NnError> {
    match values {
        [a, b] if *a > 0 && *b > 0 => Ok([*a as usize, *b as usize]),
        _ => Err(attrs.error(GraphFault::Attribute {
            name: name.into(),
            problem: format!("must be two positive values, got {values:?}"),
        })),
    }
}
