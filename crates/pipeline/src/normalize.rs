//! The normalize stage: each face's aligned chip and thumbnail, encoded here on the detect
//! workers so that the commit, which runs one photo at a time, only writes bytes.

use image::RgbImage;

use refacen_face::Face;
use refacen_imaging::{align, thumbnail};

use crate::summary::FailureCause;
use crate::{Plan, Redetect};

/// One face of a photo on its way to the commit.
pub(crate) struct FaceWork {
    pub face: Face,
    /// The canonical chip, kept until the model has embedded it.
    pub chip: Option<RgbImage>,
    /// The normalized face as PNG, when normalized faces are written.
    pub normalized_png: Option<Vec<u8>>,
    /// The thumbnail as JPEG, when thumbnails are written.
    pub thumbnail_jpeg: Option<Vec<u8>>,
    pub facen: Option<Vec<f32>>,
}

/// Warps, thumbnails and encodes the faces found in `image`; a face that cannot be fails the
/// photo (`display` names it), since nothing of a photo is committed unless all of it is.
pub(crate) fn normalize_faces(
    plan: &Plan,
    job: &Redetect,
    image: &RgbImage,
    faces: Vec<Face>,
    display: &str,
) -> Result<Vec<FaceWork>, (FailureCause, String)> {
    let (normalized, thumbs, embeds) = (job.outputs.normalized, job.outputs.thumbs, job.model.is_some());
    // A dry run writes nothing, so it encodes nothing.
    let encode = !plan.dry_run;
    let failed = |cause: FailureCause, i: usize, e: &dyn std::fmt::Display| {
        (cause, format!("{display}: face {i}: {e}"))
    };
    let mut work = Vec::with_capacity(faces.len());
    for (i, face) in faces.into_iter().enumerate() {
        let chip = if normalized || embeds {
            Some(
                align::warp(image, &face.landmarks, &align::CANONICAL)
                    .map_err(|e| failed(FailureCause::Alignment, i, &e))?,
            )
        } else {
            None
        };
        let normalized_png = match &chip {
            Some(chip) if normalized && encode => {
                Some(thumbnail::encode_png(chip).map_err(|e| failed(FailureCause::Encoding, i, &e))?)
            }
            _ => None,
        };
        let thumbnail_jpeg = if thumbs {
            let thumb = thumbnail::thumbnail(image, face.bbox, plan.thumb_margin, plan.thumb_height)
                .map_err(|e| failed(FailureCause::Thumbnail, i, &e))?;
            if encode {
                Some(thumbnail::encode_jpeg(&thumb, 90).map_err(|e| failed(FailureCause::Encoding, i, &e))?)
            } else {
                None
            }
        } else {
            None
        };
        work.push(FaceWork {
            face,
            chip: chip.filter(|_| embeds),
            normalized_png,
            thumbnail_jpeg,
            facen: None,
        });
    }
    Ok(work)
}
