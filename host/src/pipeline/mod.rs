//! `regenerate` as a streaming pipeline:
//!
//! walk → read + decode → detect → normalize → embed (batched) → commit
//!
//! Stages are joined by bounded channels, so however large Uploads is, only a few photos are
//! in memory at once. CPU stages run on blocking threads, each detector or model worker with its
//! own guest instance; the walk is a thread; commits to the store run on the tokio runtime.
//! With `--regenerate facens` alone the originals are never read: the stored normalized faces
//! are embedded again, as findface-regenerate does for a new model.

mod files;
mod fit;
mod identity;
pub mod scope;
pub mod shard;
pub mod summary;
pub mod walk;

use std::collections::BTreeMap;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use image::RgbImage;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

pub use files::DerivedFiles;
pub use fit::{FitError, Fitted, detect_fitting};
pub use identity::{Matching, match_faces};
pub use scope::{Glob, Scope, ScopeError};
pub use shard::{Shard, ShardError, ShardSource};
pub use summary::Summary;
pub use walk::Share;

use crate::face::{AlignmentTemplate, Face, ParamValue};
use crate::imaging::{self, DecodeCause, DecodeLimits, align, thumbnail};
use crate::runtime::{Detector, Embedder, GuestComponent, GuestRuntime};
use crate::store::{
    DetectorProvenance, FaceId, FaceRecord, FaceStore, Facen, ModelProvenance, PhotoRecord, SearchCopier,
};

/// Which outputs to regenerate (`--regenerate normalized,thumbs,facens`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outputs {
    pub normalized: bool,
    pub thumbs: bool,
    pub facens: bool,
}

impl Outputs {
    pub const ALL: Outputs = Outputs { normalized: true, thumbs: true, facens: true };

    /// Whether the originals must be detected again (anything but facens alone).
    pub fn needs_detection(&self) -> bool {
        self.normalized || self.thumbs
    }

    /// Every output asked for, facens included: what identifies a run's target.
    pub fn listed(&self) -> Vec<String> {
        let mut names = self.names();
        if self.facens {
            names.push("facens".to_string());
        }
        names
    }

    fn names(&self) -> Vec<String> {
        let mut names = Vec::new();
        if self.normalized {
            names.push("normalized".to_string());
        }
        if self.thumbs {
            names.push("thumbs".to_string());
        }
        names
    }
}

impl std::str::FromStr for Outputs {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let mut outputs = Outputs { normalized: false, thumbs: false, facens: false };
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part {
                "normalized" => outputs.normalized = true,
                "thumbs" => outputs.thumbs = true,
                "facens" => outputs.facens = true,
                other => {
                    return Err(format!("unknown output `{other}` (choose from normalized, thumbs, facens)"));
                }
            }
        }
        if outputs == (Outputs { normalized: false, thumbs: false, facens: false }) {
            return Err("nothing to regenerate: give normalized, thumbs and/or facens".into());
        }
        Ok(outputs)
    }
}

/// The detector of a run.
pub struct DetectorSetup {
    pub component: Arc<GuestComponent>,
    /// What the operator set (the guest applies its defaults to the rest).
    pub params: Vec<(String, ParamValue)>,
    pub provenance: DetectorProvenance,
}

/// The model of a run.
pub struct ModelSetup {
    pub component: Arc<GuestComponent>,
    pub provenance: ModelProvenance,
    pub template: AlignmentTemplate,
}

/// Everything a `regenerate` run is asked to do.
pub struct Plan {
    pub uploads: PathBuf,
    /// Directories under Uploads that are refacen's own and never photos.
    pub skip_dirs: Vec<PathBuf>,
    pub derived: Arc<DerivedFiles>,
    pub outputs: Outputs,
    pub detector: Option<DetectorSetup>,
    pub model: Option<ModelSetup>,
    /// Face ids to regenerate; `None`: all photos of Uploads.
    pub ids: Option<RangeInclusive<FaceId>>,
    pub share: Share,
    /// `--photos`, `--include`, `--exclude`.
    pub scope: Scope,
    pub workers: usize,
    pub batch_size: usize,
    /// `--regenerate facens`: leave faces whose facen already has this size.
    pub skip_facen_size: Option<u32>,
    /// Photos larger than this (either side, pixels) are scaled down before detection;
    /// without it, only photos too large for the detector's limits are (see [`detect_fitting`]).
    pub max_size: Option<u32>,
    /// Name every file skipped as not an image on stderr (`--list-skipped`).
    pub list_skipped: bool,
    pub identity_iou: f32,
    pub thumb_height: u32,
    pub thumb_margin: f32,
    pub decode_limits: DecodeLimits,
    pub dry_run: bool,
    /// Set (by Ctrl-C) to take no new photos or faces; those in flight are still committed.
    pub stop: Arc<AtomicBool>,
}

/// Reports progress while a run goes on.
pub trait Progress: Send + Sync {
    fn update(&self, summary: &Summary);
}

/// A failure that stops the whole run (the store is unusable); photos already committed stay.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("cannot start a guest: {0}")]
    Guest(#[from] crate::runtime::LoadError),
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("a pipeline worker stopped unexpectedly: {0}")]
    Worker(String),
}

fn now() -> i64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// Runs `plan` against `store` (and copies facens to `search`, when given) and returns what
/// it did. Per-photo failures are counted in the summary; only a store or file-system failure
/// ends the run early: then the error comes with the summary of what was committed before.
pub async fn run(
    plan: Plan,
    runtime: Arc<GuestRuntime>,
    store: Arc<dyn FaceStore>,
    search: Option<Arc<SearchCopier>>,
    progress: Arc<dyn Progress>,
) -> (Summary, Result<(), RunError>) {
    let started = Instant::now();
    let summary = Arc::new(Mutex::new(Summary {
        dry_run: plan.dry_run,
        face_store: store.location(),
        search_store: search.as_ref().map(|s| s.location()),
        workers: plan.workers,
        threads: rayon::current_num_threads(),
        ..Summary::default()
    }));
    let plan = Arc::new(plan);
    let caught_up = match &search {
        Some(search) if !plan.dry_run => search.catch_up(store.as_ref()).await,
        _ => Ok(Default::default()),
    };
    let result = match caught_up {
        Err(e) => Err(e.into()),
        Ok(copied) => {
            summary.lock().unwrap().search_caught_up = copied;
            if plan.outputs.needs_detection() {
                if !plan.dry_run {
                    plan.derived.remove_stale_incoming();
                }
                summary.lock().unwrap().unit = "photos";
                detection::run(plan.clone(), runtime, store, search, summary.clone(), progress.clone()).await
            } else {
                summary.lock().unwrap().unit = "faces";
                facens::run(plan.clone(), runtime, store, search, summary.clone(), progress.clone()).await
            }
        }
    };
    let mut summary = summary.lock().unwrap().clone();
    summary.elapsed = started.elapsed();
    summary.interrupted = plan.stop.load(Ordering::Relaxed);
    progress.update(&summary);
    (summary, result)
}

/// The canonical chip of a face, warped again to the model's template when it wants another.
pub fn model_input(chip: &RgbImage, template: &AlignmentTemplate) -> Result<RgbImage, String> {
    if template.same_geometry(&align::CANONICAL) {
        return Ok(chip.clone());
    }
    align::rewarp(chip, &align::CANONICAL, template).map_err(|e| e.to_string())
}

/// A facen, or why a face could not be embedded (a cause for the summary, and the message).
pub type EmbedResult = Result<Vec<f32>, (&'static str, String)>;

/// Embeds `chips` in batches of `batch_size`; a failing batch is retried face by face so one
/// bad face does not fail the others.
pub fn embed_all(
    embedder: &mut Embedder,
    template: &AlignmentTemplate,
    chips: &[&RgbImage],
    batch_size: usize,
) -> Vec<EmbedResult> {
    let inputs: Vec<Result<RgbImage, String>> = chips.iter().map(|c| model_input(c, template)).collect();
    let mut results: Vec<EmbedResult> = Vec::with_capacity(chips.len());
    let ready: Vec<(usize, &RgbImage)> =
        inputs.iter().enumerate().filter_map(|(i, r)| r.as_ref().ok().map(|img| (i, img))).collect();
    let mut facens: BTreeMap<usize, EmbedResult> = BTreeMap::new();
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
                    facens.insert(
                        *i,
                        one.map(|mut v| v.remove(0)).map_err(|e| (e.failure.kind(), e.to_string())),
                    );
                }
            }
            Err(e) => {
                facens.insert(batch[0].0, Err((e.failure.kind(), e.to_string())));
            }
        }
    }
    for (i, input) in inputs.into_iter().enumerate() {
        results.push(match input {
            Err(message) => Err(("alignment", message)),
            Ok(_) => facens.remove(&i).expect("every ready face was embedded"),
        });
    }
    results
}

mod detection {
    //! Regeneration from the originals: detect, normalize, thumbnail, embed, commit.

    use super::*;

    /// A photo on its way through the stages.
    pub(super) struct PhotoWork {
        /// The photo's key in the store.
        rel: String,
        /// The photo's path for messages (escaped).
        display: String,
        path: PathBuf,
        /// The EXIF orientation applied when decoding.
        orientation: u8,
        /// The store's record of the photo, if it has one.
        previous: Option<PhotoRecord>,
        /// Every face the store holds for the photo, lost ones included.
        stored: Vec<FaceRecord>,
        sha256: String,
        faces: Vec<Face>,
        chips: Vec<Option<RgbImage>>,
        thumbs: Vec<Option<RgbImage>>,
        facens: Vec<Option<Vec<f32>>>,
    }

    enum Outcome {
        Work(Box<PhotoWork>),
        UpToDate,
        Failed {
            cause: &'static str,
            message: String,
        },
        /// Not an image: counted apart from failures.
        Skipped {
            message: String,
        },
    }

    /// A photo's place in walk order, and its slot in the window of photos in flight.
    /// Photos are committed in walk order, so that face ids do not depend on which worker
    /// finished first: a run with any concurrency, or one resumed after a crash, hands out
    /// the ids a single uninterrupted run would.
    struct Ticket {
        seq: u64,
        _slot: tokio::sync::OwnedSemaphorePermit,
    }

    pub(super) async fn run(
        plan: Arc<Plan>,
        runtime: Arc<GuestRuntime>,
        store: Arc<dyn FaceStore>,
        search: Option<Arc<SearchCopier>>,
        summary: Arc<Mutex<Summary>>,
        progress: Arc<dyn Progress>,
    ) -> Result<(), RunError> {
        let detector_setup = plan.detector.as_ref().expect("detection needs a detector");
        let depth = plan.workers * 2;
        let (walk_tx, mut walk_rx) = mpsc::channel::<walk::Entry>(depth);
        let (plan_tx, plan_rx) = mpsc::channel::<(Ticket, PhotoWork)>(depth);
        let (detect_tx, detect_rx) = mpsc::channel::<(Ticket, Outcome)>(depth);
        let (done_tx, mut done_rx) = mpsc::channel::<(Ticket, Outcome)>(depth);
        // Photos between the planner and the commit: enough to keep every stage busy while
        // the commit waits for the next photo in walk order.
        let window = Arc::new(tokio::sync::Semaphore::new(4 * depth + plan.batch_size));

        // Walk: a thread, since walking is blocking I/O.
        let walker = {
            let (uploads, skip, share) = (plan.uploads.clone(), plan.skip_dirs.clone(), plan.share);
            let (stop, plan) = (plan.stop.clone(), plan.clone());
            std::thread::spawn(move || {
                walk::walk(&uploads, &skip, share, &plan.scope, |entry| {
                    !stop.load(Ordering::Relaxed) && walk_tx.blocking_send(entry).is_ok()
                })
            })
        };

        // Detect: one worker per guest instance, each pulling photos from a shared queue.
        let plan_rx = Arc::new(tokio::sync::Mutex::new(plan_rx));
        let mut workers = Vec::new();
        for _ in 0..plan.workers {
            let detector = runtime.detector(detector_setup.component.clone())?;
            let (plan, plan_rx, detect_tx) = (plan.clone(), plan_rx.clone(), detect_tx.clone());
            let summary = summary.clone();
            workers.push(tokio::task::spawn_blocking(move || {
                let mut detector = detector;
                loop {
                    let work = plan_rx.blocking_lock().blocking_recv();
                    let Some((ticket, work)) = work else { break };
                    let outcome = detect_photo(&plan, &mut detector, work, &summary);
                    if detect_tx.blocking_send((ticket, outcome)).is_err() {
                        break;
                    }
                }
            }));
        }
        drop(detect_tx);

        // Embed: batches faces across photos.
        let embed_worker = {
            let mut embedder = match (&plan.model, plan.outputs.facens) {
                (Some(model), true) => Some(runtime.embedder(model.component.clone())?),
                _ => None,
            };
            let (plan, summary) = (plan.clone(), summary.clone());
            tokio::task::spawn_blocking(move || {
                embed_stage(&plan, embedder.as_mut(), detect_rx, done_tx, &summary)
            })
        };

        // Plan: look each photo up in the store, then hand it to the detectors.
        let planner = {
            let (store, summary, plan) = (store.clone(), summary.clone(), plan.clone());
            tokio::spawn(async move {
                let mut seq = 0;
                // A stop takes no photo the walk has found but the run has not yet taken.
                while let Some(entry) = walk_rx.recv().await
                    && !plan.stop.load(Ordering::Relaxed)
                {
                    match entry {
                        walk::Entry::Refused { rel, cause, message } => {
                            let mut s = summary.lock().unwrap();
                            s.selected += 1;
                            s.fail(cause, format!("{rel}: {message}"));
                        }
                        // Junk has no faces: only a run over all photos counts it.
                        walk::Entry::Junk { .. } if plan.ids.is_some() => {}
                        walk::Entry::Junk { name, what } => {
                            let mut s = summary.lock().unwrap();
                            s.selected += 1;
                            s.skip(&format!("{}: not an image ({what})", name.display), plan.list_skipped);
                        }
                        walk::Entry::Photo { name, path } => {
                            let rel = name.key;
                            let previous = store.photo(&rel).await?;
                            let stored = store.faces_of_photo(&rel).await?;
                            if let Some(ids) = &plan.ids {
                                let in_range = stored.iter().any(|f| ids.contains(&f.id));
                                if !in_range {
                                    continue;
                                }
                            }
                            summary.lock().unwrap().selected += 1;
                            let work = PhotoWork {
                                rel,
                                display: name.display,
                                path,
                                orientation: 1,
                                previous,
                                stored,
                                sha256: String::new(),
                                faces: vec![],
                                chips: vec![],
                                thumbs: vec![],
                                facens: vec![],
                            };
                            let Ok(slot) = window.clone().acquire_owned().await else { break };
                            let ticket = Ticket { seq, _slot: slot };
                            seq += 1;
                            if plan_tx.send((ticket, work)).await.is_err() {
                                break;
                            }
                        }
                    }
                }
                Ok::<(), RunError>(())
            })
        };

        // Commit, in walk order: a photo that completes early waits for those before it.
        let mut result: Result<(), RunError> = Ok(());
        // Each waits with its ticket: its slot in the window opens once it is committed.
        let mut waiting: BTreeMap<u64, (Ticket, Outcome)> = BTreeMap::new();
        let mut next = 0;
        'commits: while let Some((ticket, outcome)) = done_rx.recv().await {
            waiting.insert(ticket.seq, (ticket, outcome));
            while let Some((_ticket, outcome)) = waiting.remove(&next) {
                next += 1;
                let commit_started = Instant::now();
                match outcome {
                    Outcome::UpToDate => summary.lock().unwrap().up_to_date += 1,
                    Outcome::Failed { cause, message } => summary.lock().unwrap().fail(cause, message),
                    Outcome::Skipped { message } => summary.lock().unwrap().skip(&message, plan.list_skipped),
                    Outcome::Work(work) => {
                        if let Err(e) =
                            commit(&plan, store.as_ref(), search.as_deref(), *work, &summary).await
                        {
                            result = Err(e);
                            break 'commits;
                        }
                    }
                }
                summary.lock().unwrap().stages.commit += commit_started.elapsed();
                progress.update(&summary.lock().unwrap());
            }
        }
        // Stop the stages (if the commit loop ended early) and wait for them.
        drop(done_rx);
        planner.abort();
        let planned = planner.await;
        for w in workers {
            w.await.map_err(|e| RunError::Worker(e.to_string()))?;
        }
        embed_worker.await.map_err(|e| RunError::Worker(e.to_string()))?;
        let _ = walker.join();
        result?;
        match planned {
            Ok(r) => r,
            Err(e) if e.is_cancelled() => Ok(()),
            Err(e) => Err(RunError::Worker(e.to_string())),
        }
    }

    /// Whether the store already holds what this run would produce for the photo.
    fn up_to_date(plan: &Plan, work: &PhotoWork, sha256: &str) -> bool {
        let (Some(photo), faces) = (&work.previous, &work.stored) else { return false };
        let detector = &plan.detector.as_ref().expect("detector").provenance;
        // A record without an orientation was detected in the stored frame, not the
        // displayed one; with the same file, the orientation is the same as then.
        if photo.sha256 != sha256 || photo.detector != *detector || photo.orientation.is_none() {
            return false;
        }
        let wanted = plan.outputs.names();
        if !wanted.iter().all(|o| photo.outputs.contains(o)) {
            return false;
        }
        faces.iter().filter(|f| !f.lost).all(|f| {
            (!plan.outputs.normalized || f.normalized.as_ref().is_some_and(|p| plan.derived.exists(p)))
                && (!plan.outputs.thumbs || f.thumbnail.as_ref().is_some_and(|p| plan.derived.exists(p)))
                && (!plan.outputs.facens
                    || f.facen.as_ref().is_some_and(|facen| {
                        plan.model.as_ref().is_some_and(|m| facen.model.sha256 == m.provenance.sha256)
                    }))
        })
    }

    fn detect_photo(
        plan: &Plan,
        detector: &mut Detector,
        mut work: PhotoWork,
        summary: &Mutex<Summary>,
    ) -> Outcome {
        let started = Instant::now();
        let limit = plan.decode_limits.max_file_bytes;
        if let Ok(meta) = std::fs::metadata(&work.path)
            && meta.len() > limit
        {
            let e = imaging::DecodeError::FileTooLarge {
                path: work.display.clone().into(),
                bytes: meta.len(),
                limit,
            };
            return Outcome::Failed { cause: e.kind(), message: e.to_string() };
        }
        let bytes = match std::fs::read(&work.path) {
            Ok(b) => b,
            Err(e) => {
                return Outcome::Failed {
                    cause: DecodeCause::Unreadable.as_str(),
                    message: format!("{}: cannot read: {e}", work.display),
                };
            }
        };
        let sha256 = hex::encode(Sha256::digest(&bytes));
        if up_to_date(plan, &work, &sha256) {
            return Outcome::UpToDate;
        }
        // Messages name the photo as the summary does: relative to Uploads, escaped.
        let photo = match imaging::decode_photo_bytes(Path::new(&work.display), &bytes, &plan.decode_limits) {
            Ok(photo) => photo,
            Err(e) if e.is_skip() => return Outcome::Skipped { message: e.to_string() },
            Err(e) => return Outcome::Failed { cause: e.kind(), message: e.to_string() },
        };
        drop(bytes);
        let image = photo.image;
        let decoded = started.elapsed();
        let detect_started = Instant::now();
        let setup = plan.detector.as_ref().expect("detector");
        let faces = match detect_fitting(detector, &image, &setup.params, plan.max_size) {
            Ok(fitted) => {
                if fitted.scaled_to.is_some() {
                    summary.lock().unwrap().scaled_down += 1;
                }
                fitted.faces
            }
            Err(FitError::Guest(e)) => {
                return Outcome::Failed {
                    cause: e.failure.kind(),
                    message: format!("{}: {e}", work.display),
                };
            }
            Err(e @ FitError::TooLarge { .. }) => {
                return Outcome::Failed {
                    cause: DecodeCause::TooLarge.as_str(),
                    message: format!("{}: {e}", work.display),
                };
            }
        };
        let detected = detect_started.elapsed();
        let normalize_started = Instant::now();
        let want_chips = plan.outputs.normalized || plan.outputs.facens;
        let mut chips = Vec::with_capacity(faces.len());
        let mut thumbs = Vec::with_capacity(faces.len());
        for (i, face) in faces.iter().enumerate() {
            if want_chips {
                match align::warp(&image, &face.landmarks, &align::CANONICAL) {
                    Ok(chip) => chips.push(Some(chip)),
                    Err(e) => {
                        return Outcome::Failed {
                            cause: "alignment",
                            message: format!("{}: face {i}: {e}", work.display),
                        };
                    }
                }
            } else {
                chips.push(None);
            }
            thumbs.push(if plan.outputs.thumbs {
                match thumbnail::thumbnail(&image, face.bbox, plan.thumb_margin, plan.thumb_height) {
                    Ok(t) => Some(t),
                    Err(e) => {
                        return Outcome::Failed {
                            cause: "thumbnail",
                            message: format!("{}: face {i}: {e}", work.display),
                        };
                    }
                }
            } else {
                None
            });
        }
        {
            let mut s = summary.lock().unwrap();
            s.stages.read_decode += decoded;
            s.stages.detect += detected;
            s.stages.normalize += normalize_started.elapsed();
        }
        work.sha256 = sha256;
        work.orientation = photo.orientation;
        work.facens = vec![None; faces.len()];
        work.faces = faces;
        work.chips = chips;
        work.thumbs = thumbs;
        Outcome::Work(Box::new(work))
    }

    /// Embeds the faces of photos in batches of `--batch-size` faces, several photos at once.
    fn embed_stage(
        plan: &Plan,
        mut embedder: Option<&mut Embedder>,
        mut input: mpsc::Receiver<(Ticket, Outcome)>,
        output: mpsc::Sender<(Ticket, Outcome)>,
        summary: &Mutex<Summary>,
    ) {
        let mut pending: Vec<(Ticket, PhotoWork)> = Vec::new();
        let mut open = true;
        while open || !pending.is_empty() {
            let faces: usize = pending.iter().map(|(_, w)| w.faces.len()).sum();
            // Take more photos while the batch is not full; embed what we have when nothing
            // more is ready, so faces never wait for photos that are not coming.
            if open && faces < plan.batch_size {
                let next = if pending.is_empty() { input.blocking_recv() } else { input.try_recv().ok() };
                match next {
                    Some((ticket, Outcome::Work(work))) if embedder.is_some() && !work.faces.is_empty() => {
                        pending.push((ticket, *work));
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
                    None => {
                        if input.is_closed() && input.is_empty() {
                            open = false;
                        }
                    }
                }
            }
            let Some(embedder) = embedder.as_deref_mut() else { break };
            let model = plan.model.as_ref().expect("embedder implies model");
            let started = Instant::now();
            let chips: Vec<&RgbImage> = pending
                .iter()
                .flat_map(|(_, w)| w.chips.iter().map(|c| c.as_ref().expect("chips for facens")))
                .collect();
            let results = embed_all(embedder, &model.template, &chips, plan.batch_size);
            summary.lock().unwrap().stages.embed += started.elapsed();
            let mut results = results.into_iter();
            for (ticket, mut work) in pending.drain(..) {
                let mut failure = None;
                for (i, slot) in work.facens.iter_mut().enumerate() {
                    match results.next().expect("one result per face") {
                        Ok(facen) => *slot = Some(facen),
                        Err((cause, message)) if failure.is_none() => {
                            failure = Some((cause, format!("{}: face {i}: {message}", work.display)));
                        }
                        Err(_) => {}
                    }
                }
                let outcome = match failure {
                    // Nothing of a photo is committed unless all of it succeeded.
                    Some((cause, message)) => Outcome::Failed { cause, message },
                    None => Outcome::Work(Box::new(work)),
                };
                if output.blocking_send((ticket, outcome)).is_err() {
                    return;
                }
            }
        }
        // Without a model, pass everything through.
        while let Some(outcome) = input.blocking_recv() {
            if output.blocking_send(outcome).is_err() {
                return;
            }
        }
    }

    /// Writes a photo's files and records: matched faces keep their ids, the rest get new
    /// ones, stored faces no longer found are marked lost.
    async fn commit(
        plan: &Plan,
        store: &dyn FaceStore,
        search: Option<&SearchCopier>,
        work: PhotoWork,
        summary: &Mutex<Summary>,
    ) -> Result<(), RunError> {
        let detector = &plan.detector.as_ref().expect("detector").provenance;
        let (previous_photo, stored) = (work.previous, work.stored);
        let matching = match_faces(&stored, &work.faces, plan.identity_iou);
        let fresh: Vec<FaceId> = if plan.dry_run {
            vec![0; matching.new.len()]
        } else {
            store.allocate_ids(&work.rel, matching.new.len()).await?
        };
        let mut ids = vec![0; work.faces.len()];
        for &(d, id) in &matching.kept {
            ids[d] = id;
        }
        for (&d, &id) in matching.new.iter().zip(&fresh) {
            ids[d] = id;
        }
        // Counted once committed (or, in a dry run, once it is known what would be).
        let count = |summary: &Mutex<Summary>| {
            let mut s = summary.lock().unwrap();
            s.done += 1;
            s.faces_new += matching.new.len() as u64;
            s.faces_kept += matching.kept.len() as u64;
            s.faces_lost += matching.lost.len() as u64;
            s.facens += work.facens.iter().filter(|f| f.is_some()).count() as u64;
        };
        if plan.dry_run {
            count(summary);
            return Ok(());
        }

        // Files first: a crash after them but before the records only leaves files the rerun
        // overwrites.
        let at = super::now();
        let mut records = Vec::new();
        let derived = plan.derived.clone();
        let mut writes: Vec<(String, Vec<u8>)> = Vec::new();
        for (i, face) in work.faces.iter().enumerate() {
            let id = ids[i];
            let old = stored.iter().find(|r| r.id == id);
            let encoded = |result: Result<Vec<u8>, thumbnail::ThumbnailError>| {
                result.map_err(|e| RunError::Write {
                    path: derived.dir().to_path_buf(),
                    source: std::io::Error::other(e),
                })
            };
            let normalized = match &work.chips[i] {
                Some(chip) if plan.outputs.normalized => {
                    let rel = DerivedFiles::normalized(id);
                    writes.push((rel.clone(), encoded(thumbnail::encode_png(chip))?));
                    Some(rel)
                }
                _ => old.and_then(|o| o.normalized.clone()),
            };
            let thumbnail = match &work.thumbs[i] {
                Some(thumb) => {
                    let rel = DerivedFiles::thumbnail(id);
                    writes.push((rel.clone(), encoded(thumbnail::encode_jpeg(thumb, 90))?));
                    Some(rel)
                }
                None => old.and_then(|o| o.thumbnail.clone()),
            };
            let facen = match (&work.facens[i], &plan.model) {
                (Some(values), Some(model)) => {
                    Some(Facen { values: values.clone(), model: model.provenance.clone(), at })
                }
                _ => old.and_then(|o| o.facen.clone()),
            };
            records.push(FaceRecord {
                id,
                photo: work.rel.clone(),
                orientation: Some(work.orientation),
                bbox: face.bbox,
                score: face.score,
                landmarks: face.landmarks,
                normalized,
                thumbnail,
                facen,
                lost: false,
                detector: detector.clone(),
                detected_at: at,
                search_pending: search.is_some(),
            });
        }
        for id in &matching.lost {
            let mut record = stored.iter().find(|r| r.id == *id).expect("lost faces are stored").clone();
            record.lost = true;
            record.search_pending = search.is_some();
            records.push(record);
        }
        tokio::task::spawn_blocking(move || {
            for (rel, bytes) in writes {
                derived
                    .write(&rel, &bytes)
                    .map_err(|source| RunError::Write { path: derived.path(&rel), source })?;
            }
            Ok::<(), RunError>(())
        })
        .await
        .map_err(|e| RunError::Worker(e.to_string()))??;

        let mut all_ids: Vec<FaceId> = stored.iter().map(|r| r.id).chain(fresh).collect();
        all_ids.sort_unstable();
        let mut outputs = plan.outputs.names();
        if let Some(previous) = previous_photo.filter(|p| p.detector == *detector && p.sha256 == work.sha256)
        {
            for o in previous.outputs {
                if !outputs.contains(&o) {
                    outputs.push(o);
                }
            }
        }
        outputs.sort();
        let photo = PhotoRecord {
            path: work.rel,
            orientation: Some(work.orientation),
            sha256: work.sha256,
            faces: all_ids,
            detector: detector.clone(),
            outputs,
            detected_at: at,
        };
        store.commit_photo(photo, records.clone()).await?;
        count(summary);
        if let Some(search) = search {
            let copied = search.copy_and_clear(store, &records).await?;
            summary.lock().unwrap().search_copied += copied;
        }
        Ok(())
    }
}

mod facens {
    //! `--regenerate facens` alone: the stored normalized faces through the new model.

    use super::*;

    /// Faces per page when scanning the store.
    const PAGE: usize = 256;

    pub(super) async fn run(
        plan: Arc<Plan>,
        runtime: Arc<GuestRuntime>,
        store: Arc<dyn FaceStore>,
        search: Option<Arc<SearchCopier>>,
        summary: Arc<Mutex<Summary>>,
        progress: Arc<dyn Progress>,
    ) -> Result<(), RunError> {
        let model = plan.model.as_ref().expect("facens need a model");
        let (job_tx, job_rx) = mpsc::channel::<Vec<FaceRecord>>(plan.workers * 2);
        let (done_tx, mut done_rx) = mpsc::channel::<Vec<(FaceId, EmbedResult)>>(4);
        let job_rx = Arc::new(tokio::sync::Mutex::new(job_rx));
        let mut workers = Vec::new();
        for _ in 0..plan.workers {
            let mut embedder = runtime.embedder(model.component.clone())?;
            let (plan, job_rx, done_tx, summary) =
                (plan.clone(), job_rx.clone(), done_tx.clone(), summary.clone());
            workers.push(tokio::task::spawn_blocking(move || {
                loop {
                    let batch = job_rx.blocking_lock().blocking_recv();
                    let Some(batch) = batch else { break };
                    let results = embed_stored(&plan, &mut embedder, &batch, &summary);
                    if done_tx.blocking_send(results).is_err() {
                        break;
                    }
                }
            }));
        }
        drop(done_tx);

        let scanner = {
            let (plan, store, summary) = (plan.clone(), store.clone(), summary.clone());
            tokio::spawn(async move {
                let range = plan.ids.clone().unwrap_or(1..=FaceId::MAX);
                let (mut next, end) = (*range.start(), *range.end());
                let model_sha = plan.model.as_ref().expect("model").provenance.sha256.clone();
                let mut index = 0u64;
                let mut batch = Vec::new();
                while next <= end && !plan.stop.load(Ordering::Relaxed) {
                    let page = store.scan_faces(next..=end, PAGE).await?;
                    let Some(last) = page.last().map(|f| f.id) else { break };
                    for face in page {
                        if face.lost
                            || face.normalized.is_none()
                            || !plan.scope.takes(&crate::store::PhotoName::bytes_of_key(&face.photo))
                        {
                            continue;
                        }
                        let taken = plan.share.takes_face(index, face.id);
                        index += 1;
                        if !taken {
                            continue;
                        }
                        summary.lock().unwrap().selected += 1;
                        let current = face.facen.as_ref().is_some_and(|f| {
                            f.model.sha256 == model_sha || plan.skip_facen_size == Some(f.values.len() as u32)
                        });
                        if current {
                            summary.lock().unwrap().up_to_date += 1;
                            continue;
                        }
                        batch.push(face);
                        if batch.len() == plan.batch_size
                            && job_tx.send(std::mem::take(&mut batch)).await.is_err()
                        {
                            return Ok(());
                        }
                    }
                    if last == FaceId::MAX {
                        break;
                    }
                    next = last + 1;
                }
                if !batch.is_empty() {
                    let _ = job_tx.send(batch).await;
                }
                Ok::<(), RunError>(())
            })
        };

        let mut result: Result<(), RunError> = Ok(());
        while let Some(results) = done_rx.recv().await {
            let started = Instant::now();
            let mut facens = Vec::new();
            {
                let mut s = summary.lock().unwrap();
                for (id, r) in results {
                    match r {
                        Ok(values) => facens
                            .push((id, Facen { values, model: model.provenance.clone(), at: super::now() })),
                        Err((cause, message)) => s.fail(cause, format!("face {id}: {message}")),
                    }
                }
            }
            let computed = facens.len() as u64;
            if !plan.dry_run
                && let Err(e) = commit_facens(store.as_ref(), search.as_deref(), facens, &summary).await
            {
                result = Err(e);
                break;
            }
            {
                let mut s = summary.lock().unwrap();
                s.done += computed;
                s.facens += computed;
            }
            summary.lock().unwrap().stages.commit += started.elapsed();
            progress.update(&summary.lock().unwrap());
        }
        drop(done_rx);
        scanner.abort();
        let scanned = scanner.await;
        for w in workers {
            w.await.map_err(|e| RunError::Worker(e.to_string()))?;
        }
        result?;
        match scanned {
            Ok(r) => r,
            Err(e) if e.is_cancelled() => Ok(()),
            Err(e) => Err(RunError::Worker(e.to_string())),
        }
    }

    /// Writes new facens to the face store, then their copies to the search store.
    async fn commit_facens(
        store: &dyn FaceStore,
        search: Option<&SearchCopier>,
        facens: Vec<(FaceId, Facen)>,
        summary: &Mutex<Summary>,
    ) -> Result<(), RunError> {
        let ids: Vec<FaceId> = facens.iter().map(|(id, _)| *id).collect();
        store.set_facens(facens, search.is_some()).await?;
        if let Some(search) = search {
            let records = store.faces(&ids).await?;
            let copied = search.copy_and_clear(store, &records).await?;
            summary.lock().unwrap().search_copied += copied;
        }
        Ok(())
    }

    fn embed_stored(
        plan: &Plan,
        embedder: &mut Embedder,
        faces: &[FaceRecord],
        summary: &Mutex<Summary>,
    ) -> Vec<(FaceId, EmbedResult)> {
        let started = Instant::now();
        let loaded: Vec<Result<RgbImage, (&'static str, String)>> = faces
            .iter()
            .map(|f| {
                let rel = f.normalized.as_deref().expect("selected faces have normalized files");
                load_chip(&plan.derived, rel)
            })
            .collect();
        summary.lock().unwrap().stages.read_decode += started.elapsed();
        let started = Instant::now();
        let chips: Vec<&RgbImage> = loaded.iter().filter_map(|r| r.as_ref().ok()).collect();
        let model = plan.model.as_ref().expect("model");
        let mut embedded = if plan.dry_run {
            chips.iter().map(|_| Ok(vec![])).collect::<Vec<_>>().into_iter()
        } else {
            embed_all(embedder, &model.template, &chips, plan.batch_size).into_iter()
        };
        summary.lock().unwrap().stages.embed += started.elapsed();
        faces
            .iter()
            .zip(loaded)
            .map(|(face, chip)| (face.id, chip.and_then(|_| embedded.next().expect("one result per chip"))))
            .collect()
    }

    fn load_chip(derived: &DerivedFiles, rel: &str) -> Result<RgbImage, (&'static str, String)> {
        let path = derived.path(rel);
        let bytes =
            derived.read(rel).map_err(|e| ("missing normalized face", format!("{}: {e}", path.display())))?;
        let chip = imaging::decode_rgb_bytes(&path, &bytes, &DecodeLimits::default())
            .map_err(|e| ("corrupt normalized face", e.to_string()))?;
        let c = &align::CANONICAL;
        if chip.width() != c.width || chip.height() != c.height {
            return Err((
                "corrupt normalized face",
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
}
