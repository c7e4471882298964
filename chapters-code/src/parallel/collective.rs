//! The shards' communication: all-reduce and gather over shared buffers, the way NCCL's
//! collectives look to the code that calls them — every rank calls the same collectives in
//! the same order, each call returns when every rank's contribution is in.
//!
//! Each rank writes its contribution into its own slot, waits at a barrier, then reads every
//! slot. Two sets of slots alternate between calls, so a rank may write call k + 1's
//! contribution while slower ranks still read call k's: a rank reaches call k + 2 (the same
//! set again) only after every rank has passed call k + 1's barrier, hence finished reading
//! call k. One barrier per collective.

use std::cell::UnsafeCell;
use std::sync::Barrier;
use std::time::{Duration, Instant};

/// What a collective carries: the two all-reduces of each block, the embedding lookup's
/// all-reduce, or the gather of the logits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Block,
    Embedding,
    Logits,
}

impl Kind {
    pub const ALL: [Kind; 3] = [Kind::Block, Kind::Embedding, Kind::Logits];

    fn index(self) -> usize {
        self as usize
    }
}

/// Collectives called and bytes of payload (the message size, as nccl-tests reports it:
/// one rank's contribution to an all-reduce; the whole result of a gather), per [`Kind`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Traffic {
    pub calls: [u64; 3],
    pub bytes: [u64; 3],
}

impl Traffic {
    pub fn calls(&self, k: Kind) -> u64 {
        self.calls[k.index()]
    }

    pub fn bytes(&self, k: Kind) -> u64 {
        self.bytes[k.index()]
    }

    fn add(&mut self, k: Kind, bytes: usize) {
        self.calls[k.index()] += 1;
        self.bytes[k.index()] += bytes as u64;
    }

    pub fn merge(&mut self, o: &Traffic) {
        for i in 0..3 {
            self.calls[i] += o.calls[i];
            self.bytes[i] += o.bytes[i];
        }
    }
}

/// Where one rank's time went: copying and summing contributions (communication) and
/// blocked at barriers for the slowest rank (waiting). Everything else is computation.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RankTimes {
    pub total: Duration,
    pub communication: Duration,
    pub waiting: Duration,
}

impl RankTimes {
    pub fn compute(&self) -> Duration {
        self.total.saturating_sub(self.communication + self.waiting)
    }

    pub fn merge(&mut self, o: &RankTimes) {
        self.total += o.total;
        self.communication += o.communication;
        self.waiting += o.waiting;
    }
}

/// The shared buffers of `n` ranks.
pub struct Collective {
    n: usize,
    barrier: Barrier,
    /// slots[set][rank]: that rank's latest contribution in that set.
    slots: [Vec<UnsafeCell<Vec<f32>>>; 2],
}

// SAFETY: a rank writes only its own slot of the set of its current call, and reads other
// slots only between that call's barrier and the next call's barrier on the same set (see
// the module comment); all ranks call collectives in the same order.
unsafe impl Sync for Collective {}

impl Collective {
    pub fn new(n: usize) -> Collective {
        let set = || (0..n).map(|_| UnsafeCell::new(Vec::new())).collect();
        Collective {
            n,
            barrier: Barrier::new(n),
            slots: [set(), set()],
        }
    }

    pub fn ranks(&self) -> usize {
        self.n
    }

    /// Rank `rank`'s handle, for one run of every rank (all ranks make a new one together).
    pub fn rank(&self, rank: usize) -> RankComm<'_> {
        assert!(rank < self.n, "rank {rank} of {}", self.n);
        RankComm {
            shared: self,
            rank,
            calls: 0,
            times: RankTimes::default(),
            traffic: Traffic::default(),
        }
    }
}

/// One rank's side of the collectives, with its timers (and, on rank 0, the traffic count).
pub struct RankComm<'c> {
    shared: &'c Collective,
    rank: usize,
    calls: u64,
    pub times: RankTimes,
    pub traffic: Traffic,
}

impl RankComm<'_> {
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// Publishes `x` into this rank's slot of the current set and waits for every rank;
    /// returns the set.
    fn publish(&mut self, x: &[f32]) -> usize {
        let set = (self.calls % 2) as usize;
        self.calls += 1;
        let t0 = Instant::now();
        // SAFETY: only this rank writes this slot, and no rank reads this set now (module
        // comment).
        unsafe {
            let slot = &mut *self.shared.slots[set][self.rank].get();
            slot.clear();
            slot.extend_from_slice(x);
        }
        let t1 = Instant::now();
        self.shared.barrier.wait();
        self.times.communication += t1 - t0;
        self.times.waiting += t1.elapsed();
        set
    }

    fn slot(&self, set: usize, rank: usize) -> &[f32] {
        // SAFETY: read between this set's barrier and its next use (module comment).
        unsafe { &*self.shared.slots[set][rank].get() }
    }

    // ANCHOR: all_reduce
    /// Replaces `x` on every rank by the sum of every rank's `x`, added in rank order (so all
    /// ranks hold the same bits). With one rank, `x` is unchanged.
    pub fn all_reduce(&mut self, kind: Kind, x: &mut [f32]) {
        let set = self.publish(x);
        let t = Instant::now();
        x.copy_from_slice(self.slot(set, 0));
        for r in 1..self.shared.n {
            for (a, &b) in x.iter_mut().zip(self.slot(set, r)) {
                *a += b;
            }
        }
        self.times.communication += t.elapsed();
        if self.rank == 0 {
            self.traffic.add(kind, std::mem::size_of_val(x));
        }
    }
    // ANCHOR_END: all_reduce

    /// Gathers every rank's `local` ((rows, cols_r), rank r's columns `starts[r]..` of each
    /// row) into rank 0's (rows, total) result; other ranks get `None`.
    pub fn gather(
        &mut self,
        local: &[f32],
        rows: usize,
        starts: &[usize],
        total: usize,
    ) -> Option<Vec<f32>> {
        let set = self.publish(local);
        if self.rank != 0 {
            return None;
        }
        let t = Instant::now();
        let mut out = vec![0.0f32; rows * total];
        for r in 0..self.shared.n {
            let part = self.slot(set, r);
            let width = part.len() / rows.max(1);
            for (row, src) in part.chunks_exact(width.max(1)).enumerate().take(rows) {
                out[row * total + starts[r]..][..width].copy_from_slice(src);
            }
        }
        self.times.communication += t.elapsed();
        self.traffic
            .add(Kind::Logits, std::mem::size_of_val(out.as_slice()));
        Some(out)
    }
}

/// Seconds per all-reduce of `dim` floats and per gather of `vocab` floats among `n` threads,
/// with nothing else running: what one collective costs on this machine (mean of `iters`).
pub fn time_collectives(n: usize, dim: usize, vocab: usize, iters: usize) -> (f64, f64) {
    let shared = Collective::new(n);
    let iters = iters.max(1);
    let starts: Vec<usize> = (0..n).map(|r| vocab * r / n).collect();
    let run = |rank: usize| {
        let mut comm = shared.rank(rank);
        let mut x = vec![rank as f32; dim];
        let local = vec![1.0f32; vocab * (rank + 1) / n - vocab * rank / n];
        let t = Instant::now();
        for _ in 0..iters {
            comm.all_reduce(Kind::Block, &mut x);
        }
        let reduce = t.elapsed().as_secs_f64() / iters as f64;
        let t = Instant::now();
        for _ in 0..iters {
            comm.gather(&local, 1, &starts, vocab);
        }
        (reduce, t.elapsed().as_secs_f64() / iters as f64)
    };
    std::thread::scope(|s| {
        let others: Vec<_> = (1..n).map(|r| s.spawn(move || run(r))).collect();
        let first = run(0);
        others.into_iter().for_each(|h| {
            h.join().expect("a timing thread panicked");
        });
        first
    })
}
