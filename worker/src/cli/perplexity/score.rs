//! The arithmetic of `rbees perplexity`, as llama.cpp's `llama-perplexity`
//! does it (tools/perplexity/perplexity.cpp), so the same file, model and
//! context give comparable numbers: which tokens are scored, the
//! log-softmax with a double-precision sum, the error estimates and the
//! KL-divergence statistics.

/// Which tokens of the text are scored: `chunks` non-overlapping windows of
/// `n_ctx` tokens (the tail is dropped); in each, the logits at positions
/// `first..n_ctx-1` (`first = n_ctx / 2`) predict the next token, so the
/// first half only gives the second half its context.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    pub n_ctx: usize,
    pub chunks: usize,
}

impl Plan {
    /// The plan for `tokens` tokens: every whole chunk, at most `max_chunks`.
    /// Errors name the shortfall, as llama-perplexity does.
    pub fn new(tokens: usize, n_ctx: usize, max_chunks: Option<usize>) -> Result<Plan, String> {
        if n_ctx < 2 {
            return Err(format!("--ctx must be at least 2, got {n_ctx}"));
        }
        if tokens < 2 * n_ctx {
            return Err(format!(
                "the text is {tokens} tokens, but a context of {n_ctx} needs at least {} (two chunks' worth, as llama-perplexity asks); use a longer text or a smaller --ctx",
                2 * n_ctx
            ));
        }
        let all = tokens / n_ctx;
        let chunks = match max_chunks {
            Some(0) => return Err("--chunks must be at least 1".into()),
            Some(n) => n.min(all),
            None => all,
        };
        Ok(Plan { n_ctx, chunks })
    }

    /// The first position whose logits are scored.
    pub fn first(&self) -> usize {
        self.n_ctx / 2
    }

    /// Tokens scored per chunk.
    pub fn scored_per_chunk(&self) -> usize {
        self.n_ctx - 1 - self.first()
    }

    pub fn scored(&self) -> usize {
        self.chunks * self.scored_per_chunk()
    }
}

/// `(max, log Σ e^(l - max))` of a logit row: exponentials in f32, their
/// sum in f64, as llama-perplexity.
pub fn max_and_lse(logits: &[f32]) -> (f32, f64) {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = logits.iter().map(|&l| f64::from((l - max).exp())).sum();
    (max, sum.ln())
}

/// The negative log-likelihood of `target` under the softmax of `logits`.
pub fn nll(logits: &[f32], target: usize) -> f64 {
    let (max, lse) = max_and_lse(logits);
    lse - f64::from(logits[target] - max)
}

/// A mean with its standard error, from running sums (llama-perplexity's
/// `mean_and_uncertainty`: no error below 11 samples).
fn mean_and_error(sum: f64, sum2: f64, n: usize) -> (f64, f64) {
    if n == 0 {
        return (0.0, 0.0);
    }
    let n_f = n as f64;
    let mean = sum / n_f;
    let var = sum2 / n_f - mean * mean;
    let err = if var > 0.0 && n > 10 {
        (var / (n_f - 1.0)).sqrt()
    } else {
        0.0
    };
    (mean, err)
}

/// Running sums of per-token NLL.
#[derive(Debug, Clone, Copy, Default)]
pub struct NllSums {
    pub sum: f64,
    pub sum2: f64,
    pub count: usize,
}

impl NllSums {
    pub fn add(&mut self, nll: f64) {
        self.sum += nll;
        self.sum2 += nll * nll;
        self.count += 1;
    }

    /// Perplexity so far, `exp(mean NLL)`.
    pub fn ppl(&self) -> f64 {
        (self.sum / self.count.max(1) as f64).exp()
    }

    /// Perplexity and its error, `PPL · sqrt(var(NLL) / (N-1))`
    /// (llama-perplexity's "Final estimate").
    pub fn estimate(&self) -> (f64, f64) {
        let n = self.count as f64;
        let mean = self.sum / n.max(1.0);
        let var = self.sum2 / n.max(1.0) - mean * mean;
        let ppl = mean.exp();
        let err = if var > 0.0 && self.count > 1 {
            ppl * (var / (n - 1.0)).sqrt()
        } else {
            0.0
        };
        (ppl, err)
    }
}

/// One reference distribution: log-probabilities of every token, as a
/// `_logits_` file stores them (see [`super::logits_file`]).
pub trait LogProbs {
    fn log_prob(&self, token: usize) -> f32;
}

/// Per-token comparison of a run with a reference run, summed (the run's
/// own NLL sums are the caller's, given to [`KlSums::summary`]).
#[derive(Debug, Clone, Default)]
pub struct KlSums {
    pub base: NllSums,
    nll_cross: f64,
    kld: Vec<f64>,
    dp: Vec<f64>,
    same_top: usize,
}

/// Log-probabilities below this are left out of the KL sum: the reference
/// stores everything more than 16 nats below its top as one floor value.
const KLD_FLOOR: f32 = -16.0;

impl KlSums {
    /// Scores one row: `logits` of this run, `base` of the reference, and
    /// the `target` token that followed. Returns the run's NLL of `target`.
    pub fn add(&mut self, logits: &[f32], base: &dyn LogProbs, target: usize) -> f64 {
        let (max, lse) = max_and_lse(logits);
        let m = f64::from(max) + lse;
        // As `nll`, to the bit: a run scores the same with or without a reference.
        let nll_q = lse - f64::from(logits[target] - max);
        let nll_p = -f64::from(base.log_prob(target));
        self.base.add(nll_p);
        self.nll_cross += nll_q * nll_p;
        let mut kld = 0.0f64;
        let mut top_base = (0usize, f32::NEG_INFINITY);
        for (i, &l) in logits.iter().enumerate() {
            let lp = base.log_prob(i);
            if lp > top_base.1 {
                top_base = (i, lp);
            }
            if lp > KLD_FLOOR {
                kld += f64::from(lp.exp()) * (f64::from(lp) - (f64::from(l) - m));
            }
        }
        let top_q = first_max(logits);
        self.same_top += usize::from(top_q == top_base.0);
        self.kld.push(kld);
        self.dp.push((-nll_q).exp() - (-nll_p).exp());
        nll_q
    }

    pub fn count(&self) -> usize {
        self.kld.len()
    }

    /// The summary statistics of llama-perplexity's KL-divergence mode;
    /// `run` holds the NLL sums of the same rows under this run.
    pub fn summary(&self, run: &NllSums) -> KlSummary {
        let n = self.count();
        let nf = n as f64;
        let sum: f64 = self.kld.iter().sum();
        let sum2: f64 = self.kld.iter().map(|k| k * k).sum();
        let (kld_mean, kld_err) = mean_and_error(sum, sum2, n);
        let dp2: Vec<f64> = self.dp.iter().map(|d| d * d).collect();
        let (msd, msd_err) = mean_and_error(dp2.iter().sum(), dp2.iter().map(|d| d * d).sum(), n);
        let rms = msd.sqrt();
        let same = self.same_top as f64 / nf.max(1.0);
        let (q_mean, q_err) = mean_and_error(run.sum, run.sum2, n);
        let (p_mean, p_err) = mean_and_error(self.base.sum, self.base.sum2, n);
        let cov = if n < 10 {
            0.0
        } else {
            (self.nll_cross / nf - q_mean * p_mean) / (nf - 1.0)
        };
        let mut sorted = self.kld.clone();
        sorted.sort_by(f64::total_cmp);
        KlSummary {
            tokens: n,
            ppl_base: p_mean.exp(),
            ppl_base_err: p_mean.exp() * p_err,
            ln_ratio: q_mean - p_mean,
            ln_ratio_err: (q_err * q_err + p_err * p_err - 2.0 * cov).max(0.0).sqrt(),
            kld_mean,
            kld_err,
            kld_p99: percentile(&sorted, 0.99),
            kld_max: sorted.last().copied().unwrap_or(0.0),
            same_top: same,
            same_top_err: if n > 1 {
                (same * (1.0 - same) / (nf - 1.0)).sqrt()
            } else {
                0.0
            },
            rms_dp: rms,
            rms_dp_err: if rms > 0.0 { 0.5 / rms * msd_err } else { 0.0 },
        }
    }
}

/// The first index of the largest value (llama-perplexity's tie rule).
fn first_max(v: &[f32]) -> usize {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best
}

/// Linear interpolation between the two nearest ranks of sorted values.
pub fn percentile(sorted: &[f64], fraction: f64) -> f64 {
    let Some(&last) = sorted.last() else {
        return 0.0;
    };
    if fraction <= 0.0 {
        return sorted[0];
    }
    if fraction >= 1.0 {
        return last;
    }
    let p = fraction * (sorted.len() - 1) as f64;
    let i = p.floor() as usize;
    let frac = p - i as f64;
    let next = sorted[(i + 1).min(sorted.len() - 1)];
    (1.0 - frac) * sorted[i] + frac * next
}

/// What the comparison with the reference says, per backend.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct KlSummary {
    pub tokens: usize,
    pub ppl_base: f64,
    pub ppl_base_err: f64,
    /// Mean of ln(PPL(Q)/PPL(base)) with its error (correlation counted).
    pub ln_ratio: f64,
    pub ln_ratio_err: f64,
    pub kld_mean: f64,
    pub kld_err: f64,
    pub kld_p99: f64,
    pub kld_max: f64,
    /// Share of tokens whose most likely next token is the reference's.
    pub same_top: f64,
    pub same_top_err: f64,
    /// Root mean square of Δp, the change in the probability of the token
    /// that followed.
    pub rms_dp: f64,
    pub rms_dp_err: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Exact(Vec<f32>);

    impl LogProbs for Exact {
        fn log_prob(&self, token: usize) -> f32 {
            self.0[token]
        }
    }

    fn log_softmax(l: &[f32]) -> Vec<f32> {
        let (max, lse) = max_and_lse(l);
        l.iter()
            .map(|&x| (f64::from(x - max) - lse) as f32)
            .collect()
    }

    #[test]
    fn the_plan_scores_the_second_half_of_whole_chunks() {
        let p = Plan::new(1100, 512, None).unwrap();
        assert_eq!(
            (p.chunks, p.first(), p.scored_per_chunk(), p.scored()),
            (2, 256, 255, 510)
        );
        assert_eq!(Plan::new(5000, 512, Some(3)).unwrap().chunks, 3);
        assert_eq!(Plan::new(5000, 512, Some(30)).unwrap().chunks, 9);
        let e = Plan::new(1023, 512, None).unwrap_err();
        assert!(e.contains("1023 tokens") && e.contains("1024"), "{e}");
        assert!(Plan::new(0, 512, None).is_err());
        assert!(Plan::new(5000, 512, Some(0)).is_err());
        assert_eq!(Plan::new(4, 2, None).unwrap().scored_per_chunk(), 0);
    }

    #[test]
    fn uniform_logits_give_the_vocabulary_size() {
        // Every token equally likely: NLL = ln V exactly, no spread.
        let mut s = NllSums::default();
        for t in 0..40 {
            s.add(nll(&[0.5; 8], t % 8));
        }
        let (ppl, err) = s.estimate();
        assert!((ppl - 8.0).abs() < 1e-12, "{ppl}");
        assert_eq!(err, 0.0);
    }

    #[test]
    fn perplexity_and_its_error_in_closed_form() {
        // Two logit rows with known probabilities of the target:
        // p = e^2/(e^2+2) and 1/(e^2+2) for logits [2, 0, 0].
        let z = 2f64.exp() + 2.0;
        let a = nll(&[2.0, 0.0, 0.0], 0);
        let b = nll(&[2.0, 0.0, 0.0], 1);
        assert!((a - (z.ln() - 2.0)).abs() < 1e-6);
        assert!((b - z.ln()).abs() < 1e-6);
        let mut s = NllSums::default();
        s.add(a);
        s.add(b);
        let (ppl, err) = s.estimate();
        let mean = (a + b) / 2.0;
        assert!((ppl - mean.exp()).abs() < 1e-12);
        // var = ((a-b)/2)^2, error = ppl * sqrt(var / 1).
        assert!((err - ppl * ((a - b) / 2.0).abs()).abs() < 1e-9, "{err}");
    }

    #[test]
    fn kl_divergence_of_known_distributions() {
        let p = [1.0f32, 0.0, -1.0, 0.5];
        let q = [0.2f32, 0.3, -0.5, 0.1];
        let lp = log_softmax(&p);
        let lq = log_softmax(&q);
        let expected: f64 = lp
            .iter()
            .zip(&lq)
            .map(|(&a, &b)| f64::from(a.exp()) * f64::from(a - b))
            .sum();
        let mut s = KlSums::default();
        let nll_q = s.add(&q, &Exact(lp.clone()), 2);
        assert!((nll_q - nll(&q, 2)).abs() < 1e-12);
        assert!(
            (s.kld[0] - expected).abs() < 1e-6,
            "{} vs {expected}",
            s.kld[0]
        );
        assert_eq!(s.same_top, 0, "top 0 vs top 1");
        let dp = f64::from(lq[2].exp() - lp[2].exp());
        assert!((s.dp[0] - dp).abs() < 1e-6);
        // A run against itself: no divergence, same top, no Δp.
        let mut same = KlSums::default();
        let mut run = NllSums::default();
        for t in 0..20 {
            run.add(same.add(&p, &Exact(lp.clone()), t % 4));
        }
        let sum = same.summary(&run);
        assert!(
            sum.kld_mean.abs() < 1e-6 && sum.kld_max.abs() < 1e-6,
            "{sum:?}"
        );
        assert_eq!(sum.same_top, 1.0);
        assert!(sum.rms_dp < 1e-6);
        assert!(sum.ln_ratio.abs() < 1e-6);
    }

    #[test]
    fn percentiles_interpolate_between_ranks() {
        let v = [1.0, 2.0, 3.0, 4.0, 5.0];
        assert_eq!(percentile(&v, 0.5), 3.0);
        assert_eq!(percentile(&v, 0.99), 4.96);
        assert_eq!(percentile(&v, 1.0), 5.0);
        assert_eq!(percentile(&v, 0.0), 1.0);
        assert_eq!(percentile(&[], 0.5), 0.0);
    }
}
