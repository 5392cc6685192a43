//! Replays every input the fuzzers ever crashed on (`fuzz/regressions/TARGET/`)
//! through the same check the fuzz target runs (fuzz/src/lib.rs), on stable.

#[path = "../../fuzz/src/lib.rs"]
mod fuzz_checks;

#[test]
fn every_fuzz_regression_input_passes_its_target() {
    let root = fuzz_checks::repo_root().join("fuzz/regressions");
    let mut replayed = 0;
    for (target, check) in fuzz_checks::TARGETS {
        let Ok(dir) = std::fs::read_dir(root.join(target)) else {
            continue;
        };
        let mut files: Vec<_> = dir.filter_map(|e| e.ok()).map(|e| e.path()).collect();
        files.sort();
        for file in files {
            let data = std::fs::read(&file).expect("read regression input");
            println!("{target}: {}", file.display());
            check(&data);
            replayed += 1;
        }
    }
    println!("{replayed} regression inputs replayed");
}

/// The seed corpora pass too (they are valid and invalid inputs of every kind).
#[test]
fn every_seed_input_passes_its_target() {
    let root = fuzz_checks::repo_root().join("fuzz/seeds");
    for (target, check) in fuzz_checks::TARGETS {
        let dir = std::fs::read_dir(root.join(target)).expect("a seed folder per target");
        for file in dir.filter_map(|e| e.ok()).map(|e| e.path()) {
            check(&std::fs::read(&file).expect("read seed"));
        }
    }
}
