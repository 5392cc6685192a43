use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = rbees_worker::cli::Cli::parse();
    match rbees_worker::cli::run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
