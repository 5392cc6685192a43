//! Turning logits into the next token: llama.cpp's sampler chain order
//! (repetition penalty, top-k, top-p, min-p, temperature, draw).

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::error::{ModelError, Result};

/// Sampling settings. The defaults are llama.cpp's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SamplingParams {
    /// 0 means greedy (always the most likely token).
    pub temperature: f32,
    /// Keep the `top_k` most likely tokens; 0 disables.
    pub top_k: usize,
    /// Keep the smallest set whose probability reaches `top_p`; 1 disables.
    pub top_p: f32,
    /// Drop tokens less likely than `min_p` times the most likely one; 0 disables.
    pub min_p: f32,
    /// Divides positive (multiplies negative) logits of recent tokens; 1 disables.
    pub repeat_penalty: f32,
    /// How many recent tokens (prompt included) the penalty looks at.
    pub repeat_last_n: usize,
    /// Same seed, same settings, same model: same tokens.
    pub seed: u64,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams {
            temperature: 0.8,
            top_k: 40,
            top_p: 0.95,
            min_p: 0.05,
            repeat_penalty: 1.0,
            repeat_last_n: 64,
            seed: 0,
        }
    }
}

impl SamplingParams {
    /// Greedy decoding: the settings used to compare with other engines.
    pub fn greedy() -> Self {
        SamplingParams {
            temperature: 0.0,
            ..Default::default()
        }
    }

    /// Checks every field's range; the error names the field.
    pub fn validate(&self) -> Result<()> {
        let bad = |msg: String| Err(ModelError::Sampling(msg));
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            return bad(format!(
                "temperature must be >= 0, got {}",
                self.temperature
            ));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return bad(format!("top_p must be in (0, 1], got {}", self.top_p));
        }
        if !(0.0..=1.0).contains(&self.min_p) {
            return bad(format!("min_p must be in [0, 1], got {}", self.min_p));
        }
        if !(self.repeat_penalty.is_finite() && self.repeat_penalty > 0.0) {
            return bad(format!(
                "repeat_penalty must be > 0, got {}",
                self.repeat_penalty
            ));
        }
        Ok(())
    }
}

/// A sampler with its own random stream.
pub struct Sampler {
    params: SamplingParams,
    rng: StdRng,
}

impl Sampler {
    pub fn new(params: SamplingParams) -> Result<Self> {
        params.validate()?;
        let rng = StdRng::seed_from_u64(params.seed);
        Ok(Sampler { params, rng })
    }

    /// Picks the next token from `logits`, given the tokens so far.
    pub fn sample(&mut self, logits: &[f32], history: &[u32]) -> u32 {
        let mut logits = logits.to_vec();
        apply_repeat_penalty(&mut logits, history, &self.params);
        if self.params.temperature <= 0.0 {
            return argmax(&logits);
        }
        let mut candidates: Vec<(u32, f32)> = logits
            .iter()
            .enumerate()
            .filter(|(_, l)| !l.is_nan())
            .map(|(i, &l)| (i as u32, l))
            .collect();
        candidates.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        if self.params.top_k > 0 {
            candidates.truncate(self.params.top_k);
        }
        let probs = softmax(candidates.iter().map(|c| c.1));
        if self.params.top_p < 1.0 {
            let mut cumulative = 0.0;
            let keep = probs
                .iter()
                .position(|p| {
                    cumulative += p;
                    cumulative >= self.params.top_p
                })
                .map_or(candidates.len(), |i| i + 1);
            candidates.truncate(keep);
        }
        if self.params.min_p > 0.0 {
            if let Some(&(_, best)) = candidates.first() {
                let floor = best + self.params.min_p.ln();
                candidates.retain(|c| c.1 >= floor);
            }
        }
        let probs = softmax(candidates.iter().map(|c| c.1 / self.params.temperature));
        let draw: f32 = self.rng.random();
        let mut cumulative = 0.0;
        for (c, p) in candidates.iter().zip(&probs) {
            cumulative += p;
            if draw < cumulative {
                return c.0;
            }
        }
        candidates.last().map_or(0, |c| c.0)
    }
}

/// Index of the largest logit (the first one on ties).
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &l) in logits.iter().enumerate() {
        if l > logits[best] {
            best = i;
        }
    }
    best as u32
}

fn softmax(logits: impl Iterator<Item = f32> + Clone) -> Vec<f32> {
    let max = logits.clone().fold(f32::NEG_INFINITY, f32::max);
    let exps: Vec<f32> = logits.map(|l| (l - max).exp()).collect();
    let sum: f32 = exps.iter().sum();
    exps.into_iter().map(|e| e / sum).collect()
}

fn apply_repeat_penalty(logits: &mut [f32], history: &[u32], params: &SamplingParams) {
    if params.repeat_penalty == 1.0 || params.repeat_last_n == 0 {
        return;
    }
    let recent = &history[history.len().saturating_sub(params.repeat_last_n)..];
    let mut seen = std::collections::HashSet::new();
    for &id in recent {
        let Some(l) = logits.get_mut(id as usize) else {
            continue;
        };
        if seen.insert(id) {
            *l = if *l > 0.0 {
                *l / params.repeat_penalty
            } else {
                *l * params.repeat_penalty
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(f: impl FnOnce(&mut SamplingParams)) -> SamplingParams {
        let mut p = SamplingParams {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            repeat_penalty: 1.0,
            repeat_last_n: 64,
            seed: 7,
        };
        f(&mut p);
        p
    }

    fn histogram(params: SamplingParams, logits: &[f32], draws: usize) -> Vec<usize> {
        let mut s = Sampler::new(params).unwrap();
        let mut counts = vec![0; logits.len()];
        for _ in 0..draws {
            counts[s.sample(logits, &[]) as usize] += 1;
        }
        counts
    }

    #[test]
    fn greedy_takes_the_argmax_and_first_on_ties() {
        let mut s = Sampler::new(SamplingParams::greedy()).unwrap();
        assert_eq!(s.sample(&[0.1, 3.0, -1.0, 3.0], &[]), 1);
    }

    #[test]
    fn temperature_one_follows_the_softmax() {
        // ln(1), ln(2), ln(7): probabilities 0.1, 0.2, 0.7.
        let logits = [0.0f32, 2f32.ln(), 7f32.ln()];
        let counts = histogram(with(|_| {}), &logits, 20_000);
        let freq: Vec<f64> = counts.iter().map(|&c| c as f64 / 20_000.0).collect();
        for (f, p) in freq.iter().zip([0.1, 0.2, 0.7]) {
            assert!((f - p).abs() < 0.02, "{freq:?}");
        }
    }

    #[test]
    fn top_k_top_p_and_min_p_cut_the_tail() {
        let logits = [0.0f32, 2f32.ln(), 7f32.ln()];
        assert_eq!(histogram(with(|p| p.top_k = 1), &logits, 200), [0, 0, 200]);
        // 0.7 alone does not reach 0.8; 0.7 + 0.2 does.
        let c = histogram(with(|p| p.top_p = 0.8), &logits, 2000);
        assert_eq!(c[0], 0);
        assert!(c[1] > 0 && c[2] > 0);
        // 0.2 / 0.7 ≈ 0.29 survives min_p 0.25; 0.1 / 0.7 ≈ 0.14 does not.
        let c = histogram(with(|p| p.min_p = 0.25), &logits, 2000);
        assert_eq!(c[0], 0);
        assert!(c[1] > 0);
    }

    #[test]
    fn repeat_penalty_divides_positive_and_multiplies_negative_logits() {
        let mut logits = vec![2.0, -2.0, 1.0];
        apply_repeat_penalty(&mut logits, &[0, 1, 0], &with(|p| p.repeat_penalty = 2.0));
        assert_eq!(logits, vec![1.0, -4.0, 1.0]);
        // The penalty moves the greedy choice.
        let mut s = Sampler::new(SamplingParams {
            repeat_penalty: 4.0,
            ..SamplingParams::greedy()
        })
        .unwrap();
        assert_eq!(s.sample(&[2.0, 1.0], &[0]), 1);
    }

    #[test]
    fn same_seed_same_tokens_other_seed_other_tokens() {
        let logits: Vec<f32> = (0..50).map(|i| (i as f32 * 0.37).sin()).collect();
        let run = |seed| {
            let mut s = Sampler::new(with(|p| p.seed = seed)).unwrap();
            (0..64).map(|_| s.sample(&logits, &[])).collect::<Vec<_>>()
        };
        assert_eq!(run(1), run(1));
        assert_ne!(run(1), run(2));
    }

    #[test]
    fn invalid_settings_name_the_field() {
        let e = Sampler::new(with(|p| p.top_p = 0.0)).err().unwrap();
        assert!(e.to_string().contains("top_p"), "{e}");
        let e = Sampler::new(with(|p| p.temperature = -1.0)).err().unwrap();
        assert!(e.to_string().contains("temperature"), "{e}");
    }
}
