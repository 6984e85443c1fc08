//! The AVX-512 microkernel of the convolutions: one [MR output channels × NR columns] block of
//! `W·col` per call, its accumulators in registers from the first multiply-add to the store,
//! with the bias as their initial value and the activation applied before the store (no pass
//! over the output besides the one that writes it).
//!
//! The weights are packed once per prepared graph into panels of MR channels, `[k][MR]`, so
//! that the kernel reads them as one contiguous stream; the columns are read in place (the
//! im2col tile, or the input itself for a 1x1 convolution), so nothing is packed per call.
//! The `gemm` crate (the fallback on CPUs without AVX-512) packs both operands on every call
//! and, built without its `nightly` feature, uses AVX2 only: on the conv shapes of these
//! networks (M of 8..256 channels) that cost it half its speed.

use crate::ir::Activation;

/// Output channels per block.
pub const MR: usize = 8;
/// Output columns per block over lowered columns (`conv_batched`, im2col tiles): two 16-lane
/// vectors.
pub const NR: usize = 32;
/// The most output columns a block has: three vectors, the width of the blocks over a 1x1
/// conv's input read in place (`conv::PackedItems`). Per tap, 3 loads of columns
/// and 8 broadcast weights feed 24 multiply-adds (at 32 wide: 2 and 8 feed 16), and a map
/// splits into fewer blocks. FaceNet's block35 1x1 convs (96 -> 256 and 256 -> 32 on 17x17,
/// batch 16, in five blocks cut out of the network): 7.8-8.4 -> 6.8-7.6 ms and 2.3-2.6 ->
/// 2.0-2.3 ms in six alternating pairs (2-core VM, 2026-12-06).
pub const NR_WIDE: usize = 48;

/// Whether this CPU runs the kernel (checked once; the answer is cached by std).
pub fn available() -> bool {
    std::arch::is_x86_feature_detected!("avx512f")
}

/// A conv's weights `[groups·cout_g, k]` (row-major) as panels: group by group, panels of MR
/// channels, each `[k][MR]`; the channels past the last of a group are zeros.
#[derive(Debug)]
pub struct PackedWeights {
    pub data: Vec<f32>,
    /// Panels per group.
    pub panels: usize,
}

impl PackedWeights {
    pub fn new(w: &[f32], groups: usize, cout_g: usize, k: usize) -> Self {
        PackedWeights { data: pack_panels(w, groups, cout_g, k, MR), panels: cout_g.div_ceil(MR) }
    }

    /// Panel `panel` of group `group` (`k` values per channel).
    pub fn panel(&self, group: usize, panel: usize, k: usize) -> &[f32] {
        &self.data[(group * self.panels + panel) * k * MR..][..k * MR]
    }
}

/// Packs `w` ([groups·cout_g, k], row-major) group by group into panels of `width` channels,
/// each `[k][width]`; the channels past the last of a group are zeros.
pub fn pack_panels(w: &[f32], groups: usize, cout_g: usize, k: usize, width: usize) -> Vec<f32> {
    let panels = cout_g.div_ceil(width);
    let mut data = vec![0.0; groups * panels * k * width];
    for group in 0..groups {
        for row in 0..cout_g {
            let (panel, lane) = (row / width, row % width);
            let src = &w[(group * cout_g + row) * k..][..k];
            let dst = &mut data[(group * panels + panel) * k * width..][..k * width];
            for (kk, &v) in src.iter().enumerate() {
                dst[kk * width + lane] = v;
            }
        }
    }
    data
}

/// What the kernel does to a block before storing it.
#[derive(Clone, Copy)]
pub enum Epilogue {
    None,
    Relu,
    /// v < 0 ? v·slope : v, one slope per row (LeakyRelu, PRelu).
    Slope([f32; MR]),
}

impl Epilogue {
    /// The epilogue of `activation` for channels [first, first + rows).
    pub fn of(activation: &Activation, first: usize, rows: usize) -> Epilogue {
        match activation {
            Activation::None => Epilogue::None,
            Activation::Relu => Epilogue::Relu,
            Activation::LeakyRelu(alpha) => Epilogue::Slope([*alpha; MR]),
            Activation::PRelu(slopes) => {
                let mut lanes = [0.0; MR];
                lanes[..rows].copy_from_slice(&slopes.data()[first..first + rows]);
                Epilogue::Slope(lanes)
            }
        }
    }
}

/// Where a block's sums start: at the channels' biases, at the values in `dst`, which an
/// earlier range of the taps left there ([`tap_ranges`]), or at both: the residual that `dst`
/// holds plus the biases (a conv that adds a residual, its first range).
#[derive(Clone, Copy)]
pub enum Start<'a> {
    Bias(&'a [f32; MR]),
    Output,
    OutputAndBias(&'a [f32; MR]),
}

/// The most taps a block runs over in one call, where the column kernel reads its columns
/// in place or from an im2col tile (`conv::PackedItems`). A block reads `k` rows of NR
/// columns, a row stride apart; an 8x8 map's rows are 256 bytes apart, so their lines fall
/// in a quarter of L1's sets, and past about 190 taps they no longer stay in L1 while the
/// block is run for each panel of weights. Split into ranges of at most this many taps, a
/// range's columns stay in L1 over all the panels, the partial sums going through the output
/// in between (an f32 stored and loaded back: the same sums). FaceNet at batch 16 by
/// nn_layers (2-core VM, 2026-12-05, three runs alternating): 159.0-164.7 -> 156.6-159.6 ms,
/// its 8x8 block17 convs most; 256 taps gained half as much. `conv_batched` runs whole
/// blocks: its blocks are packed, and running them range by range was slower there
/// (FaceNet's 3x3-map 1x1 convs 9.1-9.6 -> 11.9-12.1 ms).
pub const TAPS_PER_RANGE: usize = 128;

/// `0..k` in ranges of at most [`TAPS_PER_RANGE`] taps, of about equal length.
/// No taps are one empty range, whose block stores the biases.
pub fn tap_ranges(k: usize) -> impl Iterator<Item = std::ops::Range<usize>> {
    let ranges = k.div_ceil(TAPS_PER_RANGE).max(1);
    let len = k.div_ceil(ranges).max(1);
    (0..k.max(1)).step_by(len).map(move |start| start..(start + len).min(k))
}

/// One block: `dst[r][c] = epilogue(start[r][c] + Σ_k panel[k][r]·col[k·col_stride + c])` for
/// rows r < `rows` (≤ R ≤ MR) and columns c < `cols` (≤ [`NR_WIDE`]), where `start` is the
/// bias or what `dst` holds. R is the number of rows computed: a conv with fewer output
/// channels than MR (1 for MMOD's last layer) runs on fewer multiply-adds per value; a block
/// runs on as few vectors of 16 columns as hold `cols` ([`block_of`]).
///
/// With `fetch`, each row of columns is fetched into L1 [`FETCH_AHEAD`] taps before it is
/// read: for the first panel run over columns read in place (a 1x1 conv's input), which come
/// from L3 or memory a row a plane apart (1156 bytes on a 17x17 map), more rows at once than
/// the hardware's prefetchers follow. The panels after it find the rows in L1.
///
/// # Safety
/// The CPU has AVX-512F ([`available`]); `panel` holds `k·MR` values; `col` points at `k` rows
/// of at least `cols` readable values each, `col_stride` apart; `dst` at `rows` rows of `cols`
/// writable (and, from [`Start::Output`], initialized) values, `dst_stride` apart, that
/// nothing else accesses meanwhile.
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
pub unsafe fn block<const R: usize>(
    k: usize,
    panel: &[f32],
    col: *const f32,
    col_stride: usize,
    cols: usize,
    start: Start,
    epilogue: Epilogue,
    rows: usize,
    dst: *mut f32,
    dst_stride: usize,
    fetch: bool,
) {
    debug_assert!(panel.len() >= k * MR && rows <= R && R <= MR && cols <= NR_WIDE);
    let (c, s) = (col_stride, dst_stride);
    // SAFETY (all six): caller's contract.
    unsafe {
        match (cols.div_ceil(16), fetch) {
            (..=1, false) => block_of::<R, 1, false>(k, panel, col, c, cols, start, epilogue, rows, dst, s),
            (2, false) => block_of::<R, 2, false>(k, panel, col, c, cols, start, epilogue, rows, dst, s),
            (_, false) => block_of::<R, 3, false>(k, panel, col, c, cols, start, epilogue, rows, dst, s),
            (..=1, true) => block_of::<R, 1, true>(k, panel, col, c, cols, start, epilogue, rows, dst, s),
            (2, true) => block_of::<R, 2, true>(k, panel, col, c, cols, start, epilogue, rows, dst, s),
            (_, true) => block_of::<R, 3, true>(k, panel, col, c, cols, start, epilogue, rows, dst, s),
        }
    }
}

/// How many taps ahead [`block`] fetches a row of columns.
const FETCH_AHEAD: usize = 16;

/// [`block`] on V vectors of columns: a block of at most 16 columns (a Winograd product over
/// the 16 tiles of an 8x8 map, the last column of a 17x17 one) on one, at a third of the
/// multiply-adds of three, the same sums.
///
/// # Safety
/// As for [`block`], with `cols` ≤ 16·V.
#[target_feature(enable = "avx512f")]
#[inline]
#[allow(clippy::too_many_arguments)]
unsafe fn block_of<const R: usize, const V: usize, const FETCH: bool>(
    k: usize,
    panel: &[f32],
    col: *const f32,
    col_stride: usize,
    cols: usize,
    start: Start,
    epilogue: Epilogue,
    rows: usize,
    dst: *mut f32,
    dst_stride: usize,
) {
    use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
    let masks = vector_masks::<V>(cols);
    let mut acc = match start {
        Start::Bias(bias) => biased::<R, V>(bias),
        // SAFETY: the first `cols` values of rows r < `rows` are initialized (caller's contract).
        Start::Output => unsafe { loaded::<R, V>(rows, dst, dst_stride, masks) },
        Start::OutputAndBias(bias) => {
            // SAFETY: as above.
            use std::arch::x86_64::{_mm512_add_ps, _mm512_set1_ps};
            let mut acc = unsafe { loaded::<R, V>(rows, dst, dst_stride, masks) };
            for (row, &b) in acc.iter_mut().zip(bias) {
                row.iter_mut().for_each(|lanes| *lanes = _mm512_add_ps(*lanes, _mm512_set1_ps(b)));
            }
            acc
        }
    };
    let w = panel.as_ptr();
    for kk in 0..k {
        if FETCH {
            // A prefetch never faults, wherever it points.
            let ahead = col.wrapping_add((kk + FETCH_AHEAD) * col_stride) as *const i8;
            for line in 0..V {
                _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(64 * line));
            }
            // The row's last value: rows need not start on a line.
            _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(64 * V - 4));
        }
        // Masked lanes are neither read nor faulted on, so a short last block of a 1x1
        // convolution's input never reads past its end. `wrapping_add`: the address of the
        // masked-off second half may lie past the allocation.
        // SAFETY: the first `cols` values of row kk are readable (caller's contract), the
        // masks cover only those; kk·MR + MR ≤ k·MR ≤ panel.len().
        unsafe { multiply_add(&mut acc, col.wrapping_add(kk * col_stride), masks, w.add(kk * MR)) };
    }
    // SAFETY: caller's contract.
    unsafe { store(&mut acc, epilogue, rows, masks, dst, dst_stride) };
}

/// The masks of the first `n` lanes of V vectors.
#[inline]
pub fn vector_masks<const V: usize>(n: usize) -> [std::arch::x86_64::__mmask16; V] {
    std::array::from_fn(|v| first_lanes(n as isize - 16 * v as isize))
}

/// The mask of the first `n` of a vector's 16 lanes (none for n ≤ 0).
#[inline]
pub fn first_lanes(n: isize) -> std::arch::x86_64::__mmask16 {
    match n {
        ..=0 => 0,
        16.. => 0xffff,
        _ => ((1u32 << n) - 1) as std::arch::x86_64::__mmask16,
    }
}

/// A block's accumulators, each row starting at its channel's bias.
#[target_feature(enable = "avx512f")]
#[inline]
fn biased<const R: usize, const V: usize>(bias: &[f32; MR]) -> [[std::arch::x86_64::__m512; V]; R] {
    std::array::from_fn(|r| [std::arch::x86_64::_mm512_set1_ps(bias[r]); V])
}

/// A block's accumulators loaded from the first `rows` rows of `dst` (the lanes in the masks;
/// zeros elsewhere and in the rows past them).
///
/// # Safety
/// The CPU has AVX-512F; the masked lanes of rows r < `rows` from `dst + r·dst_stride` on are
/// readable.
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn loaded<const R: usize, const V: usize>(
    rows: usize,
    dst: *const f32,
    dst_stride: usize,
    masks: [std::arch::x86_64::__mmask16; V],
) -> [[std::arch::x86_64::__m512; V]; R] {
    use std::arch::x86_64::*;
    std::array::from_fn(|r| {
        if r >= rows {
            return [_mm512_setzero_ps(); V];
        }
        let d = dst.wrapping_add(r * dst_stride);
        // SAFETY: caller's contract; `wrapping_add`: a masked-off second half may lie past the
        // allocation.
        std::array::from_fn(|v| unsafe { _mm512_maskz_loadu_ps(masks[v], d.wrapping_add(16 * v)) })
    })
}

/// One tap of a block: `acc[r] += weights[r] · columns` for the 16·V values at `c` (the lanes
/// in `masks` read, the others zero).
///
/// # Safety
/// The CPU has AVX-512F; the masked lanes from `c` on are readable; `weights` holds R values.
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn multiply_add<const R: usize, const V: usize>(
    acc: &mut [[std::arch::x86_64::__m512; V]; R],
    c: *const f32,
    masks: [std::arch::x86_64::__mmask16; V],
    weights: *const f32,
) {
    use std::arch::x86_64::*;
    // Masked lanes are neither read nor faulted on; `wrapping_add`: the address of a
    // masked-off second half may lie past the allocation.
    // SAFETY: caller's contract.
    let columns: [__m512; V] =
        std::array::from_fn(|v| unsafe { _mm512_maskz_loadu_ps(masks[v], c.wrapping_add(16 * v)) });
    for (r, row) in acc.iter_mut().enumerate() {
        // SAFETY: r < R (caller's contract).
        let b = _mm512_set1_ps(unsafe { *weights.add(r) });
        for (lanes, &column) in row.iter_mut().zip(&columns) {
            *lanes = _mm512_fmadd_ps(b, column, *lanes);
        }
    }
}

/// Applies `epilogue` to the first `rows` rows of a block and stores their lanes in `masks`.
///
/// # Safety
/// As for [`block`]'s `dst`.
#[target_feature(enable = "avx512f")]
unsafe fn store<const R: usize, const V: usize>(
    acc: &mut [[std::arch::x86_64::__m512; V]; R],
    epilogue: Epilogue,
    rows: usize,
    masks: [std::arch::x86_64::__mmask16; V],
    dst: *mut f32,
    dst_stride: usize,
) {
    use std::arch::x86_64::*;
    for (r, row) in acc.iter_mut().enumerate().take(rows) {
        apply(row, epilogue, r);
        let d = dst.wrapping_add(r * dst_stride);
        for (v, lanes) in row.iter().enumerate() {
            // SAFETY: the masked values of row r are this call's to write (caller's contract).
            unsafe { _mm512_mask_storeu_ps(d.wrapping_add(16 * v), masks[v], *lanes) };
        }
    }
}

/// Applies `epilogue` to row `r` of a block.
#[target_feature(enable = "avx512f")]
fn apply<const V: usize>(row: &mut [std::arch::x86_64::__m512; V], epilogue: Epilogue, r: usize) {
    use std::arch::x86_64::*;
    let zero = _mm512_setzero_ps();
    for v in row.iter_mut() {
        *v = match epilogue {
            Epilogue::None => *v,
            // max(v, 0) returns 0 for NaN, as f32::max does.
            Epilogue::Relu => _mm512_max_ps(*v, zero),
            Epilogue::Slope(slopes) => {
                let negative = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(*v, zero);
                _mm512_mask_mul_ps(*v, negative, *v, _mm512_set1_ps(slopes[r]))
            }
        };
    }
}

/// The most runs of lanes ([`Spans`]) a block of NR lanes splits into: rows of the flat
/// layout at least [`FLAT_MIN_ROW`] wide.
pub const MAX_SPANS: usize = NR / FLAT_MIN_ROW + 2;
/// The narrowest padded row [`block_flat`] is used on.
pub const FLAT_MIN_ROW: usize = 8;

/// Where the lanes of a [`block_flat`] block go: runs of consecutive lanes that fall inside one
/// output row, each as its lanes (bit l for lane l) and the offset, from the first row's plane,
/// at which lane 0 would be written (lane l of the run at `offset + l`). Lanes in no run (the
/// padded layout's columns past the output's width) are computed and dropped.
#[derive(Clone, Copy)]
pub struct Spans {
    pub runs: [(u32, isize); MAX_SPANS],
    pub count: usize,
}

impl Spans {
    /// The runs of the block of flat positions [q0, q0 + lanes) (lanes ≤ NR), where flat
    /// position q is output (q / row, q % row) and columns at or past `width` are dropped.
    pub fn new(q0: usize, lanes: usize, row: usize, width: usize) -> Self {
        debug_assert!(lanes <= NR && width <= row && row >= FLAT_MIN_ROW);
        let mut spans = Spans { runs: [(0, 0); MAX_SPANS], count: 0 };
        let (end, mut q) = (q0 + lanes, q0);
        while q < end {
            let (oy, ox) = (q / row, q % row);
            if ox >= width {
                q = (oy + 1) * row;
                continue;
            }
            let run = (width - ox).min(end - q);
            let lane = q - q0;
            let bits = (((1u64 << (lane + run)) - 1) & !((1u64 << lane) - 1)) as u32;
            spans.runs[spans.count] = (bits, (oy * width + ox) as isize - lane as isize);
            spans.count += 1;
            q += run;
        }
        spans
    }
}

/// [`block`] for a stride-1 convolution over a padded input whose rows are laid end to end:
/// output position q (= oy·row + ox in the padded row width) reads tap kk at
/// `src + q + taps[kk]`, so the NR lanes of a block are contiguous for every tap even when
/// they span output rows. `lanes` (≤ NR) lanes are read from `src` on; `spans` says which
/// are stored, and where, from `dst` on.
///
/// # Safety
/// The CPU has AVX-512F; `taps` and `panel` hold `k` offsets and `k·MR` values; `src +
/// taps[kk] + l` is readable for every tap and lane l < `lanes`; every run of `spans` is
/// writable at `dst + offset + l + r·dst_stride` for its lanes l and rows r < `rows`, and
/// accessed by nothing else meanwhile.
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
pub unsafe fn block_flat<const R: usize>(
    taps: &[usize],
    src: *const f32,
    lanes: usize,
    panel: &[f32],
    bias: &[f32; MR],
    epilogue: Epilogue,
    rows: usize,
    spans: &Spans,
    dst: *mut f32,
    dst_stride: usize,
) {
    use std::arch::x86_64::*;
    let k = taps.len();
    debug_assert!(panel.len() >= k * MR && rows <= R && R <= MR && lanes <= NR);
    let masks = vector_masks::<2>(lanes);
    let mut acc = biased::<R, 2>(bias);
    let w = panel.as_ptr();
    for (kk, &tap) in taps.iter().enumerate() {
        // SAFETY: the first `lanes` values from src + tap on are readable (caller's contract),
        // the masks cover only those; kk·MR + MR ≤ k·MR ≤ panel.len().
        unsafe { multiply_add(&mut acc, src.wrapping_add(tap), masks, w.add(kk * MR)) };
    }
    for (r, row) in acc.iter_mut().enumerate().take(rows) {
        apply(row, epilogue, r);
        for &(bits, offset) in &spans.runs[..spans.count] {
            // `wrapping_offset`: lane 0's address may lie before the output (masked off).
            let d = dst.wrapping_offset(offset).wrapping_add(r * dst_stride);
            // SAFETY: the run's lanes are this call's to write (caller's contract).
            unsafe {
                _mm512_mask_storeu_ps(d, bits as u16, row[0]);
                _mm512_mask_storeu_ps(d.wrapping_add(16), (bits >> 16) as u16, row[1]);
            }
        }
    }
}
