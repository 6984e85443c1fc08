//! Stride-1 convolutions on the column kernel with blocks that span output rows.
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
//! Work is split into items (image, group, a range of blocks, a share of the panels); the
//! panels are shared out only when there are too few blocks to keep every thread busy.

use super::conv::{ConvJob, block_bias, by_rows};
use super::conv_channels::Padded;
use super::for_each_item;
use super::kernel::{self, NR, PackedWeights, Spans};
use crate::Deadline;

/// The most input values (over the group's channels) a range of blocks reads: 256 KiB, well
/// inside L2.
const RANGE_VALUES: usize = 64 * 1024;

/// Whether this conv runs here: stride 1, a padded row wide enough for the blocks' runs
/// ([`kernel::FLAT_MIN_ROW`]), and at least three quarters of the computed positions kept.
pub fn suits(strides: [usize; 2], padded_row: usize, out_hw: [usize; 2]) -> bool {
    let [oh, ow] = out_hw;
    if strides != [1, 1] || padded_row < kernel::FLAT_MIN_ROW || oh == 0 || ow == 0 {
        return false;
    }
    let computed = ((oh - 1) * padded_row + ow).div_ceil(NR) * NR;
    4 * oh * ow >= 3 * computed
}

/// Computes `job.out` ([N, M, OH, OW]) from `x` ([N, C, H, W]) with the packed weights. Past
/// `deadline` the items not yet started are skipped, leaving the output incomplete: the
/// caller checks the deadline and discards it.
pub fn conv2d(padded: &Padded, packed: &PackedWeights, job: ConvJob, deadline: &Deadline) {
    let g = job.g;
    let [_, row] = padded.hw;
    let [oh, ow] = g.out_hw;
    let [kh, kw] = job.conv.window.kernel;
    let [dh, dw] = job.conv.window.dilations;
    let taps = padded.tap_offsets(job.conv, job.cin_g);
    // Stride 1: the last output position's last tap is the padded plane's last value, so no
    // lane below `flat` reads past its plane.
    let flat = (oh - 1) * row + ow;
    let blocks = flat.div_ceil(NR);
    // A range's input planes (with the rows its last taps reach) within RANGE_VALUES.
    let halo = (kh - 1) * dh * row + (kw - 1) * dw;
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
        let share = item % shares;
        let range = (item / shares) % ranges;
        let group = (item / (shares * ranges)) % groups;
        let n = item / (shares * ranges * groups);
        let src = padded.data[(n * g.in_channels + group * job.cin_g) * padded.plane_len()..].as_ptr();
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
                        &taps,
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
