//! Convolutions on small maps on the column kernel, with the batch folded into the positions.
//!
//! The column kernel's other paths block output positions image by image, so a 4x4 map (16
//! positions) fills half of an NR-lane block and a 3x3 map less than a third; such maps ran
//! on the channel kernel, lowered across images into blocks of 12 columns, at about a third
//! of the rate the channel kernel reaches on 8x8 maps (why was not pinned down: splitting the
//! taps into passes whose weights fit in L1 did not change it). Here the positions of every
//! image are one dimension of N·OH·OW columns: they are lowered together (one masked gather
//! per 16 values) into blocks of NR columns, `[k][NR]`, so that the kernel reads each block
//! as one stream, and every block but the last is full whatever the map's size. The column
//! kernel runs over them with bias and activation in its epilogue into a staging matrix
//! `[channels][positions]`, whose rows are then copied to each image's planes.
//!
//! Work is split into items (a range of blocks, a share of the panels); the panels are shared
//! out only when there are too few ranges to keep every thread busy. Every output value is
//! one kernel call's sum over its taps in their packed order, so the result does not depend
//! on the number of threads.

use super::conv::{ConvJob, block_bias, by_rows};
use super::conv_channels::Padded;
use super::kernel::{self, MR, NR, PackedWeights};
use super::{SyncPtr, for_each_item};
use crate::Deadline;
use crate::shape::ConvGeometry;

/// The most values the lowered blocks hold at once (16 MiB); more positions are lowered in
/// turns.
const LOWERED_VALUES: usize = 4 << 20;
/// The most lowered values one range of blocks reads (1 MiB: half the L2 of the Xeon it was
/// set on, all of a Zen 4 core's; halving it with the other cache budgets was slower on the
/// Zen 4 VM too, 2026-12-06).
const RANGE_VALUES: usize = 256 * 1024;

thread_local! {
    /// The lowered blocks and the staged output of the calling thread, kept between calls so
    /// that they are allocated (and faulted in) once.
    static BUFFERS: std::cell::Cell<(Vec<f32>, Vec<f32>)> =
        const { std::cell::Cell::new((Vec::new(), Vec::new())) };
}

/// Whether this conv runs here: a map smaller than one block (OH·OW < NR), over images that
/// fill one block at least, its padded input indexable with 32-bit lanes. Measured on
/// 2026-12-05 (2 threads, AVX-512, a loaded machine) against the channel kernel these convs
/// ran on before: 1.5-2.4x faster on dlib-resnet-128's 4x4 and 3x3 maps at batch 16 and 4
/// and on FaceNet's 3x3 ones at batch 16; slower at batch 1 (one part-empty block), on 1x1
/// maps below batch 16, and on maps of 8x8 and more (by 10-80%: the lowering costs as much as
/// the lanes it fills), which stay on the other paths.
pub fn suits(g: &ConvGeometry) -> bool {
    let p = g.out_hw[0] * g.out_hw[1];
    let [top, left, bottom, right] = g.pads;
    let padded = g.batch * g.in_channels * (g.in_hw[0] + top + bottom) * (g.in_hw[1] + left + right);
    p < NR && g.batch * p >= NR && padded <= i32::MAX as usize
}

/// Computes `job.out` ([N, M, OH, OW]) from `x` ([N, C, H, W]) with the packed weights, at
/// any stride, padding, dilation and group count. Past `deadline` the items not yet started
/// are skipped, leaving the output incomplete: the caller checks the deadline and discards it.
pub fn conv2d(padded: &Padded, packed: &PackedWeights, job: ConvJob, deadline: &Deadline) {
    let g = job.g;
    let taps = padded.tap_offsets(job.conv, job.cin_g);
    let k = taps.len();
    let total = g.batch * job.p;
    let all_blocks = total.div_ceil(NR);
    let chunk_blocks = (LOWERED_VALUES / (k * NR).max(1)).clamp(1, all_blocks);
    let (mut lowered, mut staged) = BUFFERS.take();
    for group in 0..job.conv.group {
        for first_block in (0..all_blocks).step_by(chunk_blocks) {
            if deadline.expired() {
                break;
            }
            let blocks = chunk_blocks.min(all_blocks - first_block);
            let chunk =
                Chunk { first: first_block * NR, cols: (blocks * NR).min(total - first_block * NR), group };
            if lowered.len() < blocks * k * NR + 16 {
                lowered.resize(blocks * k * NR + 16, 0.0);
            }
            if staged.len() < job.cout_g * blocks * NR {
                staged.resize(job.cout_g * blocks * NR, 0.0);
            }
            // 64-byte aligned: the kernel's loads of a block's rows then never split lines.
            let skip = lowered.as_ptr().align_offset(64).min(16);
            let lowered = &mut lowered[skip..skip + blocks * k * NR];
            lower(padded, &job, &taps, &chunk, lowered);
            let staged = &mut staged[..job.cout_g * blocks * NR];
            multiply(packed, &job, k, &chunk, lowered, staged, deadline);
            unstage(&job, &chunk, staged, deadline);
        }
    }
    BUFFERS.set((lowered, staged));
}

/// Positions [first, first + cols) of the folded N·OH·OW dimension, for one group.
struct Chunk {
    first: usize,
    cols: usize,
    group: usize,
}

/// Lowers the chunk's positions into blocks of NR columns, each `[k][NR]` (the lanes past the
/// chunk's last position are zeros).
fn lower(padded: &Padded, job: &ConvJob, taps: &[usize], chunk: &Chunk, lowered: &mut [f32]) {
    let g = job.g;
    let ow = g.out_hw[1];
    let [sh, sw] = job.conv.window.strides;
    let row = padded.hw[1];
    let k = taps.len();
    let origin = |c: usize| {
        let (n, q) = (c / job.p, c % job.p);
        let (oy, ox) = (q / ow, q % ow);
        (n * g.in_channels + chunk.group * job.cin_g) * padded.plane_len() + oy * sh * row + ox * sw
    };
    super::for_each_chunk(lowered, k * NR, 1, |b, block| {
        let lanes = NR.min(chunk.cols - b * NR);
        let mut origins = [0; NR];
        for (j, o) in origins.iter_mut().enumerate().take(lanes) {
            *o = origin(chunk.first + b * NR + j) as i32;
        }
        // SAFETY: kernel::available() held when the weights were packed; every origin plus
        // every tap lies inside the padded input (its position's taps of its image's group),
        // whose length `suits` bounded by i32::MAX; `block` holds k·NR values.
        unsafe { gather(&padded.data, &origins, lanes, taps, block) };
    });
}

/// Block `block` ([k][NR]) of the lowered matrix: lane j of row kk is `data[origins[j] +
/// taps[kk]]` for j < `lanes`, zero past them.
///
/// # Safety
/// The CPU has AVX-512F; `origins[j] + taps[kk]` is an index into `data` for every j < `lanes`
/// and every kk, and fits an i32; `block` holds `taps.len()·NR` values.
#[target_feature(enable = "avx512f")]
unsafe fn gather(data: &[f32], origins: &[i32; NR], lanes: usize, taps: &[usize], block: &mut [f32]) {
    use std::arch::x86_64::*;
    debug_assert!(block.len() >= taps.len() * NR);
    let [mask0, mask1] = kernel::vector_masks::<2>(lanes);
    // SAFETY: origins holds NR = 32 values.
    let (o0, o1) = unsafe {
        (_mm512_loadu_si512(origins.as_ptr().cast()), _mm512_loadu_si512(origins.as_ptr().add(16).cast()))
    };
    let base = data.as_ptr();
    for (row, &tap) in block.chunks_exact_mut(NR).zip(taps) {
        let tap = _mm512_set1_epi32(tap as i32);
        // SAFETY: caller's contract: the masked lanes' indices lie inside `data`; `row` holds
        // NR values.
        unsafe {
            let v0 = _mm512_mask_i32gather_ps::<4>(
                _mm512_setzero_ps(),
                mask0,
                _mm512_add_epi32(o0, tap),
                base.cast(),
            );
            let v1 = _mm512_mask_i32gather_ps::<4>(
                _mm512_setzero_ps(),
                mask1,
                _mm512_add_epi32(o1, tap),
                base.cast(),
            );
            _mm512_storeu_ps(row.as_mut_ptr(), v0);
            _mm512_storeu_ps(row.as_mut_ptr().add(16), v1);
        }
    }
}

/// Runs the column kernel over the lowered blocks into `staged` ([cout_g][blocks·NR]).
fn multiply(
    packed: &PackedWeights,
    job: &ConvJob,
    k: usize,
    chunk: &Chunk,
    lowered: &[f32],
    staged: &mut [f32],
    deadline: &Deadline,
) {
    let blocks = chunk.cols.div_ceil(NR);
    let stride = blocks * NR;
    let threads = rayon::current_num_threads();
    // Ranges within RANGE_VALUES, as many as a multiple of the threads, of even sizes: 32
    // blocks as 4 ranges of 8, not 5 of 7 (one thread taking 3, the other 2).
    let per_range = (RANGE_VALUES / (k * NR).max(1)).clamp(1, blocks);
    let ranges = (blocks.div_ceil(per_range).div_ceil(threads) * threads).min(blocks);
    let per_range = blocks.div_ceil(ranges);
    let ranges = blocks.div_ceil(per_range);
    let panels = packed.panels;
    let wanted = 2 * threads;
    let per_share = if ranges >= wanted { panels } else { panels.div_ceil(wanted.div_ceil(ranges)).max(1) };
    let shares = panels.div_ceil(per_share);
    let staged = SyncPtr(staged.as_mut_ptr());
    // Ranges vary fastest between items. Rayon first hands each thread a contiguous part of
    // the items, and the last range is often the shorter (a part-empty last block): with the
    // shares varying fastest, FaceNet's 3x3-map convs at batch 16 (5 blocks as ranges of 3
    // and 2, shared in 2) gave one thread of two the 3 blocks and the other the 2, and ran at
    // 83-143 GFLOP/s on 2 threads against 97 on one. Now each thread takes a share of every
    // range: 168-178 GFLOP/s (1792 -> 192, nn_layers alone, 2-core VM, 2026-12-06).
    for_each_item(ranges * shares, deadline, |item| {
        let (range, share) = (item % ranges, item / ranges);
        let item_blocks = range * per_range..((range + 1) * per_range).min(blocks);
        // Panels outer: a panel's weights stay in L1/L2 over the range's blocks, which stay in
        // L2 over the panels.
        for panel in share * per_share..((share + 1) * per_share).min(panels) {
            if deadline.expired() {
                return;
            }
            let first_row = panel * MR;
            let rows = MR.min(job.cout_g - first_row);
            let channel = chunk.group * job.cout_g + first_row;
            let bias = block_bias(job.bias, channel, rows);
            // With a residual, the activation follows its addition (`unstage`).
            let epilogue = if job.conv.residual {
                kernel::Epilogue::None
            } else {
                kernel::Epilogue::of(&job.conv.activation, channel, rows)
            };
            let weights = packed.panel(chunk.group, panel, k);
            for b in item_blocks.clone() {
                // SAFETY: kernel::available() held when `packed` was made; block b holds k
                // rows of NR values; the item alone writes rows [first_row, +rows) of columns
                // [b·NR, +lanes) of `staged`.
                unsafe {
                    by_rows!(
                        rows,
                        kernel::block,
                        k,
                        weights,
                        lowered[b * k * NR..].as_ptr(),
                        NR,
                        NR.min(chunk.cols - b * NR),
                        kernel::Start::Bias(&bias),
                        epilogue,
                        rows,
                        staged.get().add(first_row * stride + b * NR),
                        stride,
                        false,
                    )
                };
            }
        }
    });
}

/// Copies the staged rows (the group's channels over the chunk's positions) to each image's
/// planes, one item per channel; adds them to a residual there, if the conv has one.
fn unstage(job: &ConvJob, chunk: &Chunk, staged: &[f32], deadline: &Deadline) {
    let stride = chunk.cols.div_ceil(NR) * NR;
    let p = job.p;
    for_each_item(job.cout_g, deadline, |r| {
        let src = &staged[r * stride..][..chunk.cols];
        let channel = chunk.group * job.cout_g + r;
        let mut j = 0;
        while j < chunk.cols {
            let (n, q) = ((chunk.first + j) / p, (chunk.first + j) % p);
            let run = (p - q).min(chunk.cols - j);
            // SAFETY: positions [q, q + run) of image n, channel `channel`, lie inside `out`;
            // each item writes only its own channel.
            let dst = unsafe {
                std::slice::from_raw_parts_mut(
                    job.out.get().add((n * job.g.out_channels + channel) * p + q),
                    run,
                )
            };
            if job.conv.residual {
                // `dst` holds the residual: the sums added to it, then the activation, as
                // the unfused Add and activation computed them.
                dst.iter_mut().zip(&src[j..j + run]).for_each(|(r, s)| *r += s);
                super::conv::activate(dst, &job.conv.activation, channel);
            } else {
                dst.copy_from_slice(&src[j..j + run]);
            }
            j += run;
        }
    });
}
