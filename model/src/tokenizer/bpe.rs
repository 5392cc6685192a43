//! Byte-level BPE (`tokenizer.ggml.model = "gpt2"`), as llama.cpp runs it.
//!
//! Each pre-tokenized word is byte-encoded (see `byte_unicode.rs`), cut
//! into characters, and the adjacent pair with the lowest merge rank is merged
//! (leftmost first on ties) until no ranked pair is left.

use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, HashMap};

use super::byte_unicode;
use super::pretokenize::PreTokenizer;
use super::vocab::Vocab;

/// Merge table over interned strings.
#[derive(Debug, Clone)]
pub(crate) struct BpeModel {
    pre: PreTokenizer,
    /// String -> string id, for every merge operand and merge result.
    interned: HashMap<String, u32>,
    /// (left sid, right sid) -> (rank, merged sid). The first rank of a pair wins.
    merges: HashMap<(u32, u32), (u32, u32)>,
    /// Token id of every interned string, if it is a token.
    sid_token: Vec<Option<u32>>,
}

impl BpeModel {
    /// Build from `"left right"` merge lines (rank = line index).
    pub(crate) fn new(pre: PreTokenizer, merge_lines: &[&str], vocab: &Vocab) -> Self {
        let mut interned: HashMap<String, u32> = HashMap::new();
        let mut intern = |s: &str| -> u32 {
            if let Some(&sid) = interned.get(s) {
                return sid;
            }
            let sid = interned.len() as u32;
            interned.insert(s.to_string(), sid);
            sid
        };
        let mut merges = HashMap::with_capacity(merge_lines.len());
        for (rank, line) in merge_lines.iter().enumerate() {
            // llama.cpp splits at the first space after the first byte; a line
            // without one yields an empty pair that can never match.
            let Some(pos) = line.bytes().skip(1).position(|b| b == b' ').map(|p| p + 1) else {
                continue;
            };
            let (left, right) = (&line[..pos], &line[pos + 1..]);
            let l = intern(left);
            let r = intern(right);
            let m = intern(&format!("{left}{right}"));
            merges.entry((l, r)).or_insert((rank as u32, m));
        }
        let mut sid_token = vec![None; interned.len()];
        for (s, &sid) in &interned {
            sid_token[sid as usize] = vocab.id(s);
        }
        BpeModel {
            pre,
            interned,
            merges,
            sid_token,
        }
    }

    /// Tokenize one raw-text fragment (no special tokens in it).
    pub(crate) fn tokenize(&self, vocab: &Vocab, text: &str, out: &mut Vec<u32>) {
        let chars: Vec<char> = text.chars().collect();
        let mut word = String::new();
        let mut raw = String::new();
        let mut session = Session::default();
        for (a, b) in self.pre.split(&chars) {
            raw.clear();
            raw.extend(&chars[a..b]);
            word.clear();
            byte_unicode::encode_bytes(&raw, &mut word);
            session.run(self, vocab, &word, out);
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Symbol {
    /// Byte offset into the word.
    start: usize,
    /// Byte length; 0 once merged into its left neighbour.
    len: usize,
    prev: Option<usize>,
    next: Option<usize>,
    sid: Option<u32>,
}

#[derive(Debug)]
struct Bigram {
    rank: u32,
    left: usize,
    right: usize,
    size: usize,
    merged: u32,
}

impl Ord for Bigram {
    fn cmp(&self, other: &Self) -> Ordering {
        // Lower rank first, then leftmost; wrapped in `Reverse` for the max-heap.
        (self.rank, self.left).cmp(&(other.rank, other.left))
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

/// Scratch buffers reused across words.
#[derive(Default)]
struct Session {
    symbols: Vec<Symbol>,
    queue: BinaryHeap<Reverse<Bigram>>,
}

impl Session {
    fn run(&mut self, model: &BpeModel, vocab: &Vocab, word: &str, out: &mut Vec<u32>) {
        self.symbols.clear();
        self.queue.clear();
        let n_chars = word.chars().count();
        for (i, (start, c)) in word.char_indices().enumerate() {
            let len = c.len_utf8();
            self.symbols.push(Symbol {
                start,
                len,
                prev: i.checked_sub(1),
                next: (i + 1 < n_chars).then_some(i + 1),
                sid: model.interned.get(&word[start..start + len]).copied(),
            });
        }
        for i in 1..self.symbols.len() {
            self.add_bigram(model, i - 1, i);
        }

        while let Some(Reverse(bigram)) = self.queue.pop() {
            let left = self.symbols[bigram.left];
            let right = self.symbols[bigram.right];
            // Skip pairs made stale by an earlier merge.
            if left.len == 0 || right.len == 0 || left.len + right.len != bigram.size {
                continue;
            }
            let l = &mut self.symbols[bigram.left];
            l.len += right.len;
            l.next = right.next;
            l.sid = Some(bigram.merged);
            self.symbols[bigram.right].len = 0;
            if let Some(nx) = right.next {
                self.symbols[nx].prev = Some(bigram.left);
            }
            if let Some(pv) = left.prev {
                self.add_bigram(model, pv, bigram.left);
            }
            if let Some(nx) = right.next {
                self.add_bigram(model, bigram.left, nx);
            }
        }

        let mut cur = (!self.symbols.is_empty()).then_some(0);
        while let Some(i) = cur {
            let sym = self.symbols[i];
            cur = sym.next;
            let text = &word[sym.start..sym.start + sym.len];
            let token = match sym.sid {
                Some(sid) => model.sid_token[sid as usize],
                None => vocab.id(text),
            };
            match token {
                Some(t) => out.push(t),
                None => {
                    // Not a token: llama.cpp tries each byte as a one-byte
                    // token and silently drops those that are not.
                    for b in text.bytes().filter(u8::is_ascii) {
                        let s = [b];
                        if let Some(t) = std::str::from_utf8(&s).ok().and_then(|s| vocab.id(s)) {
                            out.push(t);
                        }
                    }
                }
            }
        }
    }

    fn add_bigram(&mut self, model: &BpeModel, left: usize, right: usize) {
        let (l, r) = (self.symbols[left], self.symbols[right]);
        let (Some(ls), Some(rs)) = (l.sid, r.sid) else {
            return;
        };
        if let Some(&(rank, merged)) = model.merges.get(&(ls, rs)) {
            self.queue.push(Reverse(Bigram {
                rank,
                left,
                right,
                size: l.len + r.len,
                merged,
            }));
        }
    }
}
