//! What each fuzz target checks, as plain functions of the input bytes.
//! The targets in `fuzz_targets/` call these; the stable test
//! `worker/tests/fuzz_regressions.rs` includes this file and replays every
//! input under `fuzz/regressions/TARGET/` through the same function, so a
//! fixed crash stays fixed without nightly.

use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::OnceLock;

use clap::Parser;
use rbees_core::BackendOptions;
use rbees_model::tokenizer::StreamDecoder;
use rbees_model::{GenerateParams, GgufFile, LoadOptions, SamplingParams, Tokenizer};
use rbees_worker::config::Config;
use rbees_worker::daemon::openai::{parse_request, ChatTemplate, Kind};
use rbees_worker::daemon::validate::{self, MAX_JOB_ID_LEN, MAX_STOPS};
use rbees_worker::daemon::{settings, Args};
use rbees_worker::engine::{load_gguf, BackendChoice};

/// The repository root (both `fuzz/` and `worker/` sit one level below it).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn tokenizer_from(path: PathBuf) -> Tokenizer {
    let gguf = GgufFile::open(&path)
        .unwrap_or_else(|e| panic!("fuzz setup: cannot open {}: {e}", path.display()));
    Tokenizer::from_gguf_metadata(gguf.metadata())
        .unwrap_or_else(|e| panic!("fuzz setup: tokenizer of {}: {e}", path.display()))
}

/// SentencePiece vocabulary: the tiny Llama-2-shaped test model.
pub fn spm() -> &'static Tokenizer {
    static T: OnceLock<Tokenizer> = OnceLock::new();
    T.get_or_init(|| tokenizer_from(repo_root().join("testdata/models/tiny-llama2-f32.gguf")))
}

/// SmolLM2, the default model (`scripts/fetch-model.sh` fetches it).
pub fn smollm2() -> PathBuf {
    repo_root().join("models/SmolLM2-135M-Instruct.Q4_1.gguf")
}

/// Byte-level BPE vocabulary: SmolLM2's.
pub fn bpe() -> &'static Tokenizer {
    static T: OnceLock<Tokenizer> = OnceLock::new();
    T.get_or_init(|| tokenizer_from(smollm2()))
}

/// What a target runs on one input (panics on a failed check).
pub type Check = fn(&[u8]);

/// The targets, by name, for the regression replay.
pub const TARGETS: &[(&str, Check)] = &[
    ("tokenizer", tokenizer),
    ("config_toml", config_toml),
    ("execute_request", execute_request),
    ("openai_request", openai_request),
    ("gguf_load", gguf_load),
];

/// Which bytes have a BPE token that decodes to exactly that byte.
fn bpe_single_byte_tokens() -> &'static [bool; 256] {
    static T: OnceLock<[bool; 256]> = OnceLock::new();
    T.get_or_init(|| {
        let tok = bpe();
        let mut has = [false; 256];
        for id in 0..tok.vocab_size() as u32 {
            if let Ok([b]) = tok.token_bytes(id, true).as_deref() {
                has[*b as usize] = true;
            }
        }
        has
    })
}

fn check_decode(tok: &Tokenizer, ids: &[u32], special: bool) {
    let whole = tok.decode(ids, special);
    let in_vocab = ids.iter().all(|&id| (id as usize) < tok.vocab_size());
    assert_eq!(whole.is_ok(), in_vocab, "ids {ids:?}");
    let mut stream = StreamDecoder::new(tok, special);
    let mut text = String::new();
    for &id in ids {
        match stream.push(id) {
            Ok(t) => text.push_str(&t),
            Err(_) => {
                assert!(!in_vocab);
                return;
            }
        }
    }
    text.push_str(&stream.finish());
    assert_eq!(
        Ok(text),
        whole.map_err(|_| ()),
        "stream vs whole, ids {ids:?}"
    );
}

/// Both tokenizer types on arbitrary input. The first byte picks the
/// vocabulary and the flags; the rest is text (when it is UTF-8) and, read
/// as little-endian u32s, a sequence of token ids.
///
/// What must hold, from the tokenizer's contract (model/src/tokenizer):
/// - byte-level BPE (SmolLM2): `decode(encode(s)) == s` for every string,
///   with or without special-token parsing (special tokens decode to their
///   text when `special` is set) and without BOS/EOS, except that a byte
///   with no token of its own is dropped, as llama.cpp drops it (SmolLM2's
///   vocabulary lacks a few control bytes, e.g. 0x06);
/// - SentencePiece (tiny Llama-2 vocabulary, byte fallback, no user-defined
///   tokens): without special-token parsing, `decode(encode(s))` is `s` with
///   every U+2581 `▁` read back as a space (SentencePiece's space marker)
///   and, for non-empty `s`, the one leading space llama.cpp's
///   `add_space_prefix` inserts;
/// - decoding ids: `Ok` iff every id is in the vocabulary; the streaming
///   decoder's output concatenated equals `decode` of the same ids.
pub fn tokenizer(data: &[u8]) {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let is_bpe = flags & 1 == 1;
    let parse_special = flags & 2 != 0;
    let add_special = flags & 4 != 0;
    let decode_special = flags & 8 != 0;
    let tok = if is_bpe { bpe() } else { spm() };

    if let Ok(s) = std::str::from_utf8(rest) {
        let ids = tok
            .encode(s, add_special, parse_special)
            .expect("encoding never fails for these vocabularies");
        assert!(ids.iter().all(|&id| (id as usize) < tok.vocab_size()));
        check_decode(tok, &ids, decode_special);
        let plain = tok.encode(s, false, parse_special).expect("encode");
        let back = tok.decode(&plain, true).expect("ids from encode decode");
        if is_bpe {
            // Bytes without a token of their own are dropped, as llama.cpp
            // drops them (SmolLM2 has none for a few control bytes).
            let kept: Vec<u8> = s
                .bytes()
                .filter(|&b| bpe_single_byte_tokens()[b as usize])
                .collect();
            assert_eq!(
                back,
                String::from_utf8_lossy(&kept),
                "BPE round trip, ids {plain:?}"
            );
        } else if !parse_special {
            let mut want = String::new();
            if !s.is_empty() {
                want.push(' ');
            }
            want.push_str(&s.replace('\u{2581}', " "));
            assert_eq!(back, want, "SPM round trip, ids {plain:?}");
        }
    }

    let ids: Vec<u32> = rest
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        // Mostly in range, sometimes just past the end or far out.
        .map(|id| match id >> 30 {
            0 | 1 => id % tok.vocab_size() as u32,
            2 => tok.vocab_size() as u32 + (id & 3),
            _ => id,
        })
        .collect();
    check_decode(tok, &ids, decode_special);
}

fn args() -> &'static Args {
    static A: OnceLock<Args> = OnceLock::new();
    A.get_or_init(|| {
        Args::try_parse_from(["rbees-workerd", "--worker-id", "fuzz", "--port", "0"])
            .expect("fuzz setup: arguments")
    })
}

/// The TOML configuration through the same calls `rbees-workerd` makes
/// (`Config::parse`, then the model/backend resolution and the daemon
/// settings): any text is a config or an error, never a panic; a config
/// that is accepted can be started (its queue can be built).
pub fn config_toml(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(config) = Config::parse(text) else {
        return;
    };
    let _ = args().model.resolve_with(config.clone());
    if let Ok(s) = settings(args(), &config, None) {
        // What the engine thread does with it.
        let _queue = tokio::sync::mpsc::channel::<()>(s.queue_depth);
        assert!(s.max_body_bytes >= 1024);
    }
}

/// `POST /execute` bodies through the daemon's own validator: any bytes give
/// a request or a list of field errors, never a panic; an accepted request
/// satisfies every documented range.
pub fn execute_request(data: &[u8]) {
    // The context bounds max_tokens; vary it, and the route, with the first byte.
    let (context, body) = match data.split_first() {
        Some((&c, rest)) => (1 + c as usize * 16, rest),
        None => (2048, data),
    };
    let route = if context % 32 == 1 {
        validate::Route::Execute
    } else {
        validate::Route::Inference
    };
    match validate::execute(body, context, route) {
        Ok(r) => {
            assert!(!r.job_id.is_empty() && r.job_id.len() <= MAX_JOB_ID_LEN);
            assert!(!r.job_id.chars().any(char::is_control));
            assert!((1..=context).contains(&r.max_tokens));
            assert!(r.stop.len() <= MAX_STOPS && r.stop.iter().all(|s| !s.is_empty()));
            let s = &r.sampling;
            assert!((0.0..=100.0).contains(&s.temperature));
            assert!(s.top_p > 0.0 && s.top_p <= 1.0);
            assert!((0.0..=1.0).contains(&s.min_p));
            assert!(s.repeat_penalty > 0.0 && s.repeat_penalty <= 100.0);
        }
        Err(errors) => {
            assert!(!errors.is_empty());
            assert!(errors
                .iter()
                .all(|e| !e.field.is_empty() && !e.message.is_empty()));
        }
    }
}

fn templates() -> &'static [Option<Result<ChatTemplate, String>>] {
    static T: OnceLock<Vec<Option<Result<ChatTemplate, String>>>> = OnceLock::new();
    T.get_or_init(|| {
        let smol = rbees_model::GgufFile::open(
            smollm2(),
        )
        .expect("fuzz setup: SmolLM2 (scripts/fetch-model.sh)");
        let source = rbees_model::chat_template(&smol)
            .expect("fuzz setup: SmolLM2's chat template is a string")
            .expect("fuzz setup: SmolLM2 has a chat template");
        vec![
            None,
            Some(ChatTemplate::new(source).map_err(|e| e.to_string())),
            // Loops, filters and raise_exception, as Llama-2-chat's template uses.
            Some(
                ChatTemplate::new(
                    "{% for m in messages %}{% if m['role'] == 'x' %}{{ raise_exception('bad role') }}{% endif %}{{ bos_token + m['role'] | upper + ': ' + m['content'].strip() + eos_token }}{% endfor %}".into(),
                )
                .map_err(|e| e.to_string()),
            ),
            Some(Err("does not compile".into())),
        ]
    })
}

/// `/v1/completions` and `/v1/chat/completions` bodies through the daemon's
/// own parser, with the chat template of a real model (SmolLM2's, rendered
/// by minijinja) and a deliberately odd one: a request or field errors,
/// never a panic.
pub fn openai_request(data: &[u8]) {
    let Some((&sel, body)) = data.split_first() else {
        return;
    };
    let kind = if sel & 1 == 0 {
        Kind::Completion
    } else {
        Kind::Chat
    };
    let templates = templates();
    let template = templates[(sel as usize >> 1) % templates.len()].as_ref();
    let tokenizer = bpe();
    let context = 1 + (sel as usize >> 3) * 64;
    match parse_request(body, kind, context, template, tokenizer) {
        Ok(r) => {
            assert!((1..=context).contains(&r.params.max_tokens));
            assert!(r.params.stop.iter().all(|s| !s.is_empty()));
        }
        Err(errors) => assert!(!errors.is_empty()),
    }
}

/// GGUF files (mutations of the tiny test models) through the project's
/// loader, exactly as the worker loads a model: header, tokenizer, the
/// vocabulary/embedding check, weights on every CPU backend, the chat
/// template; then one greedy token. Every file loads or is refused with an
/// error; nothing panics.
pub fn gguf_load(data: &[u8]) {
    let Ok(gguf) = GgufFile::from_bytes("fuzz.gguf", data.to_vec()) else {
        return;
    };
    for kind in ["ndarray", "candle", "cpu"] {
        let choice = BackendChoice::new(
            kind,
            BackendOptions {
                device: "cpu".into(),
                threads: Some(1),
            },
        );
        // A small context keeps each run fast; the file's own is checked too.
        for context in [Some(8), None] {
            let options = LoadOptions { context, slots: 1 };
            let Ok(mut loaded) = load_gguf(&gguf, &choice, &options, &mut |_, _| {}) else {
                continue;
            };
            if let Some(source) = loaded.chat_template.take() {
                let _ = ChatTemplate::new(source);
            }
            let Ok(ids) = loaded.tokenizer.encode("Hi", true, true) else {
                continue;
            };
            let params = GenerateParams {
                max_tokens: 1,
                sampling: SamplingParams {
                    temperature: 0.0,
                    ..SamplingParams::default()
                },
                stop: vec![],
                ignore_eos: true,
                keep_prompt_logits: false,
            };
            let _ = loaded
                .model
                .run(&loaded.tokenizer, &ids, &params, &mut |_| {
                    ControlFlow::Continue(())
                });
        }
    }
}
