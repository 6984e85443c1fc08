//! Constructors for writing ONNX models (the weight converters in xtask use them).
//!
//! They fill only the fields refacen's importer and common tools read: float32 tensors as
//! little-endian `raw_data`, int64 tensors (shapes, pads) in `int64_data`, attributes with
//! their type set, value infos with fixed or symbolic dimensions.

use crate::tensor_shape_proto::{Dimension, dimension};
use crate::{
    AttributeProto, AttributeType, DataType, GraphProto, ModelProto, NodeProto, OperatorSetIdProto,
    TensorProto, TensorShapeProto, TypeProto, ValueInfoProto, type_proto,
};

/// The IR version written: 8 (ONNX 1.10 and later read it), enough for opset 13.
pub const IR_VERSION: i64 = 8;

/// A float32 initializer `name` of shape `dims` holding `values` (row-major).
///
/// # Panics
/// If `values` does not hold exactly the number of elements `dims` describes.
pub fn tensor_f32(name: &str, dims: &[usize], values: &[f32]) -> TensorProto {
    let count: usize = dims.iter().product();
    assert_eq!(count, values.len(), "tensor `{name}`: shape {dims:?} needs {count} values");
    TensorProto {
        dims: dims.iter().map(|&d| d as i64).collect(),
        data_type: DataType::Float as i32,
        name: name.to_string(),
        raw_data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        ..Default::default()
    }
}

/// A one-dimensional int64 initializer (shapes, pads, axes).
pub fn tensor_i64(name: &str, values: &[i64]) -> TensorProto {
    TensorProto {
        dims: vec![values.len() as i64],
        data_type: DataType::Int64 as i32,
        name: name.to_string(),
        int64_data: values.to_vec(),
        ..Default::default()
    }
}

/// A node of the default (`ai.onnx`) domain.
pub fn node(
    op_type: &str,
    name: &str,
    inputs: &[&str],
    outputs: &[&str],
    attributes: Vec<AttributeProto>,
) -> NodeProto {
    NodeProto {
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: outputs.iter().map(|s| s.to_string()).collect(),
        name: name.to_string(),
        op_type: op_type.to_string(),
        attribute: attributes,
        ..Default::default()
    }
}

/// An INT attribute.
pub fn attr_int(name: &str, value: i64) -> AttributeProto {
    attribute(name, AttributeType::Int, AttributeProto { i: value, ..Default::default() })
}

/// An INTS attribute.
pub fn attr_ints(name: &str, values: &[i64]) -> AttributeProto {
    attribute(name, AttributeType::Ints, AttributeProto { ints: values.to_vec(), ..Default::default() })
}

/// A FLOAT attribute.
pub fn attr_float(name: &str, value: f32) -> AttributeProto {
    attribute(name, AttributeType::Float, AttributeProto { f: value, ..Default::default() })
}

/// A STRING attribute.
pub fn attr_string(name: &str, value: &str) -> AttributeProto {
    attribute(
        name,
        AttributeType::String,
        AttributeProto { s: value.as_bytes().to_vec(), ..Default::default() },
    )
}

/// `value` (which holds only the field of `r#type`) named `name`, its type set.
fn attribute(name: &str, r#type: AttributeType, value: AttributeProto) -> AttributeProto {
    AttributeProto { name: name.to_string(), r#type: r#type as i32, ..value }
}

/// A dimension of a value info: fixed or symbolic (e.g. a batch size `N`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Dim {
    Fixed(usize),
    Symbolic(String),
}

/// A float32 tensor value info (a graph input or output).
pub fn value_info_f32(name: &str, dims: &[Dim]) -> ValueInfoProto {
    let dim = dims
        .iter()
        .map(|d| Dimension {
            value: Some(match d {
                Dim::Fixed(v) => dimension::Value::DimValue(*v as i64),
                Dim::Symbolic(s) => dimension::Value::DimParam(s.clone()),
            }),
            ..Default::default()
        })
        .collect();
    ValueInfoProto {
        name: name.to_string(),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: DataType::Float as i32,
                shape: Some(TensorShapeProto { dim }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A model of `graph` importing the default domain at `opset`.
pub fn model(
    graph: GraphProto,
    opset: i64,
    producer_name: &str,
    producer_version: &str,
    doc_string: &str,
) -> ModelProto {
    ModelProto {
        ir_version: IR_VERSION,
        opset_import: vec![OperatorSetIdProto { domain: String::new(), version: opset }],
        producer_name: producer_name.to_string(),
        producer_version: producer_version.to_string(),
        doc_string: doc_string.to_string(),
        graph: Some(graph),
        ..Default::default()
    }
}
