//! Slice, Gather, Pad in every mode, Resize and ReduceSum/ReduceMean (shaders/gather.wgsl):
//! the index arithmetic (clamping, reflection, interpolation taps) is the CPU backend's
//! (`shape::slice_ranges`, `pad_maps`, `resize_taps`), computed on the host into small tables
//! that the kernels read.

use wgpu::util::DeviceExt;

use super::Step;
use super::{WG, per_value, row_major_strides};
use crate::gpu::builder::{Bind, Builder, Loc};
use crate::gpu::keys::ShapeChoice;
use crate::gpu::params::{IndexMapParams, MAX_RANK, ReduceParams, ResizeAxisParams, dims, u};
use crate::ir::{Node, PadMode, Reduce, ReduceKind, Resize};
use crate::{NnError, shape};

const NO_SOURCE: u32 = u32::MAX;

fn check_rank(op: &str, s: &[usize]) -> Result<(), NnError> {
    if s.len() > MAX_RANK {
        let limit = format!("the GPU backend's {op} takes rank ≤ {MAX_RANK}, got {s:?}");
        return Err(NnError::invalid_argument(crate::ArgumentFault::GpuLimit { limit }));
    }
    Ok(())
}

fn table(b: &Builder, values: &[u32]) -> wgpu::Buffer {
    let values = if values.is_empty() { &[0u32][..] } else { values };
    b.ctx.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
        label: Some("index table"),
        contents: bytemuck::cast_slice(values),
        usage: wgpu::BufferUsages::STORAGE,
    })
}

/// out = x read through per-dimension maps (input coordinate, or `None` for `value`).
fn index_map(
    b: &mut Builder,
    index: usize,
    node: &Node,
    maps: &[Vec<Option<usize>>],
    value: f32,
    out_shape: Vec<usize>,
) -> Result<Loc, NnError> {
    let x = b.input(node, 0)?.clone();
    check_rank(node.op.onnx_name(), &out_shape)?;
    let strides = row_major_strides(&x.shape);
    let mut entries = Vec::new();
    let mut bases = Vec::with_capacity(maps.len());
    for (d, map) in maps.iter().enumerate() {
        bases.push(entries.len());
        entries.extend(map.iter().map(|c| c.map_or(NO_SOURCE, |c| u(c * strides[d]))));
    }
    let total: usize = out_shape.iter().product();
    let out = b.output(out_shape.clone())?;
    if total == 0 {
        return Ok(out);
    }
    let params = IndexMapParams {
        total: u(total),
        rank: u(out_shape.len()),
        value,
        out_shape: dims(out_shape.iter().copied()),
        table_base: dims(bases),
    };
    let table = table(b, &entries);
    let grid = b.grid((total as u64).div_ceil(WG))?;
    let key = b.kernel(index, node, ShapeChoice::Unknown)?;
    b.dispatch(key, &params, &[x.whole(), Bind::buffer(&table)], out.whole(), grid)?;
    Ok(out)
}

#[allow(clippy::too_many_arguments)] // the op's fields, as the CPU backend takes them
pub fn plan_pad(
    b: &mut Builder,
    step: Step,
    pads: &[i64],
    axes: Option<&[i64]>,
    mode: PadMode,
    value: f32,
) -> Result<Loc, NnError> {
    let Step { index, node, out_shape } = step;
    let x = b.input(node, 0)?.shape.clone();
    let pads = shape::full_pads(pads, axes, x.len())?;
    let maps = shape::pad_maps(&x, &pads, mode, &out_shape)?;
    index_map(b, index, node, &maps, value, out_shape)
}

#[allow(clippy::too_many_arguments)] // the op's fields, as the CPU backend takes them
pub fn plan_slice(
    b: &mut Builder,
    step: Step,
    starts: &[i64],
    ends: &[i64],
    axes: Option<&[i64]>,
    steps: Option<&[i64]>,
) -> Result<Loc, NnError> {
    let Step { index, node, out_shape } = step;
    let x = b.input(node, 0)?.shape.clone();
    let ranges = shape::slice_ranges(&x, starts, ends, axes, steps)?;
    let maps: Vec<Vec<Option<usize>>> = ranges
        .iter()
        .map(|r| (0..r.len).map(|i| Some((r.start + i as i64 * r.step) as usize)).collect())
        .collect();
    index_map(b, index, node, &maps, 0.0, out_shape)
}

pub fn plan_gather(b: &mut Builder, step: Step, axis: i64, indices: &[i64]) -> Result<Loc, NnError> {
    let Step { index, node, out_shape } = step;
    let x = b.input(node, 0)?.shape.clone();
    let a = shape::normalize_axis(axis, x.len(), 0)?;
    let resolved = shape::gather_indices(indices, x[a], &x)?;
    // The indices' dimensions flattened into one: the same memory order.
    let maps: Vec<Vec<Option<usize>>> =
        (0..x.len())
            .map(|d| {
                if d == a {
                    resolved.iter().map(|&i| Some(i)).collect()
                } else {
                    (0..x[d]).map(Some).collect()
                }
            })
            .collect();
    let flat: Vec<usize> = maps.iter().map(Vec::len).collect();
    let out = index_map(b, index, node, &maps, 0.0, flat)?;
    Ok(b.alias(&out, out_shape))
}

/// One dispatch per resized axis, each reading the previous one's output.
pub fn plan_resize(b: &mut Builder, step: Step, r: &Resize) -> Result<Loc, NnError> {
    let Step { index, node, .. } = step;
    let mut current = b.input(node, 0)?.clone();
    let geometry = shape::resize_geometry(r, &current.shape)?;
    let key = b.kernel(index, node, ShapeChoice::Unknown)?;
    let mut resized = false;
    for (d, axis) in geometry.iter().enumerate() {
        if axis.input == axis.output && axis.scale == 1.0 {
            continue;
        }
        if axis.input == 0 {
            let fault = crate::ArgumentFault::EmptyResizeAxis { shape: current.shape.clone() };
            return Err(NnError::invalid_argument(fault));
        }
        let mut out_shape = current.shape.clone();
        out_shape[d] = axis.output;
        let out = b.output(out_shape.clone())?;
        let total: usize = out_shape.iter().product();
        if total > 0 {
            let taps: Vec<u32> = shape::resize_taps(r, axis)
                .iter()
                .flat_map(|&(i0, i1, w0, w1)| [u(i0), u(i1), w0.to_bits(), w1.to_bits()])
                .collect();
            let params = ResizeAxisParams {
                total: u(total),
                len_in: u(axis.input),
                len_out: u(axis.output),
                inner: u(out_shape[d + 1..].iter().product()),
            };
            let table = table(b, &taps);
            let grid = b.grid((total as u64).div_ceil(WG))?;
            b.dispatch(key.clone(), &params, &[current.whole(), Bind::buffer(&table)], out.whole(), grid)?;
        }
        current = out;
        resized = true;
    }
    if !resized {
        // Nothing resized: the output aliases the input.
        return Ok(b.alias(&current, current.shape.clone()));
    }
    Ok(current)
}

pub fn plan_reduce(b: &mut Builder, step: Step, r: &Reduce) -> Result<Loc, NnError> {
    let x = b.input(step.node, 0)?.clone();
    check_rank("Reduce", &x.shape)?;
    let axes = shape::reduce_axes(r, x.shape.len())?;
    let count: usize = axes.iter().map(|&a| x.shape[a]).product();
    let strides = row_major_strides(&x.shape);
    let (reduced, kept): (Vec<usize>, Vec<usize>) = (0..x.shape.len()).partition(|d| axes.contains(d));
    let shape_of = |ds: &[usize]| dims(ds.iter().map(|&d| x.shape[d]));
    let strides_of = |ds: &[usize]| dims(ds.iter().map(|&d| strides[d]));
    per_value(b, step, &[x.whole()], |total| ReduceParams {
        total,
        count: u(count),
        scale: match r.kind {
            ReduceKind::Sum => 1.0,
            ReduceKind::Mean => 1.0 / count as f32,
        },
        kept_rank: u(kept.len()),
        reduced_rank: u(reduced.len()),
        kept_shape: shape_of(&kept),
        kept_strides: strides_of(&kept),
        reduced_shape: shape_of(&reduced),
        reduced_strides: strides_of(&reduced),
    })
}
