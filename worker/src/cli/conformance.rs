use anyhow::{bail, Result};
use clap::Args;
use rbees_conformance::{Options, Report};
use rbees_core::{descriptors, Backend, BackendOptions};

use crate::cli::PluginArgs;
use crate::config::Config;
use crate::engine::{with_backend, BackendChoice, BackendVisitor};
use crate::plugins::{PluginPaths, PLUGIN_KIND};

#[derive(Debug, Args)]
pub struct ConformanceArgs {
    /// Backend to check (default: every backend built in that can run on the
    /// device, and every plugin given with --plugin / --plugins-dir).
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
    /// TOML config file, for its `[backend] path` / `plugins_dir`.
    #[arg(long)]
    pub config: Option<std::path::PathBuf>,
    #[command(flatten)]
    pub plugins: PluginArgs,
}

struct RunSuite<'a>(&'a Options);

impl BackendVisitor for RunSuite<'_> {
    type Output = Report;

    fn visit<B: Backend>(self, backend: B) -> Result<Report> {
        Ok(rbees_conformance::run(&backend, self.0))
    }
}

/// Runs the suite on one built-in backend.
pub fn check(kind: &str, device: &str, threads: usize, options: &Options) -> Result<Report> {
    check_choice(
        &choice(kind, device, threads, PluginPaths::default()),
        options,
    )
}

/// Runs the suite on whatever `choice` selects (a plugin included).
pub fn check_choice(choice: &BackendChoice, options: &Options) -> Result<Report> {
    with_backend(choice, RunSuite(options))
}

fn choice(kind: &str, device: &str, threads: usize, plugins: PluginPaths) -> BackendChoice {
    BackendChoice {
        kind: kind.to_string(),
        options: BackendOptions {
            device: device.to_string(),
            threads: (threads > 0).then_some(threads),
        },
        plugins,
    }
}

/// `rbees conformance`: every op on the backend(s) against the ndarray reference.
pub fn run(args: &ConformanceArgs) -> Result<()> {
    let config = match &args.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    let plugins = args.plugins.paths(&config);
    let kinds: Vec<String> = match (&args.backend, &args.plugins.plugin) {
        (Some(kind), _) => vec![kind.clone()],
        (None, Some(_)) => vec![PLUGIN_KIND.to_string()],
        (None, None) => {
            let mut kinds: Vec<String> = descriptors()
                .iter()
                .filter(|d| (d.probe)(&args.device).is_ok())
                .map(|d| d.name.to_string())
                .collect();
            let found = plugins.discover()?;
            for refused in &found.refused {
                eprintln!("skipping a refused plugin: {refused}");
            }
            kinds.extend(found.names().iter().map(|n| n.to_string()));
            kinds
        }
    };
    let options = Options { quick: args.quick };
    let mut failed = Vec::new();
    for kind in &kinds {
        let choice = choice(kind, &args.device, args.threads, plugins.clone());
        let report = check_choice(&choice, &options)?;
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
