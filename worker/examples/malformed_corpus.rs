//! Writes the malformed-model corpus (the cases `worker/tests/
//! malformed_models.rs` loads) to a folder, one `.gguf` per case plus
//! `expected.txt` with the words each error must contain.
//! Run: `scripts/malformed-corpus.sh [OUT_DIR]`.

#[path = "../tests/malformed/mod.rs"]
mod malformed;

use std::fmt::Write as _;
use std::path::PathBuf;

fn main() -> std::io::Result<()> {
    let out = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target/malformed-models"));
    std::fs::create_dir_all(&out)?;
    let mut expected = String::new();
    let cases = malformed::cases();
    for case in &cases {
        std::fs::write(out.join(format!("{}.gguf", case.name)), &case.bytes)?;
        let _ = writeln!(expected, "{}.gguf\t{}", case.name, case.expect.join(" | "));
    }
    std::fs::write(out.join("expected.txt"), expected)?;
    println!(
        "{} malformed models written to {}",
        cases.len(),
        out.display()
    );
    Ok(())
}
