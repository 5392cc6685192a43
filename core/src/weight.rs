use crate::{BackendError, Result, WeightDType};

/// A weight as it sits in the model file: raw ggml blocks, row-major.
///
/// `shape` is `[rows, cols]` for matrices (rows = output features, cols =
/// input features, i.e. GGUF's `ne` reversed) and `[n]` for vectors. `data`
/// usually borrows from the memory-mapped file.
#[derive(Debug, Clone, Copy)]
pub struct HostWeight<'a> {
    pub name: &'a str,
    pub dtype: WeightDType,
    pub shape: &'a [usize],
    pub data: &'a [u8],
}

impl<'a> HostWeight<'a> {
    /// Builds a weight and checks that `data` holds exactly `shape` in `dtype`.
    pub fn new(
        name: &'a str,
        dtype: WeightDType,
        shape: &'a [usize],
        data: &'a [u8],
    ) -> Result<Self> {
        let w = HostWeight {
            name,
            dtype,
            shape,
            data,
        };
        w.validate()?;
        Ok(w)
    }

    pub fn elements(&self) -> Option<usize> {
        self.shape
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d))
    }

    /// (rows, cols) of a matrix; a vector is one row.
    pub fn rows_cols(&self) -> (usize, usize) {
        match self.shape {
            [n] => (1, *n),
            [r, c] => (*r, *c),
            _ => (0, 0),
        }
    }

    pub fn validate(&self) -> Result<()> {
        let bad = |detail: String| BackendError::Weight {
            name: self.name.to_string(),
            detail,
        };
        if self.shape.is_empty() || self.shape.len() > 2 {
            return Err(bad(format!(
                "expected a vector or a matrix, got shape {:?}",
                self.shape
            )));
        }
        let cols = *self.shape.last().unwrap_or(&0);
        if !cols.is_multiple_of(self.dtype.block_size()) {
            return Err(bad(format!(
                "row length {cols} is not a multiple of the {} block size {}",
                self.dtype,
                self.dtype.block_size()
            )));
        }
        let elements = self
            .elements()
            .ok_or_else(|| bad(format!("shape {:?} overflows", self.shape)))?;
        let want = self
            .dtype
            .storage_bytes(elements)
            .ok_or_else(|| bad(format!("shape {:?} overflows", self.shape)))?;
        if want != self.data.len() {
            return Err(bad(format!(
                "{} {:?} needs {want} bytes, got {}",
                self.dtype,
                self.shape,
                self.data.len()
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_wrong_byte_count_and_partial_blocks() {
        let data = [0u8; 40];
        assert!(HostWeight::new("w", WeightDType::Q4_1, &[2, 32], &data).is_ok());
        let e = HostWeight::new("w", WeightDType::Q4_1, &[3, 32], &data).unwrap_err();
        assert!(e.to_string().contains("needs 60 bytes, got 40"), "{e}");
        let e = HostWeight::new("w", WeightDType::Q4_1, &[1, 40], &data).unwrap_err();
        assert!(e.to_string().contains("block size 32"), "{e}");
    }
}
