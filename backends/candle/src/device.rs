//! Device names ("cpu", "cuda:N") to candle devices, and the thread setting.

use std::sync::OnceLock;

use candle_core::Device;

#[cfg(feature = "cuda")]
pub const DEVICES: &[&str] = &["cpu", "cuda:N"];
#[cfg(not(feature = "cuda"))]
pub const DEVICES: &[&str] = &["cpu"];

/// The registry's usability check.
pub fn probe(device: &str) -> Result<(), String> {
    open(device).map(|_| ())
}

/// Opens `device`, or says why it cannot be used here.
pub fn open(device: &str) -> Result<Device, String> {
    if device == "cpu" {
        return Ok(Device::Cpu);
    }
    let Some(ordinal) = device.strip_prefix("cuda:") else {
        return Err(format!(
            "unknown device '{device}'; the candle backend accepts {}",
            DEVICES.join(", ")
        ));
    };
    let ordinal: usize = ordinal
        .parse()
        .map_err(|_| format!("'{device}': the CUDA device must be cuda:N with N a number"))?;
    open_cuda(ordinal)
}

#[cfg(feature = "cuda")]
fn open_cuda(ordinal: usize) -> Result<Device, String> {
    Device::new_cuda(ordinal).map_err(|e| format!("cannot open CUDA device {ordinal}: {e}"))
}

#[cfg(not(feature = "cuda"))]
fn open_cuda(_ordinal: usize) -> Result<Device, String> {
    Err(
        "this binary was built without CUDA; rebuild with `cargo build --release --features cuda`"
            .into(),
    )
}

/// Threads candle's CPU kernels were started with; set once per process.
static CPU_THREADS: OnceLock<usize> = OnceLock::new();

/// candle's CPU kernels run on process-wide pools sized from
/// `CANDLE_NUM_THREADS`/`RAYON_NUM_THREADS` when first used. Setting them
/// before the first candle op makes the `threads` setting real; asking for a
/// different count later in the same process is an error, not a silent no-op.
pub fn set_cpu_threads(threads: Option<usize>) -> Result<(), String> {
    let Some(wanted) = threads else {
        return Ok(());
    };
    let actual = *CPU_THREADS.get_or_init(|| {
        if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
            std::env::set_var("CANDLE_NUM_THREADS", wanted.to_string());
        }
        if std::env::var_os("RAYON_NUM_THREADS").is_none() {
            std::env::set_var("RAYON_NUM_THREADS", wanted.to_string());
        }
        candle_core::utils::get_num_threads()
    });
    if actual != wanted {
        return Err(format!(
            "candle's CPU thread pool is process-wide and already runs {actual} threads; cannot switch to {wanted}"
        ));
    }
    Ok(())
}
