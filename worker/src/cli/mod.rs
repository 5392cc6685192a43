//! The `rbees` command line.

mod backends;
pub mod conformance;
mod generate;
mod tokenize;

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};

use crate::config::Config;
use crate::engine::BackendChoice;

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
    /// List the backends built into this binary and whether they can run here.
    Backends,
    /// Check every op of a backend against the ndarray reference.
    Conformance(conformance::ConformanceArgs),
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
    /// KV cache size in tokens, overriding `[model] context`.
    #[arg(long)]
    pub ctx_size: Option<usize>,
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
                kind: self.backend.clone().unwrap_or(config.backend.kind),
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
        Command::Backends => backends::run(),
        Command::Conformance(args) => conformance::run(&args),
    }
}
