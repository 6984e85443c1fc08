//! 3x3 stride-1 convolutions by Winograd's minimal filtering F(2x2, 3x3) and F(4x4, 3x3)
//! (Lavin and Gray, "Fast Algorithms for Convolutional Neural Networks", 2016), on the column
//! kernel.
//!
//! Each 2x2 tile of the output is computed from a 4x4 tile `d` of the padded input as
//! `Y = Aᵀ [Σ_c U_c ⊙ V_c] A`, with `V = Bᵀ d B` (sums and differences of the tile's values)
//! and `U = G g Gᵀ` (the filter, transformed once when the weights are packed). The sum over
//! the input channels is, for each of the 16 transform positions, one matrix product
//! `M = U·V` ([cout × cin] by [cin × tiles]) on the column kernel: 16·cin·cout multiply-adds
//! per tile against 36·cin·cout for the direct conv, 2.25 times fewer. F(4x4, 3x3) computes
//! 4x4 tiles from 6x6 ones, with 36 positions: 36·cin·cout per tile against 144, 4 times
//! fewer, for transforms that cost about three times as much per position ([`tiles`] picks
//! the one that costs less). The results differ from the direct conv's by rounding only:
//! against onnxruntime, 9.1e-7 of the output's range on dlib-resnet-128 at batch 16 and
//! 7.6e-7 on FaceNet (`scripts/bench-nn`) with F(2x2) alone (whose ½ factors are exact in
//! binary), 8.2e-7 on each with F(4x4) where it runs (whose weights of 4, 5 and 8, and ⅙ and
//! 1/24 in `U`, round more).
//!
//! Work is split into items, each a range of tile rows counted across the images of the
//! batch (so that the small maps of a batch make products long enough): each item transforms
//! its tiles' inputs into `V`, runs the products into `M` and transforms `M` into its output
//! rows, in a scratch buffer of its thread sized to stay in L2; where the ranges are fewer
//! than two per thread (a small batch), each is shared out by output channels. The
//! transforms run over 16 tiles of a tile row at a time, one vector lane per tile.
//!
//! By `nn_layers` at batch 16 (2-core VM, 2026-12-05, three runs alternating with the
//! other kernels): dlib-resnet-128's 8x8 convs (128 channels) 0.82-0.86 -> 0.52-0.55 ms, its
//! 17x17 ones (64) 0.90-0.96 -> 0.77-0.84, its 72x72 one 2.51 -> 2.38; FaceNet's 80 -> 192
//! conv on 36x36 14.9 -> 10.6 ms, its 32 -> 64 on 77x77 11.7 -> 9.8, all on F(2x2). [`tiles`]
//! says where it was not faster, and where F(4x4) is.

use std::arch::x86_64::*;

use super::conv::{ConvJob, by_rows};
use super::conv_channels::Padded;
use super::for_each_item;
use super::kernel::{self, MR, NR, PackedWeights, first_lanes};
use crate::Deadline;
use crate::ir::{Activation, Conv};
use crate::shape::ConvGeometry;

/// Which of Winograd's algorithms runs a conv: F(2x2, 3x3), or F(4x4, 3x3), whose 6x6 input
/// tiles give 4x4 outputs for 36 products per input and output channel (2.25 per output,
/// against 4 for F(2x2) and 9 for the direct conv), on maps wide enough to fill its
/// transforms' vectors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tiles {
    F2,
    F4,
}

impl Tiles {
    /// Outputs per tile side.
    const fn side(self) -> usize {
        match self {
            Tiles::F2 => 2,
            Tiles::F4 => 4,
        }
    }

    /// Transform positions: the (side + 2)² values of a tile in Winograd's domain.
    const fn positions(self) -> usize {
        (self.side() + 2) * (self.side() + 2)
    }
}

/// The values an item's scratch (`V` and `M`) is planned for: 1 MiB, inside L2. More is
/// allocated where an item's tiles are few: its rows are rounded up to 16 values, so at most
/// 4 times this (one row of 4 tiles, which [`tiles`] bounds to this plan).
const SCRATCH_VALUES: usize = 256 * 1024;

/// The algorithm a conv runs on here, if any: a 3x3 kernel at stride 1, no dilation, one
/// group, at least 16 input and 16 output channels, on a map of at least [`MIN_MAP`] a side,
/// one tile row of which fits the scratch (which bounds the scratch), where the transforms
/// cost little beside the products ([`transforms_pay`]). There, F(4x4) on maps of
/// [`F4_MIN_MAP`] and more a side, from [`F4_MIN_CHANNELS`] input channels, where it costs a
/// tenth less ([`cost`]), else F(2x2).
///
/// The answer depends on the conv's shape (and the CPU's vendor, [`share_limit`]) alone,
/// never on the batch: the other kernels all sum the bias and the taps in one order, so they
/// agree to the bit, while Winograd's sums differ from theirs by rounding. A face's facen must
/// not change with the faces that share its batch (a resumed or restarted run gives the same
/// values as an uninterrupted one).
pub fn tiles(conv: &Conv, g: &ConvGeometry, cin_g: usize, cout_g: usize) -> Option<Tiles> {
    let w = &conv.window;
    let tiles_x = g.out_hw[1].div_ceil(2);
    let f2 = w.kernel == [3, 3]
        && w.strides == [1, 1]
        && w.dilations == [1, 1]
        && conv.group == 1
        && cin_g >= 16
        && cout_g >= 16
        && g.out_hw[0] >= MIN_MAP
        && g.out_hw[1] >= MIN_MAP
        && Tiles::F2.positions() * (cin_g + cout_g) * tiles_x <= SCRATCH_VALUES
        && transforms_pay(cin_g, cout_g, tiles_x);
    let f4 = cin_g >= F4_MIN_CHANNELS
        && g.out_hw[0] >= F4_MIN_MAP
        && g.out_hw[1] >= F4_MIN_MAP
        && Tiles::F4.positions() * (cin_g + cout_g) * g.out_hw[1].div_ceil(4) <= SCRATCH_VALUES
        && 10 * cost(Tiles::F4, cin_g, cout_g, g.out_hw) <= 9 * cost(Tiles::F2, cin_g, cout_g, g.out_hw);
    f2.then_some(if f4 { Tiles::F4 } else { Tiles::F2 })
}

/// The smallest output side Winograd runs on: on 4x4 maps (dlib-resnet-128's, 256 channels,
/// batch 16) it was no faster than the column kernel.
const MIN_MAP: usize = 8;
/// The smallest output side F(4x4) runs on: an 8x8 map is 2x2 of its tiles, whose products
/// would fill an eighth of a block's columns at batch 1.
const F4_MIN_MAP: usize = 16;
/// The fewest input channels F(4x4) runs with. Its transforms round more than F(2x2)'s: on
/// P-Net, whose third conv (16 -> 32 channels) it took on the large pyramid levels, the
/// largest difference from onnxruntime rose from 6.9e-7 to 5.4e-6 of the output's range, for
/// no time measurably saved (`scripts/bench-nn`, 2026-12-06: 17.5-18.2 ms either way).
const F4_MIN_CHANNELS: usize = 32;

/// Whether the transforms cost little enough beside the 16 products. Per tile, the products
/// take 16·cin·cout multiply-adds and the transforms about 16·(cin + cout) operations, in
/// vectors of 16 tiles of a tile row (a row of 18 tiles fills 2 vectors to 56%): their share
/// is (1/cin + 1/cout) / fill, and Winograd runs where it is at most 1/[`share_limit`].
fn transforms_pay(cin: usize, cout: usize, tiles_x: usize) -> bool {
    let lanes = tiles_x.div_ceil(16) * 16;
    share_limit() * (cin + cout) * lanes <= cin * cout * tiles_x
}

/// What a conv costs one image on `tiles`, in multiply-adds: the products (every tile's
/// positions, cin·cout each), and the transforms, which run over rows of tiles in vectors of
/// 16 and take as much as 2 multiply-adds per position and channel for F(2x2), 6 for F(4x4).
/// Those weights fit nn_layers at batch 16 (2-core VM, 2026-12-06) on the four shapes that
/// tell the two apart, F(2x2) -> F(4x4): dlib-resnet-128's 35x35 convs (32 channels, 9.7-12.3
/// -> 6.4-7.7 ms in all), FaceNet's 77x77 ones (32 -> 32: 7.9-8.4 -> 6.5-6.8, 32 -> 64:
/// 14.3-14.9 -> 10.7-12.0) and its 17x17 one of 192 channels (11.0-11.3 -> 7.3-7.8); on
/// dlib-resnet-128's 17x17 maps (64 channels) the two took as long (and F(4x4) was slower at
/// batch 1), which F(4x4) must beat by a tenth here.
fn cost(tiles: Tiles, cin: usize, cout: usize, [oh, ow]: [usize; 2]) -> usize {
    let side = tiles.side();
    let (rows, columns) = (oh.div_ceil(side), ow.div_ceil(side));
    let lanes = columns.div_ceil(16) * 16;
    let transform = match tiles {
        Tiles::F2 => 2,
        Tiles::F4 => 6,
    };
    tiles.positions() * (rows * columns * cin * cout + rows * lanes * (cin + cout) * transform)
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

/// A conv's transformed filters `U`, one [cout × cin] matrix per transform position, each
/// packed for the column kernel.
#[derive(Debug)]
pub struct WinogradWeights {
    tiles: Tiles,
    positions: Vec<PackedWeights>,
}

impl WinogradWeights {
    /// From `w`, [cout, cin, 3, 3] row-major: `U = G g Gᵀ`, for F(2x2) G = [[1, 0, 0],
    /// [½, ½, ½], [½, -½, ½], [0, 0, 1]], for F(4x4) G = [[¼, 0, 0], [-⅙, -⅙, -⅙],
    /// [-⅙, ⅙, -⅙], [1/24, 1/12, ⅙], [1/24, -1/12, ⅙], [0, 0, 1]] (computed in f64, each
    /// value of U rounded once).
    pub fn new(w: &[f32], cout: usize, cin: usize, tiles: Tiles) -> Self {
        let n = tiles.side() + 2;
        let mut u = vec![vec![0.0f32; cout * cin]; tiles.positions()];
        let transform = |a: f64, b: f64, c: f64| -> Vec<f64> {
            match tiles {
                Tiles::F2 => vec![a, 0.5 * (a + b + c), 0.5 * (a - b + c), c],
                Tiles::F4 => vec![
                    a / 4.0,
                    -(a + b + c) / 6.0,
                    -(a - b + c) / 6.0,
                    (a + 2.0 * b + 4.0 * c) / 24.0,
                    (a - 2.0 * b + 4.0 * c) / 24.0,
                    c,
                ],
            }
        };
        for o in 0..cout {
            for c in 0..cin {
                let g: Vec<f64> = w[(o * cin + c) * 9..][..9].iter().map(|&v| v as f64).collect();
                // G along the kernel's rows, for each of its columns.
                let columns: Vec<Vec<f64>> =
                    (0..3).map(|kx| transform(g[kx], g[3 + kx], g[6 + kx])).collect();
                for xi in 0..n {
                    // G along the columns of row xi.
                    let row = transform(columns[0][xi], columns[1][xi], columns[2][xi]);
                    for (nu, &value) in row.iter().enumerate() {
                        u[xi * n + nu][o * cin + c] = value as f32;
                    }
                }
            }
        }
        WinogradWeights { tiles, positions: u.iter().map(|m| PackedWeights::new(m, 1, cout, cin)).collect() }
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
    let side = weights.tiles.side();
    let tiles = [oh.div_ceil(side), ow.div_ceil(side)];
    // Items are ranges of the tile rows of all the images, as many as fit the scratch (made a
    // multiple of the threads), of even sizes: rayon hands each thread a contiguous part of
    // the items, and 18 rows as 14 + 4 left one thread of two with three quarters of a batch-1
    // conv (dlib-resnet-128's 35x35 convs ran no faster on two threads than on one). Where
    // they are fewer than the threads, the rows are split further while each thread still
    // gets a column block of tiles (with two, dlib-resnet-128's 35x35 convs on F(4x4) at batch
    // 1 were shared out, below: 0.72-1.23 -> 0.55-0.57 ms); past that (small maps at small
    // batches, whose time goes to reading the weights), each range is shared out by output
    // channels, every share transforming the range's inputs and reading only its channels'
    // weights.
    let threads = rayon::current_num_threads();
    let all_rows = job.g.batch * tiles[0];
    let per_row = weights.tiles.positions() * (job.cin_g + job.cout_g) * tiles[1];
    let ranges_to_fit = all_rows.div_ceil((SCRATCH_VALUES / per_row).clamp(1, all_rows));
    let ranges = if ranges_to_fit >= threads {
        ranges_to_fit.div_ceil(threads) * threads
    } else if all_rows * tiles[1] >= threads * NR {
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
    /// Tile rows and columns: [ceil(OH / side), ceil(OW / side)].
    tiles: [usize; 2],
}

impl Plan<'_> {
    /// The output rows of tile rows `tile_rows`, numbered across the images (image n's tile
    /// row ty is row n·tiles[0] + ty).
    fn run(&self, tile_rows: std::ops::Range<usize>, channels: std::ops::Range<usize>) {
        let (cin, cout) = (self.job.cin_g, self.job.cout_g);
        let at = Layout::new(tile_rows.len() * self.tiles[1]);
        let mut scratch = SCRATCH.take();
        let positions = self.weights.tiles.positions();
        let (v_len, m_len) = (at.position(cin) * positions, at.position(cout) * positions);
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

    /// `V[p][c][t] = (Bᵀ d B)[p]` for the input tile d of channel c under tile t (F(2x2): 4x4,
    /// Bᵀ = [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]]; F(4x4): 6x6,
    /// [`b_transpose_f4`]).
    #[target_feature(enable = "avx512f")]
    unsafe fn transform_input(&self, tile_rows: std::ops::Range<usize>, at: &Layout, v: &mut [f32]) {
        match self.weights.tiles {
            Tiles::F2 => {
                let even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
                let odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
                // Columns 0..16 and 16..32 of the loads give the tiles' columns 0 and 1 (even
                // and odd lanes), 2..18 and 18..34 columns 2 and 3.
                let columns = |[a, b, a2, b2]: [__m512; 4]| {
                    [
                        _mm512_permutex2var_ps(a, even, b),
                        _mm512_permutex2var_ps(a, odd, b),
                        _mm512_permutex2var_ps(a2, even, b2),
                        _mm512_permutex2var_ps(a2, odd, b2),
                    ]
                };
                let b_transpose = |[d0, d1, d2, d3]: [__m512; 4]| {
                    [
                        _mm512_sub_ps(d0, d2),
                        _mm512_add_ps(d1, d2),
                        _mm512_sub_ps(d2, d1),
                        _mm512_sub_ps(d1, d3),
                    ]
                };
                // SAFETY: caller's contract.
                unsafe { self.transform_tiles(tile_rows, at, v, [0, 16, 2, 18], columns, b_transpose) }
            }
            Tiles::F4 => {
                // Lanes 4t + j of a pair of vectors, for the pair's 8 tiles t (twice over).
                let picks: [__m512i; 4] = std::array::from_fn(|j| {
                    let lanes: [i32; 16] = std::array::from_fn(|l| (4 * (l % 8) + j) as i32);
                    // SAFETY: 16 values of 32 bits.
                    unsafe { _mm512_loadu_si512(lanes.as_ptr().cast()) }
                });
                // Column j of the 16 tiles (input columns x0 + 4t + j): for j < 4 out of the
                // loads at 0, 16, 32 and 48, for j = 4 and 5 as columns 0 and 1 of those at 4,
                // 20, 36 and 52.
                let columns = |loads: [__m512; 8]| {
                    std::array::from_fn(|j| {
                        let (set, pick) = if j < 4 { (0, j) } else { (4, j - 4) };
                        let low = _mm512_permutex2var_ps(loads[set], picks[pick], loads[set + 1]);
                        let high = _mm512_permutex2var_ps(loads[set + 2], picks[pick], loads[set + 3]);
                        _mm512_shuffle_f32x4::<0x44>(low, high)
                    })
                };
                let offsets = [0, 16, 32, 48, 4, 20, 36, 52];
                // SAFETY: caller's contract.
                unsafe { self.transform_tiles(tile_rows, at, v, offsets, columns, |d| b_transpose_f4(d)) }
            }
        }
    }

    /// `V = Bᵀ d B` for N x N input tiles, whose columns `columns` takes out of a row's L loads
    /// at `offsets` from a group's first tile: for each group of 16 tiles along a tile row
    /// (its masks the same for every channel), channel by channel, down the item's tile rows.
    /// The rows past the padded input and the columns past its rows are zeros: the last tile
    /// row and column of an output whose size the tiles do not divide read them, and only the
    /// outputs dropped use them.
    #[target_feature(enable = "avx512f")]
    unsafe fn transform_tiles<const N: usize, const L: usize>(
        &self,
        tile_rows: std::ops::Range<usize>,
        at: &Layout,
        v: &mut [f32],
        offsets: [usize; L],
        columns: impl Fn([__m512; L]) -> [__m512; N],
        b_transpose: impl Fn([__m512; N]) -> [__m512; N],
    ) {
        let cin = self.job.cin_g;
        let [hp, wp] = self.padded.hw;
        let side = N - 2;
        let position = at.position(cin);
        let plane = self.padded.plane_len();
        let data = self.padded.data.as_ptr();
        let v = v.as_mut_ptr();
        // Bᵀ along x of input row y of channel c, for the group of tiles whose first column is
        // x0.
        let row_transform = |n: usize, c: usize, y: usize, x0: usize, masks: &[__mmask16; L]| {
            if y >= hp {
                return [_mm512_setzero_ps(); N];
            }
            let row = data.wrapping_add((n * cin + c) * plane + y * wp + x0);
            // SAFETY: only lanes inside the padded row are read (the masks); `wrapping_add`: a
            // masked-off load's address may lie past the end.
            let loads = std::array::from_fn(|k| unsafe {
                _mm512_maskz_loadu_ps(masks[k], row.wrapping_add(offsets[k]))
            });
            b_transpose(columns(loads))
        };
        for tx0 in (0..self.tiles[1]).step_by(16) {
            let store = first_lanes((self.tiles[1] - tx0) as isize);
            let x0 = side * tx0;
            let left = (wp - x0) as isize;
            let masks = offsets.map(|offset| first_lanes(left - offset as isize));
            for c in 0..cin {
                // An image's tile rows overlap by two input rows: each row is transformed once.
                let mut r = [[_mm512_setzero_ps(); N]; N];
                for (row_index, row) in tile_rows.clone().enumerate() {
                    let (n, ty) = (row / self.tiles[0], row % self.tiles[0]);
                    let fresh = if row_index == 0 || ty == 0 { 0 } else { 2 };
                    for (k, transformed) in r.iter_mut().enumerate().skip(fresh) {
                        *transformed = row_transform(n, c, side * ty + k, x0, &masks);
                    }
                    let first = v.wrapping_add(c * at.row + row_index * self.tiles[1] + tx0);
                    // Bᵀ along y, column ν of the rows' transforms.
                    let transformed = (0..N).map(|nu| b_transpose(std::array::from_fn(|k| r[k][nu])));
                    for (nu, column) in transformed.enumerate() {
                        for (xi, &value) in column.iter().enumerate() {
                            // SAFETY: the stored lanes (the group's tiles) lie inside V's row
                            // of position Nξ + ν, channel c.
                            unsafe {
                                _mm512_mask_storeu_ps(first.add((xi * N + nu) * position), store, value)
                            };
                        }
                    }
                    r[0] = r[N - 2];
                    r[1] = r[N - 1];
                }
            }
        }
    }

    /// `M[p] = U[p]·V[p]` for every position p, on the column kernel.
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
                            false,
                        )
                    };
                }
            }
        }
    }

    /// The output rows of `tile_rows` from `M`: `Y = Aᵀ M A` (F(2x2): Aᵀ = [[1, 1, 1, 0],
    /// [0, 1, -1, -1]]; F(4x4): [`a_transpose_f4`]), plus the bias, through the activation.
    #[target_feature(enable = "avx512f")]
    unsafe fn transform_output(
        &self,
        tile_rows: std::ops::Range<usize>,
        at: &Layout,
        m: &[f32],
        channels: std::ops::Range<usize>,
    ) {
        // Two vectors' lanes in pairs: the first 8 of each, then the last 8.
        let low = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
        let high = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
        match self.weights.tiles {
            Tiles::F2 => {
                let sum3 = |a: __m512, b: __m512, c: __m512| _mm512_add_ps(_mm512_add_ps(a, b), c);
                let diff3 = |a: __m512, b: __m512, c: __m512| _mm512_sub_ps(_mm512_sub_ps(a, b), c);
                // Aᵀ along ν (the output tile's columns), then along ξ (its rows).
                let tile = |mv: [__m512; 16]| {
                    let a0: [__m512; 4] =
                        std::array::from_fn(|xi| sum3(mv[xi * 4], mv[xi * 4 + 1], mv[xi * 4 + 2]));
                    let a1: [__m512; 4] =
                        std::array::from_fn(|xi| diff3(mv[xi * 4 + 1], mv[xi * 4 + 2], mv[xi * 4 + 3]));
                    [
                        [sum3(a0[0], a0[1], a0[2]), sum3(a1[0], a1[1], a1[2])],
                        [diff3(a0[1], a0[2], a0[3]), diff3(a1[1], a1[2], a1[3])],
                    ]
                };
                // The two columns interleaved: 16 tiles' output values, tile by tile.
                let interleave = |[left, right]: [__m512; 2]| {
                    [_mm512_permutex2var_ps(left, low, right), _mm512_permutex2var_ps(left, high, right)]
                };
                // SAFETY: caller's contract.
                unsafe { self.finish_tiles(tile_rows, at, m, channels, tile, interleave) }
            }
            Tiles::F4 => {
                // Aᵀ along ν (the output tile's columns), then along ξ (its rows).
                let tile = |mv: [__m512; 36]| {
                    let a: [[__m512; 4]; 6] =
                        std::array::from_fn(|xi| a_transpose_f4(std::array::from_fn(|nu| mv[xi * 6 + nu])));
                    let columns: [[__m512; 4]; 4] =
                        std::array::from_fn(|dx| a_transpose_f4(std::array::from_fn(|xi| a[xi][dx])));
                    std::array::from_fn(|dy| std::array::from_fn(|dx| columns[dx][dy]))
                };
                // Two pairs of columns in pairs, in turn (first 4 pairs, then last 4): 16 tiles'
                // 4 columns, tile by tile.
                let pairs_low = _mm512_setr_epi64(0, 8, 1, 9, 2, 10, 3, 11);
                let pairs_high = _mm512_setr_epi64(4, 12, 5, 13, 6, 14, 7, 15);
                let (pd, ps) = (_mm512_castps_pd, _mm512_castpd_ps);
                let interleave = |[c0, c1, c2, c3]: [__m512; 4]| {
                    let (c01_low, c01_high) =
                        (_mm512_permutex2var_ps(c0, low, c1), _mm512_permutex2var_ps(c0, high, c1));
                    let (c23_low, c23_high) =
                        (_mm512_permutex2var_ps(c2, low, c3), _mm512_permutex2var_ps(c2, high, c3));
                    [
                        ps(_mm512_permutex2var_pd(pd(c01_low), pairs_low, pd(c23_low))),
                        ps(_mm512_permutex2var_pd(pd(c01_low), pairs_high, pd(c23_low))),
                        ps(_mm512_permutex2var_pd(pd(c01_high), pairs_low, pd(c23_high))),
                        ps(_mm512_permutex2var_pd(pd(c01_high), pairs_high, pd(c23_high))),
                    ]
                };
                // SAFETY: caller's contract.
                unsafe { self.finish_tiles(tile_rows, at, m, channels, tile, interleave) }
            }
        }
    }

    /// The output rows of `tile_rows` from `M`, for tiles of S x S outputs out of P positions:
    /// `tile` gives a tile's output rows, each as its S columns, and `interleave` lays a row's
    /// columns out as the output row's values; plus the bias, through the activation. 16
    /// tiles of a tile row at a time, channel by channel.
    #[target_feature(enable = "avx512f")]
    unsafe fn finish_tiles<const P: usize, const S: usize>(
        &self,
        tile_rows: std::ops::Range<usize>,
        at: &Layout,
        m: &[f32],
        channels: std::ops::Range<usize>,
        tile: impl Fn([__m512; P]) -> [[__m512; S]; S],
        interleave: impl Fn([__m512; S]) -> [__m512; S],
    ) {
        let [oh, ow] = self.job.g.out_hw;
        let position = at.position(self.job.cout_g);
        let out = self.job.out.get();
        let m = m.as_ptr();
        for tx0 in (0..self.tiles[1]).step_by(16) {
            let lanes = first_lanes((self.tiles[1] - tx0) as isize);
            let x0 = S * tx0;
            let left = (ow - x0) as isize;
            let stores: [__mmask16; S] = std::array::from_fn(|k| first_lanes(left - 16 * k as isize));
            for o in channels.clone() {
                let finish = Finish::of(&self.job, o);
                for (row_index, row) in tile_rows.clone().enumerate() {
                    let (n, ty) = (row / self.tiles[0], row % self.tiles[0]);
                    let first = m.wrapping_add(o * at.row + row_index * self.tiles[1] + tx0);
                    // SAFETY: the loaded lanes (the group's tiles) lie inside M's row of
                    // position p, channel o.
                    let mv: [__m512; P] = std::array::from_fn(|p| unsafe {
                        _mm512_maskz_loadu_ps(lanes, first.add(p * position))
                    });
                    let dst = out.wrapping_add(((n * self.job.g.out_channels + o) * oh + S * ty) * ow + x0);
                    for (dy, columns) in tile(mv).into_iter().enumerate().take((oh - S * ty).min(S)) {
                        let row = dst.wrapping_add(dy * ow);
                        for (k, values) in
                            interleave(columns.map(|c| finish.apply(c))).into_iter().enumerate()
                        {
                            // SAFETY: the stored lanes are columns [x0, ow) of output row
                            // S·ty + dy of channel o of image n, which only this item writes.
                            unsafe { _mm512_mask_storeu_ps(row.wrapping_add(16 * k), stores[k], values) };
                        }
                    }
                }
            }
        }
    }
}

/// F(4x4)'s Bᵀ = [[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0],
/// [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]] on six vectors.
#[target_feature(enable = "avx512f")]
#[inline]
fn b_transpose_f4([d0, d1, d2, d3, d4, d5]: [__m512; 6]) -> [__m512; 6] {
    let (two, four, five) = (_mm512_set1_ps(2.0), _mm512_set1_ps(4.0), _mm512_set1_ps(5.0));
    let (t, u) = (_mm512_sub_ps(d4, d2), _mm512_sub_ps(d3, d1));
    [
        _mm512_fmadd_ps(four, d0, _mm512_fnmadd_ps(five, d2, d4)),
        _mm512_fnmadd_ps(four, _mm512_add_ps(d1, d2), _mm512_add_ps(d3, d4)),
        _mm512_fmadd_ps(four, _mm512_sub_ps(d1, d2), _mm512_sub_ps(d4, d3)),
        _mm512_fmadd_ps(two, u, t),
        _mm512_fnmadd_ps(two, u, t),
        _mm512_fmadd_ps(four, d1, _mm512_fnmadd_ps(five, d3, d5)),
    ]
}

/// F(4x4)'s Aᵀ = [[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0],
/// [0, 1, -1, 8, -8, 1]] on six vectors.
#[target_feature(enable = "avx512f")]
#[inline]
fn a_transpose_f4([m0, m1, m2, m3, m4, m5]: [__m512; 6]) -> [__m512; 4] {
    let (two, four, eight) = (_mm512_set1_ps(2.0), _mm512_set1_ps(4.0), _mm512_set1_ps(8.0));
    let (s12, d12) = (_mm512_add_ps(m1, m2), _mm512_sub_ps(m1, m2));
    let (s34, d34) = (_mm512_add_ps(m3, m4), _mm512_sub_ps(m3, m4));
    [
        _mm512_add_ps(_mm512_add_ps(m0, s12), s34),
        _mm512_fmadd_ps(two, d34, d12),
        _mm512_fmadd_ps(four, s34, s12),
        _mm512_add_ps(_mm512_fmadd_ps(eight, d34, d12), m5),
    ]
}

/// Output channel o's bias and activation, on a vector of its values.
#[derive(Clone, Copy)]
struct Finish {
    bias: __m512,
    relu: bool,
    /// What negative values are multiplied by, for the activations that scale them.
    slope: Option<__m512>,
}

impl Finish {
    #[target_feature(enable = "avx512f")]
    fn of(job: &ConvJob, o: usize) -> Finish {
        let slope = match &job.conv.activation {
            Activation::LeakyRelu(alpha) => Some(*alpha),
            Activation::PRelu(slopes) => Some(slopes.data()[o]),
            Activation::None | Activation::Relu => None,
        };
        Finish {
            bias: _mm512_set1_ps(job.bias[o]),
            relu: matches!(job.conv.activation, Activation::Relu),
            slope: slope.map(|s| _mm512_set1_ps(s)),
        }
    }

    #[target_feature(enable = "avx512f")]
    #[inline]
    fn apply(self, x: __m512) -> __m512 {
        let zero = _mm512_setzero_ps();
        let x = _mm512_add_ps(x, self.bias);
        if self.relu {
            _mm512_max_ps(x, zero)
        } else if let Some(slope) = self.slope {
            let negative = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(x, zero);
            _mm512_mask_mul_ps(x, negative, x, slope)
        } else {
            x
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
