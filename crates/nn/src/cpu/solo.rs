//! A run alone on the CPU backend executes on a worker of the pool, not on its caller's thread,
//! and keeps the pool's other workers awake until it ends.
//!
//! Every parallel section of a run is a hand-off. From a thread outside the pool, the caller
//! queues the section's jobs, wakes a worker, and sleeps until the last job ends. A wake-up
//! costs tens of microseconds on the 2-core VM, and a batch-1 run of dlib-resnet-128 has about
//! sixty sections (2026-12-05, back to back: 4.6 ms, and 3.1 ms run from a worker with the
//! other workers awake; onnxruntime, whose workers spin between sections, 2.3 ms). From a
//! worker, a section's first job starts at once on that worker, and the awake workers take
//! the others.
//!
//! Only a run alone does this. A worker that waits inside a section runs whatever job it
//! finds, and a whole run would be one job: had a second run been queued as a whole, the first
//! could end up waiting for all of it, its deadline with it. So a run that starts while another
//! is active runs from its caller's thread, its sections queued job by job, and the awake
//! workers go back to sleeping as soon as a second run starts: runs side by side share the
//! cores as they always did.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The runs of the CPU backend under way in this process.
pub(super) struct Runs(AtomicUsize);

pub(super) static RUNS: Runs = Runs::new();

impl Runs {
    const fn new() -> Runs {
        Runs(AtomicUsize::new(0))
    }

    /// Runs `run`, on a worker of rayon's global pool when no other run is under way.
    pub fn run<R: Send>(&'static self, run: impl FnOnce() -> R + Send) -> R {
        let active = Active::enter(self);
        if !active.alone || rayon::current_thread_index().is_some() {
            // Beside another run; or already on a worker (a caller's own parallel code),
            // where the run's sections start on that worker anyway.
            return run();
        }
        rayon::scope(|_| {
            let _awake = Awake::start(self);
            run()
        })
    }
}

/// One run counted until dropped (when it ends, or panics).
struct Active {
    runs: &'static Runs,
    alone: bool,
}

impl Active {
    fn enter(runs: &'static Runs) -> Active {
        Active { runs, alone: runs.0.fetch_add(1, Ordering::SeqCst) == 0 }
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        self.runs.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// How long a worker kept awake looks for jobs without finding one before it goes back to
/// rayon's own waiting. A worker waiting inside a job of the run (for a part of that job
/// another worker took) runs whatever job it finds, this loop included: had the loop no end
/// but the run's, the run would wait on it for ever. `detect --jobs 8` at 16 threads hung so
/// (the `many_cores` stress test, 2026-12-05); now such a worker loses this long, once per run.
/// The run's sections come tens of microseconds apart, so the loop outlasts the gaps.
const IDLE: Duration = Duration::from_micros(200);

/// Keeps the pool's other workers looking for jobs until dropped (the run ended, or panicked),
/// until another run starts, or until they find none for [`IDLE`].
struct Awake {
    ended: Arc<AtomicBool>,
}

impl Awake {
    /// Called on the worker running the run.
    fn start(runs: &'static Runs) -> Awake {
        let ended = Arc::new(AtomicBool::new(false));
        let runner = rayon::current_thread_index();
        let flag = ended.clone();
        rayon::spawn_broadcast(move |worker| {
            if Some(worker.index()) == runner {
                return;
            }
            let mut last_job = Instant::now();
            while !flag.load(Ordering::Acquire) && runs.0.load(Ordering::Relaxed) == 1 {
                if rayon::yield_now() == Some(rayon::Yield::Executed) {
                    last_job = Instant::now();
                } else if last_job.elapsed() > IDLE {
                    // This worker may have picked this job up while waiting, inside a job of
                    // the run, for another part of it: then the run cannot end before this
                    // loop does.
                    break;
                } else {
                    // Not a busy loop: were the scheduler to put this worker on the runner's
                    // core (it may, on waking it), the runner gets the core back at once.
                    std::thread::yield_now();
                }
            }
        });
        Awake { ended }
    }
}

impl Drop for Awake {
    fn drop(&mut self) {
        self.ended.store(true, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_alone_executes_on_a_worker_and_one_beside_it_on_its_callers_thread() {
        static TEST_RUNS: Runs = Runs::new();
        let (started_tx, started_rx) = std::sync::mpsc::channel();
        let (finish_tx, finish_rx) = std::sync::mpsc::channel::<()>();
        let first = std::thread::spawn(move || {
            TEST_RUNS.run(move || {
                started_tx.send(rayon::current_thread_index()).unwrap();
                finish_rx.recv().unwrap();
            })
        });
        let first_on = started_rx.recv().unwrap();
        assert!(first_on.is_some(), "a run alone executes on a worker of the pool");
        // The first run is still under way: this one stays on its caller's thread.
        let second_on = std::thread::spawn(|| TEST_RUNS.run(rayon::current_thread_index)).join().unwrap();
        assert_eq!(second_on, None);
        finish_tx.send(()).unwrap();
        first.join().unwrap();
        let third_on = std::thread::spawn(|| TEST_RUNS.run(rayon::current_thread_index)).join().unwrap();
        assert!(third_on.is_some(), "alone again once the first ended");
    }

    #[test]
    fn a_panicking_run_is_no_longer_counted() {
        static TEST_RUNS: Runs = Runs::new();
        let panicked = std::thread::spawn(|| TEST_RUNS.run(|| panic!("a run that fails"))).join();
        assert!(panicked.is_err());
        assert_eq!(TEST_RUNS.0.load(Ordering::SeqCst), 0);
        let on = std::thread::spawn(|| TEST_RUNS.run(rayon::current_thread_index)).join().unwrap();
        assert!(on.is_some(), "a run alone after the panic executes on a worker");
    }
}
