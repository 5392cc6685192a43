//! The bytes each token contributes to output text (llama.cpp's `token_to_piece`).

use super::byte_unicode;
use super::vocab::{attr, Vocab};
use super::TokenizerKind;

/// Output bytes of every token with special tokens rendered; empty for
/// tokens llama.cpp never renders (unused, undefined).
pub(crate) fn build_pieces(vocab: &Vocab, kind: TokenizerKind) -> Vec<Box<[u8]>> {
    (0..vocab.len())
        .map(|id| piece(vocab, kind, id as u32).into_boxed_slice())
        .collect()
}

fn piece(vocab: &Vocab, kind: TokenizerKind, id: u32) -> Vec<u8> {
    let text = vocab.texts[id as usize].as_str();
    let a = vocab.attr(id);
    if a & (attr::UNKNOWN | attr::CONTROL | attr::USER_DEFINED) != 0 {
        return text.as_bytes().to_vec();
    }
    if a & attr::NORMAL != 0 {
        return match kind {
            TokenizerKind::Llama => text.replace('\u{2581}', " ").into_bytes(),
            TokenizerKind::Gpt2 => decode_byte_level(text),
        };
    }
    if a & attr::BYTE != 0 {
        return vec![byte_token_value(text)];
    }
    Vec::new()
}

/// Undo the GPT-2 byte encoding. A character outside the 256 byte
/// characters is rendered as llama.cpp does: `[UNK_BYTE_0x<hex>` + token + `]`.
fn decode_byte_level(text: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    for c in text.chars() {
        match byte_unicode::char_to_byte(c) {
            Some(b) => out.push(b),
            None => {
                out.extend_from_slice(b"[UNK_BYTE_0x");
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    out.extend_from_slice(format!("{b:02x}").as_bytes());
                }
                out.extend_from_slice(text.as_bytes());
                out.push(b']');
            }
        }
    }
    out
}

/// The byte of a `<0xXX>` token: the hex digits at offset 3..5, parsed like
/// C `strtol` (leading hex digits only, 0 if none).
fn byte_token_value(text: &str) -> u8 {
    let digits = text.as_bytes().get(3..5).unwrap_or_default();
    let mut v = 0u8;
    for &d in digits {
        match (d as char).to_digit(16) {
            Some(x) => v = v.wrapping_mul(16).wrapping_add(x as u8),
            None => break,
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_values() {
        assert_eq!(byte_token_value("<0x0A>"), 0x0A);
        assert_eq!(byte_token_value("<0xFF>"), 0xFF);
        assert_eq!(byte_token_value("<0x"), 0);
    }

    #[test]
    fn byte_level() {
        assert_eq!(decode_byte_level("Ġhello"), b" hello");
        assert_eq!(decode_byte_level("Ċ"), b"\n");
    }
}
