//! The commit stage: derived files, then face records, then the photo record, one photo at a
//! time and in walk order; and, for a run over stored faces, their new facens.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

use refacen_store::{FaceId, FaceRecord, FaceStore, Facen, PhotoRecord, SearchCopier};

use crate::detect::{Outcome, PhotoWork, Processed};
use crate::embed::EmbeddedBatch;
use crate::{DerivedFiles, Plan, Redetect, Reembed, RunContext, RunError, Summary, match_faces, now};

/// A photo's place in walk order, and its slot in the window of photos in flight. Photos are
/// committed in walk order, so that face ids do not depend on which worker finished first: a
/// run with any concurrency, or one resumed after a crash, hands out the ids a single
/// uninterrupted run would.
pub(crate) struct Ticket {
    seq: u64,
    _slot: OwnedSemaphorePermit,
}

/// Hands out tickets: at most `size` photos are between the lookup and the commit, enough to
/// keep every stage busy while the commit waits for the next photo in walk order.
pub(crate) struct CommitWindow {
    slots: Arc<Semaphore>,
    next: u64,
}

impl CommitWindow {
    pub fn new(size: usize) -> Self {
        CommitWindow { slots: Arc::new(Semaphore::new(size)), next: 0 }
    }

    /// The next ticket, once a slot is free.
    pub async fn ticket(&mut self) -> Option<Ticket> {
        let slot = self.slots.clone().acquire_owned().await.ok()?;
        let ticket = Ticket { seq: self.next, _slot: slot };
        self.next += 1;
        Some(ticket)
    }
}

/// Commits photos as they come out of the stages, each once every photo before it in walk
/// order is committed, and counts them in the run's summary.
pub(crate) async fn commit_photos(
    plan: &Plan,
    job: &Redetect,
    context: &RunContext<'_>,
    mut done: mpsc::Receiver<Processed>,
    summary: &mut Summary,
) -> Result<(), RunError> {
    let (store, search) = (context.store.as_ref(), context.search.as_deref());
    // Each waits with its ticket: its slot in the window opens once it is committed.
    let mut waiting: BTreeMap<u64, Processed> = BTreeMap::new();
    let mut next = 0;
    while let Some(processed) = done.recv().await {
        waiting.insert(processed.ticket.seq, processed);
        while let Some(processed) = waiting.remove(&next) {
            next += 1;
            let started = Instant::now();
            summary.selected += 1;
            summary.stages += processed.times;
            summary.scaled_down += u64::from(processed.scaled_down);
            match processed.outcome {
                Outcome::UpToDate => summary.up_to_date += 1,
                Outcome::Failed { cause, message } => summary.fail(cause, message),
                Outcome::Skipped { message } => summary.skip(&message, plan.list_skipped),
                Outcome::Work(work) => commit_photo(plan, job, store, search, *work, summary).await?,
            }
            summary.stages.commit += started.elapsed();
            context.progress.update(summary);
        }
    }
    Ok(())
}

/// Writes a photo's files and records: matched faces keep their ids, the rest get new ones,
/// stored faces no longer found are marked lost.
async fn commit_photo(
    plan: &Plan,
    job: &Redetect,
    store: &dyn FaceStore,
    search: Option<&SearchCopier>,
    work: PhotoWork,
    summary: &mut Summary,
) -> Result<(), RunError> {
    let found: Vec<_> = work.faces.iter().map(|f| f.face.clone()).collect();
    let matching = match_faces(&work.photo.stored, &found, plan.identity_iou);
    let facens = work.faces.iter().filter(|f| f.facen.is_some()).count() as u64;
    // Counted once committed (or, in a dry run, once it is known what would be).
    let counted = |summary: &mut Summary| {
        summary.done += 1;
        summary.faces_new += matching.new.len() as u64;
        summary.faces_kept += matching.kept.len() as u64;
        summary.faces_lost += matching.lost.len() as u64;
        summary.facens += facens;
    };
    if plan.dry_run {
        counted(summary);
        return Ok(());
    }
    let fresh = store.allocate_ids(&work.photo.rel, matching.new.len()).await?;
    let mut ids = vec![0; work.faces.len()];
    for &(d, id) in &matching.kept {
        ids[d] = id;
    }
    for (&d, &id) in matching.new.iter().zip(&fresh) {
        ids[d] = id;
    }
    let at = now();
    let (records, writes) = face_records(job, &work, &ids, &matching.lost, search.is_some(), at);
    // Files first: a crash after them but before the records only leaves files the rerun
    // overwrites.
    write_files(plan.derived.clone(), writes).await?;
    let mut all_ids: Vec<FaceId> = work.photo.stored.iter().map(|r| r.id).chain(fresh).collect();
    all_ids.sort_unstable();
    let photo = photo_record(job, work, all_ids, at);
    store.commit_photo(photo, records.clone()).await?;
    counted(summary);
    if let Some(search) = search {
        summary.search_copied += search.copy_and_clear(store, &records).await?;
    }
    Ok(())
}

/// The records of the photo's faces (`ids[i]` for face `i`) and of the stored faces now
/// `lost`, and the derived files to write for them.
fn face_records(
    job: &Redetect,
    work: &PhotoWork,
    ids: &[FaceId],
    lost: &[FaceId],
    search_pending: bool,
    at: i64,
) -> (Vec<FaceRecord>, Vec<(String, Vec<u8>)>) {
    let stored = &work.photo.stored;
    let mut records = Vec::with_capacity(ids.len() + lost.len());
    let mut writes = Vec::new();
    for (face, &id) in work.faces.iter().zip(ids) {
        let old = stored.iter().find(|r| r.id == id);
        let normalized = match &face.normalized_png {
            Some(png) => {
                let rel = DerivedFiles::normalized(id);
                writes.push((rel.clone(), png.clone()));
                Some(rel)
            }
            None => old.and_then(|o| o.normalized.clone()),
        };
        let thumbnail = match &face.thumbnail_jpeg {
            Some(jpeg) => {
                let rel = DerivedFiles::thumbnail(id);
                writes.push((rel.clone(), jpeg.clone()));
                Some(rel)
            }
            None => old.and_then(|o| o.thumbnail.clone()),
        };
        let facen = match (&face.facen, &job.model) {
            (Some(values), Some(model)) => {
                Some(Facen { values: values.clone(), model: model.provenance.clone(), at })
            }
            _ => old.and_then(|o| o.facen.clone()),
        };
        records.push(FaceRecord {
            id,
            photo: work.photo.rel.clone(),
            orientation: Some(work.orientation),
            bbox: face.face.bbox,
            score: face.face.score,
            landmarks: face.face.landmarks,
            normalized,
            thumbnail,
            facen,
            lost: false,
            detector: job.detector.provenance.clone(),
            detected_at: at,
            search_pending,
        });
    }
    for id in lost {
        let mut record = stored.iter().find(|r| r.id == *id).expect("lost faces are stored").clone();
        record.lost = true;
        record.search_pending = search_pending;
        records.push(record);
    }
    (records, writes)
}

/// The photo's record: its faces, and the outputs it now has (those of the last detection
/// too, when it was the same file and detector).
fn photo_record(job: &Redetect, work: PhotoWork, faces: Vec<FaceId>, at: i64) -> PhotoRecord {
    let detector = &job.detector.provenance;
    let mut outputs = job.outputs.file_names();
    if let Some(previous) = work.photo.previous.filter(|p| p.detector == *detector && p.sha256 == work.sha256)
    {
        for o in previous.outputs {
            if !outputs.contains(&o) {
                outputs.push(o);
            }
        }
    }
    outputs.sort();
    PhotoRecord {
        path: work.photo.rel,
        orientation: Some(work.orientation),
        sha256: work.sha256,
        faces,
        detector: detector.clone(),
        outputs,
        detected_at: at,
    }
}

async fn write_files(derived: Arc<DerivedFiles>, writes: Vec<(String, Vec<u8>)>) -> Result<(), RunError> {
    tokio::task::spawn_blocking(move || {
        for (rel, bytes) in writes {
            derived
                .write(&rel, &bytes)
                .map_err(|source| RunError::Write { path: derived.path(&rel), source })?;
        }
        Ok(())
    })
    .await?
}

/// Commits the facens of stored faces as the workers send them, and counts them.
pub(crate) async fn commit_facens(
    plan: &Plan,
    job: &Reembed,
    context: &RunContext<'_>,
    mut done: mpsc::Receiver<EmbeddedBatch>,
    summary: &mut Summary,
) -> Result<(), RunError> {
    let (store, search) = (context.store.as_ref(), context.search.as_deref());
    while let Some(batch) = done.recv().await {
        let started = Instant::now();
        summary.selected += batch.facens.len() as u64 + batch.up_to_date;
        summary.up_to_date += batch.up_to_date;
        summary.stages += batch.times;
        let mut facens = Vec::new();
        for (id, result) in batch.facens {
            match result {
                Ok(values) => {
                    facens.push((id, Facen { values, model: job.model.provenance.clone(), at: now() }))
                }
                Err((cause, message)) => summary.fail(cause, format!("face {id}: {message}")),
            }
        }
        let computed = facens.len() as u64;
        if !plan.dry_run {
            let ids: Vec<FaceId> = facens.iter().map(|(id, _)| *id).collect();
            store.set_facens(facens, search.is_some()).await?;
            if let Some(search) = search {
                let records = store.faces(&ids).await?;
                summary.search_copied += search.copy_and_clear(store, &records).await?;
            }
        }
        summary.done += computed;
        summary.facens += computed;
        summary.stages.commit += started.elapsed();
        context.progress.update(summary);
    }
    Ok(())
}
