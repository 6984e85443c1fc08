//! The memory-bound ops: pooling, element-wise math with broadcasting, normalization,
//! softmax, and layout changes.

use rayon::prelude::*;

use crate::ir::{Binary, Pool, PoolKind, Unary};
use crate::{Deadline, NnError, Tensor, element_count, shape, zeroed_values};

/// Element count above which element-wise loops are split across threads.
const PARALLEL_ELEMENTS: usize = 1 << 16;

/// Work per parallel task, in elements: below this, scheduling costs more than it saves.
const TASK_ELEMENTS: usize = 1 << 14;

/// Work between two reads of the clock for a deadline, in elements: tens of microseconds.
const DEADLINE_CHECK_ELEMENTS: usize = 1 << 16;

/// How many chunks of `chunk` elements make one parallel task.
fn chunks_per_task(chunk: usize) -> usize {
    (TASK_ELEMENTS / chunk.max(1)).max(1)
}

/// Pooling; past `deadline` the rows not yet computed are skipped and the run fails.
pub fn pool2d(pool: &Pool, x: &Tensor, deadline: &Deadline) -> Result<Tensor, NnError> {
    let s = x.shape();
    let ([oh, ow], [pt, pl, pb, pr]) = shape::pool_geometry(pool, s)?;
    let (h, w) = (s[2], s[3]);
    let [kh, kw] = pool.kernel;
    let [sh, sw] = pool.strides;
    let [dh, dw] = pool.dilations;
    // Per output row/column: the kernel taps that land inside the image, and (for
    // count_include_pad) how many land inside the declared padding. Computed once per axis so
    // the inner loops need no bounds checks.
    let taps = |out: usize,
                stride: usize,
                pad: usize,
                pad_end: usize,
                dilation: usize,
                kernel: usize,
                size: usize| {
        (0..out)
            .map(|o| {
                let start = (o * stride) as isize - pad as isize;
                let inside =
                    (0..kernel).filter(|k| (0..size as isize).contains(&(start + (k * dilation) as isize)));
                let (lo, hi) = inside.clone().fold((kernel, 0), |(lo, hi), k| (lo.min(k), hi.max(k + 1)));
                let padded = (0..kernel)
                    .filter(|k| start + ((k * dilation) as isize) < (size + pad_end) as isize)
                    .count();
                (start, lo, hi.max(lo), padded)
            })
            .collect::<Vec<_>>()
    };
    let rows = taps(oh, sh, pt, pb, dh, kh, h);
    let cols = taps(ow, sw, pl, pr, dw, kw, w);
    let mut out = Tensor::zeros(vec![s[0], s[1], oh, ow])?;
    // Separable: first combine the window's rows into one line (a loop over whole rows, which
    // vectorizes), then each output reads its columns from that line.
    // The clock is read about every DEADLINE_CHECK_ELEMENTS elements of work, not per row:
    // batched small planes (R-Net's, O-Net's) would otherwise spend more on reading it than
    // on pooling.
    let row_work = (w * kh + ow * kw).max(1);
    let rows_per_check = (DEADLINE_CHECK_ELEMENTS / row_work).max(1);
    let planes_per_check = (DEADLINE_CHECK_ELEMENTS / (row_work * oh.max(1))).max(1);
    let plane = |index: usize, dst: &mut [f32], src: &[f32]| {
        let mut line = vec![0.0f32; w];
        for (oy, &(y0, ky_lo, ky_hi, y_padded)) in rows.iter().enumerate() {
            let due = if oy == 0 {
                index.is_multiple_of(planes_per_check)
            } else {
                oy.is_multiple_of(rows_per_check)
            };
            if due && deadline.expired() {
                return;
            }
            let row = |ky: usize| &src[(y0 + (ky * dh) as isize) as usize * w..][..w];
            match pool.kind {
                PoolKind::Max => line.fill(f32::NEG_INFINITY),
                PoolKind::Average => line.fill(0.0),
            }
            for ky in ky_lo..ky_hi {
                match pool.kind {
                    PoolKind::Max => {
                        line.iter_mut().zip(row(ky)).for_each(|(l, &v)| *l = if v > *l { v } else { *l })
                    }
                    PoolKind::Average => line.iter_mut().zip(row(ky)).for_each(|(l, &v)| *l += v),
                }
            }
            let dst_row = &mut dst[oy * ow..(oy + 1) * ow];
            for (out, &(x0, kx_lo, kx_hi, x_padded)) in dst_row.iter_mut().zip(&cols) {
                let taps = (kx_lo..kx_hi).map(|kx| line[(x0 + (kx * dw) as isize) as usize]);
                *out = match pool.kind {
                    PoolKind::Max => taps.fold(f32::NEG_INFINITY, |m, v| if v > m { v } else { m }),
                    PoolKind::Average => {
                        // Cells beyond the declared padding (ceil_mode overhang) never count.
                        let divisor = if pool.count_include_pad {
                            y_padded * x_padded
                        } else {
                            (ky_hi - ky_lo) * (kx_hi - kx_lo)
                        };
                        taps.sum::<f32>() / divisor.max(1) as f32
                    }
                };
            }
        }
    };
    out.data_mut()
        .par_chunks_mut((oh * ow).max(1))
        .zip(x.data().par_chunks((h * w).max(1)))
        .enumerate()
        .with_min_len(chunks_per_task(oh * ow * kh * kw))
        .for_each(|(index, (dst, src))| plane(index, dst, src));
    deadline.check()?;
    Ok(out)
}

pub fn global_pool(kind: PoolKind, x: &Tensor) -> Result<Tensor, NnError> {
    let s = x.shape();
    let plane: usize = s[2..].iter().product();
    let mut out_shape = s.to_vec();
    out_shape[2..].iter_mut().for_each(|d| *d = 1);
    let data = x
        .data()
        .chunks(plane.max(1))
        .map(|c| match kind {
            PoolKind::Max => c.iter().copied().fold(f32::NEG_INFINITY, f32::max),
            PoolKind::Average => c.iter().sum::<f32>() / plane as f32,
        })
        .collect();
    Tensor::new(out_shape, data)
}

pub fn unary_in_place(op: Unary, x: &mut Tensor) {
    let data = x.data_mut();
    if data.len() >= PARALLEL_ELEMENTS {
        data.par_iter_mut().for_each(|v| *v = op.apply(*v));
    } else {
        data.iter_mut().for_each(|v| *v = op.apply(*v));
    }
}

/// `f(a, b)` with numpy broadcasting.
pub fn broadcast_binary(
    a: &Tensor,
    b: &Tensor,
    f: impl Fn(f32, f32) -> f32 + Sync,
) -> Result<Tensor, NnError> {
    let out_shape = shape::broadcast(a.shape(), b.shape())?;
    let mut out = zeroed_values(element_count(&out_shape)?)?;
    if a.shape() == b.shape() {
        out.iter_mut().zip(a.data().iter().zip(b.data())).for_each(|(o, (x, y))| *o = f(*x, *y));
    } else if b.len() == 1 {
        let y = b.data()[0];
        out.iter_mut().zip(a.data()).for_each(|(o, x)| *o = f(*x, y));
    } else if a.len() == 1 {
        let x = a.data()[0];
        out.iter_mut().zip(b.data()).for_each(|(o, y)| *o = f(x, *y));
    } else {
        let a_strides = shape::broadcast_strides(a.shape(), &out_shape);
        let b_strides = shape::broadcast_strides(b.shape(), &out_shape);
        let inner = *out_shape.last().unwrap_or(&1);
        let (ai, bi) = (*a_strides.last().unwrap_or(&0), *b_strides.last().unwrap_or(&0));
        let ad = a.data();
        let bd = b.data();
        out.par_chunks_mut(inner.max(1)).enumerate().with_min_len(chunks_per_task(inner)).for_each(
            |(row, dst)| {
                // Offsets of this row's first element in a and b.
                let (mut ao, mut bo) = (0, 0);
                let mut rest = row;
                for d in (0..out_shape.len().saturating_sub(1)).rev() {
                    let coord = rest % out_shape[d];
                    rest /= out_shape[d];
                    ao += coord * a_strides[d];
                    bo += coord * b_strides[d];
                }
                for (j, o) in dst.iter_mut().enumerate() {
                    *o = f(ad[ao + j * ai], bd[bo + j * bi]);
                }
            },
        );
    }
    Tensor::new(out_shape, out)
}

pub fn binary(op: Binary, a: &Tensor, b: &Tensor) -> Result<Tensor, NnError> {
    // One monomorphized loop per common op, so that no per-element match slows them.
    match op {
        Binary::Add => broadcast_binary(a, b, |x, y| x + y),
        Binary::Sub => broadcast_binary(a, b, |x, y| x - y),
        Binary::Mul => broadcast_binary(a, b, |x, y| x * y),
        Binary::Div => broadcast_binary(a, b, |x, y| x / y),
        _ => broadcast_binary(a, b, move |x, y| op.apply(x, y)),
    }
}

pub fn prelu(x: &Tensor, slope: &Tensor) -> Result<Tensor, NnError> {
    broadcast_binary(x, slope, |v, s| if v < 0.0 { v * s } else { v })
}

pub fn batch_norm(x: &Tensor, params: [&Tensor; 4], epsilon: f32) -> Result<Tensor, NnError> {
    let [scale, bias, mean, var] = params;
    let s = x.shape();
    let channels = s[1];
    let plane: usize = s[2..].iter().product();
    let mut out = x.clone();
    for (i, chunk) in out.data_mut().chunks_mut(plane.max(1)).enumerate() {
        let c = i % channels;
        let factor = scale.data()[c] / (var.data()[c] + epsilon).sqrt();
        let shift = bias.data()[c] - mean.data()[c] * factor;
        chunk.iter_mut().for_each(|v| *v = *v * factor + shift);
    }
    Ok(out)
}

pub fn softmax_in_place(x: &mut Tensor, axis: i64, coerce_2d: bool) -> Result<(), NnError> {
    let s = x.shape().to_vec();
    let a = shape::normalize_axis(axis, s.len(), 0)?;
    let (len, inner) = if coerce_2d {
        (s[a..].iter().product::<usize>(), 1)
    } else {
        (s[a], s[a + 1..].iter().product::<usize>())
    };
    if len == 0 {
        return Ok(());
    }
    let data = x.data_mut();
    data.par_chunks_mut(len * inner).with_min_len(chunks_per_task(len * inner)).for_each(|block| {
        for i in 0..inner {
            let max = (0..len).map(|j| block[j * inner + i]).fold(f32::NEG_INFINITY, f32::max);
            let mut sum = 0.0;
            for j in 0..len {
                let e = (block[j * inner + i] - max).exp();
                block[j * inner + i] = e;
                sum += e;
            }
            for j in 0..len {
                block[j * inner + i] /= sum;
            }
        }
    });
    Ok(())
}

pub fn transpose(x: &Tensor, perm: &[usize]) -> Result<Tensor, NnError> {
    let s = x.shape();
    let out_shape: Vec<usize> = perm.iter().map(|&p| s[p]).collect();
    if perm.iter().enumerate().all(|(i, &p)| i == p) {
        return Tensor::new(out_shape, x.data().to_vec());
    }
    let mut in_strides = vec![1; s.len()];
    for i in (0..s.len().saturating_sub(1)).rev() {
        in_strides[i] = in_strides[i + 1] * s[i + 1];
    }
    // Stride in x of each output dimension.
    let strides: Vec<usize> = perm.iter().map(|&p| in_strides[p]).collect();
    let inner = *out_shape.last().unwrap_or(&1);
    let inner_stride = *strides.last().unwrap_or(&1);
    let mut out = vec![0.0; x.len()];
    let src = x.data();
    out.par_chunks_mut(inner.max(1)).enumerate().with_min_len(chunks_per_task(inner)).for_each(
        |(row, dst)| {
            let mut offset = 0;
            let mut rest = row;
            for d in (0..out_shape.len().saturating_sub(1)).rev() {
                offset += (rest % out_shape[d]) * strides[d];
                rest /= out_shape[d];
            }
            for (j, o) in dst.iter_mut().enumerate() {
                *o = src[offset + j * inner_stride];
            }
        },
    );
    Tensor::new(out_shape, out)
}

pub fn concat(inputs: &[&Tensor], axis: usize, out_shape: Vec<usize>) -> Result<Tensor, NnError> {
    let outer: usize = out_shape[..axis].iter().product();
    let mut out = Vec::with_capacity(out_shape.iter().product());
    for o in 0..outer {
        for t in inputs {
            let block: usize = t.shape()[axis..].iter().product();
            out.extend_from_slice(&t.data()[o * block..(o + 1) * block]);
        }
    }
    Tensor::new(out_shape, out)
}

pub fn pad(x: &Tensor, pads: &[i64], value: f32, out_shape: Vec<usize>) -> Result<Tensor, NnError> {
    let s = x.shape();
    let rank = s.len();
    let mut out = Tensor::new(out_shape.clone(), vec![value; out_shape.iter().product()])?;
    if x.is_empty() || out.is_empty() {
        return Ok(out);
    }
    let inner = s[rank - 1];
    let rows = x.len() / inner.max(1);
    let dst = out.data_mut();
    'rows: for row in 0..rows {
        // Coordinates of this input row; skip rows cut away by negative padding.
        let mut rest = row;
        let mut dst_offset = 0;
        let mut stride = out_shape[rank - 1];
        for d in (0..rank - 1).rev() {
            let coord = (rest % s[d]) as i64 + pads[d];
            rest /= s[d];
            if coord < 0 || coord >= out_shape[d] as i64 {
                continue 'rows;
            }
            dst_offset += coord as usize * stride;
            stride *= out_shape[d];
        }
        let src = &x.data()[row * inner..(row + 1) * inner];
        for (j, &v) in src.iter().enumerate() {
            let col = j as i64 + pads[rank - 1];
            if col >= 0 && col < out_shape[rank - 1] as i64 {
                dst[dst_offset + col as usize] = v;
            }
        }
    }
    Ok(out)
}
