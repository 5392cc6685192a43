//! The backend's own threads, and the rule for when to use them.
//!
//! `threads = T` means the calling thread plus `T - 1` workers. The caller
//! takes chunks of the work itself instead of handing everything to the
//! workers and sleeping until they are done: a decode step runs ~200 small
//! products, and a sleep/wake of the caller for each one cost more than the
//! products on a busy 2-core machine. Chunks are claimed from an atomic
//! counter, so a worker that starts late (descheduled on a shared machine)
//! just takes fewer, and the caller waits only for chunks a worker has
//! already claimed. Idle workers poll for a while before they sleep, so
//! they are there for the next product of the step.
//!
//! Every parallel op (matrix products, attention) goes through the same
//! workers: a second set of threads (a rayon pool for attention, once)
//! found its threads asleep or crowded out by the polling ones, and
//! attention ran on the caller alone.

use std::marker::PhantomData;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rbees_core::{BackendError, Result};

/// Below this many multiply-adds a job runs on the calling thread alone:
/// waking a worker and joining it (several microseconds) would cost more
/// than the work. (SmolLM2's K and V projections, 192 x 576, stay below.)
pub const PARALLEL_MIN_WORK: usize = 192 * 1024;

/// How long an idle worker keeps polling for the next job before it
/// sleeps. A decode step is ~200 products a few tens of microseconds apart:
/// a worker that went to sleep after each would be woken (tens of
/// microseconds) too late to take part, and 2 threads decoded no faster
/// than 1. Polling costs CPU only between jobs, for this long.
const SPIN_FOR: Duration = Duration::from_micros(500);

/// A published job: claims and computes chunks until none are left. Its
/// real lifetime is one [`Pool::run`] call (see [`Board::retire`]).
type Job = &'static (dyn Fn() + Sync);

/// The workers' shared state: the current job and its number.
struct Board {
    /// Number of jobs published so far; a change means "new job".
    epoch: AtomicUsize,
    /// The current job; `None` once its caller has retired it.
    job: Mutex<Option<Job>>,
    /// Workers inside the current job (they joined while it was published).
    active: AtomicUsize,
    /// A worker's chunk panicked during the current job.
    panicked: AtomicBool,
    /// Workers waiting on `wake` (so publishing skips the wake-up call when
    /// every worker is still polling).
    sleeping: AtomicUsize,
    wake: Condvar,
    stop: AtomicBool,
}

impl Board {
    fn publish(&self, job: Job) {
        let mut slot = self.job.lock().unwrap_or_else(|e| e.into_inner());
        *slot = Some(job);
        self.epoch.fetch_add(1, Ordering::Release);
        drop(slot);
        if self.sleeping.load(Ordering::Acquire) > 0 {
            self.wake.notify_all();
        }
    }

    /// Takes the job down and waits until no worker is inside it: after
    /// this, nothing the job borrows is used again. A worker joins only
    /// under the lock, while the job is up, and counts itself in `active`
    /// there; the workers inside are computing chunks they claimed (which
    /// the caller needs anyway) or finding none left.
    fn retire(&self) {
        *self.job.lock().unwrap_or_else(|e| e.into_inner()) = None;
        let mut spins = 0u32;
        while self.active.load(Ordering::Acquire) > 0 {
            spins += 1;
            if spins < 1 << 12 {
                std::hint::spin_loop();
            } else {
                // A worker was descheduled mid-chunk: let it run.
                std::thread::yield_now();
            }
        }
    }

    /// The current job, with this worker counted in it.
    fn join(&self) -> Option<Job> {
        let slot = self.job.lock().unwrap_or_else(|e| e.into_inner());
        let job = *slot;
        if job.is_some() {
            self.active.fetch_add(1, Ordering::AcqRel);
        }
        job
    }

    /// A worker: waits for each new job (polling, then sleeping) and runs it.
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
                let slot = self.job.lock().unwrap_or_else(|e| e.into_inner());
                self.sleeping.fetch_add(1, Ordering::AcqRel);
                // Re-checked under the lock `publish` takes, so no wake-up
                // is lost; the timeout is a second safety net.
                if self.epoch.load(Ordering::Acquire) == seen && !self.stop.load(Ordering::Relaxed)
                {
                    let _ = self.wake.wait_timeout(slot, Duration::from_millis(50));
                }
                self.sleeping.fetch_sub(1, Ordering::AcqRel);
            }
            if let Some(job) = self.join() {
                if catch_unwind(AssertUnwindSafe(job)).is_err() {
                    self.panicked.store(true, Ordering::Release);
                }
                self.active.fetch_sub(1, Ordering::AcqRel);
            }
        }
    }
}

/// Retires the job when the caller leaves [`Pool::run`], also when
/// its own chunk panics, so no worker outlives what the job borrows.
struct Retire<'a>(&'a Board);

impl Drop for Retire<'_> {
    fn drop(&mut self) {
        self.0.retire();
    }
}

/// Threads that run [`Pool::run`] jobs, polling between jobs.
struct Workers {
    board: Arc<Board>,
    /// One job at a time: a second caller waits for the first.
    running: Mutex<()>,
    handles: Vec<JoinHandle<()>>,
}

impl Workers {
    fn start(n: usize) -> Result<Self> {
        let board = Arc::new(Board {
            epoch: AtomicUsize::new(0),
            job: Mutex::new(None),
            active: AtomicUsize::new(0),
            panicked: AtomicBool::new(false),
            sleeping: AtomicUsize::new(0),
            wake: Condvar::new(),
            stop: AtomicBool::new(false),
        });
        let mut workers = Workers {
            board,
            running: Mutex::new(()),
            handles: Vec::with_capacity(n),
        };
        for i in 0..n {
            let board = Arc::clone(&workers.board);
            let handle = std::thread::Builder::new()
                .name(format!("rbees-cpu-{i}"))
                .spawn(move || board.serve())
                .map_err(|e| BackendError::Other(format!("cannot start a worker thread: {e}")))?;
            workers.handles.push(handle);
        }
        Ok(workers)
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.board.stop.store(true, Ordering::Relaxed);
        {
            // Under the lock a sleeping worker re-checks `stop` with.
            let _slot = self.board.job.lock().unwrap_or_else(|e| e.into_inner());
            self.board.wake.notify_all();
        }
        for handle in self.handles.drain(..) {
            let _ = handle.join();
        }
    }
}

pub struct Pool {
    /// `None` for one thread.
    workers: Option<Workers>,
    threads: usize,
}

impl Pool {
    /// `threads == None`: one per core.
    pub fn new(threads: Option<usize>) -> Result<Self> {
        let threads = threads
            .filter(|&t| t > 0)
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        let workers = if threads > 1 {
            Some(Workers::start(threads - 1)?)
        } else {
            None
        };
        Ok(Pool { workers, threads })
    }

    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Calls `task(i)` for every `i < count`, on all threads when `work`
    /// (multiply-adds, roughly) is worth it, otherwise on this thread.
    /// Returns when every task is done.
    fn run(&self, count: usize, work: usize, task: &(dyn Fn(usize) + Sync)) -> Result<()> {
        let workers = match &self.workers {
            Some(workers) if work >= PARALLEL_MIN_WORK && count > 1 => workers,
            _ => {
                (0..count).for_each(task);
                return Ok(());
            }
        };
        let _one_job = workers.running.lock().unwrap_or_else(|e| e.into_inner());
        let board = &*workers.board;
        let next = AtomicUsize::new(0);
        let claim = || loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            if i >= count {
                break;
            }
            task(i);
        };
        let job: &(dyn Fn() + Sync) = &claim;
        // SAFETY: the job borrows `task` and locals of this call; it is
        // retired (no worker inside, none can join) before they go, by
        // `retire` on the way out, including when `claim` panics here.
        let job: Job = unsafe { std::mem::transmute::<&(dyn Fn() + Sync), Job>(job) };
        board.panicked.store(false, Ordering::Relaxed);
        let retire = Retire(board);
        board.publish(job);
        claim();
        drop(retire);
        if board.panicked.load(Ordering::Acquire) {
            return Err(BackendError::Other(
                "a worker thread of the cpu backend panicked".into(),
            ));
        }
        Ok(())
    }

    /// Calls `f(index, chunk)` for every `chunk_len`-sized chunk of `out`,
    /// on all threads when `work` is worth it (see [`Pool::run`]). Results
    /// do not depend on which thread computes a chunk.
    pub fn for_chunks<F>(&self, out: &mut [f32], chunk_len: usize, work: usize, f: F) -> Result<()>
    where
        F: Fn(usize, &mut [f32]) + Sync,
    {
        let out = Shared::new(out);
        let chunk_len = chunk_len.max(1);
        self.run(out.len.div_ceil(chunk_len), work, &|i| {
            let start = i * chunk_len;
            // SAFETY: chunk `i` is handed out once; chunks do not overlap.
            f(i, unsafe {
                out.range(start, chunk_len.min(out.len - start))
            });
        })
    }

    /// A new `[rows, cols]` result computed in bands of `band` columns:
    /// `f(index, out)` writes band `index`'s columns of every row through
    /// `out`, in place.
    pub fn collect_column_bands<F>(
        &self,
        rows: usize,
        cols: usize,
        band: usize,
        work: usize,
        f: F,
    ) -> Result<Vec<f32>>
    where
        F: Fn(usize, &mut BandOut<'_>) + Sync,
    {
        let band = band.max(1);
        let mut out = vec![0f32; rows * cols];
        let shared = Shared::new(&mut out);
        self.run(cols.div_ceil(band), work, &|b| {
            let first = b * band;
            let mut view = BandOut {
                ptr: shared.ptr(),
                cols,
                rows,
                first,
                count: band.min(cols - first),
                _out: PhantomData,
            };
            f(b, &mut view);
        })?;
        Ok(out)
    }
}

/// The columns `first..first + count` of every row of a `[rows, cols]`
/// result: what one band of [`Pool::collect_column_bands`] writes.
pub struct BandOut<'a> {
    ptr: *mut f32,
    cols: usize,
    rows: usize,
    first: usize,
    count: usize,
    _out: PhantomData<&'a mut [f32]>,
}

impl BandOut<'_> {
    /// Number of the band's first column.
    pub fn first(&self) -> usize {
        self.first
    }

    /// Columns in the band.
    pub fn count(&self) -> usize {
        self.count
    }

    /// The band's part of row `i`.
    pub fn row(&mut self, i: usize) -> &mut [f32] {
        assert!(i < self.rows, "row {i} of {}", self.rows);
        // SAFETY: the bands of one result cover disjoint columns, each band
        // has one `BandOut`, and `&mut self` keeps its rows from aliasing;
        // the result outlives the job (`collect_column_bands` returns it
        // after `run`).
        unsafe {
            std::slice::from_raw_parts_mut(self.ptr.add(i * self.cols + self.first), self.count)
        }
    }

    /// Column `j` of the band: `values[i]` into row `i`.
    pub fn set_column(&mut self, j: usize, values: &[f32]) {
        for (i, &v) in values.iter().enumerate() {
            self.row(i)[j] = v;
        }
    }
}

/// A mutable slice that tasks write in disjoint ranges.
struct Shared {
    ptr: *mut f32,
    len: usize,
}

// SAFETY: every user hands each range (or, through `BandOut`, each band of
// columns) to one task only, so threads never share an element.
unsafe impl Sync for Shared {}

impl Shared {
    fn new(out: &mut [f32]) -> Self {
        Shared {
            ptr: out.as_mut_ptr(),
            len: out.len(),
        }
    }

    /// The slice's address. (A method, so closures capture the `Sync`
    /// wrapper, not the pointer.)
    fn ptr(&self) -> *mut f32 {
        self.ptr
    }

    /// # Safety
    /// No two live ranges may overlap, and the slice `new` got must outlive
    /// the range.
    #[allow(clippy::mut_from_ref)]
    unsafe fn range(&self, start: usize, len: usize) -> &mut [f32] {
        assert!(start + len <= self.len, "range past the end");
        std::slice::from_raw_parts_mut(self.ptr.add(start), len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A new `total`-long result computed by [`Pool::for_chunks`].
    fn collect(
        pool: &Pool,
        total: usize,
        chunk_len: usize,
        f: impl Fn(usize, &mut [f32]) + Sync,
    ) -> Result<Vec<f32>> {
        let mut out = vec![0f32; total];
        pool.for_chunks(&mut out, chunk_len, usize::MAX, f)?;
        Ok(out)
    }

    #[test]
    fn every_chunk_is_computed_once_in_place() {
        let pool = Pool::new(Some(3)).expect("pool");
        for total in [1, 7, 64, 1000] {
            let out = collect(&pool, total, 3, |i, c| {
                for (j, v) in c.iter_mut().enumerate() {
                    *v += (i * 3 + j) as f32;
                }
            })
            .expect("job");
            let want: Vec<f32> = (0..total).map(|v| v as f32).collect();
            assert_eq!(out, want, "total {total}");
        }
    }

    #[test]
    fn column_bands_land_in_place() {
        let pool = Pool::new(Some(2)).expect("pool");
        for (rows, cols, band) in [(1, 10, 3), (3, 10, 3), (8, 64, 5), (5, 7, 7)] {
            let out = pool
                .collect_column_bands(rows, cols, band, usize::MAX, |b, out| {
                    assert_eq!(out.first(), b * band);
                    for i in 0..rows {
                        let first = out.first();
                        for (j, v) in out.row(i).iter_mut().enumerate() {
                            *v = (i * 1000 + first + j) as f32;
                        }
                    }
                })
                .expect("job");
            let want: Vec<f32> = (0..rows * cols)
                .map(|at| ((at / cols) * 1000 + at % cols) as f32)
                .collect();
            assert_eq!(out, want, "{rows}x{cols} in bands of {band}");
        }
    }

    #[test]
    fn jobs_borrow_the_callers_data() {
        let pool = Pool::new(Some(2)).expect("pool");
        let input: Vec<f32> = (0..4096).map(|v| v as f32).collect();
        for _ in 0..200 {
            let out = collect(&pool, input.len(), 16, |i, c| {
                for (o, x) in c.iter_mut().zip(&input[i * 16..]) {
                    *o = 2.0 * x;
                }
            })
            .expect("job");
            assert!(out.iter().zip(&input).all(|(o, x)| *o == 2.0 * x));
        }
    }

    #[test]
    fn a_panicking_chunk_is_an_error_not_a_hang() {
        let pool = Pool::new(Some(2)).expect("pool");
        let caller = std::thread::current().id();
        // Chunks that run on a worker panic; the caller's do not.
        let result = collect(&pool, 1 << 16, 1, |_, c| {
            if std::thread::current().id() != caller {
                panic!("chunk failed");
            }
            c[0] = 1.0;
        });
        // Whether the worker got a chunk is up to the scheduler; if it did,
        // the call must say so.
        if let Err(e) = result {
            assert!(e.to_string().contains("panicked"), "{e}");
        }
        // The pool still works afterwards.
        let out = collect(&pool, 64, 1, |i, c| c[0] = i as f32);
        assert_eq!(out.expect("job")[63], 63.0);
    }
}
