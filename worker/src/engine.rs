//! Backend selection: the one place that knows every linked backend.
//!
//! The model is generic (`Llama<B>`); [`AnyModel`] is an `enum_dispatch`
//! enum over the concrete model types, so the backend is chosen once per
//! call into the engine and never per op.

use std::ops::ControlFlow;
use std::path::Path;

use anyhow::{bail, Context, Result};
use enum_dispatch::enum_dispatch;
use rbees_backend_candle::CandleBackend;
use rbees_backend_ndarray::NdarrayBackend;
use rbees_core::{find_descriptor, BackendOptions};
use rbees_model::{
    generate, CapabilityReport, GenerateParams, Generated, GgufFile, Llama, LlamaConfig,
    LoadOptions, TokenEvent, Tokenizer,
};

/// What the command line and the daemon need from a loaded model, whatever its backend.
#[enum_dispatch]
pub trait Engine {
    fn backend_name(&self) -> &'static str;
    fn device_name(&self) -> String;
    fn model_config(&self) -> &LlamaConfig;
    fn context_size(&self) -> usize;
    fn capability_report(&self) -> &CapabilityReport;
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

/// A model on whichever backend the configuration picked.
#[enum_dispatch(Engine)]
pub enum AnyModel {
    Ndarray(Llama<NdarrayBackend>),
    Candle(Llama<CandleBackend>),
}

/// Which backend, where, and with how many threads.
#[derive(Debug, Clone)]
pub struct BackendChoice {
    pub kind: String,
    pub options: BackendOptions,
}

/// A loaded model with its tokenizer.
pub struct LoadedModel {
    pub model: AnyModel,
    pub tokenizer: Tokenizer,
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
    let descriptor = find_descriptor(&choice.kind).map_err(anyhow::Error::msg)?;
    if let Err(why) = (descriptor.probe)(&choice.options.device) {
        bail!(
            "backend '{}' cannot use device '{}': {why}",
            choice.kind,
            choice.options.device
        );
    }
    let gguf = GgufFile::open(path)?;
    let tokenizer = Tokenizer::from_gguf_metadata(gguf.metadata())
        .with_context(|| format!("cannot build the tokenizer of {}", path.display()))?;
    let (_, embd_shape) = gguf.tensor_meta("token_embd.weight")?;
    if embd_shape.first() != Some(&tokenizer.vocab_size()) {
        bail!(
            "{}: the tokenizer has {} tokens but token_embd.weight has shape {embd_shape:?}; the file is inconsistent",
            path.display(),
            tokenizer.vocab_size()
        );
    }
    let loading = || {
        format!(
            "cannot load {} on the {} backend",
            path.display(),
            choice.kind
        )
    };
    let model = match descriptor.name {
        "ndarray" => {
            let backend = NdarrayBackend::new(&choice.options)?;
            AnyModel::from(
                Llama::load(backend, &gguf, load_options, progress).with_context(loading)?,
            )
        }
        "candle" => {
            let backend = CandleBackend::new(&choice.options)?;
            AnyModel::from(
                Llama::load(backend, &gguf, load_options, progress).with_context(loading)?,
            )
        }
        other => bail!("backend '{other}' is registered but this binary cannot construct it"),
    };
    Ok(LoadedModel { model, tokenizer })
}
