//! A run over the stored normalized faces, wired: lookup (pages of stored faces) → embed (one
//! worker per model instance) → commit (the new facens, batch by batch).

use std::sync::Arc;

use tokio::sync::mpsc;

use crate::embed::{EmbeddedBatch, StoredBatch, embed_stored};
use crate::lookup::scan_faces_to_embed;
use crate::stages::{Committer, Stages, Started};
use crate::workers::spawn_pool;
use crate::{Reembed, RunContext, RunError, now};

use refacen_store::{FaceId, Facen};

impl Stages for Reembed {
    type Done = EmbeddedBatch;

    fn start(job: &Arc<Self>, context: &RunContext<'_>) -> Result<Started<EmbeddedBatch>, RunError> {
        let plan = &context.plan;
        let (batch_tx, batch_rx) = mpsc::channel::<StoredBatch>(plan.workers * 2);
        let (done_tx, done) = mpsc::channel::<EmbeddedBatch>(4);
        let embedders = (0..plan.workers)
            .map(|_| context.runtime.embedder(job.model.component.clone()))
            .collect::<Result<_, _>>()?;
        let pool = spawn_pool(embedders, batch_rx, done_tx, {
            let (plan, job) = (plan.clone(), job.clone());
            move |embedder, batch| embed_stored(&plan, &job, embedder, batch)
        });
        let feeder =
            tokio::spawn(scan_faces_to_embed(plan.clone(), job.clone(), context.store.clone(), batch_tx));
        Ok(Started { done, feeder, pools: vec![pool], thread: None })
    }

    async fn commit(&self, batch: EmbeddedBatch, committer: &mut Committer<'_>) -> Result<(), RunError> {
        let Committer { context, summary } = committer;
        let (store, search) = (context.store.as_ref(), context.search.as_deref());
        summary.selected += batch.facens.len() as u64 + batch.up_to_date;
        summary.up_to_date += batch.up_to_date;
        summary.stages += batch.times;
        let mut facens = Vec::new();
        for (id, result) in batch.facens {
            match result {
                Ok(values) => {
                    facens.push((id, Facen { values, model: self.model.provenance.clone(), at: now() }))
                }
                Err((cause, message)) => summary.fail(cause, format!("face {id}: {message}")),
            }
        }
        let computed = facens.len() as u64;
        if !context.plan.dry_run {
            let ids: Vec<FaceId> = facens.iter().map(|(id, _)| *id).collect();
            store.set_facens(facens, search.is_some()).await?;
            if let Some(search) = search {
                let records = store.faces(&ids).await?;
                summary.search_copied += search.copy_and_clear(store, &records).await?;
            }
        }
        summary.done += computed;
        summary.facens += computed;
        Ok(())
    }
}
