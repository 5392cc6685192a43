//! `plugins_dir`: every shared library in a folder, loaded at start-up so
//! that a plugin's own name can be used as `[backend] kind`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::{PluginError, PluginLibrary};

/// What a scan found: the plugins that loaded and the files refused (each
/// error names its file).
#[derive(Debug, Default)]
pub struct Discovered {
    pub loaded: Vec<Arc<PluginLibrary>>,
    pub refused: Vec<PluginError>,
}

/// Loads every file of `dir` whose name ends in the platform's library
/// suffix (`.so`, `.dylib`, `.dll`), in name order. A refused file does not
/// stop the scan; it is reported in [`Discovered::refused`].
pub fn scan_dir(dir: &Path) -> Result<Discovered, PluginError> {
    let dir_err = |e: std::io::Error| PluginError::Dir {
        dir: dir.to_path_buf(),
        reason: e.to_string(),
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(dir_err)?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_file()
                && p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.ends_with(std::env::consts::DLL_SUFFIX))
        })
        .collect();
    files.sort();
    let mut found = Discovered::default();
    for file in files {
        match PluginLibrary::load(&file) {
            Ok(lib) if found.loaded.iter().any(|l| Arc::ptr_eq(l, &lib)) => {} // a symlink to one already seen
            Ok(lib) => found.loaded.push(lib),
            Err(e) => found.refused.push(e),
        }
    }
    Ok(found)
}

impl Discovered {
    /// The plugin called `name`; two files with that name are an error.
    pub fn find(&self, name: &str) -> Result<Option<Arc<PluginLibrary>>, PluginError> {
        let mut matches = self.loaded.iter().filter(|l| l.name() == name);
        let first = matches.next();
        if let (Some(first), Some(second)) = (first, matches.next()) {
            return Err(PluginError::Duplicate {
                name: name.to_string(),
                first: first.path().to_path_buf(),
                second: second.path().to_path_buf(),
            });
        }
        Ok(first.cloned())
    }

    /// Names of the plugins that loaded.
    pub fn names(&self) -> Vec<&'static str> {
        self.loaded.iter().map(|l| l.name()).collect()
    }
}
