//! The backend's own thread pool, and the rule for when to use it.

use rayon::prelude::*;
use rbees_core::{BackendError, Result};

/// Below this many multiply-adds a job runs on the calling thread: handing
/// it to the pool (a wake-up and a join, several microseconds) would cost
/// more than the work.
pub const PARALLEL_MIN_WORK: usize = 32 * 1024;

pub struct Pool {
    pool: rayon::ThreadPool,
}

impl Pool {
    /// `threads == None`: one per core.
    pub fn new(threads: Option<usize>) -> Result<Self> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads.unwrap_or(0))
            .thread_name(|i| format!("rbees-cpu-{i}"))
            .build()
            .map_err(|e| BackendError::Other(format!("cannot start thread pool: {e}")))?;
        Ok(Pool { pool })
    }

    pub fn threads(&self) -> usize {
        self.pool.current_num_threads()
    }

    /// Calls `f(index, chunk)` for every `chunk_len`-sized chunk of `out`, on
    /// the pool when `work` (multiply-adds, roughly) is worth it, otherwise
    /// on this thread. Results do not depend on which: each chunk is computed
    /// the same way either way.
    pub fn for_chunks<F>(&self, out: &mut [f32], chunk_len: usize, work: usize, f: F)
    where
        F: Fn(usize, &mut [f32]) + Sync + Send,
    {
        let chunk_len = chunk_len.max(1);
        if work < PARALLEL_MIN_WORK || self.threads() == 1 {
            out.chunks_mut(chunk_len)
                .enumerate()
                .for_each(|(i, c)| f(i, c));
        } else {
            self.pool.install(|| {
                out.par_chunks_mut(chunk_len)
                    .enumerate()
                    .for_each(|(i, c)| f(i, c))
            });
        }
    }
}
