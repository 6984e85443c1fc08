//! dlib's tiled image pyramid (`input_rgb_image_pyramid<pyramid_down<6>>`): the photo and its
//! successively 5/6-scaled copies packed into one image, so one pass of the convolutional
//! network scans every scale. Follows dlib 20.0.1's `compute_tiled_image_pyramid_details`
//! (dlib/image_transforms/image_pyramid.h), `input_rgb_image_pyramid::to_tensor` and
//! `tiled_pyramid_to_image` (dlib/dnn/input.h) exactly, including their integer rounding.

/// An inclusive integer rectangle, as dlib's `rectangle`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rect {
    pub left: i64,
    pub top: i64,
    pub right: i64,
    pub bottom: i64,
}

impl Rect {
    /// dlib's `rectangle(width, height)`: at the origin.
    pub fn sized(width: i64, height: i64) -> Self {
        Rect { left: 0, top: 0, right: width - 1, bottom: height - 1 }
    }

    pub fn width(&self) -> i64 {
        if self.is_empty() { 0 } else { self.right - self.left + 1 }
    }

    pub fn height(&self) -> i64 {
        if self.is_empty() { 0 } else { self.bottom - self.top + 1 }
    }

    pub fn area(&self) -> i64 {
        self.width() * self.height()
    }

    pub fn is_empty(&self) -> bool {
        self.top > self.bottom || self.left > self.right
    }

    pub fn intersect(&self, o: &Rect) -> Rect {
        Rect {
            left: self.left.max(o.left),
            top: self.top.max(o.top),
            right: self.right.min(o.right),
            bottom: self.bottom.min(o.bottom),
        }
    }

    /// The smallest rectangle holding both (dlib's `a + b`).
    pub fn union(&self, o: &Rect) -> Rect {
        Rect {
            left: self.left.min(o.left),
            top: self.top.min(o.top),
            right: self.right.max(o.right),
            bottom: self.bottom.max(o.bottom),
        }
    }

    fn contains(&self, x: i64, y: i64) -> bool {
        self.left <= x && x <= self.right && self.top <= y && y <= self.bottom
    }
}

/// A rectangle of real coordinates, as dlib's `drectangle`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DRect {
    pub left: f64,
    pub top: f64,
    pub right: f64,
    pub bottom: f64,
}

impl DRect {
    /// dlib's conversion to `rectangle`: each side rounded (`std::lround`).
    pub fn round(&self) -> Rect {
        let r = |v: f64| v.round() as i64;
        Rect { left: r(self.left), top: r(self.top), right: r(self.right), bottom: r(self.bottom) }
    }
}

/// `pyramid_down<6>`: every level is 5/6 of the one above.
const RATE: f64 = 5.0 / 6.0;
/// Levels stop below this height.
const MIN_HEIGHT: i64 = 5;

/// Where each level lies in the tiled image, and the tiled image's size.
#[derive(Clone, Debug, PartialEq)]
pub struct Layout {
    /// Level 0 is the photo itself.
    pub levels: Vec<Rect>,
    pub width: usize,
    pub height: usize,
}

impl Layout {
    /// dlib's `compute_tiled_image_pyramid_details` for a `width` x `height` photo.
    pub fn new(width: usize, height: usize, padding: i64, outer_padding: i64) -> Layout {
        let (mut nr, mut nc) = (height as i64, width as i64);
        if nr * nc == 0 {
            return Layout { levels: Vec::new(), width: 0, height: 0 };
        }
        let mut rects = vec![Rect::sized(nc, nr)];
        loop {
            nr = (RATE * nr as f64).floor() as i64;
            nc = (RATE * nc as f64).floor() as i64;
            if nr * nc == 0 || nr < MIN_HEIGHT {
                break;
            }
            rects.push(Rect::sized(nc, nr));
        }

        let mut total_height: i64 = rects.iter().map(|r| r.height() + padding).sum();
        total_height -= padding * 2;
        let mut height = 0;
        let mut prev_width = 0;
        let (first_width, first_height) = (rects[0].width(), rects[0].height());
        for r in &rects {
            // The first column goes on until the next level fits beside the previous one, so
            // the second column can come back up beside the first.
            if r.width() <= first_width - prev_width - padding
                && (height - first_height) * 2 >= total_height - first_height
            {
                break;
            }
            height += r.height() + padding;
            prev_width = r.width();
        }
        height -= padding;

        let width = first_width;
        let mut y = outer_padding;
        let mut i = 0;
        while y < height + outer_padding && i < rects.len() {
            let r = rects[i];
            rects[i] = Rect {
                left: r.left + outer_padding,
                top: r.top + y,
                right: r.right + outer_padding,
                bottom: r.bottom + y,
            };
            y += rects[i].height() + padding;
            i += 1;
        }
        y -= padding;
        while i < rects.len() {
            // Second column, bottom up, right-aligned.
            let (x1, y1) = (outer_padding + width - 1, y - 1);
            let (x2, y2) = (x1 - rects[i].right, y1 - rects[i].bottom);
            let rect = Rect { left: x1.min(x2), top: y1.min(y2), right: x1.max(x2), bottom: y1.max(y2) };
            if !rects[0].intersect(&rect).is_empty() {
                break;
            }
            rects[i] = rect;
            y -= rects[i].height() + padding;
            i += 1;
        }
        rects.truncate(i);
        Layout {
            levels: rects,
            width: (width + outer_padding * 2) as usize,
            height: (height + outer_padding * 2) as usize,
        }
    }

    /// Builds the network input `[3, height, width]` (planar, row-major): `(pixel - mean) / 256`
    /// at level 0, each further level resampled bilinearly from the one above in float, as
    /// dlib's `input_rgb_image_pyramid::to_tensor`; zero elsewhere.
    pub fn tensor(&self, rgb: &[u8], mean: [f32; 3]) -> Vec<f32> {
        let (tw, th) = (self.width, self.height);
        let mut data = vec![0f32; 3 * tw * th];
        let Some(first) = self.levels.first() else { return data };
        let (w, h) = (first.width() as usize, first.height() as usize);
        for (c, plane) in data.chunks_exact_mut(tw * th).enumerate() {
            for y in 0..h {
                let row = (first.top as usize + y) * tw + first.left as usize;
                for x in 0..w {
                    plane[row + x] = (f32::from(rgb[(y * w + x) * 3 + c]) - mean[c]) / 256.0;
                }
            }
            for pair in self.levels.windows(2) {
                resize_plane(plane, tw, &pair[0], &pair[1]);
            }
        }
        data
    }

    /// dlib's `tiled_pyramid_to_image`: a rectangle of the tiled image mapped back to the photo,
    /// through the level nearest to its centre.
    pub fn to_image(&self, r: DRect) -> DRect {
        let cx = ((r.left + r.right) / 2.0 + 0.5).floor() as i64;
        let cy = ((r.top + r.bottom) / 2.0 + 0.5).floor() as i64;
        let level = self.nearest_level(cx, cy);
        let origin = &self.levels[level];
        let up = |x: f64, y: f64| {
            let (mut x, mut y) = (x - origin.left as f64, y - origin.top as f64);
            for _ in 0..level {
                x = x * 6.0 / 5.0 + 0.3;
                y = y * 6.0 / 5.0 + 0.3;
            }
            (x, y)
        };
        let (left, top) = up(r.left, r.top);
        let (right, bottom) = up(r.right, r.bottom);
        DRect { left, top, right, bottom }
    }

    fn nearest_level(&self, x: i64, y: i64) -> usize {
        let mut best = (f64::INFINITY, 0);
        for (i, r) in self.levels.iter().enumerate() {
            if r.contains(x, y) {
                return i;
            }
            let nx = x.clamp(r.left, r.right);
            let ny = y.clamp(r.top, r.bottom);
            let d = (((nx - x).pow(2) + (ny - y).pow(2)) as f64).sqrt();
            if d < best.0 {
                best = (d, i);
            }
        }
        best.1
    }
}

/// dlib's float bilinear `resize_image` from the region `src` of `plane` to the region `dst`:
/// corners map to corners (scale `(in - 1) / (out - 1)`).
fn resize_plane(plane: &mut [f32], stride: usize, src: &Rect, dst: &Rect) {
    let (sw, sh) = (src.width() as usize, src.height() as usize);
    let (dw, dh) = (dst.width() as usize, dst.height() as usize);
    if sw == 0 || sh == 0 || dw == 0 || dh == 0 {
        return;
    }
    let x_scale = (sw - 1) as f64 / (dw.saturating_sub(1)).max(1) as f64;
    let y_scale = (sh - 1) as f64 / (dh.saturating_sub(1)).max(1) as f64;
    let at = |x: usize, y: usize| (src.top as usize + y) * stride + src.left as usize + x;
    // Source and destination never overlap (levels are disjoint), but both live in `plane`:
    // read the source rows needed for each destination row first.
    let mut out = vec![0f32; dw];
    for r in 0..dh {
        let y = r as f64 * y_scale;
        let top = y.floor() as usize;
        let bottom = (top + 1).min(sh - 1);
        let tb = (y - top as f64) as f32;
        for (c, o) in out.iter_mut().enumerate() {
            let x = c as f64 * x_scale;
            let left = x.floor() as usize;
            let right = (left + 1).min(sw - 1);
            let lr = (x - left as f64) as f32;
            let (tl, tr) = (plane[at(left, top)], plane[at(right, top)]);
            let (bl, br) = (plane[at(left, bottom)], plane[at(right, bottom)]);
            *o = (1.0 - tb) * (1.0 - lr) * tl + (1.0 - tb) * lr * tr + tb * (1.0 - lr) * bl + tb * lr * br;
        }
        let row = (dst.top as usize + r) * stride + dst.left as usize;
        plane[row..row + dw].copy_from_slice(&out);
    }
}

/// dlib's bilinear `resize_image` of an 8-bit RGB image (the `max-size` downscale): corners
/// map to corners, values truncated toward zero as dlib's SIMD path does.
pub fn resize_rgb(rgb: &[u8], w: usize, h: usize, out_w: usize, out_h: usize) -> Vec<u8> {
    let mut out = vec![0u8; out_w * out_h * 3];
    if w == 0 || h == 0 {
        return out;
    }
    let x_scale = (w - 1) as f64 / (out_w.saturating_sub(1)).max(1) as f64;
    let y_scale = (h - 1) as f64 / (out_h.saturating_sub(1)).max(1) as f64;
    for r in 0..out_h {
        let y = r as f64 * y_scale;
        let top = y.floor() as usize;
        let bottom = (top + 1).min(h - 1);
        let tb = y - top as f64;
        for c in 0..out_w {
            let x = c as f64 * x_scale;
            let left = x.floor() as usize;
            let right = (left + 1).min(w - 1);
            let lr = x - left as f64;
            for k in 0..3 {
                let p = |x: usize, y: usize| f64::from(rgb[(y * w + x) * 3 + k]);
                let v = (1.0 - tb) * ((1.0 - lr) * p(left, top) + lr * p(right, top))
                    + tb * ((1.0 - lr) * p(left, bottom) + lr * p(right, bottom));
                out[(r * out_w + c) * 3 + k] = v as u8;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_shrink_by_five_sixths_and_do_not_overlap() {
        let layout = Layout::new(640, 480, 10, 11);
        assert_eq!(layout.levels[0], Rect { left: 11, top: 11, right: 650, bottom: 490 });
        assert_eq!((layout.levels[1].width(), layout.levels[1].height()), (533, 400));
        assert_eq!(layout.width, 640 + 22);
        for (i, a) in layout.levels.iter().enumerate() {
            assert!(
                a.left >= 0 && a.top >= 0 && a.right < layout.width as i64 && a.bottom < layout.height as i64
            );
            for b in &layout.levels[i + 1..] {
                assert!(a.intersect(b).is_empty(), "{a:?} overlaps {b:?}");
            }
        }
        assert!(layout.levels.last().unwrap().height() >= MIN_HEIGHT);
    }

    #[test]
    fn rectangles_map_back_through_their_level() {
        let layout = Layout::new(300, 200, 10, 11);
        let l0 = layout.levels[0];
        let r = DRect {
            left: l0.left as f64 + 10.0,
            top: l0.top as f64 + 20.0,
            right: l0.left as f64 + 50.0,
            bottom: l0.top as f64 + 60.0,
        };
        assert_eq!(layout.to_image(r), DRect { left: 10.0, top: 20.0, right: 50.0, bottom: 60.0 });
        let l1 = layout.levels[1];
        let r = DRect {
            left: l1.left as f64,
            top: l1.top as f64,
            right: l1.left as f64 + 10.0,
            bottom: l1.top as f64 + 10.0,
        };
        let back = layout.to_image(r);
        assert!((back.left - 0.3).abs() < 1e-9 && (back.right - 12.3).abs() < 1e-9);
    }

    #[test]
    fn resampling_keeps_corners_and_constants() {
        let layout = Layout::new(40, 30, 10, 11);
        let rgb = vec![200u8; 40 * 30 * 3];
        let t = layout.tensor(&rgb, [100.0, 100.0, 100.0]);
        let l2 = layout.levels[2];
        let v = t[(l2.top as usize + 3) * layout.width + l2.left as usize + 4];
        assert!((v - 100.0 / 256.0).abs() < 1e-6);
        assert_eq!(t[0], 0.0);
        let small = resize_rgb(&[0, 0, 0, 255, 255, 255], 2, 1, 3, 1);
        assert_eq!(small, [0, 0, 0, 127, 127, 127, 255, 255, 255]);
    }
}
