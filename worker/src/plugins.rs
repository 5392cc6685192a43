//! Which plugin library a backend choice names, if any.
//!
//! `kind = "plugin"` loads the library at `path`; any other kind that is not
//! a built-in backend is looked up by the plugin's own name, in the library
//! at `path` and in the libraries of `plugins_dir`. Unknown names list every
//! backend that could have been meant, and the files that were refused.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use rbees_backend_plugin::{scan_dir, Discovered, PluginLibrary};
use rbees_core::{descriptors, find_descriptor, BackendDescriptor};

/// The kind that selects the library at `path`.
pub const PLUGIN_KIND: &str = "plugin";

/// The kind that picks the most preferred built-in backend that can run the
/// model on the device (see `engine::load`).
pub const AUTO_KIND: &str = "auto";

/// Where plugins come from: `[backend] path` / `--plugin` and
/// `[backend] plugins_dir` / `--plugins-dir`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PluginPaths {
    pub path: Option<PathBuf>,
    pub dir: Option<PathBuf>,
}

/// What a backend kind resolves to.
pub enum Selected {
    BuiltIn(&'static BackendDescriptor),
    Plugin(Arc<PluginLibrary>),
    /// `kind = "auto"`: decided per model, at load.
    Auto,
}

impl PluginPaths {
    /// Every plugin these paths lead to, and the files refused on the way.
    pub fn discover(&self) -> Result<Discovered> {
        let mut found = match &self.dir {
            Some(dir) => scan_dir(dir)?,
            None => Discovered::default(),
        };
        if let Some(path) = &self.path {
            match PluginLibrary::load(path) {
                Ok(lib) if !found.loaded.iter().any(|l| Arc::ptr_eq(l, &lib)) => {
                    found.loaded.insert(0, lib)
                }
                Ok(_) => {}
                Err(e) => found.refused.insert(0, e),
            }
        }
        Ok(found)
    }

    /// Resolves `kind` (see the module docs).
    pub fn select(&self, kind: &str) -> Result<Selected> {
        if kind == AUTO_KIND {
            return Ok(Selected::Auto);
        }
        if kind == PLUGIN_KIND {
            let path = self.path.as_ref().with_context(|| {
                "backend 'plugin' needs a library: set [backend] path in the config or pass --plugin PATH"
            })?;
            return Ok(Selected::Plugin(PluginLibrary::load(path)?));
        }
        if let Ok(descriptor) = find_descriptor(kind) {
            return Ok(Selected::BuiltIn(descriptor));
        }
        let found = self.discover()?;
        if let Some(lib) = found.find(kind)? {
            return Ok(Selected::Plugin(lib));
        }
        let mut known: Vec<String> = descriptors().iter().map(|d| d.name.to_string()).collect();
        known.push(format!("{AUTO_KIND} (the fastest that runs the model)"));
        known.push(format!("{PLUGIN_KIND} (with a path)"));
        known.extend(
            found
                .loaded
                .iter()
                .map(|l| format!("{} (plugin {})", l.name(), l.path().display())),
        );
        let mut msg = format!(
            "unknown backend '{kind}'; known backends: {}",
            known.join(", ")
        );
        if self.dir.is_none() && self.path.is_none() {
            msg.push_str("; no plugins were looked for ([backend] plugins_dir or --plugins-dir)");
        }
        for refused in &found.refused {
            msg.push_str(&format!("; refused: {refused}"));
        }
        bail!(msg)
    }
}
