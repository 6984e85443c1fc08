//! Detection at a size the detector can take. A photo is handed to the guest whole, and a
//! guest's memory, the data it may pass to the host in one call and the networks' work and
//! memory it may ask of the host are bounded: a 100 MP photo exceeds one of them in most
//! detectors. So a photo larger than `--max-size` is scaled down for detection; without
//! `--max-size`, a photo the guest fails on for lack of one of those resources is detected
//! again at half the size, until it fits. Boxes and landmarks come back
//! in the full-size photo's coordinates: faces are normalized from the full-size photo.

use image::RgbImage;

use refacen_face::{Face, ParamValue};
use refacen_runtime::{Detector, GuestError};

/// Below this longest side, a photo is not scaled down further when the guest runs out of
/// resources; below twice this, such a failure is the guest's, not the photo's size.
const MIN_AUTO_SIDE_PX: u32 = 1024;

/// Faces found, and the size they were detected at when the photo was scaled down.
pub struct Fitted {
    pub faces: Vec<Face>,
    pub scaled_to: Option<(u32, u32)>,
}

#[derive(Debug, thiserror::Error)]
pub enum FitError {
    #[error(transparent)]
    Guest(GuestError),
    #[error(
        "{width}x{height} pixels ({megapixels:.0} MP) is too large for detector `{guest}`{tried}: {failure}; \
         {advice}",
        megapixels = (*.width as f64 * *.height as f64) / 1e6,
        guest = .error.guest,
        failure = .error.failure,
        tried = match .tried { Some((w, h)) => format!(" even scaled down to {w}x{h}"), None => String::new() },
        advice = advice(.max_size_px, .error)
    )]
    TooLarge {
        width: u32,
        height: u32,
        /// The size of the last try, when it was scaled down.
        tried: Option<(u32, u32)>,
        max_size_px: Option<u32>,
        error: Box<GuestError>,
    },
}

fn advice(max_size_px: &Option<u32>, error: &GuestError) -> String {
    let memory = if matches!(error.failure, refacen_runtime::GuestFailure::MemoryLimit { .. }) {
        " or give the guest more memory (--guest-memory-mb)"
    } else {
        ""
    };
    match max_size_px {
        Some(max) => format!("detect it at a smaller size (--max-size below {max}){memory}"),
        None => format!("detect it at a smaller size with --max-size (e.g. --max-size 4000){memory}"),
    }
}

/// Detects faces in `image`, scaled to at most `max_size_px` on its longer side when given,
/// or scaled down as far as the guest needs when not (see the module documentation).
pub fn detect_fitting(
    detector: &mut Detector,
    image: &RgbImage,
    params: &[(String, ParamValue)],
    max_size_px: Option<u32>,
) -> Result<Fitted, FitError> {
    let longest = image.width().max(image.height());
    let mut side = match max_size_px {
        Some(max) if longest > max => max,
        _ => longest,
    };
    loop {
        let scaled = (side < longest).then(|| scale_to_longest_side(image, side));
        let input = scaled.as_ref().map_or(image, |(scaled, _)| scaled);
        let factor = scaled.as_ref().map_or(1.0, |(_, factor)| *factor);
        match detector.detect(input, params) {
            Ok(faces) => {
                // Back to the original's coordinates: normalization and thumbnails use full resolution.
                let faces = faces
                    .into_iter()
                    .map(|f| Face {
                        bbox: f.bbox.map(|v| v / factor),
                        score: f.score,
                        landmarks: f.landmarks.map(|[x, y]| [x / factor, y / factor]),
                    })
                    .collect();
                return Ok(Fitted { faces, scaled_to: scaled.map(|(s, _)| s.dimensions()) });
            }
            Err(error) if !error.failure.is_size_bound() => return Err(FitError::Guest(error)),
            Err(error) => {
                let next = side / 2;
                if max_size_px.is_none() && next >= MIN_AUTO_SIDE_PX {
                    side = next;
                    continue;
                }
                // Any detector takes a photo this small: failing on it is the guest's own doing.
                if side < 2 * MIN_AUTO_SIDE_PX {
                    return Err(FitError::Guest(error));
                }
                return Err(FitError::TooLarge {
                    width: image.width(),
                    height: image.height(),
                    tried: scaled.map(|(s, _)| s.dimensions()),
                    max_size_px,
                    error: Box::new(error),
                });
            }
        }
    }
}

/// `image` scaled so that its longer side is `side` pixels, and the scale factor.
fn scale_to_longest_side(image: &RgbImage, side: u32) -> (RgbImage, f32) {
    let factor = side as f32 / image.width().max(image.height()) as f32;
    let (w, h) =
        ((image.width() as f32 * factor).round() as u32, (image.height() as f32 * factor).round() as u32);
    (image::imageops::resize(image, w.max(1), h.max(1), image::imageops::FilterType::Triangle), factor)
}
