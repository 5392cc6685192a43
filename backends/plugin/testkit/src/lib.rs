//! Builds the plugin libraries the tests load: the example plugin
//! (`backends/plugin-example`) and the broken fixtures (this crate's
//! examples), with a nested `cargo build --release`.
//!
//! The nested build uses its own target directory (`target/plugin-build`):
//! the outer `cargo test` holds the lock of `target/` while tests run, so
//! building there would wait forever. It runs once per test process
//! (several test binaries at once simply queue on that directory's lock).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The broken plugins, by example name.
pub const FIXTURES: [&str; 7] = [
    "missing_symbol",
    "wrong_version",
    "null_kernel",
    "bad_name",
    "reserved_name",
    "kernel_error",
    "kernel_panics",
];

/// Where the built libraries are.
#[derive(Debug)]
pub struct Built {
    release: PathBuf,
}

impl Built {
    /// `librbees_backend_example.so` (or `.dylib`, `.dll`).
    pub fn example(&self) -> PathBuf {
        self.release.join(library_file("rbees_backend_example"))
    }

    /// One of [`FIXTURES`].
    pub fn fixture(&self, name: &str) -> PathBuf {
        assert!(FIXTURES.contains(&name), "no fixture plugin {name}");
        self.release.join("examples").join(library_file(name))
    }
}

fn library_file(stem: &str) -> String {
    format!(
        "{}{stem}{}",
        std::env::consts::DLL_PREFIX,
        std::env::consts::DLL_SUFFIX
    )
}

/// The workspace root (this crate is `backends/plugin/testkit`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../..")
}

/// Builds the plugins once per process and returns where they are; panics
/// with cargo's output if the build fails (this is test support).
pub fn build() -> &'static Built {
    static BUILT: OnceLock<Built> = OnceLock::new();
    BUILT.get_or_init(|| {
        let root = workspace_root();
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join("target"))
            .join("plugin-build");
        // `CARGO` is the cargo running the tests; the same toolchain builds the plugins.
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let out = Command::new(cargo)
            .current_dir(&root)
            .args([
                "build",
                "--release",
                "--package",
                "rbees-backend-plugin-example",
                "--package",
                "rbees-plugin-testkit",
                "--lib",
                "--examples",
                "--target-dir",
            ])
            .arg(&target)
            .output()
            .expect("run cargo to build the plugins");
        assert!(
            out.status.success(),
            "building the plugins failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let built = Built {
            release: target.join("release"),
        };
        for path in FIXTURES
            .iter()
            .map(|f| built.fixture(f))
            .chain([built.example()])
        {
            assert!(path.is_file(), "{} was not built", path.display());
        }
        built
    })
}
