//! One backend measured in this process (the child side of `rbees bench`):
//! load, warm up, then prompt processing and decode repetitions, reported
//! as JSON lines on stdout.

use std::io::Write;
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};
use rbees_model::generate::PROMPT_BATCH;
use rbees_model::synth::SplitMix64;
use rbees_model::{LoadOptions, SeqChunk};
use serde::{Deserialize, Serialize};

use crate::engine::{self, AnyModel, BackendChoice};

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
    /// With `--parallel`: one entry per number of sequences.
    #[serde(default)]
    pub parallel: Vec<ParallelMeasured>,
}

/// `n` sequences together (continuous batching): each prompt of `pp`
/// tokens, then `tg` decode steps of one token per sequence.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ParallelMeasured {
    pub n: usize,
    /// All prompts' tokens per second, each repetition.
    pub pp_tokens_per_s: Vec<f64>,
    /// All sequences' decode tokens per second (aggregate), each repetition.
    pub tg_tokens_per_s: Vec<f64>,
}

/// The settings of one measurement.
pub struct Plan<'a> {
    pub model: &'a Path,
    pub choice: BackendChoice,
    pub pp: usize,
    pub tg: usize,
    pub reps: usize,
    /// Numbers of sequences to run together (empty: the single-sequence tests).
    pub parallel: Vec<usize>,
}

/// Prompt tokens one batched prompt step may hold (llama-batched-bench's
/// default `-b`).
pub const PARALLEL_PROMPT_BATCH: usize = 2048;

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

/// Seconds to prefill `prompts` (one per slot, each from position 0) in
/// steps of at most [`PARALLEL_PROMPT_BATCH`] tokens, then seconds to
/// decode `tg` tokens for every sequence together; each step feeds every
/// sequence its greedy choice.
fn parallel_pass(model: &mut AnyModel, prompts: &[Vec<u32>], tg: usize) -> Result<(f64, f64)> {
    let started = Instant::now();
    let mut next = vec![0u32; prompts.len()];
    // (sequence, position) of the prompt left to run.
    let mut done = vec![0usize; prompts.len()];
    while done.iter().zip(prompts).any(|(d, p)| d < &p.len()) {
        let mut left = PARALLEL_PROMPT_BATCH;
        let mut chunks = Vec::new();
        for (slot, (p, &d)) in prompts.iter().zip(&done).enumerate() {
            let n = (p.len() - d).min(left);
            if n == 0 {
                continue;
            }
            left -= n;
            chunks.push(SeqChunk {
                slot,
                pos0: d,
                ids: &p[d..d + n],
                logits: usize::from(d + n == p.len()),
            });
        }
        let logits = model.step(&chunks)?;
        for (c, l) in chunks.iter().zip(logits) {
            done[c.slot] = c.pos0 + c.ids.len();
            if let Some(l) = l {
                next[c.slot] = argmax(&l);
            }
        }
    }
    let pp_s = started.elapsed().as_secs_f64();
    let started = Instant::now();
    for t in 0..tg {
        let fed = next.clone();
        let chunks: Vec<SeqChunk<'_>> = fed
            .iter()
            .enumerate()
            .map(|(slot, id)| SeqChunk {
                slot,
                pos0: prompts[slot].len() + t,
                ids: std::slice::from_ref(id),
                logits: 1,
            })
            .collect();
        for (slot, l) in model.step(&chunks)?.into_iter().enumerate() {
            next[slot] = argmax(&l.unwrap_or_default());
        }
    }
    Ok((pp_s, started.elapsed().as_secs_f64()))
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
    // Every test starts at position 0, so the cache only needs the longest
    // (a sequence of the parallel test holds its prompt and its tokens).
    let options = if plan.parallel.is_empty() {
        LoadOptions {
            context: Some(plan.pp.max(plan.tg).max(1)),
            slots: 1,
        }
    } else {
        LoadOptions {
            context: Some((plan.pp + plan.tg).max(1)),
            slots: plan.parallel.iter().copied().max().unwrap_or(1),
        }
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

    if !plan.parallel.is_empty() {
        return measure_parallel(plan, model, load_ms, &mut rng, vocab);
    }
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
        composed_ops: composed_ops(&model),
        parallel: Vec::new(),
    }))
}

fn composed_ops(model: &AnyModel) -> Vec<String> {
    model
        .capability_report()
        .composed_ops()
        .iter()
        .map(|op| op.to_string())
        .collect()
}

/// The `--parallel` test: for each number of sequences, distinct random
/// prompts prefilled together, then decode steps over all of them.
fn measure_parallel(
    plan: &Plan<'_>,
    mut model: AnyModel,
    load_ms: f64,
    rng: &mut SplitMix64,
    vocab: u64,
) -> Result<()> {
    let most = plan.parallel.iter().copied().max().unwrap_or(1);
    let prompts: Vec<Vec<u32>> = (0..most)
        .map(|_| {
            (0..plan.pp)
                .map(|_| (rng.next_u64() % vocab) as u32)
                .collect()
        })
        .collect();
    progress("warmup", 1)?;
    parallel_pass(
        &mut model,
        &prompts[..most],
        plan.tg.min(WARMUP_DECODE_STEPS),
    )
    .context("warm-up")?;
    let mut results = Vec::new();
    for &n in &plan.parallel {
        let mut m = ParallelMeasured {
            n,
            pp_tokens_per_s: Vec::new(),
            tg_tokens_per_s: Vec::new(),
        };
        for rep in 1..=plan.reps {
            progress(&format!("parallel {n}"), rep)?;
            let (pp_s, tg_s) = parallel_pass(&mut model, &prompts[..n], plan.tg)?;
            if plan.pp > 0 {
                m.pp_tokens_per_s.push((n * plan.pp) as f64 / pp_s);
            }
            if plan.tg > 0 {
                m.tg_tokens_per_s.push((n * plan.tg) as f64 / tg_s);
            }
        }
        results.push(m);
    }
    emit(&ChildEvent::Result(Measured {
        backend: model.backend_name().to_string(),
        device: model.device_name(),
        load_ms,
        pp_tokens_per_s: Vec::new(),
        tg_tokens_per_s: Vec::new(),
        peak_rss_bytes: peak_rss_bytes(),
        copy_bytes_per_s: None,
        composed_ops: composed_ops(&model),
        parallel: results,
    }))
}
