//! Backend selection: the one place that knows every linked backend.
//!
//! The model is generic (`Llama<B>`); [`AnyModel`] is a boxed [`Engine`]
//! over the concrete model type, so the backend is chosen once per call
//! into the engine and never per op. `linked_backends!` is the list of
//! built-in backend types; the registry's descriptors name them.

use std::ops::ControlFlow;
use std::path::Path;

use anyhow::{bail, Context, Result};
use rbees_backend_candle::CandleBackend;
use rbees_backend_cpu::CpuBackend;
// Linked in every build: without the `cuda` feature the crate registers
// the backend as "built without CUDA", so listing and choosing it explain.
#[cfg(not(feature = "cuda"))]
extern crate rbees_backend_cuda as _;
#[cfg(feature = "cuda")]
use rbees_backend_cuda::CudaKernelsBackend;
use rbees_backend_ndarray::NdarrayBackend;
use rbees_backend_plugin::PluginBackend;
use rbees_core::{Backend, BackendError, BackendOptions, BuiltInBackend};
use rbees_model::{
    generate, CapabilityReport, GenerateParams, Generated, GgufFile, Llama, LlamaConfig,
    LoadOptions, ModelError, SeqChunk, TokenEvent, Tokenizer,
};

use crate::plugins::{PluginPaths, Selected, AUTO_KIND};

/// What the command line and the daemon need from a loaded model, whatever its backend.
pub trait Engine {
    fn backend_name(&self) -> &'static str;
    fn device_name(&self) -> String;
    fn model_config(&self) -> &LlamaConfig;
    fn context_size(&self) -> usize;
    fn capability_report(&self) -> &CapabilityReport;
    /// One forward pass of `ids` at positions `pos0..`; the logits of the
    /// last position (benchmarks call this directly, without sampling).
    fn forward(&mut self, ids: &[u32], pos0: usize) -> rbees_model::Result<Vec<f32>>;
    /// KV cache slots (sequences a [`Engine::step`] can run together).
    fn slots(&self) -> usize;
    /// Bytes of one slot's KV cache.
    fn kv_bytes_per_slot(&self) -> usize;
    /// One batched forward pass over several sequences (see [`Llama::step`]).
    fn step(&mut self, chunks: &[SeqChunk<'_>]) -> rbees_model::Result<Vec<Option<Vec<f32>>>>;
    /// The device's copy bandwidth in bytes/s (see `rbees bench`).
    fn copy_bandwidth(&self) -> rbees_core::Result<f64>;
    /// Device memory in use on a GPU (see [`Backend::device_memory_used`]).
    fn device_memory_used(&self) -> Option<u64>;
    /// Like [`Engine::forward`], returning the logits of the last `n`
    /// positions, row after row (scoring a text).
    fn forward_last(&mut self, ids: &[u32], pos0: usize, n: usize)
        -> rbees_model::Result<Vec<f32>>;
    fn run(
        &mut self,
        tokenizer: &Tokenizer,
        prompt_ids: &[u32],
        params: &GenerateParams,
        on_token: &mut dyn FnMut(TokenEvent<'_>) -> ControlFlow<()>,
    ) -> rbees_model::Result<Generated>;
}

impl<B: rbees_core::Backend> Engine for Llama<B> {
    fn backend_name(&self) -> &'static str {
        self.backend().name()
    }

    fn device_name(&self) -> String {
        self.backend().device()
    }

    fn model_config(&self) -> &LlamaConfig {
        self.config()
    }

    fn context_size(&self) -> usize {
        self.context()
    }

    fn capability_report(&self) -> &CapabilityReport {
        self.capabilities()
    }

    fn forward(&mut self, ids: &[u32], pos0: usize) -> rbees_model::Result<Vec<f32>> {
        Llama::forward(self, ids, pos0)
    }

    fn slots(&self) -> usize {
        Llama::slots(self)
    }

    fn kv_bytes_per_slot(&self) -> usize {
        Llama::kv_bytes_per_slot(self)
    }

    fn step(&mut self, chunks: &[SeqChunk<'_>]) -> rbees_model::Result<Vec<Option<Vec<f32>>>> {
        Llama::step(self, chunks)
    }

    fn copy_bandwidth(&self) -> rbees_core::Result<f64> {
        crate::bandwidth::copy_bandwidth(self.backend())
    }

    fn device_memory_used(&self) -> Option<u64> {
        self.backend().device_memory_used()
    }

    fn forward_last(
        &mut self,
        ids: &[u32],
        pos0: usize,
        n: usize,
    ) -> rbees_model::Result<Vec<f32>> {
        Llama::forward_last(self, ids, pos0, n)
    }

    fn run(
        &mut self,
        tokenizer: &Tokenizer,
        prompt_ids: &[u32],
        params: &GenerateParams,
        on_token: &mut dyn FnMut(TokenEvent<'_>) -> ControlFlow<()>,
    ) -> rbees_model::Result<Generated> {
        generate(self, tokenizer, prompt_ids, params, on_token)
    }
}

/// A model on whichever backend the configuration picked. Dispatch is per
/// call into the engine (a forward pass), never per op: inside, the model
/// is monomorphised for its backend.
pub type AnyModel = Box<dyn Engine + Send>;

/// The backends linked into this binary, one [`BuiltInBackend`] type per
/// line. It makes the constructor that maps a descriptor's name to its
/// type, so adding a backend is its crate, its descriptor and one line here.
macro_rules! linked_backends {
    ($($(#[$cfg:meta])* $backend:ty,)*) => {
        /// Starts the built-in backend called `name` and hands it to `visitor`.
        fn start_built_in<V: BackendVisitor>(
            name: &str,
            options: &BackendOptions,
            visitor: V,
        ) -> Result<V::Output> {
            $($(#[$cfg])*
            if name == <$backend as BuiltInBackend>::NAME {
                return visitor.visit(<$backend as BuiltInBackend>::start(options)?);
            })*
            bail!("backend '{name}' is registered but this binary cannot construct it")
        }

        /// Whether this binary can construct the built-in backend `name`.
        #[cfg(test)]
        fn is_linked(name: &str) -> bool {
            [$($(#[$cfg])* <$backend as BuiltInBackend>::NAME,)*].contains(&name)
        }
    };
}

linked_backends! {
    NdarrayBackend,
    CandleBackend,
    CpuBackend,
    #[cfg(feature = "cuda")]
    CudaKernelsBackend,
}

/// Which backend, where, and with how many threads.
#[derive(Debug, Clone)]
pub struct BackendChoice {
    pub kind: String,
    pub options: BackendOptions,
    /// Where plugin libraries come from (`kind = "plugin"` or a plugin's name).
    pub plugins: PluginPaths,
}

impl BackendChoice {
    /// A built-in backend, or a plugin found through `plugins`.
    pub fn new(kind: impl Into<String>, options: BackendOptions) -> Self {
        BackendChoice {
            kind: kind.into(),
            options,
            plugins: PluginPaths::default(),
        }
    }
}

/// Work to do with a backend of whatever type the choice names.
pub trait BackendVisitor {
    type Output;
    fn visit<B: Backend>(self, backend: B) -> Result<Self::Output>;
}

/// Constructs the chosen backend and hands it to `visitor`: the one place
/// that maps backend names to types (plugins included, see
/// [`crate::plugins`]). Unknown names list the known ones; a device the
/// backend cannot use here is refused before anything loads.
pub fn with_backend<V: BackendVisitor>(choice: &BackendChoice, visitor: V) -> Result<V::Output> {
    let descriptor = match choice.plugins.select(&choice.kind)? {
        Selected::Plugin(lib) => {
            let source = format!("plugin '{}' ({})", lib.name(), lib.path().display());
            // Plugins say nothing of their devices before they start: `auto` is the CPU.
            let mut options = choice.options.clone();
            if options.device == rbees_core::AUTO_DEVICE {
                options.device = "cpu".into();
            }
            let backend = PluginBackend::new(lib, &options)
                .with_context(|| format!("cannot start {source}"))?;
            return visitor.visit(backend);
        }
        Selected::BuiltIn(descriptor) => descriptor,
        Selected::Auto => bail!(
            "backend '{AUTO_KIND}' picks a backend for a model when it loads; name a backend here (`rbees backends` lists them)"
        ),
    };
    let options = BackendOptions {
        device: descriptor
            .resolve_device(&choice.options.device)
            .map_err(anyhow::Error::msg)?,
        ..choice.options.clone()
    };
    if let Err(why) = (descriptor.probe)(&options.device) {
        bail!(
            "backend '{}' cannot use device '{}': {why}",
            choice.kind,
            options.device
        );
    }
    start_built_in(descriptor.name, &options, visitor)
}

/// Refuses, before anything loads, a device the named built-in backend
/// cannot take (a GPU ordinal on a CPU-only backend). Plugins and `auto`
/// are checked when they load.
pub fn check_device(choice: &BackendChoice) -> Result<()> {
    if let Ok(descriptor) = rbees_core::find_descriptor(&choice.kind) {
        descriptor
            .resolve_device(&choice.options.device)
            .map_err(anyhow::Error::msg)?;
    }
    Ok(())
}

/// A loaded model with its tokenizer.
pub struct LoadedModel {
    pub model: AnyModel,
    pub tokenizer: Tokenizer,
    /// The file's `tokenizer.chat_template` (Jinja), if it has one.
    pub chat_template: Option<String>,
    /// With `kind = "auto"`: which backend was picked and why, for the user.
    pub auto_pick: Option<String>,
}

struct LoadModel<'a> {
    gguf: &'a GgufFile,
    options: &'a LoadOptions,
    progress: &'a mut dyn FnMut(usize, usize),
}

impl BackendVisitor for LoadModel<'_> {
    type Output = AnyModel;

    fn visit<B: Backend>(self, backend: B) -> Result<AnyModel> {
        let name = backend.name();
        let model =
            Llama::load(backend, self.gguf, self.options, self.progress).with_context(|| {
                format!(
                    "cannot load {} on the {name} backend",
                    self.gguf.path().display()
                )
            })?;
        Ok(Box::new(model))
    }
}

/// Opens the GGUF file, builds the tokenizer and loads the weights on the
/// chosen backend. Unknown backends, unusable devices and unsupported ops or
/// weight types are errors here, before any generation.
pub fn load(
    path: &Path,
    choice: &BackendChoice,
    load_options: &LoadOptions,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<LoadedModel> {
    // Refuse an unknown backend (or a refused plugin) before reading the file.
    choice.plugins.select(&choice.kind)?;
    let gguf = GgufFile::open(path)?;
    load_gguf(&gguf, choice, load_options, progress)
}

/// [`load`] from an opened file (also what the fuzz targets and the
/// malformed-model corpus test run, on files held in memory).
pub fn load_gguf(
    gguf: &GgufFile,
    choice: &BackendChoice,
    load_options: &LoadOptions,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<LoadedModel> {
    let tokenizer = Tokenizer::from_gguf(gguf)?;
    let (model, auto_pick) = if choice.kind == AUTO_KIND {
        let (model, why) = load_auto(gguf, choice, load_options, progress)?;
        (model, Some(why))
    } else {
        let visitor = LoadModel {
            gguf,
            options: load_options,
            progress,
        };
        (with_backend(choice, visitor)?, None)
    };
    let chat_template = rbees_model::chat_template(gguf)?;
    Ok(LoadedModel {
        model,
        tokenizer,
        chat_template,
        auto_pick,
    })
}

/// `kind = "auto"`: the built-in backends for the device's kind in order of
/// preference (cuda-kernels, cpu, candle, ndarray; `rbees backends` shows
/// it), and the first that can use the device here, starts, and runs every
/// op and weight type of the model (asked before any weight is read) loads
/// it. Returns the model and a line
/// saying which backend was picked and why the ones before it were not.
fn load_auto(
    gguf: &GgufFile,
    choice: &BackendChoice,
    options: &LoadOptions,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<(AnyModel, String)> {
    let device = &choice.options.device;
    let mut passed_over = Vec::new();
    // Backends for another kind of device are not candidates at all.
    // A bare ordinal (`--device 0`) is `cuda:0` for a GPU backend and the
    // CPU for a CPU-only one.
    let candidates = rbees_core::by_preference().into_iter().filter_map(|d| {
        let here = d.resolve_device(device).ok()?;
        d.declares(&here).then_some((d, here))
    });
    for (descriptor, here) in candidates {
        if let Err(why) = (descriptor.probe)(&here) {
            passed_over.push(format!("{}: {why}", descriptor.name));
            continue;
        }
        let candidate = BackendChoice {
            kind: descriptor.name.to_string(),
            ..choice.clone()
        };
        let visitor = LoadModel {
            gguf,
            options,
            progress: &mut *progress,
        };
        match with_backend(&candidate, visitor) {
            Ok(model) => {
                let mut why = format!(
                    "backend {AUTO_KIND}: picked '{}' on {here}, the most preferred backend that runs this model here",
                    descriptor.name
                );
                if !passed_over.is_empty() {
                    why.push_str(&format!(" (passed over: {})", passed_over.join("; ")));
                }
                return Ok((model, why));
            }
            Err(e) if cannot_run_here(&e) => {
                passed_over.push(format!("{}: {:#}", descriptor.name, e));
            }
            Err(e) => return Err(e),
        }
    }
    bail!(
        "backend '{AUTO_KIND}' found no built-in backend that runs {} on device '{device}': {}",
        gguf.path().display(),
        passed_over.join("; ")
    )
}

/// Errors that make `auto` try the next backend: the backend lacks an op or
/// weight type of the model, or could not start. Anything else (a broken
/// file, a failed upload) is the model's problem and ends the load.
fn cannot_run_here(e: &anyhow::Error) -> bool {
    matches!(
        e.downcast_ref::<ModelError>(),
        Some(ModelError::Capability { .. })
    ) || e.downcast_ref::<BackendError>().is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every backend whose crate registers a descriptor can be started by
    /// this binary (cuda-kernels registers one in builds without CUDA too,
    /// to explain that it is missing).
    #[test]
    fn every_registered_backend_is_linked() {
        for d in rbees_core::descriptors() {
            let unbuilt_cuda = cfg!(not(feature = "cuda")) && d.name == rbees_backend_cuda::NAME;
            assert!(
                is_linked(d.name) || unbuilt_cuda,
                "{} is not in linked_backends!",
                d.name
            );
        }
    }
}
