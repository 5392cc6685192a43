//! The arithmetic of the load-time memory checks: how much device memory a
//! weight or a KV cache can still get, and the error when it cannot.
//!
//! Every allocation of this backend comes from the device's stream-ordered
//! memory pool, which keeps what is freed for reuse (its release threshold
//! is `u64::MAX`, see `memory::keep_freed_memory_pooled`). The driver's free
//! count (`cuMemGetInfo`) treats all the memory the pool holds as used, the
//! idle part too, so it alone would refuse a model that fits: for example
//! after an earlier model or backend in the same process (`rbees bench`
//! runs candle and cuda-kernels on one device) has dropped its weights
//! into the pool. Host-only, so it is tested in builds without CUDA.

/// Device memory as the load-time checks count it, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceMemory {
    /// Free as the driver reports it (`cuMemGetInfo`).
    pub driver_free: u64,
    /// The device's memory, as the driver reports it.
    pub total: u64,
    /// What the pool has taken from the driver
    /// (`CU_MEMPOOL_ATTR_RESERVED_MEM_CURRENT`).
    pub pool_reserved: u64,
    /// What of that backs live allocations (`CU_MEMPOOL_ATTR_USED_MEM_CURRENT`).
    pub pool_used: u64,
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1u64 << 20) as f64
}

impl DeviceMemory {
    /// Bytes the pool holds without a live allocation in them: counted as
    /// used by the driver, handed out again by the pool.
    pub fn pool_idle(&self) -> u64 {
        self.pool_reserved.saturating_sub(self.pool_used)
    }

    /// What an allocation can still get: the driver's free memory plus the
    /// pool's idle bytes, never more than the device has.
    pub fn available(&self) -> u64 {
        self.driver_free
            .saturating_add(self.pool_idle())
            .min(self.total)
    }

    /// Why `bytes` more do not fit on `device`, or `None` when they do.
    pub fn shortfall(&self, bytes: u64, device: &str) -> Option<String> {
        let available = self.available();
        (bytes > available).then(|| {
            format!(
                "needs {:.1} MiB of device memory but {device} has {:.1} MiB available of {:.1} MiB \
                 ({:.1} MiB free, {:.1} MiB idle in the memory pool)",
                mib(bytes),
                mib(available),
                mib(self.total),
                mib(self.driver_free),
                mib(self.pool_idle()),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    fn memory(driver_free: u64, pool_reserved: u64, pool_used: u64) -> DeviceMemory {
        DeviceMemory {
            driver_free: driver_free * MIB,
            total: 1000 * MIB,
            pool_reserved: pool_reserved * MIB,
            pool_used: pool_used * MIB,
        }
    }

    #[test]
    fn the_pools_idle_memory_counts_as_available() {
        // 600 MiB in the pool, 100 of them live: 500 idle on top of 300 free.
        let m = memory(300, 600, 100);
        assert_eq!(m.pool_idle(), 500 * MIB);
        assert_eq!(m.available(), 800 * MIB);
        // The driver's count alone would refuse this; the pool can serve it.
        assert!(m.shortfall(700 * MIB, "cuda:0").is_none());
        assert!(m.shortfall(800 * MIB, "cuda:0").is_none());
        assert!(m.shortfall(800 * MIB + 1, "cuda:0").is_some());
    }

    #[test]
    fn without_a_pool_only_the_drivers_free_memory_counts() {
        let m = memory(300, 0, 0);
        assert_eq!(m.available(), 300 * MIB);
        assert!(m.shortfall(300 * MIB, "cuda:0").is_none());
        assert!(m.shortfall(301 * MIB, "cuda:0").is_some());
    }

    #[test]
    fn odd_driver_answers_neither_wrap_nor_exceed_the_device() {
        // Used past reserved (a racing read): no idle memory, not a wrap.
        assert_eq!(memory(300, 100, 200).pool_idle(), 0);
        assert_eq!(memory(300, 100, 200).available(), 300 * MIB);
        // Free and idle together past the device: capped at its size.
        assert_eq!(memory(900, 500, 0).available(), 1000 * MIB);
        let huge = DeviceMemory {
            driver_free: u64::MAX,
            total: u64::MAX,
            pool_reserved: u64::MAX,
            pool_used: 0,
        };
        assert_eq!(huge.available(), u64::MAX);
    }

    #[test]
    fn the_refusal_gives_needed_available_total_free_and_idle() {
        let why = memory(300, 600, 100)
            .shortfall(900 * MIB, "cuda:1")
            .unwrap();
        assert_eq!(
            why,
            "needs 900.0 MiB of device memory but cuda:1 has 800.0 MiB available of 1000.0 MiB \
             (300.0 MiB free, 500.0 MiB idle in the memory pool)"
        );
    }
}
