//! Stride-1 and stride-2 convolutions on the column kernel with blocks that span output rows.
//!
//! Over the input with its padding made explicit, rows of `row = W + left + right` values laid
//! end to end, output (oy, ox) sits at the flat position q = oy·row + ox, and for every tap
//! (c, ky, kx) the inputs of the NR positions q..q + NR lie together at
//! `q + c·plane + ky·dh·row + kx·dw`. A block of NR positions therefore reads one contiguous
//! run per tap whatever the output's width; the `row - OW` positions past the end of each
//! output row are computed and dropped when the block is stored. On a 35-wide output that is
//! 2 positions in 37, where blocks along each row (32 + 3) leave more than a third of the lanes
//! idle.
//!
//! A stride-2 conv reads its padded input split into four phases ([`Phases`]: even and odd
//! rows by even and odd columns), where tap (ky, kx) of output (oy, ox) is value
//! (oy + ky/2, ox + kx/2) of phase (ky mod 2, kx mod 2): at stride 1 again, over rows of
//! `ceil(row / 2)` values.
//!
//! Work is split into items (image, group, a range of blocks, a share of the panels); the
//! panels are shared out only when there are too few blocks to keep every thread busy.

use super::conv::{ConvJob, block_bias, by_rows};
use super::conv_channels::Padded;
use super::for_each_item;
use super::kernel::{self, NR, PackedWeights, Spans};
use crate::ir::Conv;
use crate::shape::ConvGeometry;
use crate::spare::Spare;
use crate::{Deadline, NnError};

/// The most input values (over the group's channels) a range of blocks reads: 256 KiB, well
/// inside L2.
const RANGE_VALUES: usize = 64 * 1024;

/// Whether this conv runs here: stride 1, or stride 2 without dilation; a row (of the padded
/// input, or of its phases) wide enough for the blocks' runs ([`kernel::FLAT_MIN_ROW`]); and
/// at least three quarters of the computed positions kept.
pub fn suits(conv: &Conv, padded_row: usize, out_hw: [usize; 2]) -> bool {
    let [oh, ow] = out_hw;
    let row = match (conv.window.strides, conv.window.dilations) {
        ([1, 1], _) => padded_row,
        ([2, 2], [1, 1]) => padded_row.div_ceil(2),
        _ => return false,
    };
    if row < kernel::FLAT_MIN_ROW || oh == 0 || ow == 0 {
        return false;
    }
    let computed = ((oh - 1) * row + ow).div_ceil(NR) * NR;
    4 * oh * ow >= 3 * computed
}

/// The input as the blocks read it: input channel c's values from `c·channel` on, in rows of
/// `row` values, and each tap's offset from an output's flat position.
pub struct FlatInput<'a> {
    pub data: &'a [f32],
    pub row: usize,
    pub channel: usize,
    pub taps: Vec<usize>,
}

impl<'a> FlatInput<'a> {
    /// A stride-1 conv's padded input.
    pub fn padded(padded: &'a Padded, conv: &Conv, cin_g: usize) -> Self {
        FlatInput {
            data: &padded.data,
            row: padded.hw[1],
            channel: padded.plane_len(),
            taps: padded.tap_offsets(conv, cin_g),
        }
    }
}

/// A stride-2 conv's input, its padding made explicit, split into four phases per channel:
/// phase (a, b) holds the values at rows 2i + a and columns 2j + b of the padded plane, as
/// `[ceil(H'/2)][ceil(W'/2)]` (zeros past an odd side). Made in one of the run's spare buffers.
pub struct Phases {
    data: Vec<f32>,
    /// [ceil(H'/2), ceil(W'/2)] for the padded input's H' x W'.
    hw: [usize; 2],
}

impl Phases {
    pub fn new(x: &[f32], g: &ConvGeometry, spare: &mut Spare) -> Result<Self, NnError> {
        let [h, w] = g.in_hw;
        let [top, left, bottom, right] = g.pads;
        let hw = [(h + top + bottom).div_ceil(2), (w + left + right).div_ceil(2)];
        let phase = hw[0] * hw[1];
        let mut data = spare.values(g.batch * g.in_channels * 4 * phase)?;
        let planes_per_task = (16 * 1024 / (4 * phase).max(1)).max(1);
        super::for_each_chunk(&mut data, 4 * phase, planes_per_task, |plane, dst| {
            let src = &x[plane * h * w..][..h * w];
            let (even_rows, odd_rows) = dst.split_at_mut(2 * phase);
            for (a, rows) in [even_rows, odd_rows].into_iter().enumerate() {
                let (columns_0, columns_1) = rows.split_at_mut(phase);
                let rows_0 = columns_0.chunks_exact_mut(hw[1].max(1));
                let rows_1 = columns_1.chunks_exact_mut(hw[1].max(1));
                for (i, (row_0, row_1)) in rows_0.zip(rows_1).enumerate() {
                    // Row 2i + a of the padded plane: its even columns to phase (a, 0),
                    // its odd ones to (a, 1).
                    match (2 * i + a).checked_sub(top).filter(|&y| y < h) {
                        Some(y) => split_row(&src[y * w..][..w], left, row_0, row_1),
                        None => {
                            row_0.fill(0.0);
                            row_1.fill(0.0);
                        }
                    }
                }
            }
        });
        Ok(Phases { data, hw })
    }

    /// The phases as the blocks read them.
    pub fn input(&self, conv: &Conv, cin_g: usize) -> FlatInput<'_> {
        let [kh, kw] = conv.window.kernel;
        let phase = self.hw[0] * self.hw[1];
        let mut taps = Vec::with_capacity(cin_g * kh * kw);
        for c in 0..cin_g {
            for ky in 0..kh {
                for kx in 0..kw {
                    taps.push((4 * c + 2 * (ky % 2) + kx % 2) * phase + (ky / 2) * self.hw[1] + kx / 2);
                }
            }
        }
        FlatInput { data: &self.data, row: self.hw[1], channel: 4 * phase, taps }
    }

    /// Gives the buffer back to the run's spare buffers.
    pub fn recycle(self, spare: &mut Spare) {
        spare.give_values(self.data);
    }
}

/// Splits input row `src`, `left` columns of padding before it, into the padded row's even
/// columns (`even`) and odd ones (`odd`), zeros in the padding.
fn split_row(src: &[f32], left: usize, even: &mut [f32], odd: &mut [f32]) {
    // The first input value at an even padded column, and where it goes.
    let skip = left % 2;
    let first = left.div_ceil(2);
    if skip == 1
        && let Some(&value) = src.first()
    {
        odd[left / 2] = value;
    }
    let rest = src.get(skip..).unwrap_or(&[]);
    let pairs = rest.len() / 2;
    even[..first].fill(0.0);
    odd[..first - skip].fill(0.0);
    // Pairs (even column, odd column), each in its own row: a loop that vectorizes.
    for ((e, o), pair) in
        even[first..first + pairs].iter_mut().zip(&mut odd[first..first + pairs]).zip(rest.chunks_exact(2))
    {
        *e = pair[0];
        *o = pair[1];
    }
    let mut end = first + pairs;
    if rest.len() % 2 == 1 {
        even[end] = rest[rest.len() - 1];
        odd[end..].fill(0.0);
        end += 1;
        even[end..].fill(0.0);
    } else {
        even[end..].fill(0.0);
        odd[end..].fill(0.0);
    }
}

/// Computes `job.out` ([N, M, OH, OW]) from `x` ([N, C, H, W]) with the packed weights. Past
/// `deadline` the items not yet started are skipped, leaving the output incomplete: the
/// caller checks the deadline and discards it.
pub fn conv2d(input: &FlatInput, packed: &PackedWeights, job: ConvJob, deadline: &Deadline) {
    let g = job.g;
    let row = input.row;
    let [oh, ow] = g.out_hw;
    let taps = &input.taps;
    // The last output position's last tap is the last value of its channel's padded plane
    // (or of its last phase), so no lane below `flat` reads past it.
    let flat = (oh - 1) * row + ow;
    let blocks = flat.div_ceil(NR);
    // A range's input planes (with the rows its last taps reach) within RANGE_VALUES.
    let halo = taps.iter().map(|tap| tap % input.channel.max(1)).max().unwrap_or(0);
    let per_range = ((RANGE_VALUES / job.cin_g.max(1)).saturating_sub(halo) / NR).clamp(1, blocks);
    let ranges = blocks.div_ceil(per_range);
    let groups = job.conv.group;
    let base_items = g.batch * groups * ranges;
    let wanted = 2 * rayon::current_num_threads();
    let panels = packed.panels;
    let per_share =
        if base_items >= wanted { panels } else { panels.div_ceil(wanted.div_ceil(base_items)).max(1) };
    let shares = panels.div_ceil(per_share);
    let k = taps.len();
    for_each_item(g.batch * groups * ranges * shares, deadline, |item| {
        // Shares vary slowest: each thread then takes a share of every range, the short last
        // one included (see `conv_batched::multiply`).
        let range = item % ranges;
        let group = (item / ranges) % groups;
        let n = (item / (ranges * groups)) % g.batch;
        let share = item / (ranges * groups * g.batch);
        let src = input.data[(n * g.in_channels + group * job.cin_g) * input.channel..].as_ptr();
        let item_panels = share * per_share..((share + 1) * per_share).min(panels);
        let item_blocks = range * per_range..((range + 1) * per_range).min(blocks);
        // Panels outer: a panel's weights stay in L1 over the range's blocks, whose inputs
        // overlap (a block shares all but NR values per tap row with the next).
        for panel in item_panels {
            // An item of a huge conv (a hostile guest's) may hold minutes of work.
            if deadline.expired() {
                return;
            }
            for block in item_blocks.clone() {
                let q0 = block * NR;
                let lanes = NR.min(flat - q0);
                let spans = Spans::new(q0, lanes, row, ow);
                let first_row = panel * kernel::MR;
                let rows = kernel::MR.min(job.cout_g - first_row);
                let channel = group * job.cout_g + first_row;
                // SAFETY: kernel::available() held when `packed` was made; every tap of lanes
                // below `flat` lies inside this image's group of padded planes (above); the
                // spans cover output positions of rows [channel, channel + rows) of image n
                // inside this item's blocks, which no other item writes.
                unsafe {
                    by_rows!(
                        rows,
                        kernel::block_flat,
                        taps,
                        src.wrapping_add(q0),
                        lanes,
                        packed.panel(group, panel, k),
                        &block_bias(job.bias, channel, rows),
                        kernel::Epilogue::of(&job.conv.activation, channel, rows),
                        rows,
                        &spans,
                        job.out.get().add((n * g.out_channels + channel) * job.p),
                        job.p,
                    );
                }
            }
        }
    });
}
