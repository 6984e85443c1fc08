//! Face identity across re-detection: a newly detected face that overlaps a stored face of the
//! same photo enough keeps that face's id (and whatever is linked to it); stored faces nothing
//! matches are marked lost, never deleted.

use refacen_face::Face;
use refacen_store::{FaceId, FaceRecord};

/// How the faces of a fresh detection relate to the stored faces of the same photo.
#[derive(Debug, Default, PartialEq)]
pub struct Matching {
    /// (index into the detected faces, id of the stored face it continues).
    pub kept: Vec<(usize, FaceId)>,
    /// Indices of detected faces that are new.
    pub new: Vec<usize>,
    /// Stored faces, not lost before, that the detection no longer finds.
    pub lost: Vec<FaceId>,
}

/// Pairs detected and stored faces greedily by decreasing box IoU, taking pairs with
/// IoU ≥ `min_iou`. Faces lost in an earlier run can be found again; a face still present is
/// preferred over a lost one at equal overlap.
pub fn match_faces(stored: &[FaceRecord], detected: &[Face], min_iou: f32) -> Matching {
    let mut pairs: Vec<(f32, bool, usize, usize)> = Vec::new();
    for (s, record) in stored.iter().enumerate() {
        let stored_face = record.face();
        for (d, face) in detected.iter().enumerate() {
            let iou = stored_face.iou(face);
            if iou >= min_iou {
                pairs.push((iou, !record.lost, s, d));
            }
        }
    }
    pairs.sort_by(|a, b| b.0.total_cmp(&a.0).then(b.1.cmp(&a.1)).then(a.2.cmp(&b.2)).then(a.3.cmp(&b.3)));
    let mut stored_taken = vec![false; stored.len()];
    let mut detected_taken = vec![false; detected.len()];
    let mut matching = Matching::default();
    for (_, _, s, d) in pairs {
        if !stored_taken[s] && !detected_taken[d] {
            stored_taken[s] = true;
            detected_taken[d] = true;
            matching.kept.push((d, stored[s].id));
        }
    }
    matching.kept.sort_unstable();
    matching.new = (0..detected.len()).filter(|&d| !detected_taken[d]).collect();
    matching.lost =
        stored.iter().enumerate().filter(|(s, r)| !stored_taken[*s] && !r.lost).map(|(_, r)| r.id).collect();
    matching
}

#[cfg(test)]
mod tests {
    use super::*;
    use refacen_store::DetectorProvenance;

    fn face(x: f32) -> Face {
        Face { bbox: [x, 0.0, x + 10.0, 10.0], score: 1.0, landmarks: [[0.0; 2]; 5] }
    }

    fn stored(id: FaceId, x: f32, lost: bool) -> FaceRecord {
        let f = face(x);
        FaceRecord {
            id,
            photo: "p.jpg".into(),
            orientation: Some(1),
            bbox: f.bbox,
            score: 1.0,
            landmarks: f.landmarks,
            normalized: None,
            thumbnail: None,
            facen: None,
            lost,
            detector: DetectorProvenance {
                name: "d".into(),
                version: "1".into(),
                sha256: String::new(),
                params: Default::default(),
            },
            detected_at: 0,
            search_pending: false,
        }
    }

    #[test]
    fn overlapping_faces_keep_their_ids_and_the_rest_are_new_or_lost() {
        let stored = [stored(7, 0.0, false), stored(8, 100.0, false)];
        // Shifted by 1 px (IoU 0.82), and one new face far away.
        let detected = [face(200.0), face(1.0)];
        let m = match_faces(&stored, &detected, 0.5);
        assert_eq!(m.kept, vec![(1, 7)]);
        assert_eq!(m.new, vec![0]);
        assert_eq!(m.lost, vec![8]);
    }

    #[test]
    fn a_weak_overlap_is_not_an_identity() {
        // Shifted by 6 px: IoU 4/16 = 0.25.
        let m = match_faces(&[stored(1, 0.0, false)], &[face(6.0)], 0.5);
        assert_eq!(m.kept, vec![]);
        assert_eq!(m.new, vec![0]);
        assert_eq!(m.lost, vec![1]);
    }

    #[test]
    fn the_best_overlap_wins_and_lost_faces_come_back() {
        let stored = [stored(1, 0.0, true), stored(2, 3.0, false)];
        let m = match_faces(&stored, &[face(0.0)], 0.5);
        assert_eq!(m.kept, vec![(0, 1)], "exact overlap with the lost face beats 0.54 with face 2");
        assert_eq!(m.lost, vec![2]);
        let m = match_faces(&stored, &[face(0.0), face(3.0)], 0.5);
        assert_eq!(m.kept, vec![(0, 1), (1, 2)]);
        assert!(m.lost.is_empty() && m.new.is_empty());
    }
}
