//! The conformance suite on every backend compiled into this build that can
//! run here (ndarray, candle and cpu on the CPU; candle on CUDA is checked with
//! `rbees conformance --device cuda:0` on a GPU machine).

use rbees_conformance::{Options, Outcome};
use rbees_core::{descriptors, WeightDType};
use rbees_worker::cli::conformance::check;

#[test]
fn every_cpu_backend_conforms_to_the_reference() {
    let backends: Vec<_> = descriptors()
        .into_iter()
        .filter(|d| (d.probe)("cpu").is_ok())
        .map(|d| d.name)
        .collect();
    assert!(
        ["ndarray", "candle", "cpu"]
            .iter()
            .all(|b| backends.contains(b)),
        "{backends:?}"
    );
    for kind in backends {
        let report = check(kind, "cpu", 2, &Options::default()).expect("backend starts");
        println!("{report}");
        assert!(report.is_ok(), "{kind} fails conformance:\n{report}");
        // Weight types GGUF models use must actually be checked, not skipped;
        // the cpu backend declares the types it has no kernels for.
        let declared: Vec<String> = if kind == "cpu" {
            WeightDType::ALL
                .into_iter()
                .filter(|d| rbees_backend_cpu::unsupported_reason(*d).is_some())
                .map(|d| d.to_string())
                .collect()
        } else {
            vec!["Q8_K".to_string()]
        };
        for r in &report.results {
            let skipped = matches!(r.outcome, Outcome::Unsupported(_) | Outcome::NoReference(_));
            if skipped {
                assert!(
                    declared
                        .iter()
                        .any(|d| r.case.starts_with(&format!("{d} "))),
                    "{kind}: {}({}) was not checked",
                    r.op,
                    r.case
                );
            }
        }
        assert!(
            report.passed() > 100,
            "{kind}: only {} cases passed",
            report.passed()
        );
    }
}
