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

/// One sequence's decoding state after its prompt: the sampler, the tokens
/// so far, the text streamed, stop strings. The one place that decides
/// what a token means (end of generation, a stop string, the limits), used
/// by [`generate`] for one sequence and by the worker's scheduler for many.
pub struct Decoding<'t> {
    tokenizer: &'t Tokenizer,
    sampler: Sampler,
    history: Vec<u32>,
    ids: Vec<u32>,
    text: String,
    decoder: StreamDecoder<'t>,
    stops: StopMatcher,
    stop_sequence: Option<String>,
    max_tokens: usize,
    ignore_eos: bool,
    /// Position the next token is fed at.
    pos: usize,
    context: usize,
}

impl<'t> Decoding<'t> {
    /// Checks the prompt fits `context` and the sampling settings are valid.
    pub fn new(
        tokenizer: &'t Tokenizer,
        prompt_ids: &[u32],
        params: &GenerateParams,
        context: usize,
    ) -> Result<Self> {
        if prompt_ids.is_empty() {
            return Err(ModelError::EmptyPrompt);
        }
        if prompt_ids.len() > context {
            return Err(ModelError::PromptTooLong {
                prompt_tokens: prompt_ids.len(),
                context,
            });
        }
        Ok(Decoding {
            tokenizer,
            sampler: Sampler::new(params.sampling.clone())?,
            history: prompt_ids.to_vec(),
            ids: Vec::new(),
            text: String::new(),
            decoder: StreamDecoder::new(tokenizer, false),
            stops: StopMatcher::new(&params.stop),
            stop_sequence: None,
            max_tokens: params.max_tokens,
            ignore_eos: params.ignore_eos,
            pos: prompt_ids.len(),
            context,
        })
    }

    /// Samples the next token from `logits` (of the last position run),
    /// hands it to `on_token`, and says whether generation goes on. On
    /// `None` the caller runs [`Decoding::next_input`] and calls again with
    /// its logits; on `Some(reason)` it calls [`Decoding::finish`].
    pub fn advance(
        &mut self,
        logits: &[f32],
        on_token: &mut dyn FnMut(TokenEvent<'_>) -> ControlFlow<()>,
    ) -> Result<Option<StopReason>> {
        if self.ids.len() >= self.max_tokens {
            return Ok(Some(StopReason::MaxTokens));
        }
        let id = self.sampler.sample(logits, &self.history);
        if self.tokenizer.is_eog(id) && !self.ignore_eos {
            return Ok(Some(StopReason::Eos));
        }
        self.ids.push(id);
        self.history.push(id);
        let piece = self.decoder.push(id)?;
        let (emit, stopped) = match self.stops.push(&piece) {
            StopScan::Emit(emit) => (emit, false),
            StopScan::Stopped { emit, matched } => {
                self.stop_sequence = Some(matched);
                (emit, true)
            }
        };
        self.text.push_str(&emit);
        let event = TokenEvent {
            index: self.ids.len() - 1,
            id,
            text: &emit,
        };
        if on_token(event).is_break() {
            return Ok(Some(StopReason::Cancelled));
        }
        if stopped {
            return Ok(Some(StopReason::StopSequence));
        }
        if self.ids.len() >= self.max_tokens {
            return Ok(Some(StopReason::MaxTokens));
        }
        if self.pos >= self.context {
            return Ok(Some(StopReason::ContextFull));
        }
        Ok(None)
    }

    /// The token to run next and its position (after `advance` said go on);
    /// moves the position on.
    pub fn next_input(&mut self) -> (u32, usize) {
        let pos = self.pos;
        self.pos += 1;
        (self.ids.last().copied().unwrap_or_default(), pos)
    }

    /// Tokens generated so far.
    pub fn generated(&self) -> usize {
        self.ids.len()
    }

    /// The prompt and the generated tokens, in order: what the KV cache
    /// holds once the last token has run.
    pub fn history(&self) -> &[u32] {
        &self.history
    }

    /// Flushes text held back (an incomplete character, a partial stop
    /// string) through `on_token` and returns the result.
    pub fn finish(
        mut self,
        mut stop_reason: StopReason,
        on_token: &mut dyn FnMut(TokenEvent<'_>) -> ControlFlow<()>,
    ) -> Generated {
        if stop_reason != StopReason::StopSequence {
            let tail = match self.stops.push(&self.decoder.finish()) {
                StopScan::Emit(emit) => emit + &self.stops.flush(),
                // The flushed bytes completed a stop string: report it like any other.
                StopScan::Stopped { emit, matched } => {
                    if stop_reason != StopReason::Cancelled {
                        stop_reason = StopReason::StopSequence;
                        self.stop_sequence = Some(matched);
                    }
                    emit
                }
            };
            if !tail.is_empty() {
                self.text.push_str(&tail);
                let event = TokenEvent {
                    index: self.ids.len().saturating_sub(1),
                    id: self.ids.last().copied().unwrap_or_default(),
                    text: &tail,
                };
                let _ = on_token(event);
            }
        }
        Generated {
            timings: Timings {
                generated_tokens: self.ids.len(),
                ..Default::default()
            },
            ids: self.ids,
            text: self.text,
            stop_reason,
            stop_sequence: self.stop_sequence,
            prompt_logits: None,
        }
    }
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
    let mut decoding = Decoding::new(tokenizer, prompt_ids, params, model.context())?;
    let started = Instant::now();
    let mut logits = Vec::new();
    for (i, chunk) in prompt_ids.chunks(PROMPT_BATCH).enumerate() {
        logits = model.forward(chunk, i * PROMPT_BATCH)?;
    }
    let prompt_ms = started.elapsed().as_secs_f64() * 1000.0;
    let prompt_logits = params.keep_prompt_logits.then(|| logits.clone());

    let started = Instant::now();
    let stop_reason = loop {
        if let Some(reason) = decoding.advance(&logits, &mut on_token)? {
            break reason;
        }
        let (id, pos) = decoding.next_input();
        logits = model.forward(&[id], pos)?;
    };
    let mut out = decoding.finish(stop_reason, &mut on_token);
    out.timings = Timings {
        prompt_tokens: prompt_ids.len(),
        prompt_ms,
        generated_tokens: out.ids.len(),
        decode_ms: started.elapsed().as_secs_f64() * 1000.0,
    };
    out.prompt_logits = prompt_logits;
    Ok(out)
}
