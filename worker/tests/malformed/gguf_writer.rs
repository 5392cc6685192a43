//! A minimal GGUF writer for building malformed models: a model is read
//! with candle's reader into [`GgufModel`] (metadata and tensors as plain,
//! editable values), changed, and written back, possibly wrongly on purpose.

use std::collections::HashMap;
use std::path::Path;

use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::quantized::GgmlDType;

/// One tensor: GGUF-order dims (fastest-varying first), type code, data.
#[derive(Clone)]
pub struct Tensor {
    pub name: String,
    pub dims: Vec<u64>,
    pub dtype: u32,
    /// Written as the tensor's offset instead of the real one when set.
    pub offset_override: Option<u64>,
    pub data: Vec<u8>,
}

/// An editable GGUF model.
#[derive(Clone)]
pub struct GgufModel {
    pub magic: [u8; 4],
    pub version: u32,
    /// Overrides the tensor/kv counts written in the header when set.
    pub tensor_count_override: Option<u64>,
    pub kv_count_override: Option<u64>,
    pub metadata: Vec<(String, Value)>,
    pub tensors: Vec<Tensor>,
}

const ALIGNMENT: usize = 32;

impl GgufModel {
    /// Reads `path` (a well-formed GGUF file) into editable form.
    pub fn read(path: &Path) -> GgufModel {
        let bytes = std::fs::read(path).expect("read base model");
        let content = Content::read(&mut std::io::Cursor::new(&bytes)).expect("base model parses");
        let mut metadata: Vec<(String, Value)> = content.metadata.into_iter().collect();
        metadata.sort_by(|a, b| a.0.cmp(&b.0));
        let mut tensors: Vec<Tensor> = content
            .tensor_infos
            .iter()
            .map(|(name, info)| {
                let elems: usize = info.shape.dims().iter().product();
                let size = elems / info.ggml_dtype.block_size() * info.ggml_dtype.type_size();
                let start = (content.tensor_data_offset + info.offset) as usize;
                Tensor {
                    name: name.clone(),
                    dims: info.shape.dims().iter().rev().map(|&d| d as u64).collect(),
                    dtype: dtype_code(info.ggml_dtype),
                    offset_override: None,
                    data: bytes[start..start + size].to_vec(),
                }
            })
            .collect();
        tensors.sort_by(|a, b| a.name.cmp(&b.name));
        GgufModel {
            magic: *b"GGUF",
            version: 3,
            tensor_count_override: None,
            kv_count_override: None,
            metadata,
            tensors,
        }
    }

    pub fn meta(&self) -> HashMap<&str, &Value> {
        self.metadata.iter().map(|(k, v)| (k.as_str(), v)).collect()
    }

    pub fn set_meta(&mut self, key: &str, value: Value) {
        match self.metadata.iter_mut().find(|(k, _)| k == key) {
            Some(entry) => entry.1 = value,
            None => self.metadata.push((key.to_string(), value)),
        }
    }

    pub fn remove_meta(&mut self, key: &str) {
        self.metadata.retain(|(k, _)| k != key);
    }

    pub fn tensor_mut(&mut self, name: &str) -> &mut Tensor {
        self.tensors
            .iter_mut()
            .find(|t| t.name == name)
            .unwrap_or_else(|| panic!("base model has no tensor {name}"))
    }

    /// The file's bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend(self.magic);
        b.extend(self.version.to_le_bytes());
        let n_tensors = self
            .tensor_count_override
            .unwrap_or(self.tensors.len() as u64);
        let n_kv = self.kv_count_override.unwrap_or(self.metadata.len() as u64);
        b.extend(n_tensors.to_le_bytes());
        b.extend(n_kv.to_le_bytes());
        for (k, v) in &self.metadata {
            write_str(&mut b, k);
            b.extend(type_code(v).to_le_bytes());
            write_value(&mut b, v);
        }
        let mut offset = 0usize;
        let mut offsets = Vec::new();
        for t in &self.tensors {
            write_str(&mut b, &t.name);
            b.extend((t.dims.len() as u32).to_le_bytes());
            for d in &t.dims {
                b.extend(d.to_le_bytes());
            }
            b.extend(t.dtype.to_le_bytes());
            b.extend(t.offset_override.unwrap_or(offset as u64).to_le_bytes());
            offsets.push(offset);
            offset += t.data.len().div_ceil(ALIGNMENT) * ALIGNMENT;
        }
        b.resize(b.len().div_ceil(ALIGNMENT) * ALIGNMENT, 0);
        let data_start = b.len();
        for (t, off) in self.tensors.iter().zip(offsets) {
            b.resize(data_start + off, 0);
            b.extend(&t.data);
        }
        b
    }
}

/// GGML type codes (candle keeps its own mapping private).
fn dtype_code(t: GgmlDType) -> u32 {
    match t {
        GgmlDType::F32 => 0,
        GgmlDType::F16 => 1,
        GgmlDType::Q4_0 => 2,
        GgmlDType::Q4_1 => 3,
        GgmlDType::Q5_0 => 6,
        GgmlDType::Q5_1 => 7,
        GgmlDType::Q8_0 => 8,
        GgmlDType::Q8_1 => 9,
        GgmlDType::Q2K => 10,
        GgmlDType::Q3K => 11,
        GgmlDType::Q4K => 12,
        GgmlDType::Q5K => 13,
        GgmlDType::Q6K => 14,
        GgmlDType::Q8K => 15,
        GgmlDType::BF16 => 30,
    }
}

fn write_str(b: &mut Vec<u8>, s: &str) {
    b.extend((s.len() as u64).to_le_bytes());
    b.extend(s.as_bytes());
}

/// GGUF value type codes.
fn type_code(v: &Value) -> u32 {
    match v {
        Value::U8(_) => 0,
        Value::I8(_) => 1,
        Value::U16(_) => 2,
        Value::I16(_) => 3,
        Value::U32(_) => 4,
        Value::I32(_) => 5,
        Value::F32(_) => 6,
        Value::Bool(_) => 7,
        Value::String(_) => 8,
        Value::Array(_) => 9,
        Value::U64(_) => 10,
        Value::I64(_) => 11,
        Value::F64(_) => 12,
    }
}

fn write_value(b: &mut Vec<u8>, v: &Value) {
    match v {
        Value::U8(x) => b.push(*x),
        Value::I8(x) => b.extend(x.to_le_bytes()),
        Value::U16(x) => b.extend(x.to_le_bytes()),
        Value::I16(x) => b.extend(x.to_le_bytes()),
        Value::U32(x) => b.extend(x.to_le_bytes()),
        Value::I32(x) => b.extend(x.to_le_bytes()),
        Value::U64(x) => b.extend(x.to_le_bytes()),
        Value::I64(x) => b.extend(x.to_le_bytes()),
        Value::F32(x) => b.extend(x.to_le_bytes()),
        Value::F64(x) => b.extend(x.to_le_bytes()),
        Value::Bool(x) => b.push(u8::from(*x)),
        Value::String(s) => write_str(b, s),
        Value::Array(items) => {
            let inner = items.first().map_or(4, type_code);
            b.extend(inner.to_le_bytes());
            b.extend((items.len() as u64).to_le_bytes());
            for item in items {
                write_value(b, item);
            }
        }
    }
}
