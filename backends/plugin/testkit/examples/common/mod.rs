//! A valid table whose kernels behave as the including example's `MODE`
//! says; each fixture changes one thing.
#![allow(dead_code)]

use std::ffi::c_char;

use rbees_core::plugin_abi::{
    guard, Context, CreateOptions, ErrorBuf, PluginFailure, PluginTable, RopeParams, Status,
    TensorMut, TensorRef, ABI_VERSION, STATUS_OK, SUPPORT_NATIVE, TABLE_SIZE,
};
use rbees_core::plugin_cstr;

/// What every kernel does.
pub enum Mode {
    /// Returns `STATUS_INTERNAL` with a message.
    Fail,
    /// Panics (caught by `guard`, as the ABI requires).
    Panic,
}

pub const fn table(name: *const c_char) -> PluginTable {
    PluginTable {
        abi_version: ABI_VERSION,
        table_size: TABLE_SIZE,
        name,
        description: plugin_cstr!("test fixture"),
        probe: Some(probe),
        supports: Some(supports),
        create: Some(create),
        destroy: Some(destroy),
        rms_norm: Some(rms_norm),
        rope: Some(rope),
        softmax: Some(unary),
        silu: Some(unary),
        matmul: Some(matmul),
    }
}

unsafe extern "C" fn probe(_: *const c_char, _: *mut i32, _: *mut ErrorBuf) -> Status {
    STATUS_OK
}

/// Everything on F32 (and weightless kernels).
unsafe extern "C" fn supports(_: u32, dtype: u32) -> u32 {
    if dtype == 0 || dtype == u32::MAX {
        SUPPORT_NATIVE
    } else {
        0
    }
}

unsafe extern "C" fn create(
    _: *const CreateOptions,
    out: *mut Context,
    _: *mut ErrorBuf,
) -> Status {
    // Any non-null pointer: the fixtures keep no state.
    unsafe { *out = std::ptr::NonNull::<u8>::dangling().as_ptr().cast() };
    STATUS_OK
}

unsafe extern "C" fn destroy(_: Context) {}

fn kernel(err: *mut ErrorBuf) -> Status {
    unsafe {
        guard(err, || match super::MODE {
            Mode::Fail => Err(PluginFailure::internal("simulated device failure")),
            Mode::Panic => panic!("simulated kernel bug"),
        })
    }
}

unsafe extern "C" fn rms_norm(
    _: Context,
    _: *const TensorRef,
    _: *const TensorRef,
    _: f32,
    _: *const TensorMut,
    err: *mut ErrorBuf,
) -> Status {
    kernel(err)
}

unsafe extern "C" fn rope(
    _: Context,
    _: *const TensorRef,
    _: *const TensorRef,
    _: *const TensorRef,
    _: *const RopeParams,
    _: *const TensorMut,
    err: *mut ErrorBuf,
) -> Status {
    kernel(err)
}

unsafe extern "C" fn unary(
    _: Context,
    _: *const TensorRef,
    _: *const TensorMut,
    err: *mut ErrorBuf,
) -> Status {
    kernel(err)
}

unsafe extern "C" fn matmul(
    _: Context,
    _: *const TensorRef,
    _: *const TensorRef,
    _: *const TensorMut,
    err: *mut ErrorBuf,
) -> Status {
    kernel(err)
}
