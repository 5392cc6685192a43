//! The backend's own threads, and the rule for when to use them.
//!
//! `threads = T` means the calling thread plus a rayon pool of `T - 1`
//! workers. The caller takes chunks of the work itself instead of handing
//! everything to the pool and sleeping until it is done (`install`): a
//! decode step runs ~200 small products, and a sleep/wake of the caller for
//! each one cost more than the products on a busy 2-core machine. Chunks are
//! taken from a shared queue, so a worker that starts late (descheduled on
//! a shared machine) just takes fewer.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rbees_core::{BackendError, Result};

/// Below this many multiply-adds a job runs on the calling thread alone:
/// waking a worker and joining it (several microseconds) would cost more
/// than the work. (SmolLM2's K and V projections, 192 x 576, stay below.)
pub const PARALLEL_MIN_WORK: usize = 192 * 1024;

/// How long an idle band worker keeps polling for the next job before it
/// sleeps. A decode step is ~200 products a few tens of microseconds apart:
/// a worker that went to sleep after each would be woken (tens of
/// microseconds) too late to take part, and 2 threads decoded no faster
/// than 1. Polling costs CPU only between jobs, for this long.
const SPIN_FOR: Duration = Duration::from_micros(500);

/// A job every band worker runs: claims chunks until none are left.
type Task = Arc<dyn Fn() + Send + Sync>;

/// The band workers' shared state: the latest task and its number.
struct Board {
    /// Number of tasks published so far; a change means "new task".
    epoch: AtomicUsize,
    task: Mutex<Option<Task>>,
    /// Workers waiting on `wake` (so publishing skips the wake-up call when
    /// every worker is still polling).
    sleeping: AtomicUsize,
    wake: Condvar,
    stop: AtomicBool,
}

impl Board {
    fn publish(&self, task: Task) {
        if let Ok(mut slot) = self.task.lock() {
            *slot = Some(task);
            self.epoch.fetch_add(1, Ordering::Release);
        }
        if self.sleeping.load(Ordering::Acquire) > 0 {
            self.wake.notify_all();
        }
    }

    /// A worker: waits for each new task (polling, then sleeping) and runs it.
    fn serve(&self) {
        let mut seen = 0;
        loop {
            let started = Instant::now();
            loop {
                if self.stop.load(Ordering::Relaxed) {
                    return;
                }
                let epoch = self.epoch.load(Ordering::Acquire);
                if epoch != seen {
                    seen = epoch;
                    break;
                }
                if started.elapsed() < SPIN_FOR {
                    std::hint::spin_loop();
                    continue;
                }
                let Ok(slot) = self.task.lock() else { return };
                self.sleeping.fetch_add(1, Ordering::AcqRel);
                // Re-checked under the lock `publish` takes, so no wake-up
                // is lost; the timeout is a second safety net.
                if self.epoch.load(Ordering::Acquire) == seen && !self.stop.load(Ordering::Relaxed)
                {
                    let _ = self.wake.wait_timeout(slot, Duration::from_millis(50));
                }
                self.sleeping.fetch_sub(1, Ordering::AcqRel);
            }
            let task = self.task.lock().ok().and_then(|slot| slot.clone());
            if let Some(task) = task {
                task();
            }
        }
    }
}

/// Threads that run [`Pool::run_bands`] jobs, polling between jobs.
struct BandWorkers {
    board: Arc<Board>,
    handles: Vec<JoinHandle<()>>,
}

impl BandWorkers {
    fn start(n: usize) -> Result<Self> {
        let board = Arc::new(Board {
            epoch: AtomicUsize::new(0),
            task: Mutex::new(None),
            sleeping: AtomicUsize::new(0),
            wake: Condvar::new(),
            stop: AtomicBool::new(false),
        });
        let handles = (0..n)
            .map(|i| {
                let board = Arc::clone(&board);
                std::thread::Builder::new()
                    .name(format!("rbees-cpu-band-{i}"))
                    .spawn(move || board.serve())
                    .map_err(|e| BackendError::Other(format!("cannot start a worker thread: {e}")))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(BandWorkers { board, handles })
    }
}

impl Drop for BandWorkers {
    fn drop(&mut self) {
        self.board.stop.store(true, Ordering::Relaxed);
        self.board.wake.notify_all();
        for handle in self.handles.drain(..) {
            let _ = handle.join();
        }
    }
}

pub struct Pool {
    /// `None` for one thread.
    workers: Option<rayon::ThreadPool>,
    /// The same number of threads for matrix products (`None` for one thread).
    band_workers: Option<BandWorkers>,
    threads: usize,
}

impl Pool {
    /// `threads == None`: one per core.
    pub fn new(threads: Option<usize>) -> Result<Self> {
        let threads = threads
            .filter(|&t| t > 0)
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        let band_workers = if threads > 1 {
            Some(BandWorkers::start(threads - 1)?)
        } else {
            None
        };
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
        Ok(Pool {
            workers,
            band_workers,
            threads,
        })
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
        let board = match &self.band_workers {
            Some(workers) if work >= PARALLEL_MIN_WORK && total > chunk_len => &workers.board,
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
        let (task_next, task_f) = (Arc::clone(&next), Arc::clone(&f));
        // Each worker that runs the task gets its own sender clone; the task
        // (and its sender) is replaced by the next job, and a claimed chunk
        // is always sent before its worker returns.
        let tx = Mutex::new(tx);
        board.publish(Arc::new(move || {
            let Some(tx) = tx.lock().ok().map(|tx| tx.clone()) else {
                return;
            };
            loop {
                let i = task_next.fetch_add(1, Ordering::Relaxed);
                if i >= chunks {
                    break;
                }
                let mut chunk = vec![0f32; len(i)];
                task_f(i, &mut chunk);
                if tx.send((i, chunk)).is_err() {
                    break;
                }
            }
        }));
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
            // A worker that claimed a chunk sends it (the task holds a sender
            // until the next job replaces it, so `recv` cannot hang on a
            // dropped channel; a panicking worker is caught by the timeout).
            let (i, chunk) = rx.recv_timeout(Duration::from_secs(60)).map_err(|_| {
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
