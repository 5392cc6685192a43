//! `rbees synth` files: valid GGUF that our loader, tokenizer and both CPU
//! backends accept, with the declared shapes, types and value spread.

mod common;

use common::*;
use rbees_core::{Backend, WeightDType};
use rbees_model::synth::{find_shape, tensor_specs, write_synthetic, SynthShape};
use rbees_model::{GgufFile, Llama, LlamaConfig, LoadOptions, MetadataValue, Tokenizer};

/// Small enough for a test, rows a multiple of 256 so K-quants fit.
const SMALL: SynthShape = SynthShape {
    name: "test-small",
    dim: 256,
    n_layers: 2,
    n_heads: 4,
    n_kv_heads: 2,
    ff_dim: 512,
    vocab: 600,
    context: 128,
    rope_base: 10_000.0,
    rms_eps: 1e-5,
    tied_embeddings: false,
};

fn dequantised(gguf: &GgufFile, name: &str) -> Vec<f32> {
    let w = gguf.weight(name).unwrap();
    let (rows, cols) = w.rows_cols();
    let q = candle_core::quantized::ggml_file::qtensor_from_ggml(
        w.dtype.to_candle(),
        w.data,
        vec![rows, cols],
        &candle_core::Device::Cpu,
    )
    .unwrap();
    q.dequantize(&candle_core::Device::Cpu)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

fn run_on<B: Backend>(backend: B, gguf: &GgufFile, tokenizer: &Tokenizer) -> Vec<u32> {
    let mut model = Llama::load(backend, gguf, &LoadOptions::default(), &mut |_, _| {}).unwrap();
    let prompt = tokenizer
        .encode("Hello, synthetic world!", true, true)
        .unwrap();
    greedy(&mut model, tokenizer, &prompt, 8).0
}

#[test]
fn synthetic_files_load_and_run_in_every_listed_type() {
    let dir = std::env::temp_dir().join(format!("rbees-synth-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for dtype in [
        WeightDType::F32,
        WeightDType::F16,
        WeightDType::Q4_0,
        WeightDType::Q4_1,
        WeightDType::Q5_0,
        WeightDType::Q8_0,
        WeightDType::Q4K,
        WeightDType::Q5K,
        WeightDType::Q6K,
    ] {
        let path = dir.join(format!("small-{dtype}.gguf"));
        let summary = write_synthetic(&SMALL, dtype, 7, &path).unwrap();
        assert_eq!(summary.tensors, tensor_specs(&SMALL, dtype).len());
        let gguf = GgufFile::open(&path).unwrap();

        let config = LlamaConfig::from_metadata(gguf.metadata()).unwrap();
        assert_eq!(
            (
                config.dim,
                config.n_layers,
                config.n_heads,
                config.n_kv_heads,
                config.ff_dim
            ),
            (256, 2, 4, 2, 512)
        );
        assert_eq!(
            gguf.tensor_meta("blk.1.ffn_down.weight").unwrap(),
            (dtype, &[256, 512][..])
        );
        assert_eq!(
            gguf.tensor_meta("blk.0.attn_k.weight").unwrap(),
            (dtype, &[128, 256][..])
        );
        assert_eq!(
            gguf.tensor_meta("output_norm.weight").unwrap().0,
            WeightDType::F32
        );

        // Norms are ones; matrices are centred with the intended spread.
        assert!(dequantised(&gguf, "blk.0.ffn_norm.weight")
            .iter()
            .all(|&v| v == 1.0));
        let w = dequantised(&gguf, "blk.1.ffn_up.weight");
        let mean = w.iter().sum::<f32>() / w.len() as f32;
        let std = (w.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / w.len() as f32).sqrt();
        assert!(mean.abs() < 2e-3, "{dtype}: mean {mean}");
        assert!((0.015..0.025).contains(&std), "{dtype}: std {std}");

        let tokenizer = Tokenizer::from_gguf_metadata(gguf.metadata()).unwrap();
        assert_eq!(tokenizer.vocab_size(), 600);
        let ids = tokenizer.encode("Hi there, {x}", false, false).unwrap();
        assert_eq!(tokenizer.decode(&ids, false).unwrap(), " Hi there, {x}");

        let reference = run_on(ndarray(), &gguf, &tokenizer);
        assert_eq!(reference.len(), 8);
        assert!(reference.iter().all(|&id| (id as usize) < 600));
        if dtype != WeightDType::F32 {
            // Random weights give small logit margins, so only the first
            // token is compared (candle rounds activations to Q8).
            assert_eq!(
                run_on(candle(), &gguf, &tokenizer)[0],
                reference[0],
                "{dtype}"
            );
        }
        // The cpu backend runs every type listed here.
        assert_eq!(
            run_on(cpu_backend(), &gguf, &tokenizer)[0],
            reference[0],
            "cpu {dtype}"
        );
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn the_same_seed_writes_the_same_file() {
    let dir = std::env::temp_dir().join(format!("rbees-synth-seed-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (a, b, c) = (dir.join("a.gguf"), dir.join("b.gguf"), dir.join("c.gguf"));
    write_synthetic(&SMALL, WeightDType::Q8_0, 1, &a).unwrap();
    write_synthetic(&SMALL, WeightDType::Q8_0, 1, &b).unwrap();
    write_synthetic(&SMALL, WeightDType::Q8_0, 2, &c).unwrap();
    let read = |p| std::fs::read(p).unwrap();
    assert_eq!(read(&a), read(&b));
    assert_ne!(read(&a), read(&c));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn named_shapes_have_the_published_metadata() {
    let shape = find_shape("llama2-7b").unwrap();
    let specs = tensor_specs(&shape, WeightDType::Q4_0);
    assert_eq!(specs.len(), 2 + 32 * 9 + 1);
    let smol = find_shape("smollm2-135m").unwrap();
    assert!(tensor_specs(&smol, WeightDType::Q4_1)
        .iter()
        .all(|s| s.name != "output.weight"));
    let names: Vec<_> = tensor_specs(&smol, WeightDType::Q4_1)
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert!(names.contains(&"blk.29.ffn_down.weight".to_string()));
    // The metadata keys the loader needs are all there.
    let dir = std::env::temp_dir().join(format!("rbees-synth-md-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("smol.gguf");
    write_synthetic(&smol, WeightDType::Q8_0, 0, &path).unwrap();
    let gguf = GgufFile::open(&path).unwrap();
    let config = LlamaConfig::from_metadata(gguf.metadata()).unwrap();
    assert_eq!(
        (
            config.dim,
            config.n_heads,
            config.n_kv_heads,
            config.train_context
        ),
        (576, 9, 3, 8192)
    );
    assert!(
        matches!(gguf.metadata().get("llama.rope.freq_base"), Some(MetadataValue::F32(b)) if *b == 100_000.0)
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// What a decode step reads, counted by hand from the shape: per layer the
/// seven matrices and two norms, then the output norm and head; the token
/// table counts only when the head is tied to it (then it is the head).
#[test]
fn decode_weight_bytes_count_every_tensor_a_step_reads() {
    let dir = std::env::temp_dir().join(format!("rbees-decode-bytes-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let q = WeightDType::Q8_0;
    let bytes = |rows: usize, cols: usize| q.storage_bytes(rows * cols).unwrap() as u64;
    let s = SMALL;
    let kv = s.dim / s.n_heads * s.n_kv_heads;
    let per_layer = 2 * bytes(s.dim, s.dim)
        + 2 * bytes(kv, s.dim)
        + 3 * bytes(s.ff_dim, s.dim)
        + 2 * 4 * s.dim as u64;
    let body = s.n_layers as u64 * per_layer + 4 * s.dim as u64;
    for tied in [false, true] {
        let shape = SynthShape {
            tied_embeddings: tied,
            ..SMALL
        };
        let path = dir.join(format!("tied-{tied}.gguf"));
        write_synthetic(&shape, q, 3, &path).unwrap();
        let gguf = GgufFile::open(&path).unwrap();
        assert_eq!(
            gguf.decode_weight_bytes(),
            body + bytes(s.vocab, s.dim),
            "tied {tied}"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
