//! Backends behind one object-safe interface, so a criterion group can hold
//! every backend side by side although each has its own tensor types.

use anyhow::{Context, Result};
use rbees_conformance::data::{values, weight_bytes};
use rbees_core::{
    rope_tables, Backend, BackendOptions, HostWeight, RopeVariant, Support, WeightDType,
};
use rbees_worker::engine::{with_backend, BackendChoice, BackendVisitor};

use crate::cases::OpCase;

/// RoPE base of the benches (Llama-2's).
const ROPE_BASE: f32 = 10_000.0;

/// One timed call of a prepared case.
pub type Call<'a> = Box<dyn FnMut() -> Result<()> + 'a>;

/// A backend that can prepare any [`OpCase`] for timing.
pub trait OpRunner {
    /// `name` on the CPU, `name:device` elsewhere: the function id in each group.
    fn label(&self) -> String;
    /// Why the backend cannot run `case`, if it cannot.
    fn unsupported(&self, case: &OpCase) -> Option<String>;
    /// Uploads the inputs and returns the call to time.
    fn prepare(&self, case: &OpCase) -> Result<Call<'_>>;
}

struct Runner<B: Backend> {
    backend: B,
}

impl<B: Backend> Runner<B> {
    /// Waits for the device: a download is the one synchronising call of the
    /// trait. CPU backends finish inside the op, so they skip it.
    fn finish(&self, out: B::Tensor) -> Result<()> {
        if self.backend.device() != "cpu" {
            self.backend.download(&out)?;
        }
        Ok(())
    }

    fn input(&self, rows: usize, cols: usize) -> Result<B::Tensor> {
        Ok(self
            .backend
            .upload(&values(rows * cols, 1, 1.0), rows, cols)?)
    }
}

impl<B: Backend> OpRunner for Runner<B> {
    fn label(&self) -> String {
        match self.backend.device().as_str() {
            "cpu" => self.backend.name().to_string(),
            device => format!("{}:{device}", self.backend.name()),
        }
    }

    fn unsupported(&self, case: &OpCase) -> Option<String> {
        match self.backend.supports(case.op(), case.dtype()) {
            Support::Unsupported(why) => Some(why.to_string()),
            _ => None,
        }
    }

    fn prepare(&self, case: &OpCase) -> Result<Call<'_>> {
        let b = &self.backend;
        Ok(match *case {
            OpCase::RmsNorm { rows, dim } => {
                let x = self.input(rows, dim)?;
                let bytes: Vec<u8> = values(dim, 2, 1.0)
                    .iter()
                    .flat_map(|v| v.to_le_bytes())
                    .collect();
                let shape = [dim];
                let w =
                    b.load_weight(&HostWeight::new("norm", WeightDType::F32, &shape, &bytes)?)?;
                Box::new(move || self.finish(b.rms_norm(&x, &w, 1e-5)?))
            }
            OpCase::Rope {
                seq,
                n_heads,
                head_dim,
            } => {
                let x = self.input(seq, n_heads * head_dim)?;
                let (cos, sin) = rope_tables(seq, head_dim, ROPE_BASE);
                let cos = b.upload(&cos, seq, head_dim / 2)?;
                let sin = b.upload(&sin, seq, head_dim / 2)?;
                Box::new(move || {
                    let out = b.rope(
                        &x,
                        n_heads,
                        head_dim,
                        0,
                        &cos,
                        &sin,
                        RopeVariant::Interleaved,
                    )?;
                    self.finish(out)
                })
            }
            OpCase::Softmax { rows, cols } => {
                let x = self.input(rows, cols)?;
                Box::new(move || self.finish(b.softmax(&x)?))
            }
            OpCase::Silu { rows, cols } => {
                let x = self.input(rows, cols)?;
                Box::new(move || self.finish(b.silu(&x)?))
            }
            OpCase::MatMul { m, n, k, dtype } => {
                let x = self.input(m, k)?;
                let bytes = weight_bytes(dtype, n, k, 3).map_err(anyhow::Error::msg)?;
                let shape = [n, k];
                let w = b.load_weight(&HostWeight::new("w", dtype, &shape, &bytes)?)?;
                Box::new(move || self.finish(b.matmul(&x, &w)?))
            }
        })
    }
}

struct MakeRunner;

impl BackendVisitor for MakeRunner {
    type Output = Box<dyn OpRunner>;

    fn visit<B: Backend>(self, backend: B) -> Result<Box<dyn OpRunner>> {
        Ok(Box::new(Runner { backend }))
    }
}

/// Every compiled backend on every device it can use here (the CPU, and
/// `cuda:0` in a CUDA build on a machine with a GPU), with `threads` threads.
pub fn runners(threads: usize) -> Result<Vec<Box<dyn OpRunner>>> {
    let mut all = Vec::new();
    for d in rbees_core::descriptors() {
        for device in d.devices.iter().map(|p| p.replace('N', "0")) {
            if (d.probe)(&device).is_err() {
                continue;
            }
            let choice = BackendChoice::new(
                d.name,
                BackendOptions {
                    device: device.clone(),
                    threads: Some(threads),
                },
            );
            let runner = with_backend(&choice, MakeRunner)
                .with_context(|| format!("cannot start {} on {device}", d.name))?;
            all.push(runner);
        }
    }
    Ok(all)
}
