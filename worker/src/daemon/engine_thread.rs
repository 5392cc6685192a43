//! The one thread that owns the model: it loads it, then runs the
//! continuous-batching loop ([`super::scheduler`]) over its KV cache slots.

use std::sync::Arc;
use std::time::Instant;

use rbees_model::LoadOptions;
use tokio::sync::{mpsc, oneshot};

use super::state::{LoadState, Ready, State};
use crate::engine::{self, BackendChoice};

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
            if let Some(why) = &loaded_model.auto_pick {
                tracing::info!("{why}");
            }
            let mut model = loaded_model.model;
            let (tx, rx) = mpsc::channel(state.settings.queue_depth);
            let ready = Ready {
                tokenizer: loaded_model.tokenizer,
                context: model.context_size(),
                slots: model.slots(),
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
            let kv_mib = model.kv_bytes_per_slot() as f64 / (1 << 20) as f64;
            tracing::info!(
                backend = ready.backend,
                device = %ready.device,
                context = ready.context,
                slots = ready.slots,
                batch_tokens = state.settings.batch_tokens,
                load_ms = started.elapsed().as_millis() as u64,
                "model loaded: {} slots of {} tokens each; KV cache {:.1} MiB per slot, {:.1} MiB in all (f32, {})",
                ready.slots,
                ready.context,
                kv_mib,
                kv_mib * ready.slots as f64,
                if ready.device == "cpu" {
                    "host pages are touched only as a slot fills"
                } else {
                    "allocated on the device at load"
                }
            );
            state.note_device_memory(model.device_memory_used());
            let _ = state.ready.set(ready);
            state.update_load(|l| l.state = LoadState::Ready);
            let _ = loaded.send(Ok(()));
            super::scheduler::run(&state, &mut model, rx);
        })?;
    Ok(())
}
