use std::path::PathBuf;

/// Why a plugin library was refused. Every message names the file.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error("cannot load plugin {}: {reason}", .path.display())]
    Open { path: PathBuf, reason: String },
    #[error("{} is not an rbees backend plugin: it has no `{symbol}` symbol ({reason})", .path.display())]
    MissingSymbol {
        path: PathBuf,
        symbol: &'static str,
        reason: String,
    },
    #[error(
        "plugin {} speaks plugin ABI version {found}, but this rbees speaks version {expected}; rebuild the plugin against this rbees-core",
        .path.display()
    )]
    Version {
        path: PathBuf,
        found: u32,
        expected: u32,
    },
    #[error("plugin {} has a malformed table: {detail}", .path.display())]
    Malformed { path: PathBuf, detail: String },
    #[error("plugin {} has an invalid name {name:?}: {detail}", .path.display())]
    Name {
        path: PathBuf,
        name: String,
        detail: String,
    },
    #[error("plugins {} and {} are both named '{name}'", .first.display(), .second.display())]
    Duplicate {
        name: String,
        first: PathBuf,
        second: PathBuf,
    },
    #[error("cannot read the plugins directory {}: {reason}", .dir.display())]
    Dir { dir: PathBuf, reason: String },
}
