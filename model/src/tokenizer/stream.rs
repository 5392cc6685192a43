//! Incremental decoding: text comes out as soon as its UTF-8 is complete.

use super::{Tokenizer, TokenizerError};

/// Streaming decoder: byte-exact decoding of partial UTF-8 across tokens.
///
/// The concatenation of everything [`push`](Self::push) and
/// [`finish`](Self::finish) return equals [`Tokenizer::decode`] of the same ids.
pub struct StreamDecoder<'a> {
    tok: &'a Tokenizer,
    special: bool,
    /// Bytes of a character whose encoding is not complete yet.
    pending: Vec<u8>,
}

impl<'a> StreamDecoder<'a> {
    /// A decoder rendering special tokens iff `special`.
    pub fn new(tok: &'a Tokenizer, special: bool) -> Self {
        StreamDecoder {
            tok,
            special,
            pending: Vec::new(),
        }
    }

    /// Feed one token; returns the text that is now complete (may be empty
    /// while a multi-byte character is split across tokens).
    pub fn push(&mut self, id: u32) -> Result<String, TokenizerError> {
        self.pending
            .extend_from_slice(self.tok.piece_bytes(id, self.special)?);
        let mut out = String::new();
        let mut rest: &[u8] = &self.pending;
        loop {
            match std::str::from_utf8(rest) {
                Ok(s) => {
                    out.push_str(s);
                    rest = &[];
                    break;
                }
                Err(e) => {
                    let (valid, after) = rest.split_at(e.valid_up_to());
                    // `valid` is valid UTF-8 by construction.
                    out.push_str(&String::from_utf8_lossy(valid));
                    match e.error_len() {
                        // Invalid bytes: replaced now, as a lossy decode would.
                        Some(n) => {
                            out.push('\u{FFFD}');
                            rest = &after[n..];
                        }
                        // Truncated character at the end: wait for more bytes.
                        None => {
                            rest = after;
                            break;
                        }
                    }
                }
            }
        }
        let keep = rest.len();
        let drop = self.pending.len() - keep;
        self.pending.drain(..drop);
        Ok(out)
    }

    /// Flush: any incomplete trailing bytes become U+FFFD.
    pub fn finish(&mut self) -> String {
        let out = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        out
    }
}
