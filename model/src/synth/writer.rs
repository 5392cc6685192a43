//! A streaming GGUF (version 3) writer.
//!
//! candle-core's `gguf_file::write` needs every tensor in memory as a
//! `QTensor`; a 7B model would need its whole size in RAM first. This writer
//! takes the header up front and then streams each tensor's bytes from a
//! callback, so a file of any size is written in bounded memory.

use std::io::{self, Write};

use rbees_core::WeightDType;

const GGUF_MAGIC: u32 = 0x4655_4747; // "GGUF" read as a little-endian u32
const GGUF_VERSION: u32 = 3;
/// Tensor data offsets are multiples of this (GGUF's default `general.alignment`).
pub const ALIGNMENT: usize = 32;

/// A metadata value of the kinds this writer needs.
#[derive(Debug, Clone)]
pub enum MetaValue {
    U32(u32),
    F32(f32),
    Bool(bool),
    String(String),
    StringArray(Vec<String>),
    F32Array(Vec<f32>),
    I32Array(Vec<i32>),
}

impl MetaValue {
    // GGUF value type ids.
    fn type_id(&self) -> u32 {
        match self {
            MetaValue::U32(_) => 4,
            MetaValue::F32(_) => 6,
            MetaValue::Bool(_) => 7,
            MetaValue::String(_) => 8,
            MetaValue::StringArray(_) | MetaValue::F32Array(_) | MetaValue::I32Array(_) => 9,
        }
    }

    fn write(&self, w: &mut impl Write) -> io::Result<()> {
        match self {
            MetaValue::U32(v) => w.write_all(&v.to_le_bytes()),
            MetaValue::F32(v) => w.write_all(&v.to_le_bytes()),
            MetaValue::Bool(v) => w.write_all(&[u8::from(*v)]),
            MetaValue::String(s) => write_string(w, s),
            MetaValue::StringArray(items) => {
                write_array_header(w, 8, items.len())?;
                items.iter().try_for_each(|s| write_string(w, s))
            }
            MetaValue::F32Array(items) => {
                write_array_header(w, 6, items.len())?;
                items.iter().try_for_each(|v| w.write_all(&v.to_le_bytes()))
            }
            MetaValue::I32Array(items) => {
                write_array_header(w, 5, items.len())?;
                items.iter().try_for_each(|v| w.write_all(&v.to_le_bytes()))
            }
        }
    }
}

fn write_string(w: &mut impl Write, s: &str) -> io::Result<()> {
    w.write_all(&(s.len() as u64).to_le_bytes())?;
    w.write_all(s.as_bytes())
}

fn write_array_header(w: &mut impl Write, elem_type: u32, len: usize) -> io::Result<()> {
    w.write_all(&elem_type.to_le_bytes())?;
    w.write_all(&(len as u64).to_le_bytes())
}

/// One tensor's entry in the header.
#[derive(Debug, Clone)]
pub struct TensorSpec {
    pub name: String,
    /// Row-major shape, outermost first (`[rows, cols]` for a matrix); GGUF
    /// stores it innermost first, which [`write_gguf`] takes care of.
    pub shape: Vec<usize>,
    pub dtype: WeightDType,
}

impl TensorSpec {
    /// Bytes of the tensor's data, or `None` when a row is not whole blocks.
    pub fn data_bytes(&self) -> Option<usize> {
        let cols = *self.shape.last()?;
        let rows: usize = self.shape[..self.shape.len() - 1].iter().product();
        let row_bytes = self.dtype.storage_bytes(cols)?;
        row_bytes.checked_mul(rows)
    }
}

fn padding(len: usize) -> usize {
    (ALIGNMENT - len % ALIGNMENT) % ALIGNMENT
}

/// Writes a GGUF file: the metadata, the tensor infos, then each tensor's
/// data from `write_data(index, spec, out)`, which returns how many bytes it
/// wrote; anything but `spec.data_bytes()` is an error (the offsets in the
/// header would be wrong).
///
/// A tensor whose rows are not whole blocks is an `InvalidInput` error
/// (callers check shapes first to give a better one).
pub fn write_gguf<W: Write>(
    out: &mut W,
    metadata: &[(String, MetaValue)],
    tensors: &[TensorSpec],
    mut write_data: impl FnMut(usize, &TensorSpec, &mut W) -> io::Result<usize>,
) -> io::Result<()> {
    let mut header = Vec::new();
    header.extend_from_slice(&GGUF_MAGIC.to_le_bytes());
    header.extend_from_slice(&GGUF_VERSION.to_le_bytes());
    header.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
    header.extend_from_slice(&(metadata.len() as u64).to_le_bytes());
    for (key, value) in metadata {
        write_string(&mut header, key)?;
        header.extend_from_slice(&value.type_id().to_le_bytes());
        value.write(&mut header)?;
    }
    let mut sizes = Vec::with_capacity(tensors.len());
    let mut offset = 0usize;
    for spec in tensors {
        let size = spec.data_bytes().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "tensor {} of shape {:?} is not whole {} blocks",
                    spec.name, spec.shape, spec.dtype
                ),
            )
        })?;
        write_string(&mut header, &spec.name)?;
        header.extend_from_slice(&(spec.shape.len() as u32).to_le_bytes());
        for dim in spec.shape.iter().rev() {
            header.extend_from_slice(&(*dim as u64).to_le_bytes());
        }
        header.extend_from_slice(&spec.dtype.ggml_id().to_le_bytes());
        header.extend_from_slice(&(offset as u64).to_le_bytes());
        sizes.push(size);
        offset += size + padding(size);
    }
    header.resize(header.len() + padding(header.len()), 0);
    out.write_all(&header)?;
    for (i, (spec, size)) in tensors.iter().zip(&sizes).enumerate() {
        let written = write_data(i, spec, out)?;
        if written != *size {
            return Err(io::Error::other(format!(
                "tensor {}: wrote {written} bytes, the header says {size}",
                spec.name
            )));
        }
        out.write_all(&[0u8; ALIGNMENT][..padding(*size)])?;
    }
    out.flush()
}
