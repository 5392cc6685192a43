//! GPT-2's reversible byte <-> printable-character mapping.
//!
//! Byte-level BPE vocabularies store every byte as a printable character:
//! bytes that are already printable Latin-1 (`!`..`~`, `¡`..`¬`, `®`..`ÿ`)
//! map to themselves, the remaining 68 bytes map, in increasing order, to
//! U+0100, U+0101, ...

use std::sync::OnceLock;

struct Maps {
    byte_to_char: [char; 256],
    /// Indexed by code point; only U+0000..U+0143 can be produced.
    char_to_byte: [Option<u8>; 0x144],
}

fn is_self_mapped(b: u8) -> bool {
    matches!(b, 0x21..=0x7E | 0xA1..=0xAC | 0xAE..=0xFF)
}

fn maps() -> &'static Maps {
    static MAPS: OnceLock<Maps> = OnceLock::new();
    MAPS.get_or_init(|| {
        let mut byte_to_char = ['\0'; 256];
        let mut char_to_byte = [None; 0x144];
        let mut next = 0x100u32;
        for b in 0..=255u8 {
            let cp = if is_self_mapped(b) {
                u32::from(b)
            } else {
                let cp = next;
                next += 1;
                cp
            };
            // cp < 0x144, always a valid scalar value.
            let c = char::from_u32(cp).unwrap_or('\u{FFFD}');
            byte_to_char[usize::from(b)] = c;
            char_to_byte[cp as usize] = Some(b);
        }
        Maps {
            byte_to_char,
            char_to_byte,
        }
    })
}

/// The printable character standing for byte `b`.
pub(crate) fn byte_to_char(b: u8) -> char {
    maps().byte_to_char[usize::from(b)]
}

/// The byte a printable character stands for, if it is one of the 256.
pub(crate) fn char_to_byte(c: char) -> Option<u8> {
    maps().char_to_byte.get(c as usize).copied().flatten()
}

/// Map every byte of `s` to its printable character (GPT-2 "byte encoding").
pub(crate) fn encode_bytes(s: &str, out: &mut String) {
    out.extend(s.bytes().map(byte_to_char));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_all_bytes() {
        for b in 0..=255u8 {
            assert_eq!(char_to_byte(byte_to_char(b)), Some(b));
        }
        assert_eq!(byte_to_char(b' '), 'Ġ');
        assert_eq!(byte_to_char(b'\n'), 'Ċ');
        assert_eq!(byte_to_char(b'a'), 'a');
        assert_eq!(char_to_byte('中'), None);
    }
}
