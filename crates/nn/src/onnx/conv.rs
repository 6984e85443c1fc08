//! Window ops: Conv, ConvTranspose and pooling, their kernels, strides and padding.

use super::Importer;
use super::attrs::{Attrs, pair};
use super::proto::NodeProto;
use crate::ir::{Conv, ConvTranspose, Op, Pool, PoolKind};
use crate::{GraphFault, NnError, Unsupported};

impl Importer {
    pub(super) fn conv(&self, node: &NodeProto, attrs: &Attrs) -> Result<Op, NnError> {
        let kernel = self.kernel_2d(node, attrs)?;
        Ok(Op::Conv(Conv {
            window: attrs.window(kernel)?,
            group: attrs.int("group", 1)?.max(1) as usize,
            activation: Default::default(),
            residual: false,
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

    pub(super) fn conv_transpose(&self, node: &NodeProto, attrs: &Attrs) -> Result<(Op, usize), NnError> {
        let kernel = self.kernel_2d(node, attrs)?;
        let output_padding = match attrs.ints("output_padding")? {
            None => [0, 0],
            Some(p) if p.len() == 2 && p.iter().all(|&v| v >= 0) => [p[0] as usize, p[1] as usize],
            Some(p) => {
                return Err(attrs.error(GraphFault::Attribute {
                    name: "output_padding".into(),
                    problem: format!("is invalid: {p:?}"),
                }));
            }
        };
        let output_shape = match attrs.ints("output_shape")? {
            None => None,
            // Some exporters give the full N, C, H, W shape.
            Some(s) if s.len() == 2 || s.len() == 4 => {
                let hw = &s[s.len() - 2..];
                Some(pair(hw, attrs, "output_shape")?)
            }
            Some(s) => {
                return Err(attrs.error(GraphFault::Attribute {
                    name: "output_shape".into(),
                    problem: format!("is invalid: {s:?}"),
                }));
            }
        };
        Ok((
            Op::ConvTranspose(ConvTranspose {
                window: attrs.window(kernel)?,
                group: attrs.int("group", 1)?.max(1) as usize,
                output_padding,
                output_shape,
            }),
            usize::MAX,
        ))
    }
}

/// A node's pooling op.
pub(super) fn pool(node: &NodeProto, attrs: &Attrs) -> Result<Op, NnError> {
    let kernel = attrs
        .ints("kernel_shape")?
        .ok_or_else(|| attrs.error(GraphFault::Missing { what: "kernel_shape".into() }))?;
    if kernel.len() != 2 {
        return Err(attrs.unsupported(Unsupported::Attribute {
            name: "kernel_shape".into(),
            value: format!("{kernel:?} ({}-D)", kernel.len()),
            supported: "2-D pooling",
        }));
    }
    attrs.only_zero("storage_order", "0")?;
    Ok(Op::Pool(Pool {
        kind: if node.op_type == "MaxPool" { PoolKind::Max } else { PoolKind::Average },
        window: attrs.window(pair(&kernel, attrs, "kernel_shape")?)?,
        ceil_mode: attrs.int("ceil_mode", 0)? != 0,
        count_include_pad: attrs.int("count_include_pad", 0)? != 0,
    }))
}
