//! GGUF metadata: the model crate's own value type, so that no parser type
//! (candle's `gguf_file::Value`) appears in its API.

use std::collections::HashMap;

use candle_core::quantized::gguf_file::Value;

/// One metadata value, in the GGUF value types.
#[derive(Debug, Clone, PartialEq)]
pub enum MetadataValue {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    U64(u64),
    I64(i64),
    F32(f32),
    F64(f64),
    Bool(bool),
    String(String),
    Array(Vec<MetadataValue>),
}

impl MetadataValue {
    /// The GGUF type, for messages: `U32`, `String`, `array of String`,
    /// `empty array`.
    pub fn type_name(&self) -> String {
        let scalar = match self {
            MetadataValue::U8(_) => "U8",
            MetadataValue::I8(_) => "I8",
            MetadataValue::U16(_) => "U16",
            MetadataValue::I16(_) => "I16",
            MetadataValue::U32(_) => "U32",
            MetadataValue::I32(_) => "I32",
            MetadataValue::U64(_) => "U64",
            MetadataValue::I64(_) => "I64",
            MetadataValue::F32(_) => "F32",
            MetadataValue::F64(_) => "F64",
            MetadataValue::Bool(_) => "Bool",
            MetadataValue::String(_) => "String",
            MetadataValue::Array(items) => {
                return match items.first() {
                    Some(first) => format!("array of {}", first.type_name()),
                    None => "empty array".to_string(),
                }
            }
        };
        scalar.to_string()
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            MetadataValue::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match self {
            MetadataValue::Bool(b) => Some(*b),
            _ => None,
        }
    }

    /// An integer of any GGUF integer type, widened.
    pub fn as_integer(&self) -> Option<i128> {
        Some(match self {
            MetadataValue::U8(x) => (*x).into(),
            MetadataValue::I8(x) => (*x).into(),
            MetadataValue::U16(x) => (*x).into(),
            MetadataValue::I16(x) => (*x).into(),
            MetadataValue::U32(x) => (*x).into(),
            MetadataValue::I32(x) => (*x).into(),
            MetadataValue::U64(x) => (*x).into(),
            MetadataValue::I64(x) => (*x).into(),
            _ => return None,
        })
    }

    /// An integer of any GGUF integer type whose value fits a `u32`.
    pub fn as_u32(&self) -> Option<u32> {
        self.as_integer().and_then(|n| u32::try_from(n).ok())
    }

    /// An F32, or an F64 narrowed to f32.
    pub fn as_f32(&self) -> Option<f32> {
        match self {
            MetadataValue::F32(x) => Some(*x),
            MetadataValue::F64(x) => Some(*x as f32),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[MetadataValue]> {
        match self {
            MetadataValue::Array(items) => Some(items),
            _ => None,
        }
    }
}

/// A metadata key whose value is not of the type its reader expects.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("GGUF metadata key `{key}` has type {found}, expected {expected}")]
pub struct MetadataError {
    pub key: String,
    /// What the reader takes, e.g. "a string", "an unsigned 32-bit integer".
    pub expected: &'static str,
    /// The value's [`MetadataValue::type_name`].
    pub found: String,
}

impl MetadataError {
    pub fn wrong_type(key: &str, expected: &'static str, found: &MetadataValue) -> Self {
        MetadataError {
            key: key.to_string(),
            expected,
            found: found.type_name(),
        }
    }
}

/// The key/value metadata of a GGUF file, with typed reads: each `get_*`
/// is `Ok(None)` for an absent key and an error naming the key, the
/// expected type and the found one for a value of another type.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Metadata {
    entries: HashMap<String, MetadataValue>,
}

impl Metadata {
    pub fn get(&self, key: &str) -> Option<&MetadataValue> {
        self.entries.get(key)
    }

    pub fn contains_key(&self, key: &str) -> bool {
        self.entries.contains_key(key)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Every key and value, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &MetadataValue)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// Sets `key`, returning its previous value.
    pub fn insert(
        &mut self,
        key: impl Into<String>,
        value: MetadataValue,
    ) -> Option<MetadataValue> {
        self.entries.insert(key.into(), value)
    }

    pub fn remove(&mut self, key: &str) -> Option<MetadataValue> {
        self.entries.remove(key)
    }

    /// `key` read with `read`, which returns `None` for a value of the wrong
    /// type (reported as expecting `expected`).
    fn typed<'a, T>(
        &'a self,
        key: &str,
        expected: &'static str,
        read: impl FnOnce(&'a MetadataValue) -> Option<T>,
    ) -> Result<Option<T>, MetadataError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => read(v)
                .map(Some)
                .ok_or_else(|| MetadataError::wrong_type(key, expected, v)),
        }
    }

    pub fn get_str(&self, key: &str) -> Result<Option<&str>, MetadataError> {
        self.typed(key, "a string", MetadataValue::as_str)
    }

    pub fn get_bool(&self, key: &str) -> Result<Option<bool>, MetadataError> {
        self.typed(key, "a bool", MetadataValue::as_bool)
    }

    /// Any integer type; negative values and values beyond `u32` are errors.
    pub fn get_u32(&self, key: &str) -> Result<Option<u32>, MetadataError> {
        self.typed(key, "an unsigned 32-bit integer", MetadataValue::as_u32)
    }

    /// An F32, or an F64 narrowed to f32.
    pub fn get_f32(&self, key: &str) -> Result<Option<f32>, MetadataError> {
        self.typed(key, "a float", MetadataValue::as_f32)
    }

    /// An array, its items of any type; `expected` names what the caller
    /// takes (e.g. "an array of f32 or i32") for the error.
    pub fn get_array(
        &self,
        key: &str,
        expected: &'static str,
    ) -> Result<Option<&[MetadataValue]>, MetadataError> {
        self.typed(key, expected, MetadataValue::as_array)
    }

    /// An array whose every item is a string.
    pub fn get_str_array(&self, key: &str) -> Result<Option<Vec<&str>>, MetadataError> {
        const EXPECTED: &str = "an array of strings";
        let Some(items) = self.get_array(key, EXPECTED)? else {
            return Ok(None);
        };
        items
            .iter()
            .map(|v| {
                v.as_str()
                    .ok_or_else(|| MetadataError::wrong_type(key, EXPECTED, v))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }

    /// The metadata candle's reader returns, moved (not copied) over.
    pub(crate) fn from_candle(md: HashMap<String, Value>) -> Self {
        Metadata {
            entries: md.into_iter().map(|(k, v)| (k, convert(v))).collect(),
        }
    }
}

impl FromIterator<(String, MetadataValue)> for Metadata {
    fn from_iter<I: IntoIterator<Item = (String, MetadataValue)>>(iter: I) -> Self {
        Metadata {
            entries: iter.into_iter().collect(),
        }
    }
}

fn convert(v: Value) -> MetadataValue {
    match v {
        Value::U8(x) => MetadataValue::U8(x),
        Value::I8(x) => MetadataValue::I8(x),
        Value::U16(x) => MetadataValue::U16(x),
        Value::I16(x) => MetadataValue::I16(x),
        Value::U32(x) => MetadataValue::U32(x),
        Value::I32(x) => MetadataValue::I32(x),
        Value::U64(x) => MetadataValue::U64(x),
        Value::I64(x) => MetadataValue::I64(x),
        Value::F32(x) => MetadataValue::F32(x),
        Value::F64(x) => MetadataValue::F64(x),
        Value::Bool(x) => MetadataValue::Bool(x),
        Value::String(x) => MetadataValue::String(x),
        Value::Array(items) => MetadataValue::Array(items.into_iter().map(convert).collect()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn md() -> Metadata {
        [
            ("s", MetadataValue::String("x".into())),
            ("n", MetadataValue::I64(7)),
            ("neg", MetadataValue::I8(-1)),
            ("f", MetadataValue::F64(0.5)),
            (
                "a",
                MetadataValue::Array(vec![MetadataValue::String("t".into())]),
            ),
            ("e", MetadataValue::Array(vec![])),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    #[test]
    fn typed_reads_convert_what_they_can() {
        let md = md();
        assert_eq!(md.get_str("s"), Ok(Some("x")));
        assert_eq!(md.get_u32("n"), Ok(Some(7)));
        assert_eq!(md.get_f32("f"), Ok(Some(0.5)));
        assert_eq!(md.get_str_array("a"), Ok(Some(vec!["t"])));
        assert_eq!(md.get_str("absent"), Ok(None));
    }

    #[test]
    fn wrong_types_name_the_key_and_both_types() {
        let md = md();
        let err = md.get_u32("neg").unwrap_err();
        assert_eq!(
            err.to_string(),
            "GGUF metadata key `neg` has type I8, expected an unsigned 32-bit integer"
        );
        let err = md.get_str("a").unwrap_err();
        assert_eq!(err.found, "array of String");
        assert_eq!(md.get_bool("e").unwrap_err().found, "empty array");
        assert_eq!(md.get_str_array("s").unwrap_err().key, "s");
    }
}
