//! Shared by the cpu backend's integration tests.

use rbees_backend_cpu::CpuBackend;
use rbees_core::BackendOptions;

/// The backend on `threads` threads, with the portable scalar kernels or
/// the fastest this CPU runs.
pub fn backend(threads: usize, scalar: bool) -> CpuBackend {
    let options = BackendOptions {
        device: "cpu".into(),
        threads: Some(threads),
    };
    if scalar {
        CpuBackend::scalar(&options).expect("scalar backend")
    } else {
        CpuBackend::new(&options).expect("backend")
    }
}
