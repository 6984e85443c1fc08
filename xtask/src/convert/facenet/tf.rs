//! The part of TensorFlow's GraphDef the converter reads (field numbers from
//! tensorflow/core/framework/{graph,node_def,attr_value,tensor,tensor_shape,types}.proto), and
//! its constants decoded.

use std::collections::BTreeMap;

use anyhow::{Context, Result, bail, ensure};
use prost::Message;

// TensorFlow's DataType values (types.proto).
pub(super) const DT_FLOAT: i32 = 1;
pub(super) const DT_INT32: i32 = 3;
pub(super) const DT_INT64: i32 = 9;
pub(super) const DT_BOOL: i32 = 10;

/// tensorflow.GraphDef (graph.proto); `versions` (4) and `library` (2) are skipped.
#[derive(Clone, PartialEq, Message)]
pub struct GraphDef {
    #[prost(message, repeated, tag = "1")]
    pub node: Vec<NodeDef>,
}

/// tensorflow.NodeDef (node_def.proto).
#[derive(Clone, PartialEq, Message)]
pub struct NodeDef {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub op: String,
    /// `node`, `node:port`, or `^node` for a control dependency.
    #[prost(string, repeated, tag = "3")]
    pub input: Vec<String>,
    #[prost(string, tag = "4")]
    pub device: String,
    #[prost(btree_map = "string, message", tag = "5")]
    pub attr: BTreeMap<String, AttrValue>,
}

/// tensorflow.AttrValue (attr_value.proto). Its `value` oneof is read as optional fields
/// (the encoding is the same).
#[derive(Clone, PartialEq, Message)]
pub struct AttrValue {
    #[prost(message, optional, tag = "1")]
    pub list: Option<ListValue>,
    #[prost(bytes = "vec", optional, tag = "2")]
    pub s: Option<Vec<u8>>,
    #[prost(int64, optional, tag = "3")]
    pub i: Option<i64>,
    #[prost(float, optional, tag = "4")]
    pub f: Option<f32>,
    #[prost(bool, optional, tag = "5")]
    pub b: Option<bool>,
    #[prost(int32, optional, tag = "6")]
    pub r#type: Option<i32>,
    #[prost(message, optional, tag = "7")]
    pub shape: Option<TensorShapeProto>,
    #[prost(message, optional, tag = "8")]
    pub tensor: Option<TfTensor>,
}

/// tensorflow.AttrValue.ListValue: only its integers, the one kind of list the converter
/// reads (`strides`, `ksize`).
#[derive(Clone, PartialEq, Message)]
pub struct ListValue {
    #[prost(int64, repeated, tag = "3")]
    pub i: Vec<i64>,
}

/// tensorflow.TensorProto (tensor.proto), the fields of the types read here.
#[derive(Clone, PartialEq, Message)]
pub struct TfTensor {
    #[prost(int32, tag = "1")]
    pub dtype: i32,
    #[prost(message, optional, tag = "2")]
    pub tensor_shape: Option<TensorShapeProto>,
    /// Little-endian values, row-major; when empty, the typed `*_val` fields hold them (fewer
    /// values than the shape needs: the last one repeats).
    #[prost(bytes = "vec", tag = "4")]
    pub tensor_content: Vec<u8>,
    #[prost(float, repeated, tag = "5")]
    pub float_val: Vec<f32>,
    #[prost(int32, repeated, tag = "7")]
    pub int_val: Vec<i32>,
    #[prost(int64, repeated, tag = "10")]
    pub int64_val: Vec<i64>,
    #[prost(bool, repeated, tag = "11")]
    pub bool_val: Vec<bool>,
}

/// tensorflow.TensorShapeProto (tensor_shape.proto).
#[derive(Clone, PartialEq, Message)]
pub struct TensorShapeProto {
    #[prost(message, repeated, tag = "2")]
    pub dim: Vec<TensorShapeDim>,
    #[prost(bool, tag = "3")]
    pub unknown_rank: bool,
}

/// tensorflow.TensorShapeProto.Dim; `size` is -1 when unknown.
#[derive(Clone, PartialEq, Message)]
pub struct TensorShapeDim {
    #[prost(int64, tag = "1")]
    pub size: i64,
    #[prost(string, tag = "2")]
    pub name: String,
}

/// A constant, decoded.
#[derive(Clone, Debug)]
pub(super) struct Constant {
    pub(super) dims: Vec<usize>,
    pub(super) values: ConstValues,
}

#[derive(Clone, Debug)]
pub(super) enum ConstValues {
    Float(Vec<f32>),
    Int(Vec<i64>),
    Bool(Vec<bool>),
}

impl Constant {
    pub(super) fn decode(t: &TfTensor, what: &str) -> Result<Constant> {
        let dims: Vec<usize> = match &t.tensor_shape {
            Some(shape) => shape
                .dim
                .iter()
                .map(|d| usize::try_from(d.size).with_context(|| format!("{what}: dimension {}", d.size)))
                .collect::<Result<_>>()?,
            None => vec![],
        };
        let count: usize = dims.iter().product();
        fn fill<T: Copy>(vals: &[T], count: usize, what: &str) -> Result<Vec<T>> {
            ensure!(vals.len() <= count, "{what}: {} values for {count} elements", vals.len());
            match vals.last() {
                Some(&last) => {
                    let mut v = vals.to_vec();
                    v.resize(count, last);
                    Ok(v)
                }
                None if count == 0 => Ok(vec![]),
                None => bail!("{what}: no values"),
            }
        }
        let raw = &t.tensor_content;
        let values = match t.dtype {
            DT_FLOAT if !raw.is_empty() => {
                ConstValues::Float(little_endian(raw, count, what, f32::from_le_bytes)?)
            }
            DT_FLOAT => ConstValues::Float(fill(&t.float_val, count, what)?),
            DT_INT32 if !raw.is_empty() => ConstValues::Int(
                little_endian(raw, count, what, i32::from_le_bytes)?.into_iter().map(i64::from).collect(),
            ),
            DT_INT32 => ConstValues::Int(fill(&t.int_val, count, what)?.into_iter().map(i64::from).collect()),
            DT_INT64 if !raw.is_empty() => {
                ConstValues::Int(little_endian(raw, count, what, i64::from_le_bytes)?)
            }
            DT_INT64 => ConstValues::Int(fill(&t.int64_val, count, what)?),
            DT_BOOL if !raw.is_empty() => ConstValues::Bool(raw.iter().map(|&b| b != 0).collect()),
            DT_BOOL => ConstValues::Bool(fill(&t.bool_val, count, what)?),
            other => bail!("{what}: constants of TensorFlow data type {other} are not supported"),
        };
        Ok(Constant { dims, values })
    }

    pub(super) fn floats(&self, what: &str) -> Result<&[f32]> {
        match &self.values {
            ConstValues::Float(v) => Ok(v),
            _ => bail!("{what}: expected a float constant"),
        }
    }

    pub(super) fn ints(&self, what: &str) -> Result<&[i64]> {
        match &self.values {
            ConstValues::Int(v) => Ok(v),
            _ => bail!("{what}: expected an integer constant"),
        }
    }
}

/// The `count` values of `tensor_content` `raw`, `N` little-endian bytes each.
fn little_endian<const N: usize, T>(
    raw: &[u8],
    count: usize,
    what: &str,
    from_le_bytes: fn([u8; N]) -> T,
) -> Result<Vec<T>> {
    ensure!(
        raw.len() == count * N,
        "{what}: {} bytes for {count} values of type {}",
        raw.len(),
        std::any::type_name::<T>()
    );
    Ok(raw.chunks_exact(N).map(|b| from_le_bytes(b.try_into().expect("chunks of N bytes"))).collect())
}

impl NodeDef {
    pub(super) fn attr(&self, name: &str) -> Result<&AttrValue> {
        self.attr
            .get(name)
            .with_context(|| format!("node `{}` ({}) has no attribute `{name}`", self.name, self.op))
    }

    pub(super) fn attr_str(&self, name: &str) -> Result<String> {
        let v = self
            .attr(name)?
            .s
            .as_ref()
            .with_context(|| format!("node `{}`: `{name}` is not a string", self.name))?;
        Ok(String::from_utf8_lossy(v).into_owned())
    }

    pub(super) fn attr_ints(&self, name: &str) -> Result<Vec<i64>> {
        Ok(self
            .attr(name)?
            .list
            .as_ref()
            .with_context(|| format!("node `{}`: `{name}` is not a list", self.name))?
            .i
            .clone())
    }

    /// The data inputs (control dependencies left out).
    pub(super) fn data_inputs(&self) -> impl Iterator<Item = &str> {
        self.input.iter().map(String::as_str).filter(|i| !i.starts_with('^'))
    }

    /// Checks `data_format` is NHWC (the default) and returns the H and W entries of an NHWC
    /// list attribute (`strides`, `ksize`).
    pub(super) fn spatial(&self, name: &str) -> Result<[usize; 2]> {
        if self.attr.contains_key("data_format") {
            let format = self.attr_str("data_format")?;
            ensure!(format == "NHWC", "node `{}`: data_format {format} (only NHWC is supported)", self.name);
        }
        let v = self.attr_ints(name)?;
        ensure!(
            v.len() == 4 && v[0] == 1 && v[3] == 1 && v[1] > 0 && v[2] > 0,
            "node `{}`: {name} {v:?} (expected [1, h, w, 1])",
            self.name
        );
        Ok([v[1] as usize, v[2] as usize])
    }
}
