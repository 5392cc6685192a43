//! Every kernel the backend launches, looked up once when it starts: a
//! missing one is a start-up error, never a failure in the middle of a request.

use std::collections::HashMap;
use std::sync::Arc;

use cudarc::driver::{CudaContext, CudaFunction, CudaModule};
use cudarc::nvrtc::Ptx;
use rbees_core::{BackendError, Op, WeightDType};

use crate::weight_types::{QuantType, QUANT_TYPES};
use crate::NAME;

/// Our kernels (kernels/rbees.cu), compiled to PTX by build.rs.
const RBEES_PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/rbees_kernels.ptx"));

/// Kernels for one quantised weight type.
pub struct QuantKernels {
    /// The table entry they were loaded from (names and `mul_mat` tiles).
    pub ty: &'static QuantType,
    /// `mul_mat_vec_<t>_q8_1_cuda{m}` for m = 1..=8 activation rows.
    pub mat_vec: Vec<CudaFunction>,
    /// `mul_mat_<t>`: more rows (prompt processing).
    pub mat_mat: CudaFunction,
    /// `get_rows_<t>`: embedding rows dequantised to f32.
    pub get_rows: CudaFunction,
}

/// Kernels for F16 or BF16 weights (kept in their type on the device).
pub struct Float16Kernels {
    /// `rbees_matvec_<t>`: up to 8 activation rows times the 16-bit weight.
    pub mat_vec: CudaFunction,
    /// `rbees_widen_<t>`: weight rows widened to f32 for cuBLAS (more rows).
    pub widen: CudaFunction,
    /// candle-kernels' `get_rows_<t>`: embedding rows widened to f32.
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
    pub f16: Float16Kernels,
    pub bf16: Float16Kernels,
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

impl Kernels {
    pub fn load(ctx: &Arc<CudaContext>) -> Result<Self, String> {
        let reduce = module(ctx, "candle reduce", candle_kernels::REDUCE.ptx())?;
        let unary = module(ctx, "candle unary", candle_kernels::UNARY.ptx())?;
        let binary = module(ctx, "candle binary", candle_kernels::BINARY.ptx())?;
        let quantized = module(ctx, "candle quantized", candle_kernels::QUANTIZED.ptx())?;
        let ours = module(ctx, "rbees", RBEES_PTX)?;

        let mut per_type = HashMap::new();
        for ty in &QUANT_TYPES {
            let t = ty.name;
            let mat_vec = (1..=8)
                .map(|m| function(&quantized, &format!("mul_mat_vec_{t}_q8_1_cuda{m}")))
                .collect::<Result<Vec<_>, _>>()?;
            per_type.insert(
                ty.dtype,
                QuantKernels {
                    ty,
                    mat_vec,
                    mat_mat: function(&quantized, &format!("mul_mat_{t}"))?,
                    get_rows: function(&quantized, &format!("get_rows_{t}"))?,
                },
            );
        }
        let float16 = |t: &str| -> Result<Float16Kernels, String> {
            Ok(Float16Kernels {
                mat_vec: function(&ours, &format!("rbees_matvec_{t}"))?,
                widen: function(&ours, &format!("rbees_widen_{t}"))?,
                get_rows: function(&quantized, &format!("get_rows_{t}"))?,
            })
        };
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
            f16: float16("f16")?,
            bf16: float16("bf16")?,
            quantized: per_type,
        })
    }

    /// The kernels of F16 or BF16 weights, for `op`.
    pub fn float16(&self, dtype: WeightDType, op: Op) -> rbees_core::Result<&Float16Kernels> {
        match dtype {
            WeightDType::F16 => Ok(&self.f16),
            WeightDType::BF16 => Ok(&self.bf16),
            _ => Err(BackendError::Unsupported {
                backend: NAME.into(),
                op,
                dtype,
                reason: "not a 16-bit float type".into(),
            }),
        }
    }

    /// The kernels of a quantised type, for `op`.
    pub fn quant(&self, dtype: WeightDType, op: Op) -> rbees_core::Result<&QuantKernels> {
        self.quantized
            .get(&dtype)
            .ok_or_else(|| BackendError::Unsupported {
                backend: NAME.into(),
                op,
                dtype,
                reason: "no candle-kernels kernel for this type".into(),
            })
    }
}
