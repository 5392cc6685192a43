//! The TOML configuration (`config/default.toml`); command-line flags override it.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Deserialize;

/// Read when no `--config` is given and it exists in the working directory.
pub const DEFAULT_CONFIG: &str = "config/default.toml";

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub backend: BackendSection,
    #[serde(default)]
    pub model: ModelSection,
    /// Daemon settings (`rbees-workerd` only).
    #[serde(default)]
    pub worker: crate::daemon::config::WorkerSection,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BackendSection {
    /// Registry name of the backend (`rbees backends` lists them).
    #[serde(default = "default_kind")]
    pub kind: String,
    #[serde(default = "default_device")]
    pub device: String,
    /// CPU threads; 0 means one per core.
    #[serde(default)]
    pub threads: usize,
    /// Plugin library for `kind = "plugin"` (e.g. `plugins/librbees_backend_example.so`).
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// Folder of plugin libraries loaded at start-up; each plugin's own name
    /// is then usable as `kind`.
    #[serde(default)]
    pub plugins_dir: Option<PathBuf>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ModelSection {
    /// GGUF file; relative paths are relative to the working directory.
    pub path: Option<PathBuf>,
    /// KV cache size in tokens; unset: the model's trained context, at most 4096.
    pub context: Option<usize>,
}

fn default_kind() -> String {
    crate::plugins::AUTO_KIND.into()
}

fn default_device() -> String {
    rbees_core::AUTO_DEVICE.into()
}

impl Default for BackendSection {
    fn default() -> Self {
        BackendSection {
            kind: default_kind(),
            device: default_device(),
            threads: 0,
            path: None,
            plugins_dir: None,
        }
    }
}

impl Config {
    /// Reads a config file; errors name the file and, for syntax or unknown
    /// keys, the line and column.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("invalid config file {}", path.display()))
    }

    pub fn parse(text: &str) -> Result<Self> {
        let config: Config = toml::from_str(text).map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(config)
    }

    /// The config file if given; else `config/default.toml` when run from a
    /// checkout that has it; else built-in defaults.
    pub fn load_or_default(path: Option<&Path>) -> Result<Self> {
        match path {
            Some(path) => Config::load(path),
            None if Path::new(DEFAULT_CONFIG).is_file() => Config::load(Path::new(DEFAULT_CONFIG)),
            None => Ok(Config::default()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_default_config_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/default.toml");
        let c = Config::load(&path).unwrap();
        assert_eq!(c.backend.kind, "auto");
        assert_eq!(c.backend.device, "auto");
        assert!(c.model.path.is_some());
    }

    #[test]
    fn unknown_key_names_the_key_and_line() {
        let e = Config::parse("[backend]\nkind = \"ndarray\"\nthreds = 2\n").unwrap_err();
        let msg = format!("{e:#}");
        assert!(msg.contains("threds"), "{msg}");
        assert!(msg.contains("line 3"), "{msg}");
    }

    #[test]
    fn bad_type_names_the_line() {
        let e = Config::parse("[backend]\nthreads = \"many\"\n").unwrap_err();
        assert!(format!("{e:#}").contains("line 2"), "{e:#}");
    }

    #[test]
    fn plugin_keys_parse() {
        let c = Config::parse(
            "[backend]\nkind = \"plugin\"\npath = \"plugins/librbees_backend_example.so\"\nplugins_dir = \"plugins\"\n",
        )
        .unwrap();
        assert_eq!(c.backend.kind, "plugin");
        assert_eq!(
            c.backend.path.as_deref(),
            Some(Path::new("plugins/librbees_backend_example.so"))
        );
        assert_eq!(c.backend.plugins_dir.as_deref(), Some(Path::new("plugins")));
    }

    #[test]
    fn missing_sections_take_defaults() {
        assert_eq!(Config::parse("").unwrap(), Config::default());
    }
}
