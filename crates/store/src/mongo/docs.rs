//! Face, photo and progress records as MongoDB documents, and the fields of them refacen owns.

use mongodb::bson::{self, Bson, Document, doc, spec::BinarySubtype};
use serde::{Deserialize, Serialize};

use crate::{
    DetectorProvenance, FaceId, FaceRecord, Facen, ModelProvenance, PhotoRecord, ShardProgress, StoreError,
};

/// How many ids the counter's last claim reserved.
pub(super) fn claim_count(claim: &Document) -> Option<FaceId> {
    match claim.get("count")? {
        Bson::Int64(n) => Some(*n as FaceId),
        Bson::Int32(n) => Some(*n as FaceId),
        Bson::Double(n) => Some(*n as FaceId),
        _ => None,
    }
}

pub(super) fn id_bson(id: FaceId) -> Bson {
    Bson::Int64(id as i64)
}

pub(super) fn ids_bson(ids: &[FaceId]) -> Vec<Bson> {
    ids.iter().map(|&id| id_bson(id)).collect()
}

/// The fields of a face document that refacen writes (besides `_id`): every field of
/// [`FaceDoc`]. Any other field belongs to the application and is never written.
pub(super) const FACE_FIELDS: &[&str] = &[
    "photo",
    "orientation",
    "bbox",
    "score",
    "landmarks",
    "normalized",
    "thumbnail",
    "facen",
    "lost",
    "detector",
    "detected_at",
    "search_pending",
];

/// The fields of a photo document that refacen writes (besides `_id`): every field of
/// [`PhotoDoc`].
pub(super) const PHOTO_FIELDS: &[&str] =
    &["orientation", "sha256", "faces", "detector", "outputs", "detected_at"];

/// The update of one document to `fields` that touches only the `owned` ones: those `fields`
/// has are `$set`, those it lacks (an optional field now absent) `$unset`. `$unset` is left
/// out when empty, which servers before MongoDB 5.0 refuse.
pub(super) fn owned_fields_update(mut fields: Document, owned: &[&str]) -> Document {
    fields.remove("_id");
    debug_assert!(
        fields.keys().all(|k| owned.contains(&k.as_str())),
        "a written field is not listed as owned"
    );
    let unset: Document = owned
        .iter()
        .filter(|f| !fields.contains_key(**f))
        .map(|f| (f.to_string(), Bson::String(String::new())))
        .collect();
    let mut update = doc! { "$set": fields };
    if !unset.is_empty() {
        update.insert("$unset", unset);
    }
    update
}

/// A face as stored: [`FaceRecord`] with the facen as Binary.
#[derive(Serialize, Deserialize)]
pub(super) struct FaceDoc {
    #[serde(rename = "_id")]
    pub(super) id: i64,
    pub(super) photo: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) orientation: Option<u8>,
    pub(super) bbox: [f32; 4],
    pub(super) score: f32,
    pub(super) landmarks: [[f32; 2]; 5],
    pub(super) normalized: Option<String>,
    pub(super) thumbnail: Option<String>,
    pub(super) facen: Option<FacenDoc>,
    pub(super) lost: bool,
    pub(super) detector: DetectorProvenance,
    pub(super) detected_at: i64,
    #[serde(default)]
    pub(super) search_pending: bool,
}

#[derive(Serialize, Deserialize)]
pub(super) struct FacenDoc {
    pub(super) values: bson::Binary,
    pub(super) size: u32,
    pub(super) model: ModelProvenance,
    pub(super) at: i64,
}

impl FacenDoc {
    pub(super) fn new(facen: &Facen) -> Self {
        FacenDoc {
            values: bson::Binary {
                subtype: BinarySubtype::Generic,
                bytes: bytemuck::cast_slice(&facen.values).to_vec(),
            },
            size: facen.values.len() as u32,
            model: facen.model.clone(),
            at: facen.at,
        }
    }

    pub(super) fn into_facen(self, id: i64, location: &str) -> Result<Facen, StoreError> {
        let bytes = &self.values.bytes;
        if bytes.len() != self.size as usize * 4 {
            return Err(StoreError::Corrupt {
                location: location.to_string(),
                key: format!("face {id}"),
                message: format!("facen has {} bytes, its size says {} values", bytes.len(), self.size),
            });
        }
        let values = bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
        Ok(Facen { values, model: self.model, at: self.at })
    }
}

impl FaceDoc {
    pub(super) fn new(face: &FaceRecord) -> Self {
        FaceDoc {
            id: face.id as i64,
            photo: face.photo.clone(),
            orientation: face.orientation,
            bbox: face.bbox,
            score: face.score,
            landmarks: face.landmarks,
            normalized: face.normalized.clone(),
            thumbnail: face.thumbnail.clone(),
            facen: face.facen.as_ref().map(FacenDoc::new),
            lost: face.lost,
            detector: face.detector.clone(),
            detected_at: face.detected_at,
            search_pending: face.search_pending,
        }
    }

    pub(super) fn into_record(self, location: &str) -> Result<FaceRecord, StoreError> {
        let facen = self.facen.map(|f| f.into_facen(self.id, location)).transpose()?;
        Ok(FaceRecord {
            id: self.id as FaceId,
            photo: self.photo,
            orientation: self.orientation,
            bbox: self.bbox,
            score: self.score,
            landmarks: self.landmarks,
            normalized: self.normalized,
            thumbnail: self.thumbnail,
            facen,
            lost: self.lost,
            detector: self.detector,
            detected_at: self.detected_at,
            search_pending: self.search_pending,
        })
    }
}

#[derive(Serialize, Deserialize)]
pub(super) struct PhotoDoc {
    #[serde(rename = "_id")]
    pub(super) path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) orientation: Option<u8>,
    pub(super) sha256: String,
    pub(super) faces: Vec<i64>,
    pub(super) detector: DetectorProvenance,
    pub(super) outputs: Vec<String>,
    pub(super) detected_at: i64,
}

impl PhotoDoc {
    pub(super) fn into_record(self) -> PhotoRecord {
        PhotoRecord {
            path: self.path,
            orientation: self.orientation,
            sha256: self.sha256,
            faces: self.faces.into_iter().map(|id| id as FaceId).collect(),
            detector: self.detector,
            outputs: self.outputs,
            detected_at: self.detected_at,
        }
    }
}

/// The collection of [`ShardProgress`] documents.
pub(super) const PROGRESS: &str = "refacen_progress";

/// A progress document as stored: `_id` is its key.
#[derive(Serialize, Deserialize)]
pub(super) struct ProgressDoc {
    #[serde(rename = "_id")]
    pub(super) key: String,
    #[serde(flatten)]
    pub(super) progress: ShardProgress,
}
