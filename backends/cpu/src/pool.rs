//! The backend's own threads, and the rule for when to use them.
//!
//! `threads = T` means the calling thread plus a rayon pool of `T - 1`
//! workers. The caller takes chunks of the work itself instead of handing
//! everything to the pool and sleeping until it is done (`install`): a
//! decode step runs ~200 small products, and a sleep/wake of the caller for
//! each one cost more than the products on a busy 2-core machine. Chunks are
//! taken from a shared queue, so a worker that starts late (descheduled on
//! a shared machine) just takes fewer.

use std::sync::Mutex;

use rbees_core::{BackendError, Result};

/// Below this many multiply-adds a job runs on the calling thread alone:
/// waking a worker and joining it (several microseconds) would cost more
/// than the work. (SmolLM2's K and V projections, 192 x 576, stay below.)
pub const PARALLEL_MIN_WORK: usize = 192 * 1024;

pub struct Pool {
    /// `None` for one thread.
    workers: Option<rayon::ThreadPool>,
    threads: usize,
}

impl Pool {
    /// `threads == None`: one per core.
    pub fn new(threads: Option<usize>) -> Result<Self> {
        let threads = threads
            .filter(|&t| t > 0)
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        let workers = if threads > 1 {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads - 1)
                .thread_name(|i| format!("rbees-cpu-{i}"))
                .build()
                .map_err(|e| BackendError::Other(format!("cannot start thread pool: {e}")))?;
            Some(pool)
        } else {
            None
        };
        Ok(Pool { workers, threads })
    }

    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Calls `f(index, chunk)` for every `chunk_len`-sized chunk of `out`, on
    /// all threads when `work` (multiply-adds, roughly) is worth it,
    /// otherwise on this thread. Results do not depend on which: each chunk
    /// is computed the same way either way.
    pub fn for_chunks<F>(&self, out: &mut [f32], chunk_len: usize, work: usize, f: F)
    where
        F: Fn(usize, &mut [f32]) + Sync + Send,
    {
        let chunk_len = chunk_len.max(1);
        let pool = match &self.workers {
            Some(pool) if work >= PARALLEL_MIN_WORK && out.len() > chunk_len => pool,
            _ => {
                out.chunks_mut(chunk_len)
                    .enumerate()
                    .for_each(|(i, c)| f(i, c));
                return;
            }
        };
        let queue = Mutex::new(out.chunks_mut(chunk_len).enumerate());
        // A poisoned queue means another participant panicked; rayon
        // re-raises that panic at the end of the scope.
        let take = || queue.lock().ok().and_then(|mut q| q.next());
        let drain = || {
            while let Some((i, chunk)) = take() {
                f(i, chunk);
            }
        };
        pool.in_place_scope(|s| {
            for _ in 0..pool.current_num_threads() {
                s.spawn(|_| drain());
            }
            drain();
        });
    }
}
