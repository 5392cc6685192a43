//! The generation loop: prompt processing, decoding, stopping.

use std::ops::ControlFlow;
use std::time::Instant;

use rbees_core::Backend;
use serde::Serialize;

use crate::error::{ModelError, Result};
use crate::llama::Llama;
use crate::sampler::{Sampler, SamplingParams};
use crate::stop::{StopMatcher, StopScan};
use crate::tokenizer::{StreamDecoder, Tokenizer};

/// Prompt tokens processed per forward call, like llama.cpp's `n_batch`: it
/// bounds the attention score matrix of long prompts.
pub const PROMPT_BATCH: usize = 512;

#[derive(Debug, Clone)]
pub struct GenerateParams {
    pub max_tokens: usize,
    pub sampling: SamplingParams,
    /// Generation stops before any of these strings; they are not returned.
    pub stop: Vec<String>,
    /// Keep generating past end-of-generation tokens.
    pub ignore_eos: bool,
    /// Return the logits of the last prompt position.
    pub keep_prompt_logits: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum StopReason {
    MaxTokens,
    Eos,
    StopSequence,
    Cancelled,
    /// The KV cache is full.
    ContextFull,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Timings {
    pub prompt_tokens: usize,
    pub prompt_ms: f64,
    pub generated_tokens: usize,
    pub decode_ms: f64,
}

impl Timings {
    pub fn prompt_tokens_per_sec(&self) -> f64 {
        per_sec(self.prompt_tokens, self.prompt_ms)
    }

    /// Decode speed: the first generated token comes from the prompt pass, so
    /// it is not counted here (as llama.cpp's `eval time`).
    pub fn decode_tokens_per_sec(&self) -> f64 {
        per_sec(self.generated_tokens.saturating_sub(1), self.decode_ms)
    }
}

fn per_sec(tokens: usize, ms: f64) -> f64 {
    if ms > 0.0 {
        tokens as f64 * 1000.0 / ms
    } else {
        0.0
    }
}

/// One generated token, as handed to the caller while generating.
pub struct TokenEvent<'a> {
    pub index: usize,
    pub id: u32,
    /// Text now safe to show (may be empty while a character or a possible
    /// stop string is incomplete).
    pub text: &'a str,
}

#[derive(Debug, Clone)]
pub struct Generated {
    pub ids: Vec<u32>,
    pub text: String,
    pub stop_reason: StopReason,
    pub stop_sequence: Option<String>,
    pub timings: Timings,
    pub prompt_logits: Option<Vec<f32>>,
}

/// Generates from `prompt_ids`, calling `on_token` after every token; the
/// callback can cancel by returning `ControlFlow::Break(())`.
pub fn generate<B: Backend>(
    model: &mut Llama<B>,
    tokenizer: &Tokenizer,
    prompt_ids: &[u32],
    params: &GenerateParams,
    mut on_token: impl FnMut(TokenEvent<'_>) -> ControlFlow<()>,
) -> Result<Generated> {
    if prompt_ids.is_empty() {
        return Err(ModelError::EmptyPrompt);
    }
    if prompt_ids.len() > model.context() {
        return Err(ModelError::PromptTooLong {
            prompt_tokens: prompt_ids.len(),
            context: model.context(),
        });
    }
    let mut sampler = Sampler::new(params.sampling.clone())?;
    let mut timings = Timings {
        prompt_tokens: prompt_ids.len(),
        ..Default::default()
    };

    let started = Instant::now();
    let mut logits = Vec::new();
    for (i, chunk) in prompt_ids.chunks(PROMPT_BATCH).enumerate() {
        logits = model.forward(chunk, i * PROMPT_BATCH)?;
    }
    timings.prompt_ms = started.elapsed().as_secs_f64() * 1000.0;
    let prompt_logits = params.keep_prompt_logits.then(|| logits.clone());

    let started = Instant::now();
    let mut history = prompt_ids.to_vec();
    let mut ids = Vec::new();
    let mut text = String::new();
    let mut decoder = StreamDecoder::new(tokenizer, false);
    let mut stops = StopMatcher::new(&params.stop);
    let mut stop_sequence = None;
    let mut pos = prompt_ids.len();
    let mut stop_reason = loop {
        if ids.len() >= params.max_tokens {
            break StopReason::MaxTokens;
        }
        let id = sampler.sample(&logits, &history);
        if tokenizer.is_eog(id) && !params.ignore_eos {
            break StopReason::Eos;
        }
        ids.push(id);
        history.push(id);
        let piece = decoder.push(id)?;
        let (emit, stopped) = match stops.push(&piece) {
            StopScan::Emit(emit) => (emit, false),
            StopScan::Stopped { emit, matched } => {
                stop_sequence = Some(matched);
                (emit, true)
            }
        };
        text.push_str(&emit);
        let event = TokenEvent {
            index: ids.len() - 1,
            id,
            text: &emit,
        };
        if on_token(event).is_break() {
            break StopReason::Cancelled;
        }
        if stopped {
            break StopReason::StopSequence;
        }
        if ids.len() >= params.max_tokens {
            break StopReason::MaxTokens;
        }
        if pos >= model.context() {
            break StopReason::ContextFull;
        }
        logits = model.forward(&[id], pos)?;
        pos += 1;
    };
    if stop_reason != StopReason::StopSequence {
        // Flush what was held back: an incomplete character, a partial stop string.
        let tail = match stops.push(&decoder.finish()) {
            StopScan::Emit(emit) => emit + &stops.flush(),
            // The flushed bytes completed a stop string: report it like any other.
            StopScan::Stopped { emit, matched } => {
                if stop_reason != StopReason::Cancelled {
                    stop_reason = StopReason::StopSequence;
                    stop_sequence = Some(matched);
                }
                emit
            }
        };
        if !tail.is_empty() {
            text.push_str(&tail);
            let event = TokenEvent {
                index: ids.len().saturating_sub(1),
                id: ids.last().copied().unwrap_or_default(),
                text: &tail,
            };
            let _ = on_token(event);
        }
    }
    timings.generated_tokens = ids.len();
    timings.decode_ms = started.elapsed().as_secs_f64() * 1000.0;
    Ok(Generated {
        ids,
        text,
        stop_reason,
        stop_sequence,
        timings,
        prompt_logits,
    })
}
