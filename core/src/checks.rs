//! Shape checks every backend runs before a kernel, so that a bad call is a
//! [`BackendError::Shape`] with the same message on every backend (and
//! never an out-of-bounds access or a panic inside a kernel).
//!
//! Dimensions are `(rows, cols)` as returned by `Backend::dims`/`weight_dims`.

use crate::{AttentionShape, BackendError, Result, SeqSpan};

type Dims = (usize, usize);

fn fail<T>(op: &'static str, detail: String) -> Result<T> {
    Err(BackendError::shape(op, detail))
}

/// `start + len <= limit`, without overflow for absurd arguments.
fn fits(start: usize, len: usize, limit: usize) -> bool {
    start.checked_add(len).is_some_and(|end| end <= limit)
}

pub fn upload(values: usize, rows: usize, cols: usize) -> Result<()> {
    if rows.checked_mul(cols) != Some(values) {
        return fail(
            "upload",
            format!("{values} values cannot form [{rows}, {cols}]"),
        );
    }
    Ok(())
}

pub fn same(op: &'static str, a: Dims, b: Dims) -> Result<()> {
    if a != b {
        return fail(op, format!("operands differ: {a:?} vs {b:?}"));
    }
    Ok(())
}

pub fn heads(op: &'static str, x: Dims, n_heads: usize, head_dim: usize) -> Result<()> {
    if x.1 != n_heads * head_dim {
        return fail(
            op,
            format!(
                "rows of {} values, expected {n_heads} heads x {head_dim}",
                x.1
            ),
        );
    }
    Ok(())
}

pub fn rms_norm(x: Dims, weight: Dims) -> Result<()> {
    if weight != (1, x.1) {
        return fail(
            "rms_norm",
            format!("weight {weight:?} for rows of {} values", x.1),
        );
    }
    Ok(())
}

pub fn matmul(x: Dims, w: Dims) -> Result<()> {
    if x.1 != w.1 {
        return fail("matmul", format!("x is {x:?}, weight is {w:?} ([out, in])"));
    }
    Ok(())
}

pub fn rope(
    x: Dims,
    n_heads: usize,
    head_dim: usize,
    pos0: usize,
    cos: Dims,
    sin: Dims,
) -> Result<()> {
    heads("rope", x, n_heads, head_dim)?;
    if cos != sin || cos.1 == 0 || 2 * cos.1 > head_dim || !head_dim.is_multiple_of(2) {
        return fail(
            "rope",
            format!("cos {cos:?} / sin {sin:?} tables do not fit heads of {head_dim}"),
        );
    }
    if !fits(pos0, x.0, cos.0) {
        return fail(
            "rope",
            format!(
                "position {} is past the {} positions of the tables",
                pos0.saturating_add(x.0).saturating_sub(1),
                cos.0
            ),
        );
    }
    Ok(())
}

pub fn embedding(ids: &[u32], table: Dims) -> Result<()> {
    if let Some(&id) = ids.iter().find(|&&id| id as usize >= table.0) {
        return fail(
            "embedding",
            format!("token id {id} is outside the vocabulary of {}", table.0),
        );
    }
    Ok(())
}

pub fn rows(x: Dims, start: usize, len: usize) -> Result<()> {
    if !fits(start, len, x.0) {
        return fail("rows", format!("rows {start}..+{len} of {}", x.0));
    }
    Ok(())
}

pub fn kv_append(cache: Dims, k: Dims, v: Dims, pos0: usize) -> Result<()> {
    same("kv_append", k, v)?;
    if k.1 != cache.1 || !fits(pos0, k.0, cache.0) {
        return fail(
            "kv_append",
            format!("{k:?} at position {pos0} into a cache of {cache:?}"),
        );
    }
    Ok(())
}

/// Head grouping, cache width and capacity for `seq` new rows at `pos0`.
pub fn attention(
    op: &'static str,
    seq: usize,
    cache: Dims,
    pos0: usize,
    shape: AttentionShape,
) -> Result<()> {
    if shape.n_kv_heads == 0 || !shape.n_heads.is_multiple_of(shape.n_kv_heads) {
        return fail(
            op,
            format!(
                "{} query heads cannot be grouped over {} key/value heads",
                shape.n_heads, shape.n_kv_heads
            ),
        );
    }
    if cache.1 != shape.n_kv_heads * shape.head_dim {
        return fail(
            op,
            format!(
                "cache rows hold {} values, expected {} kv heads x {}",
                cache.1, shape.n_kv_heads, shape.head_dim
            ),
        );
    }
    if seq == 0 || !fits(pos0, seq, cache.0) {
        return fail(
            op,
            format!(
                "{seq} rows at position {pos0} do not fit the cache capacity {}",
                cache.0
            ),
        );
    }
    Ok(())
}

pub fn attention_scores(q: Dims, cache: Dims, pos0: usize, shape: AttentionShape) -> Result<()> {
    attention("attention_scores", q.0, cache, pos0, shape)?;
    heads("attention_scores", q, shape.n_heads, shape.head_dim)
}

/// Returns the number of query rows the probabilities stand for.
pub fn attention_weighted_sum(
    probs: Dims,
    cache: Dims,
    pos0: usize,
    shape: AttentionShape,
) -> Result<usize> {
    let seq = probs.0 / shape.n_heads.max(1);
    attention("attention_weighted_sum", seq, cache, pos0, shape)?;
    if probs != (shape.n_heads * seq, pos0 + seq) {
        // (pos0 + seq cannot overflow: `attention` checked it fits the cache.)
        return fail(
            "attention_weighted_sum",
            format!(
                "probabilities {probs:?} do not match {} heads at position {pos0}",
                shape.n_heads
            ),
        );
    }
    Ok(seq)
}

/// The spans of a batch tile its `rows` in order: each starts where the
/// previous one ended, none is empty, the last ends at `rows`; and there is
/// one cache per span (`caches`). Returns nothing: the spans are then safe
/// to slice with.
pub fn spans(op: &'static str, rows: usize, spans: &[SeqSpan], caches: usize) -> Result<()> {
    if spans.len() != caches {
        return fail(op, format!("{} sequences but {caches} caches", spans.len()));
    }
    let mut next = 0usize;
    for (i, s) in spans.iter().enumerate() {
        if s.start != next || s.len == 0 {
            return fail(
                op,
                format!(
                    "sequence {i} covers rows {}..+{}, expected a non-empty span from row {next}",
                    s.start, s.len
                ),
            );
        }
        next = s.start.saturating_add(s.len);
    }
    if next != rows {
        return fail(
            op,
            format!("the sequences cover {next} rows of a batch of {rows}"),
        );
    }
    Ok(())
}
