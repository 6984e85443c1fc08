//! A run from the originals, wired: walk → lookup → detect + normalize (one worker per
//! detector instance) → embed (batched, when there is a model) → commit in walk order.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::mpsc;

use crate::commit::{CommitWindow, commit_photos};
use crate::detect::{Processed, detect_photo};
use crate::embed::embed_photos;
use crate::lookup::look_up_photos;
use crate::workers::{Pool, finish, spawn_pool};
use crate::{Plan, Redetect, RunContext, RunError, Summary, walk};

pub(crate) async fn run(
    job: Arc<Redetect>,
    plan: Arc<Plan>,
    context: &RunContext<'_>,
    summary: &mut Summary,
) -> Result<(), RunError> {
    let (runtime, store) = (context.runtime, &context.store);
    let depth = plan.workers * 2;
    let (walk_tx, walk_rx) = mpsc::channel::<walk::Entry>(depth);
    let (lookup_tx, lookup_rx) = mpsc::channel(depth);
    let (done_tx, done_rx) = mpsc::channel::<Processed>(depth);
    let window = CommitWindow::new(4 * depth + plan.batch_size);

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

    let mut pools = Vec::new();
    // Embed: between the detectors and the commit, when there is a model.
    let detected_tx = match &job.model {
        Some(model) => {
            let embedder = runtime.embedder(model.component.clone())?;
            let (tx, rx) = mpsc::channel::<Processed>(depth);
            let (plan, template, done_tx) = (plan.clone(), model.template.clone(), done_tx.clone());
            pools.push(Pool::of(tokio::task::spawn_blocking(move || {
                embed_photos(&plan, &template, embedder, rx, done_tx)
            })));
            tx
        }
        None => done_tx.clone(),
    };
    // Detect: one worker per detector instance.
    let detectors = (0..plan.workers)
        .map(|_| runtime.detector(job.detector.component.clone()))
        .collect::<Result<_, _>>()?;
    pools.push(spawn_pool(detectors, lookup_rx, detected_tx, {
        let (plan, job) = (plan.clone(), job.clone());
        move |detector, photo| detect_photo(&plan, &job, detector, photo)
    }));
    let lookup =
        tokio::spawn(look_up_photos(plan.clone(), store.clone(), walk_rx, lookup_tx, done_tx, window));

    let committed = commit_photos(&plan, &job, context, done_rx, summary).await;
    let result = finish(committed, lookup, pools).await;
    let _ = walker.join();
    result
}
