//! Every Backend kernel at SmolLM2-135M and Llama-2-7B shapes, one criterion
//! group per op and size with the backends side by side.
//!
//! `RBEES_BENCH_THREADS` sets the CPU threads (default 2, this project's
//! reference machine); `cargo bench -p rbees-benches -- matmul/smollm2`
//! runs a subset (criterion's name filter).

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use rbees_benches::cases::{cases, Amount, Timed};
use rbees_benches::runner::runners;
use rbees_conformance::{LLAMA2_7B, SMOLLM2_135M};

fn threads() -> usize {
    std::env::var("RBEES_BENCH_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2)
}

fn backend_ops(c: &mut Criterion) {
    let runners = runners(threads()).expect("backends start");
    for shape in [SMOLLM2_135M, LLAMA2_7B] {
        for case in cases(&shape) {
            let mut group = c.benchmark_group(case.group(&shape));
            if let Some(amount) = case.amount() {
                group.throughput(match amount {
                    Amount::Elements(n) => Throughput::Elements(n),
                    Amount::Bytes(n) => Throughput::Bytes(n),
                });
            }
            for runner in &runners {
                if let Some(why) = runner.unsupported(&case) {
                    eprintln!(
                        "{} {}: not supported: {why}",
                        case.group(&shape),
                        runner.label()
                    );
                    continue;
                }
                let mut call = runner.prepare(&case).unwrap_or_else(|e| {
                    panic!("{} on {}: {e:#}", case.group(&shape), runner.label())
                });
                group.bench_function(runner.label(), |b| {
                    b.iter(|| call().expect("the op runs"));
                });
            }
            group.finish();
        }
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = backend_ops
}
criterion_main!(benches);
