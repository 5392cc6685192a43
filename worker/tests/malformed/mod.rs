//! The malformed-model corpus: broken variants of a tiny test model, each
//! with the words its load error must contain. Generated at test time
//! (`worker/tests/malformed_models.rs`); `scripts/malformed-corpus.sh`
//! writes the same files to a folder (`worker/examples/malformed_corpus.rs`).

#![allow(dead_code)]

pub mod gguf_writer;

use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file::Value;
use gguf_writer::GgufModel;

/// One broken file and what its error must say.
pub struct Case {
    pub name: String,
    pub bytes: Vec<u8>,
    /// Substrings the error message must contain (what was wrong, and where).
    pub expect: Vec<&'static str>,
}

/// 2^40: an element count no test machine could allocate.
pub const HUGE: u64 = 1 << 40;

/// The model the corpus is made from (Q8_0 matrices, untied output).
pub fn base_model() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/models/tiny-llama2-q8_0.gguf")
}

fn case(name: &str, model: &GgufModel, expect: &[&'static str]) -> Case {
    Case {
        name: name.to_string(),
        bytes: model.to_bytes(),
        expect: expect.to_vec(),
    }
}

fn edited(base: &GgufModel, edit: impl FnOnce(&mut GgufModel)) -> GgufModel {
    let mut m = base.clone();
    edit(&mut m);
    m
}

/// Every case, built from [`base_model`].
pub fn cases() -> Vec<Case> {
    let base = GgufModel::read(&base_model());
    let good = base.to_bytes();
    let mut out = Vec::new();

    // Truncation: in the magic, the fixed header, the metadata, the tensor
    // infos, and the tensor data (the last at one byte short of the end).
    let header_end = tensor_data_start(&good);
    for (label, at, expect) in [
        ("empty", 0, &["not the GGUF magic"][..]),
        ("in-magic", 3, &["not the GGUF magic"]),
        ("in-counts", 12, &["header is truncated"]),
        ("in-metadata", 200, &["header is truncated"]),
        ("in-tensor-infos", header_end - 40, &["header is truncated"]),
        (
            "in-tensor-data",
            (header_end + good.len()) / 2,
            &["truncated file"],
        ),
        (
            "last-byte",
            good.len() - 1,
            &["token_embd.weight", "truncated file"],
        ),
    ] {
        out.push(Case {
            name: format!("truncated-{label}"),
            bytes: good[..at].to_vec(),
            expect: expect.to_vec(),
        });
    }

    out.push(case(
        "wrong-magic",
        &edited(&base, |m| m.magic = *b"GGML"),
        &["not the GGUF magic"],
    ));
    for v in [0u32, 4, 0xffff_ffff] {
        out.push(case(
            &format!("wrong-version-{v}"),
            &edited(&base, |m| m.version = v),
            &["GGUF version", "1 to 3"],
        ));
    }

    // Counts and lengths claimed far past the file's size.
    out.push(case(
        "tensor-count-2^40",
        &edited(&base, |m| m.tensor_count_override = Some(HUGE)),
        &["tensor_count 1099511627776"],
    ));
    out.push(case(
        "metadata-count-2^40",
        &edited(&base, |m| m.kv_count_override = Some(HUGE)),
        &["metadata_kv_count 1099511627776"],
    ));

    out.push(case(
        "tensor-offset-past-end",
        &edited(&base, |m| {
            m.tensor_mut("blk.0.attn_q.weight").offset_override = Some(HUGE)
        }),
        &["blk.0.attn_q.weight", "file has"],
    ));
    out.push(case(
        "tensor-offset-u64-max",
        &edited(&base, |m| {
            m.tensor_mut("blk.1.ffn_down.weight").offset_override = Some(u64::MAX)
        }),
        &["blk.1.ffn_down.weight", "offset"],
    ));

    // Absurd dimensions, consistent with the metadata so that only the
    // size check can refuse them: 2^40 feed-forward rows.
    out.push(case(
        "feed-forward-2^40",
        &edited(&base, |m| {
            m.set_meta("llama.feed_forward_length", Value::U64(HUGE));
            for l in 0..2 {
                m.tensor_mut(&format!("blk.{l}.ffn_gate.weight")).dims[1] = HUGE;
                m.tensor_mut(&format!("blk.{l}.ffn_up.weight")).dims[1] = HUGE;
                m.tensor_mut(&format!("blk.{l}.ffn_down.weight")).dims[0] = HUGE;
            }
        }),
        &["blk.0.ffn_gate.weight", "file has"],
    ));
    out.push(case(
        "dims-overflow",
        &edited(&base, |m| {
            m.tensor_mut("output_norm.weight").dims = vec![HUGE, HUGE, HUGE];
        }),
        &["output_norm.weight", "shape"],
    ));
    out.push(case(
        "block-count-2^40",
        &edited(&base, |m| m.set_meta("llama.block_count", Value::U64(HUGE))),
        &["llama.block_count", "1099511627776 blocks", "blk.2"],
    ));
    out.push(case(
        "embedding-2^40",
        &edited(&base, |m| {
            m.set_meta("llama.embedding_length", Value::U64(HUGE));
        }),
        &["token_embd.weight", "does not match the metadata"],
    ));
    // Shapes that disagree with the metadata.
    out.push(case(
        "shape-mismatch-attn-q",
        &edited(&base, |m| {
            let t = m.tensor_mut("blk.0.attn_q.weight");
            t.dims = vec![t.dims[0], t.dims[1] / 2];
            t.data.truncate(t.data.len() / 2);
        }),
        &["blk.0.attn_q.weight", "does not match the metadata"],
    ));
    out.push(case(
        "shape-mismatch-norm",
        &edited(&base, |m| {
            m.tensor_mut("blk.1.ffn_norm.weight").dims = vec![32, 2]
        }),
        &["blk.1.ffn_norm.weight", "does not match the metadata"],
    ));

    // Missing required metadata and tensors.
    for (key, expect) in [
        (
            "general.architecture",
            &["general.architecture", "missing"][..],
        ),
        ("llama.block_count", &["llama.block_count", "missing"]),
        (
            "llama.embedding_length",
            &["llama.embedding_length", "missing"],
        ),
        (
            "llama.attention.layer_norm_rms_epsilon",
            &["llama.attention.layer_norm_rms_epsilon", "missing"],
        ),
        ("tokenizer.ggml.tokens", &["tokenizer.ggml.tokens"]),
        ("tokenizer.ggml.model", &["tokenizer.ggml.model"]),
    ] {
        out.push(case(
            &format!("missing-{key}"),
            &edited(&base, |m| m.remove_meta(key)),
            expect,
        ));
    }
    out.push(case(
        "missing-tensor",
        &edited(&base, |m| {
            m.tensors.retain(|t| t.name != "blk.1.attn_v.weight")
        }),
        &["blk.1.attn_v.weight", "missing"],
    ));
    out.push(case(
        "wrong-metadata-type",
        &edited(&base, |m| {
            m.set_meta("llama.block_count", Value::String("two".into()))
        }),
        &["llama.block_count", "expected an integer"],
    ));

    // Tensor types: unknown to GGUF, and known but not runnable.
    out.push(case(
        "unknown-tensor-type",
        &edited(&base, |m| m.tensor_mut("blk.0.attn_k.weight").dtype = 99),
        &["blk.0.attn_k.weight", "type code 99"],
    ));
    out.push(case(
        "unsupported-tensor-type",
        &edited(&base, |m| m.tensor_mut("blk.0.attn_k.weight").dtype = 9),
        &["blk.0.attn_k.weight", "Q8_1"],
    ));

    out.push(case(
        "zero-layers",
        &edited(&base, |m| m.set_meta("llama.block_count", Value::U32(0))),
        &["llama.block_count", "at least 1"],
    ));

    // The vocabulary disagrees with the embedding's rows.
    out.push(case(
        "vocab-smaller-than-embedding",
        &edited(&base, |m| {
            for key in [
                "tokenizer.ggml.tokens",
                "tokenizer.ggml.scores",
                "tokenizer.ggml.token_type",
            ] {
                let meta = m.meta();
                let Some(Value::Array(items)) = meta.get(key).map(|v| (*v).clone()) else {
                    continue;
                };
                let short = items[..items.len() - 10].to_vec();
                m.set_meta(key, Value::Array(short));
            }
        }),
        &["502 tokens", "token_embd.weight"],
    ));
    out.push(case(
        "vocab-arrays-disagree",
        &edited(&base, |m| {
            let meta = m.meta();
            let Some(Value::Array(items)) = meta.get("tokenizer.ggml.scores").map(|v| (*v).clone())
            else {
                return;
            };
            m.set_meta("tokenizer.ggml.scores", Value::Array(items[..100].to_vec()));
        }),
        &["tokenizer.ggml.scores"],
    ));

    out.push(case(
        "zero-alignment",
        &edited(&base, |m| m.set_meta("general.alignment", Value::U32(0))),
        &["general.alignment", "power of two"],
    ));
    out.push(case(
        "heads-do-not-divide",
        &edited(&base, |m| {
            m.set_meta("llama.attention.head_count", Value::U32(3))
        }),
        &["llama.attention.head_count", "do not divide"],
    ));
    out
}

/// Where the tensor data of a well-formed file starts (header end, aligned).
fn tensor_data_start(bytes: &[u8]) -> usize {
    let content =
        candle_core::quantized::gguf_file::Content::read(&mut std::io::Cursor::new(bytes))
            .expect("base model parses");
    content.tensor_data_offset as usize
}
