//! Named Llama shapes that `rbees synth` can write, taken from the published
//! configurations of the models they are named after.

/// Hyper-parameters of a Llama-architecture model.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SynthShape {
    pub name: &'static str,
    pub dim: usize,
    pub n_layers: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub ff_dim: usize,
    pub vocab: usize,
    pub context: usize,
    pub rope_base: f32,
    pub rms_eps: f32,
    /// No `output.weight`: logits reuse `token_embd.weight` (as SmolLM2 does).
    pub tied_embeddings: bool,
}

impl SynthShape {
    pub fn head_dim(&self) -> usize {
        self.dim / self.n_heads
    }

    pub fn kv_dim(&self) -> usize {
        self.n_kv_heads * self.head_dim()
    }

    /// Parameters of the model (embedding counted once when tied).
    pub fn parameters(&self) -> usize {
        let (d, kv, ff) = (self.dim, self.kv_dim(), self.ff_dim);
        let per_layer = 2 * d + 2 * d * d + 2 * kv * d + 3 * ff * d;
        let output = if self.tied_embeddings {
            0
        } else {
            self.vocab * d
        };
        self.vocab * d + self.n_layers * per_layer + d + output
    }
}

pub const SHAPES: [SynthShape; 3] = [
    SynthShape {
        name: "smollm2-135m",
        dim: 576,
        n_layers: 30,
        n_heads: 9,
        n_kv_heads: 3,
        ff_dim: 1536,
        vocab: 49152,
        context: 8192,
        rope_base: 100_000.0,
        rms_eps: 1e-5,
        tied_embeddings: true,
    },
    SynthShape {
        name: "tinyllama-1.1b",
        dim: 2048,
        n_layers: 22,
        n_heads: 32,
        n_kv_heads: 4,
        ff_dim: 5632,
        vocab: 32000,
        context: 2048,
        rope_base: 10_000.0,
        rms_eps: 1e-5,
        tied_embeddings: false,
    },
    SynthShape {
        name: "llama2-7b",
        dim: 4096,
        n_layers: 32,
        n_heads: 32,
        n_kv_heads: 32,
        ff_dim: 11008,
        vocab: 32000,
        context: 4096,
        rope_base: 10_000.0,
        rms_eps: 1e-5,
        tied_embeddings: false,
    },
];

/// The shape called `name`, if there is one.
pub fn find_shape(name: &str) -> Option<SynthShape> {
    SHAPES.into_iter().find(|s| s.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameter_counts_match_the_published_models() {
        // SmolLM2-135M: 134.5M; TinyLlama: 1.10B; Llama-2-7B: 6.74B.
        let p = |n| find_shape(n).unwrap().parameters() as f64 / 1e6;
        assert!(
            (p("smollm2-135m") - 134.5).abs() < 0.5,
            "{}",
            p("smollm2-135m")
        );
        assert!(
            (p("tinyllama-1.1b") - 1100.0).abs() < 5.0,
            "{}",
            p("tinyllama-1.1b")
        );
        assert!((p("llama2-7b") - 6738.0).abs() < 5.0, "{}", p("llama2-7b"));
    }
}
