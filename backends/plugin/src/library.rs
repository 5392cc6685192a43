//! Opening and validating a plugin library.
//!
//! **Lifetime.** A library, once opened, is never unloaded: every
//! [`PluginLibrary`] is kept in a process-wide list (and each
//! [`crate::PluginBackend`] holds an `Arc` to its library as well). Unloading
//! is unsafe in general for Rust or C++ plugins: their worker threads (a
//! rayon pool, say) may still be winding down after `destroy`, and
//! thread-local destructors would then run code that is gone. Loading the
//! same file again returns the same library. Refused libraries stay mapped
//! too, for the same reason (their initialisers and entry function ran).

use std::collections::HashMap;
use std::ffi::{c_char, CStr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use libloading::Library;
use rbees_core::plugin_abi::{
    self, CreateFn, DestroyFn, EntryFn, MatMulFn, PluginTable, ProbeFn, RmsNormFn, RopeFn, UnaryFn,
    ABI_VERSION, DTYPE_NONE, ENTRY_SYMBOL, OP_MATMUL, OP_RMS_NORM, OP_ROPE, OP_SILU, OP_SOFTMAX,
    SUPPORT_CONVERT_TO_F32, SUPPORT_NATIVE, SUPPORT_NO, TABLE_SIZE,
};
use rbees_core::{Op, WeightDType};
use rbees_host_ops::dequant::undequantizable;

use crate::call::ErrorStorage;
use crate::PluginError;

/// The table's function pointers, checked non-null at load.
#[derive(Clone, Copy)]
pub(crate) struct Functions {
    pub probe: ProbeFn,
    pub create: CreateFn,
    pub destroy: DestroyFn,
    pub rms_norm: RmsNormFn,
    pub rope: RopeFn,
    pub softmax: UnaryFn,
    pub silu: UnaryFn,
    pub matmul: MatMulFn,
}

/// How the host stores weights of one GGUF type for this plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightPlan {
    /// Passed to the plugin in their own type.
    Native,
    /// Converted to F32 once at load, as the plugin declared.
    ConvertToF32,
    /// The plugin cannot take them (or asks for a conversion the host cannot do).
    Unsupported,
}

/// A loaded, validated plugin library.
pub struct PluginLibrary {
    path: PathBuf,
    name: &'static str,
    description: String,
    abi_version: u32,
    pub(crate) functions: Functions,
    /// The plugin's `supports` answers, asked once at load: kernel id and
    /// dtype id (or `DTYPE_NONE`) -> `SUPPORT_*`.
    answers: HashMap<(u32, u32), u32>,
    /// Kept so the mapping is owned somewhere; never dropped (see the module docs).
    _library: Library,
}

/// What `validate` read from a table.
struct Validated {
    name: &'static str,
    description: String,
    abi_version: u32,
    functions: Functions,
    answers: HashMap<(u32, u32), u32>,
}

/// Every library opened by this process, by canonical path.
static LOADED: Mutex<Vec<Arc<PluginLibrary>>> = Mutex::new(Vec::new());

/// Kernel ids of the ABI with the `Op` they implement.
pub(crate) const KERNELS: [(u32, Op); 5] = [
    (OP_RMS_NORM, Op::RmsNorm),
    (OP_ROPE, Op::Rope),
    (OP_SOFTMAX, Op::Softmax),
    (OP_SILU, Op::Silu),
    (OP_MATMUL, Op::MatMul),
];

impl PluginLibrary {
    /// Opens `path` (or returns the library already opened from it) and
    /// validates its table. Errors name the file.
    pub fn load(path: &Path) -> Result<Arc<PluginLibrary>, PluginError> {
        let canonical = path.canonicalize().map_err(|e| PluginError::Open {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        // A poisoned lock only means another load panicked; the list is still valid.
        let mut loaded = LOADED.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(lib) = loaded.iter().find(|l| l.path == canonical) {
            return Ok(lib.clone());
        }
        let lib = Arc::new(Self::open(canonical)?);
        loaded.push(lib.clone());
        Ok(lib)
    }

    fn open(path: PathBuf) -> Result<PluginLibrary, PluginError> {
        // SAFETY: loading a library runs its initialisers; choosing a plugin
        // file is choosing to run its code, as with any plugin system.
        let library = unsafe { Library::new(&path) }.map_err(|e| PluginError::Open {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        match Self::validate(&path, &library) {
            Ok(v) => Ok(PluginLibrary {
                path,
                name: v.name,
                description: v.description,
                abi_version: v.abi_version,
                functions: v.functions,
                answers: v.answers,
                _library: library,
            }),
            Err(e) => {
                // Never unload (module docs): the library's code has run.
                std::mem::forget(library);
                Err(e)
            }
        }
    }

    fn validate(path: &Path, library: &Library) -> Result<Validated, PluginError> {
        let malformed = |detail: String| PluginError::Malformed {
            path: path.to_path_buf(),
            detail,
        };
        // SAFETY: the symbol is declared by the ABI to have this type.
        let entry = unsafe { library.get::<EntryFn>(ENTRY_SYMBOL) }.map_err(|e| {
            PluginError::MissingSymbol {
                path: path.to_path_buf(),
                symbol: ENTRY_SYMBOL,
                reason: e.to_string(),
            }
        })?;
        // SAFETY: the ABI's entry function takes nothing and returns a table pointer.
        let table_ptr = unsafe { entry() };
        if table_ptr.is_null() {
            return Err(malformed(format!("`{ENTRY_SYMBOL}` returned a null table")));
        }
        // `abi_version` is the first field in every ABI version, so it can be
        // read before the rest of the layout is trusted.
        // SAFETY: non-null, and every version's table starts with a u32.
        let found = unsafe { std::ptr::read_unaligned(table_ptr.cast::<u32>()) };
        if found != ABI_VERSION {
            return Err(PluginError::Version {
                path: path.to_path_buf(),
                found,
                expected: ABI_VERSION,
            });
        }
        // SAFETY: same version, so the table has this layout (size checked next).
        let table: &PluginTable = unsafe { &*table_ptr };
        if table.table_size != TABLE_SIZE {
            return Err(malformed(format!(
                "table_size is {} bytes, ABI version {ABI_VERSION} has {TABLE_SIZE}",
                table.table_size
            )));
        }
        let name = read_name(path, table.name)?;
        let description = match read_str(table.description) {
            Some(Ok(s)) => s.to_string(),
            Some(Err(())) => return Err(malformed("the description is not UTF-8".into())),
            None => String::new(),
        };
        let functions = functions(table).map_err(malformed)?;
        let supports = table
            .supports
            .ok_or_else(|| malformed("the `supports` function is null".into()))?;
        let answers = ask_capabilities(supports).map_err(malformed)?;
        // Leaked once per library file, which lives as long as the process anyway.
        let name: &'static str = Box::leak(name.into_boxed_str());
        Ok(Validated {
            name,
            description,
            abi_version: found,
            functions,
            answers,
        })
    }

    /// The plugin's own name (usable as `[backend] kind` from `plugins_dir`).
    pub fn name(&self) -> &'static str {
        self.name
    }

    pub fn description(&self) -> &str {
        &self.description
    }

    /// The canonical path it was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn abi_version(&self) -> u32 {
        self.abi_version
    }

    /// The plugin's answer for a kernel on a dtype (`None`: no weight).
    pub(crate) fn answer(&self, kernel: u32, dtype: Option<WeightDType>) -> u32 {
        let d = dtype.map_or(DTYPE_NONE, WeightDType::ggml_id);
        self.answers
            .get(&(kernel, d))
            .copied()
            .unwrap_or(SUPPORT_NO)
    }

    /// Whether the plugin implements a weightless kernel.
    pub(crate) fn has_kernel(&self, kernel: u32) -> bool {
        self.answer(kernel, None) == SUPPORT_NATIVE
    }

    /// How weights of `dtype` are stored for this plugin: native if a kernel
    /// that takes weights (rms_norm, matmul) takes them as they are, else
    /// F32 if matmul asks for a conversion the host can do.
    pub fn weight_plan(&self, dtype: WeightDType) -> WeightPlan {
        let native = [OP_RMS_NORM, OP_MATMUL]
            .iter()
            .any(|&k| self.answer(k, Some(dtype)) == SUPPORT_NATIVE);
        if native {
            WeightPlan::Native
        } else if self.answer(OP_MATMUL, Some(dtype)) == SUPPORT_CONVERT_TO_F32
            && undequantizable(dtype).is_none()
            && self.answer(OP_MATMUL, Some(WeightDType::F32)) == SUPPORT_NATIVE
        {
            WeightPlan::ConvertToF32
        } else {
            WeightPlan::Unsupported
        }
    }

    /// Can the plugin run on `device` here? `Ok(score)` or why not.
    pub fn probe(&self, device: &str) -> Result<i32, String> {
        let device_c = std::ffi::CString::new(device)
            .map_err(|_| format!("device name {device:?} contains a NUL byte"))?;
        let mut score = 0i32;
        let mut err = ErrorStorage::new();
        // SAFETY: valid C string, score and error buffer for the call.
        let status = unsafe { (self.functions.probe)(device_c.as_ptr(), &mut score, err.buf()) };
        match status {
            plugin_abi::STATUS_OK => Ok(score),
            _ => Err(err.message(status)),
        }
    }
}

impl std::fmt::Debug for PluginLibrary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginLibrary")
            .field("name", &self.name)
            .field("path", &self.path)
            .field("abi_version", &self.abi_version)
            .finish()
    }
}

/// `None` for a null pointer, `Err` for non-UTF-8.
fn read_str(p: *const c_char) -> Option<Result<&'static str, ()>> {
    if p.is_null() {
        return None;
    }
    // SAFETY: the ABI says NUL-terminated static data of the library, which
    // is never unloaded.
    Some(unsafe { CStr::from_ptr(p) }.to_str().map_err(|_| ()))
}

/// The plugin's name: `[a-z0-9_-]{1,32}`, not a built-in backend's.
fn read_name(path: &Path, p: *const c_char) -> Result<String, PluginError> {
    let bad = |name: &str, detail: &str| PluginError::Name {
        path: path.to_path_buf(),
        name: name.to_string(),
        detail: detail.to_string(),
    };
    let name = match read_str(p) {
        None => return Err(bad("", "the name pointer is null")),
        Some(Err(())) => return Err(bad("?", "the name is not UTF-8")),
        Some(Ok(name)) => name,
    };
    let valid_chars = name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if name.is_empty() || name.len() > 32 || !valid_chars {
        return Err(bad(
            name,
            "a name is 1 to 32 characters of a-z, 0-9, '_' or '-'",
        ));
    }
    let builtin = rbees_core::descriptors().iter().any(|d| d.name == name);
    if builtin || crate::RESERVED_NAMES.contains(&name) {
        return Err(bad(name, "it is the name of a built-in backend"));
    }
    Ok(name.to_string())
}

fn functions(t: &PluginTable) -> Result<Functions, String> {
    fn need<T>(f: Option<T>, name: &str) -> Result<T, String> {
        f.ok_or_else(|| format!("the `{name}` function is null"))
    }
    Ok(Functions {
        probe: need(t.probe, "probe")?,
        create: need(t.create, "create")?,
        destroy: need(t.destroy, "destroy")?,
        rms_norm: need(t.rms_norm, "rms_norm")?,
        rope: need(t.rope, "rope")?,
        softmax: need(t.softmax, "softmax")?,
        silu: need(t.silu, "silu")?,
        matmul: need(t.matmul, "matmul")?,
    })
}

/// Asks `supports` for every kernel with every dtype (and none) once; an
/// answer outside the ABI's makes the table malformed.
fn ask_capabilities(supports: plugin_abi::SupportsFn) -> Result<HashMap<(u32, u32), u32>, String> {
    let dtypes = WeightDType::ALL
        .iter()
        .map(|d| d.ggml_id())
        .chain([DTYPE_NONE]);
    let mut answers = HashMap::new();
    for (kernel, op) in KERNELS {
        for d in dtypes.clone() {
            // SAFETY: plain integers in, an integer out.
            let answer = unsafe { supports(kernel, d) };
            let valid = match answer {
                SUPPORT_NO | SUPPORT_NATIVE => true,
                SUPPORT_CONVERT_TO_F32 => kernel == OP_MATMUL && d != DTYPE_NONE,
                _ => false,
            };
            if !valid {
                return Err(format!(
                    "`supports` answered {answer} for {op} on ggml type {d}, which the ABI does not allow"
                ));
            }
            answers.insert((kernel, d), answer);
        }
    }
    Ok(answers)
}
