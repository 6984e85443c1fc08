//! A run of a job: each job starts its own stages ([`Stages`]), and one loop commits what comes
//! out of them, times the commit and reports progress.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::workers::{Pool, finish};
use crate::{RunContext, RunError, Summary};

/// The stages of one kind of job ([`crate::Redetect`], [`crate::Reembed`]).
pub(crate) trait Stages: Send + Sync + Sized + 'static {
    /// What reaches the commit stage: a processed photo, or a batch of embedded faces.
    type Done: Send + 'static;

    /// Starts every stage that feeds the commit.
    fn start(job: &Arc<Self>, context: &RunContext<'_>) -> Result<Started<Self::Done>, RunError>;

    /// Writes one unit of finished work (files, then records) and counts it in the summary.
    async fn commit(&self, done: Self::Done, commit: &mut Committer<'_>) -> Result<(), RunError>;
}

/// The running stages of a job, as [`Stages::start`] hands them to the commit.
pub(crate) struct Started<T> {
    /// Finished work, in the order it is to be committed.
    pub done: mpsc::Receiver<T>,
    /// The task that takes photos or faces from the walk or the store.
    pub feeder: JoinHandle<Result<(), RunError>>,
    pub pools: Vec<Pool>,
    /// A stage that runs on its own thread (the walk), joined once the rest has ended.
    pub thread: Option<std::thread::JoinHandle<()>>,
}

/// The commit stage's side of a run: the stores and plan it writes by, and the summary it
/// alone owns.
pub(crate) struct Committer<'a> {
    pub context: &'a RunContext<'a>,
    pub summary: &'a mut Summary,
}

/// Runs `job`'s stages to the end, committing each unit of finished work as it comes.
pub(crate) async fn run<J: Stages>(
    job: J,
    context: &RunContext<'_>,
    summary: &mut Summary,
) -> Result<(), RunError> {
    let job = Arc::new(job);
    let Started { mut done, feeder, pools, thread } = J::start(&job, context)?;
    let mut committer = Committer { context, summary };
    let committed = async {
        while let Some(unit) = done.recv().await {
            let started = Instant::now();
            job.commit(unit, &mut committer).await?;
            committer.summary.stages.commit += started.elapsed();
            context.progress.update(committer.summary);
        }
        Ok(())
    }
    .await;
    // Dropping the queue stops every stage that feeds it.
    drop(done);
    let result = finish(committed, feeder, pools).await;
    if let Some(thread) = thread {
        let _ = thread.join();
    }
    result
}
