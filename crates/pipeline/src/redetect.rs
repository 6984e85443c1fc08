//! A run from the originals, wired: walk → lookup → detect + normalize (one worker per
//! detector instance) → embed (batched, when there is a model) → walk order → commit.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::mpsc;

use crate::commit::{self, CommitWindow, in_walk_order};
use crate::detect::{Outcome, Processed, detect_photo};
use crate::embed::embed_photos;
use crate::lookup::look_up_photos;
use crate::stages::{Committer, Stages, Started};
use crate::workers::{Pool, spawn_pool};
use crate::{Redetect, RunContext, RunError, walk};

impl Stages for Redetect {
    type Done = Processed;

    fn start(job: &Arc<Self>, context: &RunContext<'_>) -> Result<Started<Processed>, RunError> {
        let plan = &context.plan;
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
                let embedder = context.runtime.embedder(model.component.clone())?;
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
            .map(|_| context.runtime.detector(job.detector.component.clone()))
            .collect::<Result<_, _>>()?;
        pools.push(spawn_pool(detectors, lookup_rx, detected_tx, {
            let (plan, job) = (plan.clone(), job.clone());
            move |detector, photo| detect_photo(&plan, &job, detector, photo)
        }));
        let (done, ordering) = in_walk_order(done_rx, depth);
        pools.push(ordering);
        let feeder = tokio::spawn(look_up_photos(
            plan.clone(),
            context.store.clone(),
            walk_rx,
            lookup_tx,
            done_tx,
            window,
        ));
        Ok(Started { done, feeder, pools, thread: Some(walker) })
    }

    async fn commit(&self, processed: Processed, committer: &mut Committer<'_>) -> Result<(), RunError> {
        let Committer { context, summary } = committer;
        if matches!(processed.outcome, Outcome::NotStarted) {
            // Left for the rerun: this run did not take it.
            return Ok(());
        }
        summary.selected += 1;
        summary.stages += processed.times;
        summary.scaled_down += u64::from(processed.scaled_down);
        match processed.outcome {
            Outcome::NotStarted => {} // returned above
            Outcome::UpToDate => summary.up_to_date += 1,
            Outcome::Failed { cause, message } => summary.fail(cause, message),
            Outcome::Skipped { message } => summary.skip(&message, context.plan.list_skipped),
            Outcome::Work(work) => {
                let search = context.search.as_deref();
                commit::commit_photo(&context.plan, self, context.store.as_ref(), search, *work, summary)
                    .await?
            }
        }
        Ok(())
    }
}
