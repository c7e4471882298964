//! A thread pool whose idle threads spin for a few microseconds, then sleep on a condition
//! variable.
//!
//! On a machine with few shared cores, a pool that busy-waits between jobs without yielding
//! steals the core that would have done the work whenever something else runs beside it: our
//! first spinning pool, with a second decoder on the other core, fell to about a third of the
//! sleeping pool's speed (the `engine-contention` table measures this case on every bench run).
//! But a thread that sleeps at once must be woken
//! for the next job, and a decode step runs five jobs per layer, a few microseconds apart: on a
//! virtual machine every wake-up is a system call and an interrupt to another core. So a
//! thread that finishes a job watches for the next one for `spin` (default [`DEFAULT_SPIN`]),
//! yielding its core to any other thread that wants it, and only then sleeps; the caller waits
//! for the last task the same way. An idle pool sleeps.
//!
//! A job wakes the workers, every thread (the caller too) claims tasks from a shared counter
//! until none are left, and the caller returns when all have finished. Which thread runs a task
//! never changes its result, so the output is identical for any thread count.

use std::hint::spin_loop;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long a thread watches for the next job (or a caller for the last task) before it sleeps.
/// Longer than the serial work between two jobs of a decode step (norms, RoPE, the KV append)
/// and between two steps (sampling), far shorter than the pause between two requests. Chosen
/// by hand runs on the book's test machine; `demo-tgi-architecture --benchmark` measures it
/// against sleeping at once, alone and beside a second decoder.
pub const DEFAULT_SPIN: Duration = Duration::from_micros(200);

/// The job being run: a task function and the number of tasks.
#[derive(Clone, Copy)]
struct Job {
    /// Lifetime erased; valid until `run` returns, which waits for every worker to let go.
    task: &'static (dyn Fn(usize) + Sync),
    n_tasks: usize,
}

/// What is read and written under the lock.
struct State {
    job: Option<Job>,
    /// Workers asleep on `wake`: the caller only makes the wake-up call when there are some.
    sleepers: usize,
    /// The caller is asleep on `done`.
    caller_asleep: bool,
    panicked: bool,
    shutdown: bool,
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
    done: Condvar,
    /// Bumped (under the lock, after `job` is set) for every job and at shutdown; a spinning
    /// worker watches it without the lock. Every worker runs every generation exactly once.
    generation: AtomicU64,
    /// Workers that have not finished the current job.
    busy: AtomicUsize,
    next_task: AtomicUsize,
    spin: Duration,
}

// ANCHOR: pool
/// `n` threads in all: the caller plus `n - 1` workers.
pub struct ThreadPool {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
    /// One job at a time: a second caller waits here.
    running: Mutex<()>,
}

impl ThreadPool {
    /// A pool of `n_threads` (at least 1; with 1, jobs run inline on the caller) whose threads
    /// spin for [`DEFAULT_SPIN`] before they sleep.
    pub fn new(n_threads: usize) -> ThreadPool {
        ThreadPool::with_spin(n_threads, DEFAULT_SPIN)
    }

    /// A pool whose threads watch for work for `spin` before they sleep; `Duration::ZERO`
    /// sleeps at once.
    pub fn with_spin(n_threads: usize, spin: Duration) -> ThreadPool {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                job: None,
                sleepers: 0,
                caller_asleep: false,
                panicked: false,
                shutdown: false,
            }),
            wake: Condvar::new(),
            done: Condvar::new(),
            generation: AtomicU64::new(0),
            busy: AtomicUsize::new(0),
            next_task: AtomicUsize::new(0),
            spin,
        });
        let workers = (1..n_threads.max(1))
            .map(|i| {
                let shared = Arc::clone(&shared);
                std::thread::Builder::new()
                    .name(format!("prodml-worker-{i}"))
                    .spawn(move || worker(&shared))
                    .expect("spawning a worker thread")
            })
            .collect();
        ThreadPool {
            shared,
            workers,
            running: Mutex::new(()),
        }
    }

    /// Threads that run a job, the caller included.
    pub fn n_threads(&self) -> usize {
        self.workers.len() + 1
    }

    /// Runs `task(0)`, …, `task(n_tasks - 1)` spread over the pool's threads; returns when all
    /// are done. A panic in a task is re-raised here after the others finish.
    pub fn run(&self, n_tasks: usize, task: &(dyn Fn(usize) + Sync)) {
        if self.workers.is_empty() || n_tasks <= 1 {
            (0..n_tasks).for_each(task);
            return;
        }
        // SAFETY: the reference is only used by workers while `busy > 0`, and we wait below
        // until `busy == 0` before returning, so it never outlives the borrow.
        let task: &'static (dyn Fn(usize) + Sync) = unsafe { std::mem::transmute(task) };
        let job = Job { task, n_tasks };
        let _one_job = self.running.lock().unwrap_or_else(|e| e.into_inner());
        let shared = &*self.shared;
        let sleepers = {
            let mut state = lock(&shared.state);
            shared.next_task.store(0, Ordering::Relaxed);
            shared.busy.store(self.workers.len(), Ordering::Relaxed);
            state.job = Some(job);
            state.panicked = false;
            shared.generation.fetch_add(1, Ordering::Release);
            state.sleepers
        };
        if sleepers > 0 {
            shared.wake.notify_all();
        }
        let caller_panicked = catch_unwind(AssertUnwindSafe(|| claim_tasks(shared, job))).is_err();
        let all_done = || shared.busy.load(Ordering::Acquire) == 0;
        let mut state = if spin_until(shared.spin, all_done) {
            lock(&shared.state)
        } else {
            let mut state = lock(&shared.state);
            state.caller_asleep = true;
            while !all_done() {
                state = shared.done.wait(state).unwrap_or_else(|e| e.into_inner());
            }
            state.caller_asleep = false;
            state
        };
        state.job = None;
        let panicked = state.panicked || caller_panicked;
        drop(state);
        if panicked {
            panic!("a task of the thread pool panicked");
        }
    }
}
// ANCHOR_END: pool

impl Drop for ThreadPool {
    fn drop(&mut self) {
        {
            // Under the lock, like a job: a worker between its check and its sleep cannot miss it.
            let mut state = lock(&self.shared.state);
            state.shutdown = true;
            self.shared.generation.fetch_add(1, Ordering::Release);
        }
        self.shared.wake.notify_all();
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    // A panicking task never holds this lock, so poisoning cannot leave bad state behind.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

// ANCHOR: spin
/// Polls `ready` for up to `budget`; true as soon as it holds, false when the time is up.
/// Between rounds of polls the thread offers its core to any other thread that wants it: a
/// spin without that yield starved the thread it waited for whenever a second decoder shared
/// the cores, and decoding collapsed.
fn spin_until(budget: Duration, ready: impl Fn() -> bool) -> bool {
    if ready() {
        return true;
    }
    if budget.is_zero() {
        return false;
    }
    let start = Instant::now();
    loop {
        // Reading the clock costs more than a poll: check it every 64 polls.
        for _ in 0..64 {
            if ready() {
                return true;
            }
            spin_loop();
        }
        if start.elapsed() >= budget {
            return ready();
        }
        std::thread::yield_now();
    }
}
// ANCHOR_END: spin

fn claim_tasks(shared: &Shared, job: Job) {
    loop {
        let i = shared.next_task.fetch_add(1, Ordering::Relaxed);
        if i >= job.n_tasks {
            return;
        }
        (job.task)(i);
    }
}

// ANCHOR: worker
fn worker(shared: &Shared) {
    let mut seen = 0u64;
    loop {
        let new_job = || shared.generation.load(Ordering::Acquire) != seen;
        let state = if spin_until(shared.spin, new_job) {
            lock(&shared.state)
        } else {
            let mut state = lock(&shared.state);
            state.sleepers += 1;
            while !new_job() {
                state = shared.wake.wait(state).unwrap_or_else(|e| e.into_inner());
            }
            state.sleepers -= 1;
            state
        };
        if state.shutdown {
            return;
        }
        // Under the lock, the generation and the job belong together.
        seen = shared.generation.load(Ordering::Acquire);
        let job = state.job;
        drop(state);
        let ok = match job {
            Some(job) => catch_unwind(AssertUnwindSafe(|| claim_tasks(shared, job))).is_ok(),
            None => true,
        };
        if !ok {
            lock(&shared.state).panicked = true;
        }
        if shared.busy.fetch_sub(1, Ordering::AcqRel) == 1 {
            // The last one out wakes the caller if it went to sleep. Taking the lock orders
            // this after the caller's check of `busy`: the wake-up cannot be lost.
            let state = lock(&shared.state);
            if state.caller_asleep {
                shared.done.notify_one();
            }
        }
    }
}
// ANCHOR_END: worker

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;

    #[test]
    fn every_task_runs_exactly_once_for_any_thread_count() {
        for (threads, spin) in [1, 2, 3, 8]
            .into_iter()
            .flat_map(|t| [(t, Duration::ZERO), (t, DEFAULT_SPIN)])
        {
            let pool = ThreadPool::with_spin(threads, spin);
            assert_eq!(pool.n_threads(), threads);
            for n_tasks in [0, 1, 2, 7, 100] {
                let hits: Vec<AtomicU64> = (0..n_tasks).map(|_| AtomicU64::new(0)).collect();
                pool.run(n_tasks, &|i| {
                    hits[i].fetch_add(1, Ordering::Relaxed);
                });
                assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1));
            }
        }
    }

    #[test]
    fn many_jobs_in_a_row_do_not_deadlock() {
        let pool = ThreadPool::new(3);
        let total = AtomicU64::new(0);
        for _ in 0..2000 {
            pool.run(5, &|i| {
                total.fetch_add(i as u64, Ordering::Relaxed);
            });
        }
        assert_eq!(total.load(Ordering::Relaxed), 2000 * 10);
    }

    #[test]
    fn jobs_longer_than_the_spin_and_pauses_longer_than_it_both_work() {
        // The caller outlasts its spin waiting for a slow task, and the workers fall asleep
        // between jobs: both wake-up paths run.
        let pool = ThreadPool::with_spin(3, Duration::from_micros(20));
        let total = AtomicU64::new(0);
        for round in 0..20u64 {
            pool.run(4, &|i| {
                if i == 3 {
                    std::thread::sleep(Duration::from_millis(2));
                }
                total.fetch_add(round, Ordering::Relaxed);
            });
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(total.load(Ordering::Relaxed), 4 * (0..20).sum::<u64>());
    }

    #[test]
    fn a_panicking_task_is_reported_and_the_pool_still_works() {
        let pool = ThreadPool::new(2);
        let result = catch_unwind(AssertUnwindSafe(|| {
            pool.run(4, &|i| {
                if i == 2 {
                    panic!("boom");
                }
            })
        }));
        assert!(result.is_err());
        let count = AtomicU64::new(0);
        pool.run(4, &|_| {
            count.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(count.load(Ordering::Relaxed), 4);
    }
}
