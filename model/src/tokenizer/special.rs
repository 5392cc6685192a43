//! Cutting raw text at special-token texts before tokenizing the rest.
//!
//! Like llama.cpp: special tokens are taken longest text first; every
//! occurrence of one in the remaining raw text becomes that token. Control
//! and unknown tokens are only matched when `parse_special` is set;
//! user-defined tokens are always matched.

use std::ops::Range;

use super::vocab::{attr, Vocab};

/// A piece of the input: raw text still to tokenize, or a special token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Fragment {
    Text(Range<usize>),
    Token(u32),
}

/// C `isspace` in the "C" locale.
fn is_c_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0B | 0x0C | b'\r')
}

/// Split `text` at the texts of `specials` (already sorted longest first).
pub(crate) fn partition(
    text: &str,
    specials: &[u32],
    vocab: &Vocab,
    parse_special: bool,
) -> Vec<Fragment> {
    let mut fragments = Vec::new();
    if text.is_empty() {
        return fragments;
    }
    fragments.push(Fragment::Text(0..text.len()));
    let bytes = text.as_bytes();

    for &id in specials {
        let a = vocab.attr(id);
        if !parse_special && a & (attr::CONTROL | attr::UNKNOWN) != 0 {
            continue;
        }
        let needle = vocab.texts[id as usize].as_str();
        // Cheap filter: most special tokens never occur in the text.
        if needle.is_empty() || !text.contains(needle) {
            continue;
        }

        let mut next = Vec::with_capacity(fragments.len() + 2);
        for frag in fragments {
            let Fragment::Text(range) = frag else {
                next.push(frag);
                continue;
            };
            let (mut start, end) = (range.start, range.end);
            while let Some(found) = text[start..end].find(needle) {
                let m = start + found;
                let mut left_end = m;
                if a & attr::LSTRIP != 0 {
                    while left_end > start && is_c_space(bytes[left_end - 1]) {
                        left_end -= 1;
                    }
                }
                if left_end > start {
                    next.push(Fragment::Text(start..left_end));
                }
                next.push(Fragment::Token(id));
                start = m + needle.len();
                if a & attr::RSTRIP != 0 {
                    while start < end && is_c_space(bytes[start]) {
                        start += 1;
                    }
                }
            }
            if start < end {
                next.push(Fragment::Text(start..end));
            }
        }
        fragments = next;
    }
    fragments
}
