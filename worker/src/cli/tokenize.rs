use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use rbees_model::{GgufFile, Tokenizer};
use serde_json::json;

#[derive(Debug, Args)]
pub struct TokenizeArgs {
    /// GGUF model file whose tokenizer to use.
    #[arg(long)]
    pub model: PathBuf,
    #[arg(long)]
    pub text: String,
    /// Print one JSON object `{ids, pieces}`.
    #[arg(long)]
    pub json: bool,
    /// Do not add BOS/EOS even where the model asks for them.
    #[arg(long)]
    pub no_add_special: bool,
    /// Keep special-token text such as `<|im_start|>` as plain text.
    #[arg(long)]
    pub no_parse_special: bool,
}

pub fn run(args: &TokenizeArgs) -> Result<()> {
    let gguf = GgufFile::open(&args.model)?;
    let tokenizer = Tokenizer::from_gguf_metadata(gguf.metadata())
        .with_context(|| format!("cannot build the tokenizer of {}", args.model.display()))?;
    let ids = tokenizer.encode(&args.text, !args.no_add_special, !args.no_parse_special)?;
    let pieces: Vec<&str> = ids
        .iter()
        .map(|&id| tokenizer.token_text(id).unwrap_or(""))
        .collect();
    if args.json {
        println!("{}", json!({ "ids": ids, "pieces": pieces }));
    } else {
        for (id, piece) in ids.iter().zip(&pieces) {
            println!("{id:>7} -> {piece:?}");
        }
    }
    Ok(())
}
