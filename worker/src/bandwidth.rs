//! The device's copy bandwidth, the roofline of a memory-bound decode step:
//! one token reads every weight once, so `bandwidth / weight bytes` bounds
//! decode tokens/s.

use std::time::Instant;

use rbees_core::{Backend, Result};

/// Bytes copied per timed copy (1 GiB of f32: long enough that the launch
/// and the one-row read-back that waits for it stay a few percent).
const ROWS: usize = 4096;
const COLS: usize = 1 << 16;
/// Timed copies after one warm-up; the fastest counts.
const REPS: usize = 5;

/// Read + write bytes per second of a device-to-device copy with
/// [`Backend::rows`], waited for by downloading one row of the copy (the
/// backends run one stream in order, so that row is the last work queued).
pub fn copy_bandwidth<B: Backend>(b: &B) -> Result<f64> {
    copy_bandwidth_of(b, ROWS, COLS)
}

fn copy_bandwidth_of<B: Backend>(b: &B, rows: usize, cols: usize) -> Result<f64> {
    let x = b.upload(&vec![0.0; rows * cols], rows, cols)?;
    let copy = || -> Result<f64> {
        let started = Instant::now();
        let y = b.rows(&x, 0, rows)?;
        b.download(&b.rows(&y, rows - 1, 1)?)?;
        Ok(started.elapsed().as_secs_f64())
    };
    copy()?;
    let mut best = f64::INFINITY;
    for _ in 0..REPS {
        best = best.min(copy()?);
    }
    Ok(2.0 * (rows * cols * 4) as f64 / best)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rbees_backend_ndarray::NdarrayBackend;
    use rbees_core::BackendOptions;

    #[test]
    fn a_host_copy_has_a_finite_positive_bandwidth() {
        let b = NdarrayBackend::new(&BackendOptions::default()).unwrap();
        let bw = copy_bandwidth_of(&b, 64, 4096).unwrap();
        assert!(bw.is_finite() && bw > 1e6, "{bw}");
    }
}
