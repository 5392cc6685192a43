//! What llama-orch's worker spawners pass that rbees names differently:
//! its backend words, a model id from its hive's model catalog instead of
//! a file, and its environment variables. See docs/worker.md, "llama-orch
//! compatibility", for the table and the upstream files it follows.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::config::LogFormat;
use super::Args;

/// Bearer token llama-orch's hive requires on the ready callback and the
/// heartbeat (inherited from the hive's environment). It is sent, never
/// required: llama-orch's queens call workers without a token.
pub const ORCH_TOKEN_ENV: &str = "LLORCH_API_TOKEN";

/// `json` selects JSON log lines, as for llama-orch's own worker.
pub const ORCH_LOG_FORMAT_ENV: &str = "LLORCH_LOG_FORMAT";

/// `--build-info`: the build profile, the one word llama-orch's hive
/// accepts from a worker binary (`release` or `debug`).
pub fn build_info() -> &'static str {
    if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    }
}

/// The log format from `LLORCH_LOG_FORMAT` (`json`; anything else is text),
/// if set.
pub fn log_format_from_env() -> Option<LogFormat> {
    let v = std::env::var(ORCH_LOG_FORMAT_ENV).ok()?;
    Some(if v.eq_ignore_ascii_case("json") {
        LogFormat::Json
    } else {
        LogFormat::Text
    })
}

/// The bearer token for outgoing calls to the pool manager, if set and not blank.
pub fn outgoing_token() -> Option<String> {
    std::env::var(ORCH_TOKEN_ENV)
        .ok()
        .filter(|t| !t.trim().is_empty())
}

/// What the spawner passed, kept for answering it in its own terms.
#[derive(Debug, Clone, Default)]
pub struct Given {
    /// `--model` as written (a file, or a catalog id).
    pub model: Option<String>,
    /// `--device N` when it was a bare ordinal (the ready callback echoes
    /// it as a number, as llama-orch's hive reads it).
    pub device_ordinal: Option<u32>,
}

/// Rewrites llama-orch's words into rbees' in place:
/// - `--backend cuda` means the best GPU backend (`auto` on `cuda:N`,
///   N from `--device`, default 0); `--backend metal` is refused (no Metal backend);
/// - `--model ID` that is not a file is looked up in the hive's model catalog.
pub fn apply(args: &mut Args) -> Result<()> {
    args.given = Given {
        model: args.model.model.as_ref().map(|m| m.display().to_string()),
        device_ordinal: args.model.device.as_deref().and_then(|d| d.parse().ok()),
    };
    let m = &mut args.model;
    match m.backend.as_deref() {
        Some("cuda") => {
            let n = m.device.as_deref().unwrap_or("0");
            if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
                bail!("--backend cuda takes a GPU ordinal as --device (e.g. 0), got '{n}'");
            }
            m.device = Some(format!("cuda:{n}"));
            m.backend = Some(crate::plugins::AUTO_KIND.to_string());
        }
        Some("metal") => bail!(
            "--backend metal: rbees has no Metal backend; use cpu, or a CUDA device (`rbees backends` lists them)"
        ),
        _ => {}
    }
    if let Some(model) = &m.model {
        if !model.exists() {
            if let Some(found) = catalog_model(model)? {
                tracing::info!(
                    model = %model.display(),
                    file = %found.display(),
                    "model id found in the rbee hive's model catalog"
                );
                m.model = Some(found);
            }
        }
    }
    if args.local_mode && !args.host.is_loopback() {
        bail!(
            "--local-mode serves on a loopback address only, but --host is {}",
            args.host
        );
    }
    Ok(())
}

/// Where llama-orch's hive keeps its model catalog:
/// `$XDG_CACHE_HOME/rbee/models`, else `~/.cache/rbee/models`.
fn catalog_dir() -> Option<PathBuf> {
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(cache.join("rbee").join("models"))
}

/// The GGUF file of catalog entry `id` (`<catalog>/<id>/metadata.json`,
/// whose `artifact.path` is a file or a folder holding one `.gguf`), or
/// `None` when the catalog has no such entry.
fn catalog_model(id: &Path) -> Result<Option<PathBuf>> {
    let Some(dir) = catalog_dir() else {
        return Ok(None);
    };
    catalog_model_in(&dir, id)
}

fn catalog_model_in(dir: &Path, id: &Path) -> Result<Option<PathBuf>> {
    // An id is a relative name (`org/model`); anything else is a path that
    // does not exist, for the loader to report.
    if id.is_absolute()
        || id
            .components()
            .any(|c| !matches!(c, std::path::Component::Normal(_)))
    {
        return Ok(None);
    }
    let meta = dir.join(id).join("metadata.json");
    let Ok(text) = std::fs::read_to_string(&meta) else {
        return Ok(None);
    };
    let value: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("{}: not valid JSON", meta.display()))?;
    let Some(path) = value["artifact"]["path"].as_str() else {
        bail!("{}: no artifact.path", meta.display());
    };
    let path = PathBuf::from(path);
    if !path.is_dir() {
        return Ok(Some(path));
    }
    let mut ggufs: Vec<PathBuf> = std::fs::read_dir(&path)
        .with_context(|| format!("cannot read {}", path.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "gguf"))
        .collect();
    ggufs.sort();
    match ggufs.len() {
        1 => Ok(ggufs.pop()),
        0 => bail!(
            "model catalog entry {} points to {}, which holds no .gguf file",
            meta.display(),
            path.display()
        ),
        n => bail!(
            "model catalog entry {} points to {}, which holds {n} .gguf files; pass --model FILE",
            meta.display(),
            path.display()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_model_id_is_found_in_the_catalog() {
        let root = std::env::temp_dir().join(format!("rbees-catalog-{}", std::process::id()));
        let entry = root.join("org/tiny");
        let files = root.join("files");
        std::fs::create_dir_all(&entry).unwrap();
        std::fs::create_dir_all(&files).unwrap();
        let gguf = files.join("tiny.Q8_0.gguf");
        std::fs::write(&gguf, b"x").unwrap();
        let meta = serde_json::json!({"artifact": {"id": "org/tiny", "path": files}, "added_at": "2025-11-01T00:00:00Z"});
        std::fs::write(entry.join("metadata.json"), meta.to_string()).unwrap();
        assert_eq!(
            catalog_model_in(&root, Path::new("org/tiny")).unwrap(),
            Some(gguf.clone())
        );
        assert_eq!(
            catalog_model_in(&root, Path::new("org/other")).unwrap(),
            None
        );
        assert_eq!(
            catalog_model_in(&root, Path::new("../org/tiny")).unwrap(),
            None
        );
        std::fs::write(files.join("second.gguf"), b"y").unwrap();
        let e = catalog_model_in(&root, Path::new("org/tiny")).unwrap_err();
        assert!(format!("{e}").contains("2 .gguf files"), "{e}");
        std::fs::remove_dir_all(&root).unwrap();
    }
}
