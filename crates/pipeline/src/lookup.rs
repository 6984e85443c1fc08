//! The lookup stage: what the run takes, with what the store knows of it. A run from the
//! originals looks each photo of the walk up; a run over stored faces pages through them.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::mpsc;

use refacen_store::{FaceId, FacePages, FaceStore};

use crate::commit::CommitWindow;
use crate::detect::{Outcome, PhotoLookup, Processed};
use crate::embed::StoredBatch;
use crate::{Plan, Reembed, RunError, walk};

/// Looks up each photo of the walk and sends it to the detectors, in walk order (each with
/// its ticket). What the walk refused, and junk, go straight to the commit to be counted.
pub(crate) async fn look_up_photos(
    plan: Arc<Plan>,
    store: Arc<dyn FaceStore>,
    mut walk: mpsc::Receiver<walk::Entry>,
    to_detect: mpsc::Sender<(crate::commit::Ticket, PhotoLookup)>,
    to_commit: mpsc::Sender<Processed>,
    mut window: CommitWindow,
) -> Result<(), RunError> {
    // A stop takes no photo the walk has found but the run has not yet taken.
    while let Some(entry) = walk.recv().await
        && !plan.stop.load(Ordering::Relaxed)
    {
        let outcome = match entry {
            walk::Entry::Refused { rel, cause, message } => {
                Outcome::Failed { cause, message: format!("{rel}: {message}") }
            }
            // Junk has no faces: only a run over all photos counts it.
            walk::Entry::Junk { .. } if plan.ids.is_some() => continue,
            walk::Entry::Junk { name, what } => {
                Outcome::Skipped { message: format!("{}: not an image ({what})", name.display) }
            }
            walk::Entry::Photo { name, path } => {
                let previous = store.photo(&name.key).await?;
                let stored = store.faces_of_photo(&name.key).await?;
                if let Some(ids) = &plan.ids
                    && !stored.iter().any(|f| ids.contains(&f.id))
                {
                    continue;
                }
                let Some(ticket) = window.ticket().await else { break };
                let photo = PhotoLookup { rel: name.key, display: name.display, path, previous, stored };
                if to_detect.send((ticket, photo)).await.is_err() {
                    break;
                }
                continue;
            }
        };
        let Some(ticket) = window.ticket().await else { break };
        if to_commit.send(Processed::unmeasured(ticket, outcome)).await.is_err() {
            break;
        }
    }
    Ok(())
}

/// Faces per page when scanning the store.
const PAGE: usize = 256;

/// Pages through the stored faces of `--ids` (all by default) and sends those this run's
/// share takes and whose facen is not already the model's, in batches of `--batch-size`.
pub(crate) async fn scan_faces_to_embed(
    plan: Arc<Plan>,
    job: Arc<Reembed>,
    store: Arc<dyn FaceStore>,
    to_embed: mpsc::Sender<StoredBatch>,
) -> Result<(), RunError> {
    let range = plan.ids.clone().unwrap_or(1..=FaceId::MAX);
    let mut pages = FacePages::new(store.as_ref(), *range.start(), PAGE);
    let mut index = 0u64;
    let mut batch = StoredBatch { faces: Vec::new(), up_to_date: 0 };
    'pages: while !plan.stop.load(Ordering::Relaxed)
        && let Some(page) = pages.next_page().await?
    {
        for face in page {
            if face.id > *range.end() {
                break 'pages;
            }
            if face.lost
                || face.normalized.is_none()
                || !plan.scope.takes(&refacen_store::PhotoName::bytes_of_key(&face.photo))
            {
                continue;
            }
            let taken = plan.share.takes_face(index, face.id);
            index += 1;
            if !taken {
                continue;
            }
            let current = face.facen.as_ref().is_some_and(|f| {
                f.model.sha256 == job.model.provenance.sha256
                    || job.skip_facen_size == Some(f.values.len() as u32)
            });
            if current {
                batch.up_to_date += 1;
                continue;
            }
            batch.faces.push(face);
            if batch.faces.len() == plan.batch_size {
                let full = std::mem::replace(&mut batch, StoredBatch { faces: Vec::new(), up_to_date: 0 });
                if to_embed.send(full).await.is_err() {
                    return Ok(());
                }
            }
        }
    }
    if !batch.faces.is_empty() || batch.up_to_date > 0 {
        let _ = to_embed.send(batch).await;
    }
    Ok(())
}
