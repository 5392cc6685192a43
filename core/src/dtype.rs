use std::fmt;

/// Storage type of a weight tensor, as GGUF/ggml names it.
///
/// Activations are always f32 (see the precision contract on [`crate::Backend`]);
/// only weights come in these types. The discriminants are ggml's type ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WeightDType {
    F32,
    F16,
    BF16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q2K,
    Q3K,
    Q4K,
    Q5K,
    Q6K,
    Q8K,
}

impl WeightDType {
    /// Every type the crate knows, in ggml id order.
    pub const ALL: [WeightDType; 14] = [
        WeightDType::F32,
        WeightDType::F16,
        WeightDType::BF16,
        WeightDType::Q4_0,
        WeightDType::Q4_1,
        WeightDType::Q5_0,
        WeightDType::Q5_1,
        WeightDType::Q8_0,
        WeightDType::Q2K,
        WeightDType::Q3K,
        WeightDType::Q4K,
        WeightDType::Q5K,
        WeightDType::Q6K,
        WeightDType::Q8K,
    ];

    /// The ggml type id stored in GGUF tensor infos.
    pub fn ggml_id(self) -> u32 {
        match self {
            WeightDType::F32 => 0,
            WeightDType::F16 => 1,
            WeightDType::Q4_0 => 2,
            WeightDType::Q4_1 => 3,
            WeightDType::Q5_0 => 6,
            WeightDType::Q5_1 => 7,
            WeightDType::Q8_0 => 8,
            WeightDType::Q2K => 10,
            WeightDType::Q3K => 11,
            WeightDType::Q4K => 12,
            WeightDType::Q5K => 13,
            WeightDType::Q6K => 14,
            WeightDType::Q8K => 15,
            WeightDType::BF16 => 30,
        }
    }

    pub fn from_ggml_id(id: u32) -> Option<Self> {
        Self::ALL.into_iter().find(|d| d.ggml_id() == id)
    }

    /// Number of values in one quantisation block (1 for plain float types).
    pub fn block_size(self) -> usize {
        match self {
            WeightDType::F32 | WeightDType::F16 | WeightDType::BF16 => 1,
            WeightDType::Q4_0
            | WeightDType::Q4_1
            | WeightDType::Q5_0
            | WeightDType::Q5_1
            | WeightDType::Q8_0 => 32,
            _ => 256,
        }
    }

    /// Bytes taken by one block.
    pub fn block_bytes(self) -> usize {
        match self {
            WeightDType::F32 => 4,
            WeightDType::F16 | WeightDType::BF16 => 2,
            WeightDType::Q4_0 => 18,
            WeightDType::Q4_1 => 20,
            WeightDType::Q5_0 => 22,
            WeightDType::Q5_1 => 24,
            WeightDType::Q8_0 => 34,
            WeightDType::Q2K => 84,
            WeightDType::Q3K => 110,
            WeightDType::Q4K => 144,
            WeightDType::Q5K => 176,
            WeightDType::Q6K => 210,
            WeightDType::Q8K => 292,
        }
    }

    /// Bytes needed for `elements` values, or `None` when `elements` is not a
    /// whole number of blocks or the size overflows.
    pub fn storage_bytes(self, elements: usize) -> Option<usize> {
        if !elements.is_multiple_of(self.block_size()) {
            return None;
        }
        (elements / self.block_size()).checked_mul(self.block_bytes())
    }

    pub fn is_quantized(self) -> bool {
        self.block_size() > 1
    }
}

impl fmt::Display for WeightDType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            WeightDType::F32 => "F32",
            WeightDType::F16 => "F16",
            WeightDType::BF16 => "BF16",
            WeightDType::Q4_0 => "Q4_0",
            WeightDType::Q4_1 => "Q4_1",
            WeightDType::Q5_0 => "Q5_0",
            WeightDType::Q5_1 => "Q5_1",
            WeightDType::Q8_0 => "Q8_0",
            WeightDType::Q2K => "Q2_K",
            WeightDType::Q3K => "Q3_K",
            WeightDType::Q4K => "Q4_K",
            WeightDType::Q5K => "Q5_K",
            WeightDType::Q6K => "Q6_K",
            WeightDType::Q8K => "Q8_K",
        };
        f.write_str(s)
    }
}

impl std::str::FromStr for WeightDType {
    type Err = String;

    /// ggml's names (`Q4_0`, `Q4_K`, `F16`, ...), any case; `Q4K` works too.
    fn from_str(s: &str) -> Result<Self, String> {
        let wanted = s.to_ascii_uppercase().replace('_', "");
        Self::ALL
            .into_iter()
            .find(|d| d.to_string().replace('_', "") == wanted)
            .ok_or_else(|| {
                let known: Vec<String> = Self::ALL.iter().map(ToString::to_string).collect();
                format!("unknown weight type '{s}'; known: {}", known.join(", "))
            })
    }
}

#[cfg(feature = "candle")]
mod candle_names {
    use candle_core::quantized::GgmlDType;

    use super::WeightDType;

    impl WeightDType {
        /// candle-core's name for this storage type.
        pub fn to_candle(self) -> GgmlDType {
            match self {
                WeightDType::F32 => GgmlDType::F32,
                WeightDType::F16 => GgmlDType::F16,
                WeightDType::BF16 => GgmlDType::BF16,
                WeightDType::Q4_0 => GgmlDType::Q4_0,
                WeightDType::Q4_1 => GgmlDType::Q4_1,
                WeightDType::Q5_0 => GgmlDType::Q5_0,
                WeightDType::Q5_1 => GgmlDType::Q5_1,
                WeightDType::Q8_0 => GgmlDType::Q8_0,
                WeightDType::Q2K => GgmlDType::Q2K,
                WeightDType::Q3K => GgmlDType::Q3K,
                WeightDType::Q4K => GgmlDType::Q4K,
                WeightDType::Q5K => GgmlDType::Q5K,
                WeightDType::Q6K => GgmlDType::Q6K,
                WeightDType::Q8K => GgmlDType::Q8K,
            }
        }

        /// rbees's name for a candle-core storage type; `None` for a type
        /// rbees does not run (Q8_1, an activation-only type).
        pub fn from_candle(dtype: GgmlDType) -> Option<Self> {
            Self::ALL.into_iter().find(|d| d.to_candle() == dtype)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ggml_ids_round_trip() {
        for d in WeightDType::ALL {
            assert_eq!(WeightDType::from_ggml_id(d.ggml_id()), Some(d));
        }
        assert_eq!(
            WeightDType::from_ggml_id(4),
            None,
            "Q4_2 was removed from ggml"
        );
    }

    #[cfg(feature = "candle")]
    #[test]
    fn candle_names_round_trip_and_agree_on_block_layout() {
        for d in WeightDType::ALL {
            assert_eq!(WeightDType::from_candle(d.to_candle()), Some(d));
            assert_eq!(d.to_candle().block_size(), d.block_size(), "{d}");
            assert_eq!(d.to_candle().type_size(), d.block_bytes(), "{d}");
        }
        let q8_1 = candle_core::quantized::GgmlDType::Q8_1;
        assert_eq!(WeightDType::from_candle(q8_1), None);
    }

    #[test]
    fn names_parse_back_in_any_case() {
        for d in WeightDType::ALL {
            assert_eq!(d.to_string().parse::<WeightDType>(), Ok(d));
            assert_eq!(d.to_string().to_lowercase().parse::<WeightDType>(), Ok(d));
        }
        assert_eq!("q4k".parse::<WeightDType>(), Ok(WeightDType::Q4K));
        let err = "Q4_2".parse::<WeightDType>().unwrap_err();
        assert!(
            err.contains("unknown weight type 'Q4_2'") && err.contains("Q6_K"),
            "{err}"
        );
    }

    #[test]
    fn storage_bytes_follow_ggml_block_layout() {
        // One Q4_1 row of SmolLM2's hidden size: 576 / 32 blocks of 20 bytes.
        assert_eq!(WeightDType::Q4_1.storage_bytes(576), Some(360));
        assert_eq!(WeightDType::Q6K.storage_bytes(256), Some(210));
        assert_eq!(WeightDType::Q4_0.storage_bytes(33), None);
        assert_eq!(WeightDType::F16.storage_bytes(3), Some(6));
        assert_eq!(WeightDType::F32.storage_bytes(usize::MAX), None);
    }
}
