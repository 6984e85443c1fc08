//! The embed stage: facens of aligned chips, in batches of `--batch-size` faces. A run from
//! the originals batches the faces of several photos; a run over the stored normalized faces
//! reads them back first.

use std::collections::BTreeMap;
use std::time::Instant;

use image::RgbImage;
use tokio::sync::mpsc;

use refacen_face::AlignmentTemplate;
use refacen_imaging as imaging;
use refacen_imaging::{DecodeLimits, align};
use refacen_runtime::Embedder;
use refacen_store::{FaceId, FaceRecord};

use crate::detect::{Outcome, PhotoWork, Processed};
use crate::summary::{FailureCause, StageTimes};
use crate::{DerivedFiles, Plan, Reembed};

/// The canonical chip of a face, warped again to the model's template when it wants another.
pub fn model_input(chip: &RgbImage, template: &AlignmentTemplate) -> Result<RgbImage, String> {
    if template.same_geometry(&align::CANONICAL) {
        return Ok(chip.clone());
    }
    align::rewarp(chip, &align::CANONICAL, template).map_err(|e| e.to_string())
}

/// A facen, or why a face could not be embedded (a cause for the summary, and the message).
pub type EmbedResult = Result<Vec<f32>, (FailureCause, String)>;

/// Embeds `chips` in batches of `batch_size`; a failing batch is retried face by face so one
/// bad face does not fail the others.
pub fn embed_all(
    embedder: &mut Embedder,
    template: &AlignmentTemplate,
    chips: &[&RgbImage],
    batch_size: usize,
) -> Vec<EmbedResult> {
    let inputs: Vec<Result<RgbImage, String>> = chips.iter().map(|c| model_input(c, template)).collect();
    let ready: Vec<(usize, &RgbImage)> =
        inputs.iter().enumerate().filter_map(|(i, r)| r.as_ref().ok().map(|img| (i, img))).collect();
    let mut facens: BTreeMap<usize, EmbedResult> = BTreeMap::new();
    let failure = |e: refacen_runtime::GuestError| (FailureCause::Guest(e.failure.kind()), e.to_string());
    for batch in ready.chunks(batch_size.max(1)) {
        let images: Vec<RgbImage> = batch.iter().map(|(_, img)| (*img).clone()).collect();
        match embedder.embed(&images) {
            Ok(out) => {
                for ((i, _), facen) in batch.iter().zip(out) {
                    facens.insert(*i, Ok(facen));
                }
            }
            Err(_) if batch.len() > 1 => {
                for (i, img) in batch {
                    let one = embedder.embed(std::slice::from_ref(img));
                    facens.insert(*i, one.map(|mut v| v.remove(0)).map_err(failure));
                }
            }
            Err(e) => {
                facens.insert(batch[0].0, Err(failure(e)));
            }
        }
    }
    inputs
        .into_iter()
        .enumerate()
        .map(|(i, input)| match input {
            Err(message) => Err((FailureCause::Alignment, message)),
            Ok(_) => facens.remove(&i).expect("every ready face was embedded"),
        })
        .collect()
}

/// The embed stage of a run from the originals: takes detected photos from `input` until a
/// batch is full (or nothing more is ready), embeds their faces together and passes every
/// photo on to `output` in the order it came. Photos without faces and failures pass straight
/// through.
pub(crate) fn embed_photos(
    plan: &Plan,
    template: &AlignmentTemplate,
    mut embedder: Embedder,
    mut input: mpsc::Receiver<Processed>,
    output: mpsc::Sender<Processed>,
) {
    let mut pending: Vec<Processed> = Vec::new();
    let mut open = true;
    while open || !pending.is_empty() {
        let faces: usize = pending.iter().map(|p| work_of(p).faces.len()).sum();
        // Take more photos while the batch is not full; embed what we have when nothing more
        // is ready, so faces never wait for photos that are not coming.
        if open && faces < plan.batch_size {
            let next = if pending.is_empty() { input.blocking_recv() } else { input.try_recv().ok() };
            match next {
                Some(p) if matches!(&p.outcome, Outcome::Work(w) if !w.faces.is_empty()) => {
                    pending.push(p);
                    continue;
                }
                Some(other) => {
                    if output.blocking_send(other).is_err() {
                        return;
                    }
                    continue;
                }
                None if pending.is_empty() => {
                    open = false;
                    continue;
                }
                None => open = !(input.is_closed() && input.is_empty()),
            }
        }
        embed_pending(plan, template, &mut embedder, &mut pending);
        for processed in pending.drain(..) {
            if output.blocking_send(processed).is_err() {
                return;
            }
        }
    }
}

fn work_of(processed: &Processed) -> &PhotoWork {
    match &processed.outcome {
        Outcome::Work(work) => work,
        _ => unreachable!("only detected photos wait for the embedder"),
    }
}

/// Embeds the faces of the `pending` photos; a photo with a face that fails fails whole, since
/// nothing of a photo is committed unless all of it succeeded.
fn embed_pending(
    plan: &Plan,
    template: &AlignmentTemplate,
    embedder: &mut Embedder,
    pending: &mut [Processed],
) {
    if pending.is_empty() {
        return;
    }
    let started = Instant::now();
    let chips: Vec<&RgbImage> = pending
        .iter()
        .flat_map(|p| work_of(p).faces.iter())
        .map(|f| f.chip.as_ref().expect("normalize keeps every chip when there is a model"))
        .collect();
    let mut results = embed_all(embedder, template, &chips, plan.batch_size).into_iter();
    pending[0].times.embed += started.elapsed();
    for processed in pending.iter_mut() {
        let Outcome::Work(work) = &mut processed.outcome else { continue };
        let mut failure = None;
        for (i, face) in work.faces.iter_mut().enumerate() {
            face.chip = None;
            match results.next().expect("one result per face") {
                Ok(facen) => face.facen = Some(facen),
                Err((cause, message)) if failure.is_none() => {
                    failure = Some((cause, format!("{}: face {i}: {message}", work.photo.display)));
                }
                Err(_) => {}
            }
        }
        if let Some((cause, message)) = failure {
            processed.outcome = Outcome::Failed { cause, message };
        }
    }
}

/// Stored faces to embed again, and how many the scan found already up to date.
pub(crate) struct StoredBatch {
    pub faces: Vec<FaceRecord>,
    pub up_to_date: u64,
}

/// What the workers of a run over stored faces send to the commit.
pub(crate) struct EmbeddedBatch {
    pub facens: Vec<(FaceId, EmbedResult)>,
    pub up_to_date: u64,
    pub times: StageTimes,
}

/// Reads the normalized faces of `batch` back and embeds them.
pub(crate) fn embed_stored(
    plan: &Plan,
    job: &Reembed,
    embedder: &mut Embedder,
    batch: StoredBatch,
) -> EmbeddedBatch {
    let mut times = StageTimes::default();
    let started = Instant::now();
    let loaded: Vec<Result<RgbImage, (FailureCause, String)>> = batch
        .faces
        .iter()
        .map(|f| match f.normalized.as_deref() {
            Some(rel) => load_chip(&plan.derived, rel),
            None => {
                Err((FailureCause::MissingNormalizedFace, format!("face {} has no normalized face", f.id)))
            }
        })
        .collect();
    times.read_decode = started.elapsed();
    let started = Instant::now();
    let chips: Vec<&RgbImage> = loaded.iter().filter_map(|r| r.as_ref().ok()).collect();
    let mut embedded = if plan.dry_run {
        chips.iter().map(|_| Ok(vec![])).collect::<Vec<_>>().into_iter()
    } else {
        embed_all(embedder, &job.model.template, &chips, plan.batch_size).into_iter()
    };
    times.embed = started.elapsed();
    let facens = batch
        .faces
        .iter()
        .zip(loaded)
        .map(|(face, chip)| (face.id, chip.and_then(|_| embedded.next().expect("one result per chip"))))
        .collect();
    EmbeddedBatch { facens, up_to_date: batch.up_to_date, times }
}

fn load_chip(derived: &DerivedFiles, rel: &str) -> Result<RgbImage, (FailureCause, String)> {
    let path = derived.path(rel);
    let bytes = derived
        .read(rel)
        .map_err(|e| (FailureCause::MissingNormalizedFace, format!("{}: {e}", path.display())))?;
    let chip = imaging::decode_rgb_bytes(&path, &bytes, &DecodeLimits::default())
        .map_err(|e| (FailureCause::CorruptNormalizedFace, e.to_string()))?;
    let c = &align::CANONICAL;
    if chip.width() != c.width || chip.height() != c.height {
        return Err((
            FailureCause::CorruptNormalizedFace,
            format!(
                "{}: {}x{}, normalized faces are {}x{}",
                path.display(),
                chip.width(),
                chip.height(),
                c.width,
                c.height
            ),
        ));
    }
    Ok(chip)
}
