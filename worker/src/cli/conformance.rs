use anyhow::{bail, Result};
use clap::Args;
use rbees_conformance::{Options, Report};
use rbees_core::{descriptors, Backend, BackendOptions};
use rbees_model::Llama;

use crate::engine::{with_backend, AnyModel, BackendChoice, BackendVisitor};

#[derive(Debug, Args)]
pub struct ConformanceArgs {
    /// Backend to check (default: every backend built in that can run on the device).
    #[arg(long)]
    pub backend: Option<String>,
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// CPU threads (0: one per core).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Skip the Llama-2-7B matrix products, the slowest cases.
    #[arg(long)]
    pub quick: bool,
}

struct RunSuite<'a>(&'a Options);

impl BackendVisitor for RunSuite<'_> {
    type Output = Report;

    fn visit<B: Backend>(self, backend: B) -> Result<Report>
    where
        Llama<B>: Into<AnyModel>,
    {
        Ok(rbees_conformance::run(&backend, self.0))
    }
}

/// Runs the suite on one backend.
pub fn check(kind: &str, device: &str, threads: usize, options: &Options) -> Result<Report> {
    let choice = BackendChoice {
        kind: kind.to_string(),
        options: BackendOptions {
            device: device.to_string(),
            threads: (threads > 0).then_some(threads),
        },
    };
    with_backend(&choice, RunSuite(options))
}

/// `rbees conformance`: every op on the backend(s) against the ndarray reference.
pub fn run(args: &ConformanceArgs) -> Result<()> {
    let kinds: Vec<String> = match &args.backend {
        Some(kind) => vec![kind.clone()],
        None => descriptors()
            .iter()
            .filter(|d| (d.probe)(&args.device).is_ok())
            .map(|d| d.name.to_string())
            .collect(),
    };
    let options = Options { quick: args.quick };
    let mut failed = Vec::new();
    for kind in &kinds {
        let report = check(kind, &args.device, args.threads, &options)?;
        println!("{report}\n");
        if !report.is_ok() {
            failed.push(kind.clone());
        }
    }
    if !failed.is_empty() {
        bail!("conformance failed for: {}", failed.join(", "));
    }
    Ok(())
}
