use std::io::Write;
use std::ops::ControlFlow;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;
use rbees_model::{GenerateParams, LoadOptions, SamplingParams};
use serde_json::json;

use super::ModelArgs;
use crate::engine;

#[derive(Debug, Args)]
pub struct GenerateArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Prompt text; special-token text such as `<|im_start|>` becomes the special token.
    #[arg(
        long,
        conflicts_with = "prompt_ids",
        required_unless_present = "prompt_ids"
    )]
    pub prompt: Option<String>,
    /// Prompt as comma-separated token ids, e.g. `1,450,4996`.
    #[arg(long)]
    pub prompt_ids: Option<String>,
    /// Keep special-token text in --prompt as plain text.
    #[arg(long)]
    pub no_parse_special: bool,
    #[arg(long, default_value_t = 128)]
    pub max_tokens: usize,
    /// 0 means greedy.
    #[arg(long, default_value_t = 0.8, allow_negative_numbers = true)]
    pub temperature: f32,
    /// 0 disables.
    #[arg(long, default_value_t = 40)]
    pub top_k: usize,
    /// 1 disables.
    #[arg(long, default_value_t = 0.95, allow_negative_numbers = true)]
    pub top_p: f32,
    /// 0 disables.
    #[arg(long, default_value_t = 0.05, allow_negative_numbers = true)]
    pub min_p: f32,
    /// 1 disables.
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    pub repeat_penalty: f32,
    /// Recent tokens the repeat penalty looks at.
    #[arg(long, default_value_t = 64)]
    pub repeat_last_n: usize,
    /// Random seed (default: a new one each run, printed with --json).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Stop before this string (repeatable); it is not printed.
    #[arg(long)]
    pub stop: Vec<String>,
    /// Keep generating past end-of-generation tokens.
    #[arg(long)]
    pub ignore_eos: bool,
    /// Print one JSON object instead of streaming text.
    #[arg(long)]
    pub json: bool,
    /// With --json: include the logits of the last prompt position.
    #[arg(long, requires = "json")]
    pub logits: bool,
}

fn parse_ids(text: &str) -> Result<Vec<u32>> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<u32>()
                .with_context(|| format!("--prompt-ids: '{s}' is not a token id"))
        })
        .collect()
}

fn fresh_seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

pub fn run(args: &GenerateArgs) -> Result<()> {
    let resolved = args.model.resolve()?;
    let seed = args.seed.unwrap_or_else(fresh_seed);
    let params = GenerateParams {
        max_tokens: args.max_tokens,
        sampling: SamplingParams {
            temperature: args.temperature,
            top_k: args.top_k,
            top_p: args.top_p,
            min_p: args.min_p,
            repeat_penalty: args.repeat_penalty,
            repeat_last_n: args.repeat_last_n,
            seed,
        },
        stop: args.stop.clone(),
        ignore_eos: args.ignore_eos,
        keep_prompt_logits: args.logits,
    };
    params.sampling.validate()?;

    let started = Instant::now();
    let load_options = LoadOptions {
        context: resolved.context,
        slots: 1,
    };
    let mut loaded = engine::load(
        &resolved.model,
        &resolved.choice,
        &load_options,
        &mut |_, _| {},
    )?;
    let load_ms = started.elapsed().as_secs_f64() * 1000.0;
    if let Some(why) = &loaded.auto_pick {
        eprintln!("{why}");
    }

    let prompt_ids = match (&args.prompt, &args.prompt_ids) {
        (Some(text), _) => loaded
            .tokenizer
            .encode(text, true, !args.no_parse_special)?,
        (None, Some(ids)) => parse_ids(ids)?,
        (None, None) => bail!("give --prompt TEXT or --prompt-ids 1,2,3"),
    };

    let stdout = std::io::stdout();
    let streaming = !args.json;
    let mut on_token = |event: rbees_model::TokenEvent<'_>| {
        if streaming && !event.text.is_empty() {
            let mut out = stdout.lock();
            // A closed stdout (e.g. `| head`) ends generation instead of panicking.
            if out
                .write_all(event.text.as_bytes())
                .and_then(|_| out.flush())
                .is_err()
            {
                return ControlFlow::Break(());
            }
        }
        ControlFlow::Continue(())
    };
    let out = loaded
        .model
        .run(&loaded.tokenizer, &prompt_ids, &params, &mut on_token)?;

    let t = &out.timings;
    if args.json {
        let mut obj = json!({
            "prompt_ids": prompt_ids,
            "ids": out.ids,
            "text": out.text,
            "stop_reason": out.stop_reason,
            "stop_sequence": out.stop_sequence,
            "seed": seed,
            "backend": loaded.model.backend_name(),
            "device": loaded.model.device_name(),
            // Fused ops that ran as the trait's default composition.
            "composed_ops": loaded
                .model
                .capability_report()
                .composed_ops()
                .iter()
                .map(|op| op.to_string())
                .collect::<Vec<_>>(),
            "timings": {
                "load_ms": load_ms,
                "prompt_tokens": t.prompt_tokens,
                "prompt_ms": t.prompt_ms,
                "prompt_tokens_per_sec": t.prompt_tokens_per_sec(),
                "generated_tokens": t.generated_tokens,
                "decode_ms": t.decode_ms,
                "decode_tokens_per_sec": t.decode_tokens_per_sec(),
            },
        });
        if let Some(logits) = out.prompt_logits {
            obj["last_logits"] = json!(logits);
        }
        println!("{obj}");
    } else {
        println!();
        eprintln!(
            "[{} on {}] load {:.0} ms | prompt {} tokens, {:.1} tokens/s | decode {} tokens, {:.1} tokens/s | stop: {:?}",
            loaded.model.backend_name(),
            loaded.model.device_name(),
            load_ms,
            t.prompt_tokens,
            t.prompt_tokens_per_sec(),
            t.generated_tokens,
            t.decode_tokens_per_sec(),
            out.stop_reason
        );
    }
    Ok(())
}
