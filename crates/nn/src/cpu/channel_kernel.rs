//! The AVX-512 microkernel that vectorizes over output channels: a block of [16·V output
//! channels × NC output columns], each accumulator one 16-lane vector of channels for one
//! column. Every multiply-add takes a vector of weights and one input value broadcast from
//! wherever it lies, so a column's inputs need not be contiguous: the kernel reads the input
//! planes in place through a table of tap offsets (no im2col), at any stride, and an output
//! of one column (a 3x3 convolution on a 3x3 map) keeps as many lanes busy as a wide one.
//! [`super::kernel`], which vectorizes over columns, idles most of its lanes on such narrow
//! outputs; it runs 1x1 convolutions whose planes fill its blocks, convolutions with fewer
//! than 16 output channels, and wide stride-1 ones over few taps (in blocks that span output
//! rows).
//!
//! Weights are packed into panels of 16 channels, `[k][16]`, on a conv's first run on this
//! kernel, and kept with the prepared graph.

use crate::ir::Activation;

/// Output channels per panel: one 16-lane vector.
pub const LANES: usize = 16;
/// The most columns a block holds (12 columns × 2 vectors = 24 of the 32 vector registers).
pub const MAX_COLUMNS: usize = 12;

/// A conv's weights `[groups·cout_g, k]` (row-major) as panels of [`LANES`] channels, group
/// by group, each `[k][LANES]`; the lanes past a group's last channel hold zeros.
#[derive(Debug)]
pub struct ChannelPanels {
    pub data: Vec<f32>,
    /// Panels per group.
    pub panels: usize,
    pub k: usize,
}

impl ChannelPanels {
    pub fn new(w: &[f32], groups: usize, cout_g: usize, k: usize) -> Self {
        ChannelPanels {
            data: super::kernel::pack_panels(w, groups, cout_g, k, LANES),
            panels: cout_g.div_ceil(LANES),
            k,
        }
    }

    /// The first of the panels from `panel` on of group `group`; the next panel of the group
    /// follows it at `k·LANES`.
    pub fn panel(&self, group: usize, panel: usize) -> *const f32 {
        self.data[(group * self.panels + panel) * self.k * LANES..].as_ptr()
    }
}

/// Bias and activation of a block's 16·V channels, lane by lane (zeros past the last channel).
pub struct ChannelEpilogue {
    pub bias: [f32; 2 * LANES],
    pub kind: EpilogueKind,
    pub slopes: [f32; 2 * LANES],
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum EpilogueKind {
    None,
    Relu,
    /// v < 0 ? v·slope : v, a slope per channel.
    Slope,
}

impl ChannelEpilogue {
    /// The epilogue of channels [first, first + rows) (rows ≤ 2·LANES).
    pub fn new(bias: &[f32], activation: &Activation, first: usize, rows: usize) -> Self {
        let mut lanes = [0.0; 2 * LANES];
        lanes[..rows].copy_from_slice(&bias[first..first + rows]);
        let mut slopes = [0.0; 2 * LANES];
        let kind = match activation {
            Activation::None => EpilogueKind::None,
            Activation::Relu => EpilogueKind::Relu,
            Activation::LeakyRelu(alpha) => {
                slopes = [*alpha; 2 * LANES];
                EpilogueKind::Slope
            }
            Activation::PRelu(s) => {
                slopes[..rows].copy_from_slice(&s.data()[first..first + rows]);
                EpilogueKind::Slope
            }
        };
        ChannelEpilogue { bias: lanes, kind, slopes }
    }
}

/// Where a block reads its inputs: column j's value of tap kk lies at
/// `src + offsets[kk] + j·S`.
pub struct Source {
    pub src: *const f32,
    pub offsets: *const usize,
}

/// Where a block writes.
pub enum Destination<'a> {
    /// Column j's channel r at `base + j + r·stride` (columns along one output row).
    Contiguous { base: *mut f32, stride: usize, rows: usize },
    /// Column j's channel r at `columns[j] + r·stride` (columns of several images).
    Scattered { columns: &'a [*mut f32], stride: usize, rows: usize },
}

impl Destination<'_> {
    /// The same destination from its column `j` on (the first j columns skipped).
    pub fn past_columns(&self, j: usize) -> Self {
        match *self {
            Destination::Contiguous { base, stride, rows } => {
                Destination::Contiguous { base: base.wrapping_add(j), stride, rows }
            }
            Destination::Scattered { columns, stride, rows } => {
                Destination::Scattered { columns: &columns[j..], stride, rows }
            }
        }
    }
}

/// Where a block's accumulators start: the bias, or the partial sums an earlier range of
/// taps left (`[NC][2·LANES]` values).
#[derive(Clone, Copy)]
pub enum Start {
    Bias,
    Partial(*const f32),
}

/// Where a block's accumulators go: partial sums for a later range of taps (`[NC][2·LANES]`
/// values), or through the epilogue into the output.
pub enum Finish<'a> {
    Partial(*mut f32),
    Store(Destination<'a>),
}

/// Runs one block of `V` panels (`panels` as [`ChannelPanels::panel`] gives them, `k` taps
/// each) over NC columns, for the taps in the ranges `taps`, in order.
///
/// # Safety
/// The CPU has AVX-512F; `panels` holds V panels of `k·LANES` values, `k·LANES` apart;
/// `source.offsets` holds `k` offsets, and every `src + offsets[kk] + j·S` (j < NC, kk in
/// one of `taps`) is readable; partial sums hold NC·2·LANES values; a destination's
/// `columns[j] + r·stride` for r < rows is writable and accessed by nothing else meanwhile.
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
pub unsafe fn block<const S: usize, const V: usize, const NC: usize>(
    k: usize,
    taps: &[std::ops::Range<usize>],
    panels: *const f32,
    source: &Source,
    start: Start,
    epilogue: &ChannelEpilogue,
    finish: &Finish,
) {
    use std::arch::x86_64::*;
    let mut acc = [[_mm512_setzero_ps(); V]; NC];
    for (j, column) in acc.iter_mut().enumerate() {
        for (v, lane) in column.iter_mut().enumerate() {
            // SAFETY: bias holds 2·LANES values and v < V ≤ 2; partial sums as the contract says.
            *lane = unsafe {
                match start {
                    Start::Bias => _mm512_loadu_ps(epilogue.bias.as_ptr().add(v * LANES)),
                    Start::Partial(sums) => _mm512_loadu_ps(sums.add((2 * j + v) * LANES)),
                }
            };
        }
    }
    for range in taps {
        for kk in range.clone() {
            // SAFETY: kk < k: the offset, the panels' row kk and the columns' values are in
            // bounds by the caller's contract.
            unsafe {
                let p = source.src.add(*source.offsets.add(kk));
                let mut w = [_mm512_setzero_ps(); V];
                for (v, w) in w.iter_mut().enumerate() {
                    *w = _mm512_loadu_ps(panels.add(v * k * LANES + kk * LANES));
                }
                for (j, column) in acc.iter_mut().enumerate() {
                    let b = _mm512_set1_ps(*p.add(j * S));
                    for v in 0..V {
                        column[v] = _mm512_fmadd_ps(w[v], b, column[v]);
                    }
                }
            }
        }
    }
    match finish {
        Finish::Partial(sums) => {
            for (j, column) in acc.iter().enumerate() {
                for (v, lane) in column.iter().enumerate() {
                    // SAFETY: partial sums hold NC·2·LANES values (caller's contract).
                    unsafe { _mm512_storeu_ps(sums.add((2 * j + v) * LANES), *lane) };
                }
            }
        }
        Finish::Store(destination) => {
            // The epilogue is applied here, not in `store`: were `acc`'s address passed to a
            // function the compiler does not inline, it would keep the accumulators in memory
            // and store all of them on every tap of the loop above (by perf, 2026-12-05: the
            // kernel ran at half speed).
            let zero = _mm512_setzero_ps();
            let mut block = [[0.0f32; 2 * LANES]; NC];
            for (j, column) in acc.iter().enumerate() {
                for (v, &lane) in column.iter().enumerate() {
                    let x = match epilogue.kind {
                        EpilogueKind::None => lane,
                        // max(v, 0) returns 0 for NaN, as f32::max does.
                        EpilogueKind::Relu => _mm512_max_ps(lane, zero),
                        EpilogueKind::Slope => {
                            let negative = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(lane, zero);
                            // SAFETY: slopes holds 2·LANES values, v < V ≤ 2.
                            let slopes = unsafe { _mm512_loadu_ps(epilogue.slopes.as_ptr().add(v * LANES)) };
                            _mm512_mask_mul_ps(lane, negative, lane, slopes)
                        }
                    };
                    // SAFETY: block[j] holds 2·LANES floats and v < V ≤ 2.
                    unsafe { _mm512_storeu_ps(block[j].as_mut_ptr().add(v * LANES), x) };
                }
            }
            // SAFETY: caller's contract.
            unsafe { store::<NC>(&block, destination) }
        }
    }
}

/// A 16x16 transpose: lane j of `r[i]` becomes lane i of the result's vector j.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn transpose(r: [std::arch::x86_64::__m512; 16]) -> [std::arch::x86_64::__m512; 16] {
    use std::arch::x86_64::*;
    let (pd, ps) = (_mm512_castps_pd, _mm512_castpd_ps);
    // Pairs of rows interleaved, then pairs of pairs: t[4q + c] holds, in 128-bit lane l, the
    // values of rows 4q..4q+4 at column 4l + c.
    let mut u = [_mm512_setzero_ps(); 16];
    for i in 0..8 {
        u[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        u[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    let mut t = [_mm512_setzero_ps(); 16];
    for q in 0..4 {
        let [a, b, c, d] = [u[4 * q], u[4 * q + 1], u[4 * q + 2], u[4 * q + 3]];
        t[4 * q] = ps(_mm512_unpacklo_pd(pd(a), pd(c)));
        t[4 * q + 1] = ps(_mm512_unpackhi_pd(pd(a), pd(c)));
        t[4 * q + 2] = ps(_mm512_unpacklo_pd(pd(b), pd(d)));
        t[4 * q + 3] = ps(_mm512_unpackhi_pd(pd(b), pd(d)));
    }
    // Then the 128-bit lanes: result j = 4l + c takes lane l of t[c], t[4 + c], t[8 + c] and
    // t[12 + c].
    let mut h = [_mm512_setzero_ps(); 16];
    for c in 0..4 {
        h[c] = _mm512_shuffle_f32x4::<0x88>(t[c], t[4 + c]);
        h[4 + c] = _mm512_shuffle_f32x4::<0xdd>(t[c], t[4 + c]);
        h[8 + c] = _mm512_shuffle_f32x4::<0x88>(t[8 + c], t[12 + c]);
        h[12 + c] = _mm512_shuffle_f32x4::<0xdd>(t[8 + c], t[12 + c]);
    }
    let mut out = [_mm512_setzero_ps(); 16];
    for c in 0..4 {
        out[c] = _mm512_shuffle_f32x4::<0x88>(h[c], h[8 + c]);
        out[4 + c] = _mm512_shuffle_f32x4::<0x88>(h[4 + c], h[12 + c]);
        out[8 + c] = _mm512_shuffle_f32x4::<0xdd>(h[c], h[8 + c]);
        out[12 + c] = _mm512_shuffle_f32x4::<0xdd>(h[4 + c], h[12 + c]);
    }
    out
}

/// Writes a block's values (`[NC][2·LANES]`, channels of each column), channel by channel.
#[target_feature(enable = "avx512f")]
unsafe fn store<const NC: usize>(block: &[[f32; 2 * LANES]; NC], destination: &Destination) {
    use std::arch::x86_64::*;
    match *destination {
        Destination::Contiguous { base, stride, rows } => {
            // Channel r of every column, one row of the output: each half of the block (16
            // channels of NC columns) transposed in registers. Gathering each channel's lanes
            // instead (`vgatherdps`, 32 per block) cost as much as the multiply-adds of a conv
            // of few taps on AMD's Zen 4, whose gathers are slow: FaceNet's first conv (27 taps)
            // spent 26% of its time in this function and 32% in `block` (perf, 2026-12-05).
            let mask = super::kernel::first_lanes(NC as isize);
            for first in (0..rows).step_by(LANES) {
                let mut columns = [_mm512_setzero_ps(); LANES];
                for (column, values) in columns.iter_mut().zip(block) {
                    // SAFETY: first + LANES ≤ 2·LANES values of the column.
                    *column = unsafe { _mm512_loadu_ps(values.as_ptr().add(first)) };
                }
                // SAFETY: AVX-512F, which this function is compiled for.
                let channels = unsafe { transpose(columns) };
                for (r, channel) in channels.iter().enumerate().take(rows - first) {
                    // SAFETY: lanes j < NC of channel first + r are this block's to write
                    // (caller's contract).
                    unsafe { _mm512_mask_storeu_ps(base.add((first + r) * stride), mask, *channel) };
                }
            }
        }
        Destination::Scattered { columns, stride, rows } => {
            for (column, values) in columns[..NC].iter().zip(block) {
                for (r, &value) in values[..rows].iter().enumerate() {
                    // SAFETY: caller's contract: columns[j] + r·stride is this block's to write.
                    unsafe { *column.add(r * stride) = value };
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transpose_makes_rows_columns() {
        if !std::arch::is_x86_feature_detected!("avx512f") {
            return;
        }
        use std::arch::x86_64::*;
        let values: Vec<f32> = (0..256).map(|i| i as f32).collect();
        // SAFETY: AVX-512F is present (checked above); each row reads 16 of the 256 values.
        let rows: [__m512; 16] =
            std::array::from_fn(|i| unsafe { _mm512_loadu_ps(values[16 * i..].as_ptr()) });
        // SAFETY: as above.
        let columns = unsafe { transpose(rows) };
        for (j, column) in columns.iter().enumerate() {
            let mut lanes = [0.0f32; 16];
            // SAFETY: 16 floats into `lanes`.
            unsafe { _mm512_storeu_ps(lanes.as_mut_ptr(), *column) };
            let expected: Vec<f32> = (0..16).map(|i| values[16 * i + j]).collect();
            assert_eq!(lanes.to_vec(), expected, "column {j}");
        }
    }
}
