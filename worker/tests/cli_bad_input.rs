//! Bad input to the `rbees` command line: every case must exit non-zero with
//! an error on stderr that names what was wrong, and must never panic.
//!
//! Malformed models are made by copying the tiny test model and patching
//! bytes found with the small GGUF v3 walker below.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn tiny_model() -> PathBuf {
    repo_root().join("testdata/models/tiny-llama2-f32.gguf")
}

fn tiny_bytes() -> Vec<u8> {
    std::fs::read(tiny_model()).expect("read the tiny test model")
}

/// A fresh, empty directory, removed again when dropped. The command runs in
/// it too, so no `config/default.toml` of the checkout is picked up.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "rbees-cli-bad-input-{}-{tag}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create scratch dir");
        Scratch(dir)
    }

    fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, bytes).expect("write scratch file");
        path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn rbees(cwd: &Path, args: &[OsString]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rbees"))
        .args(args)
        .current_dir(cwd)
        .env_remove("RUST_BACKTRACE")
        .output()
        .expect("run the rbees binary")
}

/// Turns a mix of `&str` and paths into an array of command-line arguments.
macro_rules! args {
    ($($a:expr),* $(,)?) => { [$(OsString::from($a)),*] };
}

/// Asserts a clean failure: non-zero exit (not a signal), nothing on stdout,
/// no panic, and every `needle` in stderr. Returns stderr.
#[track_caller]
fn assert_fails(out: &Output, needles: &[&str]) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success(),
        "expected failure, got {}\nstdout: {stdout}\nstderr: {stderr}",
        out.status
    );
    let code = out.status.code();
    assert!(
        matches!(code, Some(c) if c != 101),
        "exit status {:?} is a crash or a panic\nstderr: {stderr}",
        out.status
    );
    assert!(
        !stderr.contains("panicked") && !stderr.contains("RUST_BACKTRACE"),
        "panicked:\n{stderr}"
    );
    assert!(
        stdout.trim().is_empty(),
        "a failing run printed to stdout: {stdout}"
    );
    assert!(stderr.contains("error"), "no error message: {stderr}");
    for needle in needles {
        assert!(
            stderr.contains(needle),
            "stderr does not mention {needle:?}:\n{stderr}"
        );
    }
    stderr
}

/// `rbees generate` with a model and a short greedy run.
fn generate(cwd: &Path, model: &Path, extra: &[OsString]) -> Output {
    let mut a = args![
        "generate",
        "--model",
        model,
        "--temperature",
        "0",
        "--max-tokens",
        "2"
    ]
    .to_vec();
    a.extend_from_slice(extra);
    rbees(cwd, &a)
}

// ---------------------------------------------------------------------------
// A minimal GGUF v3 walker: just enough to find byte offsets to patch.

struct Kv {
    key: String,
    value_type: u32,
    /// First byte of the value (after the key and the type id).
    value_start: usize,
    value_end: usize,
}

struct TensorRecord {
    name: String,
    record_start: usize,
    /// Offset of the u32 ggml type id.
    type_offset: usize,
}

struct Layout {
    kvs: Vec<Kv>,
    tensors: Vec<TensorRecord>,
    infos_start: usize,
    infos_end: usize,
    data_start: usize,
}

impl Layout {
    fn kv(&self, key: &str) -> &Kv {
        self.kvs
            .iter()
            .find(|kv| kv.key == key)
            .unwrap_or_else(|| panic!("test model has no key {key}"))
    }

    fn tensor(&self, name: &str) -> &TensorRecord {
        self.tensors
            .iter()
            .find(|t| t.name == name)
            .unwrap_or_else(|| panic!("test model has no tensor {name}"))
    }
}

struct Walker<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Walker<'_> {
    fn take(&mut self, n: usize) -> &[u8] {
        let s = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        s
    }

    fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.take(4).try_into().unwrap())
    }

    fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.take(8).try_into().unwrap())
    }

    fn string(&mut self) -> String {
        let len = self.u64() as usize;
        String::from_utf8(self.take(len).to_vec()).expect("utf-8 string")
    }

    /// Skips one value of GGUF value type `ty`; returns it if it is a u32.
    fn skip_value(&mut self, ty: u32) -> Option<u64> {
        let fixed = match ty {
            0 | 1 | 7 => 1, // u8, i8, bool
            2 | 3 => 2,     // u16, i16
            4..=6 => 4,     // u32, i32, f32
            10..=12 => 8,   // u64, i64, f64
            8 => {
                self.string();
                return None;
            }
            9 => {
                let item = self.u32();
                let len = self.u64();
                for _ in 0..len {
                    self.skip_value(item);
                }
                return None;
            }
            other => panic!("unknown GGUF value type {other}"),
        };
        let raw = self.take(fixed);
        (fixed == 4).then(|| u32::from_le_bytes(raw.try_into().unwrap()) as u64)
    }
}

fn layout(bytes: &[u8]) -> Layout {
    let mut w = Walker { bytes, pos: 0 };
    assert_eq!(w.take(4), b"GGUF");
    assert_eq!(w.u32(), 3, "GGUF version");
    let n_tensors = w.u64();
    let n_kv = w.u64();
    let mut alignment = 32;
    let mut kvs = Vec::new();
    for _ in 0..n_kv {
        let key = w.string();
        let value_type = w.u32();
        let value_start = w.pos;
        let value = w.skip_value(value_type);
        if key == "general.alignment" {
            alignment = value.expect("u32 alignment") as usize;
        }
        kvs.push(Kv {
            key,
            value_type,
            value_start,
            value_end: w.pos,
        });
    }
    let infos_start = w.pos;
    let mut tensors = Vec::new();
    for _ in 0..n_tensors {
        let record_start = w.pos;
        let name = w.string();
        let n_dims = w.u32();
        for _ in 0..n_dims {
            w.u64();
        }
        let type_offset = w.pos;
        w.u32();
        w.u64(); // data offset
        tensors.push(TensorRecord {
            name,
            record_start,
            type_offset,
        });
    }
    let infos_end = w.pos;
    Layout {
        kvs,
        tensors,
        infos_start,
        infos_end,
        data_start: infos_end.div_ceil(alignment) * alignment,
    }
}

// ---------------------------------------------------------------------------
// Model files.

#[test]
fn gguf_walker_understands_the_tiny_model() {
    let bytes = tiny_bytes();
    let l = layout(&bytes);
    let arch = l.kv("general.architecture");
    assert_eq!(arch.value_type, 8);
    assert_eq!(&bytes[arch.value_end - 5..arch.value_end], b"llama");
    let q = l.tensor("blk.0.attn_q.weight");
    assert!(l.infos_start <= q.record_start && q.record_start < q.type_offset);
    assert!(q.type_offset < l.infos_end);
    assert!(l.infos_start < l.infos_end && l.infos_end <= l.data_start);
    assert!(l.data_start < bytes.len());
}

#[test]
fn missing_model_file() {
    let dir = Scratch::new("missing");
    let path = dir.0.join("no-such-model.gguf");
    let out = generate(&dir.0, &path, &args!["--prompt", "Hello"]);
    let stderr = assert_fails(&out, &[path.to_str().unwrap(), "cannot read model file"]);
    assert!(stderr.to_lowercase().contains("no such file"), "{stderr}");

    let out = rbees(
        &dir.0,
        &args!["tokenize", "--model", &path, "--text", "Hello"],
    );
    assert_fails(&out, &[path.to_str().unwrap()]);
}

#[test]
fn empty_model_file() {
    let dir = Scratch::new("empty");
    let path = dir.write("empty.gguf", b"");
    let out = generate(&dir.0, &path, &args!["--prompt", "Hello"]);
    assert_fails(&out, &[path.to_str().unwrap(), "GGUF magic"]);
}

#[test]
fn wrong_magic() {
    let dir = Scratch::new("magic");
    let mut bytes = tiny_bytes();
    bytes[..4].copy_from_slice(b"GGML");
    let path = dir.write("wrong-magic.gguf", &bytes);
    let out = generate(&dir.0, &path, &args!["--prompt", "Hello"]);
    assert_fails(&out, &[path.to_str().unwrap(), "GGUF magic"]);

    let out = rbees(
        &dir.0,
        &args!["tokenize", "--model", &path, "--text", "Hello"],
    );
    assert_fails(&out, &[path.to_str().unwrap(), "GGUF magic"]);
}

#[test]
fn truncated_model_files() {
    let bytes = tiny_bytes();
    let l = layout(&bytes);
    let tokens = l.kv("tokenizer.ggml.tokens");
    let cuts = [
        ("inside the magic", 2),
        ("inside the version", 6),
        ("inside the tensor count", 12),
        ("inside the metadata count", 20),
        ("inside the first key", 24 + 8 + 3),
        (
            "inside the token list",
            (tokens.value_start + tokens.value_end) / 2,
        ),
        ("inside the tensor infos", (l.infos_start + l.infos_end) / 2),
        ("at the start of the tensor data", l.data_start),
        ("inside the tensor data", l.data_start + 1000),
        ("one byte short", bytes.len() - 1),
    ];
    let dir = Scratch::new("truncated");
    for (what, len) in cuts {
        assert!(len < bytes.len());
        let path = dir.write(&format!("cut-{len}.gguf"), &bytes[..len]);
        let out = generate(&dir.0, &path, &args!["--prompt", "Hello"]);
        let path = path.to_str().unwrap();
        let stderr = if len < 4 {
            assert_fails(&out, &[path, "GGUF magic"])
        } else if len < l.data_start {
            // The header itself is cut: the file is named.
            assert_fails(&out, &[path, "truncated"])
        } else {
            // The header is whole, a tensor's bytes are missing: it is named.
            assert_fails(&out, &["tensor '", "truncated"])
        };
        assert!(
            !stderr.contains("failed to fill whole buffer") || stderr.contains("truncated"),
            "truncated {what} (at {len} bytes): unclear message:\n{stderr}"
        );
    }

    // With RUST_BACKTRACE set, the error is still one readable line, not a trace.
    let path = dir.write(
        "cut-backtrace.gguf",
        &bytes[..(l.infos_start + l.infos_end) / 2],
    );
    let out = Command::new(env!("CARGO_BIN_EXE_rbees"))
        .args(args!["generate", "--model", &path, "--prompt", "Hello"])
        .current_dir(&dir.0)
        .env("RUST_BACKTRACE", "1")
        .output()
        .unwrap();
    let stderr = assert_fails(&out, &["truncated"]);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
}

#[test]
fn unsupported_architecture() {
    let bytes = tiny_bytes();
    let arch = layout(&bytes).kv("general.architecture").value_end;
    let mut patched = bytes.clone();
    patched[arch - 5..arch].copy_from_slice(b"mamba");
    let dir = Scratch::new("arch");
    let path = dir.write("mamba.gguf", &patched);
    let out = generate(&dir.0, &path, &args!["--prompt", "Hello"]);
    assert_fails(&out, &["architecture", "'mamba'", "not supported", "llama"]);
}

#[test]
fn unsupported_tensor_types() {
    let bytes = tiny_bytes();
    let l = layout(&bytes);
    let name = "blk.0.attn_q.weight";
    let at = l.tensor(name).type_offset;
    assert_eq!(&bytes[at..at + 4], &0u32.to_le_bytes(), "an F32 tensor");
    let dir = Scratch::new("dtype");

    // Q8_1: a ggml type candle can read but rbees does not run.
    let mut q8_1 = bytes.clone();
    q8_1[at..at + 4].copy_from_slice(&9u32.to_le_bytes());
    let path = dir.write("q8_1.gguf", &q8_1);
    let out = generate(&dir.0, &path, &args!["--prompt", "Hello"]);
    assert_fails(&out, &[name, "Q8_1", "not supported"]);

    // 99: no ggml type at all.
    let mut unknown = bytes.clone();
    unknown[at..at + 4].copy_from_slice(&99u32.to_le_bytes());
    let path = dir.write("type99.gguf", &unknown);
    let out = generate(&dir.0, &path, &args!["--prompt", "Hello"]);
    // candle's header reader rejects the id before rbees sees the tensor,
    // so the message names the file and the id.
    assert_fails(&out, &[path.to_str().unwrap(), "dtype", "99"]);
}

// ---------------------------------------------------------------------------
// Prompts.

#[test]
fn prompt_longer_than_the_context() {
    let dir = Scratch::new("ctx");
    let out = generate(
        &dir.0,
        &tiny_model(),
        &args![
            "--ctx-size",
            "4",
            "--prompt",
            "Once upon a time there was a small robot that liked to count the stars."
        ],
    );
    assert_fails(&out, &["prompt", "context", "4 tokens"]);

    let out = generate(
        &dir.0,
        &tiny_model(),
        &args!["--ctx-size", "4", "--prompt-ids", "1,380,450,296,320,354"],
    );
    assert_fails(&out, &["6 tokens", "context", "4 tokens"]);
}

#[test]
fn context_size_zero_or_past_the_trained_context() {
    let dir = Scratch::new("ctxsize");
    let out = generate(
        &dir.0,
        &tiny_model(),
        &args!["--ctx-size", "0", "--prompt", "Hi"],
    );
    assert_fails(&out, &["context size", "at least 1"]);
    // The tiny model is trained for 256 positions.
    let big = "1000000000000";
    let out = generate(
        &dir.0,
        &tiny_model(),
        &args!["--ctx-size", big, "--prompt", "Hi"],
    );
    assert_fails(&out, &["context size", big, "256"]);
}

#[test]
fn prompt_ids_outside_the_vocabulary() {
    let dir = Scratch::new("vocab");
    let out = generate(&dir.0, &tiny_model(), &args!["--prompt-ids", "1,380,512"]);
    assert_fails(&out, &["512", "vocabulary", "512 tokens"]);
    let out = generate(&dir.0, &tiny_model(), &args!["--prompt-ids", "4294967295"]);
    assert_fails(&out, &["4294967295", "vocabulary"]);
}

#[test]
fn prompt_ids_that_are_not_numbers() {
    let dir = Scratch::new("ids");
    for (ids, bad) in [
        ("1,abc,3", "'abc'"),
        ("1,-3", "'-3'"),
        ("1,2.5", "'2.5'"),
        ("1,99999999999", "'99999999999'"),
    ] {
        let out = generate(&dir.0, &tiny_model(), &args!["--prompt-ids", ids]);
        assert_fails(&out, &["--prompt-ids", bad, "not a token id"]);
    }
}

// ---------------------------------------------------------------------------
// Backend, device, configuration, sampling.

#[test]
fn unknown_backend_lists_the_known_ones() {
    let dir = Scratch::new("backend");
    let out = generate(
        &dir.0,
        &tiny_model(),
        &args!["--backend", "nope", "--prompt", "Hello"],
    );
    assert_fails(&out, &["'nope'", "unknown backend", "ndarray"]);
}

#[test]
fn unknown_device_for_ndarray() {
    let dir = Scratch::new("device");
    let out = generate(
        &dir.0,
        &tiny_model(),
        &args![
            "--backend",
            "ndarray",
            "--device",
            "cuda:0",
            "--prompt",
            "Hello"
        ],
    );
    assert_fails(&out, &["ndarray", "'cuda:0'", "cpu"]);
}

#[test]
fn config_with_an_unknown_key() {
    let dir = Scratch::new("config-key");
    let config = dir.write(
        "rbees.toml",
        b"[backend]\nkind = \"ndarray\"\ndevice = \"cpu\"\nthreds = 2\n",
    );
    let out = generate(
        &dir.0,
        &tiny_model(),
        &args!["--config", &config, "--prompt", "Hello"],
    );
    assert_fails(&out, &[config.to_str().unwrap(), "threds", "line 4"]);
}

#[test]
fn config_with_bad_toml_syntax() {
    let dir = Scratch::new("config-syntax");
    let config = dir.write(
        "rbees.toml",
        b"[backend]\nkind = \"ndarray\"\n\n[model\ncontext = 64\n",
    );
    let out = generate(
        &dir.0,
        &tiny_model(),
        &args!["--config", &config, "--prompt", "Hello"],
    );
    assert_fails(&out, &[config.to_str().unwrap(), "line 4"]);

    let missing = dir.0.join("missing.toml");
    let out = generate(
        &dir.0,
        &tiny_model(),
        &args!["--config", &missing, "--prompt", "Hello"],
    );
    assert_fails(&out, &[missing.to_str().unwrap(), "config"]);
}

#[test]
fn invalid_sampling_values() {
    let dir = Scratch::new("sampling");
    let model = tiny_model();
    let cases: [(&[&str], &[&str]); 6] = [
        (&["--top-p", "0"], &["top_p", "(0, 1]", "got 0"]),
        (&["--top-p", "1.5"], &["top_p", "got 1.5"]),
        (&["--temperature", "-1"], &["temperature", ">= 0", "got -1"]),
        (&["--temperature=-1"], &["temperature", ">= 0", "got -1"]),
        (&["--temperature", "NaN"], &["temperature"]),
        (&["--min-p", "2"], &["min_p", "got 2"]),
    ];
    for (flags, needles) in cases {
        let mut a = args!["generate", "--model", &model, "--prompt", "Hello"].to_vec();
        a.extend(flags.iter().map(OsString::from));
        let out = rbees(&dir.0, &a);
        assert_fails(&out, needles);
    }
}
