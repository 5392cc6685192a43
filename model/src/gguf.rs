//! A memory-mapped GGUF file read with candle-core's `gguf_file` reader.

use std::fs::File;
use std::io::Cursor;
use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file::Content;
use memmap2::Mmap;
use rbees_core::{HostWeight, WeightDType};

use crate::error::{ModelError, Result};
use crate::metadata::Metadata;

const GGUF_MAGIC: &[u8; 4] = b"GGUF";

/// An open model file: parsed header plus the mapped bytes the weights live in.
pub struct GgufFile {
    path: PathBuf,
    bytes: Bytes,
    /// The header's tensor infos; its metadata is moved to `metadata`.
    content: Content,
    metadata: Metadata,
}

/// Where the file's bytes live: mapped from disk, or in memory (fuzzing,
/// the malformed-model corpus and tests build files without touching disk).
enum Bytes {
    Mapped(Mmap),
    Owned(Vec<u8>),
}

impl std::ops::Deref for Bytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Bytes::Mapped(m) => m,
            Bytes::Owned(v) => v,
        }
    }
}

impl GgufFile {
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let io_err = |error| ModelError::Io {
            path: path.clone(),
            error,
        };
        let file = File::open(&path).map_err(io_err)?;
        // SAFETY: the map is read-only and lives as long as this value; like
        // every mmap-based loader we assume the file is not truncated while
        // in use.
        let mmap = unsafe { Mmap::map(&file) }.map_err(io_err)?;
        Self::parse(path, Bytes::Mapped(mmap))
    }

    /// A GGUF file held in memory; `name` stands for its path in errors.
    pub fn from_bytes(name: impl Into<PathBuf>, bytes: Vec<u8>) -> Result<Self> {
        Self::parse(name.into(), Bytes::Owned(bytes))
    }

    /// Checks the magic and the header's claims against the file size, then
    /// lets candle read the header.
    fn parse(path: PathBuf, bytes: Bytes) -> Result<Self> {
        let gguf_err = |detail: String| ModelError::Gguf {
            path: path.clone(),
            detail,
        };
        if bytes.len() < 4 || &bytes[..4] != GGUF_MAGIC {
            let head: Vec<u8> = bytes.iter().take(4).copied().collect();
            return Err(gguf_err(format!(
                "the file starts with {head:02x?}, not the GGUF magic \"GGUF\" (is it a GGUF model?)"
            )));
        }
        if let Some(v) = bytes.get(4..8) {
            let version = u32::from_le_bytes([v[0], v[1], v[2], v[3]]);
            if !(1..=3).contains(&version) {
                return Err(gguf_err(format!(
                    "GGUF version {version} is not supported (rbees reads versions 1 to 3)"
                )));
            }
        }
        // candle's reader panics on some headers it accepts (see prescan.rs);
        // those are refused here first.
        crate::prescan::check(&bytes).map_err(gguf_err)?;
        let mut cursor = Cursor::new(&bytes[..]);
        let mut content = Content::read(&mut cursor)
            .map_err(|e| gguf_err(header_error(e, cursor.position(), bytes.len())))?;
        let metadata = Metadata::from_candle(std::mem::take(&mut content.metadata));
        Ok(GgufFile {
            path,
            bytes,
            content,
            metadata,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    pub fn has_tensor(&self, name: &str) -> bool {
        self.content.tensor_infos.contains_key(name)
    }

    /// Storage type and `[rows, cols]` shape of a tensor, without reading it.
    pub fn tensor_meta(&self, name: &str) -> Result<(WeightDType, &[usize])> {
        let info = self
            .content
            .tensor_infos
            .get(name)
            .ok_or_else(|| ModelError::Tensor {
                name: name.to_string(),
                detail: "missing from the model file".into(),
            })?;
        let dtype =
            WeightDType::from_candle(info.ggml_dtype).ok_or_else(|| ModelError::Tensor {
                name: name.to_string(),
                detail: format!("storage type {:?} is not supported", info.ggml_dtype),
            })?;
        Ok((dtype, info.shape.dims()))
    }

    /// Bytes of weights a decode step reads: every tensor but the token
    /// embedding table, of which a step reads one row (unless the output
    /// projection is tied to it, and then all of it). Tensors whose size
    /// cannot be computed count as 0; loading reports them.
    pub fn decode_weight_bytes(&self) -> u64 {
        let tied = !self.has_tensor("output.weight");
        self.content
            .tensor_infos
            .iter()
            .filter(|(name, _)| tied || name.as_str() != "token_embd.weight")
            .filter_map(|(_, info)| {
                let dtype = WeightDType::from_candle(info.ggml_dtype)?;
                dtype.storage_bytes(info.shape.elem_count())
            })
            .map(|bytes| bytes as u64)
            .sum()
    }

    /// The tensor's bytes, checked to lie inside the file.
    pub fn weight(&self, name: &str) -> Result<HostWeight<'_>> {
        let (dtype, shape) = self.tensor_meta(name)?;
        let tensor_err = |detail: String| ModelError::Tensor {
            name: name.to_string(),
            detail,
        };
        let elements = shape
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .ok_or_else(|| tensor_err(format!("shape {shape:?} overflows")))?;
        let size = dtype.storage_bytes(elements).ok_or_else(|| {
            tensor_err(format!(
                "{elements} values are not whole {dtype} blocks of {}",
                dtype.block_size()
            ))
        })?;
        let info = &self.content.tensor_infos[name];
        let start = self
            .content
            .tensor_data_offset
            .checked_add(info.offset)
            .and_then(|s| usize::try_from(s).ok())
            .ok_or_else(|| tensor_err("offset overflows".into()))?;
        let end = start
            .checked_add(size)
            .filter(|&end| end <= self.bytes.len())
            .ok_or_else(|| {
                tensor_err(format!(
                    "needs bytes {start}..{} but the file has {} bytes (truncated file?)",
                    start.saturating_add(size),
                    self.bytes.len()
                ))
            })?;
        HostWeight::new(self.name_of(name), dtype, shape, &self.bytes[start..end])
            .map_err(|e| tensor_err(e.to_string()))
    }

    /// Drops the resident pages of a tensor's data from this process.
    ///
    /// Every backend copies a weight when it loads it (dequantised, or as
    /// blocks in its own memory), so without this the process would hold the
    /// model twice at the end of loading: the mapped file pages and the copy.
    /// Only advice to the OS: the pages stay in the page cache and would
    /// simply be read again if touched; failures are ignored.
    pub fn release(&self, weight: &HostWeight<'_>) {
        // Bytes held in memory (not mapped) have no pages to give back.
        let Bytes::Mapped(mmap) = &self.bytes else {
            return;
        };
        // Only a weight read from this file has pages here.
        let Some(offset) = (weight.data.as_ptr() as usize)
            .checked_sub(mmap.as_ptr() as usize)
            .filter(|&o| o + weight.data.len() <= mmap.len())
        else {
            return;
        };
        #[cfg(unix)]
        // SAFETY: DONTNEED on a read-only shared file mapping only discards
        // resident pages; later reads fault them in again from the file, so
        // no borrowed slice of the map ever sees different bytes.
        let _ = unsafe {
            mmap.unchecked_advise_range(
                memmap2::UncheckedAdvice::DontNeed,
                offset,
                weight.data.len(),
            )
        };
        #[cfg(not(unix))]
        let _ = offset;
    }

    /// The tensor name with this file's lifetime (the key stored in the header).
    fn name_of(&self, name: &str) -> &str {
        self.content
            .tensor_infos
            .get_key_value(name)
            .map(|(k, _)| k.as_str())
            .unwrap_or("")
    }
}

/// Describes a header candle could not read: without candle's backtrace
/// (captured when `RUST_BACKTRACE` is set), and saying so when the file ends
/// before the header does.
fn header_error(e: candle_core::Error, position: u64, file_len: usize) -> String {
    let e = match e {
        candle_core::Error::WithBacktrace { inner, .. } => *inner,
        e => e,
    };
    let ends_early = match &e {
        candle_core::Error::Io(io) => io.kind() == std::io::ErrorKind::UnexpectedEof,
        // candle's own bounds checks: "... only N remaining", "exceeds remaining file bytes".
        other => other.to_string().contains("remaining"),
    };
    if ends_early {
        format!("the header is truncated: the file ends after {file_len} bytes ({e})")
    } else {
        format!("unreadable header near byte {position}: {e}")
    }
}
