//! Decoding the detector network's score map as dlib's `loss_mmod_::to_label` does
//! (dlib/dnn/loss.h): every output position scoring above the threshold is a detection window
//! centred on the input position it maps to, mapped from the tiled pyramid back to the photo;
//! then greedy non-max suppression, best first.

use crate::pyramid::{DRect, Layout, Rect};

/// The values the converter checked in the model file (xtask/src/convert/mmod.rs).
pub const MEAN: [f32; 3] = [122.782, 117.001, 104.298];
pub const PADDING: i64 = 10;
pub const OUTER_PADDING: i64 = 11;
/// Smallest side of the tiled pyramid the network can score: its three unpadded 5x5 stride-2
/// convolutions take 29 values to 13, 5 and 1. A smaller image (a thumbnail, a strip) holds
/// no window to score, so no faces.
pub const MIN_INPUT_SIDE: usize = 29;
/// The single detector window, in pixels of the pyramid level it is found at.
pub const WINDOW: (f64, f64) = (80.0, 80.0);
/// `mmod_options::overlaps_nms` as the file has it (the trainer derives the IoU threshold from
/// the training boxes).
pub const NMS_IOU: f64 = 0.3382761351109955;
pub const NMS_COVERED: f64 = 1.0;

/// An output position (x, y) of the network sees input position (8x + 14, 8y + 14): three
/// unpadded 5x5 stride-2 convolutions (`p·2 + 2` each, dlib's `map_output_to_input`) under
/// size-preserving padded ones.
pub fn output_to_input(x: usize, y: usize) -> (f64, f64) {
    (8.0 * x as f64 + 14.0, 8.0 * y as f64 + 14.0)
}

#[derive(Clone, Debug, PartialEq)]
pub struct Detection {
    pub rect: Rect,
    pub confidence: f32,
}

/// Detections in photo coordinates, best first, from `scores` (`[h, w]`, row-major).
pub fn decode(scores: &[f32], w: usize, h: usize, layout: &Layout, threshold: f64) -> Vec<Detection> {
    let mut candidates = Vec::new();
    for y in 0..h {
        for x in 0..w {
            let score = scores[y * w + x];
            if f64::from(score) > threshold {
                let (px, py) = output_to_input(x, y);
                // dlib's centered_drect(p, width, height) spans width - 1 pixels.
                let (hw, hh) = ((WINDOW.0 - 1.0) / 2.0, (WINDOW.1 - 1.0) / 2.0);
                let window = DRect { left: px - hw, top: py - hh, right: px + hw, bottom: py + hh };
                candidates.push((layout.to_image(window).round(), score));
            }
        }
    }
    // Stable, so equal scores keep scan order (dlib's sort gives no guarantee either way).
    candidates.sort_by(|a, b| b.1.total_cmp(&a.1));
    let mut kept: Vec<Detection> = Vec::new();
    for (rect, confidence) in candidates {
        if !kept.iter().any(|k| overlaps(&k.rect, &rect)) {
            kept.push(Detection { rect, confidence });
        }
    }
    kept
}

/// dlib's `test_box_overlap(NMS_IOU, NMS_COVERED)`.
fn overlaps(a: &Rect, b: &Rect) -> bool {
    let inner = a.intersect(b).area() as f64;
    if inner == 0.0 {
        return false;
    }
    let outer = a.union(b).area() as f64;
    inner / outer > NMS_IOU || inner / a.area() as f64 > NMS_COVERED || inner / b.area() as f64 > NMS_COVERED
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peaks_become_windows_and_neighbours_are_suppressed() {
        let layout = Layout::new(200, 200, PADDING, OUTER_PADDING);
        let (w, h) = (layout.width / 8, layout.height / 8);
        let mut scores = vec![-1.0f32; w * h];
        scores[5 * w + 5] = 1.0; // at input (54, 54): the photo's (43, 43)
        scores[5 * w + 6] = 0.5; // overlaps the first one
        let dets = decode(&scores, w, h, &layout, 0.0);
        assert_eq!(dets.len(), 1);
        assert_eq!(dets[0].confidence, 1.0);
        let r = dets[0].rect;
        // Window 3.5..82.5 around 43, each side rounded half away from zero as std::lround.
        assert_eq!((r.left, r.right, r.top, r.bottom), (4, 83, 4, 83));
        assert_eq!(r.width(), 80);
        assert!(decode(&scores, w, h, &layout, 1.0).is_empty());
    }
}
