//! The engine loop: continuous batching over the model's KV cache slots.
//!
//! Each iteration admits queued jobs into free slots (reusing a cached
//! prompt prefix where a slot has one), then runs **one** forward pass over
//! every running sequence: a decode token for each sequence that is
//! generating, plus prompt chunks of admitted ones within the per-step token
//! budget (chunked prefill, oldest first), so a long prompt delays the
//! others' next token by at most one chunk. Each sequence samples from its
//! own logits with its own settings ([`Decoding`]) and streams its own
//! events; finished, cancelled and disconnected jobs leave between steps
//! and free their slot. This thread is the only owner of the model and of
//! the slot table.

use std::ops::ControlFlow;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use rbees_model::{Decoding, SeqChunk, StopReason, TokenEvent};
use tokio::sync::mpsc;

use super::error::ApiError;
use super::metrics::Outcome;
use super::slots::Slots;
use super::state::{unix_ms, Job, JobEvent, Ready, State};
use crate::engine::AnyModel;

/// Where a running sequence is.
enum Phase {
    /// Prompt tokens `0..done` are in the cache.
    Prefill { done: usize },
    /// `(token, position)` runs next.
    Decode { next: (u32, usize) },
}

/// One admitted job: its slot, its decoding state and its event stream.
struct Running<'t> {
    job: Job,
    slot: usize,
    cached: usize,
    phase: Phase,
    decoding: Decoding<'t>,
    stream: Stream,
    span: tracing::Span,
}

/// Per-job streaming and timing, what the token callback needs.
struct Stream {
    events: mpsc::UnboundedSender<JobEvent>,
    cancel: std::sync::Arc<std::sync::atomic::AtomicBool>,
    accepted: Instant,
    /// When the engine took the job (its prompt starts then).
    admitted: Instant,
    decode_started: Option<Instant>,
    last_token_at: Option<Instant>,
    tokens: usize,
    last_index: Option<usize>,
}

impl Stream {
    fn send(&self, e: JobEvent) -> bool {
        self.events.send(e).is_ok()
    }

    fn gone(&self) -> bool {
        self.cancel.load(Ordering::SeqCst) || self.events.is_closed()
    }

    fn on_token(&mut self, state: &State, ev: TokenEvent<'_>) -> ControlFlow<()> {
        let new_token = self.last_index != Some(ev.index);
        self.last_index = Some(ev.index);
        if new_token {
            let now = Instant::now();
            match self.last_token_at {
                None => state
                    .metrics
                    .time_to_first_token((now - self.accepted).as_secs_f64()),
                Some(t) => state.metrics.token_latency((now - t).as_secs_f64()),
            }
            self.last_token_at = Some(now);
            self.tokens += 1;
            state.metrics.token();
        }
        let sent = self.send(JobEvent::Token {
            text: ev.text.to_string(),
            index: ev.index,
            id: ev.id,
            new_token,
        });
        if !sent {
            tracing::info!("client gone: cancelling");
            return ControlFlow::Break(());
        }
        let every = state.settings.metrics_every;
        if new_token && every > 0 && self.tokens.is_multiple_of(every) {
            let elapsed = self
                .decode_started
                .map_or(0.0, |t| t.elapsed().as_secs_f64());
            self.send(JobEvent::Metrics {
                tokens_per_sec: if elapsed > 0.0 {
                    self.tokens as f64 / elapsed
                } else {
                    0.0
                },
                tokens_out: self.tokens,
                elapsed_ms: elapsed * 1000.0,
            });
        }
        if self.cancel.load(Ordering::SeqCst) {
            return ControlFlow::Break(());
        }
        ControlFlow::Continue(())
    }
}

/// Runs jobs from `rx` until the queue closes and nothing is running.
/// How often the engine thread refreshes the device memory it reports.
const MEMORY_SAMPLE_EVERY: Duration = Duration::from_secs(1);

pub fn run(state: &State, model: &mut AnyModel, mut rx: mpsc::Receiver<Job>) {
    let Some(ready) = state.ready.get() else {
        return;
    };
    let mut slots = Slots::new(model.slots());
    let mut running: Vec<Running<'_>> = Vec::new();
    // Device memory is asked of the driver at most this often, not per step.
    let mut memory_sampled = Instant::now();
    let mut queue_open = true;
    loop {
        // Admit while slots are free; wait for a job only when idle.
        while queue_open && running.len() < slots.total() {
            let job = if running.is_empty() {
                rx.blocking_recv()
            } else {
                match rx.try_recv() {
                    Ok(job) => Some(job),
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => None,
                }
            };
            match job {
                Some(job) => {
                    if let Some(r) = admit(state, ready, &mut slots, job) {
                        running.push(r);
                    }
                }
                None => queue_open = false,
            }
        }
        state.slots_busy.store(slots.busy(), Ordering::Relaxed);
        if running.is_empty() {
            if queue_open {
                continue;
            }
            return;
        }
        // Cancelled or disconnected jobs leave before the step.
        let mut i = 0;
        while i < running.len() {
            if running[i].stream.gone() {
                let r = running.remove(i);
                r.span.in_scope(|| tracing::info!("cancelled"));
                finish(state, &mut slots, r, StopReason::Cancelled);
            } else {
                i += 1;
            }
        }
        state.slots_busy.store(slots.busy(), Ordering::Relaxed);
        if running.is_empty() {
            continue;
        }
        step(state, model, &mut slots, &mut running);
        state.slots_busy.store(slots.busy(), Ordering::Relaxed);
        if memory_sampled.elapsed() >= MEMORY_SAMPLE_EVERY {
            state.note_device_memory(model.device_memory_used());
            memory_sampled = Instant::now();
        }
        if !state.settings.token_delay.is_zero() {
            std::thread::sleep(state.settings.token_delay);
        }
    }
}

/// Takes a slot for `job` and sends `started`; a job cancelled while queued
/// (or whose settings the model refuses) ends here.
fn admit<'t>(state: &State, ready: &'t Ready, slots: &mut Slots, job: Job) -> Option<Running<'t>> {
    let span = tracing::info_span!("job", job_id = %job.id, correlation_id = %job.correlation_id);
    let _entered = span.clone().entered();
    let stream = Stream {
        events: job.events.clone(),
        cancel: job.cancel.clone(),
        accepted: job.accepted,
        admitted: Instant::now(),
        decode_started: None,
        last_token_at: None,
        tokens: 0,
        last_index: None,
    };
    stream.send(JobEvent::Started {
        started_at_ms: unix_ms(),
    });
    let end_now = |outcome: Outcome, event: JobEvent| {
        stream.send(event);
        state.job_ended(&job.id, job.accepted, outcome);
        None
    };
    if stream.gone() {
        tracing::info!("cancelled while queued");
        return end_now(
            Outcome::Cancelled,
            JobEvent::End {
                prompt_tokens: job.prompt_ids.len(),
                prompt_tokens_cached: 0,
                tokens_out: 0,
                prompt_time_ms: 0.0,
                decode_time_ms: 0.0,
                stop_reason: StopReason::Cancelled,
                stop_sequence: None,
            },
        );
    }
    let decoding = match Decoding::new(
        &ready.tokenizer,
        &job.prompt_ids,
        &job.params,
        ready.context,
    ) {
        Ok(d) => d,
        Err(e) => {
            tracing::error!(error = %e, "job refused");
            let e = ApiError::Engine(e.to_string());
            return end_now(e.outcome(), JobEvent::Error(e));
        }
    };
    let Some(taken) = slots.take(&job.prompt_ids) else {
        // Not reached: jobs are admitted only while a slot is free.
        let e = ApiError::Engine("no free KV cache slot".into());
        return end_now(e.outcome(), JobEvent::Error(e));
    };
    state
        .metrics
        .prompt_tokens(job.prompt_ids.len(), taken.cached);
    tracing::info!(
        prompt_tokens = job.prompt_ids.len(),
        prompt_tokens_cached = taken.cached,
        slot = taken.slot,
        max_tokens = job.params.max_tokens,
        "job started"
    );
    drop(_entered);
    Some(Running {
        slot: taken.slot,
        cached: taken.cached,
        phase: Phase::Prefill { done: taken.cached },
        decoding,
        stream,
        span,
        job,
    })
}

/// The chunks of one step: every decode token, then prompt chunks within
/// what is left of the budget, oldest admission first.
fn plan<'a>(running: &'a [Running<'_>], budget: usize) -> Vec<(usize, SeqChunk<'a>)> {
    let mut chunks = Vec::with_capacity(running.len());
    let mut left = budget;
    for (i, r) in running.iter().enumerate() {
        if let Phase::Decode { next } = &r.phase {
            chunks.push((
                i,
                SeqChunk {
                    slot: r.slot,
                    pos0: next.1,
                    ids: std::slice::from_ref(&next.0),
                    logits: 1,
                },
            ));
            left = left.saturating_sub(1);
        }
    }
    for (i, r) in running.iter().enumerate() {
        if let Phase::Prefill { done } = r.phase {
            let prompt = &r.job.prompt_ids;
            let n = (prompt.len() - done).min(left);
            if n == 0 {
                continue;
            }
            left -= n;
            chunks.push((
                i,
                SeqChunk {
                    slot: r.slot,
                    pos0: done,
                    ids: &prompt[done..done + n],
                    logits: usize::from(done + n == prompt.len()),
                },
            ));
        }
    }
    chunks
}

fn step(state: &State, model: &mut AnyModel, slots: &mut Slots, running: &mut Vec<Running<'_>>) {
    let planned = plan(running, state.settings.batch_tokens);
    let chunks: Vec<SeqChunk<'_>> = planned.iter().map(|(_, c)| *c).collect();
    let rows: usize = chunks.iter().map(|c| c.ids.len()).sum();
    let result = std::panic::catch_unwind(AssertUnwindSafe(|| model.step(&chunks)));
    // What each chunk wrote: (running index, pos0, tokens, logits).
    let written: Vec<(usize, usize, usize)> = planned
        .iter()
        .map(|(i, c)| (*i, c.pos0, c.ids.len()))
        .collect();
    let logits = match result {
        Ok(Ok(logits)) => {
            for (_, c) in &planned {
                slots.wrote(c.slot, c.pos0, c.ids);
            }
            logits
        }
        failed => {
            let e = match failed {
                Ok(Err(e)) => ApiError::Engine(e.to_string()),
                _ => ApiError::EnginePanic,
            };
            tracing::error!(error = %e, sequences = chunks.len(), "step failed");
            drop(planned);
            fail(state, slots, running, &written, e);
            return;
        }
    };
    drop(planned);
    state.metrics.step(rows, written.len());
    let mut ended = Vec::new();
    for ((i, pos0, n), logits) in written.into_iter().zip(logits) {
        let r = &mut running[i];
        let _entered = r.span.clone().entered();
        if let Phase::Prefill { done } = &mut r.phase {
            *done = pos0 + n;
        }
        let Some(logits) = logits else {
            continue; // a prompt chunk before the last
        };
        let stream = &mut r.stream;
        stream.decode_started.get_or_insert_with(Instant::now);
        match r
            .decoding
            .advance(&logits, &mut |ev| stream.on_token(state, ev))
        {
            Ok(None) => {
                r.phase = Phase::Decode {
                    next: r.decoding.next_input(),
                }
            }
            Ok(Some(reason)) => ended.push((i, Ok(reason))),
            Err(e) => ended.push((i, Err(ApiError::Engine(e.to_string())))),
        }
    }
    // Retire from the back so the other indices stay valid.
    ended.sort_by_key(|(i, _)| std::cmp::Reverse(*i));
    for (i, result) in ended {
        let r = running.remove(i);
        match result {
            Ok(reason) => finish(state, slots, r, reason),
            Err(e) => {
                let _entered = r.span.clone().entered();
                tracing::error!(error = %e, "job failed");
                end_with_error(state, r, e);
                // The step itself succeeded: the cache holds what was written.
            }
        }
    }
}

/// Every sequence of a failed step gets the error; what their slots hold
/// is unknown, so it is forgotten.
fn fail(
    state: &State,
    slots: &mut Slots,
    running: &mut Vec<Running<'_>>,
    written: &[(usize, usize, usize)],
    e: ApiError,
) {
    let mut failed: Vec<usize> = written.iter().map(|(i, _, _)| *i).collect();
    failed.sort_unstable_by(|a, b| b.cmp(a));
    for i in failed {
        let r = running.remove(i);
        slots.discard(r.slot);
        end_with_error(state, r, e.clone());
    }
}

fn end_with_error(state: &State, r: Running<'_>, e: ApiError) {
    r.stream.send(JobEvent::Error(e.clone()));
    state.job_ended(&r.job.id, r.job.accepted, e.outcome());
}

/// Sends `end` (after any held-back text) and frees the slot, keeping its
/// tokens for prefix reuse.
fn finish(state: &State, slots: &mut Slots, r: Running<'_>, reason: StopReason) {
    let _entered = r.span.clone().entered();
    let mut stream = r.stream;
    let out = r
        .decoding
        .finish(reason, &mut |ev| stream.on_token(state, ev));
    let decode_ms = stream
        .decode_started
        .map_or(0.0, |t| t.elapsed().as_secs_f64() * 1000.0);
    let prompt_ms = stream
        .decode_started
        .map_or(0.0, |t| (t - stream.admitted).as_secs_f64() * 1000.0);
    tracing::info!(
        tokens_out = out.ids.len(),
        stop_reason = ?out.stop_reason,
        decode_ms,
        "job ended"
    );
    stream.send(JobEvent::End {
        prompt_tokens: r.job.prompt_ids.len(),
        prompt_tokens_cached: r.cached,
        tokens_out: out.ids.len(),
        prompt_time_ms: prompt_ms,
        decode_time_ms: decode_ms,
        stop_reason: out.stop_reason,
        stop_sequence: out.stop_sequence,
    });
    let outcome = if out.stop_reason == StopReason::Cancelled {
        Outcome::Cancelled
    } else {
        Outcome::Completed
    };
    state.job_ended(&r.job.id, r.job.accepted, outcome);
    slots.release(r.slot);
}
