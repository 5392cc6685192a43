//! Backends behind one object-safe interface, so a criterion group can hold
//! every backend side by side although each has its own tensor types.

use anyhow::{Context, Result};
use rbees_conformance::Case;
use rbees_core::{Backend, BackendOptions, Support};
use rbees_worker::engine::{with_backend, BackendChoice, BackendVisitor};

/// One timed call of a prepared case.
pub type Call<'a> = Box<dyn FnMut() -> Result<()> + 'a>;

/// A backend that can prepare the benches' [`Case`]s for timing.
pub trait OpRunner {
    /// `name` on the CPU, `name:device` elsewhere: the function id in each group.
    fn label(&self) -> String;
    /// Why the backend cannot run `case`, if it cannot.
    fn unsupported(&self, case: &Case) -> Option<String>;
    /// Uploads the inputs (the conformance suite's, [`Case::prepare`]) and
    /// returns the call to time.
    fn prepare(&self, case: &Case) -> Result<Call<'_>>;
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
}

impl<B: Backend> OpRunner for Runner<B> {
    fn label(&self) -> String {
        match self.backend.device().as_str() {
            "cpu" => self.backend.name().to_string(),
            device => format!("{}:{device}", self.backend.name()),
        }
    }

    fn unsupported(&self, case: &Case) -> Option<String> {
        match self.backend.supports(case.op(), case.dtype()) {
            Support::Unsupported(why) => Some(why.to_string()),
            _ => None,
        }
    }

    fn prepare(&self, case: &Case) -> Result<Call<'_>> {
        let call = case.prepare(&self.backend)?;
        Ok(Box::new(move || self.finish(call()?)))
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
