//! Batched steps (continuous batching) against each sequence run alone.
//!
//! Several prompts of different lengths join at different steps, their
//! prompts are cut into chunks that share steps with the others' decode
//! tokens, and each samples greedily from its own logits. On `ndarray` and
//! `cpu` every row of every op is computed independently of the others, so
//! a sequence's ids must equal, exactly, the ids it gets alone through
//! `generate`; `candle` is held to the same rule (its quantised products
//! also round and multiply each activation row on its own).

mod common;

use common::{cpu_backend, greedy, ndarray, repo_file};
use rbees_core::Backend;
use rbees_model::sampler::argmax;
use rbees_model::{GgufFile, Llama, LoadOptions, ModelError, SeqChunk, Tokenizer};

const TINY_MODELS: [&str; 3] = [
    "testdata/models/tiny-llama2-f32.gguf",
    "testdata/models/tiny-llama2-q8_0.gguf",
    "testdata/models/tiny-llama2-q4_0-tied.gguf",
];

const PROMPTS: [&str; 8] = [
    "Once upon a time",
    "The capital of France is",
    "1, 2, 3, 4,",
    "def main():\n    print(",
    "A long prompt that is cut into several chunks so that it shares steps with the decode tokens of the others",
    "Hi",
    "Les mots français",
    "<s> special text and   spaces",
];

fn load<B: Backend>(backend: B, path: &str, slots: usize) -> (Llama<B>, Tokenizer) {
    let gguf = GgufFile::open(repo_file(path)).expect("model opens");
    let tokenizer = Tokenizer::from_gguf_metadata(gguf.metadata()).expect("tokenizer");
    let options = LoadOptions {
        context: Some(256),
        slots,
    };
    let model = Llama::load(backend, &gguf, &options, &mut |_, _| {}).expect("model loads");
    (model, tokenizer)
}

/// One sequence of the batched run.
struct Seq {
    prompt: Vec<u32>,
    join_at: usize,
    done: usize,
    ids: Vec<u32>,
}

/// Runs every prompt through batched steps of at most `budget` tokens:
/// sequence `i` joins at step `joins[i]` into slot `i`; decode tokens go
/// first, then prompt chunks oldest first. Returns each sequence's `n`
/// greedy ids.
fn run_batched<B: Backend>(
    model: &mut Llama<B>,
    prompts: &[Vec<u32>],
    joins: &[usize],
    n: usize,
    budget: usize,
) -> Vec<Vec<u32>> {
    let mut seqs: Vec<Seq> = prompts
        .iter()
        .zip(joins)
        .map(|(p, &j)| Seq {
            prompt: p.clone(),
            join_at: j,
            done: 0,
            ids: Vec::new(),
        })
        .collect();
    let mut step = 0;
    let mut mixed_steps = 0;
    while seqs.iter().any(|s| s.ids.len() < n) {
        let mut left = budget;
        let mut chunks = Vec::new();
        for (slot, s) in seqs.iter().enumerate() {
            if s.done == s.prompt.len() && s.ids.len() < n {
                let pos0 = s.prompt.len() + s.ids.len() - 1;
                chunks.push(SeqChunk {
                    slot,
                    pos0,
                    ids: &s.ids[s.ids.len() - 1..],
                    logits: 1,
                });
                left = left.saturating_sub(1);
            }
        }
        let decodes = chunks.len();
        for (slot, s) in seqs.iter().enumerate() {
            if s.join_at <= step && s.done < s.prompt.len() && left > 0 {
                let take = (s.prompt.len() - s.done).min(left);
                left -= take;
                chunks.push(SeqChunk {
                    slot,
                    pos0: s.done,
                    ids: &s.prompt[s.done..s.done + take],
                    logits: usize::from(s.done + take == s.prompt.len()),
                });
            }
        }
        if decodes > 0 && chunks.len() > decodes {
            mixed_steps += 1;
        }
        step += 1;
        if chunks.is_empty() {
            continue;
        }
        let logits = model.step(&chunks).expect("step runs");
        let written: Vec<(usize, usize)> = chunks.iter().map(|c| (c.slot, c.ids.len())).collect();
        for ((slot, len), l) in written.into_iter().zip(logits) {
            let s = &mut seqs[slot];
            if s.done < s.prompt.len() {
                s.done += len;
            }
            if let Some(l) = l {
                s.ids.push(argmax(&l));
            }
        }
    }
    assert!(
        mixed_steps > 0,
        "no step mixed prompt chunks with decode tokens"
    );
    seqs.into_iter().map(|s| s.ids).collect()
}

fn check_invariance<B: Backend>(make: impl Fn() -> B, path: &str) {
    let n = 12;
    let (mut batched, tokenizer) = load(make(), path, PROMPTS.len());
    let prompts: Vec<Vec<u32>> = PROMPTS
        .iter()
        .map(|p| tokenizer.encode(p, true, true).expect("tokenizes"))
        .collect();
    // Staggered joins, and a budget small enough to cut the long prompt.
    let joins = [0, 0, 1, 3, 2, 7, 9, 4];
    let together = run_batched(&mut batched, &prompts, &joins, n, 9);
    let (mut alone, _) = load(make(), path, 1);
    for (i, p) in prompts.iter().enumerate() {
        let (ids, _) = greedy(&mut alone, &tokenizer, p, n);
        assert_eq!(
            together[i],
            ids,
            "{path} on {}: prompt {i} ({:?}) batched vs alone",
            batched.backend().name(),
            PROMPTS[i]
        );
    }
}

#[test]
fn ndarray_batched_ids_equal_each_sequence_alone() {
    for path in TINY_MODELS {
        check_invariance(ndarray, path);
    }
}

#[test]
fn cpu_batched_ids_equal_each_sequence_alone() {
    for path in TINY_MODELS {
        check_invariance(cpu_backend, path);
    }
}

#[test]
fn candle_batched_ids_equal_each_sequence_alone() {
    for path in TINY_MODELS {
        check_invariance(common::candle, path);
    }
}

#[test]
fn cpu_batched_ids_equal_each_sequence_alone_on_smollm2() {
    check_invariance(cpu_backend, "models/SmolLM2-135M-Instruct.Q4_1.gguf");
}

#[test]
fn batched_logits_equal_single_sequence_logits_bit_for_bit() {
    // The last prompt logits of a sequence in a batch of three, on the
    // backends whose rows are independent.
    fn check<B: Backend>(b1: B, b2: B) {
        let path = "testdata/models/tiny-llama2-q8_0.gguf";
        let (mut batched, tokenizer) = load(b1, path, 3);
        let (mut alone, _) = load(b2, path, 1);
        let p: Vec<Vec<u32>> = ["Hello there", "One two three four five", "x"]
            .iter()
            .map(|t| tokenizer.encode(t, true, true).expect("tokenizes"))
            .collect();
        let chunks: Vec<SeqChunk<'_>> = p
            .iter()
            .enumerate()
            .map(|(slot, ids)| SeqChunk {
                slot,
                pos0: 0,
                ids,
                logits: 1,
            })
            .collect();
        let together = batched.step(&chunks).expect("step runs");
        for (i, ids) in p.iter().enumerate() {
            let single = alone.forward(ids, 0).expect("forward runs");
            let got = together[i].as_ref().expect("logits asked for");
            assert!(
                got.iter()
                    .zip(&single)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "sequence {i} on {}",
                batched.backend().name()
            );
        }
    }
    check(ndarray(), ndarray());
    check(cpu_backend(), cpu_backend());
}

#[test]
fn bad_batches_are_errors() {
    let (mut model, _) = load(ndarray(), "testdata/models/tiny-llama2-f32.gguf", 2);
    let chunk = |slot, pos0, ids| SeqChunk {
        slot,
        pos0,
        ids,
        logits: 1,
    };
    let ids = [1u32, 2];
    let cases: Vec<(Vec<SeqChunk<'_>>, &str)> = vec![
        (vec![], "no sequences"),
        (vec![chunk(2, 0, &ids)], "slot 2 does not exist"),
        (
            vec![chunk(0, 0, &ids), chunk(0, 2, &ids)],
            "slot 0 appears twice",
        ),
        (vec![chunk(1, 0, &[])], "empty"),
        (vec![chunk(1, 255, &ids)], "context holds 256"),
        (
            vec![chunk(0, 0, &[1]), chunk(1, 0, &[99999])],
            "outside the vocabulary",
        ),
    ];
    for (chunks, words) in cases {
        let e = model.step(&chunks).unwrap_err();
        assert!(e.to_string().contains(words), "{e} (expected '{words}')");
    }
    // A refused batch leaves the model usable.
    assert!(model.step(&[chunk(1, 0, &ids)]).is_ok());
    // Too many slots is a load error, not an allocation failure.
    let gguf = GgufFile::open(repo_file("testdata/models/tiny-llama2-f32.gguf")).expect("opens");
    let options = LoadOptions {
        context: Some(8),
        slots: rbees_model::MAX_SLOTS + 1,
    };
    match Llama::load(ndarray(), &gguf, &options, &mut |_, _| {}) {
        Err(ModelError::Context(why)) => assert!(why.contains("slots"), "{why}"),
        Err(e) => panic!("unexpected error: {e}"),
        Ok(_) => panic!("{} slots loaded", rbees_model::MAX_SLOTS + 1),
    }
}
