//! Random-weight Llama GGUF files at real model shapes (`rbees synth`), so
//! backends can be compared at real sizes without downloading weights.
//!
//! Layout follows llama.cpp's conversions: norms in F32, every matrix
//! (embedding and output included) in the requested type. The weights are
//! random, so the text is noise, but every file loads and runs like a real one.

mod shapes;
pub(crate) mod vocab;
mod weights;
mod writer;

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use rbees_core::WeightDType;

use crate::llama::{block_tensor, BlockDims, BlockRole, BLOCK_TENSORS};

pub use shapes::{find_shape, SynthShape, SHAPES};
pub use weights::SplitMix64;
pub use writer::{write_gguf, MetaValue, TensorSpec};

/// Spread of the random matrix weights, about what trained Llama weights have.
const WEIGHT_STD: f32 = 0.02;

#[derive(Debug, thiserror::Error)]
pub enum SynthError {
    #[error("unknown shape '{0}'; known shapes: {known}", known = shape_names())]
    UnknownShape(String),
    #[error("{dtype} stores {block}-value blocks along each row, but the {shape} shape has rows of {cols} values; pick a type whose block divides {cols} (F32, F16, BF16{small})",
        small = if cols % 32 == 0 { ", Q4_0, Q4_1, Q5_0, Q5_1, Q8_0" } else { "" })]
    RowNotWholeBlocks {
        dtype: WeightDType,
        block: usize,
        shape: &'static str,
        cols: usize,
    },
    #[error(
        "{0} weights cannot be written: candle-core has no quantiser for it (pick another type)"
    )]
    NoQuantizer(WeightDType),
    #[error("cannot write {path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("cannot quantise random {dtype} blocks: {error}")]
    Quantize {
        dtype: WeightDType,
        /// candle's message (no candle type in this crate's API).
        error: String,
    },
}

fn shape_names() -> String {
    SHAPES.iter().map(|s| s.name).collect::<Vec<_>>().join(", ")
}

/// What was written.
#[derive(Debug, Clone)]
pub struct SynthSummary {
    pub shape: SynthShape,
    pub dtype: WeightDType,
    pub tensors: usize,
    pub bytes: u64,
}

/// The tensors of a Llama model of `shape`, matrices in `dtype`.
pub fn tensor_specs(shape: &SynthShape, dtype: WeightDType) -> Vec<TensorSpec> {
    let d = shape.dim;
    let spec = |name: String, shape: Vec<usize>, dtype| TensorSpec { name, shape, dtype };
    let mut specs = vec![spec(
        "token_embd.weight".into(),
        vec![shape.vocab, d],
        dtype,
    )];
    let dims = BlockDims {
        model: d,
        query: shape.n_heads * shape.head_dim(),
        kv: shape.kv_dim(),
        ffn: shape.ff_dim,
    };
    for l in 0..shape.n_layers {
        specs.extend(BLOCK_TENSORS.iter().map(|t| {
            let dtype = match t.role {
                BlockRole::Norm => WeightDType::F32,
                BlockRole::Matrix { .. } => dtype,
            };
            spec(block_tensor(l, t.name), t.shape(&dims), dtype)
        }));
    }
    specs.push(spec("output_norm.weight".into(), vec![d], WeightDType::F32));
    if !shape.tied_embeddings {
        specs.push(spec("output.weight".into(), vec![shape.vocab, d], dtype));
    }
    specs
}

fn check_rows(shape: &SynthShape, dtype: WeightDType) -> Result<(), SynthError> {
    if dtype == WeightDType::Q8K {
        // Q8_K is only an activation type in ggml: no quantiser, no files.
        return Err(SynthError::NoQuantizer(dtype));
    }
    for cols in [shape.dim, shape.ff_dim] {
        if cols % dtype.block_size() != 0 {
            return Err(SynthError::RowNotWholeBlocks {
                dtype,
                block: dtype.block_size(),
                shape: shape.name,
                cols,
            });
        }
    }
    Ok(())
}

fn metadata(shape: &SynthShape, dtype: WeightDType) -> Vec<(String, MetaValue)> {
    let u = |v: usize| MetaValue::U32(v as u32);
    let mut md = vec![
        (
            "general.architecture".into(),
            MetaValue::String("llama".into()),
        ),
        (
            "general.name".into(),
            MetaValue::String(format!("synthetic {} {dtype}", shape.name)),
        ),
        ("llama.context_length".into(), u(shape.context)),
        ("llama.embedding_length".into(), u(shape.dim)),
        ("llama.block_count".into(), u(shape.n_layers)),
        ("llama.feed_forward_length".into(), u(shape.ff_dim)),
        ("llama.attention.head_count".into(), u(shape.n_heads)),
        ("llama.attention.head_count_kv".into(), u(shape.n_kv_heads)),
        ("llama.rope.dimension_count".into(), u(shape.head_dim())),
        (
            "llama.rope.freq_base".into(),
            MetaValue::F32(shape.rope_base),
        ),
        (
            "llama.attention.layer_norm_rms_epsilon".into(),
            MetaValue::F32(shape.rms_eps),
        ),
    ];
    md.extend(vocab::vocab_metadata(shape.vocab));
    md
}

/// Writes a random-weight GGUF model of `shape` with matrices in `dtype`.
/// The same seed gives the same file.
pub fn write_synthetic(
    shape: &SynthShape,
    dtype: WeightDType,
    seed: u64,
    path: &Path,
) -> Result<SynthSummary, SynthError> {
    check_rows(shape, dtype)?;
    let pool =
        weights::ChunkPool::new(dtype, WEIGHT_STD, seed).map_err(|error| SynthError::Quantize {
            dtype,
            error: error.to_string(),
        })?;
    let specs = tensor_specs(shape, dtype);
    let io_err = |error| SynthError::Io {
        path: path.to_path_buf(),
        error,
    };
    let file = File::create(path).map_err(io_err)?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    let mut rng = SplitMix64::new(seed ^ 0x5eed);
    write_gguf(&mut out, &metadata(shape, dtype), &specs, |_, spec, out| {
        let elements = spec.shape.iter().product();
        // Norm weights (the only vectors) are ones, as in a fresh model.
        if spec.shape.len() == 1 {
            weights::write_constant(spec.dtype, 1.0, elements, out)
        } else {
            pool.write_random(dtype, elements, &mut rng, out)
        }
    })
    .map_err(io_err)?;
    let file = out.into_inner().map_err(|e| io_err(e.into_error()))?;
    file.sync_all().map_err(io_err)?;
    let bytes = file.metadata().map_err(io_err)?.len();
    Ok(SynthSummary {
        shape: *shape,
        dtype,
        tensors: specs.len(),
        bytes,
    })
}

/// [`find_shape`] as a `Result` that lists the known shapes.
pub fn shape_by_name(name: &str) -> Result<SynthShape, SynthError> {
    find_shape(name).ok_or_else(|| SynthError::UnknownShape(name.to_string()))
}
