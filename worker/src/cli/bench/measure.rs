//! One backend measured in this process (the child side of `rbees bench`):
//! load, warm up, then prompt processing and decode repetitions, reported
//! as JSON lines on stdout.

use std::io::Write;
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};
use rbees_model::generate::PROMPT_BATCH;
use rbees_model::synth::SplitMix64;
use rbees_model::LoadOptions;
use serde::{Deserialize, Serialize};

use crate::engine::{self, AnyModel, BackendChoice, Engine};

/// Decode steps of the warm-up (pages in the weights, sizes the caches).
const WARMUP_DECODE_STEPS: usize = 4;

/// What the child reports, one JSON object per line.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum ChildEvent {
    /// A stage has started: `load`, `warmup`, `pp` or `tg` (`rep` counts from 1).
    Progress {
        stage: String,
        rep: usize,
    },
    Result(Measured),
}

/// One backend's numbers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Measured {
    pub backend: String,
    pub device: String,
    pub load_ms: f64,
    /// Prompt-processing tokens/s of each repetition.
    pub pp_tokens_per_s: Vec<f64>,
    /// Decode tokens/s of each repetition.
    pub tg_tokens_per_s: Vec<f64>,
    /// Peak resident memory of the process (VmHWM), where the OS reports it.
    pub peak_rss_bytes: Option<u64>,
    /// Fused ops that ran as their default composition on this backend.
    pub composed_ops: Vec<String>,
    /// Device-to-device copy bandwidth (read + write bytes/s), measured on
    /// devices other than the CPU, after the peak memory was read.
    #[serde(default)]
    pub copy_bytes_per_s: Option<f64>,
}

/// The settings of one measurement.
pub struct Plan<'a> {
    pub model: &'a Path,
    pub choice: BackendChoice,
    pub pp: usize,
    pub tg: usize,
    pub reps: usize,
}

fn emit(event: &ChildEvent) -> Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer(&mut out, event)?;
    writeln!(out)?;
    out.flush()?;
    Ok(())
}

fn progress(stage: &str, rep: usize) -> Result<()> {
    emit(&ChildEvent::Progress {
        stage: stage.to_string(),
        rep,
    })
}

/// Seconds to run `ids` through the model from position 0, in the same
/// batches as generation uses.
fn prompt_pass(model: &mut AnyModel, ids: &[u32]) -> Result<f64> {
    let started = Instant::now();
    for (i, chunk) in ids.chunks(PROMPT_BATCH).enumerate() {
        model.forward(chunk, i * PROMPT_BATCH)?;
    }
    Ok(started.elapsed().as_secs_f64())
}

/// Seconds to decode `n` tokens one at a time from position 0, each fed
/// the previous step's greedy choice (logits are read back every step, as in
/// real decoding).
fn decode_pass(model: &mut AnyModel, first: u32, n: usize) -> Result<f64> {
    let started = Instant::now();
    let mut id = first;
    for pos in 0..n {
        let logits = model.forward(&[id], pos)?;
        id = argmax(&logits);
    }
    Ok(started.elapsed().as_secs_f64())
}

fn argmax(values: &[f32]) -> u32 {
    let mut best = 0;
    for (i, v) in values.iter().enumerate() {
        if *v > values[best] {
            best = i;
        }
    }
    best as u32
}

/// Peak resident set size of this process, from /proc (Linux only).
fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Loads the model on the planned backend and measures it, reporting
/// progress and the result as JSON lines on stdout.
pub fn measure_and_report(plan: &Plan<'_>) -> Result<()> {
    progress("load", 1)?;
    let started = Instant::now();
    // Every test starts at position 0, so the cache only needs the longest.
    let options = LoadOptions {
        context: Some(plan.pp.max(plan.tg).max(1)),
    };
    let loaded = engine::load(plan.model, &plan.choice, &options, &mut |_, _| {})?;
    let load_ms = started.elapsed().as_secs_f64() * 1000.0;
    let mut model = loaded.model;
    let vocab = loaded.tokenizer.vocab_size() as u64;
    // Random prompt tokens, as llama-bench uses; the same for every backend.
    let mut rng = SplitMix64::new(42);
    let prompt: Vec<u32> = (0..plan.pp)
        .map(|_| (rng.next_u64() % vocab) as u32)
        .collect();
    let first = (rng.next_u64() % vocab) as u32;

    progress("warmup", 1)?;
    if plan.pp > 0 {
        prompt_pass(&mut model, &prompt).context("warm-up prompt pass")?;
    }
    if plan.tg > 0 {
        decode_pass(&mut model, first, plan.tg.min(WARMUP_DECODE_STEPS))
            .context("warm-up decode")?;
    }
    let (mut pp, mut tg) = (Vec::new(), Vec::new());
    for rep in 1..=plan.reps {
        if plan.pp > 0 {
            progress("pp", rep)?;
            pp.push(plan.pp as f64 / prompt_pass(&mut model, &prompt)?);
        }
        if plan.tg > 0 {
            progress("tg", rep)?;
            tg.push(plan.tg as f64 / decode_pass(&mut model, first, plan.tg)?);
        }
    }
    // Read before the bandwidth test, whose 1 GiB host buffer would count.
    let peak_rss_bytes = peak_rss_bytes();
    let copy_bytes_per_s = if model.device_name() == "cpu" {
        None
    } else {
        progress("bandwidth", 1)?;
        Some(model.copy_bandwidth().context("copy bandwidth")?)
    };
    emit(&ChildEvent::Result(Measured {
        backend: model.backend_name().to_string(),
        device: model.device_name(),
        load_ms,
        pp_tokens_per_s: pp,
        tg_tokens_per_s: tg,
        peak_rss_bytes,
        copy_bytes_per_s,
        composed_ops: model
            .capability_report()
            .composed_ops()
            .iter()
            .map(|op| op.to_string())
            .collect(),
    }))
}
