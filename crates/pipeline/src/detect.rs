//! The detect stage: read a photo, skip it when the store is up to date, decode it upright,
//! find its faces, and hand them to [`normalize`](crate::normalize).

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::Instant;

use image::RgbImage;
use sha2::{Digest, Sha256};

use refacen_imaging as imaging;
use refacen_imaging::DecodeCause;
use refacen_runtime::Detector;
use refacen_store::{FaceRecord, PhotoRecord};

use crate::commit::Ticket;
use crate::normalize::{FaceWork, normalize_faces};
use crate::summary::{FailureCause, StageTimes};
use crate::{FitError, Plan, Redetect, detect_fitting};

/// A photo of the walk with what the store knows of it.
pub(crate) struct PhotoLookup {
    /// The photo's key in the store.
    pub rel: String,
    /// The photo's path for messages (escaped).
    pub display: String,
    pub path: PathBuf,
    /// The store's record of the photo, if it has one.
    pub previous: Option<PhotoRecord>,
    /// Every face the store holds for the photo, lost ones included.
    pub stored: Vec<FaceRecord>,
}

/// A photo whose faces were found, on its way to the commit.
pub(crate) struct PhotoWork {
    pub photo: PhotoLookup,
    pub sha256: String,
    /// The EXIF orientation applied when decoding.
    pub orientation: u8,
    pub faces: Vec<FaceWork>,
}

pub(crate) enum Outcome {
    Work(Box<PhotoWork>),
    UpToDate,
    Failed {
        cause: FailureCause,
        message: String,
    },
    /// Not an image: counted apart from failures.
    Skipped {
        message: String,
    },
    /// The run was stopped (Ctrl-C, SIGTERM) before a detector took the photo: left for the
    /// rerun and not counted, so that a stop does not wait for every photo already looked up.
    NotStarted,
}

/// A photo's outcome with what its stages measured, in its place in walk order.
pub(crate) struct Processed {
    pub ticket: Ticket,
    pub outcome: Outcome,
    pub times: StageTimes,
    /// Detected at a smaller size than stored.
    pub scaled_down: bool,
}

impl Processed {
    /// A photo whose outcome was known before any stage ran.
    pub fn unmeasured(ticket: Ticket, outcome: Outcome) -> Self {
        Processed { ticket, outcome, times: StageTimes::default(), scaled_down: false }
    }
}

/// What the stages measured on their way, whatever the outcome.
#[derive(Default)]
struct Measured {
    times: StageTimes,
    scaled_down: bool,
}

/// Runs the detect and normalize stages on one photo.
pub(crate) fn detect_photo(
    plan: &Plan,
    job: &Redetect,
    detector: &mut Detector,
    (ticket, photo): (Ticket, PhotoLookup),
) -> Processed {
    if plan.stop.load(Ordering::Relaxed) {
        return Processed::unmeasured(ticket, Outcome::NotStarted);
    }
    let mut measured = Measured::default();
    let outcome = detect(plan, job, detector, photo, &mut measured)
        .unwrap_or_else(|(cause, message)| Outcome::Failed { cause, message });
    Processed { ticket, outcome, times: measured.times, scaled_down: measured.scaled_down }
}

type Failure = (FailureCause, String);

fn detect(
    plan: &Plan,
    job: &Redetect,
    detector: &mut Detector,
    photo: PhotoLookup,
    measured: &mut Measured,
) -> Result<Outcome, Failure> {
    let started = Instant::now();
    let bytes = read(plan, &photo)?;
    let sha256 = hex::encode(Sha256::digest(&bytes));
    if up_to_date(plan, job, &photo, &sha256) {
        return Ok(Outcome::UpToDate);
    }
    // Messages name the photo as the summary does: relative to Uploads, escaped.
    let decoded = match imaging::decode_photo_bytes(Path::new(&photo.display), &bytes, &plan.decode_limits) {
        Ok(decoded) => decoded,
        Err(e) if e.is_skip() => return Ok(Outcome::Skipped { message: e.to_string() }),
        Err(e) => return Err((e.cause().into(), e.to_string())),
    };
    drop(bytes);
    let image: RgbImage = decoded.image;
    let read_decode = started.elapsed();

    let started = Instant::now();
    let faces = match detect_fitting(detector, &image, &job.detector.params, plan.max_size) {
        Ok(fitted) => {
            measured.scaled_down = fitted.scaled_to.is_some();
            fitted.faces
        }
        Err(FitError::Guest(e)) => return Err((e.failure.kind().into(), format!("{}: {e}", photo.display))),
        Err(e @ FitError::TooLarge { .. }) => {
            return Err((DecodeCause::TooLarge.into(), format!("{}: {e}", photo.display)));
        }
    };
    let detect = started.elapsed();

    let started = Instant::now();
    let faces = normalize_faces(plan, job, &image, faces, &photo.display)?;
    measured.times =
        StageTimes { read_decode, detect, normalize: started.elapsed(), ..StageTimes::default() };
    Ok(Outcome::Work(Box::new(PhotoWork { photo, sha256, orientation: decoded.orientation, faces })))
}

/// The photo's bytes, refused before reading when the file is over the size limit.
fn read(plan: &Plan, photo: &PhotoLookup) -> Result<Vec<u8>, Failure> {
    let limit = plan.decode_limits.max_file_bytes;
    if let Ok(meta) = std::fs::metadata(&photo.path)
        && meta.len() > limit
    {
        let e = imaging::DecodeError::FileTooLarge {
            path: photo.display.clone().into(),
            bytes: meta.len(),
            limit,
        };
        return Err((e.cause().into(), e.to_string()));
    }
    std::fs::read(&photo.path)
        .map_err(|e| (DecodeCause::Unreadable.into(), format!("{}: cannot read: {e}", photo.display)))
}

/// Whether the store already holds what this run would produce for the photo.
fn up_to_date(plan: &Plan, job: &Redetect, photo: &PhotoLookup, sha256: &str) -> bool {
    let Some(previous) = &photo.previous else { return false };
    // A record without an orientation was detected in the stored frame, not the displayed
    // one; with the same file, the orientation is the same as then.
    if previous.sha256 != sha256
        || previous.detector != job.detector.provenance
        || previous.orientation.is_none()
    {
        return false;
    }
    if !job.outputs.file_names().iter().all(|o| previous.outputs.contains(o)) {
        return false;
    }
    let (normalized, thumbs) = (job.outputs.normalized, job.outputs.thumbs);
    photo.stored.iter().filter(|f| !f.lost).all(|f| {
        (!normalized || f.normalized.as_ref().is_some_and(|p| plan.derived.exists(p)))
            && (!thumbs || f.thumbnail.as_ref().is_some_and(|p| plan.derived.exists(p)))
            && job.model.as_ref().is_none_or(|model| {
                f.facen.as_ref().is_some_and(|facen| facen.model.sha256 == model.provenance.sha256)
            })
    })
}
