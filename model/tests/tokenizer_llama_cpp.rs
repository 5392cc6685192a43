//! The tokenizer against llama.cpp: token ids from `testdata/fixtures/tokenize_*.json`
//! (generated with llama-cpp-python by `scripts/fixtures/make_fixtures.py`),
//! decoding round trips, streaming decode and error cases.

use std::path::PathBuf;
use std::time::Instant;

use rbees_model::tokenizer::{StreamDecoder, Tokenizer, TokenizerError, TokenizerKind};
use rbees_model::{GgufFile, Metadata, MetadataValue};
use serde::Deserialize;

const SMOLLM2_FIXTURE: &str = "testdata/fixtures/tokenize_smollm2.json";
const TINY_FIXTURE: &str = "testdata/fixtures/tokenize_tiny.json";
const TINY_MODEL: &str = "testdata/models/tiny-llama2-f32.gguf";
const SMOLLM2_MODEL: &str = "models/SmolLM2-135M-Instruct.Q4_1.gguf";

#[derive(Deserialize)]
struct Fixture {
    model: String,
    n_vocab: Option<usize>,
    bos_id: Option<i64>,
    eos_id: Option<i64>,
    eog_ids: Option<Vec<u32>>,
    add_bos: Option<bool>,
    add_eos: Option<bool>,
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    text: String,
    add_special: bool,
    parse_special: bool,
    ids: Vec<u32>,
}

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read_fixture(rel: &str) -> Fixture {
    let path = repo_root().join(rel);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read fixture {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("bad fixture {}: {e}", path.display()))
}

fn read_metadata(rel: &str) -> Metadata {
    let path = repo_root().join(rel);
    if !path.exists() {
        if rel.contains("SmolLM2") {
            panic!(
                "model file {} is missing: run `scripts/fetch-model.sh` to download it",
                path.display()
            );
        }
        panic!("model file {} is missing", path.display());
    }
    GgufFile::open(&path)
        .unwrap_or_else(|e| panic!("cannot read GGUF {}: {e}", path.display()))
        .metadata()
        .clone()
}

fn load(rel: &str) -> Tokenizer {
    Tokenizer::from_gguf_metadata(&read_metadata(rel))
        .unwrap_or_else(|e| panic!("tokenizer from {rel}: {e}"))
}

fn smollm2() -> Tokenizer {
    load(SMOLLM2_MODEL)
}

fn tiny() -> Tokenizer {
    load(TINY_MODEL)
}

/// Every fixture case must give exactly llama.cpp's ids; all failures are reported together.
fn check_fixture(rel: &str, expected_kind: TokenizerKind) {
    let fx = read_fixture(rel);
    let tok = load(&fx.model);
    assert_eq!(tok.kind(), expected_kind);

    let mut failures = Vec::new();
    if let Some(n) = fx.n_vocab {
        if tok.vocab_size() != n {
            failures.push(format!(
                "vocab_size: expected {n}, got {}",
                tok.vocab_size()
            ));
        }
    }
    let as_i64 = |id: Option<u32>| id.map_or(-1, i64::from);
    if let Some(bos) = fx.bos_id {
        if as_i64(tok.bos_id()) != bos {
            failures.push(format!("bos_id: expected {bos}, got {:?}", tok.bos_id()));
        }
    }
    if let Some(eos) = fx.eos_id {
        if as_i64(tok.eos_id()) != eos {
            failures.push(format!("eos_id: expected {eos}, got {:?}", tok.eos_id()));
        }
    }
    if let Some(eog) = &fx.eog_ids {
        let mine: Vec<u32> = (0..tok.vocab_size() as u32)
            .filter(|&id| tok.is_eog(id))
            .collect();
        if &mine != eog {
            failures.push(format!("eog ids: expected {eog:?}, got {mine:?}"));
        }
    }
    if let Some(add_bos) = fx.add_bos {
        if tok.add_bos() != add_bos {
            failures.push(format!(
                "add_bos: expected {add_bos}, got {}",
                tok.add_bos()
            ));
        }
    }
    if let Some(add_eos) = fx.add_eos {
        if tok.add_eos() != add_eos {
            failures.push(format!(
                "add_eos: expected {add_eos}, got {}",
                tok.add_eos()
            ));
        }
    }

    for case in &fx.cases {
        match tok.encode(&case.text, case.add_special, case.parse_special) {
            Ok(ids) if ids == case.ids => {}
            Ok(ids) => failures.push(format!(
                "text {:?} (add_special={}, parse_special={})\n  expected {:?}\n  got      {:?}",
                case.text, case.add_special, case.parse_special, case.ids, ids
            )),
            Err(e) => failures.push(format!("text {:?}: error {e}", case.text)),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} checks differ from llama.cpp ({rel}):\n{}",
        failures.len(),
        fx.cases.len(),
        failures.join("\n")
    );
}

#[test]
fn smollm2_ids_match_llama_cpp() {
    check_fixture(SMOLLM2_FIXTURE, TokenizerKind::Gpt2);
}

#[test]
fn tiny_spm_ids_match_llama_cpp() {
    check_fixture(TINY_FIXTURE, TokenizerKind::Llama);
}

#[test]
fn smollm2_round_trips_every_text() {
    let fx = read_fixture(SMOLLM2_FIXTURE);
    let tok = smollm2();
    let mut failures = Vec::new();
    for case in fx.cases.iter().filter(|c| !c.add_special) {
        let ids = tok.encode(&case.text, false, case.parse_special).unwrap();
        // Byte-level BPE loses nothing; parsed special tokens come back as
        // their text when rendered.
        let back = tok.decode(&ids, true).unwrap();
        if back != case.text {
            failures.push(format!("{:?} -> {:?}", case.text, back));
        }
        if !case.parse_special {
            let plain = tok.decode(&ids, false).unwrap();
            if plain != case.text {
                failures.push(format!("(special=false) {:?} -> {:?}", case.text, plain));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "round trip failures:\n{}",
        failures.join("\n")
    );
}

#[test]
fn tiny_spm_round_trips_modulo_leading_space() {
    let fx = read_fixture(TINY_FIXTURE);
    let tok = tiny();
    let mut failures = Vec::new();
    for case in fx
        .cases
        .iter()
        .filter(|c| !c.add_special && !c.parse_special)
    {
        let ids = tok.encode(&case.text, false, false).unwrap();
        let back = tok.decode(&ids, false).unwrap();
        // SentencePiece adds one space in front of the text (add_space_prefix).
        let expected = if case.text.is_empty() {
            String::new()
        } else {
            format!(" {}", case.text)
        };
        if back != expected {
            failures.push(format!("{:?} -> {:?}", case.text, back));
        }
    }
    assert!(
        failures.is_empty(),
        "round trip failures:\n{}",
        failures.join("\n")
    );
}

/// Stream `ids` one by one; returns the pieces `push` produced and the `finish` output.
fn stream(tok: &Tokenizer, ids: &[u32], special: bool) -> (Vec<String>, String) {
    let mut dec = StreamDecoder::new(tok, special);
    let pieces = ids.iter().map(|&id| dec.push(id).unwrap()).collect();
    (pieces, dec.finish())
}

#[test]
fn stream_decoder_joins_characters_split_across_byte_tokens() {
    let text = "emoji 🦙🐝 and CJK 中文字 done ✓";
    for (name, tok) in [("tiny", tiny()), ("smollm2", smollm2())] {
        let ids = tok.encode(text, false, false).unwrap();
        let (pieces, tail) = stream(&tok, &ids, false);
        let joined: String = pieces.concat() + &tail;
        let expected = tok.decode(&ids, false).unwrap();
        assert_eq!(
            joined, expected,
            "{name}: streamed text differs from decode"
        );
        assert!(joined.ends_with(text), "{name}: got {joined:?}");
        assert!(
            !joined.contains('\u{FFFD}'),
            "{name}: replacement char in {joined:?}"
        );
        assert!(tail.is_empty(), "{name}: finish() left {tail:?}");
        // Some token must end inside a multi-byte character, so its push yields nothing.
        assert!(
            pieces.iter().any(String::is_empty),
            "{name}: no character was split across tokens ({ids:?})"
        );
        for p in &pieces {
            assert!(
                !p.contains('\u{FFFD}'),
                "{name}: partial char leaked: {pieces:?}"
            );
        }
    }
}

#[test]
fn stream_decoder_finish_flushes_incomplete_sequence_as_replacement() {
    let tok = tiny();
    // The tiny vocabulary has no llama emoji: it becomes "▁" + 4 byte tokens.
    let ids = tok.encode("🦙", false, false).unwrap();
    assert!(ids.len() >= 4, "expected byte fallback, got {ids:?}");
    let (pieces, tail) = stream(&tok, &ids[..ids.len() - 1], false);
    assert!(pieces.iter().all(|p| !p.contains('\u{FFFD}')), "{pieces:?}");
    assert_eq!(tail, "\u{FFFD}");

    // Only the lead byte (0xF0): nothing until finish(), then one U+FFFD;
    // after that the decoder starts clean.
    let lead = ids[ids.len() - 4];
    assert_eq!(tok.token_text(lead), Some("<0xF0>"));
    let mut dec = StreamDecoder::new(&tok, false);
    assert_eq!(dec.push(lead).unwrap(), "");
    assert_eq!(dec.finish(), "\u{FFFD}");
    assert_eq!(dec.finish(), "");
    // A stray continuation byte is invalid at once, as in a lossy decode.
    assert_eq!(dec.push(ids[ids.len() - 1]).unwrap(), "\u{FFFD}");
    assert_eq!(dec.finish(), "");
}

#[test]
fn special_tokens_render_only_when_asked() {
    let tok = smollm2();
    let ids = tok
        .encode("<|im_start|>user\nHi<|im_end|>\n", false, true)
        .unwrap();
    let im_start = ids[0];
    assert_eq!(tok.token_text(im_start), Some("<|im_start|>"));
    assert_eq!(tok.token_bytes(im_start, true).unwrap(), b"<|im_start|>");
    assert!(tok.token_bytes(im_start, false).unwrap().is_empty());
    assert_eq!(tok.decode(&ids, false).unwrap(), "user\nHi\n");
    assert_eq!(
        tok.decode(&ids, true).unwrap(),
        "<|im_start|>user\nHi<|im_end|>\n"
    );
    // Without parse_special the markers are plain text.
    let plain = tok.encode("<|im_start|>user", false, false).unwrap();
    assert!(!plain.contains(&im_start));

    let im_end = tok.encode("<|im_end|>", false, true).unwrap();
    assert_eq!(im_end.len(), 1);
    assert!(tok.is_eog(im_end[0]));
    assert!(tok.is_eog(tok.eos_id().unwrap()));
    assert!(!tok.is_eog(im_start));
}

#[test]
fn spm_byte_and_space_pieces() {
    let tok = tiny();
    assert_eq!(tok.kind(), TokenizerKind::Llama);
    assert!(tok.add_bos());
    let bos = tok.bos_id().unwrap();
    assert_eq!(tok.token_text(bos), Some("<s>"));
    assert!(tok.token_bytes(bos, false).unwrap().is_empty());
    let nl = (0..tok.vocab_size() as u32)
        .find(|&id| tok.token_text(id) == Some("<0x0A>"))
        .unwrap();
    assert_eq!(tok.token_bytes(nl, false).unwrap(), b"\n");
    let ids = tok.encode("a b", false, false).unwrap();
    assert_eq!(tok.decode(&ids, false).unwrap(), " a b");
}

fn with(md: &Metadata, key: &str, value: Option<MetadataValue>) -> Metadata {
    let mut md = md.clone();
    match value {
        Some(v) => md.insert(key, v),
        None => md.remove(key),
    };
    md
}

#[test]
fn metadata_errors_are_reported() {
    let md = read_metadata(SMOLLM2_MODEL);

    let err = Tokenizer::from_gguf_metadata(&with(&md, "tokenizer.ggml.tokens", None)).unwrap_err();
    assert_eq!(
        err,
        TokenizerError::MissingKey("tokenizer.ggml.tokens".into())
    );
    assert!(err.to_string().contains("tokenizer.ggml.tokens"));

    let err = Tokenizer::from_gguf_metadata(&with(&md, "tokenizer.ggml.model", None)).unwrap_err();
    assert_eq!(
        err,
        TokenizerError::MissingKey("tokenizer.ggml.model".into())
    );

    let err = Tokenizer::from_gguf_metadata(&with(&md, "tokenizer.ggml.merges", None)).unwrap_err();
    assert_eq!(
        err,
        TokenizerError::MissingKey("tokenizer.ggml.merges".into())
    );

    let err = Tokenizer::from_gguf_metadata(&with(
        &md,
        "tokenizer.ggml.model",
        Some(MetadataValue::String("t5".into())),
    ))
    .unwrap_err();
    assert_eq!(err, TokenizerError::UnknownModel("t5".into()));
    assert!(err.to_string().contains("`t5`"), "{err}");

    let err = Tokenizer::from_gguf_metadata(&with(
        &md,
        "tokenizer.ggml.pre",
        Some(MetadataValue::String("no-such-pre".into())),
    ))
    .unwrap_err();
    assert!(
        matches!(&err, TokenizerError::UnknownPreTokenizer { name, .. } if name == "no-such-pre"),
        "{err:?}"
    );
    assert!(err.to_string().contains("no-such-pre"), "{err}");

    let err = Tokenizer::from_gguf_metadata(&with(
        &md,
        "tokenizer.ggml.tokens",
        Some(MetadataValue::String("oops".into())),
    ))
    .unwrap_err();
    assert!(
        matches!(&err, TokenizerError::WrongType { key, .. } if key == "tokenizer.ggml.tokens"),
        "{err:?}"
    );

    let err = Tokenizer::from_gguf_metadata(&with(
        &md,
        "tokenizer.ggml.add_bos_token",
        Some(MetadataValue::U32(1)),
    ))
    .unwrap_err();
    assert!(matches!(err, TokenizerError::WrongType { .. }), "{err:?}");

    let err = Tokenizer::from_gguf_metadata(&with(
        &md,
        "tokenizer.ggml.token_type",
        Some(MetadataValue::Array(vec![MetadataValue::I32(1); 3])),
    ))
    .unwrap_err();
    assert!(
        matches!(err, TokenizerError::ArrayTooShort { .. }),
        "{err:?}"
    );

    // No `pre` key: llama.cpp falls back to its default pre-tokenizer.
    assert!(Tokenizer::from_gguf_metadata(&with(&md, "tokenizer.ggml.pre", None)).is_ok());
}

#[test]
fn out_of_range_ids_are_errors() {
    let tok = smollm2();
    let bad = tok.vocab_size() as u32;
    let expected = TokenizerError::TokenIdOutOfRange {
        id: bad,
        vocab_size: tok.vocab_size(),
    };
    assert_eq!(tok.token_bytes(bad, true).unwrap_err(), expected);
    assert_eq!(tok.decode(&[1, bad], false).unwrap_err(), expected);
    assert_eq!(tok.token_text(bad), None);
    assert!(!tok.is_eog(bad));
    let mut dec = StreamDecoder::new(&tok, false);
    assert_eq!(
        dec.push(u32::MAX).unwrap_err().to_string(),
        format!(
            "token id {} is out of range (vocabulary size {})",
            u32::MAX,
            tok.vocab_size()
        )
    );
}

#[test]
fn encoding_10kb_takes_milliseconds() {
    let base = "The quick brown fox jumps over the lazy dog; 3.14159 × 2 = 6.28318. \
                Ça va? 中文字符 and emoji 🦙. It's 10:30, isn't it?\n";
    let text = base.repeat(10_240 / base.len() + 1);
    for (name, tok) in [("smollm2", smollm2()), ("tiny", tiny())] {
        let start = Instant::now();
        let ids = tok.encode(&text, true, true).unwrap();
        let elapsed = start.elapsed();
        eprintln!(
            "{name}: encoded {} bytes into {} tokens in {:?}",
            text.len(),
            ids.len(),
            elapsed
        );
        // Generous bound for unoptimised CI builds; release builds take ~ms.
        assert!(
            elapsed.as_secs_f64() < 2.0,
            "{name}: encode took {elapsed:?}"
        );
    }
}
