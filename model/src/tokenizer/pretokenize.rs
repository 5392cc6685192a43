//! Pre-tokenizers for byte-level BPE: split text into words before merging.
//!
//! llama.cpp picks a list of split stages from `tokenizer.ggml.pre`; each
//! stage splits every piece produced by the previous one further. A stage
//! keeps the text between its matches as pieces of their own ("isolated"
//! splitting), so no text is ever dropped.

use super::unicode::{classify, CharClass};
use super::TokenizerError;

/// The pre-tokenizers implemented here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PreTokenizer {
    /// llama.cpp's fallback (`default` or no `pre` key): punctuation runs,
    /// the GPT-2 split, number runs, then groups of three ASCII digits.
    Default,
    /// The GPT-2 regex alone.
    Gpt2,
    /// Every number character alone, then the GPT-2 regex (SmolLM, StarCoder, ...).
    DigitsThenGpt2,
}

/// `tokenizer.ggml.pre` values understood, and what they map to.
const NAMES: &[(&str, PreTokenizer)] = &[
    ("default", PreTokenizer::Default),
    ("gpt-2", PreTokenizer::Gpt2),
    // Not a llama.cpp name, accepted as an alias of `gpt-2`.
    ("gpt2", PreTokenizer::Gpt2),
    ("phi-2", PreTokenizer::Gpt2),
    ("mpt", PreTokenizer::Gpt2),
    ("olmo", PreTokenizer::Gpt2),
    ("smollm", PreTokenizer::DigitsThenGpt2),
    ("starcoder", PreTokenizer::DigitsThenGpt2),
    ("refact", PreTokenizer::DigitsThenGpt2),
    ("command-r", PreTokenizer::DigitsThenGpt2),
    ("codeshell", PreTokenizer::DigitsThenGpt2),
    ("exaone", PreTokenizer::DigitsThenGpt2),
    ("minerva-7b", PreTokenizer::DigitsThenGpt2),
];

impl PreTokenizer {
    /// The pre-tokenizer for a `tokenizer.ggml.pre` value (`None`: key absent).
    pub(crate) fn from_name(name: Option<&str>) -> Result<Self, TokenizerError> {
        let Some(name) = name else {
            // llama.cpp warns ("GENERATION QUALITY WILL BE DEGRADED") and uses `default`.
            return Ok(PreTokenizer::Default);
        };
        NAMES
            .iter()
            .find(|(n, _)| *n == name)
            .map(|&(_, p)| p)
            .ok_or_else(|| TokenizerError::UnknownPreTokenizer {
                name: name.to_string(),
                supported: NAMES
                    .iter()
                    .map(|(n, _)| format!("`{n}`"))
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }

    /// Split `text` into words. Each word is a range of char indices into `chars`.
    pub(crate) fn split(self, chars: &[char]) -> Vec<(usize, usize)> {
        let classes: Vec<CharClass> = chars.iter().map(|&c| classify(c)).collect();
        let mut pieces = if chars.is_empty() {
            Vec::new()
        } else {
            vec![(0, chars.len())]
        };
        match self {
            PreTokenizer::Default => {
                pieces = split_runs(&pieces, |i| is_default_punct(chars[i], classes[i]));
                pieces = split_gpt2(&pieces, chars, &classes);
                pieces = split_runs(&pieces, |i| classes[i].is_number());
                pieces = split_ascii_digit_triples(&pieces, chars);
            }
            PreTokenizer::Gpt2 => {
                pieces = split_gpt2(&pieces, chars, &classes);
            }
            PreTokenizer::DigitsThenGpt2 => {
                pieces = split_each(&pieces, |i| classes[i].is_number());
                pieces = split_gpt2(&pieces, chars, &classes);
            }
        }
        pieces
    }
}

/// `[\p{P}\$\+<=>\^~\|]`
fn is_default_punct(c: char, class: CharClass) -> bool {
    class.is_punct() || matches!(c, '$' | '+' | '<' | '=' | '>' | '^' | '~' | '|')
}

/// Regex `X+` where `X` is `pred`: maximal runs are pieces, and so are the gaps.
fn split_runs(pieces: &[(usize, usize)], pred: impl Fn(usize) -> bool) -> Vec<(usize, usize)> {
    let mut out = Vec::with_capacity(pieces.len());
    for &(start, end) in pieces {
        let mut i = start;
        while i < end {
            let in_run = pred(i);
            let mut j = i + 1;
            while j < end && pred(j) == in_run {
                j += 1;
            }
            out.push((i, j));
            i = j;
        }
    }
    out
}

/// Regex `X` (one character): each matching character alone, gaps as pieces.
fn split_each(pieces: &[(usize, usize)], pred: impl Fn(usize) -> bool) -> Vec<(usize, usize)> {
    let mut out = Vec::with_capacity(pieces.len());
    for &(start, end) in pieces {
        let mut gap_start = start;
        for i in start..end {
            if pred(i) {
                if gap_start < i {
                    out.push((gap_start, i));
                }
                out.push((i, i + 1));
                gap_start = i + 1;
            }
        }
        if gap_start < end {
            out.push((gap_start, end));
        }
    }
    out
}

/// Regex `[0-9][0-9][0-9]`, matched left to right without overlap.
fn split_ascii_digit_triples(pieces: &[(usize, usize)], chars: &[char]) -> Vec<(usize, usize)> {
    let mut out = Vec::with_capacity(pieces.len());
    for &(start, end) in pieces {
        let mut gap_start = start;
        let mut i = start;
        while i + 3 <= end {
            if chars[i..i + 3].iter().all(char::is_ascii_digit) {
                if gap_start < i {
                    out.push((gap_start, i));
                }
                out.push((i, i + 3));
                i += 3;
                gap_start = i;
            } else {
                i += 1;
            }
        }
        if gap_start < end {
            out.push((gap_start, end));
        }
    }
    out
}

/// The GPT-2 regex
/// `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`
/// as llama.cpp's hand-written matcher applies it (lookahead limited to the piece).
fn split_gpt2(
    pieces: &[(usize, usize)],
    chars: &[char],
    classes: &[CharClass],
) -> Vec<(usize, usize)> {
    let mut out = Vec::with_capacity(pieces.len() * 2);
    for &(start, end) in pieces {
        // Class of position `p`, or `None` past the end of the piece.
        let class_at = |p: usize| (p < end).then(|| classes[p]);
        let is_letter = |c: Option<CharClass>| c.is_some_and(CharClass::is_letter);
        let is_number = |c: Option<CharClass>| c.is_some_and(CharClass::is_number);
        let is_other = |c: Option<CharClass>| {
            c.is_some_and(|c| !(c.is_whitespace() || c.is_letter() || c.is_number()))
        };
        let is_space = |c: Option<CharClass>| c.is_some_and(CharClass::is_whitespace);

        let mut pos = start;
        while pos < end {
            let c = chars[pos];

            // 's 't 're 've 'm 'll 'd
            if c == '\'' && pos + 1 < end {
                let next = chars[pos + 1];
                if matches!(next, 's' | 't' | 'm' | 'd') {
                    out.push((pos, pos + 2));
                    pos += 2;
                    continue;
                }
                if pos + 2 < end {
                    let pair = (next, chars[pos + 2]);
                    if matches!(pair, ('r', 'e') | ('v', 'e') | ('l', 'l')) {
                        out.push((pos, pos + 3));
                        pos += 3;
                        continue;
                    }
                }
            }

            // An optional leading space, then a run of one class.
            let lead = usize::from(c == ' ');
            let first = class_at(pos + lead);
            let run_pred: Option<&dyn Fn(Option<CharClass>) -> bool> = if is_letter(first) {
                Some(&is_letter)
            } else if is_number(first) {
                Some(&is_number)
            } else if is_other(first) {
                Some(&is_other)
            } else {
                None
            };
            if let Some(pred) = run_pred {
                let mut j = pos + lead;
                while pred(class_at(j)) {
                    j += 1;
                }
                out.push((pos, j));
                pos = j;
                continue;
            }

            // Whitespace: \s+(?!\S) leaves the last space for the next word.
            let mut n_space = 0;
            while is_space(class_at(pos + n_space)) {
                n_space += 1;
            }
            if n_space > 1 && pos + n_space < end {
                out.push((pos, pos + n_space - 1));
                pos += n_space - 1;
                continue;
            }
            if n_space > 0 {
                out.push((pos, pos + n_space));
                pos += n_space;
                continue;
            }

            // Unreachable in practice: every character has some class.
            out.push((pos, pos + 1));
            pos += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(pre: PreTokenizer, text: &str) -> Vec<String> {
        let chars: Vec<char> = text.chars().collect();
        pre.split(&chars)
            .into_iter()
            .map(|(a, b)| chars[a..b].iter().collect())
            .collect()
    }

    #[test]
    fn gpt2_split() {
        assert_eq!(
            words(PreTokenizer::Gpt2, "Hello world's  3 cats!!\n\nok "),
            vec!["Hello", " world", "'s", " ", " 3", " cats", "!!", "\n", "\n", "ok", " "]
        );
    }

    #[test]
    fn digits_then_gpt2() {
        assert_eq!(
            words(PreTokenizer::DigitsThenGpt2, "a 123x"),
            vec!["a", " ", "1", "2", "3", "x"]
        );
    }

    #[test]
    fn default_split() {
        assert_eq!(
            words(PreTokenizer::Default, "x=12345, y"),
            vec!["x", "=", "123", "45", ",", " y"]
        );
    }

    #[test]
    fn unknown_pre_is_named() {
        let err = PreTokenizer::from_name(Some("nonesuch")).unwrap_err();
        assert!(err.to_string().contains("nonesuch"), "{err}");
    }
}
