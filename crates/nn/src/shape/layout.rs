//! Ops that move or select values: Reshape, Transpose, Concat, Pad, Squeeze/Unsqueeze,
//! Reduce's axes, Slice and Gather.

use super::{invalid, normalize_axis};
use crate::ir::{PadMode, Reduce};
use crate::{Excess, NnError, element_count};

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

pub(super) fn concat(axis: i64, x: &[usize], others: &[Option<&[usize]>]) -> Result<Vec<usize>, NnError> {
    let a = normalize_axis(axis, x.len(), 0)?;
    let mut out = x.to_vec();
    for other in others.iter().flatten() {
        if other.len() != x.len() || other.iter().enumerate().any(|(i, &d)| i != a && d != x[i]) {
            return Err(invalid(format!("Concat inputs {x:?} and {other:?} differ off axis {a}")));
        }
        out[a] = out[a].checked_add(other[a]).ok_or_else(|| {
            NnError::too_large(Excess::Overflow {
                computation: format!("Concat of {x:?} and {other:?} on axis {a}"),
            })
        })?;
    }
    Ok(out)
}

pub(super) fn pad(pads: &[i64], x: &[usize]) -> Result<Vec<usize>, NnError> {
    if pads.len() != 2 * x.len() {
        return Err(invalid(format!("Pad: {} pads for rank {}", pads.len(), x.len())));
    }
    let mut out = Vec::with_capacity(x.len());
    for (i, &d) in x.iter().enumerate() {
        let size = i64::try_from(d)
            .ok()
            .and_then(|d| d.checked_add(pads[i])?.checked_add(pads[i + x.len()]))
            .ok_or_else(|| {
                NnError::too_large(Excess::Overflow { computation: format!("Pad {pads:?} of {x:?}") })
            })?;
        if size < 0 {
            return Err(invalid(format!("Pad {pads:?} removes more than {x:?} holds")));
        }
        out.push(size as usize);
    }
    Ok(out)
}

/// Squeeze's output: `x` without the dimensions `axes` (every dimension of 1 when `None`).
pub(super) fn squeeze(x: &[usize], axes: Option<&[i64]>) -> Result<Vec<usize>, NnError> {
    Ok(match axes {
        None => x.iter().copied().filter(|&d| d != 1).collect(),
        Some(axes) => {
            let axes = axes.iter().map(|&a| normalize_axis(a, x.len(), 0)).collect::<Result<Vec<_>, _>>()?;
            if let Some(&a) = axes.iter().find(|&&a| x[a] != 1) {
                return Err(invalid(format!("Squeeze: dimension {a} of {x:?} is not 1")));
            }
            x.iter().enumerate().filter(|(i, _)| !axes.contains(i)).map(|(_, &d)| d).collect()
        }
    })
}

/// Unsqueeze's output: `x` with dimensions of 1 inserted at `axes` (of the output).
pub(super) fn unsqueeze(x: &[usize], axes: &[i64]) -> Result<Vec<usize>, NnError> {
    let rank = x.len() + axes.len();
    let mut axes = axes.iter().map(|&a| normalize_axis(a, rank, 0)).collect::<Result<Vec<_>, _>>()?;
    axes.sort_unstable();
    let mut rest = x.iter();
    Ok((0..rank).map(|i| if axes.contains(&i) { 1 } else { *rest.next().unwrap_or(&1) }).collect())
}

/// A Reduce's output: the reduced dimensions dropped, or kept as 1 with `keepdims`.
pub(super) fn reduce(r: &Reduce, x: &[usize]) -> Result<Vec<usize>, NnError> {
    let axes = reduce_axes(r, x.len())?;
    let mut out = Vec::with_capacity(x.len());
    for (i, &d) in x.iter().enumerate() {
        if !axes.contains(&i) {
            out.push(d);
        } else if r.keepdims {
            out.push(1);
        }
    }
    Ok(out)
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
