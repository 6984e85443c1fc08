//! A run over the stored normalized faces, wired: lookup (pages of stored faces) → embed (one
//! worker per model instance) → commit.

use std::sync::Arc;

use tokio::sync::mpsc;

use crate::commit::commit_facens;
use crate::embed::{EmbeddedBatch, StoredBatch, embed_stored};
use crate::lookup::scan_faces_to_embed;
use crate::workers::{finish, spawn_pool};
use crate::{Plan, Reembed, RunContext, RunError, Summary};

pub(crate) async fn run(
    job: Arc<Reembed>,
    plan: Arc<Plan>,
    context: &RunContext<'_>,
    summary: &mut Summary,
) -> Result<(), RunError> {
    let (runtime, store) = (context.runtime, &context.store);
    let (batch_tx, batch_rx) = mpsc::channel::<StoredBatch>(plan.workers * 2);
    let (done_tx, done_rx) = mpsc::channel::<EmbeddedBatch>(4);
    let embedders =
        (0..plan.workers).map(|_| runtime.embedder(job.model.component.clone())).collect::<Result<_, _>>()?;
    let pool = spawn_pool(embedders, batch_rx, done_tx, {
        let (plan, job) = (plan.clone(), job.clone());
        move |embedder, batch| embed_stored(&plan, &job, embedder, batch)
    });
    let scanner = tokio::spawn(scan_faces_to_embed(plan.clone(), job.clone(), store.clone(), batch_tx));

    let committed = commit_facens(&plan, &job, context, done_rx, summary).await;
    finish(committed, scanner, vec![pool]).await
}
