//! The loader refuses broken libraries with errors that name the file, and
//! a plugin whose kernels fail or panic gives errors, not a dead process.
//! The libraries are built by `rbees-plugin-testkit` (a nested cargo build).

use std::path::Path;
use std::sync::Arc;

use rbees_backend_plugin::{scan_dir, PluginBackend, PluginError, PluginLibrary};
use rbees_core::{Backend, BackendOptions, HostWeight, WeightDType};
use rbees_plugin_testkit::build;

fn refusal(path: &Path) -> PluginError {
    PluginLibrary::load(path).expect_err("the library must be refused")
}

#[track_caller]
fn assert_names_file(e: &PluginError, path: &Path, words: &[&str]) {
    let msg = e.to_string();
    let file = path.file_name().unwrap().to_str().unwrap();
    assert!(msg.contains(file), "error does not name {file}: {msg}");
    for w in words {
        assert!(msg.contains(w), "error lacks '{w}': {msg}");
    }
}

#[test]
fn a_library_without_the_entry_symbol_is_refused() {
    let path = build().fixture("missing_symbol");
    let e = refusal(&path);
    assert!(matches!(e, PluginError::MissingSymbol { .. }), "{e:?}");
    assert_names_file(
        &e,
        &path,
        &["not an rbees backend plugin", "rbees_plugin_entry"],
    );
}

#[test]
fn another_abi_version_is_refused() {
    let path = build().fixture("wrong_version");
    let e = refusal(&path);
    assert!(
        matches!(
            e,
            PluginError::Version {
                found: 999,
                expected: 1,
                ..
            }
        ),
        "{e:?}"
    );
    assert_names_file(&e, &path, &["ABI version 999", "version 1"]);
}

#[test]
fn a_null_function_pointer_is_a_malformed_table() {
    let path = build().fixture("null_kernel");
    let e = refusal(&path);
    assert!(matches!(e, PluginError::Malformed { .. }), "{e:?}");
    assert_names_file(&e, &path, &["malformed table", "`matmul` function is null"]);
}

#[test]
fn an_empty_name_is_refused() {
    let path = build().fixture("bad_name");
    let e = refusal(&path);
    assert!(matches!(e, PluginError::Name { .. }), "{e:?}");
    assert_names_file(&e, &path, &["invalid name", "1 to 32 characters"]);
}

#[test]
fn a_built_in_or_reserved_name_is_refused() {
    let path = build().fixture("reserved_name");
    let e = refusal(&path);
    assert!(matches!(e, PluginError::Name { .. }), "{e:?}");
    assert_names_file(&e, &path, &["invalid name \"plugin\"", "built-in backend"]);
}

#[test]
fn a_missing_file_or_a_non_library_is_refused() {
    let missing = Path::new("/nonexistent/librbees_nothing.so");
    assert_names_file(&refusal(missing), missing, &["cannot load plugin"]);
    let dir = std::env::temp_dir().join(format!("rbees-not-a-lib-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let fake = dir.join("libfake.so");
    std::fs::write(&fake, b"not an ELF file").unwrap();
    assert_names_file(&refusal(&fake), &fake, &["cannot load plugin"]);
}

/// A backend on a fixture whose kernels all fail the given way.
fn fixture_backend(name: &str) -> PluginBackend {
    let lib = PluginLibrary::load(&build().fixture(name)).expect("a valid table");
    PluginBackend::new(lib, &BackendOptions::default()).expect("instance")
}

#[track_caller]
fn assert_kernel_errors(b: &PluginBackend, file: &str, words: &[&str]) {
    let x = b.upload(&[1.0; 8], 2, 4).unwrap();
    let w_bytes: Vec<u8> = [0.5f32; 12].iter().flat_map(|v| v.to_le_bytes()).collect();
    let w = b
        .load_weight(&HostWeight::new("w", WeightDType::F32, &[3, 4], &w_bytes).unwrap())
        .unwrap();
    let results = [
        b.matmul(&x, &w).map(|_| ()),
        b.softmax(&x).map(|_| ()),
        b.silu(&x).map(|_| ()),
    ];
    for r in results {
        let msg = r.expect_err("the kernel fails").to_string();
        assert!(msg.contains(file), "{msg}");
        for word in words {
            assert!(msg.contains(word), "lacks '{word}': {msg}");
        }
    }
    // Host-side ops still work: the backend (and process) is intact.
    assert_eq!(b.download(&b.add(&x, &x).unwrap()).unwrap(), vec![2.0; 8]);
}

#[test]
fn a_kernel_error_comes_back_as_an_error_naming_the_plugin() {
    let b = fixture_backend("kernel_error");
    assert_kernel_errors(
        &b,
        "libkernel_error",
        &[
            "plugin 'kernel-error'",
            "kernel error",
            "simulated device failure",
        ],
    );
}

#[test]
fn a_panic_inside_a_plugin_is_caught_at_its_edge() {
    let b = fixture_backend("kernel_panics");
    assert_kernel_errors(
        &b,
        "libkernel_panics",
        &["panic caught in the plugin", "simulated kernel bug"],
    );
    // Again: a caught panic leaves the plugin usable.
    assert_kernel_errors(&b, "libkernel_panics", &["simulated kernel bug"]);
}

#[test]
fn bad_shapes_are_refused_by_the_host_before_the_plugin_runs() {
    // The failing fixture would answer "simulated device failure" if it
    // were called; a shape error proves the host stopped first.
    let b = fixture_backend("kernel_error");
    let x = b.upload(&[1.0; 8], 2, 4).unwrap();
    let bytes: Vec<u8> = [0.5f32; 15].iter().flat_map(|v| v.to_le_bytes()).collect();
    let w = b
        .load_weight(&HostWeight::new("w", WeightDType::F32, &[3, 5], &bytes).unwrap())
        .unwrap();
    let e = b.matmul(&x, &w).unwrap_err().to_string();
    assert!(e.contains("matmul: shape mismatch"), "{e}");
    let norm = b
        .load_weight(&HostWeight::new("n", WeightDType::F32, &[5], &bytes[..20]).unwrap())
        .unwrap();
    let e = b.rms_norm(&x, &norm, 1e-5).unwrap_err().to_string();
    assert!(e.contains("rms_norm: shape mismatch"), "{e}");
    let (cos, sin) = (
        b.upload(&[1.0; 2], 2, 1).unwrap(),
        b.upload(&[0.0; 2], 2, 1).unwrap(),
    );
    let e = b
        .rope(
            &x,
            2,
            2,
            5,
            &cos,
            &sin,
            rbees_core::RopeVariant::Interleaved,
        )
        .unwrap_err()
        .to_string();
    assert!(e.contains("rope: shape mismatch"), "{e}");
}

#[test]
fn loading_twice_gives_the_same_library() {
    let path = build().example();
    let a = PluginLibrary::load(&path).unwrap();
    let b = PluginLibrary::load(&path).unwrap();
    assert!(Arc::ptr_eq(&a, &b));
    assert_eq!(a.name(), "example");
    assert_eq!(a.abi_version(), 1);
}

#[test]
fn a_backend_keeps_its_library_after_every_other_handle_is_gone() {
    let backend = {
        let lib = PluginLibrary::load(&build().example()).unwrap();
        PluginBackend::new(lib, &BackendOptions::default()).unwrap()
    };
    let x = backend.upload(&[0.0, f32::NEG_INFINITY], 1, 2).unwrap();
    let y = backend.download(&backend.softmax(&x).unwrap()).unwrap();
    assert_eq!(y, vec![1.0, 0.0]);
}

#[test]
fn the_example_refuses_a_device_it_cannot_use() {
    let lib = PluginLibrary::load(&build().example()).unwrap();
    let options = BackendOptions {
        device: "cuda:0".into(),
        threads: None,
    };
    let e = PluginBackend::new(lib, &options)
        .err()
        .expect("refused")
        .to_string();
    assert!(
        e.contains("cuda:0") && e.contains("runs only on 'cpu'"),
        "{e}"
    );
}

#[test]
fn a_scanned_folder_reports_refused_files_and_duplicate_names() {
    let built = build();
    let dir = std::env::temp_dir().join(format!("rbees-plugins-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let so = std::env::consts::DLL_SUFFIX;
    for (from, to) in [
        (built.example(), format!("liba{so}")),
        (built.example(), format!("libb{so}")),
        (built.fixture("wrong_version"), format!("libold{so}")),
    ] {
        std::fs::copy(from, dir.join(to)).unwrap();
    }
    std::fs::write(dir.join("README.txt"), "not a library").unwrap();
    let found = scan_dir(&dir).unwrap();
    assert_eq!(found.loaded.len(), 2, "{found:?}");
    assert_eq!(found.refused.len(), 1, "{found:?}");
    assert!(found.refused[0].to_string().contains("libold"));
    let e = found.find("example").unwrap_err().to_string();
    assert!(
        e.contains("liba") && e.contains("libb") && e.contains("both named"),
        "{e}"
    );
    assert!(found.find("other").unwrap().is_none());
}
