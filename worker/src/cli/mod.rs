//! The `rbees` command line.

mod backends;
mod bench;
pub mod conformance;
mod generate;
pub mod perplexity;
mod synth;
mod tokenize;

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};

use crate::config::Config;
use crate::engine::BackendChoice;
use crate::plugins::{PluginPaths, PLUGIN_KIND};

pub use generate::GenerateArgs;
pub use tokenize::TokenizeArgs;

#[derive(Debug, Parser)]
#[command(
    name = "rbees",
    version,
    about = "Llama-family GGUF inference on pluggable kernel backends"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the token ids (and pieces) of a text.
    Tokenize(TokenizeArgs),
    /// Generate text from a prompt, streaming it to stdout.
    Generate(GenerateArgs),
    /// List the backends built into this binary and the plugins loaded, and whether they can run here.
    Backends(backends::BackendsArgs),
    /// Check every op of a backend against the ndarray reference.
    Conformance(conformance::ConformanceArgs),
    /// Prompt and decode tokens/s of several backends, side by side.
    Bench(bench::BenchArgs),
    /// Write a random-weight Llama GGUF at a real model shape (for benchmarks).
    Synth(synth::SynthArgs),
    /// Perplexity of a text per backend, side by side, and KL divergence from a reference run (as llama-perplexity).
    Perplexity(perplexity::PerplexityArgs),
}

/// Model and backend selection shared by the commands that load a model.
#[derive(Debug, Args)]
pub struct ModelArgs {
    /// GGUF model file (default: `[model] path` of the config).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// TOML config file (see config/default.toml).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Backend name, overriding `[backend] kind`.
    #[arg(long)]
    pub backend: Option<String>,
    /// Device, overriding `[backend] device` (e.g. cpu, cuda:0).
    #[arg(long)]
    pub device: Option<String>,
    /// CPU threads, overriding `[backend] threads` (0: one per core).
    #[arg(long)]
    pub threads: Option<usize>,
    #[command(flatten)]
    pub plugins: PluginArgs,
    /// KV cache size in tokens, overriding `[model] context`.
    #[arg(long)]
    pub ctx_size: Option<usize>,
}

/// Where backend plugins come from (flags override the config).
#[derive(Debug, Args, Default, Clone)]
pub struct PluginArgs {
    /// Backend plugin library, overriding `[backend] path`; without
    /// `--backend`, it selects that plugin (`--backend plugin`).
    #[arg(long, value_name = "PATH")]
    pub plugin: Option<PathBuf>,
    /// Folder of backend plugins, overriding `[backend] plugins_dir`; each
    /// plugin's name is then usable as `--backend`.
    #[arg(long, value_name = "DIR")]
    pub plugins_dir: Option<PathBuf>,
}

impl PluginArgs {
    /// These flags over the config's `[backend] path` / `plugins_dir`.
    pub fn paths(&self, config: &Config) -> PluginPaths {
        PluginPaths {
            path: self.plugin.clone().or(config.backend.path.clone()),
            dir: self
                .plugins_dir
                .clone()
                .or(config.backend.plugins_dir.clone()),
        }
    }

    /// The backend kind: `--backend`, else `plugin` when `--plugin` is
    /// given, else the config's.
    pub fn kind(&self, backend: Option<&String>, config: &Config) -> String {
        match (backend, &self.plugin) {
            (Some(kind), _) => kind.clone(),
            (None, Some(_)) => PLUGIN_KIND.to_string(),
            (None, None) => config.backend.kind.clone(),
        }
    }
}

/// A `--backend` spec of `bench` and `perplexity`, `NAME[:DEVICE]`: the
/// name is everything before the first ':', the device (if any) the rest.
pub fn split_backend_spec(spec: &str) -> (&str, Option<&str>) {
    match spec.split_once(':') {
        Some((name, device)) => (name, Some(device)),
        None => (spec, None),
    }
}

/// Most CPU threads a backend may be asked for.
pub const MAX_THREADS: usize = 1024;

/// Config file plus command-line overrides, resolved.
pub struct Resolved {
    pub model: PathBuf,
    pub choice: BackendChoice,
    pub context: Option<usize>,
}

impl ModelArgs {
    pub fn resolve(&self) -> Result<Resolved> {
        let config = Config::load_or_default(self.config.as_deref())?;
        self.resolve_with(config)
    }

    /// [`resolve`](Self::resolve) with the config already read.
    pub fn resolve_with(&self, config: Config) -> Result<Resolved> {
        let kind = self.plugins.kind(self.backend.as_ref(), &config);
        let plugins = self.plugins.paths(&config);
        let model = self
            .model
            .clone()
            .or(config.model.path)
            .context("no model given: pass --model PATH or set [model] path in the config")?;
        let threads = self.threads.unwrap_or(config.backend.threads);
        // A thread pool is built with exactly this many threads: an absurd
        // count would exhaust the machine before any error could surface.
        if threads > MAX_THREADS {
            bail!("threads must be at most {MAX_THREADS} (0: one per core), got {threads}");
        }
        Ok(Resolved {
            model,
            choice: BackendChoice {
                kind,
                plugins,
                options: rbees_core::BackendOptions {
                    device: self.device.clone().unwrap_or(config.backend.device),
                    threads: (threads > 0).then_some(threads),
                },
            },
            context: self.ctx_size.or(config.model.context),
        })
    }
}

/// Runs one command; errors go to the caller (the binary prints them and exits non-zero).
pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Tokenize(args) => tokenize::run(&args),
        Command::Generate(args) => generate::run(&args),
        Command::Backends(args) => backends::run(&args),
        Command::Conformance(args) => conformance::run(&args),
        Command::Synth(args) => synth::run(&args),
        Command::Bench(args) => bench::run(&args),
        Command::Perplexity(args) => perplexity::run(&args),
    }
}
