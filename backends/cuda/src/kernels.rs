//! Every kernel the backend launches, looked up once when it starts: a
//! missing one is a start-up error, never a failure in the middle of a request.

use std::collections::HashMap;
use std::sync::Arc;

use cudarc::driver::{CudaContext, CudaFunction, CudaModule};
use cudarc::nvrtc::Ptx;
use rbees_core::WeightDType;

/// Our kernels (kernels/rbees.cu), compiled to PTX by build.rs.
const RBEES_PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/rbees_kernels.ptx"));

/// The quantised types with candle-kernels products and row lookups:
/// every GGUF quantised type but Q8_K (an activation type).
fn quantized_types() -> impl Iterator<Item = WeightDType> {
    WeightDType::ALL
        .into_iter()
        .filter(|d| d.is_quantized() && *d != WeightDType::Q8K)
}

/// Kernels for one quantised weight type.
pub struct QuantKernels {
    /// `mul_mat_vec_<t>_q8_1_cuda{m}` for m = 1..=8 activation rows.
    pub mat_vec: Vec<CudaFunction>,
    /// `mul_mat_<t>`: more rows (prompt processing).
    pub mat_mat: CudaFunction,
    /// Output-row tile of `mul_mat_<t>` (`mmq_y` in candle).
    pub mat_mat_rows: u32,
    /// Activation-row tile of `mul_mat_<t>` (`mmq_x` in candle).
    pub mat_mat_cols: u32,
    /// `get_rows_<t>`: embedding rows dequantised to f32.
    pub get_rows: CudaFunction,
}

pub struct Kernels {
    pub rms_norm: CudaFunction,
    pub softmax: CudaFunction,
    pub silu: CudaFunction,
    pub add: CudaFunction,
    pub mul: CudaFunction,
    pub quantize_q8_1: CudaFunction,
    pub get_rows_f32: CudaFunction,
    pub rope: CudaFunction,
    pub attention_scores: CudaFunction,
    pub attention_weighted_sum: CudaFunction,
    pub attention: CudaFunction,
    pub swiglu: CudaFunction,
    pub quantized: HashMap<WeightDType, QuantKernels>,
}

fn module(ctx: &Arc<CudaContext>, what: &str, ptx: &str) -> Result<Arc<CudaModule>, String> {
    ctx.load_module(Ptx::from_src(ptx))
        .map_err(|e| format!("cannot load the {what} kernels: {e}"))
}

fn function(module: &Arc<CudaModule>, name: &str) -> Result<CudaFunction, String> {
    module
        .load_function(name)
        .map_err(|e| format!("kernel {name} is missing: {e}"))
}

/// candle-kernels' names and `mul_mat` tiles (`mmq_x`, `mmq_y`) per type,
/// as candle-core's quantized CUDA code launches them.
fn quant_names(dtype: WeightDType) -> (&'static str, u32, u32) {
    match dtype {
        WeightDType::Q4_0 => ("q4_0", 64, 128),
        WeightDType::Q4_1 => ("q4_1", 64, 128),
        WeightDType::Q5_0 => ("q5_0", 128, 64),
        WeightDType::Q5_1 => ("q5_1", 128, 64),
        WeightDType::Q8_0 => ("q8_0", 128, 64),
        WeightDType::Q2K => ("q2_K", 64, 128),
        WeightDType::Q3K => ("q3_K", 128, 128),
        WeightDType::Q4K => ("q4_K", 64, 128),
        WeightDType::Q5K => ("q5_K", 64, 128),
        _ => ("q6_K", 64, 64),
    }
}

impl Kernels {
    pub fn load(ctx: &Arc<CudaContext>) -> Result<Self, String> {
        let reduce = module(ctx, "candle reduce", candle_kernels::REDUCE.ptx())?;
        let unary = module(ctx, "candle unary", candle_kernels::UNARY.ptx())?;
        let binary = module(ctx, "candle binary", candle_kernels::BINARY.ptx())?;
        let quantized = module(ctx, "candle quantized", candle_kernels::QUANTIZED.ptx())?;
        let ours = module(ctx, "rbees", RBEES_PTX)?;

        let mut per_type = HashMap::new();
        for dtype in quantized_types() {
            let (t, cols, rows) = quant_names(dtype);
            let mat_vec = (1..=8)
                .map(|m| function(&quantized, &format!("mul_mat_vec_{t}_q8_1_cuda{m}")))
                .collect::<Result<Vec<_>, _>>()?;
            per_type.insert(
                dtype,
                QuantKernels {
                    mat_vec,
                    mat_mat: function(&quantized, &format!("mul_mat_{t}"))?,
                    mat_mat_rows: rows,
                    mat_mat_cols: cols,
                    get_rows: function(&quantized, &format!("get_rows_{t}"))?,
                },
            );
        }
        Ok(Kernels {
            rms_norm: function(&reduce, "rmsnorm_f32")?,
            softmax: function(&reduce, "softmax_f32")?,
            silu: function(&unary, "usilu_f32")?,
            add: function(&binary, "badd_f32")?,
            mul: function(&binary, "bmul_f32")?,
            quantize_q8_1: function(&quantized, "quantize_q8_1")?,
            get_rows_f32: function(&quantized, "get_rows_f32")?,
            rope: function(&ours, "rbees_rope_f32")?,
            attention_scores: function(&ours, "rbees_attention_scores_f32")?,
            attention_weighted_sum: function(&ours, "rbees_attention_weighted_sum_f32")?,
            attention: function(&ours, "rbees_attention_f32")?,
            swiglu: function(&ours, "rbees_swiglu_f32")?,
            quantized: per_type,
        })
    }
}
