//! The memory-bound ops: pooling, element-wise math with broadcasting, normalization,
//! softmax, and layout changes.

use rayon::prelude::*;

use crate::ir::{Binary, Pool, PoolKind, Unary};
use crate::{Deadline, NnError, Tensor, element_count, shape, zeroed_values};

/// Element count above which element-wise loops are split across threads.
const PARALLEL_ELEMENTS: usize = 1 << 16;

/// Work per parallel task, in elements: below this, scheduling costs more than it saves.
const TASK_ELEMENTS: usize = 1 << 14;

/// How many chunks of `chunk` elements make one parallel task.
pub(super) fn chunks_per_task(chunk: usize) -> usize {
    (TASK_ELEMENTS / chunk.max(1)).max(1)
}

/// Pooling into `out` (of the output's shape, every value written; what it holds is not read);
/// past `deadline` the planes not yet computed are skipped and the run fails.
pub fn pool2d(pool: &Pool, x: &Tensor, mut out: Tensor, deadline: &Deadline) -> Result<Tensor, NnError> {
    let s = x.shape();
    let ([oh, ow], [pt, pl, pb, pr]) = shape::pool_geometry(pool, s)?;
    let (h, w) = (s[2], s[3]);
    let [kh, kw] = pool.window.kernel;
    let [sh, sw] = pool.window.strides;
    let [dh, dw] = pool.window.dilations;
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
    // The output columns whose every tap lands inside the row: a contiguous range, as only
    // the first and last columns can reach into the padding.
    let interior = {
        let full = |c: &&(isize, usize, usize, usize)| c.1 == 0 && c.2 == kw;
        let start = cols.iter().position(|c| full(&c)).unwrap_or(ow);
        start..start + cols[start..].iter().take_while(full).count()
    };
    debug_assert_eq!(out.shape(), [s[0], s[1], oh, ow]);
    // Separable: first combine the window's rows into one line (a loop over whole rows, which
    // vectorizes), then each output reads its columns from that line.
    // `line` has `sw` spare values at its end, which `tap_pass` may load and never uses.
    let plane = |line: &mut [f32], dst: &mut [f32], src: &[f32]| {
        // Checked per plane: reading the clock per row costs as much as a small plane's rows.
        if deadline.expired() {
            return;
        }
        for (oy, &(y0, ky_lo, ky_hi, y_padded)) in rows.iter().enumerate() {
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
            let divisor = |kx_taps: usize, x_padded: usize| {
                // Cells beyond the declared padding (ceil_mode overhang) never count.
                let cells =
                    if pool.count_include_pad { y_padded * x_padded } else { (ky_hi - ky_lo) * kx_taps };
                cells.max(1) as f32
            };
            // Columns whose whole window lies inside the line: one pass per tap over all of
            // them, in the same tap order as the border columns below.
            if !interior.is_empty() {
                let span = &mut dst_row[interior.clone()];
                let base = cols[interior.start].0 as usize;
                match pool.kind {
                    PoolKind::Max => span.fill(f32::NEG_INFINITY),
                    PoolKind::Average => span.fill(0.0),
                }
                for kx in 0..kw {
                    let taps = &line[base + kx * dw..];
                    match pool.kind {
                        PoolKind::Max => tap_pass(span, taps, sw, |m, v| if v > m { v } else { m }),
                        PoolKind::Average => tap_pass(span, taps, sw, |s, v| s + v),
                    }
                }
                if pool.kind == PoolKind::Average {
                    let d = divisor(kw, kw);
                    span.iter_mut().for_each(|o| *o /= d);
                }
            }
            for ox in (0..interior.start).chain(interior.end..ow) {
                let (x0, kx_lo, kx_hi, x_padded) = cols[ox];
                let taps = (kx_lo..kx_hi).map(|kx| line[(x0 + (kx * dw) as isize) as usize]);
                dst_row[ox] = match pool.kind {
                    PoolKind::Max => taps.fold(f32::NEG_INFINITY, |m, v| if v > m { v } else { m }),
                    PoolKind::Average => taps.sum::<f32>() / divisor(kx_hi - kx_lo, x_padded),
                };
            }
        }
    };
    #[cfg(target_arch = "x86_64")]
    if oh * ow > 0 && h * w > 0 && super::pool_lanes::suits(ow) {
        use super::pool_lanes::{self, PLANES};
        let window = |&(start, lo, hi, padded): &(isize, usize, usize, usize)| pool_lanes::AxisTaps {
            start,
            lo,
            hi,
            padded,
        };
        let row_windows: Vec<_> = rows.iter().map(window).collect();
        let col_windows: Vec<_> = cols.iter().map(window).collect();
        let (out_plane, in_plane) = (oh * ow, h * w);
        let grouped = s[0] * s[1] / PLANES * PLANES;
        let (out_groups, out_rest) = out.data_mut().split_at_mut(grouped * out_plane);
        let (in_groups, in_rest) = x.data().split_at(grouped * in_plane);
        out_groups
            .par_chunks_mut(PLANES * out_plane)
            .zip(in_groups.par_chunks(PLANES * in_plane))
            .with_min_len(chunks_per_task(PLANES * out_plane * kh * kw))
            .for_each_init(Vec::new, |scratch, (dst, src)| {
                if deadline.expired() {
                    return;
                }
                // SAFETY: `suits` found AVX-512F; `src` and `dst` hold a group's planes; the
                // windows' taps lie inside the input (`taps` above).
                unsafe {
                    pool_lanes::pool(
                        pool.kind,
                        pool.count_include_pad,
                        src,
                        [h, w],
                        &row_windows,
                        &col_windows,
                        [dh, dw],
                        dst,
                        scratch,
                    )
                }
            });
        // The last planes, fewer than a group.
        let mut line = vec![0.0f32; w + sw];
        for (dst, src) in out_rest.chunks_mut(out_plane).zip(in_rest.chunks(in_plane)) {
            plane(&mut line, dst, src);
        }
        deadline.check()?;
        return Ok(out);
    }
    out.data_mut()
        .par_chunks_mut((oh * ow).max(1))
        .zip(x.data().par_chunks((h * w).max(1)))
        .with_min_len(chunks_per_task(oh * ow * kh * kw))
        .for_each_init(|| vec![0.0f32; w + sw], |line, (dst, src)| plane(line, dst, src));
    deadline.check()?;
    Ok(out)
}

/// `span[i] = combine(span[i], line[i * stride])`. Strides 1 and 2 are constants in their
/// loops, so that the loads vectorize; `line` must hold `stride - 1` values past the last tap.
#[inline(always)]
fn tap_pass(span: &mut [f32], line: &[f32], stride: usize, combine: impl Fn(f32, f32) -> f32) {
    #[inline(always)]
    fn strided<const S: usize>(span: &mut [f32], line: &[f32], combine: impl Fn(f32, f32) -> f32) {
        span.iter_mut().zip(line.chunks_exact(S)).for_each(|(o, c)| *o = combine(*o, c[0]));
    }
    match stride {
        1 => strided::<1>(span, line, combine),
        2 => strided::<2>(span, line, combine),
        _ => span.iter_mut().zip(line.iter().step_by(stride)).for_each(|(o, &v)| *o = combine(*o, v)),
    }
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
    fn each(data: &mut [f32], f: impl Fn(f32) -> f32 + Sync) {
        let run = |chunk: &mut [f32]| chunk.iter_mut().for_each(|v| *v = f(*v));
        if data.len() >= PARALLEL_ELEMENTS {
            super::for_each_chunk(data, TASK_ELEMENTS, 1, |_, chunk| run(chunk));
        } else {
            run(data);
        }
    }
    // Relu gets its own loop, which vectorizes; the others go through `apply`.
    match op {
        Unary::Identity => {}
        Unary::Relu => each(x.data_mut(), |v| v.max(0.0)),
        _ => each(x.data_mut(), move |v| op.apply(v)),
    }
}

/// One operand of a broadcast element-wise op.
#[derive(Clone, Copy)]
pub enum Operand<'a> {
    /// A tensor read with numpy broadcasting.
    Tensor(&'a Tensor),
    /// The output buffer itself, already holding this operand (its shape is the output's).
    Output,
}

/// One operand along a run of output elements: a slice, one value repeated, or the output.
#[derive(Clone, Copy)]
enum Run<'a> {
    Slice(&'a [f32]),
    Scalar(f32),
    Output,
}

/// The output's dimensions (size, stride in a, stride in b), outermost first, with size-1
/// dimensions dropped and adjacent ones merged wherever both operands stay regular across them:
/// `[16, 3, 150, 150] - [1, 3, 1, 1]` becomes `[(48, 1·22500, 1), (22500, 1, 0)]`, so that the
/// innermost loop runs over whole planes. The innermost stride of each operand is 0 or 1.
fn merged_dims(out: &[usize], a: &[usize], b: &[usize]) -> Vec<(usize, usize, usize)> {
    let a_strides = shape::broadcast_strides(a, out);
    let b_strides = shape::broadcast_strides(b, out);
    let mut dims: Vec<(usize, usize, usize)> = Vec::with_capacity(out.len());
    for ((&n, &sa), &sb) in out.iter().zip(&a_strides).zip(&b_strides) {
        if n == 1 {
            continue;
        }
        match dims.last_mut() {
            Some(outer) if outer.1 == sa * n && outer.2 == sb * n => *outer = (outer.0 * n, sa, sb),
            _ => dims.push((n, sa, sb)),
        }
    }
    dims
}

/// `dst[i] = f(a[i], b[i])` over one run; an `Output` operand reads `dst[i]` itself.
#[inline(always)]
fn apply_run(dst: &mut [f32], a: Run, b: Run, f: &impl Fn(f32, f32) -> f32) {
    match (a, b) {
        (Run::Output, Run::Slice(b)) => dst.iter_mut().zip(b).for_each(|(o, &y)| *o = f(*o, y)),
        (Run::Output, Run::Scalar(y)) => dst.iter_mut().for_each(|o| *o = f(*o, y)),
        (Run::Slice(a), Run::Output) => dst.iter_mut().zip(a).for_each(|(o, &x)| *o = f(x, *o)),
        (Run::Scalar(x), Run::Output) => dst.iter_mut().for_each(|o| *o = f(x, *o)),
        (Run::Output, Run::Output) => dst.iter_mut().for_each(|o| *o = f(*o, *o)),
        (Run::Slice(a), Run::Slice(b)) => {
            dst.iter_mut().zip(a.iter().zip(b)).for_each(|(o, (&x, &y))| *o = f(x, y))
        }
        (Run::Slice(a), Run::Scalar(y)) => dst.iter_mut().zip(a).for_each(|(o, &x)| *o = f(x, y)),
        (Run::Scalar(x), Run::Slice(b)) => dst.iter_mut().zip(b).for_each(|(o, &y)| *o = f(x, y)),
        (Run::Scalar(x), Run::Scalar(y)) => dst.fill(f(x, y)),
    }
}

/// `dst = f(a, b)` with numpy broadcasting, `dst` having the broadcast shape `out_shape`.
/// Runs of contiguous elements (see `merged_dims`) go through tight loops that vectorize;
/// large outputs are split across threads in fixed-size pieces, so a result never depends
/// on the thread count.
fn broadcast_into(
    dst: &mut [f32],
    out_shape: &[usize],
    a: Operand,
    b: Operand,
    f: impl Fn(f32, f32) -> f32 + Sync,
) {
    let shape_of = |o: Operand| match o {
        Operand::Tensor(t) => t.shape().to_vec(),
        Operand::Output => out_shape.to_vec(),
    };
    let dims = merged_dims(out_shape, &shape_of(a), &shape_of(b));
    let (inner, ai, bi) = dims.last().copied().unwrap_or((1, 1, 1));
    let outer = &dims[..dims.len().saturating_sub(1)];
    fn run_of(o: Operand<'_>, offset: usize, stride: usize, n: usize) -> Run<'_> {
        match o {
            Operand::Output => Run::Output,
            Operand::Tensor(t) if stride == 0 => Run::Scalar(t.data()[offset]),
            Operand::Tensor(t) => Run::Slice(&t.data()[offset..offset + n]),
        }
    }
    // Computes `dst` from flat output index `start` on.
    let piece = |start: usize, dst: &mut [f32]| {
        let mut done = 0;
        while done < dst.len() {
            let position = start + done;
            let (mut row, col) = (position / inner, position % inner);
            let n = (inner - col).min(dst.len() - done);
            let (mut ao, mut bo) = (col * ai, col * bi);
            for &(size, sa, sb) in outer.iter().rev() {
                let coord = row % size;
                row /= size;
                ao += coord * sa;
                bo += coord * sb;
            }
            apply_run(&mut dst[done..done + n], run_of(a, ao, ai, n), run_of(b, bo, bi, n), &f);
            done += n;
        }
    };
    if dst.len() >= PARALLEL_ELEMENTS {
        super::for_each_chunk(dst, TASK_ELEMENTS, 1, |i, d| piece(i * TASK_ELEMENTS, d));
    } else {
        piece(0, dst);
    }
}

/// Runs `f` with the closure of binary `op`: one monomorphized loop per common op, so that
/// no per-element match slows them.
fn with_binary<R>(op: Binary, f: impl BinaryFn<R>) -> R {
    match op {
        Binary::Add => f.call(|x, y| x + y),
        Binary::Sub => f.call(|x, y| x - y),
        Binary::Mul => f.call(|x, y| x * y),
        Binary::Div => f.call(|x, y| x / y),
        _ => f.call(move |x, y| op.apply(x, y)),
    }
}

/// A computation generic over the element function (Rust closures cannot be generic).
trait BinaryFn<R> {
    fn call(self, f: impl Fn(f32, f32) -> f32 + Sync) -> R;
}

fn prelu_fn(v: f32, s: f32) -> f32 {
    if v < 0.0 { v * s } else { v }
}

/// `op(a, b)` with numpy broadcasting, into a new tensor.
pub fn binary(op: Binary, a: &Tensor, b: &Tensor) -> Result<Tensor, NnError> {
    struct New<'a>(&'a Tensor, &'a Tensor);
    impl BinaryFn<Result<Tensor, NnError>> for New<'_> {
        fn call(self, f: impl Fn(f32, f32) -> f32 + Sync) -> Result<Tensor, NnError> {
            broadcast_binary(self.0, self.1, f)
        }
    }
    with_binary(op, New(a, b))
}

/// `op` with the output written over `out`, which holds operand a (`out_is_a`) or b, and has the
/// broadcast shape; `other` is the other operand.
pub fn binary_in_place(op: Binary, out: &mut Tensor, other: &Tensor, out_is_a: bool) {
    struct InPlace<'a>(&'a mut Tensor, &'a Tensor, bool);
    impl BinaryFn<()> for InPlace<'_> {
        fn call(self, f: impl Fn(f32, f32) -> f32 + Sync) {
            in_place(self.0, self.1, self.2, f)
        }
    }
    with_binary(op, InPlace(out, other, out_is_a))
}

fn in_place(out: &mut Tensor, other: &Tensor, out_is_a: bool, f: impl Fn(f32, f32) -> f32 + Sync) {
    let shape = out.shape().to_vec();
    let (a, b) = if out_is_a {
        (Operand::Output, Operand::Tensor(other))
    } else {
        (Operand::Tensor(other), Operand::Output)
    };
    broadcast_into(out.data_mut(), &shape, a, b, f)
}

/// `f(a, b)` with numpy broadcasting.
pub fn broadcast_binary(
    a: &Tensor,
    b: &Tensor,
    f: impl Fn(f32, f32) -> f32 + Sync,
) -> Result<Tensor, NnError> {
    let out_shape = shape::broadcast(a.shape(), b.shape())?;
    let mut out = zeroed_values(element_count(&out_shape)?)?;
    broadcast_into(&mut out, &out_shape, Operand::Tensor(a), Operand::Tensor(b), f);
    Tensor::new(out_shape, out)
}

pub fn prelu(x: &Tensor, slope: &Tensor) -> Result<Tensor, NnError> {
    broadcast_binary(x, slope, prelu_fn)
}

/// PRelu written over `x`, which has the output's shape.
pub fn prelu_in_place(x: &mut Tensor, slope: &Tensor) {
    in_place(x, slope, true, prelu_fn)
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
    super::for_each_chunk(data, len * inner, chunks_per_task(len * inner), |_, block| {
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

/// Transpose into `out` (of the output's shape, every value written; what it holds is not
/// read).
pub fn transpose(x: &Tensor, perm: &[usize], mut out: Tensor) -> Result<Tensor, NnError> {
    let s = x.shape();
    let out_shape: Vec<usize> = perm.iter().map(|&p| s[p]).collect();
    debug_assert_eq!(out.shape(), out_shape);
    if perm.iter().enumerate().all(|(i, &p)| i == p) {
        out.data_mut().copy_from_slice(x.data());
        return Ok(out);
    }
    let mut in_strides = vec![1; s.len()];
    for i in (0..s.len().saturating_sub(1)).rev() {
        in_strides[i] = in_strides[i + 1] * s[i + 1];
    }
    // Stride in x of each output dimension.
    let strides: Vec<usize> = perm.iter().map(|&p| in_strides[p]).collect();
    let inner = *out_shape.last().unwrap_or(&1);
    let inner_stride = *strides.last().unwrap_or(&1);
    let src = x.data();
    super::for_each_chunk(out.data_mut(), inner, chunks_per_task(inner), |row, dst| {
        let mut offset = 0;
        let mut rest = row;
        for d in (0..out_shape.len().saturating_sub(1)).rev() {
            offset += (rest % out_shape[d]) * strides[d];
            rest /= out_shape[d];
        }
        for (j, o) in dst.iter_mut().enumerate() {
            *o = src[offset + j * inner_stride];
        }
    });
    Ok(out)
}

/// `inputs` laid end to end along `axis`, written over `out` (of the output's shape, its
/// values stale: every one is written); a large output in parallel, in pieces of at most
/// `TASK_ELEMENTS` values.
pub fn concat(inputs: &[&Tensor], axis: usize, mut out: Tensor) -> Tensor {
    let outer: usize = out.shape()[..axis].iter().product();
    let parallel = out.len() >= PARALLEL_ELEMENTS;
    // Each piece: where it goes in the output, and its values.
    let mut pieces: Vec<(usize, &[f32])> = Vec::new();
    let mut at = 0;
    let dst = out.data_mut();
    for o in 0..outer {
        for t in inputs {
            let block: usize = t.shape()[axis..].iter().product();
            let src = &t.data()[o * block..(o + 1) * block];
            if parallel {
                pieces
                    .extend(src.chunks(TASK_ELEMENTS).enumerate().map(|(i, s)| (at + i * TASK_ELEMENTS, s)));
            } else {
                dst[at..at + block].copy_from_slice(src);
            }
            at += block;
        }
    }
    let base = super::SyncPtr(dst.as_mut_ptr());
    super::for_each_item(pieces.len(), &Deadline::NONE, |i| {
        let (at, src) = pieces[i];
        // SAFETY: the pieces are disjoint ranges of the output, which holds `at` values
        // before each piece and the piece's after it, and outlives the loop.
        unsafe { std::slice::from_raw_parts_mut(base.get().add(at), src.len()) }.copy_from_slice(src);
    });
    out
}

/// `x` padded with `value` (negative pads crop), written over `out` (of the output's shape,
/// its values stale: every one is written).
pub fn pad(x: &Tensor, pads: &[i64], value: f32, mut out: Tensor) -> Result<Tensor, NnError> {
    let s = x.shape();
    let rank = s.len();
    let out_shape = out.shape().to_vec();
    out.data_mut().fill(value);
    if x.is_empty() || out.is_empty() {
        return Ok(out);
    }
    // Trailing dimensions without padding are copied whole: a row is then a run of `block`-sized
    // pieces along the innermost padded dimension `c` (a channel pad copies whole images).
    let unpadded = (0..rank).rev().take_while(|&d| pads[d] == 0 && pads[d + rank] == 0).count();
    if unpadded == rank {
        out.data_mut().copy_from_slice(x.data());
        return Ok(out);
    }
    let c = rank - unpadded - 1;
    let block: usize = s[c + 1..].iter().product();
    let inner = s[c];
    let rows = x.len() / (inner * block).max(1);
    let dst = out.data_mut();
    'rows: for row in 0..rows {
        // Coordinates of this input row; skip rows cut away by negative padding.
        let mut rest = row;
        let mut dst_offset = 0;
        let mut stride = out_shape[c] * block;
        for d in (0..c).rev() {
            let coord = (rest % s[d]) as i64 + pads[d];
            rest /= s[d];
            if coord < 0 || coord >= out_shape[d] as i64 {
                continue 'rows;
            }
            dst_offset += coord as usize * stride;
            stride *= out_shape[d];
        }
        // The input pieces that land inside the output row, copied in one run.
        let first = (-pads[c]).clamp(0, inner as i64) as usize;
        let last = (out_shape[c] as i64 - pads[c]).clamp(first as i64, inner as i64) as usize;
        let col = (first as i64 + pads[c]) as usize;
        dst[dst_offset + col * block..dst_offset + (col + last - first) * block]
            .copy_from_slice(&x.data()[(row * inner + first) * block..(row * inner + last) * block]);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Transposes of tensors large enough to be split into several tasks, rows short and long,
    /// against the definition (output index i reads the input at the permuted index).
    #[test]
    fn transpose_over_several_tasks_matches_the_definition() {
        for (shape, perm) in [
            (vec![2, 3, 50, 70], vec![0, 2, 3, 1]),
            (vec![1, 4, 130, 97], vec![0, 2, 3, 1]),
            (vec![1, 130, 97, 3], vec![0, 3, 1, 2]),
            (vec![3, 5, 7, 11, 13], vec![4, 2, 0, 3, 1]),
        ] {
            let n: usize = shape.iter().product();
            let x = Tensor::new(shape.clone(), (0..n).map(|v| v as f32).collect()).unwrap();
            let out_shape: Vec<usize> = perm.iter().map(|&p| shape[p]).collect();
            let out = transpose(&x, &perm, Tensor::zeros(out_shape.clone()).unwrap()).unwrap();
            let mut index = vec![0; shape.len()];
            for (i, &got) in out.data().iter().enumerate() {
                let mut rest = i;
                for d in (0..out_shape.len()).rev() {
                    index[perm[d]] = rest % out_shape[d];
                    rest /= out_shape[d];
                }
                let want = index.iter().zip(&shape).fold(0, |flat, (&at, &size)| flat * size + at);
                assert_eq!(got, want as f32, "{shape:?} by {perm:?}: output {i}");
            }
        }
    }
}
