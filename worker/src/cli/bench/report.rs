//! Summaries of `rbees bench` results: statistics, the markdown table and
//! the JSON document.

use std::fmt::Write as _;

use serde::Serialize;

use super::measure::Measured;

/// Median and range of the repetitions.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Spread {
    /// `None` for no samples.
    pub fn of(samples: &[f64]) -> Option<Spread> {
        if samples.is_empty() {
            return None;
        }
        let mut sorted = samples.to_vec();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        let median = if n % 2 == 1 {
            sorted[n / 2]
        } else {
            (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
        };
        Some(Spread {
            median,
            min: sorted[0],
            max: sorted[n - 1],
        })
    }
}

/// One backend's row: its samples and their summaries, or why it failed.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// As asked for (`NAME` or `NAME:DEVICE`).
    pub requested: String,
    #[serde(flatten)]
    pub measured: Option<Measured>,
    pub pp: Option<Spread>,
    pub tg: Option<Spread>,
    pub error: Option<String>,
}

impl Row {
    pub fn measured(requested: String, measured: Measured) -> Row {
        Row {
            pp: Spread::of(&measured.pp_tokens_per_s),
            tg: Spread::of(&measured.tg_tokens_per_s),
            requested,
            measured: Some(measured),
            error: None,
        }
    }

    pub fn failed(requested: String, error: String) -> Row {
        Row {
            requested,
            measured: None,
            pp: None,
            tg: None,
            error: Some(error),
        }
    }
}

/// The whole run, as written by `--json`.
#[derive(Debug, Serialize)]
pub struct Document {
    pub model: String,
    pub model_bytes: u64,
    /// Weight bytes one decode step reads (see `GgufFile::decode_weight_bytes`).
    pub weight_bytes_per_token: Option<u64>,
    pub threads: usize,
    pub pp: usize,
    pub tg: usize,
    pub reps: usize,
    /// The `--parallel` list (empty: the single-sequence tests ran).
    pub parallel: Vec<usize>,
    pub cpu: Option<String>,
    pub rbees_version: &'static str,
    pub unix_time: u64,
    pub results: Vec<Row>,
    /// With `--quality`: each backend's perplexity on the text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quality: Option<crate::cli::perplexity::Report>,
}

fn cell(spread: Option<Spread>) -> String {
    match spread {
        Some(s) => format!("{:.1} ({:.1}–{:.1})", s.median, s.min, s.max),
        None => "–".to_string(),
    }
}

/// The markdown table: medians with the range of the repetitions.
pub fn markdown(doc: &Document) -> String {
    if !doc.parallel.is_empty() {
        return parallel_markdown(doc);
    }
    let mut out = String::new();
    let _ = writeln!(
        out,
        "| backend | device | load (s) | pp{} tokens/s | tg{} tokens/s | peak RSS (MiB) |",
        doc.pp, doc.tg
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|");
    for row in &doc.results {
        match (&row.measured, &row.error) {
            (Some(m), _) => {
                let rss = m.peak_rss_bytes.map_or("–".to_string(), |b| {
                    format!("{:.0}", b as f64 / 1048576.0)
                });
                let _ = writeln!(
                    out,
                    "| {} | {} | {:.2} | {} | {} | {} |",
                    m.backend,
                    m.device,
                    m.load_ms / 1000.0,
                    cell(row.pp),
                    cell(row.tg),
                    rss
                );
            }
            (None, error) => {
                let why = error.as_deref().unwrap_or("no result").replace('\n', " ");
                let _ = writeln!(out, "| {} | – | – | error: {why} | – | – |", row.requested);
            }
        }
    }
    let _ = writeln!(
        out,
        "\nmedians (min–max) of {} repetitions after a warm-up; {} threads; model {} ({:.1} MiB)",
        doc.reps,
        doc.threads,
        doc.model,
        doc.model_bytes as f64 / 1048576.0
    );
    for line in bandwidth_bounds(doc) {
        let _ = writeln!(out, "{line}");
    }
    out
}

/// The `--parallel` table: per backend and number of sequences, aggregate
/// prompt and decode tokens/s, per-sequence decode tokens/s, and decode
/// relative to one sequence.
fn parallel_markdown(doc: &Document) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "| backend | sequences | pp{} tokens/s (all) | tg{} tokens/s (all) | tg tokens/s per sequence | tg vs 1 sequence |",
        doc.pp, doc.tg
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|");
    for row in &doc.results {
        let Some(m) = &row.measured else {
            let why = row
                .error
                .as_deref()
                .unwrap_or("no result")
                .replace('\n', " ");
            let _ = writeln!(out, "| {} | – | error: {why} | – | – | – |", row.requested);
            continue;
        };
        let single = m
            .parallel
            .iter()
            .find(|p| p.n == 1)
            .and_then(|p| Spread::of(&p.tg_tokens_per_s));
        for p in &m.parallel {
            let tg = Spread::of(&p.tg_tokens_per_s);
            let per_seq = tg.map(|s| Spread {
                median: s.median / p.n as f64,
                min: s.min / p.n as f64,
                max: s.max / p.n as f64,
            });
            let speedup = match (tg, single) {
                (Some(t), Some(one)) if one.median > 0.0 => {
                    format!("{:.2}x", t.median / one.median)
                }
                _ => "–".to_string(),
            };
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {speedup} |",
                m.backend,
                p.n,
                cell(Spread::of(&p.pp_tokens_per_s)),
                cell(tg),
                cell(per_seq),
            );
        }
    }
    let _ = writeln!(
        out,
        "\nmedians (min–max) of {} repetitions after a warm-up; {} threads; model {} ({:.1} MiB); {}",
        doc.reps,
        doc.threads,
        doc.model,
        doc.model_bytes as f64 / 1048576.0,
        doc.cpu.as_deref().unwrap_or("unknown CPU")
    );
    out
}

/// For rows with a measured copy bandwidth: the decode bound it sets
/// (bandwidth / weight bytes per token) and how close decode came to it.
fn bandwidth_bounds(doc: &Document) -> Vec<String> {
    let Some(weights) = doc.weight_bytes_per_token.filter(|&w| w > 0) else {
        return Vec::new();
    };
    doc.results
        .iter()
        .filter_map(|row| {
            let m = row.measured.as_ref()?;
            let bandwidth = m.copy_bytes_per_s?;
            let bound = bandwidth / weights as f64;
            let achieved = row.tg.map_or(String::new(), |tg| {
                format!("; tg{} median {:.1} = {:.0}% of it", doc.tg, tg.median, 100.0 * tg.median / bound)
            });
            Some(format!(
                "{} on {}: copy bandwidth {:.0} GB/s, {:.1} MiB of weights per token: bound {:.0} tokens/s{achieved}",
                m.backend,
                m.device,
                bandwidth / 1e9,
                weights as f64 / 1048576.0,
                bound
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_range() {
        assert_eq!(Spread::of(&[]), None);
        let s = Spread::of(&[3.0, 1.0, 2.0]).unwrap();
        assert_eq!((s.median, s.min, s.max), (2.0, 1.0, 3.0));
        assert_eq!(Spread::of(&[4.0, 1.0, 2.0, 3.0]).unwrap().median, 2.5);
    }

    #[test]
    fn the_table_shows_medians_ranges_and_errors() {
        let measured = Measured {
            backend: "ndarray".into(),
            device: "cpu".into(),
            load_ms: 460.0,
            pp_tokens_per_s: vec![330.0, 320.0, 340.0],
            tg_tokens_per_s: vec![13.7, 13.5, 13.9],
            peak_rss_bytes: Some(660 << 20),
            composed_ops: vec![],
            copy_bytes_per_s: None,
            parallel: vec![],
        };
        let doc = Document {
            model: "m.gguf".into(),
            model_bytes: 98 << 20,
            weight_bytes_per_token: Some(96 << 20),
            threads: 2,
            pp: 128,
            tg: 64,
            reps: 3,
            parallel: vec![],
            cpu: None,
            rbees_version: "0",
            unix_time: 0,
            results: vec![
                Row::measured("ndarray".into(), measured),
                Row::failed("candle:cuda:0".into(), "no GPU\nhere".into()),
            ],
            quality: None,
        };
        let table = markdown(&doc);
        assert!(
            table.contains("| pp128 tokens/s | tg64 tokens/s |"),
            "{table}"
        );
        assert!(
            table.contains(
                "| ndarray | cpu | 0.46 | 330.0 (320.0–340.0) | 13.7 (13.5–13.9) | 660 |"
            ),
            "{table}"
        );
        assert!(
            table.contains("| candle:cuda:0 | – | – | error: no GPU here |"),
            "{table}"
        );
    }

    #[test]
    fn a_measured_bandwidth_gives_the_decode_bound_and_the_share_reached() {
        let measured = Measured {
            backend: "cuda-kernels".into(),
            device: "cuda:0".into(),
            load_ms: 100.0,
            pp_tokens_per_s: vec![],
            tg_tokens_per_s: vec![953.67431640625],
            peak_rss_bytes: None,
            composed_ops: vec![],
            copy_bytes_per_s: Some(2e12),
            parallel: vec![],
        };
        let mut doc = Document {
            model: "m.gguf".into(),
            model_bytes: 1 << 30,
            weight_bytes_per_token: Some(1000 << 20),
            threads: 2,
            pp: 0,
            tg: 64,
            reps: 1,
            parallel: vec![],
            cpu: None,
            rbees_version: "0",
            unix_time: 0,
            results: vec![Row::measured("cuda-kernels:cuda:0".into(), measured)],
            quality: None,
        };
        // 2e12 B/s / 1000 MiB = 1907.3 tokens/s; 953.7 is half of it.
        assert_eq!(
            bandwidth_bounds(&doc),
            vec!["cuda-kernels on cuda:0: copy bandwidth 2000 GB/s, 1000.0 MiB of weights per token: bound 1907 tokens/s; tg64 median 953.7 = 50% of it".to_string()]
        );
        assert!(markdown(&doc).contains("bound 1907 tokens/s"));
        doc.weight_bytes_per_token = None;
        assert!(bandwidth_bounds(&doc).is_empty());
    }
}
