//! 2-D convolution on the channel kernel ([`super::channel_kernel`]).
//!
//! Two ways to feed it, chosen by the output's width:
//! - **in place**: blocks run along output rows, reading the input planes (a zero-padded copy
//!   when the conv pads) through a table of tap offsets, at stride 1 or 2;
//! - **lowered**: for outputs narrower than a block (late layers of 4x4 or 1x1) the columns of
//!   every image are lowered together into `[k][12]` blocks, so that a block is full whatever
//!   the output's size, and each column is written back to its own image.
//!
//! Work is split into items (image, group, a range of output rows, a share of the panels);
//! the panels are shared out only when there are too few rows to keep every thread busy.

use super::channel_kernel::{
    self as ck, ChannelEpilogue, ChannelPanels, Destination, Finish, LANES, MAX_COLUMNS, Source, Start,
};
use super::conv::ConvJob;
use super::for_each_item;
use crate::ir::Conv;
use crate::shape::ConvGeometry;
use crate::spare::Spare;
use crate::{Deadline, NnError};

/// Outputs at least this wide run in place; narrower ones are lowered.
const IN_PLACE_MIN_WIDTH: usize = 8;
/// The largest lowered matrix a thread keeps for its next call (1 MiB); a larger one is freed.
const KEPT_MATRIX_VALUES: usize = 256 * 1024;
/// The most values a lowered matrix holds at once (16 MiB); more columns are lowered in turns.
const LOWERED_VALUES: usize = 4 << 20;

/// Whether the channel kernel runs this conv: enough output channels to fill its vectors,
/// and at least one tap (a conv over no input channels is its bias, left to the other path).
pub fn suits(cout_g: usize, k: usize) -> bool {
    cout_g >= LANES && k > 0
}

/// Computes `out` ([N, M, OH, OW]) from `x` ([N, C, H, W]) with the packed weights. Past
/// `deadline` the items not yet started are skipped, leaving `out` incomplete: the caller
/// checks the deadline and discards it.
pub fn conv2d(padded: &Padded, packed: &ChannelPanels, job: ConvJob, deadline: &Deadline) {
    let [_, sw] = job.conv.window.strides;
    let ow = job.g.out_hw[1];
    let plan = Plan { packed, job };
    if ow >= IN_PLACE_MIN_WIDTH && (sw == 1 || sw == 2) {
        plan.in_place(padded, deadline);
    } else {
        plan.lowered(padded, deadline);
    }
}

/// The input with the conv's padding made explicit (the input itself when it has none).
pub(super) struct Padded<'a> {
    pub data: std::borrow::Cow<'a, [f32]>,
    /// [H + top + bottom, W + left + right]
    pub hw: [usize; 2],
}

impl<'a> Padded<'a> {
    /// The padded copy is made in a spare buffer of the run ([`Spare::values`]): a fresh one
    /// costs a memset (or page faults) over all of it before any value is copied in. Each
    /// plane's pad rows and columns are written as zeros, so no stale value survives.
    pub fn new(x: &'a [f32], g: &ConvGeometry, spare: &mut Spare) -> Result<Self, NnError> {
        let [h, w] = g.in_hw;
        let [top, left, bottom, right] = g.pads;
        let hw = [h + top + bottom, w + left + right];
        if g.pads == [0; 4] {
            return Ok(Padded { data: std::borrow::Cow::Borrowed(x), hw });
        }
        let plane = hw[0] * hw[1];
        let mut data = spare.values(g.batch * g.in_channels * plane)?;
        let planes_per_task = (16 * 1024 / plane.max(1)).max(1);
        super::for_each_chunk(&mut data, plane, planes_per_task, |p, dst| {
            let src = &x[p * h * w..][..h * w];
            dst[..top * hw[1]].fill(0.0);
            for (y, row) in src.chunks_exact(w.max(1)).enumerate() {
                let padded_row = &mut dst[(y + top) * hw[1]..][..hw[1]];
                padded_row[..left].fill(0.0);
                padded_row[left..left + w].copy_from_slice(row);
                padded_row[left + w..].fill(0.0);
            }
            dst[(top + h) * hw[1]..].fill(0.0);
        });
        Ok(Padded { data: std::borrow::Cow::Owned(data), hw })
    }

    /// Gives the copy's buffer back to the run's spare buffers.
    pub fn recycle(self, spare: &mut Spare) {
        if let std::borrow::Cow::Owned(data) = self.data {
            spare.give_values(data);
        }
    }

    pub fn plane_len(&self) -> usize {
        self.hw[0] * self.hw[1]
    }

    /// Asks for the input rows [first, first + rows) of the channels of the taps `taps`
    /// (`per_channel` taps each) of the group at `plane0` to be brought into L2. An output
    /// row of a strided conv starts `stride` new input rows of every channel it reads, more
    /// streams at once than the hardware prefetchers keep ahead of: asked for two output
    /// rows ahead, MMOD's 16 -> 32 channel 5x5 stride-2 conv took 34-41 ms instead of 38-44
    /// (alternating runs, 2026-12-06), and every input value is read as before.
    fn prefetch_window(
        &self,
        plane0: usize,
        first: usize,
        rows: usize,
        taps: &std::ops::Range<usize>,
        per_channel: usize,
    ) {
        use std::arch::x86_64::{_MM_HINT_T1, _mm_prefetch};
        let row = self.hw[1];
        let rows = rows.min(self.hw[0].saturating_sub(first));
        for c in taps.start / per_channel..taps.end.div_ceil(per_channel) {
            let start = plane0 + c * self.plane_len() + first * row;
            for line in self.data[start..start + rows * row].chunks(16) {
                // SAFETY: a prefetch reads nothing and faults on no address; this one lies
                // inside `data`.
                unsafe { _mm_prefetch::<_MM_HINT_T1>(line.as_ptr().cast()) };
            }
        }
    }

    /// The offset of each tap (c, ky, kx) of `conv` over one group's `cin_g` padded planes,
    /// in the order of the packed weights.
    pub fn tap_offsets(&self, conv: &Conv, cin_g: usize) -> Vec<usize> {
        let [kh, kw] = conv.window.kernel;
        let [dh, dw] = conv.window.dilations;
        let row = self.hw[1];
        let mut offsets = Vec::with_capacity(cin_g * kh * kw);
        for c in 0..cin_g {
            for ky in 0..kh {
                for kx in 0..kw {
                    offsets.push(c * self.plane_len() + ky * dh * row + kx * dw);
                }
            }
        }
        offsets
    }
}

/// The most weights one pass over a row of blocks runs with (32 KiB: inside L1).
const PASS_WEIGHTS: usize = 8 * 1024;
/// How many output rows ahead a strided conv asks for its input rows ([`Padded::prefetch_window`]).
const PREFETCH_ROWS: usize = 2;

thread_local! {
    /// Each worker's partial sums between passes, kept between calls.
    static PARTIAL: std::cell::Cell<Vec<f32>> = const { std::cell::Cell::new(Vec::new()) };
    /// The lowered matrix of [`Plan::lowered`], kept between calls: made anew, it was mapped,
    /// zeroed and unmapped on every call (220 KB for each of dlib-resnet-128's 4x4 convs at
    /// batch 1). Taken out while in use, as another conv's call may run on this thread
    /// meanwhile (rayon work stealing).
    static MATRIX: std::cell::Cell<Vec<f32>> = const { std::cell::Cell::new(Vec::new()) };
}

/// What every item of one conv shares.
struct Plan<'a> {
    packed: &'a ChannelPanels,
    job: ConvJob<'a>,
}

impl Plan<'_> {
    /// How many shares the panels are split into, in pairs (a block takes two), so that
    /// `units` items of rows or columns times the shares keep every thread busy.
    fn shares(&self, units: usize) -> usize {
        let pairs = self.packed.panels.div_ceil(2);
        let wanted = 2 * rayon::current_num_threads();
        if units >= wanted { 1 } else { wanted.div_ceil(units).min(pairs).max(1) }
    }

    /// Panels [first, end) of share `share` of `shares`.
    fn share_panels(&self, share: usize, shares: usize) -> std::ops::Range<usize> {
        let pairs = self.packed.panels.div_ceil(2);
        let per = pairs.div_ceil(shares);
        (2 * share * per).min(self.packed.panels)..(2 * (share + 1) * per).min(self.packed.panels)
    }

    /// Blocks along output rows, reading the padded input in place.
    fn in_place(&self, padded: &Padded, deadline: &Deadline) {
        let g = self.job.g;
        let [oh, ow] = g.out_hw;
        let [sh, sw] = self.job.conv.window.strides;
        let groups = self.job.conv.group;
        let offsets = padded.tap_offsets(self.job.conv, self.job.cin_g);
        let images = g.batch * groups;
        // Rows per item: enough items for every thread, each of a few blocks at least.
        let wanted = 4 * rayon::current_num_threads();
        let rows_per_item = (images * oh / wanted).clamp(1, oh.max(1));
        let row_items = oh.div_ceil(rows_per_item);
        let shares = self.shares(images * row_items);
        let count = images * row_items * shares;
        let passes = self.passes();
        let row_taps = RowTaps::new(self.job.conv, g, &passes);
        // The input rows an output row's window spans.
        let window_rows = (self.job.conv.window.kernel[0] - 1) * self.job.conv.window.dilations[0] + 1;
        let per_channel = self.packed.k / self.job.cin_g.max(1);
        for_each_item(count, deadline, |item| {
            // Shares vary slowest: each thread then takes a share of every range of rows,
            // the short last one included (see `conv_batched::multiply`).
            let rows = item % row_items;
            let image = (item / row_items) % images;
            let share = item / (row_items * images);
            let (n, group) = (image / groups, image % groups);
            let plane0 = (n * g.in_channels + group * self.job.cin_g) * padded.plane_len();
            let first_row = rows * rows_per_item;
            let item_rows = first_row..(first_row + rows_per_item).min(oh);
            let mut partial = PARTIAL.take();
            if passes.len() > 1 {
                partial.resize(item_rows.len() * ow * 2 * LANES, 0.0);
            }
            // Panels, then ranges of taps, outer: the weights of a pass stay in L1 over the
            // item's rows, and the input planes it reads stay few.
            for (panel, v) in self.pairs(self.share_panels(share, shares)) {
                // An item of a huge conv (a hostile guest's) may hold minutes of work.
                if deadline.expired() {
                    break;
                }
                let (channel, epilogue) = self.epilogue(group, panel, v);
                let weights = self.packed.panel(group, panel);
                for pass_index in 0..passes.len() {
                    for (row, oy) in item_rows.clone().enumerate() {
                        if sh > 1 && oy + PREFETCH_ROWS < item_rows.end {
                            padded.prefetch_window(
                                plane0,
                                (oy + PREFETCH_ROWS) * sh,
                                window_rows,
                                &passes[pass_index],
                                per_channel,
                            );
                        }
                        let src = padded.data[plane0 + oy * sh * padded.hw[1]..].as_ptr();
                        let source = Source { src, offsets: offsets.as_ptr() };
                        let destination = Destination::Contiguous {
                            // SAFETY: inside `out`: image n, channel `channel`, row oy.
                            base: unsafe {
                                self.job.out.get().add((n * g.out_channels + channel) * self.job.p + oy * ow)
                            },
                            stride: self.job.p,
                            rows: (v * LANES).min(self.job.cout_g - panel * LANES),
                        };
                        let pass = Pass {
                            taps: row_taps.of(oy, pass_index),
                            first: pass_index == 0,
                            last: pass_index + 1 == passes.len(),
                            partial: partial.as_mut_ptr().wrapping_add(row * ow * 2 * LANES),
                            destination,
                        };
                        // SAFETY: items write disjoint (image, channel, row) outputs; the
                        // row's taps lie inside the padded input; `partial` holds the row's
                        // sums when there is more than one pass.
                        unsafe { self.columns(&source, sw, ow, weights, v, &epilogue, &pass) };
                    }
                }
            }
            PARTIAL.set(partial);
        });
    }

    /// Lowers the columns of every image together and runs full blocks over them.
    fn lowered(&self, padded: &Padded, deadline: &Deadline) {
        let g = self.job.g;
        let [_, ow] = g.out_hw;
        let [sh, sw] = self.job.conv.window.strides;
        let k = self.packed.k;
        let total = g.batch * self.job.p;
        let chunk = (LOWERED_VALUES / k.max(1)).max(MAX_COLUMNS).min(total);
        let taps = padded.tap_offsets(self.job.conv, self.job.cin_g);
        let all_taps = 0..k;
        let mut kept = MATRIX.take();
        for group in 0..self.job.conv.group {
            for first in (0..total).step_by(chunk.max(1)) {
                if deadline.expired() {
                    break;
                }
                let cols = chunk.min(total - first);
                let blocks = cols.div_ceil(MAX_COLUMNS);
                // The lanes of a last block past its columns keep stale values: the kernel
                // runs only the columns there are.
                if kept.len() < blocks * k * MAX_COLUMNS {
                    kept.resize(blocks * k * MAX_COLUMNS, 0.0);
                }
                let matrix = &mut kept[..blocks * k * MAX_COLUMNS];
                // Block b of the matrix is [k][MAX_COLUMNS]: tap kk of its columns side by
                // side, so that the kernel reads it as one stream.
                let column_origin = |c: usize| {
                    let (n, q) = (c / self.job.p, c % self.job.p);
                    let (oy, ox) = (q / ow, q % ow);
                    (n * g.in_channels + group * self.job.cin_g) * padded.plane_len()
                        + oy * sh * padded.hw[1]
                        + ox * sw
                };
                super::for_each_chunk(matrix, k * MAX_COLUMNS, 1, |b, block| {
                    let j0 = b * MAX_COLUMNS;
                    let n_cols = MAX_COLUMNS.min(cols - j0);
                    let mut origins = [0; MAX_COLUMNS];
                    for (j, origin) in origins.iter_mut().enumerate().take(n_cols) {
                        *origin = column_origin(first + j0 + j);
                    }
                    for (row, &tap) in block.chunks_exact_mut(MAX_COLUMNS).zip(&taps) {
                        for (value, &origin) in row.iter_mut().zip(&origins[..n_cols]) {
                            *value = padded.data[origin + tap];
                        }
                    }
                });
                let offsets: Vec<usize> = (0..k).map(|kk| kk * MAX_COLUMNS).collect();
                // Items of a few blocks each, panels outer inside an item. When the weights
                // are shared out anyway and the blocks are few, every item takes all the
                // blocks: each panel is then read by one item (late layers at batch 1 read
                // megabytes of weights for a handful of columns).
                let wanted = 2 * rayon::current_num_threads();
                let per_item = if blocks <= 8 && self.packed.panels.div_ceil(2) >= wanted {
                    blocks
                } else {
                    blocks.div_ceil(wanted).clamp(1, 8)
                };
                let ranges = blocks.div_ceil(per_item);
                let shares = self.shares(ranges);
                // Ranges vary fastest, as in `conv_batched`: each thread then takes a share
                // of every range, the short last one included.
                for_each_item(ranges * shares, deadline, |item| {
                    let (range, share) = (item % ranges, item / ranges);
                    let item_blocks = range * per_item..((range + 1) * per_item).min(blocks);
                    for (panel, v) in self.pairs(self.share_panels(share, shares)) {
                        if deadline.expired() {
                            return;
                        }
                        let (channel, epilogue) = self.epilogue(group, panel, v);
                        let weights = self.packed.panel(group, panel);
                        for b in item_blocks.clone() {
                            let b0 = b * MAX_COLUMNS;
                            let n_cols = MAX_COLUMNS.min(cols - b0);
                            let mut columns = [std::ptr::null_mut(); MAX_COLUMNS];
                            for (j, column) in columns.iter_mut().enumerate().take(n_cols) {
                                let (n, q) = ((first + b0 + j) / self.job.p, (first + b0 + j) % self.job.p);
                                // SAFETY: inside `out`: image n, channel `channel`, position q.
                                *column = unsafe {
                                    self.job.out.get().add((n * g.out_channels + channel) * self.job.p + q)
                                };
                            }
                            let destination = Destination::Scattered {
                                columns: &columns[..n_cols],
                                stride: self.job.p,
                                rows: (v * LANES).min(self.job.cout_g - panel * LANES),
                            };
                            let source = Source {
                                src: matrix[b * k * MAX_COLUMNS..].as_ptr(),
                                offsets: offsets.as_ptr(),
                            };
                            let pass = Pass {
                                taps: std::slice::from_ref(&all_taps),
                                first: true,
                                last: true,
                                partial: std::ptr::null_mut(),
                                destination,
                            };
                            // SAFETY: items write disjoint (column, channel) outputs; block b
                            // of the matrix holds k rows of MAX_COLUMNS values.
                            unsafe { self.columns(&source, 1, n_cols, weights, v, &epilogue, &pass) };
                        }
                    }
                });
            }
        }
        if kept.len() <= KEPT_MATRIX_VALUES {
            MATRIX.set(kept);
        }
    }

    /// The taps split into passes of whole input channels, each pass's weights (two panels)
    /// within [`PASS_WEIGHTS`] values: read in place, the taps of a block visit a line of
    /// every input plane they cover, so fewer planes per pass also keep the lines and pages
    /// a block touches few.
    fn passes(&self) -> Vec<std::ops::Range<usize>> {
        let k = self.packed.k;
        let per_channel = (k / self.job.cin_g.max(1)).max(1);
        let count = (2 * LANES * k).div_ceil(PASS_WEIGHTS).clamp(1, self.job.cin_g.max(1));
        let channels = self.job.cin_g.div_ceil(count).max(1);
        (0..self.job.cin_g)
            .step_by(channels)
            .map(|c| c * per_channel..((c + channels) * per_channel).min(k))
            .collect()
    }

    /// The panels of a range as (first panel, panels in the block): pairs, and a single last.
    fn pairs(&self, panels: std::ops::Range<usize>) -> impl Iterator<Item = (usize, usize)> {
        panels.clone().step_by(2).map(move |panel| (panel, (panels.end - panel).min(2)))
    }

    /// The first output channel and the epilogue of the block at `panel` of `group`.
    fn epilogue(&self, group: usize, panel: usize, v: usize) -> (usize, ChannelEpilogue) {
        let first_row = panel * LANES;
        let rows = (v * LANES).min(self.job.cout_g - first_row);
        let channel = group * self.job.cout_g + first_row;
        (channel, ChannelEpilogue::new(self.job.bias, &self.job.conv.activation, channel, rows))
    }

    /// Runs `cols` columns (any number) as blocks of at most 12, over the taps of `pass`.
    ///
    /// # Safety
    /// As for [`ck::block`], for every column j < cols; `pass.partial` holds cols·2·LANES
    /// values unless the pass is both first and last.
    #[allow(clippy::too_many_arguments)]
    unsafe fn columns(
        &self,
        source: &Source,
        stride: usize,
        cols: usize,
        weights: *const f32,
        v: usize,
        epilogue: &ChannelEpilogue,
        pass: &Pass,
    ) {
        // As few blocks as hold the columns, of sizes differing by one at most: a row of 35
        // runs as 12 + 12 + 11, not 12 + 12 + 8 + 2 + 1, whose small blocks wait on their
        // few accumulators at nearly the cost of a full one.
        let blocks = cols.div_ceil(MAX_COLUMNS);
        let mut j = 0;
        for block in 0..blocks {
            let n = cols / blocks + usize::from(block < cols % blocks);
            let source = Source { src: source.src.wrapping_add(j * stride), offsets: source.offsets };
            let sums = pass.partial.wrapping_add(j * 2 * LANES);
            let start = if pass.first { Start::Bias } else { Start::Partial(sums) };
            let finish = if pass.last {
                Finish::Store(pass.destination.past_columns(j))
            } else {
                Finish::Partial(sums)
            };
            // SAFETY: caller's contract.
            unsafe {
                dispatch(stride, v, n, self.packed.k, pass.taps, weights, &source, start, epilogue, &finish)
            };
            j += n;
        }
    }
}

/// One pass of a row of blocks over a range of taps (less those that read only padding), and
/// where its sums go between passes.
struct Pass<'a> {
    taps: &'a [std::ops::Range<usize>],
    /// Whether it is the first pass (the sums start at the bias) and the last (they are stored).
    first: bool,
    last: bool,
    /// `[columns][2·LANES]` partial sums, carried from one range of taps to the next.
    partial: *mut f32,
    destination: Destination<'a>,
}

/// The taps of each pass that an output row reads inside the input. A row whose window
/// reaches into the top or bottom padding would only add zeros times the weights of the taps
/// there, so it skips them: a 7x1 conv on 8 rows (FaceNet's block17) has 44 of its 56 row
/// taps inside, a 3x3 conv on 8 rows 22 of 24. The sums over the taps left are the same
/// (but for the sign of a zero sum).
struct RowTaps {
    /// Per distinct window position, the taps of each pass, as ranges in packed order.
    kinds: Vec<Vec<Vec<std::ops::Range<usize>>>>,
    /// The kind of each output row.
    kind_of_row: Vec<usize>,
}

impl RowTaps {
    fn new(conv: &Conv, g: &ConvGeometry, passes: &[std::ops::Range<usize>]) -> Self {
        let [kh, kw] = conv.window.kernel;
        let ([sh, _], [dh, _]) = (conv.window.strides, conv.window.dilations);
        let (top, h) = (g.pads[0], g.in_hw[0]);
        let per_channel = kh * kw;
        let mut windows: Vec<std::ops::Range<usize>> = Vec::new();
        let mut kinds = Vec::new();
        let kind_of_row = (0..g.out_hw[0])
            .map(|oy| {
                // The kernel rows that land on input rows (padded row oy·sh + ky·dh): a run.
                let inside = |ky: usize| (top..top + h).contains(&(oy * sh + ky * dh));
                let first = (0..kh).find(|&ky| inside(ky)).unwrap_or(kh);
                let end = (first..kh).find(|&ky| !inside(ky)).unwrap_or(kh);
                let window = first..end;
                windows.iter().position(|w| *w == window).unwrap_or_else(|| {
                    let taps = passes
                        .iter()
                        .map(|pass| {
                            if window == (0..kh) {
                                return vec![pass.clone()];
                            }
                            (pass.start / per_channel..pass.end / per_channel)
                                .map(|c| {
                                    c * per_channel + window.start * kw..c * per_channel + window.end * kw
                                })
                                .filter(|taps| !taps.is_empty())
                                .collect()
                        })
                        .collect();
                    windows.push(window);
                    kinds.push(taps);
                    kinds.len() - 1
                })
            })
            .collect();
        RowTaps { kinds, kind_of_row }
    }

    fn of(&self, oy: usize, pass: usize) -> &[std::ops::Range<usize>] {
        &self.kinds[self.kind_of_row[oy]][pass]
    }
}

/// Calls the kernel instance for this stride, panel count and column count.
///
/// # Safety
/// As for [`ck::block`].
#[allow(clippy::too_many_arguments)]
unsafe fn dispatch(
    stride: usize,
    v: usize,
    n: usize,
    k: usize,
    taps: &[std::ops::Range<usize>],
    weights: *const f32,
    source: &Source,
    start: Start,
    epilogue: &ChannelEpilogue,
    finish: &Finish,
) {
    macro_rules! by_columns {
        ($s:literal, $v:literal) => {
            // SAFETY: caller's contract.
            unsafe {
                by_columns!($s, $v; 1 2 3 4 5 6 7 8 9 10 11 12)
            }
        };
        ($s:literal, $v:literal; $($n:literal)*) => {
            match n {
                $($n => ck::block::<$s, $v, $n>(k, taps, weights, source, start, epilogue, finish),)*
                _ => unreachable!("blocks hold 1 to MAX_COLUMNS columns"),
            }
        };
    }
    match (stride, v) {
        (1, 2) => by_columns!(1, 2),
        (1, _) => by_columns!(1, 1),
        (_, 2) => by_columns!(2, 2),
        _ => by_columns!(2, 1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reused_padded_copy_holds_only_this_inputs_values_and_zeros() {
        let geometry = |batch, hw: [usize; 2], pads| ConvGeometry {
            batch,
            in_channels: 2,
            in_hw: hw,
            out_channels: 2,
            out_hw: hw,
            pads,
        };
        // A larger buffer full of NaN is the only spare one.
        let mut spare = Spare::default();
        spare.give_values(vec![f32::NAN; 3 * 2 * 9 * 9]);
        let x: Vec<f32> = (0..2 * 2 * 3 * 4).map(|v| v as f32 + 1.0).collect();
        let padded = Padded::new(&x, &geometry(2, [3, 4], [1, 2, 0, 1]), &mut spare).unwrap();
        assert_eq!(padded.hw, [4, 7]);
        assert_eq!(padded.data.len(), 2 * 2 * 4 * 7);
        for (p, plane) in padded.data.chunks_exact(4 * 7).enumerate() {
            for (y, row) in plane.chunks_exact(7).enumerate() {
                for (xx, &v) in row.iter().enumerate() {
                    let inside = (1..4).contains(&y) && (2..6).contains(&xx);
                    let want = if inside { x[p * 12 + (y - 1) * 4 + (xx - 2)] } else { 0.0 };
                    assert_eq!(v, want, "plane {p}, row {y}, column {xx}");
                }
            }
        }
    }
}
