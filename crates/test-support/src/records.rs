//! Synthetic records, for tests and benchmarks that fill a face store without running guests.

use refacen_store::{DetectorProvenance, FaceId, PhotoRecord};

/// The record of an upright photo at `path` holding `faces`, as regenerate commits it when
/// computing facens.
pub fn photo_record(path: String, faces: Vec<FaceId>, detector: &DetectorProvenance) -> PhotoRecord {
    PhotoRecord {
        path,
        orientation: Some(1),
        sha256: "0".repeat(64),
        faces,
        detector: detector.clone(),
        outputs: vec!["facens".into()],
        detected_at: 0,
    }
}
