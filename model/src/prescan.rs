//! A walk over the GGUF header before candle reads it, to refuse the
//! headers candle-core 0.11.1's `Content::read` accepts but then panics on
//! (`general.alignment = 0` divides by zero when it computes the start of
//! the tensor data) and to name the tensor whose type code is unknown (candle
//! says only "unknown dtype"). candle already bounds every length and count
//! by the file size, so this walk only looks for what candle does not check;
//! anything it cannot follow is left to candle, whose error is then reported.
//!
//! It reads nothing into memory (strings and arrays are skipped by length),
//! so it costs one pass over the header and no allocation.

/// GGUF value type codes (the spec's `gguf_metadata_value_type`).
const T_U8: u32 = 0;
const T_I8: u32 = 1;
const T_U16: u32 = 2;
const T_I16: u32 = 3;
const T_U32: u32 = 4;
const T_I32: u32 = 5;
const T_F32: u32 = 6;
const T_BOOL: u32 = 7;
const T_STRING: u32 = 8;
const T_ARRAY: u32 = 9;
const T_U64: u32 = 10;
const T_I64: u32 = 11;
const T_F64: u32 = 12;

/// candle's own nesting limit for arrays of arrays.
const MAX_DEPTH: usize = 64;

const ALIGNMENT_KEY: &[u8] = b"general.alignment";

/// Bytes of one value of a fixed-size type.
fn fixed_size(ty: u32) -> Option<u64> {
    match ty {
        T_U8 | T_I8 | T_BOOL => Some(1),
        T_U16 | T_I16 => Some(2),
        T_U32 | T_I32 | T_F32 => Some(4),
        T_U64 | T_I64 | T_F64 => Some(8),
        _ => None,
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
    /// GGUF v1 stores lengths and counts as u32, later versions as u64.
    wide: bool,
}

impl Reader<'_> {
    fn take(&mut self, n: u64) -> Option<&[u8]> {
        let n = usize::try_from(n).ok()?;
        let end = self.pos.checked_add(n).filter(|&e| e <= self.bytes.len())?;
        let s = &self.bytes[self.pos..end];
        self.pos = end;
        Some(s)
    }

    fn u32(&mut self) -> Option<u32> {
        let b = self.take(4)?;
        Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self) -> Option<u64> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Some(u64::from_le_bytes(a))
    }

    fn length(&mut self) -> Option<u64> {
        if self.wide {
            self.u64()
        } else {
            self.u32().map(u64::from)
        }
    }

    fn string(&mut self) -> Option<&[u8]> {
        let len = self.length()?;
        self.take(len)
    }

    /// Skips one value; `None` when the file ends first or the type is unknown.
    fn skip(&mut self, ty: u32, depth: usize) -> Option<()> {
        if let Some(size) = fixed_size(ty) {
            return self.take(size).map(|_| ());
        }
        match ty {
            T_STRING => self.string().map(|_| ()),
            T_ARRAY if depth < MAX_DEPTH => {
                let inner = self.u32()?;
                let n = self.length()?;
                if let Some(size) = fixed_size(inner) {
                    return self.take(n.checked_mul(size)?).map(|_| ());
                }
                for _ in 0..n {
                    // Each element takes at least one byte, so a claimed
                    // length past the end stops within the file's size.
                    self.skip(inner, depth + 1)?;
                }
                Some(())
            }
            _ => None,
        }
    }

    /// An integer value of any width, as candle reads `general.alignment`.
    fn integer(&mut self, ty: u32) -> Option<Option<i128>> {
        Some(Some(match ty {
            T_U8 | T_I8 => {
                let b = self.take(1)?[0];
                if ty == T_I8 {
                    i128::from(b as i8)
                } else {
                    i128::from(b)
                }
            }
            T_U16 | T_I16 => {
                let b = self.take(2)?;
                let v = u16::from_le_bytes([b[0], b[1]]);
                if ty == T_I16 {
                    i128::from(v as i16)
                } else {
                    i128::from(v)
                }
            }
            T_U32 | T_I32 => {
                let v = self.u32()?;
                if ty == T_I32 {
                    i128::from(v as i32)
                } else {
                    i128::from(v)
                }
            }
            _ => {
                self.skip(ty, 0)?;
                return Some(None);
            }
        }))
    }
}

/// Refuses a header that would make candle's reader panic; `Ok` for
/// everything else, malformed or not (candle reports those).
pub(crate) fn check(bytes: &[u8]) -> Result<(), String> {
    let mut r = Reader {
        bytes,
        pos: 4,
        wide: true,
    };
    let Some(version) = r.u32() else {
        return Ok(());
    };
    r.wide = version != 1;
    let (Some(tensors), Some(kv_count)) = (r.length(), r.length()) else {
        return Ok(());
    };
    for _ in 0..kv_count {
        let Some(key) = r.string() else {
            return Ok(());
        };
        let is_alignment = key == ALIGNMENT_KEY;
        let Some(ty) = r.u32() else {
            return Ok(());
        };
        if !is_alignment {
            if r.skip(ty, 0).is_none() {
                return Ok(());
            }
            continue;
        }
        match r.integer(ty) {
            None => return Ok(()),
            // Types candle ignores here (it falls back to 32): nothing to check.
            Some(None) => {}
            // candle ignores negative values too; zero and non-powers of two
            // are what the spec (and llama.cpp) forbid, and zero crashes candle.
            Some(Some(a)) if a >= 0 && !(a > 0 && (a & (a - 1)) == 0) => {
                return Err(format!(
                    "metadata key 'general.alignment' is {a}; it must be a power of two"
                ));
            }
            Some(Some(_)) => {}
        }
    }
    // Tensor infos: candle names no tensor when a type code is unknown, so
    // name it here.
    for _ in 0..tensors {
        let Some(name) = r.string() else {
            return Ok(());
        };
        let name = String::from_utf8_lossy(name).into_owned();
        let Some(n_dims) = r.u32().filter(|&n| n <= 4) else {
            return Ok(());
        };
        let dim_bytes = if r.wide { 8 } else { 4 };
        if r.take(u64::from(n_dims) * dim_bytes).is_none() {
            return Ok(());
        }
        let Some(dtype) = r.u32() else {
            return Ok(());
        };
        if !KNOWN_TENSOR_TYPES.contains(&dtype) {
            return Err(format!(
                "tensor '{name}' has type code {dtype}, which is not a GGML tensor type"
            ));
        }
        if r.u64().is_none() {
            return Ok(());
        }
    }
    Ok(())
}

/// GGML type codes candle-core 0.11.1 reads (F32, F16, Q4_0 ... Q8_K, BF16).
const KNOWN_TENSOR_TYPES: &[u32] = &[0, 1, 2, 3, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 30];

#[cfg(test)]
mod tests {
    use super::*;

    /// A v3 header with no tensors and the given metadata entries.
    fn header(kvs: &[(&str, u32, &[u8])]) -> Vec<u8> {
        let mut b = b"GGUF".to_vec();
        b.extend(3u32.to_le_bytes());
        b.extend(0u64.to_le_bytes());
        b.extend((kvs.len() as u64).to_le_bytes());
        for (k, ty, v) in kvs {
            b.extend((k.len() as u64).to_le_bytes());
            b.extend(k.as_bytes());
            b.extend(ty.to_le_bytes());
            b.extend(*v);
        }
        b
    }

    #[test]
    fn zero_alignment_is_refused_before_candle_divides_by_it() {
        let b = header(&[
            ("general.name", T_STRING, &[1, 0, 0, 0, 0, 0, 0, 0, b'x']),
            ("general.alignment", T_U32, &0u32.to_le_bytes()),
        ]);
        let e = check(&b).unwrap_err();
        assert!(e.contains("general.alignment"), "{e}");
        // And through the loader: an error, not a panic.
        let e = crate::GgufFile::from_bytes("zero-align.gguf", b)
            .err()
            .expect("refused");
        assert!(e.to_string().contains("power of two"), "{e}");
    }

    #[test]
    fn power_of_two_alignment_passes() {
        let b = header(&[("general.alignment", T_U16, &64u16.to_le_bytes())]);
        assert!(check(&b).is_ok());
        let b = header(&[("general.alignment", T_U8, &[24])]);
        assert!(check(&b).is_err());
    }

    #[test]
    fn an_unknown_tensor_type_names_the_tensor() {
        let mut b = header(&[]);
        b[8..16].copy_from_slice(&1u64.to_le_bytes());
        b.extend(4u64.to_le_bytes());
        b.extend(b"w.xy");
        b.extend(1u32.to_le_bytes());
        b.extend(8u64.to_le_bytes());
        b.extend(99u32.to_le_bytes());
        b.extend(0u64.to_le_bytes());
        let e = check(&b).unwrap_err();
        assert!(e.contains("'w.xy'") && e.contains("99"), "{e}");
    }

    #[test]
    fn truncated_headers_are_left_to_candle() {
        let b = header(&[("general.alignment", T_U32, &0u32.to_le_bytes())]);
        for cut in 4..b.len() - 4 {
            assert!(check(&b[..cut]).is_ok(), "cut at {cut}");
        }
    }
}
