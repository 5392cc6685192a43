//! Random tensor data in any GGUF type, fast enough for a 7B model.
//!
//! Quantising billions of random values would take minutes, so each type
//! gets a pool of chunks (whole quantisation blocks, or 32 plain values)
//! quantised once by candle-core, and a tensor is a random sequence of
//! pool chunks. Every chunk is a valid encoding of roughly normal values
//! with the requested spread, which is all a benchmark needs.

use std::io::{self, Write};

use candle_core::quantized::QTensor;
use candle_core::{Device, Tensor};
use rbees_core::WeightDType;

/// Chunks in a pool: enough that repeats do not line up with rows.
const POOL_CHUNKS: usize = 4093;
/// Bytes handed to the writer at a time.
const WRITE_BUFFER: usize = 8 << 20;

/// SplitMix64: a tiny, fast, seedable generator (quality is ample here).
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Roughly normal with standard deviation `std` (sum of four uniforms).
    pub fn normal(&mut self, std: f32) -> f32 {
        let r = self.next_u64();
        let sum: f32 = (0..4)
            .map(|i| ((r >> (16 * i)) & 0xFFFF) as f32 / 65535.0 - 0.5)
            .sum();
        // Four uniforms on [-0.5, 0.5] have variance 1/3.
        sum * std * 3f32.sqrt()
    }
}

/// Values in one pool chunk: a whole quantisation block, or 32 plain values.
fn values_per_chunk(dtype: WeightDType) -> usize {
    dtype.block_size().max(32)
}

/// Pre-encoded chunks of one type, picked at random to fill tensors.
pub struct ChunkPool {
    bytes: Vec<u8>,
    chunk_bytes: usize,
}

impl ChunkPool {
    /// A pool of `dtype` chunks of values with standard deviation `std`.
    pub fn new(dtype: WeightDType, std: f32, seed: u64) -> candle_core::Result<Self> {
        let values_per_chunk = values_per_chunk(dtype);
        let mut rng = SplitMix64::new(seed);
        let values: Vec<f32> = (0..POOL_CHUNKS * values_per_chunk)
            .map(|_| rng.normal(std))
            .collect();
        let bytes = match dtype {
            WeightDType::F32 => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            _ => {
                let t = Tensor::from_vec(values, (POOL_CHUNKS, values_per_chunk), &Device::Cpu)?;
                QTensor::quantize(&t, dtype.to_candle())?
                    .data()?
                    .into_owned()
            }
        };
        let chunk_bytes = bytes.len() / POOL_CHUNKS;
        Ok(ChunkPool { bytes, chunk_bytes })
    }

    /// Writes `elements` values (a whole number of chunks when the tensor's
    /// rows are whole blocks; a short last chunk is cut at a block edge) and
    /// returns the bytes written.
    pub fn write_random(
        &self,
        dtype: WeightDType,
        elements: usize,
        rng: &mut SplitMix64,
        out: &mut impl Write,
    ) -> io::Result<usize> {
        let per_chunk = values_per_chunk(dtype);
        let total = dtype.storage_bytes(elements).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{elements} values are not whole {dtype} blocks"),
            )
        })?;
        let mut buffer = Vec::with_capacity(WRITE_BUFFER.min(total));
        let mut left = elements;
        while left > 0 {
            let take = left.min(per_chunk);
            let bytes = dtype.storage_bytes(take).unwrap_or(self.chunk_bytes);
            let start = (rng.next_u64() % POOL_CHUNKS as u64) as usize * self.chunk_bytes;
            buffer.extend_from_slice(&self.bytes[start..start + bytes]);
            if buffer.len() >= WRITE_BUFFER {
                out.write_all(&buffer)?;
                buffer.clear();
            }
            left -= take;
        }
        out.write_all(&buffer)?;
        Ok(total)
    }
}

/// Writes `values` as `dtype` (for small tensors such as norm weights).
pub fn write_constant(
    dtype: WeightDType,
    value: f32,
    elements: usize,
    out: &mut impl Write,
) -> io::Result<usize> {
    let bytes: Vec<u8> = match dtype {
        WeightDType::F32 => std::iter::repeat_n(value.to_le_bytes(), elements)
            .flatten()
            .collect(),
        other => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("constant tensors are written as F32, not {other}"),
            ))
        }
    };
    out.write_all(&bytes)?;
    Ok(bytes.len())
}
