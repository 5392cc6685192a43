//! The backend's own threads, and the rule for when to use them.
//!
//! `threads = T` means the calling thread plus a rayon pool of `T - 1`
//! workers. The caller takes chunks of the work itself instead of handing
//! everything to the pool and sleeping until it is done (`install`): a
//! decode step runs ~200 small products, and a sleep/wake of the caller for
//! each one cost more than the products on a busy 2-core machine. Chunks are
//! taken from a shared queue, so a worker that starts late (descheduled on
//! a shared machine) just takes fewer.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};

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

    /// A `total`-long result computed in `chunk_len`-sized chunks by
    /// `f(index, chunk)`, on all threads when `work` (multiply-adds, roughly)
    /// is worth it.
    ///
    /// Unlike [`Pool::for_chunks`], the caller never waits for a worker that
    /// has not started yet: chunks are claimed from an atomic counter, the
    /// caller computes in place, workers send theirs back over a channel,
    /// and the caller waits only for chunks a worker has already claimed. A
    /// worker that wakes up late (descheduled on a shared machine) finds
    /// nothing left and returns. This needs `'static` jobs, hence the `Arc`s
    /// in what `f` captures.
    pub fn run_bands<F>(
        &self,
        total: usize,
        chunk_len: usize,
        work: usize,
        f: F,
    ) -> Result<Vec<f32>>
    where
        F: Fn(usize, &mut [f32]) + Send + Sync + 'static,
    {
        let chunk_len = chunk_len.max(1);
        let mut out = vec![0f32; total];
        let pool = match &self.workers {
            Some(pool) if work >= PARALLEL_MIN_WORK && total > chunk_len => pool,
            _ => {
                for (i, c) in out.chunks_mut(chunk_len).enumerate() {
                    f(i, c);
                }
                return Ok(out);
            }
        };
        let chunks = total.div_ceil(chunk_len);
        let len = move |i: usize| chunk_len.min(total - i * chunk_len);
        let next = Arc::new(AtomicUsize::new(0));
        let f = Arc::new(f);
        let (tx, rx) = mpsc::channel::<(usize, Vec<f32>)>();
        for _ in 0..pool.current_num_threads() {
            let (next, f, tx) = (Arc::clone(&next), Arc::clone(&f), tx.clone());
            pool.spawn(move || loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= chunks {
                    break;
                }
                let mut chunk = vec![0f32; len(i)];
                f(i, &mut chunk);
                if tx.send((i, chunk)).is_err() {
                    break;
                }
            });
        }
        // Only the workers hold senders now: if one panics, `recv` fails
        // instead of waiting forever.
        drop(tx);
        let mut mine = 0;
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            if i >= chunks {
                break;
            }
            f(i, &mut out[i * chunk_len..i * chunk_len + len(i)]);
            mine += 1;
        }
        for _ in mine..chunks {
            let (i, chunk) = rx.recv().map_err(|_| {
                BackendError::Other("a worker thread of the cpu backend failed".into())
            })?;
            out[i * chunk_len..i * chunk_len + chunk.len()].copy_from_slice(&chunk);
        }
        Ok(out)
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
