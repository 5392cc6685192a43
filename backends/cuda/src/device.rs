//! Device names ("cuda:N") and whether this binary can use them.

/// The ordinal of `cuda:N`, or why the name is wrong for this backend.
pub fn ordinal(device: &str) -> Result<usize, String> {
    let Some(n) = device.strip_prefix("cuda:") else {
        return Err(format!(
            "unknown device '{device}'; the {} backend runs only on cuda:N (e.g. cuda:0)",
            crate::NAME
        ));
    };
    n.parse()
        .map_err(|_| format!("'{device}': the CUDA device must be cuda:N with N a number"))
}

/// The registry's usability check; `cuda:N` (the listing's pattern) means cuda:0.
pub fn probe(device: &str) -> Result<(), String> {
    let device = if device == "cuda:N" { "cuda:0" } else { device };
    let ordinal = ordinal(device)?;
    check(ordinal)
}

#[cfg(not(feature = "cuda"))]
fn check(_ordinal: usize) -> Result<(), String> {
    Err(
        "this binary was built without CUDA; rebuild with `cargo build --release --features cuda`"
            .into(),
    )
}

/// The compute capability the PTX was built for (`CUDA_COMPUTE_CAP`), as (major, minor).
#[cfg(feature = "cuda")]
pub fn built_for() -> (i32, i32) {
    let cap: i32 = env!("RBEES_CUDA_COMPUTE_CAP").parse().unwrap_or(0);
    (cap / 10, cap % 10)
}

/// The device exists and its compute capability is the one the kernels
/// were built for: candle-kernels' PTX targets that exact architecture
/// (`sm_90a` for 90), so another one would fail at module load.
#[cfg(feature = "cuda")]
pub fn check(ordinal: usize) -> Result<(), String> {
    use cudarc::driver::{result, sys::CUdevice_attribute as Attr};
    result::init().map_err(|e| format!("no usable CUDA driver: {e}"))?;
    let count =
        result::device::get_count().map_err(|e| format!("cannot count CUDA devices: {e}"))?;
    if ordinal >= count.max(0) as usize {
        return Err(format!(
            "no CUDA device {ordinal}: this machine has {count} (cuda:0..cuda:{})",
            count - 1
        ));
    }
    let dev = result::device::get(ordinal as i32).map_err(|e| format!("cuda:{ordinal}: {e}"))?;
    let attr = |a| unsafe { result::device::get_attribute(dev, a) };
    let major = attr(Attr::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR)
        .map_err(|e| format!("cuda:{ordinal}: {e}"))?;
    let minor = attr(Attr::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR)
        .map_err(|e| format!("cuda:{ordinal}: {e}"))?;
    let (want_major, want_minor) = built_for();
    if (major, minor) != (want_major, want_minor) {
        let name = result::device::get_name(dev).unwrap_or_default();
        return Err(format!(
            "cuda:{ordinal} ({name}) has compute capability {major}.{minor} but this binary's kernels \
             were built for {want_major}.{want_minor}; rebuild with CUDA_COMPUTE_CAP={major}{minor}"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_names() {
        assert_eq!(ordinal("cuda:3"), Ok(3));
        assert!(ordinal("cpu").unwrap_err().contains("runs only on cuda:N"));
        assert!(ordinal("cuda:x").unwrap_err().contains("with N a number"));
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn without_the_feature_every_device_is_refused_with_the_fix() {
        for device in ["cuda:0", "cuda:N"] {
            let why = probe(device).unwrap_err();
            assert!(why.contains("--features cuda"), "{why}");
        }
        assert!(probe("cpu").unwrap_err().contains("runs only on cuda:N"));
    }
}
