//! The worker daemon a pool manager spawns: see `rbees_worker::daemon` and docs/worker.md.

fn main() -> std::process::ExitCode {
    rbees_worker::daemon::main()
}
