//! Window ops' geometry: output sizes and resolved padding of Conv, ConvTranspose and pooling.

use super::invalid;
use crate::ir::{Conv, ConvTranspose, Padding, Pool, Window};
use crate::{Excess, NnError};

/// Output length and (begin, end) padding of one spatial axis of a window op.
pub fn window_axis(
    input: usize,
    kernel: usize,
    stride: usize,
    dilation: usize,
    pad: (usize, usize, Option<bool>),
    ceil_mode: bool,
) -> Result<(usize, usize, usize), NnError> {
    // Guest graphs choose these numbers: every step is checked, a window too large to
    // express is refused rather than wrapped into a small one.
    let overflow = || {
        NnError::too_large(Excess::Overflow {
            computation: format!(
                "a window of {kernel} taps dilated {dilation} over {input} values padded {}+{}",
                pad.0, pad.1
            ),
        })
    };
    let span = kernel
        .checked_sub(1)
        .and_then(|k| k.checked_mul(dilation))
        .and_then(|s| s.checked_add(1))
        .ok_or_else(overflow)?;
    let (begin, end) = match pad.2 {
        // SAME_UPPER (Some(true)) / SAME_LOWER (Some(false)): output = ceil(input / stride).
        Some(upper) => {
            let out = input.div_ceil(stride);
            let total = out
                .saturating_sub(1)
                .checked_mul(stride)
                .and_then(|s| s.checked_add(span))
                .ok_or_else(overflow)?
                .saturating_sub(input);
            let small = total / 2;
            let big = total - small;
            if upper { (small, big) } else { (big, small) }
        }
        None => (pad.0, pad.1),
    };
    let padded = input.checked_add(begin).and_then(|p| p.checked_add(end)).ok_or_else(overflow)?;
    if padded < span {
        return Err(invalid(format!(
            "window of {span} does not fit an input of {input} with padding {begin}+{end}"
        )));
    }
    let mut out = if ceil_mode { (padded - span).div_ceil(stride) + 1 } else { (padded - span) / stride + 1 };
    // A window may not start in the end padding (ONNX Runtime and PyTorch agree on this).
    if ceil_mode && out > 1 && (out - 1).saturating_mul(stride) >= input + begin {
        out -= 1;
    }
    Ok((out, begin, end))
}

/// Spatial output shape and resolved [top, left, bottom, right] padding of a 2-D window op.
pub fn window_2d(
    input_hw: [usize; 2],
    window: &Window,
    ceil_mode: bool,
) -> Result<([usize; 2], [usize; 4]), NnError> {
    let Window { kernel, strides, dilations, padding } = *window;
    let pad_of = |axis: usize| match padding {
        Padding::Explicit { top, left, bottom, right } => {
            if axis == 0 {
                (top, bottom, None)
            } else {
                (left, right, None)
            }
        }
        Padding::SameUpper => (0, 0, Some(true)),
        Padding::SameLower => (0, 0, Some(false)),
    };
    let (oh, t, b) = window_axis(input_hw[0], kernel[0], strides[0], dilations[0], pad_of(0), ceil_mode)?;
    let (ow, l, r) = window_axis(input_hw[1], kernel[1], strides[1], dilations[1], pad_of(1), ceil_mode)?;
    Ok(([oh, ow], [t, l, b, r]))
}

/// Geometry of a convolution (`PADS` = 4) or a transposed convolution (`PADS` = 2,
/// [`ConvTransposeGeometry`]) on given input and weight shapes.
#[derive(Clone, Copy, Debug)]
pub struct ConvGeometry<const PADS: usize = 4> {
    pub batch: usize,
    pub in_channels: usize,
    pub in_hw: [usize; 2],
    pub out_channels: usize,
    pub out_hw: [usize; 2],
    /// A convolution's [top, left, bottom, right] padding; a transposed convolution's [top,
    /// left] padding removed from the full output.
    pub pads: [usize; PADS],
}

pub fn conv_geometry(conv: &Conv, x: &[usize], w: &[usize]) -> Result<ConvGeometry, NnError> {
    if x.len() != 4 || w.len() != 4 {
        return Err(invalid(format!("Conv needs 4-D input and weights, got {x:?} and {w:?}")));
    }
    let group = conv.group;
    if x[1] != w[1] * group || !w[0].is_multiple_of(group) {
        return Err(invalid(format!("Conv input {x:?} does not match weights {w:?} with group {group}")));
    }
    let (out_hw, pads) = window_2d([x[2], x[3]], &conv.window, false)?;
    Ok(ConvGeometry { batch: x[0], in_channels: x[1], in_hw: [x[2], x[3]], out_channels: w[0], out_hw, pads })
}

pub fn pool_geometry(pool: &Pool, x: &[usize]) -> Result<([usize; 2], [usize; 4]), NnError> {
    if x.len() != 4 {
        return Err(invalid(format!("2-D pooling needs a 4-D input, got {x:?}")));
    }
    window_2d([x[2], x[3]], &pool.window, pool.ceil_mode)
}

/// Geometry of a transposed convolution on given input and weight shapes.
pub type ConvTransposeGeometry = ConvGeometry<2>;

/// The geometry, checking the weights against `kernel_shape` and the bias (of shape `bias`)
/// against the output channels.
pub fn conv_transpose_geometry(
    ct: &ConvTranspose,
    x: &[usize],
    w: &[usize],
    bias: Option<&[usize]>,
) -> Result<ConvTransposeGeometry, NnError> {
    if x.len() != 4 || w.len() != 4 {
        return Err(invalid(format!("ConvTranspose needs 4-D input and weights, got {x:?} and {w:?}")));
    }
    if w[2..] != ct.window.kernel {
        return Err(invalid(format!(
            "ConvTranspose kernel_shape {:?} differs from the weights {w:?}",
            ct.window.kernel
        )));
    }
    if let Some(b) = bias
        && b.iter().product::<usize>() != w[1] * ct.group
    {
        return Err(invalid(format!(
            "ConvTranspose has a bias of shape {b:?} for {} channels",
            w[1] * ct.group
        )));
    }
    let group = ct.group;
    if x[1] != w[0] || !x[1].is_multiple_of(group) {
        return Err(invalid(format!(
            "ConvTranspose input {x:?} does not match weights {w:?} with group {group}"
        )));
    }
    let overflow = || {
        NnError::too_large(Excess::Overflow {
            computation: format!("ConvTranspose of {x:?} with weights {w:?}"),
        })
    };
    let mut out_hw = [0; 2];
    let mut pads = [0; 2];
    for i in 0..2 {
        let span = (ct.window.kernel[i] - 1).checked_mul(ct.window.dilations[i]).ok_or_else(overflow)? + 1;
        // The output before padding is cut away.
        let full = x[2 + i]
            .saturating_sub(1)
            .checked_mul(ct.window.strides[i])
            .and_then(|v| v.checked_add(span + ct.output_padding[i]))
            .ok_or_else(overflow)?;
        // As ONNX's reference: SAME_* pads split what exceeds `output_shape` (or input ·
        // stride); otherwise the explicit begin pad is cut and the output is `output_shape`
        // (cropped or extended with the bias) or what the pads leave.
        let same = matches!(ct.window.padding, Padding::SameUpper | Padding::SameLower);
        let explicit = |i: usize| match ct.window.padding {
            Padding::Explicit { top, left, bottom, right } => {
                if i == 0 {
                    (top, bottom)
                } else {
                    (left, right)
                }
            }
            _ => (0, 0),
        };
        let (begin, out) = if same {
            let wanted = match ct.output_shape {
                Some(shape) => shape[i],
                None => x[2 + i].checked_mul(ct.window.strides[i]).ok_or_else(overflow)?,
            };
            let total = full.checked_sub(wanted).ok_or_else(|| {
                invalid(format!("ConvTranspose: output size {wanted} exceeds the full output {full}"))
            })?;
            let begin = if ct.window.padding == Padding::SameUpper { total / 2 } else { total - total / 2 };
            (begin, wanted)
        } else {
            let (begin, end) = explicit(i);
            let out = match ct.output_shape {
                Some(shape) => shape[i],
                None => full.checked_sub(begin + end).ok_or_else(|| {
                    invalid(format!("ConvTranspose pads {begin}+{end} exceed the output {full}"))
                })?,
            };
            (begin, out)
        };
        out_hw[i] = out;
        pads[i] = begin;
    }
    Ok(ConvTransposeGeometry {
        batch: x[0],
        in_channels: x[1],
        in_hw: [x[2], x[3]],
        out_channels: w[1] * group,
        out_hw,
        pads,
    })
}
