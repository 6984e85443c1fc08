//! Output shapes of every op, computed at run time from the actual input shapes, so graphs
//! with dynamic batch and spatial dimensions run at any size. Shared by all backends.

use super::ir::{
    AspectPolicy, Conv, ConvTranspose, CoordinateMode, Gemm, NearestMode, Op, PadMode, Padding, Pool, Reduce,
    Resize, ResizeMode, ResizeTarget,
};
use super::{NnError, element_count};

fn invalid(msg: String) -> NnError {
    NnError::InvalidArgument(msg)
}

/// Resolves a possibly negative ONNX axis against `rank`. `extra` = 1 also accepts
/// axis == rank (Flatten's range is [-r, r]).
pub fn normalize_axis(axis: i64, rank: usize, extra: usize) -> Result<usize, NnError> {
    let resolved = if axis < 0 { axis + rank as i64 } else { axis };
    if !(0..(rank + extra) as i64).contains(&resolved) {
        return Err(invalid(format!("axis {axis} is out of range for rank {rank}")));
    }
    Ok(resolved as usize)
}

/// numpy (multidirectional) broadcasting of two shapes.
pub fn broadcast(a: &[usize], b: &[usize]) -> Result<Vec<usize>, NnError> {
    let rank = a.len().max(b.len());
    let mut out = vec![0; rank];
    for i in 0..rank {
        let da = if i + a.len() >= rank { a[i + a.len() - rank] } else { 1 };
        let db = if i + b.len() >= rank { b[i + b.len() - rank] } else { 1 };
        out[i] = match (da, db) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => return Err(invalid(format!("shapes {a:?} and {b:?} do not broadcast"))),
        };
    }
    Ok(out)
}

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
        NnError::TooLarge(format!(
            "a window of {kernel} taps dilated {dilation} over {input} values padded {}+{} overflows",
            pad.0, pad.1
        ))
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
    kernel: [usize; 2],
    strides: [usize; 2],
    dilations: [usize; 2],
    padding: Padding,
    ceil_mode: bool,
) -> Result<([usize; 2], [usize; 4]), NnError> {
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

/// Geometry of a convolution on given input and weight shapes.
#[derive(Clone, Copy, Debug)]
pub struct ConvGeometry {
    pub batch: usize,
    pub in_channels: usize,
    pub in_hw: [usize; 2],
    pub out_channels: usize,
    pub out_hw: [usize; 2],
    /// [top, left, bottom, right]
    pub pads: [usize; 4],
}

pub fn conv_geometry(conv: &Conv, x: &[usize], w: &[usize]) -> Result<ConvGeometry, NnError> {
    if x.len() != 4 || w.len() != 4 {
        return Err(invalid(format!("Conv needs 4-D input and weights, got {x:?} and {w:?}")));
    }
    let group = conv.group;
    if x[1] != w[1] * group || !w[0].is_multiple_of(group) {
        return Err(invalid(format!("Conv input {x:?} does not match weights {w:?} with group {group}")));
    }
    let (out_hw, pads) =
        window_2d([x[2], x[3]], conv.kernel, conv.strides, conv.dilations, conv.padding, false)?;
    Ok(ConvGeometry { batch: x[0], in_channels: x[1], in_hw: [x[2], x[3]], out_channels: w[0], out_hw, pads })
}

pub fn pool_geometry(pool: &Pool, x: &[usize]) -> Result<([usize; 2], [usize; 4]), NnError> {
    if x.len() != 4 {
        return Err(invalid(format!("2-D pooling needs a 4-D input, got {x:?}")));
    }
    window_2d([x[2], x[3]], pool.kernel, pool.strides, pool.dilations, pool.padding, pool.ceil_mode)
}

/// Resolves ONNX Reshape's 0 and -1 entries.
pub fn reshape(input: &[usize], spec: &[i64], allow_zero: bool) -> Result<Vec<usize>, NnError> {
    let total = element_count(input)?;
    let mut out = Vec::with_capacity(spec.len());
    let mut infer_at = None;
    for (i, &d) in spec.iter().enumerate() {
        match d {
            -1 if infer_at.is_none() => {
                infer_at = Some(i);
                out.push(1);
            }
            0 if !allow_zero => out.push(*input.get(i).ok_or_else(|| {
                invalid(format!("Reshape {spec:?}: no dimension {i} to copy in {input:?}"))
            })?),
            d if d >= 0 => out.push(d as usize),
            _ => return Err(invalid(format!("Reshape: invalid target shape {spec:?}"))),
        }
    }
    let known = element_count(&out)?;
    if let Some(i) = infer_at {
        if known == 0 || !total.is_multiple_of(known) {
            return Err(invalid(format!("cannot reshape {input:?} to {spec:?}")));
        }
        out[i] = total / known;
    } else if known != total {
        return Err(invalid(format!("cannot reshape {input:?} to {spec:?}")));
    }
    Ok(out)
}

pub fn transpose_perm(perm: &Option<Vec<usize>>, rank: usize) -> Result<Vec<usize>, NnError> {
    let perm = perm.clone().unwrap_or_else(|| (0..rank).rev().collect());
    let mut seen = vec![false; rank];
    if perm.len() != rank || perm.iter().any(|&p| p >= rank || std::mem::replace(&mut seen[p], true)) {
        return Err(invalid(format!("Transpose perm {perm:?} is not a permutation of rank {rank}")));
    }
    Ok(perm)
}

/// Output shapes of `op` given the shapes of its inputs (`None` for omitted optional inputs).
pub fn infer(op: &Op, inputs: &[Option<&[usize]>]) -> Result<Vec<Vec<usize>>, NnError> {
    let input = |i: usize| -> Result<&[usize], NnError> {
        inputs
            .get(i)
            .copied()
            .flatten()
            .ok_or_else(|| invalid(format!("{} is missing input {i}", op.onnx_name())))
    };
    let x = input(0)?;
    let shape = match op {
        Op::Conv(conv) => {
            let g = conv_geometry(conv, x, input(1)?)?;
            vec![g.batch, g.out_channels, g.out_hw[0], g.out_hw[1]]
        }
        Op::Pool(pool) => {
            let (hw, _) = pool_geometry(pool, x)?;
            vec![x[0], x[1], hw[0], hw[1]]
        }
        Op::GlobalPool(_) => {
            if x.len() < 3 {
                return Err(invalid(format!("global pooling needs rank ≥ 3, got {x:?}")));
            }
            let mut s = x.to_vec();
            s[2..].iter_mut().for_each(|d| *d = 1);
            s
        }
        Op::Gemm(g) => gemm(g, x, input(1)?, inputs.get(2).copied().flatten())?,
        Op::MatMul => matmul(x, input(1)?)?,
        Op::Unary(_) => x.to_vec(),
        Op::PRelu => {
            let slope = input(1)?;
            if broadcast(x, slope)? != x {
                return Err(invalid(format!("PRelu slope {slope:?} does not broadcast to {x:?}")));
            }
            x.to_vec()
        }
        Op::Binary(_) => broadcast(x, input(1)?)?,
        Op::BatchNorm { .. } => {
            if x.len() < 2 {
                return Err(invalid(format!("BatchNormalization needs rank ≥ 2, got {x:?}")));
            }
            for i in 1..5 {
                if input(i)? != [x[1]] {
                    return Err(invalid(format!(
                        "BatchNormalization parameter {i} must have shape [{}]",
                        x[1]
                    )));
                }
            }
            x.to_vec()
        }
        Op::Softmax { axis, .. } => {
            normalize_axis(*axis, x.len(), 0)?;
            x.to_vec()
        }
        Op::Flatten { axis } => {
            let a = normalize_axis(*axis, x.len(), 1)?;
            vec![element_count(&x[..a])?, element_count(&x[a..])?]
        }
        Op::Reshape { shape, allow_zero } => reshape(x, shape, *allow_zero)?,
        Op::Transpose { perm } => {
            let perm = transpose_perm(perm, x.len())?;
            perm.iter().map(|&p| x[p]).collect()
        }
        Op::Concat { axis } => concat(*axis, x, &inputs[1..])?,
        Op::Pad { pads, axes, .. } => pad(&full_pads(pads, axes.as_deref(), x.len())?, x)?,
        Op::Squeeze { axes } => match axes {
            None => x.iter().copied().filter(|&d| d != 1).collect(),
            Some(axes) => {
                let axes =
                    axes.iter().map(|&a| normalize_axis(a, x.len(), 0)).collect::<Result<Vec<_>, _>>()?;
                if let Some(&a) = axes.iter().find(|&&a| x[a] != 1) {
                    return Err(invalid(format!("Squeeze: dimension {a} of {x:?} is not 1")));
                }
                x.iter().enumerate().filter(|(i, _)| !axes.contains(i)).map(|(_, &d)| d).collect()
            }
        },
        Op::Unsqueeze { axes } => {
            let rank = x.len() + axes.len();
            let mut axes = axes.iter().map(|&a| normalize_axis(a, rank, 0)).collect::<Result<Vec<_>, _>>()?;
            axes.sort_unstable();
            let mut rest = x.iter();
            (0..rank).map(|i| if axes.contains(&i) { 1 } else { *rest.next().unwrap_or(&1) }).collect()
        }
        Op::Reduce(r) => {
            let axes = reduce_axes(r, x.len())?;
            let mut out = Vec::with_capacity(x.len());
            for (i, &d) in x.iter().enumerate() {
                if !axes.contains(&i) {
                    out.push(d);
                } else if r.keepdims {
                    out.push(1);
                }
            }
            out
        }
        Op::Slice { starts, ends, axes, steps } => {
            slice_ranges(x, starts, ends, axes.as_deref(), steps.as_deref())?.iter().map(|r| r.len).collect()
        }
        Op::Gather { axis, indices_shape, .. } => {
            let a = normalize_axis(*axis, x.len(), 0)?;
            let mut out = x[..a].to_vec();
            out.extend_from_slice(indices_shape);
            out.extend_from_slice(&x[a + 1..]);
            out
        }
        Op::Resize(r) => resize_geometry(r, x)?.iter().map(|a| a.output).collect(),
        Op::ConvTranspose(ct) => {
            let g = conv_transpose_geometry(ct, x, input(1)?, inputs.get(2).copied().flatten())?;
            vec![g.batch, g.out_channels, g.out_hw[0], g.out_hw[1]]
        }
    };
    Ok(vec![shape])
}

fn gemm(g: &Gemm, x: &[usize], b: &[usize], c: Option<&[usize]>) -> Result<Vec<usize>, NnError> {
    if x.len() != 2 || b.len() != 2 {
        return Err(invalid(format!("Gemm needs 2-D inputs, got {x:?} and {b:?}")));
    }
    let (m, ka) = if g.trans_a { (x[1], x[0]) } else { (x[0], x[1]) };
    let (kb, n) = if g.trans_b { (b[1], b[0]) } else { (b[0], b[1]) };
    if ka != kb {
        return Err(invalid(format!("Gemm inner dimensions differ: {x:?} x {b:?}")));
    }
    if let Some(c) = c
        && broadcast(c, &[m, n])? != [m, n]
    {
        return Err(invalid(format!("Gemm C {c:?} does not broadcast to [{m}, {n}]")));
    }
    Ok(vec![m, n])
}

fn concat(axis: i64, x: &[usize], others: &[Option<&[usize]>]) -> Result<Vec<usize>, NnError> {
    let a = normalize_axis(axis, x.len(), 0)?;
    let mut out = x.to_vec();
    for other in others.iter().flatten() {
        if other.len() != x.len() || other.iter().enumerate().any(|(i, &d)| i != a && d != x[i]) {
            return Err(invalid(format!("Concat inputs {x:?} and {other:?} differ off axis {a}")));
        }
        out[a] = out[a].checked_add(other[a]).ok_or_else(|| {
            NnError::TooLarge(format!("Concat of {x:?} and {other:?} overflows on axis {a}"))
        })?;
    }
    Ok(out)
}

fn pad(pads: &[i64], x: &[usize]) -> Result<Vec<usize>, NnError> {
    if pads.len() != 2 * x.len() {
        return Err(invalid(format!("Pad: {} pads for rank {}", pads.len(), x.len())));
    }
    let mut out = Vec::with_capacity(x.len());
    for (i, &d) in x.iter().enumerate() {
        let size = i64::try_from(d)
            .ok()
            .and_then(|d| d.checked_add(pads[i])?.checked_add(pads[i + x.len()]))
            .ok_or_else(|| NnError::TooLarge(format!("Pad {pads:?} of {x:?} overflows")))?;
        if size < 0 {
            return Err(invalid(format!("Pad {pads:?} removes more than {x:?} holds")));
        }
        out.push(size as usize);
    }
    Ok(out)
}

/// The geometry of a numpy matmul: `batch` matrix products of `m x k` by `k x n`, `batch`
/// broadcast from the operands' leading dimensions `a_batch` and `b_batch` (1-D operands
/// promoted to matrices).
#[derive(Clone, Debug, PartialEq)]
pub struct MatmulDims {
    pub m: usize,
    pub k: usize,
    pub n: usize,
    pub batch: Vec<usize>,
    pub a_batch: Vec<usize>,
    pub b_batch: Vec<usize>,
}

pub fn matmul_dims(a: &[usize], b: &[usize]) -> Result<MatmulDims, NnError> {
    if a.is_empty() || b.is_empty() {
        return Err(invalid("MatMul of a scalar".into()));
    }
    let a2: Vec<usize> = if a.len() == 1 { vec![1, a[0]] } else { a.to_vec() };
    let b2: Vec<usize> = if b.len() == 1 { vec![b[0], 1] } else { b.to_vec() };
    let (m, k) = (a2[a2.len() - 2], a2[a2.len() - 1]);
    let (kb, n) = (b2[b2.len() - 2], b2[b2.len() - 1]);
    if k != kb {
        return Err(invalid(format!("MatMul inner dimensions differ: {a:?} x {b:?}")));
    }
    let (a_batch, b_batch) = (a2[..a2.len() - 2].to_vec(), b2[..b2.len() - 2].to_vec());
    let batch = broadcast(&a_batch, &b_batch)?;
    Ok(MatmulDims { m, k, n, batch, a_batch, b_batch })
}

/// numpy matmul shape rules (1-D operands promoted and the added dimension removed).
pub fn matmul(a: &[usize], b: &[usize]) -> Result<Vec<usize>, NnError> {
    let MatmulDims { m, n, mut batch, .. } = matmul_dims(a, b)?;
    if a.len() > 1 {
        batch.push(m);
    }
    if b.len() > 1 {
        batch.push(n);
    }
    Ok(batch)
}

/// Strides of a tensor of `shape` read as `full` (right-aligned; broadcast dimensions get 0).
pub fn broadcast_strides(shape: &[usize], full: &[usize]) -> Vec<usize> {
    let mut strides = vec![0; full.len()];
    let mut stride = 1;
    for i in (0..shape.len()).rev() {
        let j = i + full.len() - shape.len();
        strides[j] = if shape[i] == 1 { 0 } else { stride };
        stride *= shape[i];
    }
    strides
}

/// Pads for every dimension from ONNX's pads over `axes` (all dimensions when `None`).
pub fn full_pads(pads: &[i64], axes: Option<&[i64]>, rank: usize) -> Result<Vec<i64>, NnError> {
    let Some(axes) = axes else { return Ok(pads.to_vec()) };
    if pads.len() != 2 * axes.len() {
        return Err(invalid(format!("Pad: {} pads for {} axes", pads.len(), axes.len())));
    }
    let mut full = vec![0; 2 * rank];
    for (i, &a) in axes.iter().enumerate() {
        let a = normalize_axis(a, rank, 0)?;
        full[a] = pads[i];
        full[a + rank] = pads[i + axes.len()];
    }
    Ok(full)
}

/// The dimensions a Reduce combines, sorted.
pub fn reduce_axes(r: &Reduce, rank: usize) -> Result<Vec<usize>, NnError> {
    let mut axes = match &r.axes {
        None if r.noop_with_empty_axes => vec![],
        None => (0..rank).collect(),
        Some(axes) => axes.iter().map(|&a| normalize_axis(a, rank, 0)).collect::<Result<Vec<_>, _>>()?,
    };
    axes.sort_unstable();
    axes.dedup();
    Ok(axes)
}

/// What Slice takes of one dimension: `len` values from `start`, `step` apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SliceRange {
    pub start: i64,
    pub step: i64,
    pub len: usize,
}

/// ONNX Slice's clamping rules, per dimension of `x`.
pub fn slice_ranges(
    x: &[usize],
    starts: &[i64],
    ends: &[i64],
    axes: Option<&[i64]>,
    steps: Option<&[i64]>,
) -> Result<Vec<SliceRange>, NnError> {
    let mut ranges: Vec<SliceRange> = x.iter().map(|&d| SliceRange { start: 0, step: 1, len: d }).collect();
    if starts.len() != ends.len() {
        return Err(invalid(format!("Slice: {} starts and {} ends", starts.len(), ends.len())));
    }
    let default_axes: Vec<i64> = (0..starts.len() as i64).collect();
    let axes = axes.unwrap_or(&default_axes);
    if axes.len() != starts.len() || steps.is_some_and(|s| s.len() != starts.len()) {
        return Err(invalid(format!("Slice: axes {axes:?} and steps {steps:?} do not match {starts:?}")));
    }
    let mut seen = vec![false; x.len()];
    for (i, &axis) in axes.iter().enumerate() {
        let a = normalize_axis(axis, x.len(), 0)?;
        if std::mem::replace(&mut seen[a], true) {
            return Err(invalid(format!("Slice: axis {axis} appears twice in {axes:?}")));
        }
        let dim = x[a] as i64;
        let step = steps.map_or(1, |s| s[i]);
        if step == 0 {
            return Err(invalid("Slice: a step of 0".into()));
        }
        let resolve = |v: i64| if v < 0 { v.saturating_add(dim) } else { v };
        let (start, end) = (resolve(starts[i]), resolve(ends[i]));
        let (start, end) = if step > 0 {
            (start.clamp(0, dim), end.clamp(0, dim))
        } else {
            (start.clamp(0, (dim - 1).max(0)), end.clamp(-1, dim - 1))
        };
        let span = if step > 0 { end - start } else { start - end };
        let len = if span <= 0 { 0 } else { (span + step.abs() - 1) / step.abs() };
        ranges[a] = SliceRange { start, step, len: len as usize };
    }
    Ok(ranges)
}

/// How one axis of a Resize maps: input and output lengths and the scale that relates them.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ResizeAxis {
    pub input: usize,
    pub output: usize,
    pub scale: f32,
}

/// Output lengths and scales of every dimension of a Resize of `x`.
pub fn resize_geometry(r: &Resize, x: &[usize]) -> Result<Vec<ResizeAxis>, NnError> {
    let rank = x.len();
    let axes: Vec<usize> = match &r.axes {
        None => (0..rank).collect(),
        Some(axes) => axes.iter().map(|&a| normalize_axis(a, rank, 0)).collect::<Result<_, _>>()?,
    };
    let mut geometry: Vec<ResizeAxis> =
        x.iter().map(|&d| ResizeAxis { input: d, output: d, scale: 1.0 }).collect();
    let too_large = || NnError::TooLarge(format!("Resize of {x:?} by {:?} overflows", r.target));
    match &r.target {
        ResizeTarget::Scales(scales) => {
            if scales.len() != axes.len() {
                return Err(invalid(format!(
                    "Resize: {} scales for {} axes of {x:?}",
                    scales.len(),
                    axes.len()
                )));
            }
            for (&a, &scale) in axes.iter().zip(scales) {
                if !(scale > 0.0 && scale.is_finite()) {
                    return Err(invalid(format!("Resize: scale {scale} is not positive")));
                }
                let out = (x[a] as f64 * scale as f64).floor();
                if out > u32::MAX as f64 {
                    return Err(too_large());
                }
                geometry[a] = ResizeAxis { input: x[a], output: out as usize, scale };
            }
        }
        ResizeTarget::Sizes(sizes) => {
            if sizes.len() != axes.len() || sizes.iter().any(|&s| s < 0) {
                return Err(invalid(format!("Resize: sizes {sizes:?} for {} axes of {x:?}", axes.len())));
            }
            let ratios = axes.iter().zip(sizes).map(|(&a, &s)| s as f32 / x[a] as f32);
            let common = match r.aspect {
                AspectPolicy::Stretch => None,
                AspectPolicy::NotLarger => Some(ratios.fold(f32::INFINITY, f32::min)),
                AspectPolicy::NotSmaller => Some(ratios.fold(0.0, f32::max)),
            };
            for (&a, &size) in axes.iter().zip(sizes) {
                geometry[a] = match common {
                    None => {
                        ResizeAxis { input: x[a], output: size as usize, scale: size as f32 / x[a] as f32 }
                    }
                    Some(scale) => {
                        // round half away from zero, as ONNX's reference does.
                        let out = (scale as f64 * x[a] as f64).round();
                        if out > u32::MAX as f64 {
                            return Err(too_large());
                        }
                        ResizeAxis { input: x[a], output: out as usize, scale }
                    }
                };
            }
        }
    }
    Ok(geometry)
}

/// Geometry of a transposed convolution on given input and weight shapes.
#[derive(Clone, Copy, Debug)]
pub struct ConvTransposeGeometry {
    pub batch: usize,
    pub in_channels: usize,
    pub in_hw: [usize; 2],
    pub out_channels: usize,
    pub out_hw: [usize; 2],
    /// [top, left] padding removed from the full output.
    pub pads: [usize; 2],
}

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
    if w[2..] != ct.kernel {
        return Err(invalid(format!(
            "ConvTranspose kernel_shape {:?} differs from the weights {w:?}",
            ct.kernel
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
    let overflow = || NnError::TooLarge(format!("ConvTranspose of {x:?} with weights {w:?} overflows"));
    let mut out_hw = [0; 2];
    let mut pads = [0; 2];
    for i in 0..2 {
        let span = (ct.kernel[i] - 1).checked_mul(ct.dilations[i]).ok_or_else(overflow)? + 1;
        // The output before padding is cut away.
        let full = x[2 + i]
            .saturating_sub(1)
            .checked_mul(ct.strides[i])
            .and_then(|v| v.checked_add(span + ct.output_padding[i]))
            .ok_or_else(overflow)?;
        // As ONNX's reference: SAME_* pads split what exceeds `output_shape` (or input ·
        // stride); otherwise the explicit begin pad is cut and the output is `output_shape`
        // (cropped or extended with the bias) or what the pads leave.
        let same = matches!(ct.padding, Padding::SameUpper | Padding::SameLower);
        let explicit = |i: usize| match ct.padding {
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
                None => x[2 + i].checked_mul(ct.strides[i]).ok_or_else(overflow)?,
            };
            let total = full.checked_sub(wanted).ok_or_else(|| {
                invalid(format!("ConvTranspose: output size {wanted} exceeds the full output {full}"))
            })?;
            let begin = if ct.padding == Padding::SameUpper { total / 2 } else { total - total / 2 };
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

/// The input coordinate output coordinate `o` of `axis` maps to (ONNX's
/// coordinate_transformation_mode). As in ONNX's reference, the "resized length" is
/// scale · input, which differs from the output's integer length when scales are given.
fn source_coordinate(mode: CoordinateMode, axis: &ResizeAxis, o: usize) -> f64 {
    let (input, scale) = (axis.input as f64, axis.scale as f64);
    let output = scale * input;
    let o = o as f64;
    match mode {
        CoordinateMode::HalfPixel => (o + 0.5) / scale - 0.5,
        CoordinateMode::HalfPixelSymmetric => {
            let adjustment = axis.output as f64 / output;
            let center = input / 2.0;
            center * (1.0 - adjustment) + (o + 0.5) / scale - 0.5
        }
        CoordinateMode::PytorchHalfPixel => {
            if output == 1.0 {
                -0.5
            } else {
                (o + 0.5) / scale - 0.5
            }
        }
        CoordinateMode::AlignCorners => {
            if output == 1.0 {
                0.0
            } else {
                o * (input - 1.0) / (output - 1.0)
            }
        }
        CoordinateMode::Asymmetric => o / scale,
    }
}

/// Per output coordinate of one axis: two input coordinates and their weights.
pub fn resize_taps(r: &Resize, axis: &ResizeAxis) -> Vec<(usize, usize, f32, f32)> {
    let last = axis.input as i64 - 1;
    let clamp = |i: i64| i.clamp(0, last) as usize;
    (0..axis.output)
        .map(|o| {
            let x = source_coordinate(r.coordinates, axis, o);
            let floor = x.floor();
            let frac = x - floor;
            let floor = floor as i64;
            match r.mode {
                ResizeMode::Nearest(mode) => {
                    let up = match mode {
                        _ if frac == 0.0 => false,
                        NearestMode::RoundPreferFloor => frac > 0.5,
                        NearestMode::RoundPreferCeil => frac >= 0.5,
                        NearestMode::Floor => false,
                        NearestMode::Ceil => true,
                    };
                    let i = clamp(floor + up as i64);
                    (i, i, 1.0, 0.0)
                }
                ResizeMode::Linear => (clamp(floor), clamp(floor + 1), (1.0 - frac) as f32, frac as f32),
            }
        })
        .collect()
}

/// Per dimension of a Pad's output: the input coordinate each output coordinate reads, or
/// `None` where the constant fills it. `pads` covers every dimension.
pub fn pad_maps(
    x: &[usize],
    pads: &[i64],
    mode: PadMode,
    out_shape: &[usize],
) -> Result<Vec<Vec<Option<usize>>>, NnError> {
    if mode != PadMode::Constant && x.iter().zip(out_shape).any(|(&d, &o)| d == 0 && o > 0) {
        return Err(invalid(format!("Pad {mode:?} of an empty dimension of {x:?}")));
    }
    Ok((0..x.len())
        .map(|d| {
            let dim = x[d] as i64;
            (0..out_shape[d] as i64)
                .map(|o| {
                    let i = o - pads[d];
                    if (0..dim).contains(&i) {
                        return Some(i as usize);
                    }
                    match mode {
                        PadMode::Constant => None,
                        PadMode::Edge => Some(i.clamp(0, dim - 1) as usize),
                        PadMode::Wrap => Some(i.rem_euclid(dim) as usize),
                        PadMode::Reflect => {
                            if dim == 1 {
                                return Some(0);
                            }
                            let period = 2 * (dim - 1);
                            let r = i.rem_euclid(period);
                            Some(if r < dim { r } else { period - r } as usize)
                        }
                    }
                })
                .collect()
        })
        .collect())
}

/// Gather's indices resolved against dimension `dim` (negative ones count from the end).
pub fn gather_indices(indices: &[i64], dim: usize, x: &[usize]) -> Result<Vec<usize>, NnError> {
    indices
        .iter()
        .map(|&i| {
            let r = if i < 0 { i + dim as i64 } else { i };
            usize::try_from(r).ok().filter(|&r| r < dim).ok_or_else(|| {
                invalid(format!("Gather index {i} is out of range for dimension {dim} of {x:?}"))
            })
        })
        .collect()
}
