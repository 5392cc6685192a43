//! rbees-benches: criterion benchmarks of every op of the Backend trait on
//! every compiled backend (`cargo bench -p rbees-benches`). The end-to-end
//! benchmark is `rbees bench`; `llama-bench.sh` compares it with llama.cpp.

pub mod cases;
pub mod runner;
