//! SentencePiece-style tokenization (`tokenizer.ggml.model = "llama"`), as
//! llama.cpp runs it: start from single characters, repeatedly merge the
//! adjacent pair whose concatenation is the highest-scoring vocabulary piece
//! (leftmost first on ties), then emit each final piece, or its bytes as
//! `<0xXX>` tokens when it is not in the vocabulary.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use super::vocab::Vocab;
use super::TokenizerError;

/// Byte-fallback token for every byte value.
#[derive(Debug, Clone)]
pub(crate) struct SpmModel {
    byte_tokens: Box<[Option<u32>; 256]>,
}

impl SpmModel {
    pub(crate) fn new(vocab: &Vocab) -> Self {
        let mut byte_tokens = [None; 256];
        for (b, slot) in byte_tokens.iter_mut().enumerate() {
            let b = b as u8;
            // `<0xXX>` first, then the byte itself as a one-byte token.
            *slot = vocab.id(&format!("<0x{b:02X}>")).or_else(|| {
                let s = [b];
                std::str::from_utf8(&s).ok().and_then(|s| vocab.id(s))
            });
        }
        SpmModel {
            byte_tokens: Box::new(byte_tokens),
        }
    }

    /// Tokenize `text`, whose spaces are already escaped as `▁`.
    pub(crate) fn tokenize(
        &self,
        vocab: &Vocab,
        text: &str,
        out: &mut Vec<u32>,
    ) -> Result<(), TokenizerError> {
        let n_chars = text.chars().count();
        let mut symbols: Vec<Symbol> = text
            .char_indices()
            .enumerate()
            .map(|(i, (start, c))| Symbol {
                start,
                len: c.len_utf8(),
                prev: i.checked_sub(1),
                next: (i + 1 < n_chars).then_some(i + 1),
            })
            .collect();

        let mut queue = BinaryHeap::new();
        for i in 1..symbols.len() {
            try_add_bigram(vocab, text, &symbols, &mut queue, i - 1, i);
        }

        while let Some(bigram) = queue.pop() {
            let left = symbols[bigram.left];
            let right = symbols[bigram.right];
            // Skip pairs made stale by an earlier merge.
            if left.len == 0 || right.len == 0 || left.len + right.len != bigram.size {
                continue;
            }
            symbols[bigram.left].len += right.len;
            symbols[bigram.left].next = right.next;
            symbols[bigram.right].len = 0;
            if let Some(nx) = right.next {
                symbols[nx].prev = Some(bigram.left);
            }
            if let Some(pv) = left.prev {
                try_add_bigram(vocab, text, &symbols, &mut queue, pv, bigram.left);
            }
            if let Some(nx) = right.next {
                try_add_bigram(vocab, text, &symbols, &mut queue, bigram.left, nx);
            }
        }

        // Every merged piece is a vocabulary token; only single characters
        // can be missing, and those fall back to their bytes.
        let mut cur = (!symbols.is_empty()).then_some(0);
        while let Some(i) = cur {
            let sym = symbols[i];
            cur = sym.next;
            let piece = &text[sym.start..sym.start + sym.len];
            match vocab.id(piece) {
                Some(t) => out.push(t),
                None => {
                    for b in piece.bytes() {
                        out.push(
                            self.byte_tokens[usize::from(b)]
                                .ok_or(TokenizerError::MissingByteToken(b))?,
                        );
                    }
                }
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy)]
struct Symbol {
    start: usize,
    /// Byte length; 0 once merged into its left neighbour.
    len: usize,
    prev: Option<usize>,
    next: Option<usize>,
}

#[derive(Debug)]
struct Bigram {
    score: f32,
    left: usize,
    right: usize,
    size: usize,
}

impl Ord for Bigram {
    fn cmp(&self, other: &Self) -> Ordering {
        // Max-heap: higher score first, then the leftmost pair.
        self.score
            .partial_cmp(&other.score)
            .unwrap_or(Ordering::Equal)
            .then_with(|| other.left.cmp(&self.left))
    }
}

impl PartialOrd for Bigram {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Bigram {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Bigram {}

fn try_add_bigram(
    vocab: &Vocab,
    text: &str,
    symbols: &[Symbol],
    queue: &mut BinaryHeap<Bigram>,
    left: usize,
    right: usize,
) {
    let (l, r) = (symbols[left], symbols[right]);
    let size = l.len + r.len;
    if let Some(id) = vocab.id(&text[l.start..l.start + size]) {
        queue.push(Bigram {
            score: vocab.scores[id as usize],
            left,
            right,
            size,
        });
    }
}
