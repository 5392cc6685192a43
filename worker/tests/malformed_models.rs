//! The malformed-model corpus (`malformed/mod.rs`) through the loader the
//! worker uses, on every compiled CPU backend: each file is refused with an
//! error naming what is wrong and where; nothing panics.

mod malformed;

use rbees_core::BackendOptions;
use rbees_model::{GgufFile, LoadOptions};
use rbees_worker::engine::{load_gguf, BackendChoice};

const BACKENDS: &[&str] = &["ndarray", "candle", "cpu"];

/// The load error of `bytes` on `backend`, or `None` if it loaded.
pub fn load_error(name: &str, bytes: Vec<u8>, backend: &str) -> Option<String> {
    let gguf = match GgufFile::from_bytes(format!("{name}.gguf"), bytes) {
        Ok(g) => g,
        Err(e) => return Some(format!("{:#}", anyhow::Error::from(e))),
    };
    let choice = BackendChoice::new(
        backend,
        BackendOptions {
            device: "cpu".into(),
            threads: Some(1),
        },
    );
    load_gguf(&gguf, &choice, &LoadOptions::default(), &mut |_, _| {})
        .err()
        .map(|e| format!("{e:#}"))
}

#[test]
fn the_base_model_loads_on_every_backend() {
    let bytes = malformed::gguf_writer::GgufModel::read(&malformed::base_model()).to_bytes();
    for backend in BACKENDS {
        assert_eq!(
            load_error("base", bytes.clone(), backend),
            None,
            "{backend}"
        );
    }
}

#[test]
fn every_malformed_model_is_refused_clearly_on_every_backend() {
    let cases = malformed::cases();
    assert!(cases.len() >= 30, "{} cases", cases.len());
    let mut failures = Vec::new();
    for case in &cases {
        for backend in BACKENDS {
            let result =
                std::panic::catch_unwind(|| load_error(&case.name, case.bytes.clone(), backend));
            match result {
                Err(_) => failures.push(format!("{} on {backend}: PANIC", case.name)),
                Ok(None) => failures.push(format!("{} on {backend}: loaded", case.name)),
                Ok(Some(msg)) => {
                    println!("{:<36} {backend:<8} {msg}", case.name);
                    let missing: Vec<_> =
                        case.expect.iter().filter(|w| !msg.contains(*w)).collect();
                    if !missing.is_empty() {
                        failures.push(format!(
                            "{} on {backend}: {msg:?} lacks {missing:?}",
                            case.name
                        ));
                    }
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
