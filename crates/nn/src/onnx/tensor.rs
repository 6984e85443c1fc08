//! Decoding of TensorProto (initializers, Constant values) into float or integer constants.

use super::proto::{DataType, TensorProto};
use super::{ConstValue, IntConst};
use crate::{Encoding, NnError, Tensor, Unsupported, element_count};

/// ONNX's name of element type `t` (TensorProto.DataType).
pub(super) fn data_type_name(t: i32) -> String {
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

pub(super) fn decode_tensor(t: &TensorProto) -> Result<ConstValue, NnError> {
    let bad = NnError::InvalidEncoding;
    let tensor = || t.name.clone();
    if t.data_location == 1 {
        return Err(bad(Encoding::ExternalData { tensor: tensor() }));
    }
    let dims = t
        .dims
        .iter()
        .map(|&d| {
            usize::try_from(d).map_err(|_| bad(Encoding::NegativeDimension { tensor: tensor(), dim: d }))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let n = element_count(&dims)?;
    let raw = &t.raw_data;
    let check = |len: usize| {
        if len == n {
            Ok(())
        } else {
            Err(bad(Encoding::ValueCount { tensor: tensor(), len, dims: dims.clone(), expected: n }))
        }
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
