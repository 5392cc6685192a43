//! Reference logits on disk, in llama-perplexity's `--kl-divergence-base`
//! format, so a reference written by either tool is read by both:
//!
//! - `_logits_` (8 bytes), then `i32` n_ctx, n_vocab, n_chunk (little-endian);
//! - the `n_chunk × n_ctx` token ids (`i32`);
//! - one record per scored token, chunk after chunk: `f32` scale, `f32`
//!   min_log_prob, then `u16` q for every vocabulary entry (padded to an
//!   even count), where `log p = scale·q + min_log_prob`. The range is the
//!   top 16 nats; anything lower is stored as the floor.
//!
//! Two bytes per vocabulary entry per token: SmolLM2 (49152 entries) at a
//! context of 512 takes 25 MB per chunk.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::score::{max_and_lse, LogProbs};

const MAGIC: &[u8; 8] = b"_logits_";
const HEADER_BYTES: u64 = 8 + 12;
/// The range of log-probabilities kept below the top one.
const RANGE: f32 = 16.0;

/// `u16` values of one record: two floats, then the vocabulary padded to even.
fn record_u16s(n_vocab: usize) -> usize {
    2 * n_vocab.div_ceil(2) + 4
}

/// Bytes of a file for this many chunks (what `--kl-base` will write).
pub fn file_bytes(n_ctx: usize, n_vocab: usize, chunks: usize, scored_per_chunk: usize) -> u64 {
    HEADER_BYTES
        + 4 * (chunks * n_ctx) as u64
        + 2 * (record_u16s(n_vocab) * chunks * scored_per_chunk) as u64
}

/// One stored row of log-probabilities.
#[derive(Debug, Clone, Default)]
pub struct Record {
    scale: f32,
    min_log_prob: f32,
    q: Vec<u16>,
}

impl LogProbs for Record {
    fn log_prob(&self, token: usize) -> f32 {
        self.scale * f32::from(self.q[token]) + self.min_log_prob
    }
}

impl Record {
    /// Quantises a logit row as llama-perplexity does.
    pub fn from_logits(logits: &[f32]) -> Record {
        let (max, lse) = max_and_lse(logits);
        let lse = lse as f32;
        let min = logits
            .iter()
            .copied()
            .fold(f32::INFINITY, f32::min)
            .max(max - RANGE);
        let scale = (max - min) / 65535.0;
        let q = if scale != 0.0 {
            let inv = 1.0 / scale;
            logits
                .iter()
                .map(|&l| {
                    if l > min {
                        ((l - min) * inv).round_ties_even() as u16
                    } else {
                        0
                    }
                })
                .collect()
        } else {
            vec![0; logits.len()]
        };
        Record {
            scale,
            min_log_prob: min - max - lse,
            q,
        }
    }
}

/// Writes a reference file record by record.
pub struct Writer {
    out: BufWriter<File>,
    path: PathBuf,
    n_vocab: usize,
    bytes: u64,
}

impl Writer {
    /// Creates `path` with the header and the chunks' `tokens`.
    pub fn create(path: &Path, n_ctx: usize, n_vocab: usize, tokens: &[u32]) -> Result<Writer> {
        let chunks = tokens.len() / n_ctx;
        let file = File::create(path).with_context(|| {
            format!("cannot create the reference logits file {}", path.display())
        })?;
        let mut w = Writer {
            out: BufWriter::new(file),
            path: path.to_path_buf(),
            n_vocab,
            bytes: 0,
        };
        let int = |v: usize| -> Result<[u8; 4]> {
            Ok(i32::try_from(v)
                .context("a size past 2^31 does not fit the file format")?
                .to_le_bytes())
        };
        let mut head = MAGIC.to_vec();
        for v in [n_ctx, n_vocab, chunks] {
            head.extend(int(v)?);
        }
        for &t in tokens {
            head.extend(int(t as usize)?);
        }
        w.write(&head)?;
        Ok(w)
    }

    fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.out
            .write_all(bytes)
            .with_context(|| format!("cannot write {}", self.path.display()))?;
        self.bytes += bytes.len() as u64;
        Ok(())
    }

    /// Appends the record of one scored row.
    pub fn row(&mut self, logits: &[f32]) -> Result<()> {
        if logits.len() != self.n_vocab {
            bail!(
                "a logit row of {} entries for a vocabulary of {}",
                logits.len(),
                self.n_vocab
            );
        }
        let r = Record::from_logits(logits);
        let mut bytes = Vec::with_capacity(2 * record_u16s(self.n_vocab));
        bytes.extend(r.scale.to_le_bytes());
        bytes.extend(r.min_log_prob.to_le_bytes());
        for q in &r.q {
            bytes.extend(q.to_le_bytes());
        }
        if self.n_vocab % 2 == 1 {
            bytes.extend([0, 0]);
        }
        self.write(&bytes)
    }

    /// Flushes the file; its size in bytes.
    pub fn finish(mut self) -> Result<u64> {
        self.out
            .flush()
            .with_context(|| format!("cannot write {}", self.path.display()))?;
        Ok(self.bytes)
    }
}

/// Reads a reference file: the header and tokens at once, records one at a time.
pub struct Reader {
    input: BufReader<File>,
    path: PathBuf,
    pub n_ctx: usize,
    pub n_vocab: usize,
    pub chunks: usize,
    pub tokens: Vec<u32>,
    record: Record,
    buf: Vec<u8>,
}

impl Reader {
    pub fn open(path: &Path) -> Result<Reader> {
        let file = File::open(path)
            .with_context(|| format!("cannot open the reference logits file {}", path.display()))?;
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        let mut input = BufReader::new(file);
        let mut head = [0u8; HEADER_BYTES as usize];
        let bad = |what: &str| {
            anyhow::anyhow!(
                "{} is not a reference logits file ({what}); write one with --kl-base on a new path, or llama-perplexity --kl-divergence-base",
                path.display()
            )
        };
        input
            .read_exact(&mut head)
            .map_err(|_| bad("shorter than its header"))?;
        if &head[..8] != MAGIC {
            return Err(bad("no _logits_ magic"));
        }
        let field = |i: usize| -> Result<usize> {
            let v = i32::from_le_bytes([
                head[8 + 4 * i],
                head[9 + 4 * i],
                head[10 + 4 * i],
                head[11 + 4 * i],
            ]);
            usize::try_from(v)
                .ok()
                .filter(|&v| v > 0)
                .ok_or_else(|| bad("a header size is not positive"))
        };
        let (n_ctx, n_vocab, chunks) = (field(0)?, field(1)?, field(2)?);
        let scored = n_ctx.saturating_sub(1 + n_ctx / 2);
        let expected = file_bytes(n_ctx, n_vocab, chunks, scored);
        if size != expected {
            return Err(bad(&format!(
                "{size} bytes, but n_ctx {n_ctx}, vocabulary {n_vocab} and {chunks} chunks make {expected}"
            )));
        }
        let mut raw = vec![0u8; 4 * n_ctx * chunks];
        input
            .read_exact(&mut raw)
            .map_err(|_| bad("its tokens end early"))?;
        let mut tokens = Vec::with_capacity(n_ctx * chunks);
        for b in raw.chunks_exact(4) {
            let t = i32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            match u32::try_from(t) {
                Ok(t) if (t as usize) < n_vocab => tokens.push(t),
                _ => {
                    return Err(bad(&format!(
                        "token id {t} outside its vocabulary of {n_vocab}"
                    )))
                }
            }
        }
        Ok(Reader {
            input,
            path: path.to_path_buf(),
            n_ctx,
            n_vocab,
            chunks,
            tokens,
            record: Record::default(),
            buf: vec![0; 2 * record_u16s(n_vocab)],
        })
    }

    /// The next stored row.
    pub fn next_record(&mut self) -> Result<&Record> {
        self.input
            .read_exact(&mut self.buf)
            .with_context(|| format!("{} ends early", self.path.display()))?;
        let f = |i: usize| {
            f32::from_le_bytes([
                self.buf[i],
                self.buf[i + 1],
                self.buf[i + 2],
                self.buf[i + 3],
            ])
        };
        self.record.scale = f(0);
        self.record.min_log_prob = f(4);
        self.record.q.clear();
        self.record.q.extend(
            self.buf[8..8 + 2 * self.n_vocab]
                .chunks_exact(2)
                .map(|b| u16::from_le_bytes([b[0], b[1]])),
        );
        Ok(&self.record)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_written_file_reads_back_within_the_quantisation_step() {
        let path = std::env::temp_dir().join(format!("rbees-logits-{}.bin", std::process::id()));
        let vocab = 5;
        let tokens: Vec<u32> = (0..8).map(|i| i % 5).collect();
        let rows = [[3.0f32, 1.0, -2.0, 0.5, -30.0], [0.0, 0.0, 0.0, 0.0, 0.0]];
        let mut w = Writer::create(&path, 4, vocab, &tokens).unwrap();
        for r in &rows {
            w.row(r).unwrap();
        }
        let bytes = w.finish().unwrap();
        assert_eq!(bytes, file_bytes(4, vocab, 2, 1));
        assert_eq!(std::fs::metadata(&path).unwrap().len(), bytes);
        let mut r = Reader::open(&path).unwrap();
        assert_eq!((r.n_ctx, r.n_vocab, r.chunks), (4, 5, 2));
        assert_eq!(r.tokens, tokens);
        for row in &rows {
            let (max, lse) = max_and_lse(row);
            let rec = r.next_record().unwrap().clone();
            for (i, &l) in row.iter().enumerate() {
                let exact = (f64::from(l - max) - lse) as f32;
                let got = rec.log_prob(i);
                if exact > -16.0 {
                    assert!((got - exact).abs() < 2e-4, "{i}: {got} vs {exact}");
                } else {
                    assert!(got <= -15.99, "below the range: the floor, got {got}");
                }
            }
        }
        assert!(r.next_record().is_err(), "past the last record");
        std::fs::write(&path, b"_logits_\x04\0\0\0").unwrap();
        assert!(Reader::open(&path).is_err());
        std::fs::write(&path, b"not a logits file at all").unwrap();
        let e = Reader::open(&path).err().unwrap();
        assert!(format!("{e}").contains("no _logits_ magic"), "{e}");
        std::fs::remove_file(path).unwrap();
    }
}
