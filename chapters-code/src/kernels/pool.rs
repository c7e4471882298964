//! A thread pool whose idle threads sleep (on a condition variable) instead of spinning.
//!
//! On a machine with few shared cores, a pool that busy-waits between jobs steals the core
//! that would have done the work: llama.cpp's decode at 2 spinning threads fell to a third of
//! its 1-thread speed on the book's test machine. Here a job wakes the workers, every thread
//! (the caller too) claims tasks from a shared counter until none are left, and the caller
//! returns when all have finished. Which thread runs a task never changes its result, so the
//! output is identical for any thread count.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

/// The job being run: a task function and the number of tasks.
#[derive(Clone, Copy)]
struct Job {
    /// Lifetime erased; valid until `run` returns, which waits for every worker to let go.
    task: &'static (dyn Fn(usize) + Sync),
    n_tasks: usize,
}

struct State {
    job: Option<Job>,
    /// Bumped for every job, so a worker never runs one twice.
    generation: u64,
    /// Workers still busy with the current job.
    busy: usize,
    panicked: bool,
    shutdown: bool,
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
    done: Condvar,
    next_task: AtomicUsize,
}

// ANCHOR: pool
/// `n` threads in all: the caller plus `n - 1` parked workers.
pub struct ThreadPool {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
    /// One job at a time: a second caller waits here.
    running: Mutex<()>,
}

impl ThreadPool {
    /// A pool of `n_threads` (at least 1; with 1, jobs run inline on the caller).
    pub fn new(n_threads: usize) -> ThreadPool {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                job: None,
                generation: 0,
                busy: 0,
                panicked: false,
                shutdown: false,
            }),
            wake: Condvar::new(),
            done: Condvar::new(),
            next_task: AtomicUsize::new(0),
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
        {
            let mut state = lock(&self.shared.state);
            self.shared.next_task.store(0, Ordering::Relaxed);
            state.job = Some(job);
            state.generation += 1;
            state.busy = self.workers.len();
            state.panicked = false;
        }
        self.shared.wake.notify_all();
        let caller_panicked =
            catch_unwind(AssertUnwindSafe(|| claim_tasks(&self.shared, job))).is_err();
        let mut state = lock(&self.shared.state);
        while state.busy > 0 {
            state = self
                .shared
                .done
                .wait(state)
                .unwrap_or_else(|e| e.into_inner());
        }
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
        lock(&self.shared.state).shutdown = true;
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

fn claim_tasks(shared: &Shared, job: Job) {
    loop {
        let i = shared.next_task.fetch_add(1, Ordering::Relaxed);
        if i >= job.n_tasks {
            return;
        }
        (job.task)(i);
    }
}

fn worker(shared: &Shared) {
    let mut seen = 0u64;
    loop {
        let job = {
            let mut state = lock(&shared.state);
            while state.generation == seen && !state.shutdown {
                state = shared.wake.wait(state).unwrap_or_else(|e| e.into_inner());
            }
            if state.shutdown {
                return;
            }
            seen = state.generation;
            state.job
        };
        let ok = match job {
            Some(job) => catch_unwind(AssertUnwindSafe(|| claim_tasks(shared, job))).is_ok(),
            None => true,
        };
        let mut state = lock(&shared.state);
        state.panicked |= !ok;
        state.busy -= 1;
        if state.busy == 0 {
            shared.done.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;

    #[test]
    fn every_task_runs_exactly_once_for_any_thread_count() {
        for threads in [1, 2, 3, 8] {
            let pool = ThreadPool::new(threads);
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
