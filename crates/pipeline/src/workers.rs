//! The worker pool every stage with guest instances uses, and the end of a run's tasks.

use std::sync::Arc;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::RunError;

/// Blocking workers that each own one state (a guest instance) and take items from one queue.
pub(crate) struct Pool(Vec<JoinHandle<()>>);

/// Starts one worker per state. Each takes the next item from `input`, runs `work` on it and
/// sends the result to `output`, until `input` is closed and empty or `output` is dropped.
pub(crate) fn spawn_pool<S, I, O, F>(
    states: Vec<S>,
    input: mpsc::Receiver<I>,
    output: mpsc::Sender<O>,
    work: F,
) -> Pool
where
    S: Send + 'static,
    I: Send + 'static,
    O: Send + 'static,
    F: Fn(&mut S, I) -> O + Send + Sync + 'static,
{
    // The lock is held only while a worker waits for its next item: a queue, not a guest call.
    let input = Arc::new(tokio::sync::Mutex::new(input));
    let work = Arc::new(work);
    let handles = states
        .into_iter()
        .map(|mut state| {
            let (input, output, work) = (input.clone(), output.clone(), work.clone());
            tokio::task::spawn_blocking(move || {
                loop {
                    let item = input.blocking_lock().blocking_recv();
                    let Some(item) = item else { break };
                    if output.blocking_send(work(&mut state, item)).is_err() {
                        break;
                    }
                }
            })
        })
        .collect();
    Pool(handles)
}

impl Pool {
    /// A pool of one task that is not a guest worker (the embed stage).
    pub(crate) fn of(task: JoinHandle<()>) -> Pool {
        Pool(vec![task])
    }

    async fn join(self) -> Result<(), RunError> {
        for handle in self.0 {
            handle.await?;
        }
        Ok(())
    }
}

/// Ends a run once its commit loop has returned `committed` (and dropped its queue, which stops
/// every stage feeding it): stops `feeder`, the task that takes photos or faces from the walk or
/// the store, waits for the pools, and returns the first error: the commit's, a worker's, then
/// the feeder's.
pub(crate) async fn finish(
    committed: Result<(), RunError>,
    feeder: JoinHandle<Result<(), RunError>>,
    pools: Vec<Pool>,
) -> Result<(), RunError> {
    feeder.abort();
    let fed = feeder.await;
    for pool in pools {
        pool.join().await?;
    }
    committed?;
    match fed {
        Ok(result) => result,
        Err(e) if e.is_cancelled() => Ok(()),
        Err(e) => Err(e.into()),
    }
}
