//! The conformance suite (the same one every built-in backend passes) on
//! the example plugin, loaded from its shared library.

use rbees_backend_plugin::{PluginBackend, PluginLibrary};
use rbees_conformance::{Options, Outcome};
use rbees_core::{Backend, BackendOptions, Op, Support, WeightDType};
use rbees_plugin_testkit::build;

fn example() -> PluginBackend {
    let lib = PluginLibrary::load(&build().example()).expect("the example plugin loads");
    let options = BackendOptions {
        device: "cpu".into(),
        threads: Some(2),
    };
    PluginBackend::new(lib, &options).expect("instance")
}

/// The quick suite: every op and weight type at SmolLM2 shapes, the
/// Llama-2-7B shapes except the matrix products (the full suite passes as
/// well, `rbees conformance --plugin PATH`, but takes over three minutes on
/// a 2-core machine, nearly all of it in the reference's 7B products).
#[test]
fn the_example_plugin_conforms_to_the_reference() {
    let backend = example();
    let report = rbees_conformance::run(&backend, &Options { quick: true });
    println!("{report}");
    assert_eq!(report.backend, "example");
    assert!(
        report.is_ok(),
        "the example plugin fails conformance:\n{report}"
    );
    for r in &report.results {
        if matches!(r.outcome, Outcome::Unsupported(_) | Outcome::NoReference(_)) {
            assert!(
                r.case.starts_with("Q8_K"),
                "{}({}) was not checked",
                r.op,
                r.case
            );
        }
    }
    assert!(
        report.passed() > 100,
        "only {} cases passed",
        report.passed()
    );
}

#[test]
fn capabilities_say_which_path_runs() {
    let b = example();
    for op in [
        Op::Rope,
        Op::Softmax,
        Op::Silu,
        Op::Add,
        Op::AttentionScores,
    ] {
        assert_eq!(b.supports(op, None), Support::Native, "{op}");
    }
    assert_eq!(b.supports(Op::Attention, None), Support::Composed);
    assert_eq!(b.supports(Op::SwiGlu, None), Support::Composed);
    // Q4_1 is multiplied as F32 after the declared conversion at load.
    assert_eq!(
        b.supports(Op::MatMul, Some(WeightDType::Q4_1)),
        Support::Native
    );
    assert!(!b
        .supports(Op::MatMul, Some(WeightDType::Q8K))
        .is_supported());
}
