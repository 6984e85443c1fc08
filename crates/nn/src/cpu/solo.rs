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
            let _runner = Runner::enter();
            run()
        })
    }
}

thread_local! {
    /// Whether this thread is the worker running a run alone, while it runs it.
    static RUNNER: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Marks this thread as a run's runner until dropped (when the run ends, or panics).
struct Runner(bool);

impl Runner {
    fn enter() -> Runner {
        Runner(RUNNER.replace(true))
    }
}

impl Drop for Runner {
    fn drop(&mut self) {
        RUNNER.set(self.0);
    }
}

/// Runs `run` on items 0..count on this thread and on the pool's other workers, when this
/// thread runs a run alone; returns false without running anything otherwise.
///
/// rayon's own parallel loop leaves a thread whose part is done waiting for the others' in
/// rayon's way: a few dozen yields, then asleep until the last part ends, and a sleeping
/// vCPU can take long to wake. On the 2-core VM, for minutes at a time (both cores giving
/// their usual arithmetic all the while, onnxruntime, whose workers spin, little affected),
/// dlib-resnet-128 at batch 1 took 5.3-6.1 ms instead of 3.1, a worker of the run going to
/// sleep 9-15 times in a run against 0-1 (its voluntary context switches; 2026-12-06). Over
/// 100 runs back to back, repeated, 37-61% of the runs had more than the 3 sleeps every run
/// has (the caller's, and the workers' once it ends); with this, 4-9%. Each thread takes the
/// items of its own contiguous part first, as rayon hands them out (the paths order their
/// items for that: `conv_batched::multiply`), then those left in the others' parts; the
/// runner then waits for the items the others took, yielding its core between looks, never
/// asleep. The workers kept awake by [`Awake`] take their part at once; one busy elsewhere
/// leaves its part to the others.
pub(super) fn share(count: usize, run: &(dyn Fn(usize) + Sync)) -> bool {
    if !RUNNER.get() {
        return false;
    }
    let threads = rayon::current_num_threads().clamp(1, count.max(1));
    let parts: Vec<Part> = (0..threads)
        .map(|t| Part { next: AtomicUsize::new(t * count / threads), end: (t + 1) * count / threads })
        .collect();
    let done = AtomicUsize::new(0);
    let work = |first: usize| {
        for part in (0..threads).map(|i| &parts[(first + i) % threads]) {
            loop {
                let item = part.next.fetch_add(1, Ordering::Relaxed);
                if item >= part.end {
                    break;
                }
                // Counted even when the item panics, so that the runner's wait ends; the
                // scope then passes the panic on.
                let _counted = Counted(&done);
                run(item);
            }
        }
    };
    rayon::scope(|scope| {
        for first in 1..threads {
            let work = &work;
            scope.spawn(move |_| work(first));
        }
        work(0);
        while done.load(Ordering::Acquire) < count {
            // Not a busy loop: the worker that has an item may be on this core.
            std::thread::yield_now();
        }
    });
    true
}

/// Items [next, end) of a [`share`] not yet taken.
struct Part {
    next: AtomicUsize,
    end: usize,
}

/// Adds one to its counter when dropped.
struct Counted<'a>(&'a AtomicUsize);

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::Release);
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
        let cores = Arc::new(Cores::new(rayon::current_num_threads()));
        if let Some(runner) = runner {
            cores.claim(runner);
        }
        let flag = ended.clone();
        rayon::spawn_broadcast(move |worker| {
            if Some(worker.index()) == runner {
                return;
            }
            cores.spread(worker.index());
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

/// The core each worker of a run alone is on: the runner's, then those of the workers kept
/// awake as they start.
///
/// Linux may wake a worker onto the core of the thread that wakes it, here the runner, while
/// the other core is still busy putting the run's caller to sleep; it then keeps it there, as
/// it does not move a task that ran in the last half millisecond (`sched_migration_cost`) to
/// an idle core, and a worker that keeps looking for jobs always has. The two then share one
/// core for the whole run while the other sits idle: on the 2-core VM one batch-1 run of
/// dlib-resnet-128 in two to five (in stretches of a dozen) took 5-6.5 ms against 3.2-3.6,
/// the awake worker getting 0.01-0.4 ms of CPU time (`/proc`'s schedstat, 2026-12-06). A
/// worker that starts on a core another worker of the run is on now moves to a core none is
/// on, by narrowing its own affinity for a moment (Linux moves a thread at once when its core
/// leaves its affinity), and then restores it: the scheduler stays free to move it later.
struct Cores(Vec<AtomicUsize>);

impl Cores {
    /// No core yet, for each of `workers` workers.
    fn new(workers: usize) -> Cores {
        Cores((0..workers).map(|_| AtomicUsize::new(usize::MAX)).collect())
    }

    /// Records the core worker `index` is on, and returns it.
    fn claim(&self, index: usize) -> Option<usize> {
        let core = placement::current_core()?;
        self.0.get(index)?.store(core, Ordering::Relaxed);
        Some(core)
    }

    /// Records the core worker `index` is on; moves it first when another worker is on it.
    fn spread(&self, index: usize) {
        let Some(core) = self.claim(index) else { return };
        let others: Vec<usize> = (self.0.iter().enumerate())
            .filter(|&(i, _)| i != index)
            .map(|(_, slot)| slot.load(Ordering::Relaxed))
            .filter(|&other| other != usize::MAX)
            .collect();
        if others.contains(&core) && placement::move_off(&others) {
            self.claim(index);
        }
    }
}

#[cfg(target_os = "linux")]
mod placement {
    /// The core this thread is on.
    pub fn current_core() -> Option<usize> {
        // SAFETY: no arguments; returns -1 on failure.
        usize::try_from(unsafe { libc::sched_getcpu() }).ok()
    }

    /// Moves this thread to a core of its affinity outside `cores`, if there is one, and
    /// restores its affinity. Whether it moved.
    pub fn move_off(cores: &[usize]) -> bool {
        // SAFETY: cpu_set_t is plain data; the calls get and set this thread's (pid 0) mask.
        unsafe {
            let mut allowed: libc::cpu_set_t = std::mem::zeroed();
            let size = std::mem::size_of::<libc::cpu_set_t>();
            if libc::sched_getaffinity(0, size, &mut allowed) != 0 {
                return false;
            }
            let mut elsewhere = allowed;
            for &core in cores.iter().filter(|&&c| c < libc::CPU_SETSIZE as usize) {
                libc::CPU_CLR(core, &mut elsewhere);
            }
            if libc::CPU_COUNT(&elsewhere) == 0 || libc::sched_setaffinity(0, size, &elsewhere) != 0 {
                return false;
            }
            // Should this fail (the process's cpuset changed meanwhile), the worker keeps the
            // narrower set: fewer cores than the process may use, never others.
            libc::sched_setaffinity(0, size, &allowed);
            true
        }
    }
}

#[cfg(not(target_os = "linux"))]
mod placement {
    pub fn current_core() -> Option<usize> {
        None
    }

    pub fn move_off(_: &[usize]) -> bool {
        false
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

    #[cfg(target_os = "linux")]
    #[test]
    fn a_thread_moved_off_its_core_runs_on_another_and_keeps_its_affinity() {
        std::thread::spawn(|| {
            let allowed = || {
                // SAFETY: cpu_set_t is plain data; this thread's (pid 0) mask is read.
                unsafe {
                    let mut set: libc::cpu_set_t = std::mem::zeroed();
                    assert_eq!(
                        libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set),
                        0
                    );
                    libc::CPU_COUNT(&set)
                }
            };
            let before = allowed();
            let core = placement::current_core().expect("Linux says which core a thread is on");
            if before < 2 {
                // One core: nowhere to move to, and move_off says so.
                assert!(!placement::move_off(&[core]));
                return;
            }
            assert!(placement::move_off(&[core]));
            assert_ne!(placement::current_core(), Some(core));
            assert_eq!(allowed(), before, "the affinity is restored");
        })
        .join()
        .unwrap();
    }

    #[test]
    fn a_runner_shares_every_item_once_and_other_threads_decline() {
        static TEST_RUNS: Runs = Runs::new();
        assert!(!share(4, &|_| unreachable!("not a runner: nothing runs")));
        for count in [0, 1, 3, 17, 1000] {
            let seen: Vec<AtomicUsize> = (0..count).map(|_| AtomicUsize::new(0)).collect();
            let shared = std::thread::scope(|scope| {
                scope
                    .spawn(|| {
                        TEST_RUNS.run(|| {
                            share(count, &|item| {
                                // Long enough for the other workers to take some.
                                std::thread::sleep(Duration::from_micros(50));
                                seen[item].fetch_add(1, Ordering::Relaxed);
                            })
                        })
                    })
                    .join()
                    .unwrap()
            });
            assert!(shared, "a run alone shares its items");
            assert!(seen.iter().all(|n| n.load(Ordering::Relaxed) == 1), "{count} items, each run once");
        }
    }

    #[test]
    fn an_item_that_panics_ends_the_share_and_its_run_with_the_panic() {
        static TEST_RUNS: Runs = Runs::new();
        let outcome = std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    TEST_RUNS.run(|| {
                        share(64, &|item| {
                            std::thread::sleep(Duration::from_micros(20));
                            assert_ne!(item, 5, "item 5 fails");
                        })
                    })
                })
                .join()
        });
        // Returning at all shows the runner's wait ended.
        assert!(outcome.is_err(), "the panic reaches the run's caller");
        assert_eq!(TEST_RUNS.0.load(Ordering::SeqCst), 0);
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
