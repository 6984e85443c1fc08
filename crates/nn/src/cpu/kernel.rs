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
/// Output columns per block: two 16-lane vectors.
pub const NR: usize = 32;

/// Whether this CPU runs the kernel (checked once; the answer is cached by std).
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
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

/// One block: `dst[r][c] = epilogue(bias[r] + Σ_k panel[k][r]·col[k·col_stride + c])` for
/// rows r < `rows` (≤ R ≤ MR) and columns c < `cols` (≤ NR). R is the number of rows computed:
/// a conv with fewer output channels than MR (1 for MMOD's last layer) runs on fewer
/// multiply-adds per value.
///
/// # Safety
/// The CPU has AVX-512F ([`available`]); `panel` holds `k·MR` values; `col` points at `k` rows
/// of at least `cols` readable values each, `col_stride` apart; `dst` at `rows` rows of `cols`
/// writable values, `dst_stride` apart, that nothing else accesses meanwhile.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
pub unsafe fn block<const R: usize>(
    k: usize,
    panel: &[f32],
    col: *const f32,
    col_stride: usize,
    cols: usize,
    bias: &[f32; MR],
    epilogue: Epilogue,
    rows: usize,
    dst: *mut f32,
    dst_stride: usize,
) {
    use std::arch::x86_64::*;
    debug_assert!(panel.len() >= k * MR && rows <= R && R <= MR && cols <= NR);
    let lanes = |n: usize| -> __mmask16 { if n >= 16 { 0xffff } else { (1u16 << n) - 1 } };
    let (mask0, mask1) = (lanes(cols), lanes(cols.saturating_sub(16)));
    let mut acc = [[_mm512_setzero_ps(); 2]; R];
    for (r, row) in acc.iter_mut().enumerate() {
        *row = [_mm512_set1_ps(bias[r]); 2];
    }
    let w = panel.as_ptr();
    for kk in 0..k {
        // Masked lanes are neither read nor faulted on, so a short last block of a 1x1
        // convolution's input never reads past its end. `wrapping_add`: the address of the
        // masked-off second half may lie past the allocation.
        let c = col.wrapping_add(kk * col_stride);
        // SAFETY: the first `cols` values of row kk are readable (caller's contract); the
        // masks cover only those.
        let (c0, c1) =
            unsafe { (_mm512_maskz_loadu_ps(mask0, c), _mm512_maskz_loadu_ps(mask1, c.wrapping_add(16))) };
        for (r, row) in acc.iter_mut().enumerate() {
            // SAFETY: kk·MR + r < k·MR ≤ panel.len().
            let b = _mm512_set1_ps(unsafe { *w.add(kk * MR + r) });
            row[0] = _mm512_fmadd_ps(b, c0, row[0]);
            row[1] = _mm512_fmadd_ps(b, c1, row[1]);
        }
    }
    // SAFETY: caller's contract.
    unsafe { store(&mut acc, epilogue, rows, cols, dst, dst_stride) };
}

/// Applies `epilogue` to the first `rows` rows of a block and stores their first `cols` values.
///
/// # Safety
/// As for [`block`]'s `dst`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn store<const R: usize>(
    acc: &mut [[std::arch::x86_64::__m512; 2]; R],
    epilogue: Epilogue,
    rows: usize,
    cols: usize,
    dst: *mut f32,
    dst_stride: usize,
) {
    use std::arch::x86_64::*;
    let lanes = |n: usize| -> __mmask16 { if n >= 16 { 0xffff } else { (1u16 << n) - 1 } };
    let (mask0, mask1) = (lanes(cols), lanes(cols.saturating_sub(16)));
    let zero = _mm512_setzero_ps();
    for (r, row) in acc.iter_mut().enumerate().take(rows) {
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
        let d = dst.wrapping_add(r * dst_stride);
        // SAFETY: the first `cols` values of row r are this call's to write (caller's contract).
        unsafe {
            _mm512_mask_storeu_ps(d, mask0, row[0]);
            _mm512_mask_storeu_ps(d.wrapping_add(16), mask1, row[1]);
        }
    }
}

/// The geometry of a stride-1, dilation-1 convolution over one group's input planes, for
/// [`block_direct`].
#[derive(Clone, Copy)]
pub struct DirectGeometry {
    pub channels: usize,
    pub kernel: [usize; 2],
    pub in_hw: [usize; 2],
    /// Top and left padding.
    pub pads: [usize; 2],
}

/// [`block`] without im2col, for a stride-1 convolution: the `cols` (≤ NR) outputs of row
/// `oy` from column `ox0` on read, for each kernel tap, `cols` consecutive input values of
/// one input row; lanes that fall into the padding are masked off (never read, counted as
/// zero), and taps whose whole input row is padding are skipped.
///
/// # Safety
/// The CPU has AVX-512F; `input` points at `geometry.channels` planes of `in_hw` values;
/// `panel` holds `channels·kh·kw·MR` values; `oy`/`ox0 + cols` lie inside the output; `dst` as
/// for [`block`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
pub unsafe fn block_direct<const R: usize>(
    geometry: &DirectGeometry,
    input: *const f32,
    oy: usize,
    ox0: usize,
    cols: usize,
    panel: &[f32],
    bias: &[f32; MR],
    epilogue: Epilogue,
    rows: usize,
    dst: *mut f32,
    dst_stride: usize,
) {
    use std::arch::x86_64::*;
    let DirectGeometry { channels, kernel: [kh, kw], in_hw: [h, w], pads: [pt, pl] } = *geometry;
    debug_assert!(panel.len() >= channels * kh * kw * MR && rows <= R && R <= MR && cols <= NR && kw <= 16);
    // Per kernel column: the lanes whose input column lies inside the row.
    let mut masks = [(0u16, 0u16); 16];
    for (kx, mask) in masks.iter_mut().enumerate().take(kw) {
        let ix0 = ox0 as isize + kx as isize - pl as isize;
        let lo = (-ix0).clamp(0, cols as isize) as u32;
        let hi = (w as isize - ix0).clamp(lo as isize, cols as isize) as u32;
        let bits = (((1u64 << hi) - 1) & !((1u64 << lo) - 1)) as u32;
        *mask = (bits as u16, (bits >> 16) as u16);
    }
    let mut acc = [[_mm512_setzero_ps(); 2]; R];
    for (r, row) in acc.iter_mut().enumerate() {
        *row = [_mm512_set1_ps(bias[r]); 2];
    }
    let wp = panel.as_ptr();
    let mut kk = 0;
    for c in 0..channels {
        for ky in 0..kh {
            let iy = (oy + ky) as isize - pt as isize;
            if iy < 0 || iy >= h as isize {
                kk += kw;
                continue;
            }
            let line = input.wrapping_add(c * h * w + iy as usize * w);
            for (kx, &(mask0, mask1)) in masks[..kw].iter().enumerate() {
                let src = line.wrapping_offset(ox0 as isize + kx as isize - pl as isize);
                // SAFETY: the masks select only lanes inside input row iy of plane c.
                let (c0, c1) = unsafe {
                    (_mm512_maskz_loadu_ps(mask0, src), _mm512_maskz_loadu_ps(mask1, src.wrapping_add(16)))
                };
                for (r, row) in acc.iter_mut().enumerate() {
                    // SAFETY: kk·MR + r < channels·kh·kw·MR ≤ panel.len().
                    let b = _mm512_set1_ps(unsafe { *wp.add(kk * MR + r) });
                    row[0] = _mm512_fmadd_ps(b, c0, row[0]);
                    row[1] = _mm512_fmadd_ps(b, c1, row[1]);
                }
                kk += 1;
            }
        }
    }
    // SAFETY: as for `block` (caller's contract).
    unsafe { store(&mut acc, epilogue, rows, cols, dst, dst_stride) };
}
