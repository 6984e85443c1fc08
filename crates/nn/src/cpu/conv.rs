//! 2-D convolution: on AVX-512 CPUs, one of two microkernels (which one, and how it is fed, is
//! chosen per conv: [`winograd`] for 3x3 stride-1 convs with channels enough,
//! [`conv_flat`], [`conv_batched`], [`conv_channels`], or the column kernel over im2col tiles
//! here); elsewhere tiled im2col + SGEMM (the `gemm` crate); a direct loop for depthwise
//! convolutions; bias and activation fused into the output pass, and a residual (an `Add`
//! fused into the conv, which the output holds when the conv starts) added by the column
//! kernel's paths as they write, by the others in one pass after.
//!
//! Work is split into (image, group, column tile) items run in parallel; each item lowers only
//! its own tile of output columns, so the im2col buffer stays in cache whatever the image size.

use super::{SyncPtr, for_each_item};
#[cfg(target_arch = "x86_64")]
use std::sync::OnceLock;

#[cfg(target_arch = "x86_64")]
use super::channel_kernel::{self, ChannelPanels};
#[cfg(target_arch = "x86_64")]
use super::conv_channels::Padded;
#[cfg(target_arch = "x86_64")]
use super::conv_flat::{FlatInput, Phases};
#[cfg(target_arch = "x86_64")]
use super::kernel::PackedWeights;
#[cfg(target_arch = "x86_64")]
use super::trim::{LiveTaps, Trimmed};
#[cfg(target_arch = "x86_64")]
use super::winograd::{self, WinogradWeights};
#[cfg(target_arch = "x86_64")]
use super::{conv_batched, conv_channels, conv_flat, kernel};
use crate::ir::{Activation, Conv};
use crate::shape::ConvGeometry;
use crate::spare::Spare;
use crate::{Deadline, NnError, Tensor};

/// Target size of one im2col tile, in f32 values (256 KiB: comfortably inside L2).
const TILE_VALUES: usize = 64 * 1024;

/// A conv's weights packed for the AVX-512 microkernels: for each kernel on the first run
/// that needs it (which one runs depends on the output's width, known only then), then kept
/// with the prepared graph.
#[derive(Debug, Default)]
pub struct PackedConv {
    #[cfg(target_arch = "x86_64")]
    columns: OnceLock<PackedWeights>,
    #[cfg(target_arch = "x86_64")]
    channels: OnceLock<ChannelPanels>,
    /// Per [`winograd::Tiles`]: a conv runs on F(2x2) or F(4x4) by its output's size.
    #[cfg(target_arch = "x86_64")]
    winograd: [OnceLock<WinogradWeights>; 2],
    /// The conv without the taps that only read padding, for the input size of its first
    /// run (others run uncut), if it has such taps (`None`: they could not be cut).
    #[cfg(target_arch = "x86_64")]
    trimmed: OnceLock<Option<Box<Trimmed>>>,
}

/// Whether this CPU runs the AVX-512 microkernels (their weights are then packed).
pub fn microkernels_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        kernel::available()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Computes `out` ([N, M, OH, OW]) from `x` ([N, C, H, W]), weights `w` ([M, C/g, kh, kw]),
/// one bias per output channel; with `packed` (the same weights packed for a kernel) on the
/// AVX-512 microkernels. Past `deadline` the items not yet started are skipped, leaving `out`
/// incomplete: the caller checks the deadline and discards it. A padded copy of the input is
/// made in one of the run's `spare` buffers, and given back; it fails only when no memory is
/// left for it.
#[allow(clippy::too_many_arguments)]
pub fn conv2d(
    x: &[f32],
    w: &[f32],
    packed: Option<&PackedConv>,
    bias: &[f32],
    conv: &Conv,
    g: &ConvGeometry,
    out: &mut [f32],
    spare: &mut Spare,
    deadline: &Deadline,
) -> Result<(), NnError> {
    if out.is_empty() {
        // An empty batch or output: nothing to write, and no items to split work into.
        return Ok(());
    }
    #[cfg(target_arch = "x86_64")]
    if let Some(packed) = packed
        && let Some(taps) = LiveTaps::of(conv, g)
        && let Some(trimmed) =
            packed.trimmed.get_or_init(|| Trimmed::new(conv, w, g, taps).map(Box::new)).as_deref()
        && trimmed.fits(taps, g)
    {
        let g = trimmed.geometry(g)?;
        let (w, packed) = (&trimmed.weights, Some(&trimmed.packed));
        // The cut window; the activation and residual of this call (the node's own, or none
        // where `conv2d_then_add` runs it plain).
        let cut =
            Conv { activation: conv.activation.clone(), residual: conv.residual, ..trimmed.conv.clone() };
        return conv2d(x, w, packed, bias, &cut, &g, out, spare, deadline);
    }
    let groups = conv.group;
    let cin_g = g.in_channels / groups;
    let cout_g = g.out_channels / groups;
    let [kh, kw] = conv.window.kernel;
    let k = cin_g * kh * kw;
    #[cfg(target_arch = "x86_64")]
    let path = packed.filter(|_| !is_depthwise(cin_g, cout_g)).map(|_| Path::of(conv, g, cin_g, cout_g, k));
    #[cfg(not(target_arch = "x86_64"))]
    let path: Option<Path> = None;
    if conv.residual && !path.as_ref().is_some_and(Path::adds_while_writing) {
        return conv2d_then_add(x, w, packed, bias, conv, g, out, spare, deadline);
    }
    if is_depthwise(cin_g, cout_g) {
        depthwise(x, w, bias, conv, g, deadline, out);
        return Ok(());
    }
    #[cfg(target_arch = "x86_64")]
    if let (Some(packed), Some(path)) = (packed, path) {
        let columns = || packed.columns.get_or_init(|| PackedWeights::new(w, groups, cout_g, k));
        if let Path::Columns = path {
            conv2d_packed(x, columns(), bias, conv, g, out, deadline);
            return Ok(());
        }
        if let (Path::Flat, [2, 2]) = (&path, conv.window.strides) {
            let phases = Phases::new(x, g, spare)?;
            conv_flat::conv2d(
                &phases.input(conv, cin_g),
                columns(),
                ConvJob::new(bias, conv, g, out),
                deadline,
            );
            phases.recycle(spare);
            return Ok(());
        }
        let padded = Padded::new(x, g, spare)?;
        let job = ConvJob::new(bias, conv, g, out);
        match path {
            Path::Winograd(tiles) => {
                let weights = packed.winograd[tiles as usize]
                    .get_or_init(|| WinogradWeights::new(w, cout_g, cin_g, tiles));
                winograd::conv2d(&padded, weights, job, deadline)
            }
            Path::Flat => {
                conv_flat::conv2d(&FlatInput::padded(&padded, conv, cin_g), columns(), job, deadline)
            }
            Path::Batched => conv_batched::conv2d(&padded, columns(), job, deadline),
            Path::Channels => {
                let panels = packed.channels.get_or_init(|| ChannelPanels::new(w, groups, cout_g, k));
                conv_channels::conv2d(&padded, panels, job, deadline)
            }
            Path::Columns => unreachable!("run above"),
        }
        padded.recycle(spare);
        return Ok(());
    }
    let _ = (packed, spare);
    let p = g.out_hw[0] * g.out_hw[1];
    let pointwise = kh == 1 && kw == 1 && conv.window.strides == [1, 1] && g.pads == [0, 0, 0, 0];
    let tile = (TILE_VALUES / k.max(1)).clamp(64, 8192).min(p);
    let tiles = p.div_ceil(tile);
    let items = g.batch * groups * tiles;
    let gemm_threads = if items >= rayon::current_num_threads() {
        gemm::Parallelism::None
    } else {
        gemm::Parallelism::Rayon(0)
    };
    let out_ptr = SyncPtr(out.as_mut_ptr());
    let in_plane = g.in_hw[0] * g.in_hw[1];

    let run_item = |item: usize| {
        let t = item % tiles;
        let group = (item / tiles) % groups;
        let n = item / (tiles * groups);
        let p0 = t * tile;
        let cols = tile.min(p - p0);
        let input = &x[(n * g.in_channels + group * cin_g) * in_plane..][..cin_g * in_plane];
        // Taken out of the thread-local, not borrowed: `gemm` below may run other rayon jobs
        // on this thread while it waits (another conv item of this or another graph), and
        // those take the (then empty) slot for themselves instead of finding it borrowed.
        let mut scratch = SCRATCH.take();
        let (rhs, rhs_rs) = if pointwise {
            (input[p0..].as_ptr(), p as isize)
        } else {
            if scratch.len() < k * cols {
                scratch.resize(k * cols, 0.0);
            }
            im2col(input, cin_g, conv, g, p0, cols, &mut scratch[..k * cols]);
            (scratch.as_ptr(), cols as isize)
        };
        let first_channel = group * cout_g;
        // SAFETY: every item writes only rows [first_channel, +cout_g) of image n, columns
        // [p0, p0 + cols): items are disjoint, and `out` outlives the parallel loop.
        let dst = unsafe { out_ptr.get().add((n * g.out_channels + first_channel) * p + p0) };
        for row in 0..cout_g {
            let b = bias[first_channel + row];
            // SAFETY: inside this item's region (see above).
            let dst_row = unsafe { std::slice::from_raw_parts_mut(dst.add(row * p), cols) };
            dst_row.fill(b);
        }
        // SAFETY: pointers and strides describe the matrices above: lhs [cout_g, k] row-major
        // weights of this group, rhs [k, cols] with row stride rhs_rs, dst [cout_g, cols] with
        // row stride p.
        unsafe {
            gemm::gemm(
                cout_g,
                cols,
                k,
                dst,
                1,
                p as isize,
                true,
                w[first_channel * k..].as_ptr(),
                1,
                k as isize,
                rhs,
                1,
                rhs_rs,
                1.0,
                1.0,
                false,
                false,
                false,
                gemm_threads,
            );
        }
        if conv.activation != Activation::None {
            for row in 0..cout_g {
                // SAFETY: inside this item's region (see above).
                let dst_row = unsafe { std::slice::from_raw_parts_mut(dst.add(row * p), cols) };
                activate(dst_row, &conv.activation, first_channel + row);
            }
        }
        SCRATCH.set(scratch);
    };

    for_each_item(items, deadline, run_item);
    Ok(())
}

/// Whether the column kernel reads this 1x1 stride-1 conv's input in place (its planes are
/// the columns), over enough positions to fill its blocks: there it is faster than the
/// channel kernel.
#[cfg(target_arch = "x86_64")]
fn pointwise_fills_blocks(conv: &Conv, g: &ConvGeometry) -> bool {
    let [kh, kw] = conv.window.kernel;
    let stride_1 = conv.window.strides == [1, 1] && conv.window.dilations == [1, 1];
    let pointwise = kh == 1 && kw == 1 && stride_1 && g.pads == [0; 4];
    let p = g.out_hw[0] * g.out_hw[1];
    pointwise && 4 * p >= 3 * p.div_ceil(kernel::NR) * kernel::NR
}

/// Whether the column kernel runs this conv in blocks that span output rows
/// ([`conv_flat`]): a stride-1 or stride-2 conv (other than a 1x1 one read in place) with too
/// few output channels for the channel kernel (P-Net's first), or at least 24 columns wide
/// over fewer than [`FEW_TAPS`] taps (O-Net's first, 27 taps: 0.77-0.81 ms at batch 32 against
/// 0.85-0.88 on the channel kernel, whose fixed cost per block weighs on so few taps; FaceNet's
/// first, 27 taps at stride 2 over the input's phases: 2.7-3.8 -> 2.1-3.2 ms alone at batch 16,
/// 2026-12-06, most of the rest splitting the phases). Since the channel
/// kernel keeps its accumulators in registers it is the faster on every other conv of the
/// shipped graphs, by nn_layers at batch 16 alternating (2026-12-05): dlib-resnet-128's 35x35
/// convs 8.2-8.7 -> 7.9 ms in all, FaceNet's 77x77 and 36x36 stem 54.7 -> 49.2-50.3 ms,
/// MMOD's 3x3 convs ~5% and P-Net's second and third (90 and 144 taps) ~8%.
#[cfg(target_arch = "x86_64")]
fn spans_rows(conv: &Conv, g: &ConvGeometry, cout_g: usize, k: usize) -> bool {
    let [kh, kw] = conv.window.kernel;
    let pointwise = kh == 1 && kw == 1 && g.pads == [0; 4];
    let row = g.in_hw[1] + g.pads[1] + g.pads[3];
    let wide_over_few_taps = 4 * g.out_hw[1] >= 3 * kernel::NR && k < FEW_TAPS;
    !pointwise
        && (cout_g < channel_kernel::LANES || wide_over_few_taps)
        && conv_flat::suits(conv, row, g.out_hw)
}

/// See [`spans_rows`].
#[cfg(target_arch = "x86_64")]
const FEW_TAPS: usize = 64;

/// Whether a conv runs on the direct depthwise loop (its weights are never packed).
pub fn is_depthwise(cin_g: usize, cout_g: usize) -> bool {
    cin_g == 1 && cout_g == 1
}

/// [`conv2d`] on the microkernel, one [`PackedItems`] item per rayon job.
#[cfg(target_arch = "x86_64")]
fn conv2d_packed(
    x: &[f32],
    packed: &PackedWeights,
    bias: &[f32],
    conv: &Conv,
    g: &ConvGeometry,
    out: &mut [f32],
    deadline: &Deadline,
) {
    let items = PackedItems::new(x, packed, bias, conv, g, out);
    for_each_item(items.count(), deadline, |item| items.run(item));
}

/// What the items of one conv share, whichever kernel runs them.
#[cfg(target_arch = "x86_64")]
pub(super) struct ConvJob<'a> {
    pub bias: &'a [f32],
    pub conv: &'a Conv,
    pub g: &'a ConvGeometry,
    /// The output; items write disjoint parts of it.
    pub out: SyncPtr,
    pub cin_g: usize,
    pub cout_g: usize,
    /// Output positions per image and channel.
    pub p: usize,
}

#[cfg(target_arch = "x86_64")]
impl<'a> ConvJob<'a> {
    pub fn new(bias: &'a [f32], conv: &'a Conv, g: &'a ConvGeometry, out: &'a mut [f32]) -> Self {
        ConvJob {
            bias,
            conv,
            g,
            out: SyncPtr(out.as_mut_ptr()),
            cin_g: g.in_channels / conv.group,
            cout_g: g.out_channels / conv.group,
            p: g.out_hw[0] * g.out_hw[1],
        }
    }
}

/// A convolution on the microkernel as items: (image, group, column tile, share of the output
/// channels). The channels are split only when there are too few tiles to keep every thread
/// busy (batch 1, small late layers). Each item lowers its tile once (im2col, skipped for a
/// 1x1 stride-1 convolution, whose input is read in place, and for the direct path) and runs
/// every block of its channels over it.
#[cfg(target_arch = "x86_64")]
struct PackedItems<'a> {
    x: &'a [f32],
    packed: &'a PackedWeights,
    job: ConvJob<'a>,
    /// Values in one column of the lowered input: cin_g * kh * kw.
    k: usize,
    tile: usize,
    tiles: usize,
    shares: usize,
    panels_per_item: usize,
    pointwise: bool,
}

/// The part of the output one item writes.
#[cfg(target_arch = "x86_64")]
struct Item {
    n: usize,
    group: usize,
    /// First output column of the tile, and how many.
    p0: usize,
    cols: usize,
    panels: std::ops::Range<usize>,
}

#[cfg(target_arch = "x86_64")]
impl<'a> PackedItems<'a> {
    fn new(
        x: &'a [f32],
        packed: &'a PackedWeights,
        bias: &'a [f32],
        conv: &'a Conv,
        g: &'a ConvGeometry,
        out: &'a mut [f32],
    ) -> Self {
        let job = ConvJob::new(bias, conv, g, out);
        let (cin_g, p) = (job.cin_g, job.p);
        let [kh, kw] = conv.window.kernel;
        let k = cin_g * kh * kw;
        let pointwise = kh == 1 && kw == 1 && conv.window.strides == [1, 1] && g.pads == [0, 0, 0, 0];
        let tile = (TILE_VALUES / k.max(1)).clamp(64, 8192);
        let width = block_width(pointwise);
        let tile = if tile >= p { p } else { tile / width * width };
        let tiles = p.div_ceil(tile);
        let panels = packed.panels;
        let base_items = g.batch * conv.group * tiles;
        let wanted = 2 * rayon::current_num_threads();
        let panels_per_item =
            if base_items >= wanted { panels } else { panels.div_ceil(wanted.div_ceil(base_items)).max(1) };
        PackedItems {
            x,
            packed,
            job,
            k,
            tile,
            tiles,
            shares: panels.div_ceil(panels_per_item),
            panels_per_item,
            pointwise,
        }
    }

    fn count(&self) -> usize {
        self.job.g.batch * self.job.conv.group * self.tiles * self.shares
    }

    fn run(&self, item: usize) {
        // Shares vary slowest: each thread then takes a share of every tile, the short last
        // one included (see `conv_batched::multiply`).
        let t = item % self.tiles;
        let group = (item / self.tiles) % self.job.conv.group;
        let n = (item / (self.tiles * self.job.conv.group)) % self.job.g.batch;
        let share = item / (self.tiles * self.job.conv.group * self.job.g.batch);
        let p0 = t * self.tile;
        let first_panel = share * self.panels_per_item;
        let item = Item {
            n,
            group,
            p0,
            cols: self.tile.min(self.job.p - p0),
            panels: first_panel..(first_panel + self.panels_per_item).min(self.packed.panels),
        };
        let in_plane = self.job.g.in_hw[0] * self.job.g.in_hw[1];
        let input = &self.x[(n * self.job.g.in_channels + group * self.job.cin_g) * in_plane..]
            [..self.job.cin_g * in_plane];
        self.run_lowered(input, &item)
    }

    /// The item's panels as (panel, its rows, its first output channel).
    fn panels(&self, item: &Item) -> impl Iterator<Item = (usize, usize, usize)> {
        let (cout_g, group) = (self.job.cout_g, item.group);
        item.panels.clone().map(move |panel| {
            let first_row = panel * kernel::MR;
            (panel, kernel::MR.min(cout_g - first_row), group * cout_g + first_row)
        })
    }

    /// Lowers the item's tile (unless the input is already its columns) and runs the blocks
    /// over it.
    fn run_lowered(&self, input: &[f32], item: &Item) {
        let (k, p, cols) = (self.k, self.job.p, item.cols);
        // Taken out of the thread-local, not borrowed: another item may run on this thread
        // while this one is in progress (rayon work stealing), and it then finds the slot empty.
        let mut scratch = SCRATCH.take();
        let (col, col_stride) = if self.pointwise {
            (input[item.p0..].as_ptr(), p)
        } else {
            if scratch.len() < k * cols {
                scratch.resize(k * cols, 0.0);
            }
            im2col(input, self.job.cin_g, self.job.conv, self.job.g, item.p0, cols, &mut scratch[..k * cols]);
            (scratch.as_ptr(), cols)
        };
        let width = block_width(self.pointwise);
        for c0 in (0..cols).step_by(width) {
            let block_cols = width.min(cols - c0);
            for taps in kernel::tap_ranges(k) {
                for (panel, rows, channel) in self.panels(item) {
                    let bias = block_bias(self.job.bias, channel, rows);
                    let start = match (taps.start, self.job.conv.residual) {
                        (0, false) => kernel::Start::Bias(&bias),
                        // The output holds the residual: the sums start from it.
                        (0, true) => kernel::Start::OutputAndBias(&bias),
                        _ => kernel::Start::Output,
                    };
                    let epilogue = if taps.end == k {
                        kernel::Epilogue::of(&self.job.conv.activation, channel, rows)
                    } else {
                        kernel::Epilogue::None
                    };
                    let dst = self
                        .job
                        .out
                        .get()
                        .wrapping_add((item.n * self.job.g.out_channels + channel) * p + item.p0 + c0);
                    let panel_weights = &self.packed.panel(item.group, panel, k)[taps.start * kernel::MR..];
                    let columns = col.wrapping_add(taps.start * col_stride + c0);
                    // The first panel over a 1x1 conv's input fetches its rows ahead.
                    let fetch = self.pointwise && panel == item.panels.start;
                    // SAFETY: every item writes only rows [channel, +rows) of image n, columns
                    // [p0, p0 + cols), disjoint from every other item's, and the tap ranges
                    // before this one wrote them; `col` holds k rows of `cols` values from
                    // column c0 on, `col_stride` apart (the im2col tile, or the input planes
                    // of a pointwise conv); kernel::available() held when `packed` was made.
                    unsafe {
                        by_rows!(
                            rows,
                            kernel::block,
                            taps.len(),
                            panel_weights,
                            columns,
                            col_stride,
                            block_cols,
                            start,
                            epilogue,
                            rows,
                            dst,
                            p,
                            fetch,
                        )
                    }
                }
            }
        }
        SCRATCH.set(scratch);
    }
}

/// The columns per block of the column kernel: [`kernel::NR_WIDE`] over a 1x1 conv's input
/// read in place, [`kernel::NR`] over an im2col tile. On the tiles 48 was the slower: MMOD's
/// first conv (5x5, stride 2, 3 -> 16 channels, a quarter of the pyramid) 5.4-6.3 ms against
/// 4.7-6.4 at 32 in six alternating pairs (2-core VM, 2026-12-06).
#[cfg(target_arch = "x86_64")]
fn block_width(pointwise: bool) -> usize {
    if pointwise { kernel::NR_WIDE } else { kernel::NR }
}

/// Calls a column-kernel function with as few computed rows as hold `rows` (1, 2, 4 or MR).
#[cfg(target_arch = "x86_64")]
macro_rules! by_rows {
    ($rows:expr, $($f:ident)::+, $($arg:expr),* $(,)?) => {
        match $rows {
            1 => $($f)::+::<1>($($arg),*),
            2 => $($f)::+::<2>($($arg),*),
            3 | 4 => $($f)::+::<4>($($arg),*),
            _ => $($f)::+::<{ kernel::MR }>($($arg),*),
        }
    };
}
#[cfg(target_arch = "x86_64")]
pub(super) use by_rows;

/// The biases of channels [channel, channel + rows) as one block's (zeros past them).
#[cfg(target_arch = "x86_64")]
pub(super) fn block_bias(bias: &[f32], channel: usize, rows: usize) -> [f32; kernel::MR] {
    let mut lanes = [0.0; kernel::MR];
    lanes[..rows].copy_from_slice(&bias[channel..channel + rows]);
    lanes
}

thread_local! {
    /// Each worker's im2col buffer, kept between calls so it is allocated (and zeroed) once.
    /// A `Cell`, not a `RefCell`: it is moved out for the length of an item and put back, so
    /// nothing stays borrowed across the nested parallelism inside an item.
    static SCRATCH: std::cell::Cell<Vec<f32>> = const { std::cell::Cell::new(Vec::new()) };
}

/// Which microkernel path runs a (non-depthwise) conv with packed weights.
#[cfg(target_arch = "x86_64")]
enum Path {
    /// The column kernel over the input's planes (a 1x1 conv) or im2col tiles.
    Columns,
    // The others read the input with its padding made explicit.
    Winograd(winograd::Tiles),
    Flat,
    Batched,
    Channels,
}

#[cfg(not(target_arch = "x86_64"))]
enum Path {}

#[cfg(target_arch = "x86_64")]
impl Path {
    fn of(conv: &Conv, g: &ConvGeometry, cin_g: usize, cout_g: usize, k: usize) -> Path {
        if let Some(tiles) = winograd::tiles(conv, g, cin_g, cout_g) {
            Path::Winograd(tiles)
        } else if spans_rows(conv, g, cout_g, k) {
            Path::Flat
        } else if conv_channels::suits(cout_g, k) && !pointwise_fills_blocks(conv, g) {
            if conv_batched::suits(g) { Path::Batched } else { Path::Channels }
        } else {
            Path::Columns
        }
    }
}

impl Path {
    /// Whether the path adds a residual (which the output holds) as it writes its output.
    /// The others write it without reading it: [`conv2d_then_add`].
    fn adds_while_writing(&self) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            matches!(self, Path::Columns | Path::Batched)
        }
        #[cfg(not(target_arch = "x86_64"))]
        match *self {}
    }
}

/// A conv with a residual (`out` holds it) on a path that writes its output without reading
/// it: the conv into spare values, then added to the residual and activated in one pass,
/// the same sums as the unfused Add and activation.
#[allow(clippy::too_many_arguments)]
fn conv2d_then_add(
    x: &[f32],
    w: &[f32],
    packed: Option<&PackedConv>,
    bias: &[f32],
    conv: &Conv,
    g: &ConvGeometry,
    out: &mut [f32],
    spare: &mut Spare,
    deadline: &Deadline,
) -> Result<(), NnError> {
    let plain = Conv { activation: Activation::None, residual: false, ..conv.clone() };
    let mut sums = spare.values(out.len())?;
    let result = conv2d(x, w, packed, bias, &plain, g, &mut sums, spare, deadline);
    if result.is_ok() {
        let (plane, channels) = (g.out_hw[0] * g.out_hw[1], g.out_channels);
        let sums = &sums;
        super::for_each_chunk(out, plane, super::ops::chunks_per_task(plane), |i, residual| {
            residual.iter_mut().zip(&sums[i * plane..]).for_each(|(r, s)| *r += s);
            activate(residual, &conv.activation, i % channels);
        });
    }
    spare.give_values(sums);
    result
}

/// Applies `activation` to a `[N, C, ...]` tensor's values, per channel.
pub(super) fn activate_planes(t: &mut Tensor, activation: &Activation) {
    let (channels, plane) = (t.shape()[1], t.shape()[2..].iter().product::<usize>());
    for (i, values) in t.data_mut().chunks_mut(plane.max(1)).enumerate() {
        activate(values, activation, i % channels);
    }
}

/// Applies `activation` to one output channel's values; the match is outside the loop so the
/// loop vectorizes.
pub(super) fn activate(values: &mut [f32], activation: &Activation, channel: usize) {
    match activation {
        Activation::None => {}
        Activation::Relu => values.iter_mut().for_each(|v| *v = v.max(0.0)),
        Activation::LeakyRelu(alpha) => {
            values.iter_mut().for_each(|v| *v = if *v < 0.0 { *v * alpha } else { *v })
        }
        Activation::PRelu(slopes) => {
            let slope = slopes.data()[channel];
            values.iter_mut().for_each(|v| *v = if *v < 0.0 { *v * slope } else { *v });
        }
    }
}

/// Lowers output columns [p0, p0 + cols) of one group's input ([C_g, H, W]) into `col`
/// ([C_g·kh·kw, cols]).
fn im2col(
    input: &[f32],
    channels: usize,
    conv: &Conv,
    g: &ConvGeometry,
    p0: usize,
    cols: usize,
    col: &mut [f32],
) {
    let [kh, kw] = conv.window.kernel;
    let [sh, sw] = conv.window.strides;
    let [dh, dw] = conv.window.dilations;
    let [h, w] = g.in_hw;
    let ow = g.out_hw[1];
    let (pt, pl) = (g.pads[0] as isize, g.pads[1] as isize);
    let mut row = 0;
    for c in 0..channels {
        let plane = &input[c * h * w..][..h * w];
        for ky in 0..kh {
            for kx in 0..kw {
                let dst = &mut col[row * cols..][..cols];
                row += 1;
                let x_off = kx as isize * dw as isize - pl;
                // Output columns whose input x lies inside the image: ox in [ox_lo, ox_hi).
                let ox_lo = if x_off >= 0 { 0 } else { ((-x_off) as usize).div_ceil(sw) };
                let ox_hi = if (w as isize) <= x_off {
                    0
                } else {
                    (((w as isize - 1 - x_off) as usize) / sw + 1).min(ow)
                };
                let mut p = p0;
                let mut filled = 0;
                while filled < cols {
                    let oy = p / ow;
                    let ox0 = p % ow;
                    let run = (ow - ox0).min(cols - filled);
                    let seg = &mut dst[filled..filled + run];
                    let iy = (oy * sh) as isize + ky as isize * dh as isize - pt;
                    if iy < 0 || iy >= h as isize {
                        seg.fill(0.0);
                    } else {
                        let src = &plane[iy as usize * w..][..w];
                        let lo = ox_lo.clamp(ox0, ox0 + run);
                        let hi = ox_hi.clamp(lo, ox0 + run);
                        seg[..lo - ox0].fill(0.0);
                        seg[hi - ox0..].fill(0.0);
                        let inner = &mut seg[lo - ox0..hi - ox0];
                        if !inner.is_empty() {
                            let ix0 = (lo * sw) as isize + x_off;
                            if sw == 1 {
                                inner.copy_from_slice(&src[ix0 as usize..ix0 as usize + inner.len()]);
                            } else {
                                for (i, v) in inner.iter_mut().enumerate() {
                                    *v = src[ix0 as usize + i * sw];
                                }
                            }
                        }
                    }
                    filled += run;
                    p += run;
                }
            }
        }
    }
}

/// One filter per channel: a direct loop beats lowering to a GEMM with k = kh·kw.
fn depthwise(
    x: &[f32],
    w: &[f32],
    bias: &[f32],
    conv: &Conv,
    g: &ConvGeometry,
    deadline: &Deadline,
    out: &mut [f32],
) {
    let [kh, kw] = conv.window.kernel;
    let [sh, sw] = conv.window.strides;
    let [dh, dw] = conv.window.dilations;
    let [h, iw] = g.in_hw;
    let [oh, ow] = g.out_hw;
    let (pt, pl) = (g.pads[0] as isize, g.pads[1] as isize);
    let channels = g.out_channels;
    let planes_per_task = (16_384 / (oh * ow * kh * kw).max(1)).max(1);
    super::for_each_chunk(out, oh * ow, planes_per_task, |plane_index, dst| {
        let c = plane_index % channels;
        let n = plane_index / channels;
        let src = &x[(n * g.in_channels + c) * h * iw..][..h * iw];
        let filter = &w[c * kh * kw..][..kh * kw];
        for oy in 0..oh {
            if deadline.expired() {
                return;
            }
            for ox in 0..ow {
                let mut acc = bias[c];
                for ky in 0..kh {
                    let iy = (oy * sh) as isize + (ky * dh) as isize - pt;
                    if iy < 0 || iy >= h as isize {
                        continue;
                    }
                    for kx in 0..kw {
                        let ix = (ox * sw) as isize + (kx * dw) as isize - pl;
                        if ix >= 0 && ix < iw as isize {
                            acc += src[iy as usize * iw + ix as usize] * filter[ky * kw + kx];
                        }
                    }
                }
                dst[oy * ow + ox] = conv.activation.apply(acc, c);
            }
        }
    });
}
