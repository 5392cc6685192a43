//! `rbees synth`: a random-weight Llama GGUF at a named real shape.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;
use rbees_core::WeightDType;
use rbees_model::synth::{shape_by_name, write_synthetic};

#[derive(Debug, Args)]
pub struct SynthArgs {
    /// Model shape: smollm2-135m, tinyllama-1.1b or llama2-7b.
    #[arg(long)]
    pub shape: String,
    /// Weight type of every matrix (norms stay F32): F32, F16, BF16, Q4_0,
    /// Q4_1, Q5_0, Q5_1, Q8_0, Q2_K..Q6_K.
    #[arg(long)]
    pub qtype: String,
    /// Output file.
    #[arg(long)]
    pub out: PathBuf,
    /// Random seed (the same seed writes the same file).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

pub fn run(args: &SynthArgs) -> Result<()> {
    let shape = shape_by_name(&args.shape)?;
    let dtype: WeightDType = args
        .qtype
        .parse()
        .map_err(anyhow::Error::msg)
        .context("--qtype")?;
    let started = Instant::now();
    let summary = write_synthetic(&shape, dtype, args.seed, &args.out)?;
    eprintln!(
        "wrote {}: {} ({:.1}M parameters), {} matrices, {} tensors, {:.1} MiB in {:.1} s",
        args.out.display(),
        summary.shape.name,
        summary.shape.parameters() as f64 / 1e6,
        summary.dtype,
        summary.tensors,
        summary.bytes as f64 / (1 << 20) as f64,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
