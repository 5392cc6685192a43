//! With the `cuda` feature, compiles kernels/rbees.cu to PTX with nvcc (as
//! candle-kernels does for its own), for the compute capability in
//! `CUDA_COMPUTE_CAP` (../shared/cuda/setup-toolchain.sh sets it). Without
//! the feature it does nothing, so the default build needs no CUDA.

use std::env;
use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-changed=kernels/rbees.cu");
    println!("cargo::rerun-if-env-changed=CUDA_COMPUTE_CAP");
    println!("cargo::rerun-if-env-changed=NVCC");
    if env::var_os("CARGO_FEATURE_CUDA").is_none() {
        return;
    }
    let cap = match env::var("CUDA_COMPUTE_CAP") {
        Ok(cap) if !cap.is_empty() && cap.chars().all(|c| c.is_ascii_digit()) => cap,
        Ok(other) => fail(&format!(
            "CUDA_COMPUTE_CAP must be digits such as 90 (H100/H200), got '{other}'"
        )),
        Err(_) => fail(
            "set CUDA_COMPUTE_CAP to the GPU's compute capability (e.g. 90 for H100/H200); \
             `eval \"$(bash ../shared/cuda/setup-toolchain.sh --print-env)\"` does",
        ),
    };
    let nvcc = env::var("NVCC").unwrap_or_else(|_| "nvcc".to_string());
    let out_dir = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let ptx = out_dir.join("rbees_kernels.ptx");
    // No fast-math: the conformance suite holds these kernels to f32 rounding.
    let status = Command::new(&nvcc)
        .args(["--ptx", "-O3", "-std=c++17"])
        .arg(format!("--gpu-architecture=compute_{cap}"))
        .arg("-o")
        .arg(&ptx)
        .arg("kernels/rbees.cu")
        .status()
        .unwrap_or_else(|e| fail(&format!("cannot run {nvcc}: {e}")));
    if !status.success() {
        fail(&format!("{nvcc} failed on kernels/rbees.cu ({status})"));
    }
    println!("cargo::rustc-env=RBEES_CUDA_COMPUTE_CAP={cap}");
}

fn fail(message: &str) -> ! {
    eprintln!("rbees-backend-cuda: {message}");
    std::process::exit(1);
}
