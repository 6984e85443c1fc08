//! From dlib's five parts (two corners of each eye and the bottom of the nose) to refacen's
//! five landmarks (eye centres, nose tip, mouth corners).
//!
//! The mapping: the similarity transform (rotation, uniform scale, translation) that best
//! fits dlib's 5-point mean shape to the five predicted parts, in the least-squares sense,
//! applied to refacen's five landmarks on dlib's 68-point mean face. Each eye centre is thus
//! its two corners' midpoint moved by the mean face's corner-to-centre offset (rotated and
//! scaled with the face), the nose tip sits above the nose bottom by the mean face's offset,
//! and the mouth corners (which the 5-point model does not predict) are where the mean face
//! puts them. Because the host aligns faces with exactly this kind of fit, the normalized
//! face it cuts is the chip dlib's `get_face_chip` cuts from the 5-point shape: the input
//! dlib's face-recognition network was trained on.

/// dlib's mean shape for `shape_predictor_5_face_landmarks` (from `get_face_chip_details`,
/// dlib/image_transforms/interpolation.h), in the predictor's part order: 0/1 outer/inner
/// corner of the eye on the image right, 2/3 of the eye on the image left, 4 nose bottom.
pub const SHAPE5_MEAN: [[f64; 2]; 5] = [
    [0.8595674595992, 0.2134981538014],
    [0.6460604764104, 0.2289674387677],
    [0.1205750620789, 0.2137274526848],
    [0.3340850613712, 0.2290642403242],
    [0.4901123135679, 0.6277975316475],
];

/// refacen's five landmarks on dlib's 68-point mean face (same normalization): eye on the
/// image left (mean of parts 36..=41), eye on the image right (42..=47), nose tip (30), mouth
/// corners (48, 54). The host's canonical template is made of these (crates/imaging/src/align.rs).
pub const MEAN_FACE: [[f64; 2]; 5] = [
    [0.225492, 0.215990],
    [0.754761, 0.215990],
    [0.490127, 0.515625],
    [0.254149, 0.780233],
    [0.726104, 0.780233],
];

/// refacen's landmarks (left eye, right eye, nose, mouth left, mouth right) for dlib's five
/// `parts` (image coordinates).
pub fn from_parts(parts: &[[f64; 2]; 5]) -> [[f64; 2]; 5] {
    let n = 5.0;
    let mean = |v: &[[f64; 2]; 5], k: usize| v.iter().map(|p| p[k]).sum::<f64>() / n;
    let (fx, fy) = (mean(&SHAPE5_MEAN, 0), mean(&SHAPE5_MEAN, 1));
    let (tx, ty) = (mean(parts, 0), mean(parts, 1));
    let (mut dot, mut cross, mut norm) = (0.0, 0.0, 0.0);
    for (f, t) in SHAPE5_MEAN.iter().zip(parts) {
        let (ax, ay) = (f[0] - fx, f[1] - fy);
        let (bx, by) = (t[0] - tx, t[1] - ty);
        dot += ax * bx + ay * by;
        cross += ax * by - ay * bx;
        norm += ax * ax + ay * ay;
    }
    let (a, b) = (dot / norm, cross / norm);
    MEAN_FACE.map(|[x, y]| {
        let (dx, dy) = (x - fx, y - fy);
        [tx + a * dx - b * dy, ty + b * dx + a * dy]
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mean_shape_maps_to_the_mean_face() {
        // The mean shape placed in a 100-pixel box at (10, 20).
        let parts = SHAPE5_MEAN.map(|[x, y]| [10.0 + 100.0 * x, 20.0 + 100.0 * y]);
        let got = from_parts(&parts);
        for (g, m) in got.iter().zip(MEAN_FACE) {
            assert!(
                (g[0] - (10.0 + 100.0 * m[0])).abs() < 1e-9 && (g[1] - (20.0 + 100.0 * m[1])).abs() < 1e-9
            );
        }
        // Eye centres lie between their corners, the nose tip above the nose bottom.
        assert!(got[0][0] > parts[2][0] && got[0][0] < parts[3][0]);
        assert!(got[1][0] > parts[1][0] && got[1][0] < parts[0][0]);
        assert!(got[2][1] < parts[4][1]);
    }
}
