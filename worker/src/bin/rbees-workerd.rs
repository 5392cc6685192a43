//! The worker daemon a pool manager spawns. The HTTP worker is not built yet
//! (see the worker issue); until then it refuses to start rather than pretend.

fn main() -> std::process::ExitCode {
    eprintln!(
        "rbees-workerd: not implemented yet; use `rbees generate` to run a model from the command line"
    );
    std::process::ExitCode::from(2)
}
