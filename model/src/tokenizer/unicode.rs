//! Unicode code point classes used by the BPE pre-tokenizers.
//!
//! llama.cpp classifies code points with its own table generated from the
//! Unicode 15.1 character database: general category letter (`\p{L}`),
//! number (`\p{N}`), punctuation (`\p{P}`), plus the `White_Space` property.
//! Code points first assigned after 15.1 are "undefined" there. We build the
//! same classes from `regex-syntax`'s tables, restricted to code points whose
//! Unicode age is at most 15.1, so newer letters are not letters here either.

use std::sync::OnceLock;

use regex_syntax::hir::{Class, HirKind};

/// Unicode version llama.cpp's tables were generated from.
const AGE: &str = "V15_1";

/// Classification of one code point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct CharClass(u8);

impl CharClass {
    const LETTER: u8 = 1;
    const NUMBER: u8 = 2;
    const PUNCT: u8 = 4;
    const WHITESPACE: u8 = 8;

    pub(crate) fn is_letter(self) -> bool {
        self.0 & Self::LETTER != 0
    }
    pub(crate) fn is_number(self) -> bool {
        self.0 & Self::NUMBER != 0
    }
    pub(crate) fn is_punct(self) -> bool {
        self.0 & Self::PUNCT != 0
    }
    pub(crate) fn is_whitespace(self) -> bool {
        self.0 & Self::WHITESPACE != 0
    }
}

/// Sorted, non-overlapping inclusive code point ranges.
struct RangeSet(Vec<(u32, u32)>);

impl RangeSet {
    fn from_class(pattern: &str) -> Self {
        // The patterns are fixed literals, so parsing cannot fail at run time
        // unless the regex-syntax build lacks its Unicode tables; fall back to
        // an empty set rather than panicking.
        let ranges = regex_syntax::parse(pattern)
            .ok()
            .and_then(|hir| match hir.kind() {
                HirKind::Class(Class::Unicode(cls)) => Some(
                    cls.ranges()
                        .iter()
                        .map(|r| (r.start() as u32, r.end() as u32))
                        .collect(),
                ),
                _ => None,
            })
            .unwrap_or_default();
        RangeSet(ranges)
    }

    fn contains(&self, cp: u32) -> bool {
        self.0
            .binary_search_by(|&(lo, hi)| {
                if hi < cp {
                    std::cmp::Ordering::Less
                } else if lo > cp {
                    std::cmp::Ordering::Greater
                } else {
                    std::cmp::Ordering::Equal
                }
            })
            .is_ok()
    }
}

struct Tables {
    ascii: [CharClass; 128],
    letter: RangeSet,
    number: RangeSet,
    punct: RangeSet,
}

fn tables() -> &'static Tables {
    static TABLES: OnceLock<Tables> = OnceLock::new();
    TABLES.get_or_init(|| {
        let letter = RangeSet::from_class(&format!(r"[\p{{L}}&&\p{{Age={AGE}}}]"));
        let number = RangeSet::from_class(&format!(r"[\p{{N}}&&\p{{Age={AGE}}}]"));
        let punct = RangeSet::from_class(&format!(r"[\p{{P}}&&\p{{Age={AGE}}}]"));
        let mut ascii = [CharClass::default(); 128];
        for (cp, slot) in ascii.iter_mut().enumerate() {
            *slot = classify_slow(cp as u32, &letter, &number, &punct);
        }
        Tables {
            ascii,
            letter,
            number,
            punct,
        }
    })
}

fn classify_slow(cp: u32, letter: &RangeSet, number: &RangeSet, punct: &RangeSet) -> CharClass {
    let mut bits = 0;
    if letter.contains(cp) {
        bits |= CharClass::LETTER;
    }
    if number.contains(cp) {
        bits |= CharClass::NUMBER;
    }
    if punct.contains(cp) {
        bits |= CharClass::PUNCT;
    }
    // Rust's `char::is_whitespace` is the Unicode `White_Space` property,
    // the same set llama.cpp uses.
    if char::from_u32(cp).is_some_and(char::is_whitespace) {
        bits |= CharClass::WHITESPACE;
    }
    CharClass(bits)
}

/// Classify one character.
pub(crate) fn classify(c: char) -> CharClass {
    let t = tables();
    let cp = c as u32;
    if cp < 128 {
        t.ascii[cp as usize]
    } else {
        classify_slow(cp, &t.letter, &t.number, &t.punct)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ascii_classes() {
        assert!(classify('a').is_letter());
        assert!(classify('Z').is_letter());
        assert!(classify('7').is_number());
        assert!(classify(' ').is_whitespace());
        assert!(classify('\n').is_whitespace());
        assert!(classify('\x0b').is_whitespace());
        assert!(classify('!').is_punct());
        assert!(!classify('$').is_punct());
        assert!(!classify('`').is_punct());
        let c = classify('+');
        assert!(!c.is_letter() && !c.is_number() && !c.is_whitespace() && !c.is_punct());
    }

    #[test]
    fn non_ascii_classes() {
        assert!(classify('é').is_letter());
        assert!(classify('中').is_letter());
        assert!(classify('²').is_number());
        assert!(classify('٣').is_number());
        assert!(classify('\u{3000}').is_whitespace());
        assert!(classify('\u{85}').is_whitespace());
        assert!(classify('。').is_punct());
        // U+105C0 (Todhri) was assigned in Unicode 16: not a letter for llama.cpp.
        assert!(!classify('\u{105C0}').is_letter());
        // U+2EBF0 (CJK Ext. I) is Unicode 15.1: a letter.
        assert!(classify('\u{2EBF0}').is_letter());
    }
}
