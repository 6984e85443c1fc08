//! Max and average pooling of narrow planes on AVX-512, sixteen planes at a time. The
//! per-plane path ([`super::ops::pool2d`]) vectorizes along rows, which an output narrower
//! than two vectors leaves mostly idle, and pays its per-row work for every one of thousands
//! of small planes: R-Net's and O-Net's poolings (22x22 and 46x46 planes at batches of 128
//! and 32) took a quarter of those networks' time, dlib-resnet-128's 2x2 average poolings at
//! batch 16 0.8 ms (onnxruntime 0.1). Here sixteen planes are interleaved by 16x16
//! transposes, each position a vector of their sixteen values; every output position is the
//! max or the sum of its window's vectors, one instruction per tap; and the outputs are
//! turned back into planes.

use std::arch::x86_64::*;

use super::channel_kernel::transpose;
use super::kernel::first_lanes;
use crate::ir::PoolKind;

/// Planes per group: one vector's lanes.
pub const PLANES: usize = 16;

/// Per output row (or column): the window's first input row, which may lie in the padding,
/// and the kernel taps [lo, hi) that land inside the input.
#[derive(Clone, Copy)]
pub struct AxisTaps {
    pub start: isize,
    pub lo: usize,
    pub hi: usize,
    /// The taps inside the input or its declared padding (an average's divisor counts them
    /// with `count_include_pad`).
    pub padded: usize,
}

/// Whether a pooling to outputs `out_width` wide runs here, on this CPU. Wider outputs
/// keep the per-plane path, whose rows fill its vectors: on FaceNet's 38-wide pooling (77x77
/// planes) this one was slower, 1.28-2.02 -> 2.07-2.24 ms at batch 16 (2-core VM, 2026-12-06).
pub fn suits(out_width: usize) -> bool {
    out_width < 32 && super::kernel::available()
}

/// Pools the `PLANES` planes of `src` (`[PLANES][h·w]`) into `dst` (`[PLANES][oh·ow]`,
/// `rows` and `cols` giving each output row's and column's window), with `scratch` for the
/// interleaved values. The same values as the per-plane path (but for which zero a window of
/// +0 and -0 gives, or an average whose sum is a zero): a max is exact in any order, NaN
/// never wins (`v > m` is false, as there), and an empty window gives -inf; an average sums
/// each column of its window from its first row down, then the columns from the first, as
/// that path sums its rows' lines and then their values, and divides as it does.
///
/// # Safety
/// The CPU has AVX-512F; every window's taps lie inside the `h x w` plane. (That `src` holds
/// `PLANES·h·w` values and `dst` `PLANES·rows·cols` is checked.)
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
pub unsafe fn pool(
    kind: PoolKind,
    count_include_pad: bool,
    src: &[f32],
    [h, w]: [usize; 2],
    rows: &[AxisTaps],
    cols: &[AxisTaps],
    [dh, dw]: [usize; 2],
    dst: &mut [f32],
    scratch: &mut Vec<f32>,
) {
    let (hw, out) = (h * w, rows.len() * cols.len());
    assert!(src.len() == PLANES * hw && dst.len() == PLANES * out, "a group of planes");
    scratch.resize(PLANES * (hw + out), 0.0);
    let (values, pooled) = scratch.split_at_mut(PLANES * hw);
    // SAFETY (all three loops): the loads and stores stay inside `src`, `values`, `pooled`
    // and `dst` by the lengths above and the windows' taps; the masked ones touch only their
    // first `n` lanes.
    for first in (0..hw).step_by(LANES) {
        let n = LANES.min(hw - first);
        let mask = first_lanes(n as isize);
        let planes =
            std::array::from_fn(|p| unsafe { _mm512_maskz_loadu_ps(mask, src.as_ptr().add(p * hw + first)) });
        for (j, position) in unsafe { transpose(planes) }.iter().enumerate().take(n) {
            unsafe { _mm512_storeu_ps(values.as_mut_ptr().add((first + j) * PLANES), *position) };
        }
    }
    let at = |y: usize, x: usize| unsafe { _mm512_loadu_ps(values.as_ptr().add((y * w + x) * PLANES)) };
    let mut pooled_at = pooled.as_mut_ptr();
    for row in rows {
        let ys = (row.lo..row.hi).map(|ky| (row.start + (ky * dh) as isize) as usize);
        for col in cols {
            let xs = (col.lo..col.hi).map(|kx| (col.start + (kx * dw) as isize) as usize);
            let value = match kind {
                // `max_ps(v, max)` returns `max` when v is NaN, as `v > max` is false.
                PoolKind::Max => xs.fold(_mm512_set1_ps(f32::NEG_INFINITY), |max, x| {
                    ys.clone().fold(max, |max, y| _mm512_max_ps(at(y, x), max))
                }),
                PoolKind::Average => {
                    let sum = xs.fold(_mm512_setzero_ps(), |sum, x| {
                        _mm512_add_ps(
                            sum,
                            ys.clone().fold(_mm512_setzero_ps(), |column, y| _mm512_add_ps(column, at(y, x))),
                        )
                    });
                    let cells = if count_include_pad {
                        row.padded * col.padded
                    } else {
                        (row.hi - row.lo) * (col.hi - col.lo)
                    };
                    _mm512_div_ps(sum, _mm512_set1_ps(cells.max(1) as f32))
                }
            };
            unsafe {
                _mm512_storeu_ps(pooled_at, value);
                pooled_at = pooled_at.add(PLANES);
            }
        }
    }
    for first in (0..out).step_by(LANES) {
        let n = LANES.min(out - first);
        let positions = std::array::from_fn(|j| {
            if j < n {
                unsafe { _mm512_loadu_ps(pooled.as_ptr().add((first + j) * PLANES)) }
            } else {
                _mm512_setzero_ps()
            }
        });
        let mask = first_lanes(n as isize);
        for (p, plane) in unsafe { transpose(positions) }.iter().enumerate() {
            unsafe { _mm512_mask_storeu_ps(dst.as_mut_ptr().add(p * out + first), mask, *plane) };
        }
    }
}

/// Positions per transpose.
const LANES: usize = 16;
