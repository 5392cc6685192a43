//! The one thread that owns the model: it loads it, then runs queued jobs
//! one at a time. Every job starts at position 0, so the KV cache of the
//! previous job is simply overwritten.

use std::ops::ControlFlow;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use rbees_model::{LoadOptions, StopReason, TokenEvent};
use tokio::sync::{mpsc, oneshot};

use super::metrics::Outcome;
use super::state::{unix_ms, Job, JobEvent, LoadState, Ready, State};
use crate::engine::{self, AnyModel, BackendChoice, Engine};

/// Starts the engine thread. `loaded` answers once loading ends, with the
/// error message if it failed.
pub fn spawn(
    state: Arc<State>,
    choice: BackendChoice,
    load_options: LoadOptions,
    loaded: oneshot::Sender<Result<(), String>>,
) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("rbees-engine".into())
        .spawn(move || {
            let started = Instant::now();
            let result = engine::load(
                &state.model_path,
                &choice,
                &load_options,
                &mut |done, total| {
                    state.update_load(|l| {
                        l.layers_loaded = done;
                        l.layers_total = total;
                    });
                },
            );
            let loaded_model = match result {
                Ok(m) => m,
                Err(e) => {
                    let message = format!("{e:#}");
                    tracing::error!(error = %message, "model load failed");
                    state.update_load(|l| {
                        l.state = LoadState::Error;
                        l.error = Some(message.clone());
                    });
                    let _ = loaded.send(Err(message));
                    return;
                }
            };
            let mut model = loaded_model.model;
            let (tx, rx) = mpsc::channel(state.settings.queue_depth);
            let ready = Ready {
                tokenizer: loaded_model.tokenizer,
                context: model.context_size(),
                backend: model.backend_name(),
                device: model.device_name(),
                chat_template: loaded_model.chat_template.map(|source| {
                    super::openai::ChatTemplate::new(source).map_err(|e| {
                        tracing::warn!(error = %e, "the chat template does not compile");
                        e.to_string()
                    })
                }),
                queue: tx,
            };
            tracing::info!(
                backend = ready.backend,
                device = %ready.device,
                context = ready.context,
                load_ms = started.elapsed().as_millis() as u64,
                "model loaded"
            );
            let _ = state.ready.set(ready);
            state.update_load(|l| l.state = LoadState::Ready);
            let _ = loaded.send(Ok(()));
            run_jobs(&state, &mut model, rx);
        })?;
    Ok(())
}

fn run_jobs(state: &State, model: &mut AnyModel, mut rx: mpsc::Receiver<Job>) {
    let Some(ready) = state.ready.get() else {
        return;
    };
    while let Some(job) = rx.blocking_recv() {
        let span = tracing::info_span!("job", job_id = %job.id);
        let _entered = span.enter();
        let outcome = run_one(state, ready, model, &job);
        state.metrics.request(outcome);
        state.finish_job(&job.id);
    }
}

fn run_one(state: &State, ready: &Ready, model: &mut AnyModel, job: &Job) -> Outcome {
    let send = |e: JobEvent| job.events.send(e).is_ok();
    // Cancelled (or its client gone) while queued: end at once.
    if job.cancel.load(Ordering::SeqCst) || job.events.is_closed() {
        tracing::info!("cancelled while queued");
        send(JobEvent::Started {
            started_at_ms: unix_ms(),
        });
        send(JobEvent::End {
            prompt_tokens: job.prompt_ids.len(),
            tokens_out: 0,
            decode_time_ms: 0.0,
            stop_reason: StopReason::Cancelled,
            stop_sequence: None,
        });
        return Outcome::Cancelled;
    }
    tracing::info!(
        prompt_tokens = job.prompt_ids.len(),
        max_tokens = job.params.max_tokens,
        "job started"
    );
    send(JobEvent::Started {
        started_at_ms: unix_ms(),
    });
    let settings = &state.settings;
    let decode_started = Instant::now();
    let mut last_token_at: Option<Instant> = None;
    let mut tokens = 0usize;
    let mut last_index = None;
    let mut on_token = |ev: TokenEvent<'_>| {
        let new_token = last_index != Some(ev.index);
        last_index = Some(ev.index);
        if new_token {
            let now = Instant::now();
            match last_token_at {
                None => state
                    .metrics
                    .time_to_first_token((now - job.accepted).as_secs_f64()),
                Some(t) => state.metrics.token_latency((now - t).as_secs_f64()),
            }
            last_token_at = Some(now);
            tokens += 1;
            state.metrics.token();
        }
        let sent = send(JobEvent::Token {
            text: ev.text.to_string(),
            index: ev.index,
            id: ev.id,
            new_token,
        });
        if !sent {
            tracing::info!("client gone: cancelling");
            return ControlFlow::Break(());
        }
        if new_token && settings.metrics_every > 0 && tokens.is_multiple_of(settings.metrics_every)
        {
            let elapsed = decode_started.elapsed().as_secs_f64();
            send(JobEvent::Metrics {
                tokens_per_sec: if elapsed > 0.0 {
                    tokens as f64 / elapsed
                } else {
                    0.0
                },
                tokens_out: tokens,
                elapsed_ms: elapsed * 1000.0,
            });
        }
        if !settings.token_delay.is_zero() {
            std::thread::sleep(settings.token_delay);
        }
        if job.cancel.load(Ordering::SeqCst) {
            return ControlFlow::Break(());
        }
        ControlFlow::Continue(())
    };
    let result = std::panic::catch_unwind(AssertUnwindSafe(|| {
        model.run(
            &ready.tokenizer,
            &job.prompt_ids,
            &job.params,
            &mut on_token,
        )
    }));
    match result {
        Ok(Ok(out)) => {
            tracing::info!(
                tokens_out = out.ids.len(),
                stop_reason = ?out.stop_reason,
                decode_ms = out.timings.decode_ms,
                "job ended"
            );
            send(JobEvent::End {
                prompt_tokens: job.prompt_ids.len(),
                tokens_out: out.ids.len(),
                decode_time_ms: out.timings.decode_ms,
                stop_reason: out.stop_reason,
                stop_sequence: out.stop_sequence,
            });
            if out.stop_reason == StopReason::Cancelled {
                Outcome::Cancelled
            } else {
                Outcome::Completed
            }
        }
        Ok(Err(e)) => {
            tracing::error!(error = %e, "job failed");
            send(JobEvent::Error {
                code: "ENGINE_ERROR",
                message: e.to_string(),
            });
            Outcome::Error
        }
        Err(_) => {
            tracing::error!("engine panicked during the job");
            send(JobEvent::Error {
                code: "ENGINE_PANIC",
                message: "the engine panicked while generating; see the worker log".into(),
            });
            Outcome::Error
        }
    }
}
