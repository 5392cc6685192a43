use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use rbees_backend_plugin::{op_placement, Placement, PluginLibrary, WeightPlan};
use rbees_core::{by_preference, descriptors, Op, WeightDType};

use crate::cli::PluginArgs;
use crate::config::Config;
use crate::plugins::AUTO_KIND;

#[derive(Debug, Args)]
pub struct BackendsArgs {
    /// TOML config file, for its `[backend] path` / `plugins_dir` (default:
    /// config/default.toml when present).
    #[arg(long)]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub plugins: PluginArgs,
}

/// `rbees backends`: every linked backend and every plugin loaded, their
/// devices, and whether they can run here.
pub fn run(args: &BackendsArgs) -> Result<()> {
    println!(
        "{:<13} {:<14} {:<40} description",
        "name", "devices", "usable here"
    );
    for d in descriptors() {
        let usable = match d.devices.first().map(|dev| (d.probe)(dev)) {
            Some(Ok(())) => "yes".to_string(),
            Some(Err(why)) => format!("no: {why}"),
            None => "no: declares no device".to_string(),
        };
        println!(
            "{:<13} {:<14} {:<40} {}",
            d.name,
            d.devices.join(","),
            usable,
            d.description
        );
    }
    let order: Vec<&str> = by_preference().iter().map(|d| d.name).collect();
    println!(
        "\n{AUTO_KIND}: the first of {} that can use the device and runs every op and weight type of the model",
        order.join(", ")
    );
    let config = Config::load_or_default(args.config.as_deref())?;
    let paths = args.plugins.paths(&config);
    if paths.path.is_none() && paths.dir.is_none() {
        println!("\nplugins: none given (--plugin PATH, --plugins-dir DIR, or [backend] path / plugins_dir)");
        return Ok(());
    }
    let found = paths.discover()?;
    println!(
        "\nplugins (ABI version {} in this build):",
        rbees_core::plugin_abi::ABI_VERSION
    );
    for lib in &found.loaded {
        print_plugin(lib);
    }
    for refused in &found.refused {
        println!("refused: {refused}");
    }
    Ok(())
}

fn print_plugin(lib: &PluginLibrary) {
    let usable = match lib.probe("cpu") {
        Ok(score) => format!("yes on cpu (score {score})"),
        Err(why) => format!("not on cpu: {why}"),
    };
    println!(
        "{:<10} ABI v{}  {}",
        lib.name(),
        lib.abi_version(),
        lib.path().display()
    );
    println!("    {}", lib.description());
    println!("    usable here: {usable}");
    let ops = |p: Placement| -> String {
        Op::ALL
            .iter()
            .filter(|&&op| op_placement(op) == p)
            .map(|op| op.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!("    in the plugin: {}", ops(Placement::Plugin));
    println!("    in the host:   {}", ops(Placement::Host));
    println!("    composed:      {}", ops(Placement::Composed));
    let types = |plan: WeightPlan| -> String {
        WeightDType::ALL
            .iter()
            .filter(|&&d| lib.weight_plan(d) == plan)
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!("    weights as they are: {}", types(WeightPlan::Native));
    let converted = types(WeightPlan::ConvertToF32);
    if !converted.is_empty() {
        println!("    weights converted to F32 at load (declared by the plugin): {converted}");
    }
    let refused = types(WeightPlan::Unsupported);
    if !refused.is_empty() {
        println!("    weights refused: {refused}");
    }
}
