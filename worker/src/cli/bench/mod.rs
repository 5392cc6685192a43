//! `rbees bench`: end-to-end prompt-processing and decode speed of several
//! backends, back to back on the same model.
//!
//! Each backend runs in a child process (this binary with `--child`), so
//! its peak memory is its own and one backend's caches or thread pools do
//! not slow or speed up the next. The child reports JSON lines on stdout
//! ([`measure::ChildEvent`]); this side shows progress and summarises.

mod chart;
mod measure;
mod report;

use std::io::{BufRead, BufReader, IsTerminal, Read};
use std::path::PathBuf;
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rbees_core::{descriptors, BackendOptions};

use super::PluginArgs;
use crate::config::Config;
use crate::engine::BackendChoice;
use crate::plugins::PluginPaths;
use measure::{ChildEvent, Plan};
use report::{Document, Row};

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// GGUF model file (default: `[model] path` of the config).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// TOML config file (for the model path and backend settings).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Backend to measure, `NAME` or `NAME:DEVICE` (repeatable; default:
    /// every built-in backend that can run on the CPU here, and the plugins
    /// given by --plugin/--plugins-dir or the config).
    #[arg(long = "backend")]
    pub backends: Vec<String>,
    /// Device for backends given without one.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Prompt tokens processed in one pass (0 skips the test).
    #[arg(long, default_value_t = 128)]
    pub pp: usize,
    /// Tokens decoded one at a time (0 skips the test).
    #[arg(long, default_value_t = 64)]
    pub tg: usize,
    /// Numbers of sequences to run together instead of the single-sequence
    /// tests, e.g. `1,2,4,8,16`: for each, that many distinct `--pp`-token
    /// prompts are prefilled in batched steps, then `--tg` steps decode one
    /// token of every sequence (as llama.cpp's llama-batched-bench).
    #[arg(long, value_delimiter = ',')]
    pub parallel: Vec<usize>,
    /// Timed repetitions of each test, after one warm-up.
    #[arg(long, default_value_t = 5)]
    pub reps: usize,
    /// CPU threads (default: `[backend] threads` of the config, else one per core).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Write the results as JSON to this file (`-`: stdout, instead of the table).
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write an SVG bar chart to this file.
    #[arg(long)]
    pub chart: Option<PathBuf>,
    /// Also score each backend's quality on this text (`rbees perplexity`
    /// with `--quality-chunks` chunks of `--quality-ctx` tokens), in the
    /// same report: speed and quality side by side.
    #[arg(long, value_name = "TEXT")]
    pub quality: Option<PathBuf>,
    /// Chunks of the `--quality` text to score.
    #[arg(long, default_value_t = 4)]
    pub quality_chunks: usize,
    /// Tokens per `--quality` chunk (llama-perplexity's `-c`).
    #[arg(long, default_value_t = super::perplexity::DEFAULT_CTX)]
    pub quality_ctx: usize,
    #[command(flatten)]
    pub plugins: PluginArgs,
    /// Internal: measure the one backend given, reporting JSON lines.
    #[arg(long, hide = true)]
    pub child: bool,
}

/// `NAME[:DEVICE]` with the device `--device` gives when the spec has none.
fn parse_backend(spec: &str, default_device: &str) -> BackendChoiceSpec {
    let (name, device) = super::split_backend_spec(spec);
    BackendChoiceSpec {
        name: name.to_string(),
        device: device.unwrap_or(default_device).to_string(),
    }
}

struct BackendChoiceSpec {
    name: String,
    device: String,
}

fn threads(args: &BenchArgs, config: &Config) -> usize {
    match args.threads.unwrap_or(config.backend.threads) {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    }
}

pub fn run(args: &BenchArgs) -> Result<()> {
    if args.reps == 0 {
        bail!("--reps must be at least 1");
    }
    if args.pp == 0 && args.tg == 0 {
        bail!("nothing to measure: --pp and --tg are both 0");
    }
    if !args.parallel.is_empty() && args.chart.is_some() {
        bail!("--chart draws the single-sequence tests; leave it out with --parallel");
    }
    if let Some(&n) = args
        .parallel
        .iter()
        .find(|&&n| !(1..=rbees_model::MAX_SLOTS).contains(&n))
    {
        bail!(
            "--parallel {n}: each number of sequences must be in [1, {}]",
            rbees_model::MAX_SLOTS
        );
    }
    let config = Config::load_or_default(args.config.as_deref())?;
    let model = args
        .model
        .clone()
        .or(config.model.path.clone())
        .context("no model given: pass --model PATH or set [model] path in the config")?;
    let threads = threads(args, &config);
    let plugins = args.plugins.paths(&config);
    if args.child {
        let spec = match args.backends.as_slice() {
            [one] => parse_backend(one, &args.device),
            _ => bail!("--child measures exactly one --backend"),
        };
        return measure::measure_and_report(&Plan {
            model: &model,
            choice: BackendChoice {
                kind: spec.name,
                options: BackendOptions {
                    device: spec.device,
                    threads: Some(threads),
                },
                plugins,
            },
            pp: args.pp,
            tg: args.tg,
            reps: args.reps,
            parallel: args.parallel.clone(),
        });
    }
    let model_bytes = std::fs::metadata(&model)
        .with_context(|| format!("cannot read model file {}", model.display()))?
        .len();
    let requested = if args.backends.is_empty() {
        default_backends(&plugins)?
    } else {
        args.backends.clone()
    };
    for spec in &requested {
        // An unknown name fails here, listing the known ones, before any run.
        plugins.select(&parse_backend(spec, &args.device).name)?;
    }
    // Quality settings that cannot work fail here, before any speed run.
    if let Some(text) = &args.quality {
        if args.quality_ctx < 2 {
            bail!(
                "--quality-ctx must be at least 2 (got {})",
                args.quality_ctx
            );
        }
        if args.quality_chunks == 0 {
            bail!("--quality-chunks must be at least 1");
        }
        super::perplexity::read_text(text).context("--quality")?;
    }

    let json_to_stdout = args.json.as_deref() == Some(std::path::Path::new("-"));
    let bar = progress_bar(args, requested.len());
    let mut results = Vec::new();
    for spec in &requested {
        bar.set_message(spec.clone());
        let row = match run_child(args, &model, threads, &plugins, spec, &bar) {
            Ok(measured) => Row::measured(spec.clone(), measured),
            Err(e) => Row::failed(spec.clone(), format!("{e:#}")),
        };
        results.push(row);
    }
    bar.finish_and_clear();
    // Quality in this process, after every speed run (it needs no
    // peak-memory isolation), on the backends that ran. A failure here is
    // reported after the speed results, which are kept.
    let ran: Vec<String> = results
        .iter()
        .filter(|r| r.error.is_none())
        .map(|r| r.requested.clone())
        .collect();
    let quality = match &args.quality {
        Some(_) if ran.is_empty() => None,
        Some(text) => Some(super::perplexity::compute(
            &super::perplexity::PerplexityArgs {
                model: Some(model.clone()),
                file: Some(text.clone()),
                config: args.config.clone(),
                backends: ran,
                device: Some(args.device.clone()),
                ctx: Some(args.quality_ctx),
                chunks: Some(args.quality_chunks),
                threads: Some(threads),
                kl_base: None,
                json: None,
                plugins: args.plugins.clone(),
            },
            json_to_stdout,
        )),
        None => None,
    };
    let (quality, quality_error) = match quality {
        Some(Ok(report)) => (Some(report), None),
        Some(Err(e)) => (None, Some(e)),
        None => (None, None),
    };

    let doc = Document {
        model: model.display().to_string(),
        model_bytes,
        weight_bytes_per_token: rbees_model::GgufFile::open(&model)
            .ok()
            .map(|gguf| gguf.decode_weight_bytes()),
        threads,
        pp: args.pp,
        tg: args.tg,
        reps: args.reps,
        parallel: args.parallel.clone(),
        cpu: cpu_name(),
        rbees_version: env!("CARGO_PKG_VERSION"),
        unix_time: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        results,
        quality,
    };
    match &args.json {
        Some(_) if json_to_stdout => println!("{}", serde_json::to_string_pretty(&doc)?),
        Some(path) => {
            std::fs::write(path, serde_json::to_string_pretty(&doc)? + "\n")
                .with_context(|| format!("cannot write {}", path.display()))?;
            print!("{}", report::markdown(&doc));
        }
        None => print!("{}", report::markdown(&doc)),
    }
    if let (Some(q), false) = (&doc.quality, json_to_stdout) {
        print!("\n{}", super::perplexity::table(q));
    }
    if let Some(path) = &args.chart {
        chart::write_chart(&doc, path)?;
    }
    if let Some(e) = quality_error {
        return Err(e.context("--quality: the speed results above stand, the quality pass failed"));
    }
    let failed: Vec<String> = doc
        .results
        .iter()
        .filter_map(|r| Some(format!("{}: {}", r.requested, r.error.as_ref()?)))
        .collect();
    if !failed.is_empty() {
        bail!(
            "{} of {} backends failed: {}",
            failed.len(),
            doc.results.len(),
            failed.join("; ")
        );
    }
    Ok(())
}

/// Every built-in backend that can run on the CPU of this machine, then
/// every plugin the paths lead to (by its own name).
fn default_backends(plugins: &PluginPaths) -> Result<Vec<String>> {
    let mut names: Vec<String> = descriptors()
        .into_iter()
        .filter(|d| d.devices.contains(&"cpu") && (d.probe)("cpu").is_ok())
        .map(|d| d.name.to_string())
        .collect();
    let found = plugins.discover()?;
    if let Some(refused) = found.refused.first() {
        bail!("{refused}");
    }
    names.extend(found.loaded.iter().map(|lib| lib.name().to_string()));
    Ok(names)
}

/// A progress bar on a terminal; none in `--json` mode (machine-read runs).
fn progress_bar(args: &BenchArgs, backends: usize) -> ProgressBar {
    let tests = if args.parallel.is_empty() {
        usize::from(args.pp > 0) + usize::from(args.tg > 0)
    } else {
        args.parallel.len()
    };
    // Per backend: load, warm-up, then each test of each repetition.
    let steps = backends * (2 + tests * args.reps);
    let bar = ProgressBar::new(steps as u64);
    if args.json.is_some() || !std::io::stderr().is_terminal() {
        bar.set_draw_target(ProgressDrawTarget::hidden());
    }
    if let Ok(style) = ProgressStyle::with_template("{bar:30} {pos}/{len} {msg}") {
        bar.set_style(style);
    }
    bar
}

/// Measures one backend in a child process.
fn run_child(
    args: &BenchArgs,
    model: &std::path::Path,
    threads: usize,
    plugins: &PluginPaths,
    spec: &str,
    bar: &ProgressBar,
) -> Result<measure::Measured> {
    let exe = std::env::current_exe().context("cannot find this executable to re-run it")?;
    let mut cmd = Command::new(exe);
    cmd.arg("bench")
        .arg("--child")
        .arg("--model")
        .arg(model)
        .args(["--backend", spec, "--device", &args.device])
        .args(["--threads", &threads.to_string()])
        .args(["--pp", &args.pp.to_string(), "--tg", &args.tg.to_string()])
        .args(["--reps", &args.reps.to_string()]);
    if !args.parallel.is_empty() {
        let list: Vec<String> = args.parallel.iter().map(|n| n.to_string()).collect();
        cmd.arg("--parallel").arg(list.join(","));
    }
    if let Some(config) = &args.config {
        cmd.arg("--config").arg(config);
    }
    if let Some(path) = &plugins.path {
        cmd.arg("--plugin").arg(path);
    }
    if let Some(dir) = &plugins.dir {
        cmd.arg("--plugins-dir").arg(dir);
    }
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot start the measuring process")?;
    let mut stderr = child.stderr.take().context("child stderr")?;
    let stderr_reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let stdout = child.stdout.take().context("child stdout")?;
    let mut result = None;
    for line in BufReader::new(stdout).lines() {
        let line = line.context("reading the measuring process")?;
        match serde_json::from_str::<ChildEvent>(&line) {
            Ok(ChildEvent::Progress { stage, rep }) => {
                bar.inc(1);
                bar.set_message(format!("{spec}: {stage} {rep}/{}", args.reps));
            }
            Ok(ChildEvent::Result(measured)) => result = Some(measured),
            Err(_) => {} // not ours (a backend printing to stdout)
        }
    }
    let status = child.wait().context("waiting for the measuring process")?;
    let stderr = stderr_reader.join().unwrap_or_default();
    match result {
        Some(measured) if status.success() => Ok(measured),
        _ => {
            let why = stderr
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("no output")
                .trim_start_matches("error: ")
                .to_string();
            bail!("{why} ({status})")
        }
    }
}

fn cpu_name() -> Option<String> {
    let info = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("model name"))?;
    Some(line.split_once(':')?.1.trim().to_string())
}
