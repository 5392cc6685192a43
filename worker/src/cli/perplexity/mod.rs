//! `rbees perplexity`: how well each backend predicts a text, side by side,
//! computed as llama.cpp's `llama-perplexity` computes it (the same file,
//! model and context give comparable numbers), and, against a reference
//! run's logits (`--kl-base`), how far each backend's distributions drift
//! from it: llama-perplexity's KL-divergence statistics.

mod logits_file;
mod score;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rbees_model::{LoadOptions, PROMPT_BATCH};
use serde::Serialize;

use super::{ModelArgs, PluginArgs};
use crate::config::Config;
use crate::engine::{self, AnyModel};
use logits_file::{Reader, Writer};
use score::{KlSummary, KlSums, LogProbs, NllSums, Plan};

#[derive(Debug, Args)]
pub struct PerplexityArgs {
    /// GGUF model file (default: `[model] path` of the config).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Text to score (UTF-8; one trailing newline is dropped, as
    /// llama-perplexity does). Optional when `--kl-base` reads a reference,
    /// which holds its tokens; if given then, it must tokenize to them.
    #[arg(long)]
    pub file: Option<PathBuf>,
    /// TOML config file (model path, backend settings).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Backend to score, `NAME` or `NAME:DEVICE` (repeatable; default: the
    /// config's, `auto`).
    #[arg(long = "backend")]
    pub backends: Vec<String>,
    /// Device for backends given without one (default: the config's).
    #[arg(long)]
    pub device: Option<String>,
    /// Tokens per chunk (llama-perplexity's `-c`, default 512 as there).
    /// With a reference that is read, its own context (must match if given).
    #[arg(long)]
    pub ctx: Option<usize>,
    /// Chunks to score at most (default: every whole chunk of the text).
    #[arg(long)]
    pub chunks: Option<usize>,
    /// CPU threads (default: `[backend] threads` of the config).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Reference logits in llama-perplexity's `--kl-divergence-base`
    /// format: read if the file exists (each backend is then compared with
    /// it), else written from the first backend's run (the reference) and
    /// the others compared with it.
    #[arg(long, value_name = "FILE")]
    pub kl_base: Option<PathBuf>,
    /// Write every number as JSON to this file (`-`: stdout, instead of the table).
    #[arg(long)]
    pub json: Option<PathBuf>,
    #[command(flatten)]
    pub plugins: PluginArgs,
}

/// llama-perplexity's default context.
pub const DEFAULT_CTX: usize = 512;

/// One backend's result.
#[derive(Debug, Clone, Serialize)]
pub struct Scored {
    pub backend: String,
    pub device: String,
    pub ppl: f64,
    pub ppl_err: f64,
    pub tokens_scored: usize,
    /// Perplexity after each chunk.
    pub running: Vec<f64>,
    /// Tokens run through the model per second (every chunk token; time
    /// in the model's forward passes, logits included, scoring not).
    pub tokens_per_second: f64,
    /// Against the reference, when one was read or written before this run.
    pub kl: Option<KlSummary>,
}

/// The whole report.
#[derive(Debug, Serialize)]
pub struct Report {
    pub model: String,
    pub n_ctx: usize,
    pub chunks: usize,
    pub tokens: usize,
    pub reference: Option<ReferenceInfo>,
    pub results: Vec<Scored>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ReferenceInfo {
    pub file: String,
    pub bytes: u64,
    /// The backend whose run wrote it (`None`: read from an earlier run).
    pub written_by: Option<String>,
}

/// What happens to each scored row besides counting its NLL.
enum Sink<'a> {
    None,
    Write(&'a mut Writer),
    Compare(&'a mut Reader, &'a mut KlSums),
}

pub fn run(args: &PerplexityArgs) -> Result<()> {
    let json_stdout = args.json.as_deref().is_some_and(|p| p.as_os_str() == "-");
    let report = compute(args, json_stdout)?;
    match &args.json {
        Some(_) if json_stdout => println!("{}", serde_json::to_string_pretty(&report)?),
        Some(p) => {
            std::fs::write(p, serde_json::to_string_pretty(&report)?)
                .with_context(|| format!("cannot write {}", p.display()))?;
            print!("{}", table(&report));
        }
        None => print!("{}", table(&report)),
    }
    Ok(())
}

/// Scores every backend of `args` (saying nothing on stderr if `quiet`):
/// the report `run` prints, and `rbees bench --quality` adds to its own.
pub fn compute(args: &PerplexityArgs, quiet: bool) -> Result<Report> {
    let config = Config::load_or_default(args.config.as_deref())?;
    let specs = if args.backends.is_empty() {
        vec![config.backend.kind.clone()]
    } else {
        args.backends.clone()
    };
    let text = args.file.as_ref().map(|f| read_text(f)).transpose()?;
    // A reference that exists is read: its header and tokens here, its
    // records by each backend's run.
    let reader = match &args.kl_base {
        Some(p) if p.exists() => Some(Reader::open(p)?),
        _ => None,
    };
    if text.is_none() && reader.is_none() {
        bail!("nothing to score: pass --file TEXT (or --kl-base with an existing reference file)");
    }
    let n_ctx = match (&reader, args.ctx) {
        (Some(r), Some(c)) if c != r.n_ctx => bail!(
            "--ctx {c}, but the reference {} was computed with a context of {}",
            args.kl_base
                .as_ref()
                .map_or(String::new(), |p| p.display().to_string()),
            r.n_ctx
        ),
        (Some(r), _) => r.n_ctx,
        (None, c) => c.unwrap_or(DEFAULT_CTX),
    };
    if let (Some(r), Some(n)) = (&reader, args.chunks) {
        if n != r.chunks {
            bail!(
                "--chunks {n}, but the reference holds {} chunks, which are what is scored; leave --chunks out",
                r.chunks
            );
        }
    }
    // The tokens and the chunk plan, from the first model's tokenizer.
    let mut prepared: Option<(Vec<u32>, Plan)> = None;
    let mut reference = reader
        .as_ref()
        .zip(args.kl_base.as_ref())
        .map(|(_, p)| ReferenceInfo {
            file: p.display().to_string(),
            bytes: std::fs::metadata(p).map_or(0, |m| m.len()),
            written_by: None,
        });
    let mut results = Vec::new();
    let mut model_path = String::new();
    for spec in &specs {
        let model_args = model_args(args, spec, n_ctx);
        let resolved = model_args.resolve_with(config.clone())?;
        model_path = resolved.model.display().to_string();
        let load_options = LoadOptions {
            context: Some(n_ctx),
            slots: 1,
        };
        let loaded = engine::load(
            &resolved.model,
            &resolved.choice,
            &load_options,
            &mut |_, _| {},
        )
        .with_context(|| format!("backend {spec}"))?;
        if let Some(why) = &loaded.auto_pick {
            eprintln!("{why}");
        }
        let vocab = loaded.tokenizer.vocab_size();
        if prepared.is_none() {
            prepared = Some(chunk_tokens(
                reader.as_ref(),
                text.as_deref(),
                &loaded.tokenizer,
                n_ctx,
                args.chunks,
                quiet,
            )?);
        }
        let (tokens, plan) = prepared
            .as_ref()
            .map(|(t, p)| (t.as_slice(), *p))
            .context("the text was tokenized above")?;
        let bos = loaded
            .tokenizer
            .add_bos()
            .then(|| loaded.tokenizer.bos_id())
            .flatten();
        let mut model = loaded.model;
        let name = model.backend_name().to_string();
        let device = model.device_name();
        let bar = progress_bar(plan.chunks, &name, quiet);
        let mut kl = KlSums::default();
        // Compared with the reference once there is one (read, or written
        // by an earlier backend of this run); else this run writes it.
        let scored = match (&reference, &args.kl_base) {
            (Some(_), Some(path)) => {
                let mut base = Reader::open(path)?;
                if base.n_vocab != vocab {
                    bail!(
                        "the reference {} has a vocabulary of {} tokens, this model {vocab}: it was computed with another model",
                        path.display(),
                        base.n_vocab
                    );
                }
                score(
                    &mut model,
                    tokens,
                    plan,
                    bos,
                    Sink::Compare(&mut base, &mut kl),
                    &bar,
                )?
            }
            (None, Some(path)) => {
                if !quiet {
                    eprintln!(
                        "writing the reference logits of backend {name} to {} ({:.1} MB)",
                        path.display(),
                        logits_file::file_bytes(n_ctx, vocab, plan.chunks, plan.scored_per_chunk())
                            as f64
                            / 1e6
                    );
                }
                let mut w = Writer::create(path, n_ctx, vocab, &tokens[..plan.chunks * n_ctx])?;
                let s = score(&mut model, tokens, plan, bos, Sink::Write(&mut w), &bar)?;
                reference = Some(ReferenceInfo {
                    file: path.display().to_string(),
                    bytes: w.finish()?,
                    written_by: Some(format!("{name}:{device}")),
                });
                s
            }
            (_, None) => score(&mut model, tokens, plan, bos, Sink::None, &bar)?,
        };
        bar.finish_and_clear();
        let (ppl, ppl_err) = scored.nll.estimate();
        results.push(Scored {
            backend: name,
            device,
            ppl,
            ppl_err,
            tokens_scored: scored.nll.count,
            running: scored.running,
            tokens_per_second: scored.tokens_per_second,
            kl: (kl.count() > 0).then(|| kl.summary(&scored.nll)),
        });
    }
    let (_, plan) = prepared.context("no backend ran")?;
    Ok(Report {
        model: model_path,
        n_ctx,
        chunks: plan.chunks,
        tokens: plan.scored(),
        reference,
        results,
    })
}

fn model_args(args: &PerplexityArgs, spec: &str, n_ctx: usize) -> ModelArgs {
    let (name, device) = super::split_backend_spec(spec);
    ModelArgs {
        model: args.model.clone(),
        config: args.config.clone(),
        backend: Some(name.to_string()),
        device: device.map(str::to_string).or_else(|| args.device.clone()),
        threads: args.threads,
        plugins: args.plugins.clone(),
        ctx_size: Some(n_ctx),
    }
}

/// The tokens to score and their chunk plan: a reference's own (the text,
/// if given too, must tokenize to them), else the text's.
fn chunk_tokens(
    reader: Option<&Reader>,
    text: Option<&str>,
    tokenizer: &rbees_model::Tokenizer,
    n_ctx: usize,
    chunks: Option<usize>,
    quiet: bool,
) -> Result<(Vec<u32>, Plan)> {
    let (tokens, plan) = match (reader, text) {
        (Some(r), text) => {
            if let Some(text) = text {
                if !tokenize(tokenizer, text)?.starts_with(&r.tokens) {
                    bail!("--file does not tokenize to the reference's tokens: the reference was computed on another text (or tokenizer)");
                }
            }
            let plan = Plan {
                n_ctx,
                chunks: r.chunks,
            };
            (r.tokens.clone(), plan)
        }
        (None, Some(text)) => {
            let tokens = tokenize(tokenizer, text)?;
            let plan = Plan::new(tokens.len(), n_ctx, chunks).map_err(anyhow::Error::msg)?;
            (tokens, plan)
        }
        (None, None) => bail!("nothing to score: pass --file TEXT"),
    };
    if !quiet {
        eprintln!(
            "scoring {} chunks of {n_ctx} tokens ({} tokens scored, the second half of each) of {} tokens",
            plan.chunks,
            plan.scored(),
            tokens.len()
        );
    }
    Ok((tokens, plan))
}

/// The text, less one trailing newline; an empty text is an error.
pub(crate) fn read_text(path: &std::path::Path) -> Result<String> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut text = String::from_utf8(bytes)
        .map_err(|e| anyhow::anyhow!("{} is not UTF-8 text: {e}", path.display()))?;
    if text.ends_with('\n') {
        text.pop();
    }
    if text.is_empty() {
        bail!("{} is empty: nothing to score", path.display());
    }
    Ok(text)
}

/// As llama-perplexity: BOS if the model asks for one, special-token text
/// kept as text.
fn tokenize(tokenizer: &rbees_model::Tokenizer, text: &str) -> Result<Vec<u32>> {
    tokenizer
        .encode(text, true, false)
        .context("cannot tokenize the text")
}

struct Run {
    nll: NllSums,
    running: Vec<f64>,
    tokens_per_second: f64,
}

/// Runs every chunk through `model` and scores the second half of each.
fn score(
    model: &mut AnyModel,
    tokens: &[u32],
    plan: Plan,
    bos: Option<u32>,
    mut sink: Sink<'_>,
    bar: &ProgressBar,
) -> Result<Run> {
    let n_ctx = plan.n_ctx;
    let first = plan.first();
    let mut nll = NllSums::default();
    let mut running = Vec::with_capacity(plan.chunks);
    // Time in the model only: scoring and the reference file are not speed.
    let mut model_seconds = 0.0;
    for c in 0..plan.chunks {
        let chunk = &tokens[c * n_ctx..(c + 1) * n_ctx];
        let mut ids = chunk.to_vec();
        // llama-perplexity puts BOS in place of each chunk's first token.
        if let Some(b) = bos {
            ids[0] = b;
        }
        for b0 in (0..n_ctx).step_by(PROMPT_BATCH) {
            let b1 = (b0 + PROMPT_BATCH).min(n_ctx);
            let from = first.max(b0);
            let wanted = b1.saturating_sub(from);
            let started = Instant::now();
            let logits = model
                .forward_last(&ids[b0..b1], b0, wanted)
                .with_context(|| format!("chunk {} of {}", c + 1, plan.chunks))?;
            model_seconds += started.elapsed().as_secs_f64();
            let vocab = logits.len().checked_div(wanted).unwrap_or(0);
            for (k, row) in logits.chunks_exact(vocab.max(1)).enumerate() {
                let pos = from + k;
                // The last position's logits predict past the chunk.
                if pos + 1 >= n_ctx {
                    continue;
                }
                let target = chunk[pos + 1] as usize;
                let row_nll = match &mut sink {
                    Sink::None => score::nll(row, target),
                    Sink::Write(w) => {
                        w.row(row)?;
                        score::nll(row, target)
                    }
                    Sink::Compare(r, kl) => kl.add(row, r.next_record()? as &dyn LogProbs, target),
                };
                nll.add(row_nll);
            }
        }
        running.push(nll.ppl());
        bar.set_message(format!("[{}] PPL {:.4}", c + 1, nll.ppl()));
        bar.inc(1);
    }
    Ok(Run {
        nll,
        running,
        tokens_per_second: (plan.chunks * n_ctx) as f64 / model_seconds.max(1e-9),
    })
}

fn progress_bar(chunks: usize, backend: &str, hidden: bool) -> ProgressBar {
    let bar = ProgressBar::new(chunks as u64);
    if hidden || !std::io::stderr().is_terminal() {
        bar.set_draw_target(ProgressDrawTarget::hidden());
    }
    if let Ok(style) = ProgressStyle::with_template(&format!(
        "{backend:>12} {{bar:30}} {{pos}}/{{len}} chunks {{msg}} {{eta}}"
    )) {
        bar.set_style(style);
    }
    bar
}

/// The side-by-side table (markdown).
pub fn table(r: &Report) -> String {
    let mut out = format!(
        "perplexity of {} over {} chunks of {} tokens ({} tokens scored)\n",
        r.model, r.chunks, r.n_ctx, r.tokens
    );
    if let Some(reference) = &r.reference {
        out.push_str(&format!(
            "reference logits: {} ({:.1} MB, {})\n",
            reference.file,
            reference.bytes as f64 / 1e6,
            reference
                .written_by
                .as_ref()
                .map_or("read".to_string(), |b| format!("written by {b}"))
        ));
    }
    out.push('\n');
    let kl = r.results.iter().any(|s| s.kl.is_some());
    out.push_str("| backend | device | PPL | tokens/s |");
    if kl {
        out.push_str(" ln(PPL/PPL ref) | mean KLD | KLD 99% | KLD max | same top | RMS Δp |");
    }
    out.push_str("\n|---|---|---|---|");
    if kl {
        out.push_str("---|---|---|---|---|---|");
    }
    out.push('\n');
    for s in &r.results {
        out.push_str(&format!(
            "| {} | {} | {:.4} ± {:.5} | {:.1} |",
            s.backend, s.device, s.ppl, s.ppl_err, s.tokens_per_second
        ));
        if kl {
            match &s.kl {
                Some(k) => out.push_str(&format!(
                    " {:.5} ± {:.5} | {:.6} ± {:.6} | {:.6} | {:.6} | {:.3} ± {:.3} % | {:.3} ± {:.3} % |",
                    k.ln_ratio,
                    k.ln_ratio_err,
                    k.kld_mean,
                    k.kld_err,
                    k.kld_p99,
                    k.kld_max,
                    100.0 * k.same_top,
                    100.0 * k.same_top_err,
                    100.0 * k.rms_dp,
                    100.0 * k.rms_dp_err
                )),
                None => out.push_str(" reference | | | | | |"),
            }
        }
        out.push('\n');
    }
    out
}
