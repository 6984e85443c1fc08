//! 3x3 stride-1 convolutions by Winograd's minimal filtering F(2x2, 3x3) (Lavin and Gray,
//! "Fast Algorithms for Convolutional Neural Networks", 2016), on the column kernel.
//!
//! Each 2x2 tile of the output is computed from a 4x4 tile `d` of the padded input as
//! `Y = Aᵀ [Σ_c U_c ⊙ V_c] A`, with `V = Bᵀ d B` (sums and differences of the tile's values)
//! and `U = G g Gᵀ` (the filter, transformed once when the weights are packed). The sum over
//! the input channels is, for each of the 16 transform positions, one matrix product
//! `M = U·V` ([cout × cin] by [cin × tiles]) on the column kernel: 16·cin·cout multiply-adds
//! per tile against 36·cin·cout for the direct conv, 2.25 times fewer. The results differ
//! from the direct conv's by rounding only (the transforms' ½ factors are exact in binary):
//! against onnxruntime, 9.1e-7 of the output's range on dlib-resnet-128 at batch 16 and
//! 7.6e-7 on FaceNet (`scripts/bench-nn`), as on the other kernels.
//!
//! Work is split into items, each a range of tile rows counted across the images of the
//! batch (so that the small maps of a batch make products long enough): each item transforms
//! its tiles' inputs into `V`, runs the 16 products into `M` and transforms `M` into its
//! output rows, in a scratch buffer of its thread sized to stay in L2; where the ranges are
//! fewer than two per thread (a small batch), each is shared out by output channels. The
//! transforms run over 16 tiles of a tile row at a time, one vector lane per tile.
//!
//! By `nn_layers` at batch 16 (2-core VM, 2026-12-05, three runs alternating with the
//! other kernels): dlib-resnet-128's 8x8 convs (128 channels) 0.82-0.86 -> 0.52-0.55 ms, its
//! 17x17 ones (64) 0.90-0.96 -> 0.77-0.84, its 72x72 one 2.51 -> 2.38; FaceNet's 80 -> 192
//! conv on 36x36 14.9 -> 10.6 ms, its 32 -> 64 on 77x77 11.7 -> 9.8. [`suits`] says where it
//! was not faster.

use std::arch::x86_64::*;

use super::conv::{ConvJob, by_rows};
use super::conv_channels::Padded;
use super::for_each_item;
use super::kernel::{self, MR, NR, PackedWeights, first_lanes};
use crate::Deadline;
use crate::ir::{Activation, Conv};
use crate::shape::ConvGeometry;

/// Transform positions: the 4x4 tile of Winograd's domain.
const POSITIONS: usize = 16;
/// The values an item's scratch (`V` and `M`) is planned for: 1 MiB, inside L2. More is
/// allocated where an item's tiles are few: its rows are rounded up to 16 values, so at most
/// 4 times this (one row of 4 tiles, which [`suits`] bounds to this plan).
const SCRATCH_VALUES: usize = 256 * 1024;

/// Whether a conv runs here: a 3x3 kernel at stride 1, no dilation, one group, at least 16
/// input and 16 output channels, on a map of at least [`MIN_MAP`] a side, one tile row of
/// which fits the scratch (which bounds the scratch), where the transforms cost little
/// beside the products ([`transforms_pay`]).
///
/// The answer depends on the conv's shape (and the CPU's vendor, [`share_limit`]) alone,
/// never on the batch: the other kernels all sum the bias and the taps in one order, so they
/// agree to the bit, while Winograd's sums differ from theirs by rounding. A face's facen must
/// not change with the faces that share its batch (a resumed or restarted run gives the same
/// values as an uninterrupted one).
pub fn suits(conv: &Conv, g: &ConvGeometry, cin_g: usize, cout_g: usize) -> bool {
    let w = &conv.window;
    w.kernel == [3, 3]
        && w.strides == [1, 1]
        && w.dilations == [1, 1]
        && conv.group == 1
        && cin_g >= 16
        && cout_g >= 16
        && g.out_hw[0] >= MIN_MAP
        && g.out_hw[1] >= MIN_MAP
        && POSITIONS * (cin_g + cout_g) * g.out_hw[1].div_ceil(2) <= SCRATCH_VALUES
        && transforms_pay(cin_g, cout_g, g.out_hw[1].div_ceil(2))
}

/// The smallest output side Winograd runs on: on 4x4 maps (dlib-resnet-128's, 256 channels,
/// batch 16) it was no faster than the column kernel.
const MIN_MAP: usize = 8;

/// Whether the transforms cost little enough beside the 16 products. Per tile, the products
/// take 16·cin·cout multiply-adds and the transforms about 16·(cin + cout) operations, in
/// vectors of 16 tiles of a tile row (a row of 18 tiles fills 2 vectors to 56%): their share
/// is (1/cin + 1/cout) / fill, and Winograd runs where it is at most 1/[`share_limit`].
fn transforms_pay(cin: usize, cout: usize, tiles_x: usize) -> bool {
    let lanes = tiles_x.div_ceil(16) * 16;
    share_limit() * (cin + cout) * lanes <= cin * cout * tiles_x
}

/// The largest share of the transforms, as 1/n, at which Winograd is faster than the direct
/// kernels; measured by nn_layers at batch 16 on two 2-core VMs (2026-12-05), 32 -> 32 channels
/// being the case that tells them apart (share 1/9 on 35x35 and on 17x17 maps):
/// - Intel Xeon: faster at shares up to 1/12 (32 -> 32 on 72x72 maps: 2.46 -> 2.24 ms, on
///   77x77: 6.0 -> 5.5) and 5-20% slower at 1/9;
/// - AMD EPYC (Zen 4, whose AVX-512 multiply-adds issue as two 256-bit halves): at 1/9,
///   25-30% faster (dlib-resnet-128's 35x35 convs 1.91-2.22 -> 1.37-1.66 ms, FaceNet's on
///   17x17 0.51 -> 0.40).
///
/// Fixed per machine (by the CPU's vendor), so a conv takes the same path in every run there:
/// a facen does not change between runs, only, in its last bits, from one kind of CPU to
/// another, as it does with or without AVX-512.
fn share_limit() -> usize {
    static LIMIT: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *LIMIT.get_or_init(|| {
        // SAFETY: CPUID leaf 0 (the vendor string) exists on every x86-64 CPU.
        #[allow(unused_unsafe)]
        let id = unsafe { __cpuid(0) };
        let amd = [id.ebx, id.edx, id.ecx] == [0x6874_7541, 0x6974_6e65, 0x444d_4163]; // "AuthenticAMD"
        if amd { 9 } else { 12 }
    })
}

/// A conv's 16 transformed filters `U`, each packed for the column kernel as a [cout × cin]
/// matrix.
#[derive(Debug)]
pub struct WinogradWeights {
    positions: Vec<PackedWeights>,
}

impl WinogradWeights {
    /// From `w`, [cout, cin, 3, 3] row-major: `U = G g Gᵀ`, G = [[1, 0, 0], [½, ½, ½],
    /// [½, -½, ½], [0, 0, 1]].
    pub fn new(w: &[f32], cout: usize, cin: usize) -> Self {
        let mut u = vec![vec![0.0f32; cout * cin]; POSITIONS];
        let transform = |a: f32, b: f32, c: f32| [a, 0.5 * (a + b + c), 0.5 * (a - b + c), c];
        for o in 0..cout {
            for c in 0..cin {
                let g = &w[(o * cin + c) * 9..][..9];
                // G along the kernel's rows, for each of its columns.
                let columns: [[f32; 4]; 3] = std::array::from_fn(|kx| transform(g[kx], g[3 + kx], g[6 + kx]));
                for xi in 0..4 {
                    // G along the columns of row xi.
                    let row = transform(columns[0][xi], columns[1][xi], columns[2][xi]);
                    for (nu, &value) in row.iter().enumerate() {
                        u[xi * 4 + nu][o * cin + c] = value;
                    }
                }
            }
        }
        WinogradWeights { positions: u.iter().map(|m| PackedWeights::new(m, 1, cout, cin)).collect() }
    }
}

thread_local! {
    /// Each worker's `V` and `M`, kept between calls (taken out while an item runs).
    static SCRATCH: std::cell::Cell<Vec<f32>> = const { std::cell::Cell::new(Vec::new()) };
}

/// Computes `job.out` from the padded input. Past `deadline` the items not yet started are
/// skipped, leaving the output incomplete: the caller checks the deadline and discards it.
pub fn conv2d(padded: &Padded, weights: &WinogradWeights, job: ConvJob, deadline: &Deadline) {
    let [oh, ow] = job.g.out_hw;
    let tiles = [oh.div_ceil(2), ow.div_ceil(2)];
    // Items are ranges of the tile rows of all the images, as many as fit the scratch (made a
    // multiple of the threads), of even sizes: rayon hands each thread a contiguous part of
    // the items, and 18 rows as 14 + 4 left one thread of two with three quarters of a batch-1
    // conv (dlib-resnet-128's 35x35 convs ran no faster on two threads than on one). Where
    // they are fewer than the threads, the rows are split further while each thread still
    // gets two column blocks of tiles; past that (small maps at small batches, whose time
    // goes to reading the weights), each range is shared out by output channels, every share
    // transforming the range's inputs and reading only its channels' weights.
    let threads = rayon::current_num_threads();
    let all_rows = job.g.batch * tiles[0];
    let per_row = POSITIONS * (job.cin_g + job.cout_g) * tiles[1];
    let ranges_to_fit = all_rows.div_ceil((SCRATCH_VALUES / per_row).clamp(1, all_rows));
    let ranges = if ranges_to_fit >= threads {
        ranges_to_fit.div_ceil(threads) * threads
    } else if all_rows * tiles[1] >= threads * 2 * NR {
        threads
    } else {
        ranges_to_fit
    };
    let ranges = ranges.min(all_rows);
    let panels = job.cout_g.div_ceil(MR);
    let shares = if ranges >= threads { 1 } else { (2 * threads).div_ceil(ranges).min(panels) };
    let per_share = panels.div_ceil(shares);
    let shares = panels.div_ceil(per_share);
    let plan = Plan { padded, weights, job, tiles };
    for_each_item(ranges * shares, deadline, |item| {
        let (range, share) = (item / shares, item % shares);
        let channels = share * per_share * MR..((share + 1) * per_share * MR).min(plan.job.cout_g);
        // Within a row of each other in size: 9 rows in 4 ranges are 2 + 2 + 2 + 3 (ranges
        // of ceil(9 / 4) = 3 rows would be 3, and one thread of two would take 2 of them).
        plan.run(range * all_rows / ranges..(range + 1) * all_rows / ranges, channels);
    });
}

struct Plan<'a> {
    padded: &'a Padded<'a>,
    weights: &'a WinogradWeights,
    job: ConvJob<'a>,
    /// Tile rows and columns: [ceil(OH / 2), ceil(OW / 2)].
    tiles: [usize; 2],
}

impl Plan<'_> {
    /// The output rows of tile rows `tile_rows`, numbered across the images (image n's tile
    /// row ty is row n·tiles[0] + ty).
    fn run(&self, tile_rows: std::ops::Range<usize>, channels: std::ops::Range<usize>) {
        let (cin, cout) = (self.job.cin_g, self.job.cout_g);
        let at = Layout::new(tile_rows.len() * self.tiles[1]);
        let mut scratch = SCRATCH.take();
        let (v_len, m_len) = (at.position(cin) * POSITIONS, at.position(cout) * POSITIONS);
        // 16 values more, to start V on a cache line.
        if scratch.len() < v_len + m_len + 16 {
            scratch.resize(v_len + m_len + 16, 0.0);
        }
        let skip = scratch.as_ptr().align_offset(64);
        let (v, m) = scratch[skip..skip + v_len + m_len].split_at_mut(v_len);
        // SAFETY: the CPU has AVX-512F (the weights were packed for the column kernel, which
        // is only done where it runs); the buffers hold V and M as `at` lays them out.
        unsafe {
            self.transform_input(tile_rows.clone(), &at, v);
            self.multiply(v, m, &at, channels.clone());
            self.transform_output(tile_rows, &at, m, channels);
        }
        SCRATCH.set(scratch);
    }

    /// `V[p][c][t] = (Bᵀ d B)[p]` for the 4x4 input tile d of channel c under tile t: for
    /// each group of 16 tiles along a tile row (its masks the same for every channel), channel
    /// by channel, down the item's tile rows.
    #[target_feature(enable = "avx512f")]
    unsafe fn transform_input(&self, tile_rows: std::ops::Range<usize>, at: &Layout, v: &mut [f32]) {
        let cin = self.job.cin_g;
        let [hp, wp] = self.padded.hw;
        let position = at.position(cin);
        let plane = self.padded.plane_len();
        let data = self.padded.data.as_ptr();
        let even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
        let odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
        let v = v.as_mut_ptr();
        // The row transform (Bᵀ along x) of input row y of channel c, for the group of tiles
        // whose first column is x0 (zeros past the padded input: the last tile row of an odd
        // output height reads one row and column past it, which only its dropped outputs use).
        let row_transform = |n: usize, c: usize, y: usize, x0: usize, masks: &[__mmask16; 4]| {
            if y >= hp {
                return [_mm512_setzero_ps(); 4];
            }
            let row = data.wrapping_add((n * cin + c) * plane + y * wp + x0);
            // SAFETY: only lanes inside the padded row are read (the masks); `wrapping_add`: a
            // masked-off load's address may lie past the end.
            let [a, b, a2, b2] = std::array::from_fn(|k| unsafe {
                _mm512_maskz_loadu_ps(masks[k], row.wrapping_add(OFFSETS[k]))
            });
            let d0 = _mm512_permutex2var_ps(a, even, b);
            let d1 = _mm512_permutex2var_ps(a, odd, b);
            let d2 = _mm512_permutex2var_ps(a2, even, b2);
            let d3 = _mm512_permutex2var_ps(a2, odd, b2);
            [_mm512_sub_ps(d0, d2), _mm512_add_ps(d1, d2), _mm512_sub_ps(d2, d1), _mm512_sub_ps(d1, d3)]
        };
        for tx0 in (0..self.tiles[1]).step_by(16) {
            let store = first_lanes((self.tiles[1] - tx0) as isize);
            let x0 = 2 * tx0;
            let left = (wp - x0) as isize;
            let masks = OFFSETS.map(|offset| first_lanes(left - offset as isize));
            for c in 0..cin {
                // An image's tile rows overlap by two input rows: each row is transformed once.
                let mut r = [[_mm512_setzero_ps(); 4]; 4];
                for (row_index, row) in tile_rows.clone().enumerate() {
                    let (n, ty) = (row / self.tiles[0], row % self.tiles[0]);
                    if row_index == 0 || ty == 0 {
                        r[0] = row_transform(n, c, 2 * ty, x0, &masks);
                        r[1] = row_transform(n, c, 2 * ty + 1, x0, &masks);
                    }
                    r[2] = row_transform(n, c, 2 * ty + 2, x0, &masks);
                    r[3] = row_transform(n, c, 2 * ty + 3, x0, &masks);
                    let first = v.wrapping_add(c * at.row + row_index * self.tiles[1] + tx0);
                    // The column transform (Bᵀ along y), column ν of the rows' transforms.
                    let [r0, r1, r2, r3] = r;
                    for (nu, (((&s0, &s1), &s2), &s3)) in r0.iter().zip(&r1).zip(&r2).zip(&r3).enumerate() {
                        let column = [
                            _mm512_sub_ps(s0, s2),
                            _mm512_add_ps(s1, s2),
                            _mm512_sub_ps(s2, s1),
                            _mm512_sub_ps(s1, s3),
                        ];
                        for (xi, &value) in column.iter().enumerate() {
                            // SAFETY: the stored lanes (the group's tiles) lie inside V's row
                            // of position 4ξ + ν, channel c.
                            unsafe {
                                _mm512_mask_storeu_ps(first.add((xi * 4 + nu) * position), store, value)
                            };
                        }
                    }
                    r[0] = r[2];
                    r[1] = r[3];
                }
            }
        }
    }

    /// `M[p] = U[p]·V[p]` for the 16 positions p, on the column kernel.
    #[target_feature(enable = "avx512f")]
    unsafe fn multiply(&self, v: &[f32], m: &mut [f32], at: &Layout, channels: std::ops::Range<usize>) {
        let (cin, cout) = (self.job.cin_g, self.job.cout_g);
        let (t, row) = (at.tiles, at.row);
        let zeros = [0.0; MR];
        for (p, u) in self.weights.positions.iter().enumerate() {
            let vp = v[p * at.position(cin)..].as_ptr();
            let mp = m[p * at.position(cout)..].as_mut_ptr();
            for c0 in (0..t).step_by(NR) {
                let cols = NR.min(t - c0);
                for panel in channels.start / MR..channels.end.div_ceil(MR) {
                    let rows = MR.min(cout - panel * MR);
                    // SAFETY: V[p] holds cin rows of t values, M[p] cout rows of t values;
                    // the block reads columns [c0, c0 + cols) of the one and writes rows
                    // [panel·MR, +rows) of the other.
                    unsafe {
                        by_rows!(
                            rows,
                            kernel::block,
                            cin,
                            u.panel(0, panel, cin),
                            vp.add(c0),
                            row,
                            cols,
                            kernel::Start::Bias(&zeros),
                            kernel::Epilogue::None,
                            rows,
                            mp.add(panel * MR * row + c0),
                            row,
                        )
                    };
                }
            }
        }
    }

    /// The output rows of `tile_rows` from `M`: `Y = Aᵀ M A` (Aᵀ = [[1, 1, 1, 0], [0, 1, -1,
    /// -1]]), plus the bias, through the activation; 16 tiles of a tile row at a time, channel
    /// by channel.
    #[target_feature(enable = "avx512f")]
    unsafe fn transform_output(
        &self,
        tile_rows: std::ops::Range<usize>,
        at: &Layout,
        m: &[f32],
        channels: std::ops::Range<usize>,
    ) {
        let cout = self.job.cout_g;
        let [oh, ow] = self.job.g.out_hw;
        let position = at.position(cout);
        let low = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
        let high = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
        let zero = _mm512_setzero_ps();
        let activation = &self.job.conv.activation;
        let relu = matches!(activation, Activation::Relu);
        // What channel o's negative values are multiplied by, for the activations that scale them.
        let slope = |o: usize| match activation {
            Activation::LeakyRelu(alpha) => Some(*alpha),
            Activation::PRelu(slopes) => Some(slopes.data()[o]),
            Activation::None | Activation::Relu => None,
        };
        let out = self.job.out.get();
        let m = m.as_ptr();
        for tx0 in (0..self.tiles[1]).step_by(16) {
            let lanes = first_lanes((self.tiles[1] - tx0) as isize);
            let x0 = 2 * tx0;
            let left = (ow - x0) as isize;
            let (store_low, store_high) = (first_lanes(left), first_lanes(left - 16));
            for o in channels.clone() {
                let bias = _mm512_set1_ps(self.job.bias[o]);
                let slope = slope(o).map(|s| _mm512_set1_ps(s));
                let activate = |x: __m512| {
                    let x = _mm512_add_ps(x, bias);
                    if relu {
                        _mm512_max_ps(x, zero)
                    } else if let Some(slope) = slope {
                        let negative = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(x, zero);
                        _mm512_mask_mul_ps(x, negative, x, slope)
                    } else {
                        x
                    }
                };
                for (row_index, row) in tile_rows.clone().enumerate() {
                    let (n, ty) = (row / self.tiles[0], row % self.tiles[0]);
                    let first = m.wrapping_add(o * at.row + row_index * self.tiles[1] + tx0);
                    // SAFETY: the loaded lanes (the group's tiles) lie inside M's row of
                    // position p, channel o.
                    let mv: [__m512; 16] = std::array::from_fn(|p| unsafe {
                        _mm512_maskz_loadu_ps(lanes, first.add(p * position))
                    });
                    // Aᵀ along ν (the output tile's columns), then along ξ (its rows).
                    let sum3 = |a: __m512, b: __m512, c: __m512| _mm512_add_ps(_mm512_add_ps(a, b), c);
                    let diff3 = |a: __m512, b: __m512, c: __m512| _mm512_sub_ps(_mm512_sub_ps(a, b), c);
                    let a0: [__m512; 4] =
                        std::array::from_fn(|xi| sum3(mv[xi * 4], mv[xi * 4 + 1], mv[xi * 4 + 2]));
                    let a1: [__m512; 4] =
                        std::array::from_fn(|xi| diff3(mv[xi * 4 + 1], mv[xi * 4 + 2], mv[xi * 4 + 3]));
                    let y = [
                        [sum3(a0[0], a0[1], a0[2]), sum3(a1[0], a1[1], a1[2])],
                        [diff3(a0[1], a0[2], a0[3]), diff3(a1[1], a1[2], a1[3])],
                    ];
                    let dst = out.wrapping_add(((n * self.job.g.out_channels + o) * oh + 2 * ty) * ow + x0);
                    for (dy, [y_left, y_right]) in y.into_iter().enumerate().take((oh - 2 * ty).min(2)) {
                        let (y_left, y_right) = (activate(y_left), activate(y_right));
                        let row = dst.wrapping_add(dy * ow);
                        // SAFETY: the stored lanes are columns [x0, ow) of output row 2ty + dy
                        // of channel o of image n, which only this item writes.
                        unsafe {
                            _mm512_mask_storeu_ps(
                                row,
                                store_low,
                                _mm512_permutex2var_ps(y_left, low, y_right),
                            );
                            _mm512_mask_storeu_ps(
                                row.wrapping_add(16),
                                store_high,
                                _mm512_permutex2var_ps(y_left, high, y_right),
                            );
                        }
                    }
                }
            }
        }
    }
}

/// Where an item's `V` and `M` hold their values: for each transform position p, a matrix of
/// rows (input or output channels) of `tiles` values, `row` apart; position p's matrix at
/// `p·position(rows)`.
struct Layout {
    tiles: usize,
    row: usize,
}

impl Layout {
    fn new(tiles: usize) -> Self {
        Layout { tiles, row: tiles.next_multiple_of(16) }
    }

    /// The distance between two positions' matrices of `rows` rows. 16 values more than the
    /// matrix: the transforms access one row of all 16 positions at once, and were their
    /// matrices a multiple of 4 KiB apart, those 16 lines would fall in one set of L1
    /// (12 ways).
    fn position(&self, rows: usize) -> usize {
        rows * self.row + 16
    }
}

/// Where the 4 loads of an input row start, from a group's first tile: its columns 0..16 and
/// 16..32 give the tiles' columns 0 and 1 (even and odd lanes), 2..18 and 18..34 columns 2
/// and 3.
const OFFSETS: [usize; 4] = [0, 16, 2, 18];
