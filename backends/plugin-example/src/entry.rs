//! The C ABI surface: the entry symbol, the table, and one `extern "C"`
//! function per table slot. Each checks its buffers (the host already has,
//! but a plugin must not trust its caller with memory) and runs inside
//! `guard`, so a panic becomes `STATUS_PANIC`, never an unwind.

use std::ffi::{c_char, CStr};

use rayon::ThreadPool;
use rbees_core::plugin_abi::{
    guard, Context, CreateOptions, ErrorBuf, PluginFailure, PluginTable, RopeParams, Status,
    TensorMut, TensorRef, ABI_VERSION, DTYPE_NONE, OP_MATMUL, OP_RMS_NORM, OP_ROPE, OP_SILU,
    OP_SOFTMAX, ROPE_HALF_SPLIT, ROPE_INTERLEAVED, STATUS_UNAVAILABLE, SUPPORT_CONVERT_TO_F32,
    SUPPORT_NATIVE, SUPPORT_NO, TABLE_SIZE,
};
use rbees_core::{plugin_cstr, WeightDType};

use crate::kernels;

/// What the entry symbol hands out: lives as long as the library.
pub static PLUGIN_TABLE: PluginTable = PluginTable {
    abi_version: ABI_VERSION,
    table_size: TABLE_SIZE,
    name: plugin_cstr!("example"),
    description: plugin_cstr!(
        "example plugin: multi-threaded (rayon) f32 CPU kernels; other weight types converted to F32 by the host at load"
    ),
    probe: Some(probe),
    supports: Some(supports),
    create: Some(create),
    destroy: Some(destroy),
    rms_norm: Some(rms_norm),
    rope: Some(rope),
    softmax: Some(softmax),
    silu: Some(silu),
    matmul: Some(matmul),
};

/// The entry symbol the host looks up (`rbees_core::plugin_abi::ENTRY_SYMBOL`).
#[no_mangle]
pub extern "C" fn rbees_plugin_entry() -> *const PluginTable {
    &PLUGIN_TABLE
}

/// One instance: its own thread pool, so `threads` bounds its CPU use and
/// two instances do not share a queue.
struct Instance {
    pool: ThreadPool,
}

unsafe extern "C" fn probe(device: *const c_char, score: *mut i32, err: *mut ErrorBuf) -> Status {
    unsafe {
        guard(err, || {
            let device = match device.as_ref() {
                Some(_) => CStr::from_ptr(device).to_str().unwrap_or("?"),
                None => "",
            };
            if device != "cpu" {
                return Err(PluginFailure {
                    status: STATUS_UNAVAILABLE,
                    message: format!("runs only on 'cpu', not '{device}'"),
                });
            }
            if let Some(score) = score.as_mut() {
                *score = 10;
            }
            Ok(())
        })
    }
}

unsafe extern "C" fn supports(op: u32, dtype: u32) -> u32 {
    let f32_id = WeightDType::F32.ggml_id();
    match (op, dtype) {
        (OP_ROPE | OP_SOFTMAX | OP_SILU, DTYPE_NONE) => SUPPORT_NATIVE,
        (OP_RMS_NORM | OP_MATMUL, d) if d == f32_id => SUPPORT_NATIVE,
        // Every other GGUF weight type: multiplied as F32 after the host's
        // one-time conversion at load.
        (OP_MATMUL, d) if WeightDType::from_ggml_id(d).is_some() => SUPPORT_CONVERT_TO_F32,
        _ => SUPPORT_NO,
    }
}

unsafe extern "C" fn create(
    options: *const CreateOptions,
    out: *mut Context,
    err: *mut ErrorBuf,
) -> Status {
    unsafe {
        guard(err, || {
            let options = options
                .as_ref()
                .ok_or_else(|| PluginFailure::invalid("null options"))?;
            let out = out
                .as_mut()
                .ok_or_else(|| PluginFailure::invalid("null output pointer"))?;
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(options.threads) // 0: one per core
                .thread_name(|i| format!("rbees-example-{i}"))
                .build()
                .map_err(|e| PluginFailure::internal(format!("cannot start thread pool: {e}")))?;
            *out = Box::into_raw(Box::new(Instance { pool })).cast();
            Ok(())
        })
    }
}

unsafe extern "C" fn destroy(ctx: Context) {
    if !ctx.is_null() {
        // SAFETY: `ctx` came from `create` and the host frees it once.
        drop(unsafe { Box::from_raw(ctx.cast::<Instance>()) });
    }
}

/// The instance behind `ctx`.
unsafe fn instance<'a>(ctx: Context) -> Result<&'a Instance, PluginFailure> {
    unsafe { ctx.cast::<Instance>().as_ref() }.ok_or_else(|| PluginFailure::invalid("null context"))
}

unsafe fn input<'a>(t: *const TensorRef) -> Result<(&'a [f32], usize, usize), PluginFailure> {
    let t = unsafe { t.as_ref() }.ok_or_else(|| PluginFailure::invalid("null input"))?;
    Ok((unsafe { t.as_f32()? }, t.rows, t.cols))
}

unsafe fn output<'a>(t: *const TensorMut) -> Result<(&'a mut [f32], usize, usize), PluginFailure> {
    let t = unsafe { t.as_ref() }.ok_or_else(|| PluginFailure::invalid("null output"))?;
    Ok((unsafe { t.as_f32_mut()? }, t.rows, t.cols))
}

fn expect(ok: bool, what: impl FnOnce() -> String) -> Result<(), PluginFailure> {
    if ok {
        Ok(())
    } else {
        Err(PluginFailure::invalid(what()))
    }
}

unsafe extern "C" fn rms_norm(
    ctx: Context,
    x: *const TensorRef,
    weight: *const TensorRef,
    eps: f32,
    out: *const TensorMut,
    err: *mut ErrorBuf,
) -> Status {
    unsafe {
        guard(err, || {
            let inst = instance(ctx)?;
            let (x, rows, cols) = input(x)?;
            let (w, _, _) = input(weight)?;
            let (o, o_rows, o_cols) = output(out)?;
            expect(w.len() == cols && (o_rows, o_cols) == (rows, cols), || {
                format!("rms_norm: weight of {} for rows of {cols}", w.len())
            })?;
            if !x.is_empty() {
                kernels::rms_norm(&inst.pool, x, cols, w, eps, o);
            }
            Ok(())
        })
    }
}

unsafe extern "C" fn rope(
    ctx: Context,
    x: *const TensorRef,
    cos: *const TensorRef,
    sin: *const TensorRef,
    params: *const RopeParams,
    out: *const TensorMut,
    err: *mut ErrorBuf,
) -> Status {
    unsafe {
        guard(err, || {
            let inst = instance(ctx)?;
            let p = params
                .as_ref()
                .ok_or_else(|| PluginFailure::invalid("null rope parameters"))?;
            let (x, rows, cols) = input(x)?;
            let (cos, positions, half_rot) = input(cos)?;
            let (sin, ..) = input(sin)?;
            let (o, o_rows, o_cols) = output(out)?;
            let interleaved = match p.variant {
                ROPE_INTERLEAVED => true,
                ROPE_HALF_SPLIT => false,
                v => return Err(PluginFailure::invalid(format!("unknown rope variant {v}"))),
            };
            expect(
                cols == p.n_heads * p.head_dim
                    && (o_rows, o_cols) == (rows, cols)
                    && sin.len() == cos.len()
                    && 2 * half_rot <= p.head_dim
                    && p.pos0 + rows <= positions,
                || {
                    format!(
                        "rope: [{rows}, {cols}] at {} with [{positions}, {half_rot}] tables",
                        p.pos0
                    )
                },
            )?;
            let shape = kernels::Rope {
                n_heads: p.n_heads,
                head_dim: p.head_dim,
                pos0: p.pos0,
                half_rot,
                interleaved,
            };
            if !x.is_empty() {
                kernels::rope(&inst.pool, x, cos, sin, shape, o);
            }
            Ok(())
        })
    }
}

/// softmax and silu share their checks.
unsafe fn unary(
    ctx: Context,
    x: *const TensorRef,
    out: *const TensorMut,
    err: *mut ErrorBuf,
    kernel: fn(&ThreadPool, &[f32], usize, &mut [f32]),
) -> Status {
    unsafe {
        guard(err, || {
            let inst = instance(ctx)?;
            let (x, rows, cols) = input(x)?;
            let (o, o_rows, o_cols) = output(out)?;
            expect((o_rows, o_cols) == (rows, cols), || {
                format!("output [{o_rows}, {o_cols}] for input [{rows}, {cols}]")
            })?;
            if !x.is_empty() {
                kernel(&inst.pool, x, cols, o);
            }
            Ok(())
        })
    }
}

unsafe extern "C" fn softmax(
    ctx: Context,
    x: *const TensorRef,
    out: *const TensorMut,
    err: *mut ErrorBuf,
) -> Status {
    unsafe { unary(ctx, x, out, err, kernels::softmax) }
}

unsafe extern "C" fn silu(
    ctx: Context,
    x: *const TensorRef,
    out: *const TensorMut,
    err: *mut ErrorBuf,
) -> Status {
    unsafe { unary(ctx, x, out, err, |pool, x, _, o| kernels::silu(pool, x, o)) }
}

unsafe extern "C" fn matmul(
    ctx: Context,
    x: *const TensorRef,
    weight: *const TensorRef,
    out: *const TensorMut,
    err: *mut ErrorBuf,
) -> Status {
    unsafe {
        guard(err, || {
            let inst = instance(ctx)?;
            let (x, m, k) = input(x)?;
            let (w, n, wk) = input(weight)?;
            let (o, o_rows, o_cols) = output(out)?;
            expect(wk == k && (o_rows, o_cols) == (m, n), || {
                format!("matmul: x [{m}, {k}], weight [{n}, {wk}], out [{o_rows}, {o_cols}]")
            })?;
            kernels::matmul(&inst.pool, x, w, k, o);
            Ok(())
        })
    }
}
