//! The commit stage of a run from the originals: derived files, then face records, then the
//! photo record, one photo at a time and in walk order. (A run over stored faces commits its
//! facens in [`crate::reembed`].)

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

use refacen_store::{FaceId, FaceRecord, FaceStore, Facen, PhotoRecord, SearchCopier};

use crate::detect::{PhotoWork, Processed};
use crate::workers::Pool;
use crate::{DerivedFiles, Plan, Redetect, RunError, Summary, match_faces, now};

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

/// Puts photos back in walk order as they come out of the stages: each goes on once every photo
/// before it has. The task ends when its input closes or the commit drops its queue.
pub(crate) fn in_walk_order(
    mut done: mpsc::Receiver<Processed>,
    depth: usize,
) -> (mpsc::Receiver<Processed>, Pool) {
    let (tx, rx) = mpsc::channel(depth);
    let task = tokio::spawn(async move {
        // Each waits with its ticket: its slot in the window opens once it is committed.
        let mut waiting: BTreeMap<u64, Processed> = BTreeMap::new();
        let mut next = 0;
        while let Some(processed) = done.recv().await {
            waiting.insert(processed.ticket.seq, processed);
            while let Some(processed) = waiting.remove(&next) {
                next += 1;
                if tx.send(processed).await.is_err() {
                    return;
                }
            }
        }
    });
    (rx, Pool::of(task))
}

/// Writes a photo's files and records: matched faces keep their ids, the rest get new ones,
/// stored faces no longer found are marked lost.
pub(crate) async fn commit_photo(
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
        // A file encoded now is written to `rel`; otherwise the stored face's stays.
        let mut file = |encoded: &Option<Vec<u8>>, rel: String, kept: Option<&String>| match encoded {
            Some(bytes) => {
                writes.push((rel.clone(), bytes.clone()));
                Some(rel)
            }
            None => kept.cloned(),
        };
        let normalized =
            file(&face.normalized_png, DerivedFiles::normalized(id), old.and_then(|o| o.normalized.as_ref()));
        let thumbnail =
            file(&face.thumbnail_jpeg, DerivedFiles::thumbnail(id), old.and_then(|o| o.thumbnail.as_ref()));
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
