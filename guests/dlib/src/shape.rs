//! dlib's shape predictor (an ensemble of regression trees, Kazemi & Sullivan 2014), run as
//! dlib 20.0.1's `shape_predictor::operator()` runs it (dlib/image_processing/shape_predictor.h),
//! on the flat `RSP1` file the converter writes (xtask/src/convert/shape_predictor.rs).

/// A parsed `RSP1` shape predictor.
pub struct ShapePredictor {
    parts: usize,
    splits: usize,
    /// `[x0, y0, x1, y1, ...]` in the face box's unit square.
    initial: Vec<f32>,
    cascades: Vec<Cascade>,
}

struct Cascade {
    anchors: Vec<u32>,
    deltas: Vec<[f32; 2]>,
    trees: Vec<Tree>,
}

struct Tree {
    splits: Vec<(u32, u32, f32)>,
    /// `splits + 1` leaves of `2 · parts` values each.
    leaves: Vec<f32>,
}

impl ShapePredictor {
    pub fn parse(bytes: &[u8]) -> Result<Self, String> {
        let mut r = Cursor { bytes, pos: 0 };
        if r.take(4)? != b"RSP1" {
            return Err("not an RSP1 shape predictor".into());
        }
        let [parts, cascades, trees, splits, features] =
            [r.u32()?, r.u32()?, r.u32()?, r.u32()?, r.u32()?].map(|v| v as usize);
        let initial = r.f32s(2 * parts)?;
        let mut all = Vec::with_capacity(cascades);
        for _ in 0..cascades {
            let anchors = (0..features).map(|_| r.u32()).collect::<Result<Vec<_>, _>>()?;
            let deltas =
                (0..features).map(|_| Ok([r.f32()?, r.f32()?])).collect::<Result<Vec<_>, String>>()?;
            let mut forest = Vec::with_capacity(trees);
            for _ in 0..trees {
                let split_values =
                    (0..splits)
                        .map(|_| Ok((r.u32()?, r.u32()?, r.f32()?)))
                        .collect::<Result<Vec<_>, String>>()?;
                let leaves = r.f32s((splits + 1) * 2 * parts)?;
                forest.push(Tree { splits: split_values, leaves });
            }
            if anchors.iter().any(|&a| a as usize >= parts) {
                return Err("an anchor beyond the shape's parts".into());
            }
            all.push(Cascade { anchors, deltas, trees: forest });
        }
        if r.pos != bytes.len() {
            return Err(format!("{} bytes after the shape predictor", bytes.len() - r.pos));
        }
        Ok(ShapePredictor { parts, splits, initial, cascades: all })
    }

    pub fn parts(&self) -> usize {
        self.parts
    }

    /// The parts of the face in `rect` (inclusive pixel box `[left, top, right, bottom]`) of an
    /// RGB image, in the predictor's order, rounded to whole pixels as dlib returns them.
    pub fn predict(&self, rgb: &[u8], width: usize, height: usize, rect: [i64; 4]) -> Vec<[i64; 2]> {
        let [left, top, right, bottom] = rect.map(|v| v as f64);
        // dlib's unnormalizing_tform: (0,0) to the top-left corner, (1,1) to the bottom-right.
        let to_image = |x: f64, y: f64| (left + x * (right - left), top + y * (bottom - top));
        let mut shape = self.initial.clone();
        let mut features = Vec::new();
        for cascade in &self.cascades {
            let m = similarity_linear(&self.initial, &shape);
            features.clear();
            for (&anchor, delta) in cascade.anchors.iter().zip(&cascade.deltas) {
                let a = anchor as usize;
                let (dx, dy) = (delta[0], delta[1]);
                // float math as dlib: tform (float 2x2) · delta + the anchor's current location.
                let nx = m[0] * dx + m[1] * dy + shape[2 * a];
                let ny = m[2] * dx + m[3] * dy + shape[2 * a + 1];
                let (ix, iy) = to_image(f64::from(nx), f64::from(ny));
                let (px, py) = ((ix + 0.5).floor() as i64, (iy + 0.5).floor() as i64);
                let inside = px >= 0 && py >= 0 && (px as usize) < width && (py as usize) < height;
                features.push(if inside {
                    let i = (py as usize * width + px as usize) * 3;
                    ((u32::from(rgb[i]) + u32::from(rgb[i + 1]) + u32::from(rgb[i + 2])) / 3) as f32
                } else {
                    0.0
                });
            }
            for tree in &cascade.trees {
                let mut i = 0;
                while i < self.splits {
                    let (a, b, thresh) = tree.splits[i];
                    i = if features[a as usize] - features[b as usize] > thresh {
                        2 * i + 1
                    } else {
                        2 * i + 2
                    };
                }
                let leaf = &tree.leaves[(i - self.splits) * 2 * self.parts..][..2 * self.parts];
                shape.iter_mut().zip(leaf).for_each(|(s, l)| *s += l);
            }
        }
        shape
            .chunks_exact(2)
            .map(|p| {
                let (x, y) = to_image(f64::from(p[0]), f64::from(p[1]));
                [(x + 0.5).floor() as i64, (y + 0.5).floor() as i64]
            })
            .collect()
    }
}

/// The 2x2 part `[a, b, c, d]` (row-major) of the least-squares similarity transform taking
/// the points `from` to `to` (dlib's `find_similarity_transform`, Umeyama's method, which in 2-D
/// has this closed form), as float like dlib's `matrix_cast<float>`.
pub fn similarity_linear(from: &[f32], to: &[f32]) -> [f32; 4] {
    let n = from.len() / 2;
    let mean = |v: &[f32], k: usize| v.chunks_exact(2).map(|p| f64::from(p[k])).sum::<f64>() / n as f64;
    let (fx, fy, tx, ty) = (mean(from, 0), mean(from, 1), mean(to, 0), mean(to, 1));
    let (mut dot, mut cross, mut norm) = (0.0, 0.0, 0.0);
    for (f, t) in from.chunks_exact(2).zip(to.chunks_exact(2)) {
        let (ax, ay) = (f64::from(f[0]) - fx, f64::from(f[1]) - fy);
        let (bx, by) = (f64::from(t[0]) - tx, f64::from(t[1]) - ty);
        dot += ax * bx + ay * by;
        cross += ax * by - ay * bx;
        norm += ax * ax + ay * ay;
    }
    if norm == 0.0 {
        return [1.0, 0.0, 0.0, 1.0];
    }
    let (a, b) = (dot / norm, cross / norm);
    [a as f32, -b as f32, b as f32, a as f32]
}

struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], String> {
        let end =
            self.pos.checked_add(n).filter(|&e| e <= self.bytes.len()).ok_or("truncated shape predictor")?;
        let s = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes")))
    }

    fn f32(&mut self) -> Result<f32, String> {
        Ok(f32::from_bits(self.u32()?))
    }

    fn f32s(&mut self, n: usize) -> Result<Vec<f32>, String> {
        (0..n).map(|_| self.f32()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn similarity_of_a_rotated_scaled_copy() {
        let from = [0.0, 0.0, 1.0, 0.0, 0.0, 1.0];
        // Rotated 90 degrees and doubled, then shifted.
        let to = [5.0, 5.0, 5.0, 7.0, 3.0, 5.0];
        let m = similarity_linear(&from, &to);
        let close = |a: f32, b: f32| (a - b).abs() < 1e-6;
        assert!(close(m[0], 0.0) && close(m[1], -2.0) && close(m[2], 2.0) && close(m[3], 0.0), "{m:?}");
    }

    #[test]
    fn a_one_split_predictor_moves_parts_by_its_leaves() {
        // 1 part, 1 cascade of 1 tree with 1 split on features 0 - 1 > 10.
        let mut bytes = b"RSP1".to_vec();
        for v in [1u32, 1, 1, 1, 2] {
            bytes.extend(v.to_le_bytes());
        }
        let f = |b: &mut Vec<u8>, v: f32| b.extend(v.to_le_bytes());
        f(&mut bytes, 0.5);
        f(&mut bytes, 0.5);
        bytes.extend(0u32.to_le_bytes());
        bytes.extend(0u32.to_le_bytes());
        for v in [-0.5f32, -0.5, 0.5, 0.5] {
            f(&mut bytes, v); // feature 0 at the top-left corner, feature 1 at the bottom-right
        }
        bytes.extend(0u32.to_le_bytes());
        bytes.extend(1u32.to_le_bytes());
        f(&mut bytes, 10.0);
        for v in [0.25f32, 0.0, -0.25, 0.0] {
            f(&mut bytes, v);
        }
        let sp = ShapePredictor::parse(&bytes).unwrap();
        // A 3x3 image, white at (0, 0): feature 0 - feature 1 = 255 > 10, left leaf (+0.25 x).
        let mut rgb = vec![0u8; 27];
        rgb[..3].copy_from_slice(&[255, 255, 255]);
        assert_eq!(sp.predict(&rgb, 3, 3, [0, 0, 2, 2]), [[2, 1]]);
        assert_eq!(sp.predict(&[0u8; 27], 3, 3, [0, 0, 2, 2]), [[1, 1]]);
        assert!(ShapePredictor::parse(&bytes[..bytes.len() - 1]).is_err());
    }
}
